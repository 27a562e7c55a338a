"""One adapter per protocol family: the family-specific half of the abstraction map (which trace events
explain which spec transitions), the IDs each observable binds, the plan hints that order the replay's
search, and the spec parameters of a run.  replay.py and mapping.py name no spec transition; a spec
change needs an edit in its family's adapter only."""
from __future__ import annotations


def for_topology(topology: str):
    """The adapter of a run's topology (tp, pp0, pp1)."""
    if topology == "tp":
        from .tp import ADAPTER
        return ADAPTER
    if topology in ("pp0", "pp1"):
        from .pp import ADAPTER
        return ADAPTER
    raise ValueError(f"no conformance adapter for topology {topology!r}")


def for_family(family: str):
    return for_topology("tp" if family == "tp" else "pp1")
