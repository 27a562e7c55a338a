"""Rendering of role machines, the KV lifecycle, counterexample swimlanes; the committed gallery.

Modules, one job each: ``roles`` (a role's transition list as a graphviz state diagram),
``statespace`` (explore a model; draw the reachable graph whole when small, collapsed by control
state per role otherwise), ``swimlane`` (a neutral list of steps as a hand-laid SVG swimlane),
``trace`` (a recorded run as such steps), ``report`` (the offline HTML page), ``build`` (one spec
and variant -> files in memory), ``output`` (write them without clobbering a user's files),
``gallery`` (the committed gallery and its staleness check), ``dot`` (run graphviz deterministically).
See docs/diagrams.md.
"""
