"""One state diagram per role, drawn from the role's own transition list.

Control states are nodes; every transition is an edge labelled with its name and the op it issues
(observed by exploring the model, see statespace.explore).  Marks: commitment points bold, fault
transitions dashed red, timeouts and watchdogs (``timeout=`` targets, quiescent transitions)
dotted, an op's error path thin grey, terminal states with a double border.  A transition that never
fired within the exploration bound is drawn grey with "(not reached)".
"""
from __future__ import annotations

from html import escape

import graphviz

from ..spec.machine import BUILTIN_TERMINAL, DONE, Role
from .dot import FONT

LEGEND = ("bold: commitment point · dashed red: injected fault · dotted: timeout / watchdog\n"
          "grey: op error path · double border: terminal · ⇢ the op a transition issues")


def role_graph(role: Role, title: str, op_kinds: dict | None = None, fired: set | None = None,
               explored: bool = True) -> graphviz.Digraph:
    """``op_kinds[(role, transition)]``: op labels seen when the transition fired; ``fired``: the
    (role, transition) pairs that fired at all; ``explored``: whether those two are available."""
    op_kinds = op_kinds or {}
    fired = fired or set()
    d = graphviz.Digraph(f"role_{_id(role.name)}")
    legend = "<BR/>".join(escape(x) for x in LEGEND.split("\n"))
    d.attr(rankdir="TB", fontname=FONT, fontsize="12", labelloc="t", nodesep="0.35",
           label=f'<<B>{escape(title)}</B><BR/><FONT POINT-SIZE="9" COLOR="gray30">{legend}</FONT>>',
           ranksep="0.45")
    d.attr("node", shape="box", style="rounded", fontname=FONT, fontsize="10")
    d.attr("edge", fontname=FONT, fontsize="9")
    terminal = role.terminal_states()
    d.node("__init", "", shape="point", width="0.12")
    for st in role.states():
        attrs = {}
        if st in terminal or st in BUILTIN_TERMINAL:
            attrs["peripheries"] = "2"
            if st != DONE:
                attrs.update(style="rounded,filled", fillcolor="mistyrose")
            else:
                attrs.update(style="rounded,filled", fillcolor="honeydew")
        d.node(_id(st), st, **attrs)
    d.edge("__init", _id(role.init))
    error_paths: dict[tuple[str, str], list[str]] = {}
    for t in role.transitions:
        key = (role.name, t.name)
        reached = (not explored) or key in fired
        lab = t.name
        if t.op is not None:
            kinds = sorted(op_kinds.get(key, ()))
            lab += "\n⇢ " + (" | ".join(kinds) if kinds else "op (not reached)" if explored else "op")
        if t.commit:
            lab = "★ commit: " + lab
        if t.fault:
            lab = f"⚡ {t.fault}\n" + lab
        if explored and not reached and t.op is None:
            lab += "\n(not reached)"
        attrs: dict[str, str] = {}
        if t.commit:
            attrs.update(penwidth="2.8", style="bold")
        if t.fault:
            attrs.update(style="dashed", color="red3", fontcolor="red3")
        elif t.quiescent:
            attrs.update(style="dotted", penwidth="1.6")
        if explored and not reached:
            attrs.update(color="gray60", fontcolor="gray50")
        for dst in t.dst:
            d.edge(_id(t.src), _id(dst), lab, **attrs)
        if t.timeout:
            d.edge(_id(t.src), _id(t.timeout), f"{t.name}\nwatchdog timeout", style="dotted", penwidth="1.6")
        if t.op is not None and t.on_error not in t.dst:
            error_paths.setdefault((t.src, t.on_error), []).append(t.name)
    for (src, dst), names in sorted(error_paths.items()):
        d.edge(_id(src), _id(dst), "op error", color="gray55", fontcolor="gray45", penwidth="0.7", arrowhead="empty",
               tooltip=", ".join(names))
    return d


def transition_rows(role: Role, op_kinds: dict | None = None, fired: set | None = None, explored: bool = True) -> list[dict]:
    """The role's transitions as table rows for the report (straight from the spec)."""
    op_kinds = op_kinds or {}
    fired = fired or set()
    rows = []
    for t in role.transitions:
        key = (role.name, t.name)
        flags = []
        if t.commit:
            flags.append("commit")
        if t.fault:
            flags.append(f"fault {t.fault}")
        if t.timeout:
            flags.append(f"timeout → {t.timeout}")
        if t.quiescent:
            flags.append("quiescent")
        if t.phase:
            flags.append(f"phase {t.phase}")
        if t.event:
            flags.append(f"event {t.event}")
        if explored and key not in fired:
            flags.append("not reached")
        op = ""
        if t.op is not None:
            op = " | ".join(sorted(op_kinds.get(key, ()))) or "op (not reached)"
        rows.append({"name": t.name, "src": t.src, "dst": ", ".join(t.dst), "op": op, "flags": ", ".join(flags),
                     "doc": t.doc})
    return rows


def _id(s: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in s)
