"""One state diagram per role, drawn from the role's own transition list.

Control states are nodes; every transition is an edge labelled with its name and the op it issues
(observed by exploring the model, see statespace.explore), and under it, in brackets, its guard
where the author named it (``why=`` or a named guard function).  Marks: commitment points bold, fault
transitions dashed red, timeouts and watchdogs (``timeout=`` targets, quiescent transitions)
dotted, an op's error path thin grey, terminal states with a double border.  A transition that never
fired within the exploration bound is drawn grey with "(not reached)".
"""
from __future__ import annotations

from html import escape

import graphviz

from ..spec.machine import BUILTIN_TERMINAL, DONE, Role
from ..spec.source import guard_text
from .conditions import plain
from .dot import FONT

LEGEND = ("bold: commitment point · dashed red ⚡: injected fault · dotted: watchdog / timed wait · [words]: the guard, as named\n"
          "double border: terminal · ⇢ the op a transition issues · grey \"on error → X\" under a state: "
          "its op-error, timeout and fault exits to a sink (drawn as edges in the protocol + failures view)")

SINKS = ("FAILED", "DEAD", "HUNG")


def _failure_exits(role) -> dict[str, dict[str, list[str]]]:
    """state -> sink -> the transitions (op error paths, timeouts, faults) that leave it for that sink."""
    out: dict[str, dict[str, list[str]]] = {}
    for t in role.transitions:
        if t.op is not None and t.on_error not in t.dst and t.on_error in SINKS:
            out.setdefault(t.src, {}).setdefault(t.on_error, []).append(f"{t.name}: op error")
        if t.timeout in SINKS:
            out.setdefault(t.src, {}).setdefault(t.timeout, []).append(f"{t.name}: timeout")
        if t.fault:
            for d in t.dst:
                if d in SINKS:
                    out.setdefault(t.src, {}).setdefault(d, []).append(f"{t.name}: fault {t.fault}")
    return out


def _is_failure_edge(t, dst: str) -> bool:
    return dst in SINKS and bool(t.fault)


def role_graph(role: Role, title: str, op_kinds: dict | None = None, fired: set | None = None,
               explored: bool = True, failures: bool = False) -> graphviz.Digraph:
    """``op_kinds[(role, transition)]``: op labels seen when the transition fired; ``fired``: the
    (role, transition) pairs that fired at all; ``explored``: whether those two are available.

    The protocol view (``failures=False``) draws the happy path: every exit of a state to a sink
    through an op error, a timeout or an injected fault is one grey line under that state's name
    ("on error → FAILED"), not an edge, so nothing crosses the protocol's own edges; a state's
    self-loops are one unlabelled loop, their transitions written in the state's box.  ``failures=True`` draws every such exit as an edge."""
    op_kinds = op_kinds or {}
    fired = fired or set()
    d = graphviz.Digraph(f"role_{_id(role.name)}")
    legend = "<BR/>".join(escape(x) for x in LEGEND.split("\n"))
    view = "protocol + failures" if failures else "protocol (failure exits folded into the states)"
    d.attr(rankdir="TB", fontname=FONT, fontsize="12", labelloc="t", nodesep="0.45",
           label=f'<<B>{escape(title)}</B> <FONT POINT-SIZE="10">— {escape(view)}</FONT><BR/>'
                 f'<FONT POINT-SIZE="9" COLOR="gray30">{legend}</FONT>>',
           ranksep="0.5", forcelabels="true")
    d.attr("node", shape="box", style="rounded", fontname=FONT, fontsize="10")
    d.attr("edge", fontname=FONT, fontsize="9")
    terminal = role.terminal_states()
    exits = _failure_exits(role)
    # self-loops: one unlabelled loop per state, its transitions written in the state's box (a loop's
    # label beside the node collides with the edges that come back into it)
    loop_lines: dict[str, list[str]] = {}
    for t in role.transitions:
        if t.src in t.dst and (failures or not _is_failure_edge(t, t.src)):
            kinds = sorted(op_kinds.get((role.name, t.name), ())) if t.op is not None else []
            loop_lines.setdefault(t.src, []).append(("⚡ " if t.fault else "") + t.name
                                                    + (" ⇢ " + " | ".join(kinds) if kinds else ""))
    d.node("__init", "", shape="point", width="0.12")
    for st in role.states():
        attrs = {}
        if st in terminal or st in BUILTIN_TERMINAL:
            attrs["peripheries"] = "2"
            if st != DONE:
                attrs.update(style="rounded,filled", fillcolor="mistyrose")
            else:
                attrs.update(style="rounded,filled", fillcolor="honeydew")
        if not failures and st in exits:
            attrs["tooltip"] = "; ".join(f"{sink}: " + ", ".join(names) for sink, names in sorted(exits[st].items()))
        attrs["label"] = _state_label(st, [] if failures else sorted(exits.get(st, ())), loop_lines.get(st, []))
        d.node(_id(st), **attrs)
    d.edge("__init", _id(role.init))
    loops: dict[str, list[tuple[str, dict]]] = {}
    error_paths: dict[tuple[str, str], list[str]] = {}
    for t in role.transitions:
        key = (role.name, t.name)
        reached = (not explored) or key in fired
        lab = t.name
        if t.guard_label:  # the author's words for the guard (why= or a named guard function)
            lab += f"\n[{t.guard_label}]"
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
            if not failures and _is_failure_edge(t, dst):
                continue
            if dst == t.src:
                loops.setdefault(t.src, []).append((lab, attrs))
                continue
            d.edge(_id(t.src), _id(dst), lab, **attrs)
        if t.timeout and (failures or t.timeout not in SINKS):
            d.edge(_id(t.src), _id(t.timeout), f"{t.name}\nwatchdog timeout", style="dotted", penwidth="1.6",
                   constraint="false" if t.timeout in SINKS else "true")
        if failures and t.op is not None and t.on_error not in t.dst:
            error_paths.setdefault((t.src, t.on_error), []).append(t.name)
    for st, items in loops.items():
        attrs = dict(items[0][1]) if len(items) == 1 else {}
        d.edge(_id(st), _id(st), tooltip="; ".join(x[0].replace("\n", " ") for x in items), **attrs)
    for (src, dst), names in sorted(error_paths.items()):
        d.edge(_id(src), _id(dst), "op error", color="gray55", fontcolor="gray45", penwidth="0.7", arrowhead="empty",
               tooltip=", ".join(names), constraint="false")
    if not failures:
        # sinks reached only through folded failure exits sit at the bottom
        with d.subgraph() as sub:
            sub.attr(rank="sink")
            for sink in sorted({k for v in exits.values() for k in v}):
                sub.node(_id(sink))
    return d


def _state_label(st: str, sinks: list[str], loops: list[str]) -> str:
    lines = "".join(f'<BR/><FONT POINT-SIZE="8">↻ {escape(x)}</FONT>' for x in loops)
    lines += "".join(f'<BR/><FONT POINT-SIZE="8" COLOR="gray40">on error → {escape(sink)}</FONT>' for sink in sinks)
    return f"<{escape(st)}{lines}>"


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
                     "guard": plain(guard_text(t)) if t.guard is not None else "", "doc": t.doc})
    return rows


def _id(s: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in s)
