"""Explicit-state breadth-first exploration with shortest counterexamples.

BFS level by level: every state is stored once with its parent and the action that reached it, so
the first violation found is at minimal depth and its path is rebuilt by walking parents.  When a
level yields a violation the rest of that level is still expanded, so that an end-state violation
at the same depth is not beaten by an edge violation found earlier in queue order.

Bounds (states, depth, seconds) end with BOUND_REACHED, never with HOLDS.  Liveness (weak
fairness, lasso counterexamples) runs after safety when the model supports it; see liveness.py.
"""
from __future__ import annotations

import gc
import time
from array import array
from typing import Any, Callable

from .api import BOUND_REACHED, FAIL_FAST, HOLDS, Model, SpecError, Violation
from .features import KEYED, LIVENESS, SYMMETRY, features_of
from .result import Bounds, Result, Stats, peak_rss_mb  # re-exported: the old import path keeps working


class KeyedStates:
    """The explored states of a keyed search (model/features.py's ``keyed``): kept as their keys (a
    tuple of small integers instead of nested tuples) and rebuilt by the model on access."""

    __slots__ = ("keys", "state_of")

    def __init__(self, state_of: Callable[[Any], Any]):
        self.keys: list = []
        self.state_of = state_of

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i: int):
        return self.state_of(self.keys[i])

    def __iter__(self):
        return map(self.state_of, self.keys)

    def append(self, key) -> None:
        self.keys.append(key)


class Explorer:
    """Holds the explored graph: states by index, parent links, and (when liveness is wanted)
    the edges with the acting process and the set of processes enabled in each state."""

    def __init__(self, model: Model, bounds: Bounds | None = None, progress: Callable[[Stats], None] | None = None,
                 keep_graph: bool = False):
        self.model = model
        self.bounds = bounds or Bounds()
        self.progress = progress
        self.keep_graph = keep_graph
        # the visited set: key -> index when the graph is kept (an edge names its target), else a set
        self.index: dict[Any, int] | set = {} if keep_graph else set()
        self.states: list[Any] = []
        self.parent = array("i")  # index of the state each state was first reached from (-1: initial)
        self.via: list[Any] = []  # the action that reached it (equal actions share one object)
        self._actions: dict[Any, Any] = {}
        # the kept graph (liveness), compact: edge i is edge_src[i] -> edge_dst[i] taken by actor
        # number edge_actor[i] (actors interned in ``actor_names``; -1 for None), and state u's set
        # of enabled actors is ``enabled_sets[enabled_id[u]]`` (a few distinct sets, interned)
        self.edge_src, self.edge_dst, self.edge_actor = array("i"), array("i"), array("i")
        self.actor_ids: dict[Any, int] = {}
        self.actor_names: list[Any] = []
        self.enabled_id = array("i")
        # a keyed liveness search notes each state's obligation when it is found (``pending``), so
        # that the lasso search need not rebuild every state from its key; empty otherwise
        self.pending_flags = bytearray()
        self.enabled_sets: list[frozenset] = []
        self._enabled_ids: dict[frozenset, int] = {}  # frozenset of actor numbers -> index in enabled_sets
        self.stats = Stats()

    @property
    def edges(self):
        """(src, dst, actor) of every kept edge."""
        names = self.actor_names
        return [(i, j, names[a] if a >= 0 else None) for i, j, a in zip(self.edge_src, self.edge_dst, self.edge_actor)]

    @property
    def enabled(self):
        """Per state, the frozenset of actors with an enabled step."""
        sets = self.enabled_sets
        return [sets[k] for k in self.enabled_id]

    def _actor_id(self, actor) -> int:
        if actor is None:
            return -1
        k = self.actor_ids.get(actor)
        if k is None:
            k = self.actor_ids[actor] = len(self.actor_names)
            self.actor_names.append(actor)
        return k

    def depths(self) -> array:
        """BFS depth of every state (the length of its path from an initial state)."""
        parent = self.parent
        d = array("i", bytes(4 * len(parent)))
        for i, p in enumerate(parent):  # a parent is always stored before its children
            if p >= 0:
                d[i] = d[p] + 1
        return d

    # -- path reconstruction -------------------------------------------------------------
    def path_to(self, idx: int) -> list[tuple[Any, Any, Any]]:
        """(state, action, next) triples from an initial state to ``idx``."""
        steps = []
        while self.parent[idx] >= 0:
            p = self.parent[idx]
            steps.append((self.states[p], self.via[idx], self.states[idx]))
            idx = p
        steps.reverse()
        return steps

    def concrete(self, steps):
        """A path of orbit representatives (symmetry reduction) made into a concrete run."""
        return self.model.concretize(steps) if SYMMETRY in features_of(self.model) else steps

    def waiting_at_end(self, steps, state, concrete: bool = False):
        """Who waits on whom at the end of the concrete run (``state`` when the path is empty);
        ``concrete``: ``steps`` is that run already."""
        steps = steps if concrete else self.concrete(steps)
        return self.model.waiting(steps[-1][2] if steps and not isinstance(steps[-1][2], Violation) else
                                  (steps[-1][0] if steps else state))

    def describe_path(self, steps, concrete: bool = False) -> list[dict[str, Any]]:
        steps = steps if concrete else self.concrete(steps)
        out = []
        for i, (s, a, n) in enumerate(steps, 1):
            d = dict(self.model.describe(s, a, n))
            d["step"] = i
            out.append(d)
        return out

    def violation_result(self, v: Violation, steps, stats, stuck=None) -> Result:
        """The Result of violation ``v`` at the end of ``steps``, told on the concrete run.  Under symmetry
        the path is one of orbit representatives and ``v`` was found on the last of them, so a message
        that names ranks ("ranks 2 and 3 are both in CRIT", "rank 1 is blocked in send ...") named them
        as the representative has them: the message and detail are taken again from the concrete run's
        end (its violating step, or the invariant on its last state), where they have ``v``'s verdict.
        With ``stuck`` (the stuck state), who waits on whom too."""
        conc = self.concrete(steps)
        if conc is not steps and conc:
            end = conc[-1][2]
            w = end if isinstance(end, Violation) else self.model.invariant(end)
            if w is not None and w.verdict == v.verdict:
                v = w
        r = Result(v.verdict, v.message, stats, self.describe_path(conc, concrete=True), detail=dict(v.detail))
        if stuck is not None:
            r.waiting = self.waiting_at_end(conc, stuck, concrete=True)
        return r

    # -- exploration ---------------------------------------------------------------------
    def run(self) -> Result:
        """Explore; the cyclic garbage collector is off meanwhile (the search allocates millions of
        tuples and frees almost none: collections would only re-walk the visited set)."""
        was_on = gc.isenabled()
        gc.disable()
        try:
            return self._run()
        finally:
            if was_on:
                gc.enable()

    def _run(self) -> Result:
        model, b, st = self.model, self.bounds, self.stats
        t0 = time.perf_counter()
        last_report = t0
        # a keyed model numbers its states: the index and the stored states are keys, and a successor
        # that comes as its key is built only when it is new
        features = features_of(model)
        keyed = KEYED in features and model.keyed()
        if keyed and not self.states:
            self.states = KeyedStates(model.state_of)
        key_of = model.state_key if keyed else None
        state_of = model.state_of if keyed else None
        keys = self.states.keys if keyed else None
        index, states, parent, via = self.index, self.states, self.parent, self.via
        keep = self.keep_graph
        edge_src, edge_dst, edge_actor, actor_id = self.edge_src, self.edge_dst, self.edge_actor, self._actor_id
        enabled_ids, enabled_id = self._enabled_ids, self.enabled_id
        actor_of = model.actor_of if LIVENESS in features else None  # the kept graph's actors (weak fairness)
        flags = self.pending_flags
        pending = model.pending if keyed and keep and LIVENESS in features else None

        actions = self._actions
        action_aid: dict = {}  # action -> its actor's number (liveness graph)

        def add(s, p, a) -> int | None:
            k = key_of(s) if keyed else s
            if k in index:
                return None
            i = len(states)
            if keep:
                index[k] = i
            else:
                index.add(k)
            states.append(k)
            parent.append(p)
            try:
                a = actions.setdefault(a, a)
            except TypeError:  # an unhashable choice in the action: kept as it is
                pass
            via.append(a)
            if pending is not None:
                flags.append(bool(pending(s)))
            return i

        frontier: list[int] = []
        fstates: list = []  # the frontier's states (a keyed search stores only keys)
        for s in model.init_states():
            i = add(s, -1, None)
            if i is not None:
                frontier.append(i)
                fstates.append(s)
        # (length, a function that builds the Result) of each violation found in this level: only the
        # one reported is described (a level can hold thousands, each a whole counterexample to describe)
        found: list[tuple[int, Callable[[], Result]]] = []
        depth = 0
        bound_hit = None
        successors, invariant, classify_end = model.successors, model.invariant, model.classify_end
        if keyed:
            successors = model.keyed_successors

        def violation_result(v: Violation, i: int, step: tuple | None = None, stuck=None) -> Callable[[], Result]:
            """The Result of violation ``v`` at state ``i`` (after ``step`` when an edge violates; with who
            waits on whom when ``stuck``, the stuck state), built when called."""
            def build() -> Result:
                return self.violation_result(v, self.path_to(i) + ([step] if step else []), st, stuck)
            return build

        # invariants of initial states
        for i, s in zip(frontier, fstates):
            v = invariant(s)
            if v is not None:
                found.append((0, violation_result(v, i)))
        while frontier and not found:
            if b.max_depth is not None and depth >= b.max_depth:
                bound_hit = f"max-depth {b.max_depth}"
                break
            nxt: list[int] = []
            nxt_states: list = []
            for i, s in zip(frontier, fstates):
                succ_any = False
                en = set() if keep else None
                ntrans = 0
                try:
                    succs = successors(s, keys[i]) if keyed else successors(s)
                    if type(succs) is not list:
                        succs = list(succs)
                    ntrans = len(succs)
                    nst = len(parent)  # the index the next new state gets
                    for a, n in succs:
                        if keyed and type(n) is int:  # the successor's key: built below only if new
                            k, n = n, None
                        elif isinstance(n, Violation):
                            if a is None:  # the state itself is the violation (stuck): no extra step
                                found.append((depth, violation_result(n, i, stuck=s)))
                            else:
                                found.append((depth + 1, violation_result(n, i, (s, a, n))))
                            continue
                        else:
                            k = key_of(n) if keyed else n
                        if keep:  # one hash of the successor: stored under the next index unless already there
                            j = index.setdefault(k, nst)
                            try:
                                aid = action_aid.get(a)
                            except TypeError:  # an unhashable choice in the action
                                aid = actor_id(actor_of(a) if actor_of else None)
                            if aid is None:
                                aid = action_aid[a] = actor_id(actor_of(a) if actor_of else None)
                            en.add(aid)
                            edge_src.append(i)
                            edge_dst.append(j)
                            edge_actor.append(aid)
                            if j != nst:
                                continue
                        else:  # one hash of the successor: added, and new iff the set grew
                            index.add(k)
                            if len(index) == nst:
                                continue
                            j = nst
                        nst += 1
                        if n is None:
                            n = state_of(k)
                        states.append(k)
                        parent.append(i)
                        try:
                            a = actions.setdefault(a, a)
                        except TypeError:  # an unhashable choice in the action: kept as it is
                            pass
                        via.append(a)
                        nxt.append(j)
                        nxt_states.append(n)
                        if pending is not None:
                            flags.append(bool(pending(n)))
                        v = invariant(n)
                        if v is not None:
                            found.append((depth + 1, violation_result(v, j)))
                except SpecError:
                    raise
                finally:
                    st.transitions += ntrans
                    succ_any = ntrans > 0
                if keep:
                    fen = frozenset(en)  # of actor numbers: one set of names per distinct set of numbers
                    k = enabled_ids.get(fen)
                    if k is None:
                        k = enabled_ids[fen] = len(self.enabled_sets)
                        names = self.actor_names
                        self.enabled_sets.append(frozenset(names[x] if x >= 0 else None for x in fen))
                    enabled_id.append(k)
                if not succ_any:
                    st.end_states += 1
                    kind = classify_end(s)
                    if kind == FAIL_FAST:
                        st.fail_fast_ends += 1
                    elif isinstance(kind, Violation):
                        found.append((depth, violation_result(kind, i, stuck=s)))
                if b.max_states is not None and len(parent) >= b.max_states:
                    bound_hit = f"max-states {b.max_states}"
                    break
                now = time.perf_counter()
                if now - last_report > 0.25:
                    last_report = now
                    st.states, st.depth, st.seconds = len(states), depth, now - t0
                    if b.timeout is not None and st.seconds > b.timeout:
                        bound_hit = f"timeout {b.timeout:g}s"
                        break
                    if self.progress:
                        self.progress(st)
            if bound_hit:
                break
            frontier, fstates = nxt, nxt_states
            if frontier:
                depth += 1
        st.states, st.depth, st.seconds = len(states), depth, time.perf_counter() - t0
        st.peak_rss_mb = peak_rss_mb()
        if found:
            found.sort(key=lambda x: x[0])  # (stable: the first found of the shortest)
            return found[0][1]()
        if bound_hit:
            return Result(BOUND_REACHED, f"bound reached ({bound_hit}) before the state space was exhausted; "
                                         f"no violation in the {st.states:,} states explored", st, bound=bound_hit)
        return Result(HOLDS, "all properties hold within the bounds", st)


def check(model: Model, bounds: Bounds | None = None, progress=None, liveness: bool = True, reduction: bool = True) -> Result:
    """``model.engine.check(model, CheckOptions(bounds, reduction, liveness))`` (kept for existing
    callers; new code builds a CheckOptions and calls the engine)."""
    from .engine import CheckOptions, check as engine_check

    return engine_check(model, CheckOptions(bounds=bounds or Bounds(), reduction=reduction, liveness=liveness,
                                            progress=progress))


def judge_coverage(model, res: Result) -> Result:
    """``model.engine.judge_coverage`` (kept for existing callers)."""
    from .engine import judge_coverage as judge

    return judge(model, res)
