"""The wait-for graph at the end of a run: who waits on whom, through which op or condition.

Nodes are threads (actors: ``rank0``, ``rank0.comms``) and the ranks they wait on; an edge
``A -> B`` says A cannot move until B does something: post the matching op (A is blocked in an op
whose partner is B's rank) or change a shared variable A's guards read (A waits on a condition, see
conditions.py).  A DEADLOCK is a cycle of such edges; a STRANDED run is a chain that ends at a
rank that is gone (exited or crashed), hung (wedged) or idle (alive, but will never issue the op).

Built from the checker's ``waiting`` list (or a recorded run's open ops) plus, for a spec, the end
state, which is recovered by replaying the counterexample's steps through the spec's own successor
function (``Protocol.raw_successors`` and ``describe``: the step whose description matches).
Drawn twice from the same data: as a small graphviz figure at the top of the report and as arrows
in the swimlane's final rows.  Every edge has the element id ``waitfor-<from>-<to>``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

import graphviz

from ..spec.fabric import ranks_text
from .conditions import Condition, condition
from .dot import FONT


@dataclass
class WaitNode:
    id: str
    label: str          # thread label, e.g. "rank0.comms"
    rank: Any
    state: str = ""     # control state at the end (or what the trace says)
    status: str = ""    # blocked | waiting | gone | hung | idle | alive | exited (...)
    role: str = ""


@dataclass
class WaitEdge:
    src: str
    dst: str
    via: str            # "op" | "condition"
    label: str          # short: the op, or the condition
    detail: str = ""    # long: every guard and why it is false

    @property
    def id(self) -> str:
        return edge_id(self.src, self.dst)


@dataclass
class WaitFor:
    nodes: dict[str, WaitNode] = field(default_factory=dict)
    edges: list[WaitEdge] = field(default_factory=list)
    cycle: list[str] = field(default_factory=list)      # node ids around the cycle (DEADLOCK)
    chains: list[list[str]] = field(default_factory=list)  # paths from a blocked thread to where they end
    conditions: dict[str, Condition] = field(default_factory=dict)
    verdict: str = ""

    @property
    def shape(self) -> str:
        return "cycle" if self.cycle else "chain" if self.chains else "none"

    def summary(self) -> str:
        if self.cycle:
            return "wait-for cycle: " + " → ".join(self.nodes[n].label for n in self.cycle + self.cycle[:1])
        if self.chains:
            by_tail: dict = {}  # chains that differ only in the thread that waits, on one entry
            for ch in self.chains:
                by_tail.setdefault(tuple(ch[1:]), []).append(self.nodes[ch[0]])
            out = []
            for tail, heads in by_tail.items():
                end = self.nodes[tail[-1]] if tail else heads[0]
                if len(heads) > 1 and all(h.label == f"rank{h.rank}" for h in heads):
                    head = ranks_text(sorted(h.rank for h in heads))  # main threads: ranks 2-15
                else:
                    head = ", ".join(h.label for h in heads)
                out.append(" → ".join([head] + [self.nodes[n].label for n in tail]) + f" ({end.status})")
            return "wait-for chain: " + "; ".join(out)
        return ""

    def edges_from(self, nid: str) -> list[WaitEdge]:
        return [e for e in self.edges if e.src == nid]


def safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(s))


def edge_id(src: str, dst: str) -> str:
    return f"waitfor-{safe(src)}-{safe(dst)}"


def node_id(label: str) -> str:
    return f"waitnode-{safe(label)}"


# -- the end state of a counterexample ----------------------------------------------------------
_IGNORE = ("step",)


def _same(d: dict, step: dict) -> bool:
    return all(d.get(k) == step.get(k) for k in step if k not in _IGNORE) and all(
        k in step or v in (None, {}, [], "") for k, v in d.items())


def end_state(world, steps: list[dict]):
    """Replay ``steps`` (checker counterexample steps) through ``world``; the state after the last
    one that leads to a state (a final violation step is not applied), or None if a step does not
    match (then only the waiting list is drawn)."""
    import json

    def norm(x):
        return json.loads(json.dumps(x, default=str))

    # without symmetry and partial-order reduction (the caller switches them off) successors are
    # the raw ones; raw_successors is used when the world has it
    succ = getattr(world, "raw_successors", None) or world.successors
    try:
        cur = next(iter(world.init_states()))
    except Exception:  # noqa: BLE001
        return None
    for step in steps:
        if step.get("transition") == "(stuck)":
            break
        want = norm(step)
        pick = None
        for a, n in succ(cur):
            if a is None:
                continue
            if _same(norm(world.describe(cur, a, n)), want):
                pick = n
                break
        if pick is None:
            return None
        if not isinstance(pick, tuple):  # a violation: the run ends before it
            return cur
        cur = pick
    return cur


# -- building the graph -------------------------------------------------------------------------
def _status_word(st: str) -> str:
    return {"gone": "gone (exited or crashed)", "hung": "hung (wedged)", "idle": "idle (issues nothing more)"}.get(st, st)


def _pick_actor(world, state, rank: int, op: str | None) -> int:
    """The thread of ``rank`` a waiter on ``rank`` waits for: the one whose role can issue the
    complementary op (a recv waits for a send), a live one, else the rank's first thread."""
    idxs = world.actors_of_rank[rank]
    if len(idxs) == 1:
        return idxs[0]
    want = None
    if op:
        kind = op.split()[0]
        want = {"recv": "send", "send": "recv"}.get(kind, kind)
    from .conditions import _node_of, _text

    scored = []
    for j in idxs:
        role = world.actors[j].role
        texts = " ".join(_text(_node_of(t.op)) for t in role.transitions if t.op is not None and _node_of(t.op) is not None)
        live = state is not None and state[0][j][0] not in ("DONE", "FAILED", "DEAD", "HUNG")
        scored.append((-(texts.count(f"{want}(") if want else 0), -live, j))
    return sorted(scored)[0][2]


def from_spec(world, waiting: list[dict], steps: list[dict], verdict: str = "") -> WaitFor:
    """The wait-for graph of a spec's counterexample end."""
    wf = WaitFor(verdict=verdict)
    state = end_state(world, steps) if steps is not None else None
    status = world.rank_status(state[0]) if state is not None else {}
    label_index = {a.label: i for i, a in enumerate(world.actors)}

    def add_actor(i: int, st: str | None = None) -> str:
        a = world.actors[i]
        nid = a.label
        if nid not in wf.nodes:
            ctl = state[0][i][0] if state is not None else ""
            rs = status.get(a.rank, "")
            wf.nodes[nid] = WaitNode(nid, a.label, a.rank, ctl, st or rs, a.role.name)
        elif st:
            wf.nodes[nid].status = st
        return nid

    for w in waiting:
        i = label_index.get(w.get("actor"))
        if i is None:
            continue
        src = add_actor(i, "blocked in op" if w.get("op") else "waiting on a condition")
        if w.get("op"):
            for r in w.get("waits_for") or []:
                j = _pick_actor(world, state, r, w.get("op"))
                dst = add_actor(j)
                if status.get(r) in ("gone", "hung", "idle"):
                    ctl = state[0][j][0] if state is not None else ""
                    how = {"FAILED": "gone: exited with an error", "DEAD": "gone: crashed", "DONE": "gone: finished",
                           "HUNG": "hung: wedged"}.get(ctl) if status[r] != "idle" else None
                    wf.nodes[dst].status = how or _status_word(status[r])
                wf.edges.append(WaitEdge(src, dst, "op", w["op"], f"{w['op']} — waits for rank {r} "
                                                                   f"({(w.get('partner_status') or {}).get(str(r), '')})"))
        elif state is not None:
            cond = condition(world, state, i)
            wf.conditions[src] = cond
            wf.nodes[src].state = w.get("state") or wf.nodes[src].state
            writers = []
            for name, who in cond.writers.items():
                for lab in who:
                    if lab not in writers:
                        writers.append(lab)
            for lab in writers:
                j = label_index[lab]
                dst = add_actor(j)
                names = [n for n, who in cond.writers.items() if lab in who]
                wf.edges.append(WaitEdge(src, dst, "condition", f"{w.get('state')}: {cond.short().replace('waits until ', 'until ', 1)}",
                                         f"{lab} writes {', '.join(names)}; " + "; ".join(cond.lines())))
    _analyse(wf)
    return wf


def from_trace(waiting: list[dict], lane_status: dict | None = None) -> WaitFor:
    """The wait-for graph of a recorded run: ops entered and never exited, and the ranks that never
    entered the same call."""
    wf = WaitFor(verdict="TRACE")
    for w in waiting:
        src = str(w.get("actor") or f"rank{w.get('rank')}")
        wf.nodes.setdefault(src, WaitNode(src, src, w.get("rank"), w.get("state") or "", "blocked in op", w.get("role") or ""))
        wf.nodes[src].status = "blocked in op"
        for r in w.get("waits_for") or []:
            dst = f"rank{r}"
            st = (w.get("partner_status") or {}).get(str(r), "")
            if dst not in wf.nodes:
                wf.nodes[dst] = WaitNode(dst, dst, r, "", st)
            wf.edges.append(WaitEdge(src, dst, "op", str(w.get("op") or w.get("state")), f"{w.get('op')} — rank {r}: {st}"))
    _analyse(wf)
    return wf


def _analyse(wf: WaitFor) -> None:
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(wf.nodes)
    g.add_edges_from((e.src, e.dst) for e in wf.edges)
    cycles = sorted((sorted_cycle(c) for c in nx.simple_cycles(g)), key=lambda c: (len(c), c))
    if cycles:
        wf.cycle = cycles[0]
        return
    blocked = [n for n, node in wf.nodes.items() if node.status.startswith(("blocked", "waiting"))]
    for n in blocked:
        if any(n in ch[1:] for ch in wf.chains):
            continue
        path = [n]
        while True:
            nxt = [e.dst for e in wf.edges_from(path[-1]) if e.dst not in path]
            if not nxt:
                break
            path.append(sorted(nxt)[0])
        if len(path) > 1:
            wf.chains.append(path)
    # keep only maximal chains (a chain that is the tail of another is drawn within it)
    wf.chains = [c for c in wf.chains if not any(c != d and c == d[len(d) - len(c):] for d in wf.chains)]


def sorted_cycle(c: list) -> list:
    k = c.index(min(c))
    return c[k:] + c[:k]


def in_cycle(wf: WaitFor, e: WaitEdge) -> bool:
    c = wf.cycle
    return any(c[k] == e.src and c[(k + 1) % len(c)] == e.dst for k in range(len(c))) if c else False


def in_chain(wf: WaitFor, e: WaitEdge) -> bool:
    return any(ch[k] == e.src and ch[k + 1] == e.dst for ch in wf.chains for k in range(len(ch) - 1))


# -- the standalone figure ----------------------------------------------------------------------
def figure(wf: WaitFor, title: str) -> graphviz.Digraph:
    """A small left-to-right graph: one box per thread, grouped by rank; red op edges, purple
    condition edges, the cycle or chain drawn bold."""
    d = graphviz.Digraph("waitfor")
    d.attr(rankdir="LR", fontname=FONT, fontsize="11", labelloc="t", nodesep="0.5", ranksep="1.1", newrank="true",
           label=f'<<B>{escape(title)}</B><BR/><FONT POINT-SIZE="9" COLOR="gray30">'
                 f'{escape(wf.summary() or "nobody waits")}</FONT>>', id="waitfor")
    d.attr("node", shape="box", style="rounded", fontname=FONT, fontsize="10")
    d.attr("edge", fontname=FONT, fontsize="9")
    by_rank: dict = {}
    for n in wf.nodes.values():
        by_rank.setdefault(n.rank, []).append(n)
    for r in sorted(by_rank, key=str):
        with d.subgraph(name=f"cluster_rank_{safe(r)}") as c:
            c.attr(label=f"rank {r}", style="rounded,dashed", color="gray60", fontsize="10")
            for n in by_rank[r]:
                gone = n.status.startswith(("gone", "hung", "idle", "exited", "no exit"))
                blocked = n.status.startswith(("blocked", "waiting"))
                fill = "#eeeeee" if gone else "#fde3e3" if blocked else "white"
                color = "gray45" if gone else "#b00020" if blocked else "gray30"
                head = escape(n.label) + (f" · {escape(n.role)}" if n.role and n.role != n.label else "")
                lab = f"<<B>{head}</B>" + "".join(f'<BR/><FONT POINT-SIZE="9"{extra}>{escape(x)}</FONT>'
                                                  for x, extra in ((n.state, ""), (n.status, f' COLOR="{color}"')) if x) + ">"
                c.node(node_id(n.id), lab, style="rounded,filled", fillcolor=fill, color=color, id=node_id(n.id),
                       penwidth="2" if blocked else "1")
    for e in wf.edges:
        hot = in_cycle(wf, e) or in_chain(wf, e)
        color = "#b00020" if e.via == "op" else "#6a3d9a"
        lab = _wrap(("⇢ " if e.via == "op" else "") + e.label, 34)
        d.edge(node_id(e.src), node_id(e.dst), lab, color=color, fontcolor=color, id=e.id, tooltip=e.detail or e.label,
               style="solid" if e.via == "op" else "dashed", penwidth="2.4" if hot else "1.2")
    return d


def _wrap(s: str, n: int) -> str:
    words, lines, cur = s.split(" "), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > n:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    if cur:
        lines.append(cur)
    return "\n".join(lines[:6]) + ("\n…" if len(lines) > 6 else "")


__all__ = ["WaitFor", "WaitNode", "WaitEdge", "from_spec", "from_trace", "end_state", "figure", "edge_id", "node_id",
           "in_cycle", "in_chain"]
