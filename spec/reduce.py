"""Reductions of a ``Protocol``'s state graph: partial-order reduction (ample sets) and symmetry
(interchangeable actors, orbit representatives).  A mixin: the world's semantics are in world.py.
"""
from __future__ import annotations

from ..model.api import Violation
from .state import WorldState


class Reductions:
    # -- partial-order reduction --------------------------------------------------------------
    def _por_eligible_actors(self) -> frozenset:
        """Actors whose steps may form an ample set: a private role, alone on its rank, whose local
        transitions form no cycle (so every cycle of the reduced graph passes a full expansion: C3)."""
        out = set()
        for i, a in enumerate(self.actors):
            role = a.role
            if not role.private or len(self.actors_of_rank[a.rank]) != 1:
                continue
            local = {}
            for t in role.transitions:
                if t.op is None:
                    local.setdefault(t.src, set()).update(t.dst)
            if not _has_cycle(local):
                out.add(i)
        return frozenset(out)

    def set_liveness(self, on: bool) -> None:
        """Lassos are checked on the full interleaving graph: partial-order reduction stays off."""
        self._por_live = on
        self._por_on = self._por_reduce and not on and bool(self._por_actors)

    def _ample(self, state, normal: list):
        """One eligible actor's steps when they are all invisible local steps or op posts.  They
        commute with every other process's steps, nothing else can enable or disable them (the role is
        private), a fault can only end that actor in the same normalized state, and no property reads
        what they change: every stuck state, end state, invariant and edge violation stays reachable."""
        actors, g, fu = state[:3]
        faults_left = fu < self.max_faults
        by_actor: dict[int, list] = {}
        for st in normal:
            a = st[0]
            if a[0] == "t" and a[1] in self._por_actors:
                by_actor.setdefault(a[1], []).append(st)
        for i, steps in by_actor.items():
            ctl, v, _ = actors[i]
            role = self.actors[i].role
            if faults_left:
                if any(role.transitions[t].fault is not None for t in role.by_src.get(ctl, ())):
                    continue
                if "hang" in self.faults and self.actors[i].rank in self.hang_ranks and ctl in role.hang_points:
                    continue
            ok = True
            for a, n in steps:
                if isinstance(n, Violation) or role.transitions[a[2]].check is not None:
                    ok = False
                    break
                nv = n[0][i][1]
                if nv is None or any(getattr(v, f) != getattr(nv, f) for f in role.observed):
                    ok = False
                    break
            if ok:
                return steps
        return normal

    # -- symmetry reduction ------------------------------------------------------------------
    def set_reduction(self, on: bool) -> None:
        self._sym_on = on and len(self.symmetric) > 1
        self._por_reduce = on
        self._por_on = on and not self._por_live and bool(self._por_actors)

    def _order_key(self, x):
        """A deterministic total order on actor states (hash order varies between processes)."""
        k = self._sym_keys.get(x)
        if k is None:
            k = self._sym_keys[x] = _sort_key(x)
        return k

    def canonical(self, state):
        """The orbit representative: the interchangeable actors' states sorted."""
        actors, g, fu = state[:3]
        sym = self.symmetric
        part = sorted((actors[i] for i in sym), key=self._order_key)
        if all(actors[i] is p for i, p in zip(sym, part)):
            return state
        nl = list(actors)
        for i, p in zip(sym, part):
            nl[i] = p
        return WorldState(tuple(nl), g, fu, state[3])

    def successors(self, state):
        if not self._sym_on:
            return self.raw_successors(state)
        canon = self.canonical
        return [(a, n if isinstance(n, Violation) else canon(n)) for a, n in self.raw_successors(state)]

    def concretize(self, steps):
        """Turn a path of orbit representatives into a concrete run: at each step pick the raw successor
        of the concrete state whose representative is the next state on the path."""
        if not self._sym_on or not steps:
            return steps
        out = []
        cur = steps[0][0]
        for s, a, n in steps:
            pick = None
            for a2, n2 in self.raw_successors(cur):
                if isinstance(n, Violation):
                    if isinstance(n2, Violation) and n2.verdict == n.verdict and (a is None) == (a2 is None):
                        pick = (a2, n2)
                        break
                elif not isinstance(n2, Violation) and self.canonical(n2) == n:
                    pick = (a2, n2)
                    break
            if pick is None:  # cannot happen for a path of the quotient graph; keep the representative
                return steps
            out.append((cur, pick[0], pick[1]))
            cur = pick[1]
        return out


def _has_cycle(edges: dict) -> bool:
    """Whether a small directed graph {node: successors} has a cycle (self-loops included)."""
    color: dict = {}

    def visit(u) -> bool:
        color[u] = 1
        for w in edges.get(u, ()):
            c = color.get(w, 0)
            if c == 1 or (c == 0 and visit(w)):
                return True
        color[u] = 2
        return False
    return any(color.get(u, 0) == 0 and visit(u) for u in list(edges))


def _sort_key(x):
    if x is None:
        return (0,)
    if isinstance(x, (bool, int, float)):
        return (1, x)
    if isinstance(x, str):
        return (2, x)
    if isinstance(x, tuple):
        return (3, tuple(_sort_key(e) for e in x))
    return (4, repr(x))


