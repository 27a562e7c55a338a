"""Liveness under weak fairness, as lassos.

The property: every obligation the model marks as ``pending`` (an envelope rank0 committed to) is
eventually discharged (a result emitted, an explicit drop, or a fast failure).  A counterexample is
either a finite run that ends cleanly with the obligation open, or a lasso: a prefix into a
strongly connected set of pending states and a cycle there that repeats for ever.

Weak fairness: a process that is enabled continuously must eventually step.  A cycle through a
whole SCC visits every state and edge of it, so an SCC admits a fair cycle iff every process that
is enabled in all of its states also has an edge inside it.  Timeouts are steps of the process that
owns them, so a loop that could be broken by a timeout that is always enabled is not fair.
"""
from __future__ import annotations

from collections import deque

import networkx as nx

from .api import LIVENESS, Violation


def _cycle_within(edges_from: dict[int, list[tuple[int, object]]], start: int, members: set[int]) -> list[tuple[int, object, int]]:
    """Shortest path start -> ... -> start inside ``members`` (BFS), as (src, actor, dst) triples."""
    prev: dict[int, tuple[int, object]] = {}
    q = deque([start])
    seen = {start}
    while q:
        u = q.popleft()
        for v, actor in edges_from.get(u, ()):
            if v not in members:
                continue
            if v == start:
                path = [(u, actor, v)]
                while u != start:
                    pu, pa = prev[u]
                    path.append((pu, pa, u))
                    u = pu
                path.reverse()
                return path
            if v not in seen:
                seen.add(v)
                prev[v] = (u, actor)
                q.append(v)
    return []


def find_lasso(ex, fair: bool = True):
    """Return a LIVENESS Result, or None when the property holds on the explored graph.  With
    ``fair=False`` any cycle through pending states counts (used to prove absence on a reduced graph)."""
    from .checker import Result

    model = ex.model
    states = ex.states
    pending = [bool(model.pending(s)) for s in states]
    out_deg = [0] * len(states)
    for i, _, _ in ex.edges:
        out_deg[i] += 1

    # finite runs: a clean end (not a failure) with an obligation still open
    for i, s in enumerate(states):
        if pending[i] and out_deg[i] == 0 and model.classify_end(s) is None:
            steps = ex.path_to(i)
            msg = "a committed envelope is never resolved: the run ends cleanly with it still open"
            return Result(LIVENESS, msg, ex.stats, ex.describe_path(steps), waiting=ex.waiting_at_end(steps, s))

    g = nx.DiGraph()
    edges_from: dict[int, list[tuple[int, object]]] = {}
    for i, j, actor in ex.edges:
        if pending[i] and pending[j]:
            g.add_edge(i, j)
            edges_from.setdefault(i, []).append((j, actor))
    best = None
    for comp in nx.strongly_connected_components(g):
        if len(comp) == 1:
            (u,) = comp
            if not g.has_edge(u, u):
                continue
        always_enabled = frozenset.intersection(*(ex.enabled[u] for u in comp)) - {None}
        stepping = {a for u in comp for v, a in edges_from.get(u, ()) if v in comp}
        unfair = [a for a in always_enabled if a not in stepping]
        if unfair and fair:
            continue
        entry = min(comp, key=lambda u: len(ex.path_to(u)))
        if best is None or len(ex.path_to(entry)) < len(ex.path_to(best[0])):
            best = (entry, comp)
    if best is None:
        return None
    entry, comp = best
    prefix = ex.path_to(entry)
    cycle = _cycle_within(edges_from, entry, set(comp))
    # actions of the cycle: re-derive them from the model so describe() gets real labels
    cyc_steps = []
    for u, _actor, v in cycle:
        su, sv = states[u], states[v]
        for a, n in model.successors(su):
            if n == sv:
                cyc_steps.append((su, a, sv))
                break
    cex = ex.describe_path(prefix + cyc_steps)
    for k, d in enumerate(cex):
        d["in_cycle"] = k >= len(prefix)
    msg = (f"a committed envelope stays open for ever under weak fairness: after {len(prefix)} steps a cycle of "
           f"{len(cyc_steps)} steps repeats without resolving it")
    r = Result(LIVENESS, msg, ex.stats, cex, waiting=ex.waiting_at_end(prefix, states[entry]), cycle_start=len(prefix))
    r.detail = {"prefix_length": len(prefix), "cycle_length": len(cyc_steps)}
    return r


__all__ = ["find_lasso", "Violation"]
