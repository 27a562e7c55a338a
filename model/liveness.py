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

from .api import LIVENESS, Violation
from .features import LIVENESS as LIVENESS_FEATURE, features_of


class _Enabled:
    """enabled[u]: the frozenset of actors enabled in state u, read from the explorer's interned sets."""

    def __init__(self, ex):
        self.sets, self.ids = ex.enabled_sets, ex.enabled_id

    def __getitem__(self, u):
        return self.sets[self.ids[u]]


def _scc_labels(n: int, src: list[int], dst: list[int]):
    """Strongly connected component label of each of the ``n`` nodes of the graph src[k] -> dst[k]
    (a numpy array with scipy, else a list)."""
    try:
        import numpy as np
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import connected_components
    except ImportError:
        import networkx as nx

        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        g.add_edges_from(zip(src.tolist() if hasattr(src, "tolist") else src, dst.tolist() if hasattr(dst, "tolist") else dst))
        labels = [0] * n
        for lab, comp in enumerate(nx.strongly_connected_components(g)):
            for u in comp:
                labels[u] = lab
        return labels
    m = csr_matrix((np.ones(len(src), dtype=np.int8), (np.asarray(src, dtype=np.int32), np.asarray(dst, dtype=np.int32))),
                   shape=(n, n))
    _, labels = connected_components(m, directed=True, connection="strong")
    return labels


def _cycle_within(edges_from: dict[int, list[tuple[int, object]]], start: int, members: set[int]) -> list[tuple[int, object, int]]:
    """Shortest path start -> ... -> start inside ``members`` (BFS), as (src, actor, dst) triples."""
    return _path_within(edges_from, start, members, lambda u, actor, v: u is not None and v == start) or []


def _path_within(edges_from, start: int, members: set, goal) -> list[tuple[int, object, int]] | None:
    """Shortest path inside ``members`` from ``start`` whose last edge (u, actor, v) satisfies
    ``goal(u, actor, v)``; the empty path when ``goal(None, None, start)`` already holds."""
    if goal(None, None, start):
        return []
    prev: dict[int, tuple[int, object]] = {}
    q = deque([start])
    seen = {start}
    while q:
        u = q.popleft()
        for v, actor in edges_from.get(u, ()):
            if v not in members:
                continue
            if goal(u, actor, v):
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
    return None


def fair_cycle(edges_from, enabled, entry: int, comp: set) -> list[tuple[int, object, int]]:
    """A cycle from ``entry`` inside the SCC ``comp`` that is itself weakly fair: it takes a step of
    every process that steps inside the SCC and passes, for every other process enabled somewhere in
    it, a state where that process is disabled.  (The shortest cycle need not be fair.)"""
    stepping = sorted({a for u in comp for v, a in edges_from.get(u, ()) if v in comp and a is not None}, key=repr)
    idle = sorted({a for u in comp for a in enabled[u] if a is not None} - set(stepping), key=repr)
    cycle: list = []
    cur = entry
    for a in stepping:
        seg = _path_within(edges_from, cur, comp, lambda u, b, v, a=a: b == a)
        if seg is None:
            continue
        cycle += seg
        cur = seg[-1][2] if seg else cur
    for b in idle:
        seg = _path_within(edges_from, cur, comp, lambda u, x, v, b=b: b not in enabled[v])
        if seg is None:
            continue
        cycle += seg
        cur = seg[-1][2] if seg else cur
    back = _path_within(edges_from, cur, comp, lambda u, x, v: u is not None and v == entry)
    if cur == entry and cycle:
        back = []
    return cycle + (back or [])


def is_fair(cycle, enabled) -> bool:
    """Weak fairness of a cycle: every process enabled in all of its states takes a step in it."""
    if not cycle:
        return False
    always = frozenset.intersection(*(enabled[u] for u, _, _ in cycle)) - {None}
    return always <= {a for _, a, _ in cycle}


def find_lasso(ex, fair: bool = True):
    """Return a LIVENESS Result, or None when the property holds on the explored graph.  With
    ``fair=False`` any cycle through pending states counts (used to prove absence on a reduced graph).

    The graph is the explorer's int32 edge arrays; strongly connected components come from
    scipy.sparse.csgraph when scipy is installed, else from networkx.  Among the components that
    admit a (fair) cycle the one whose shallowest state is shallowest wins; ties go to the component
    holding the lowest-numbered such state, and that state is the lasso's entry."""
    from .result import Result

    import numpy as np

    model = ex.model
    states = ex.states
    n = len(states)
    if len(ex.pending_flags) == n:  # noted during the search (a keyed search)
        pending = np.frombuffer(bytes(ex.pending_flags), dtype=bool)
    else:
        pending = np.fromiter((bool(model.pending(s)) for s in states), dtype=bool, count=n)
    esrc = np.frombuffer(ex.edge_src, dtype=np.int32) if len(ex.edge_src) else np.zeros(0, dtype=np.int32)
    edst = np.frombuffer(ex.edge_dst, dtype=np.int32) if len(ex.edge_dst) else np.zeros(0, dtype=np.int32)
    eact = np.frombuffer(ex.edge_actor, dtype=np.int32) if len(ex.edge_actor) else np.zeros(0, dtype=np.int32)
    has_out = np.zeros(n, dtype=bool)
    has_out[esrc] = True

    # finite runs: a clean end (not a failure) with an obligation still open
    for i in np.flatnonzero(pending & ~has_out).tolist():
        s = states[i]
        if model.classify_end(s) is None:
            steps = ex.path_to(i)
            msg = "a committed envelope is never resolved: the run ends cleanly with it still open"
            return Result(LIVENESS, msg, ex.stats, ex.describe_path(steps), waiting=ex.waiting_at_end(steps, s))

    names = ex.actor_names
    keep = np.flatnonzero(pending[esrc] & pending[edst])  # edges between pending states, in edge order
    if not len(keep):
        return None
    src, dst, act = esrc[keep], edst[keep], eact[keep]
    labels = np.asarray(_scc_labels(n, src, dst))
    # members of the components with an edge inside (a singleton only through a self-loop)
    inside = np.flatnonzero(labels[src] == labels[dst])
    inner: dict[int, list[int]] = {}
    for k, lab in zip(inside.tolist(), labels[src[inside]].tolist()):
        inner.setdefault(lab, []).append(k)
    depth = ex.depths()
    enabled_of = ex.enabled_sets
    enabled_id = ex.enabled_id
    best = None  # (depth, entry, label)
    for lab, ks in inner.items():
        comp = set(src[ks].tolist())
        stepping = {names[a] if a >= 0 else None for a in act[ks].tolist()}
        ids = {enabled_id[u] for u in comp}
        always_enabled = frozenset.intersection(*(enabled_of[e] for e in ids)) - {None}
        unfair = [a for a in always_enabled if a not in stepping]
        if unfair and fair:
            continue
        entry = min(comp, key=lambda u: (depth[u], u))
        cand = (depth[entry], entry, lab)
        if best is None or cand < best:
            best = cand
    if best is None:
        return None
    _, entry, lab = best
    comp = set(np.flatnonzero(labels == lab).tolist())
    edges_from: dict[int, list[tuple[int, object]]] = {}
    within = np.flatnonzero((labels[src] == lab) & (labels[dst] == lab))
    for i, j, a in zip(src[within].tolist(), dst[within].tolist(), act[within].tolist()):
        edges_from.setdefault(i, []).append((j, names[a] if a >= 0 else None))
    best = (entry, comp)
    if best is None:
        return None
    entry, comp = best
    prefix = ex.path_to(entry)
    enabled = _Enabled(ex)
    cycle = fair_cycle(edges_from, enabled, entry, comp) if fair else _cycle_within(edges_from, entry, comp)
    # actions of the cycle: re-derive them from the model so describe() gets real labels
    actor_of = model.actor_of if LIVENESS_FEATURE in features_of(model) else None
    cyc_steps = []
    for u, actor, v in cycle:
        su, sv = states[u], states[v]
        pick = None
        for a, n in model.successors(su):
            if n == sv and (pick is None or (actor_of is not None and actor_of(a) == actor)):
                pick = a
                if actor_of is None or actor_of(a) == actor:
                    break
        cyc_steps.append((su, pick, sv))
    cex = ex.describe_path(prefix + cyc_steps)
    for k, d in enumerate(cex):
        d["in_cycle"] = k >= len(prefix)
    msg = (f"a committed envelope stays open for ever under weak fairness: after {len(prefix)} steps a cycle of "
           f"{len(cyc_steps)} steps repeats without resolving it")
    r = Result(LIVENESS, msg, ex.stats, cex, waiting=ex.waiting_at_end(prefix, states[entry]), cycle_start=len(prefix))
    r.detail = {"prefix_length": len(prefix), "cycle_length": len(cyc_steps)}
    return r


__all__ = ["find_lasso", "Violation"]
