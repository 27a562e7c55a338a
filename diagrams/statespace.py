"""The reachable-state graph of a model: explored once, then drawn whole when it is small, else
summarized (collapsed by control state per role, with counts) — never silently skipped.

The same exploration tells the role diagrams which op each transition issues and which
transitions fired at all, so a role diagram is labelled from the model's own behaviour rather than
from a second description of it.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import graphviz

from ..model.api import Violation
from ..spec.machine import Protocol
from .dot import FONT, MONO

FULL_LIMIT = 200  # a reachable graph is drawn node by node only up to this many states


@dataclass
class StateGraph:
    states: list = field(default_factory=list)
    init: list[int] = field(default_factory=list)
    edges: list[tuple[int, int, Any, Violation | None]] = field(default_factory=list)  # j == -1 for a violation edge
    stuck: dict[int, Violation] = field(default_factory=dict)  # states whose only "successor" is a stuck verdict
    ends: list[int] = field(default_factory=list)
    truncated: bool = False
    max_states: int | None = None
    op_kinds: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    fired: set[tuple[str, str]] = field(default_factory=set)

    @property
    def small(self) -> bool:
        return len(self.states) <= FULL_LIMIT


def op_label(op) -> str:
    """Kind, group and group-local root/peer of an op: what a transition issues, without payload."""
    if op.kind == "wait":
        return f"wait {op.data}"
    parts = [op.kind, op.group]
    if op.kind == "broadcast":
        parts.append(f"src={op.peer}")
    elif op.kind == "send":
        parts.append(f"dst={op.peer}")
    elif op.kind == "recv":
        parts.append(f"src={op.peer}")
    return " ".join(parts)


def explore(model, max_states: int | None = None) -> StateGraph:
    """Breadth-first over ``model.successors``; violation edges end a path.  Stops expanding once
    ``max_states`` states are known (``truncated``)."""
    g = StateGraph(max_states=max_states)
    index: dict[Any, int] = {}
    proto = model if isinstance(model, Protocol) else None

    def add(s) -> int:
        i = index.get(s)
        if i is None:
            i = index[s] = len(g.states)
            g.states.append(s)
        return i

    for s in model.init_states():
        g.init.append(add(s))
    k = 0
    while k < len(g.states):
        if max_states is not None and len(g.states) >= max_states and k < len(g.states):
            g.truncated = True
            break
        s = g.states[k]
        any_succ = False
        for a, n in model.successors(s):
            any_succ = True
            if proto is not None:
                _note_transition(proto, s, a, n, g)
            if isinstance(n, Violation):
                if a is None:
                    g.stuck[k] = n
                else:
                    g.edges.append((k, -1, a, n))
                continue
            g.edges.append((k, add(n), a, None))
        if not any_succ:
            g.ends.append(k)
        k += 1
    return g


def _note_transition(proto: Protocol, s, a, n, g: StateGraph) -> None:
    if a is None or a[0] != "t":
        return
    _, i, tidx, _ = a
    role = proto.actors[i].role
    t = role.transitions[tidx]
    g.fired.add((role.name, t.name))
    if t.op is not None and not isinstance(n, Violation):
        pend = n[0][i][2]
        if pend is not None:
            g.op_kinds[(role.name, t.name)].add(op_label(pend[1]))
        else:  # a non-blocking post: the ops it left in the fabric
            for e in n[3]:
                if e[0] == "op" and e[1] == i and e not in s[3]:
                    g.op_kinds[(role.name, t.name)].add(f"post {op_label(e[4])}")


# -- labels ------------------------------------------------------------------------------------
def action_label(model, state, action) -> str:
    if action is None:
        return "stuck"
    if isinstance(model, Protocol):
        k = action[0]
        if k == "t":
            a = model.actors[action[1]]
            return f"{a.label} {a.role.transitions[action[2]].name}"
        if k == "m":
            op = state[0][action[2][0]][2][1]
            return f"{op.kind} completes ({action[1]})"
        if k == "p":
            return f"send/recv completes ({action[1]})"
        if k in ("M", "P", "b", "r", "w") or (k == "e" and action[1] < 0):
            # fabric steps of non-blocking ops and buffered messages (spec/wire.py)
            d = model.describe_fabric_step(state, action, None) or {}
            r = d.get("rank")
            who = ",".join(f"rank{x}" for x in r) if isinstance(r, list) else d.get("actor", "")
            grp = f" ({d['group']})" if d.get("group") else ""
            return f"{who} {d.get('transition', k)}{grp}".strip()
        if k in ("e", "x"):
            a = model.actors[action[1]]  # (an "e" of a posted op, action[1] < 0, is a fabric step above)
            return f"{a.label} {'op fails' if k == 'e' else 'timeout'}"
        return f"{k} rank{action[1]}"
    if isinstance(action, tuple):
        return " ".join(str(x) for x in action)
    return str(action)


def state_label(model, state) -> str:
    if isinstance(model, Protocol):
        lines = []
        for a, (ctl, _v, pend) in zip(model.actors, state[0]):
            lines.append(f"{a.label}: {ctl}" + (f" ⇢ {op_label(pend[1]) if pend[1].kind == 'wait' else pend[1].kind}"
                                                  if pend is not None else ""))
        for e in state[3]:  # the fabric's own entries: posted non-blocking ops, buffered eager sends
            if e[0] == "op":
                lines.append(f"{model.actors[e[1]].label} posted {e[2]}: {e[4].kind}{' ✓' if e[6] else ''}")
            else:
                lines.append(f"buffered {e[1]} rank{e[2]}→rank{e[3]}")
        return "\n".join(lines)
    text = repr(state)
    return "\n".join(text[i:i + 40] for i in range(0, min(len(text), 160), 40)) + ("…" if len(text) > 160 else "")


# -- drawing -----------------------------------------------------------------------------------
def full_graph(model, g: StateGraph, title: str) -> graphviz.Digraph:
    """Every reachable state and edge (only for small graphs)."""
    d = graphviz.Digraph("statespace")
    d.attr(rankdir="TB", fontname=FONT, fontsize="12", labelloc="t", label=title)
    d.attr("node", shape="box", style="rounded", fontname=MONO, fontsize="9")
    d.attr("edge", fontname=FONT, fontsize="8")
    init = set(g.init)
    ends = set(g.ends)
    for i, s in enumerate(g.states):
        attrs = {}
        if i in init:
            attrs.update(penwidth="2.5")
        if i in ends:
            attrs.update(peripheries="2")
        if i in g.stuck:
            attrs.update(color="red3", fontcolor="red3", penwidth="2")
            lab = f"[{g.stuck[i].verdict}]\n" + state_label(model, s)
        else:
            lab = state_label(model, s)
        d.node(f"s{i}", lab, **attrs)
    v = 0
    for i, j, a, viol in g.edges:
        lab = action_label(model, g.states[i], a)
        if viol is not None:
            v += 1
            d.node(f"v{v}", viol.verdict, shape="octagon", color="red3", fontcolor="red3", fontname=FONT)
            d.edge(f"s{i}", f"v{v}", lab, color="red3", fontcolor="red3")
        else:
            d.edge(f"s{i}", f"s{j}", lab)
    if g.truncated:
        d.node("truncated", f"… exploration stopped at {g.max_states} states", shape="plaintext", fontname=FONT)
    return d


def collapse(model: Protocol, g: StateGraph):
    """Per role: global states in which some actor of the role is in each control state (and how many
    of those have it blocked in an op), and control-state changes with the transitions that made them."""
    roles = roles_in_order(model)
    node_states: dict[tuple[str, str], int] = Counter()
    node_blocked: dict[tuple[str, str], int] = Counter()
    for s in g.states:
        seen, blocked = set(), set()
        for a, (ctl, _v, pend) in zip(model.actors, s[0]):
            seen.add((a.role.name, ctl))
            if pend is not None:
                blocked.add((a.role.name, ctl))
        for key in seen:
            node_states[key] += 1
        for key in blocked:
            node_blocked[key] += 1
    edge_names: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for i, j, a, viol in g.edges:
        if viol is not None:
            continue
        s, n = g.states[i], g.states[j]
        for idx, (ac, (c0, _v0, p0), (c1, _v1, _p1)) in enumerate(zip(model.actors, s[0], n[0])):
            if c0 == c1:
                continue
            k = a[0]
            if k == "t" and a[1] == idx:
                name = ac.role.transitions[a[2]].name
            elif p0 is not None and k in ("m", "p", "M", "P", "b", "r", "w"):
                name = ac.role.transitions[p0[0]].name
            elif p0 is not None and k == "e":
                name = ac.role.transitions[p0[0]].name + " (error)"
            elif p0 is not None and k == "x":
                name = ac.role.transitions[p0[0]].name + " (timeout)"
            elif k in ("crash", "hang"):
                name = f"injected {k}"
            else:
                name = "process exits"  # a sibling thread's failure takes this actor with it
            edge_names[(ac.role.name, c0, c1)][name] += 1
    return roles, node_states, node_blocked, edge_names


def summary_graph(model: Protocol, g: StateGraph, title: str) -> graphviz.Digraph:
    roles, node_states, node_blocked, edge_names = collapse(model, g)
    d = graphviz.Digraph("statespace_summary")
    d.attr(rankdir="TB", fontname=FONT, fontsize="12", labelloc="t", label=title, compound="true")
    d.attr("node", shape="box", style="rounded", fontname=FONT, fontsize="10")
    d.attr("edge", fontname=FONT, fontsize="8")
    for rname, (role, labels) in roles.items():
        with d.subgraph(name=f"cluster_{_id(rname)}") as c:
            c.attr(label=f"role {rname} ({', '.join(labels)})", style="rounded", color="gray50", fontname=FONT)
            for st in role.states() + sorted({k[1] for k in node_states if k[0] == rname} - set(role.states())):
                n = node_states.get((rname, st), 0)
                b = node_blocked.get((rname, st), 0)
                lab = f"{st}\n{n:,} states" + (f"\n{b:,} blocked in an op" if b else "")
                attrs = {}
                if n == 0:
                    attrs.update(style="rounded,dashed", color="gray60", fontcolor="gray50")
                    lab = f"{st}\nnot reached"
                c.node(f"{_id(rname)}__{_id(st)}", lab, **attrs)
            for (rn, s0, s1), names in sorted(edge_names.items()):
                if rn != rname:
                    continue
                top = sorted(names.items(), key=lambda kv: (-kv[1], kv[0]))
                lab = "\n".join(f"{nm} ×{cnt:,}" for nm, cnt in top[:3]) + (f"\n+{len(top) - 3} more" if len(top) > 3 else "")
                c.edge(f"{_id(rname)}__{_id(s0)}", f"{_id(rname)}__{_id(s1)}", lab)
    return d


def roles_in_order(model: Protocol) -> dict[str, tuple[Any, list[str]]]:
    """Role name -> (Role, the actor labels that run it), in actor order."""
    out: dict[str, tuple[Any, list[str]]] = {}
    for a in model.actors:
        out.setdefault(a.role.name, (a.role, []))[1].append(a.label)
    return out


def generic_summary(model, g: StateGraph) -> list[tuple[str, str, int]]:
    """For a model without roles: steps by actor and transition (the action's first two parts)."""
    c: Counter = Counter()
    for _i, _j, a, _v in g.edges:
        if isinstance(a, tuple) and len(a) >= 2:
            c[(str(a[0]), str(a[1]))] += 1
        else:
            c[(str(a), "")] += 1
    return [(k[0], k[1], n) for k, n in sorted(c.items(), key=lambda kv: _natural(kv[0]))]


def violation_counts(g: StateGraph) -> list[tuple[str, int]]:
    c: Counter = Counter()
    for *_x, v in g.edges:
        if v is not None:
            c[v.verdict] += 1
    for v in g.stuck.values():
        c[v.verdict] += 1
    return sorted(c.items())


def _natural(key):
    return tuple((0, int(x), "") if x.isdigit() else (1, 0, x) for x in key)


def _id(s: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in s)
