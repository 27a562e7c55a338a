"""Reductions of a ``Protocol``'s state graph: partial-order reduction (ample sets) and symmetry
(interchangeable actors, orbit representatives).  A mixin: the world's semantics are in world.py.
"""
from __future__ import annotations

from ..model.api import SpecError, Violation
from .lang import Ctx
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
        """Lassos are checked on the full interleaving graph: partial-order reduction and symmetry stay
        off (weak fairness is judged per actor, and symmetry re-sorts actors after every step)."""
        self._por_live = on
        self._por_on = self._por_reduce and not on and bool(self._por_actors)
        self._sym_on = self._sym_wanted and not on

    # -- the hooks of model/por.py's ample-set rule ---------------------------------------------
    # An eligible actor (a private role, alone on its rank, no cycle of local transitions) takes
    # local steps and op posts: its guards read only its own variables (the world refuses a private
    # role's access to shared variables at run time), so nothing another process does can enable or
    # disable its steps (C0); its steps touch only its own actor state, which another process reads
    # only once an op is posted (a fabric step, which needs the post first) (C1, with the fault
    # exceptions below); a step is visible when it changes a variable, the control state or the
    # pending op that its role declares ``observed`` (C2: the world checks at run time that
    # properties read nothing else); the actor's local steps form no cycle and an op post blocks
    # it until a fabric step, so every cycle of the reduced graph has a full expansion (C3).
    def por_actor(self, action):
        if action is not None and action[0] == "t" and action[1] in self._por_actors:
            return action[1]
        return None

    def por_complete(self, state, i, moves) -> bool:
        return True  # private guards read only the actor's own variables and the parameters

    def por_visible(self, state, action, nxt) -> bool:
        i = action[1]
        role = self.actors[i].role
        if role.transitions[action[2]].check is not None:
            return True
        ctl, v, pend = state[0][i]
        nctl, nv, npend = nxt[0][i]
        if nv is None:  # the process exits: other ranks' ops now fail
            return True
        vis = role.visible
        if not vis:
            return False
        if "ctl" in vis and nctl != ctl:
            return True
        if "pending" in vis and npend != pend:
            return True
        return any(getattr(v, f) != getattr(nv, f) for f in role.observed if f != "ctl" and f != "pending")

    def por_independent(self, state, i, moves, succs) -> bool:
        actors, g, fu = state[:3]
        if fu >= self.max_faults or not self._faults_possible:
            return True  # no fault can be injected any more: nothing below applies
        ctl = actors[i][0]
        a = self.actors[i]
        role = a.role
        # a named fault spends the run's fault budget, which every other fault step reads
        if any(role.transitions[t].fault in self.faults for t in role.by_src.get(ctl, ())):
            return False
        # the step moves the actor off a hang point: it disables ``hang`` of its rank
        if "hang" in self.faults and a.rank in self.hang_ranks and ctl in role.hang_points:
            return False
        # The stuck rule offers no fault in a state where only faults could happen.  Before this actor
        # moves, its step keeps every state the others reach non-stuck (it stays enabled: C0), so faults
        # are offered there; after the move that holds only if the actor still has a step of its own.
        # So while a fault can still be injected, the step is reduced only when it leaves the actor
        # with an enabled step (this also covers a step that ends the rank: a terminal rank is never
        # crashed or hung).
        for _, n in moves:
            if not self._has_step(n, i):
                return False
        return True

    def _has_step(self, state, i) -> bool:
        """Whether actor i (of a private role) has an enabled normal step in ``state``."""
        ctl, v, pend = state[0][i]
        if pend is not None or v is None:
            return False
        role = self.actors[i].role
        for tidx in role.by_src.get(ctl, ()):
            t = role.transitions[tidx]
            if t.quiescent or (t.fault is not None and (t.fault not in self.faults or state[2] >= self.max_faults)):
                continue
            if t.guard is None:
                return True
            c = Ctx(v, state[1], self.params, self.actors[i].rank, t.dst[0], self, i, None, self._ctx_flags[i], t.name)
            if self._call(f"{role.name}.{t.name} (guard)", t.guard, c):
                return True
        return False

    def por_no_ignoring(self, state, i, moves) -> bool:
        return True  # by eligibility: no local cycle, and an op post waits for a fabric step

    def _check_reads(self, what: str, reads) -> None:
        """A property read of a reduced actor must be of something its role declares observed."""
        pa = self._por_actors
        bad = [(i, f) for i, f in reads if i in pa and f not in self.actors[i].role.visible]
        if bad:
            i, f = min(bad)  # the same report whatever order the set iterates in (string hashes vary by process)
            a = self.actors[i]
            kind = {"ctl": "control state", "pending": "pending op"}.get(f, f"variable {f!r}")
            raise SpecError(what, PermissionError(
                f"reads the {kind} of {a.label} (role {a.role.name}), which the role does not declare in "
                f"observed=...; the partial-order reduction would hide changes to it (add {f!r} to observed)"))

    def _check_symmetric(self, what: str, fn, state, verdict) -> None:
        """A property of a world with symmetric actors must not tell them apart: compare its verdict
        on the state with two permutations that generate all others (a swap and a rotation)."""
        actors = state[0]
        sym = self.symmetric
        parts = [actors[i] for i in sym]
        if all(p == parts[0] for p in parts[1:]):
            return
        for perm in (parts[1:2] + parts[0:1] + parts[2:], parts[1:] + parts[:1]):
            nl = list(actors)
            for i, p in zip(sym, perm):
                nl[i] = p
            other = fn(WorldState(tuple(nl), *state[1:]))
            if bool(other) != bool(verdict):
                raise SpecError(what, ValueError(
                    f"tells the symmetric actors {', '.join(self.actors[i].label for i in sym)} apart (it gives a "
                    f"different verdict once their states are permuted); drop them from symmetric=... or make it symmetric"))

    # -- symmetry reduction ------------------------------------------------------------------
    def set_reduction(self, on: bool) -> None:
        self._sym_wanted = on and len(self.symmetric) > 1
        self._sym_on = self._sym_wanted and not self._por_live
        self._por_reduce = on
        self._por_on = on and not self._por_live and bool(self._por_actors)

    def reducing(self) -> bool:
        """Whether the next search explores a reduced graph (partial-order or symmetry reduction on)."""
        return bool(self._por_on or self._sym_on)

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


