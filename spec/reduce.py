"""Reductions of a ``Protocol``'s state graph: partial-order reduction (ample sets) and symmetry
(interchangeable actors, orbit representatives).  A mixin: the world's semantics are in world.py.
"""
from __future__ import annotations

import math

from ..model.api import SpecError, Violation
from .lang import CONTROL_FIELDS, DEAD, FAILED, FOOTPRINT, PRIVATE
from .fabric import ranks_text
from .view import ALIVE, SHARED, RecordedVars


class Reductions:
    # -- partial-order reduction --------------------------------------------------------------
    def _por_eligible_actors(self) -> frozenset:
        """Actors whose steps may form an ample set: those of a role that declares what it shares
        (``private``: nothing; ``shares=``/``reads=``/``writes=``: footprints).  Whether one qualifies in
        a state is decided there (model/por.py's rule, the hooks below).  Builds the footprint tables."""
        self._footprint_tables()
        return frozenset(i for i in range(len(self.actors)) if self._fp_ctl[i] is not None)

    def _footprint_tables(self) -> None:
        """Per actor: ``_footprints`` (transition name -> (may read, may write), for the Ctx's
        enforcement; reads include writes), ``_fp_ctl`` (control state -> (reads, writes) of every
        transition leaving it; None for a role that declares nothing), ``_fp_future`` (control state ->
        (reads, writes) of every transition reachable from it: what the actor may still touch) and
        ``_back`` (control states left by a back edge of the role's local transitions: C3),
        ``_may_fail`` (control states from which it may still end in FAILED or DEAD), ``_may_post``
        (control states from which it may still post an op, and per transition whether one of its
        targets is such a state) and ``_posting`` (its control states with
        an op step, where its rank has another thread: C1 asks there what the other threads may post)."""
        names = frozenset(self.shared)
        everything = (names, names, frozenset(), frozenset())
        self._footprints, self._fp_ctl, self._fp_future, self._back, self._may_fail = [], [], [], [], []
        self._may_post, self._posting = [], []
        per_role: dict = {}
        for a in self.actors:
            role = a.role
            if role.name not in per_role:
                per_role[role.name] = _role_tables(role, names, everything, self._implied_private)
            fps, ctl, future, back, exits, posts = per_role[role.name]
            self._footprints.append(fps)
            self._fp_ctl.append(ctl)
            self._fp_future.append(future)
            self._back.append(back)
            self._may_fail.append(exits)
            # per transition: whether the thread may post again once its op completes (from its targets)
            self._may_post.append((posts, tuple(any(d in posts for d in t.targets) for t in role.transitions)))
            shared_rank = len(self.actors_of_rank[a.rank]) > 1
            self._posting.append(frozenset(c for c, tids in role.by_src.items()
                                           if shared_rank and any(role.transitions[t].op is not None for t in tids)))

    def _refresh_flags(self) -> None:
        """The footprint check runs while the reduction is on (it relies on the declarations only
        then); the memo of step effects is emptied when that changes."""
        want = [bool(self._por_on and self._fp_ctl[i] is not None and not f & PRIVATE and self._footprints[i])
                for i, f in enumerate(self._ctx_flags)]
        flags = [(f & ~FOOTPRINT) | (FOOTPRINT if w else 0) for f, w in zip(self._ctx_flags, want)]
        if flags != self._ctx_flags:
            self._ctx_flags = flags
            self._memo = {}

    def set_liveness(self, on: bool) -> None:
        """Lassos are checked on the full interleaving graph: partial-order reduction and symmetry stay
        off (weak fairness is judged per actor, and symmetry re-sorts actors after every step)."""
        self._por_live = on
        self._por_on = self._por_reduce and not on and bool(self._por_actors)
        self._sym_on = self._sym_wanted and not on
        self._refresh_flags()

    # -- the hooks of model/por.py's ample-set rule ---------------------------------------------
    # An eligible actor p declares what it shares: nothing (``private``) or, per transition, the shared
    # variables it reads and writes (footprints; the Ctx refuses any other access while the reduction
    # is on).  In a state where p is at control state c, p qualifies when:
    # - C0: every guard of p's transitions at c reads only p's own variables, the parameters and shared
    #   variables no other actor may still write: what is disabled stays disabled until p moves;
    # - C1: no other actor may still (from its current control state on) write what p's transitions at
    #   c read, or read or write what they write, so steps commute and none disables another; p's
    #   steps touch otherwise only p's own actor state, which another process reads only once an op is
    #   posted (a fabric step, which needs the post first); when p shares its rank with another thread
    #   that may still post an op (from its control state on, or once its pending op completes), p
    #   takes no op steps at c (a rank's ops are queued in posting order: model/por.py, "Threads
    #   sharing a rank"); the fault exceptions are
    #   in ``por_independent``.  A step of p that ends p while an op of p's rank posted without
    #   blocking is outstanding is not taken alone: the op is void once the process is gone, so the
    #   step disables the completion another rank's later op would have with it.  A step another
    #   thread takes that kills p's rank (FAILED, DEAD) or a
    #   crash/hang of p's rank erases p's state whether p moved first or not, but not what p wrote
    #   nor p's state once p is DONE: while that can happen, p's steps that write a shared variable
    #   or end p are not taken alone;
    # - C2: a step is visible when it changes a variable, the control state, the pending op or a
    #   shared variable that its role declares ``observed``, changes the condition of a field its
    #   role declares ``observed_when`` or the field where the condition held, ends the process,
    #   or carries a check (the world checks at run time that properties read nothing else of a
    #   reduced actor, and an ``observed_when`` field only where its condition holds);
    # - C3: c is left by no back edge of the role's local transitions (a depth-first search from the
    #   initial state): a cycle of the reduced graph returns every actor that moves on it to its
    #   state, so some actor's local steps close a cycle of its role's local graph, which holds a
    #   back edge, taken from a fully expanded state; an op step blocks the actor until a fabric step,
    #   which is never reduced alone.  A role that declares ``progress`` may be reduced at c too, when
    #   the step raises the measure (``por_no_ignoring``).
    def por_actor(self, action):
        if action is not None and action[0] == "t" and action[1] in self._por_actors:
            return action[1]
        return None

    def por_groups(self, succs) -> dict:
        """``succs`` grouped by ``por_actor`` (model/por.py), in order of first appearance."""
        pa = self._por_actors
        by_actor: dict = {}
        for a, n in succs:
            p = a[1] if a is not None and a[0] == "t" and a[1] in pa else None
            g = by_actor.get(p)
            if g is None:
                by_actor[p] = [(a, n)]
            else:
                g.append((a, n))
        return by_actor

    def por_sets(self, state, by_actor: dict):
        """Candidate ample sets of several actors (model/por.py, "Threads sharing a rank"): every
        thread of a rank that runs two or more, where each thread that has not ended has steps now
        (none is blocked in an op or waiting on a guard).  Yields each set's actors."""
        actors = state[0]
        for r in self._thread_ranks:
            members = []
            for j in self.actors_of_rank[r]:
                ctl, v, pend = actors[j]
                if v is None or (pend is None and self._terminal(j, ctl)):
                    continue  # gone, or ended: it takes no step again
                if j not in by_actor:
                    break
                members.append(j)
            else:
                if len(members) > 1:
                    yield members

    def por_complete(self, state, i, moves, inside=None) -> bool:
        """C0 and C1's footprint part for actor i's ``moves``; ``inside``: the actors of a set that is
        taken together (``por_sets``), whose own conflicts with i do not count, and which hold every
        thread of i's rank that can still step."""
        ctl = state[0][i][0]
        if inside is None and ctl in self._posting[i] and self._thread_may_post(state, i):
            return False  # C1: another thread of p's rank may still post an op (posting order)
        fp = self._pc_static[i].get(ctl, _UNSET)
        if fp is _UNSET:
            fp = self._pc_static[i][ctl] = self._complete_static(i, ctl)
        if fp.__class__ is bool:
            return fp
        o = self._others(state, i, inside)
        if _conflict(fp, o):  # C0 and C1: nothing p reads changes, nothing p writes is touched by another
            return False
        P, T = fp[2] & o[3], fp[3] & o[2]
        if P or T:  # C0 for FIFO ends: a put waiting for room, or a take for an item, could be enabled
            enabled = {a[2] for a, _ in moves}
            role = self.actors[i].role
            fps = self._footprints[i]
            for k in role.by_src.get(ctl, ()):
                f = fps[role.transitions[k].name]
                if (f[2] & P or f[3] & T) and k not in enabled:
                    return False
        return True

    def _complete_static(self, i, ctl):
        """What ``por_complete`` decides from actor i's control state alone: False (C3 without a
        progress measure), True (nothing shared is
        read, put or taken), or the footprint whose conflicts with the others decide."""
        role = self.actors[i].role
        if ctl in self._back[i] and role.progress is None:  # C3 (por_no_ignoring)
            return False
        fp = self._fp_ctl[i].get(ctl)
        if fp is None or not (fp[0] or fp[2] or fp[3]):
            return True
        return fp

    def _thread_may_post(self, state, i) -> bool:
        """Whether another live thread of p's rank may still post an op: from its control state on,
        or, while it waits on an op it posted, once that op completes (from the transition's targets)."""
        actors = state[0]
        for j in self.actors_of_rank[self._actor_rank[i]]:
            if j != i:
                ctl, v, pend = actors[j]
                if v is not None and (ctl in self._may_post[j][0] if pend is None else self._may_post[j][1][pend[0]]):
                    return True
        return False

    def _others(self, state, i, inside=None) -> tuple:
        """(reads, writes, puts, takes): what every other actor (outside ``inside``) may still touch."""
        R = W = P = T = frozenset()
        fut = self._fp_future
        for j, st in enumerate(state[0]):
            if j != i and st[1] is not None and (inside is None or j not in inside):
                f = fut[j].get(st[0])
                if f is not None:
                    R, W, P, T = R | f[0], W | f[1], P | f[2], T | f[3]
        return R, W, P, T

    def _rank_may_die(self, state, i) -> bool:
        """Whether p's rank may be crashed or hung, or another thread of it may still fail (which ends
        the process) before p moves: p's state is then erased either way, but not what p wrote, and a
        thread that finished (DONE) keeps its state."""
        rank = self._actor_rank[i]
        if state[2] < self.max_faults and (("crash" in self.faults and rank in self.crash_ranks)
                                           or ("hang" in self.faults and rank in self.hang_ranks)):
            return True
        actors = state[0]
        return any(j != i and actors[j][1] is not None and actors[j][0] in self._may_fail[j]
                   for j in self.actors_of_rank[rank])

    def por_visible(self, state, action, nxt) -> bool:
        fn = self._vis_fns.get(action[1])
        if fn is None:
            fn = self._vis_fns[action[1]] = self._visibility(action[1])
        return fn(state, action, nxt)

    def _visibility(self, i):
        """``por_visible`` for actor i's steps, compiled from its role's declarations: the same tests
        in the same order, on the fields its role observes."""
        role = self.actors[i].role
        hot = {k for k, t in enumerate(role.transitions) if t.check is not None}
        if self._monitor_set is not None:
            hot |= set(self._monitor_set.reach[i])
        vis = set(role.observed)
        lines = ["def visible(state, action, nxt):",
                 "    if action[2] in HOT: return True",
                 f"    st = state[0][{i}]; nst = nxt[0][{i}]",
                 "    if nst[1] is None: return True"]
        if not vis and not role.observed_when:
            lines.append("    return False")
        else:
            if "ctl" in vis:
                lines.append("    if nst[0] != st[0]: return True")
            if "pending" in vis:
                lines.append("    if nst[2] != st[2]: return True")
            fields = role.V._fields
            tests = [f"st[1].{f} != nst[1].{f}" if f in fields else f"state[1].{f} != nxt[1].{f}"
                     for f in role.observed if f != "ctl" and f != "pending"]
            if role.observed_when:
                tests.append("when(st, nst)")
            lines.append("    if st[1].__class__ is not V: return slow(state, action, nxt)")
            lines.append(f"    return bool({' or '.join(tests)})" if tests else "    return False")
        ns = {"HOT": frozenset(hot), "V": role.V, "slow": self._por_visible, "when": self._when_test(role)}
        exec("\n".join(lines), ns)  # noqa: S102 - generated from the role's declared field names
        return ns["visible"]

    def _por_visible(self, state, action, nxt) -> bool:
        i = action[1]
        role = self.actors[i].role
        if role.transitions[action[2]].check is not None:
            return True
        if self._monitor_set is not None and action[2] in self._monitor_set.reach[i]:
            return True  # the step fires an event one of the world's monitors watches (monitor.py)
        ctl, v, pend = state[0][i]
        nctl, nv, npend = nxt[0][i]
        if nv is None:  # the process exits: other ranks' ops now fail
            return True
        vis = role.observed
        if not vis and not role.observed_when:
            return False
        if "ctl" in vis and nctl != ctl:
            return True
        if "pending" in vis and npend != pend:
            return True
        fields = v._fields
        g, ng = state[1], nxt[1]
        return any(getattr(v, f) != getattr(nv, f) if f in fields else getattr(g, f) != getattr(ng, f)
                   for f in role.observed if f != "ctl" and f != "pending") \
            or (bool(role.observed_when) and self._when_test(role)(state[0][i], nxt[0][i]))

    def _when_test(self, role):
        """``_when_visible(role)``, built once per role."""
        fn = self._when_fns.get(role.name)
        if fn is None:
            fn = self._when_fns[role.name] = self._when_visible(role)
        return fn

    def _when_visible(self, role):
        """(actor state before, after) -> whether the step is visible through ``observed_when``: a
        field observed where a condition on the actor's own variables holds is part of what properties
        see of the actor exactly there, so the step is visible when it changes the condition, or the
        field where the condition holds.  Both depend on the actor's local state alone, which the
        steps of others do not change: the same step is invisible in every state C1 lets it commute
        through (model/por.py, C2)."""
        fields = role.V._fields
        where = f"{role.name} observed_when"
        def getter(f):
            if f in fields:
                k = fields.index(f)
                return lambda a: a[1][k]
            k = 0 if f == "ctl" else 2  # ActorState (ctl, vars, pending)
            return lambda a: a[k]
        pairs = [(getter(f), cond) for f, cond in role.observed_when.items()]

        def when(st, nst):
            for get, cond in pairs:
                before = bool(self._call(where, cond, st[1]))
                if before != bool(self._call(where, cond, nst[1])) or (before and get(st) != get(nst)):
                    return True
            return False
        return when

    def por_independent(self, state, i, moves, succs) -> bool:
        ctl = state[0][i][0]
        st = self._pi_static[i].get(ctl)
        if st is None:
            st = self._pi_static[i][ctl] = self._independent_static(i, ctl)
        writes, blocks_faults = st
        if state[3] and self._voids_posts(state, i, moves):
            return False
        if (writes or any(self._terminal(i, n[0][i][0]) for _, n in moves)) and self._rank_may_die(state, i):
            # killing p's rank erases p's state, but neither what p wrote nor a thread that is DONE: the
            # kill before p's step and the kill after it would lead to different states; and a step that
            # ends p (DONE, or a control state with no transitions) may leave nothing on its rank that a
            # crash or hang could strike
            return False
        if state[2] >= self.max_faults or not self._faults_possible:
            return True  # no fault can be injected any more: nothing below applies
        # Every fault enabled before p moves stays enabled after p's step: which faults may strike reads
        # the fault budget (p's step spends none unless it is a named fault: refused here), the control
        # states of the fault's rank (p's step does not end p while its rank may be killed, checked
        # above, and leaves no hang point: refused here) and nothing else, since a stuck state offers
        # the faults too (world.py).  So whether p still has a step of its own afterwards does not matter.
        return not blocks_faults

    def _voids_posts(self, state, i, moves) -> bool:
        """Whether a step of p may end p's process while an op its rank posted without blocking is
        still outstanding: the op is void once the process is gone (wire.py, ``_drop_gone_posts``),
        so the step disables the completion another rank's later op would have had with it."""
        if not any(self._terminal(i, n[0][i][0]) for _, n in moves):
            return False
        rank, arank = self._actor_rank[i], self._actor_rank
        return any(e[0] == "op" and not e[6] and arank[e[1]] == rank for e in state[3])

    def _independent_static(self, i, ctl) -> tuple:
        """What ``por_independent`` reads of actor i's control state alone: (its transitions there may
        write, put or take a shared variable; a step there interacts with the faults by itself: a
        named fault spends the run's fault budget, which every other fault step reads, and a step
        off a hang point disables ``hang`` of its rank)."""
        fp = self._fp_ctl[i].get(ctl)  # C1's footprint part is checked with C0 in por_complete
        a = self.actors[i]
        role = a.role
        named = any(role.transitions[t].fault in self.faults for t in role.by_src.get(ctl, ()))
        hang_point = "hang" in self.faults and a.rank in self.hang_ranks and ctl in role.hang_points
        return bool(fp is not None and (fp[1] or fp[2] or fp[3])), named or hang_point

    def por_no_ignoring(self, state, i, moves) -> bool:
        """C3.  Without a declared progress measure, ``por_complete`` already refused control states
        left by a back edge.  With one, every step taken alone must not lower it, and one from a
        back-edge state must raise it: a cycle of steps taken alone would return each actor moving on
        it to its own state, so across its steps the measure rises and never falls: no such cycle."""
        role = self.actors[i].role
        if role.progress is None:
            return True
        v = state[0][i][1]
        where = f"{role.name} progress"
        before = self._call(where, role.progress, v)
        strict = state[0][i][0] in self._back[i]
        for _, n in moves:
            after = self._call(where, role.progress, n[0][i][1])
            if after < before or (strict and not after > before):
                return False
        return True

    def _check_reads(self, what: str, reads, state, rec) -> None:
        """A property read of a reduced actor must be of something its role declares observed; a
        property read of a shared variable (recorded as actor SHARED) must be declared observed by every
        reduced role that may write it; a read of a field the role observes only where a condition
        holds (``observed_when``) must come where it holds in ``state``.  The condition's own reads go
        into ``rec``, the property's record, so a memoised verdict is reused only where the condition
        has the same value."""
        pa = self._por_actors
        bad = [(i, f) for i, f in reads if i in pa and f not in self.actors[i].role.visible]
        for i, f in reads:
            cond = self.actors[i].role.observed_when.get(f) if i in pa else None
            v = state[0][i][1] if cond is not None else None
            if v is not None and not self._call(f"{self.actors[i].role.name} observed_when", cond, RecordedVars(v, rec, i)):
                a = self.actors[i]
                raise SpecError(what, PermissionError(
                    f"reads {f!r} of {a.label} (role {a.role.name}) in a state where the role's observed_when "
                    f"condition for {f!r} is false; the partial-order reduction treats changes to it there as "
                    f"invisible (read it only where the condition holds, or declare it in observed=...)"))
        for j, f in reads:
            if j == SHARED:
                bad += [(i, f) for i in pa if f not in self.actors[i].role.visible
                        and any(f in w or f in pu or f in ta for _, w, pu, ta in self._fp_ctl[i].values())]
        if bad:
            self._refuse_unobserved(what, sorted(set(bad)))  # sorted: one report whatever order the set iterates in

    def _refuse_unobserved(self, what: str, bad: list) -> None:
        """The spec error of a property read that ``observed=`` does not declare: every such read the
        property made on this state, with what to add to each role's ``observed=``."""
        def said(i, f):
            a = self.actors[i]
            if f not in a.role.V._fields and f not in CONTROL_FIELDS:
                return f"shared variable {f!r}, which {a.label} (role {a.role.name}) may write"
            kind = {"ctl": "control state", "pending": "pending op"}.get(f, f"variable {f!r}")
            return f"the {kind} of {a.label} (role {a.role.name})"
        first: dict = {}  # one entry per (role, field): the first actor that shows it
        for i, f in bad:
            first.setdefault((self.actors[i].role.name, f), i)
        if len(first) == 1:
            ((_, f), i), = first.items()
            a = self.actors[i]
            if f not in a.role.V._fields and f not in CONTROL_FIELDS:
                raise SpecError(what, PermissionError(
                    f"reads {said(i, f)}, and the role does not declare it in observed=...; the partial-order reduction "
                    f"would hide changes to it (add {f!r} to observed)"))
            raise SpecError(what, PermissionError(
                f"reads {said(i, f)}, which the role does not declare in observed=...; the partial-order reduction "
                f"would hide changes to it (add {f!r} to observed)"))
        roles: dict = {}
        for (role, f) in first:
            roles.setdefault(role, []).append(f)
        shown = [said(i, f) for (role, f), i in first.items()]
        fixes = "; ".join(f"Role({role!r}, ..., observed=(..., {', '.join(map(repr, sorted(fs)))}))"
                          for role, fs in sorted(roles.items()))
        raise SpecError(what, PermissionError(
            f"reads what its roles do not declare in observed=...: {', '.join(shown[:6])}{', ...' if len(shown) > 6 else ''}; "
            f"the partial-order reduction would hide changes to them (add them: {fixes})"))

    def _check_symmetric(self, what: str, probe, state, verdict, reads, tree: bool = True):
        """A property of a world with symmetric actors must not tell them apart: its verdict must be
        the same on every permutation of their states.  ``probe(state)`` gives the property's verdict
        there and what it read (the (actor, field) pairs; None when it took the raw state); ``reads``:
        what it read on ``state``, where it gave ``verdict``.

        A deterministic property returns the same on every arrangement that agrees with one it was
        evaluated on at the fields it read there.  So the arrangements are split, as a decision tree,
        into classes with one evaluation each: for the reads (k, f) of an evaluated arrangement, in
        order, the arrangements that agree at the earlier reads and put another value at (k, f) form
        the next classes, each evaluated on an arrangement found by matching parts to positions.  That
        covers every permutation of the symmetric actors, and so a property that singles out some of
        them (``world.actor(1)``, a comparison of ranks 1 and 3) is caught wherever the states the
        search checks hold what tells them apart, however many symmetric actors there are.  A
        property that reads every symmetric actor (an aggregate, e.g. "all agree") would need one
        evaluation per arrangement: such a tree, one that grows beyond ``SYM_CHECK_BUDGET``
        evaluations, and a property that reads the raw state get the two permutations that generate
        the others (a swap and a rotation) and the reversal instead.

        Returns (whether the tree covered every permutation, what its evaluations read: their
        (actor, field) pairs, None where one took the raw state); ``tree`` False goes straight to the
        generators.  A state that agrees with this one at those reads outside the symmetric actors,
        and whose symmetric actors hold the same values at the fields read, as a multiset, gets the
        same tree and the same outcome (world.py's ``_SymmetryMemo``)."""
        actors = state[0]
        sym = list(self.symmetric)
        m = len(sym)
        ms = self._monitor_set if len(state) > 4 and self._monitor_set.moves_with_symmetry else None
        parts = self._sym_parts(state)
        if all(p == parts[0] for p in parts[1:]):
            return True, reads  # every permutation is this state
        pos_of = {i: k for k, i in enumerate(sym)}
        index: dict = {}  # field -> {value: bit mask of the symmetric actors holding it there}
        full = (1 << m) - 1

        def holding(f) -> dict:
            g = index.get(f)
            if g is None:
                g = index[f] = {}
                for j, p in enumerate(parts):
                    v = _field(p[0] if ms is not None else p, f)  # field f as the view records it
                    g[v] = g.get(v, 0) | 1 << j
            return g

        def meeting(c) -> int:  # the symmetric actors whose states meet constraints c ({field: value})
            mask = full
            for f, v in c.items():
                mask &= holding(f).get(v, 0)
            return mask

        def arranged(order):  # order[k]: the symmetric actor whose state goes to position k
            if ms is not None:  # per-rank monitor instances move with their actors (monitor.py)
                return ms.permute(self, state, [sym[j] for j in order])
            nl = list(actors)
            for i, j in zip(sym, order):
                nl[i] = actors[sym[j]]
            return type(state)(tuple(nl), *state[1:])

        def agrees(order):
            other = arranged(order)
            out, reads = probe(other)
            if bool(out) != bool(verdict):
                who = [self.actors[i] for i in sym]
                main = all(a.thread == "main" for a in who)
                names = ranks_text(a.rank for a in who) if main else ", ".join(a.label for a in who)

                def placed(st):  # "ranks 1-14 in APPLY, rank 15 in SYNC"
                    runs: list = []
                    for a, i in zip(who, sym):
                        ctl = st[0][i][0]
                        if main and runs and runs[-1][0] == ctl:
                            runs[-1][1].append(a.rank)
                        else:
                            runs.append((ctl, [a.rank] if main else a.label))
                    return ", ".join(f"{ranks_text(x) if main else x} in {ctl}" for ctl, x in runs)
                here, there = placed(state), placed(other)
                how = (f"with {here}, and {_said(out)} with {there} (the same states, permuted)" if here != there else
                       f"with {here}, and {_said(out)} once their variables are permuted among them")
                raise SpecError(what, ValueError(
                    f"tells the symmetric actors ({names}) apart: it gives {_said(verdict)} {how}; drop them from "
                    f"symmetric=... or make it symmetric"))
            return reads

        identity = list(range(m))
        todo = [({}, identity)] if tree else []  # (constraints {position: {field: value}}, an arrangement meeting them)
        evaluations = 0
        read = set()  # what every evaluation read
        while todo:
            if evaluations == SYM_CHECK_BUDGET:
                break
            cons, order = todo.pop()
            if evaluations:
                reads = agrees(order)
            evaluations += 1
            if reads is None:
                read = None
                break  # the raw state: the generators below
            read.update(reads)
            at = sorted([(pos_of[i], f) for i, f in reads if i in pos_of])  # (fields are strings)
            if evaluations == 1 and m > AGGREGATE_FROM and len({k for k, _ in at}) == m and \
                    arrangements(parts) > SYM_CHECK_BUDGET:
                break  # an aggregate over every symmetric actor, with more leaves than the budget: the generators below
            cur = dict(cons)
            for k, f in at:
                ck = cur.get(k, {})
                if f in ck:
                    continue  # fixed in this class
                at_f = holding(f)
                have = next(v for v, mask in at_f.items() if mask >> order[k] & 1)
                # the other values an actor that meets this position's constraints has there
                fits = meeting(ck)
                for v, mask in at_f.items():
                    if v != have and mask & fits:
                        c2 = {**cur, k: {**ck, f: v}}
                        o2 = _arrangement(c2, meeting, m)
                        if o2 is not None:
                            todo.append((c2, o2))
                cur[k] = {**ck, f: have}
        else:
            if tree:
                return True, read  # every arrangement agrees
        # the generators of every permutation, and the reversal: representatives are sorted, so the
        # reversal shows a property's low positions the states it never sees there otherwise
        for order in dict.fromkeys(map(tuple, ([1, 0] + identity[2:], identity[1:] + identity[:1], identity[::-1]))):
            agrees(list(order))
        return False, read

    def _sym_parts(self, state) -> list:
        """What moves with each symmetric actor in a permutation: its state, and in a monitored world
        its per-rank monitor instances."""
        actors = state[0]
        ms = self._monitor_set if len(state) > 4 and self._monitor_set.moves_with_symmetry else None
        return [actors[i] if ms is None else (actors[i], tuple(state[4][s] for s in ms.rank_slots[self._actor_rank[i]]))
                for i in self.symmetric]

    # -- symmetry reduction ------------------------------------------------------------------
    def set_reduction(self, on: bool) -> None:
        self._sym_wanted = on and len(self.symmetric) > 1
        self._sym_on = self._sym_wanted and not self._por_live
        self._por_reduce = on
        self._por_on = on and not self._por_live and bool(self._por_actors)
        self._refresh_flags()

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
        if len(state) > 4 and self._monitor_set.moves_with_symmetry:
            return self._monitor_set.canonical(self, state)  # per-rank monitors move with their ranks
        actors, g, fu = state[:3]
        sym = self.symmetric
        part = sorted((actors[i] for i in sym), key=self._order_key)
        if all(actors[i] is p for i, p in zip(sym, part)):
            return state
        nl = list(actors)
        for i, p in zip(sym, part):
            nl[i] = p
        return type(state)(tuple(nl), g, fu, *state[3:])

    def successors(self, state):
        if not self._sym_on:
            return self.raw_successors(state)
        canon = self.canonical
        return [(a, n if isinstance(n, Violation) else canon(n)) for a, n in self.raw_successors(state)]

    def concretize(self, steps):
        """Turn a path of orbit representatives into a concrete run: at each step pick the raw successor
        of the concrete state whose representative is the next state on the path.

        Every step of the concrete state is looked at, not an ample set of them nor the twins shortcut's:
        which actor's steps the partial-order reduction takes alone in a permuted state need not be the
        one the representative's path took.  A state with fabric entries is its own representative
        (entries name actors), so there the concrete state is the path's state with its symmetric actors
        placed as the concrete run has them: ``place`` (representative's actor -> concrete actor) is kept
        from the last state without entries, where it is read off by matching actor states.  (Before, tp
        fm01 at 4 ranks printed rank 1 loading its environment three times: the path of
        representatives, not a run.)"""
        if not self._sym_on or not steps:
            return steps
        out = []
        cur = steps[0][0]
        place = {i: i for i in self.symmetric}
        was = self._por_on, self._ample_shortcut, self._twin_steps
        self._por_on = self._ample_shortcut = self._twin_steps = False  # (twins: a later twin may be the one placed)
        try:
            for s, a, n in steps:
                pick = self._concrete_step(cur, a, n, place)
                if pick is None:  # cannot happen for a path of the quotient graph; keep the representative
                    self.concretize_missed += 1  # (a bug: the differential and the suite assert none)
                    return steps
                out.append((cur, pick[0], pick[1]))
                cur = pick[1]
                if not isinstance(cur, Violation) and not cur[3]:
                    place = self._placement(n, cur)
                    if place is None:  # cannot happen either: cur is in n's orbit
                        self.concretize_missed += 1
                        return steps
        finally:
            self._por_on, self._ample_shortcut, self._twin_steps = was
        return out

    def _concrete_step(self, cur, a, n, place):
        """The step of concrete state ``cur`` that leads into ``n``'s orbit (or, where ``n`` is a
        violation, one of the same verdict), or None."""
        placed = None if isinstance(n, Violation) or not n[3] else self._placed(n, place)
        for a2, n2 in self.raw_successors(cur):
            if isinstance(n, Violation):
                if isinstance(n2, Violation) and n2.verdict == n.verdict and (a is None) == (a2 is None):
                    return a2, n2
            elif isinstance(n2, Violation):
                continue
            elif placed is not None or n2[3]:
                if placed == n2:
                    return a2, n2
            elif self.canonical(n2) == n:
                return a2, n2
        return None

    def _sym_part(self, state, i):
        """Symmetric actor i's part of ``state``: its actor state, with its rank's per-rank monitor
        instances where they move with it."""
        ms = self._monitor_set if len(state) > 4 and self._monitor_set.moves_with_symmetry else None
        if ms is None:
            return state[0][i]
        return state[0][i], tuple(state[4][k] for k in ms.rank_slots[self._actor_rank[i]])

    def _placement(self, rep, state) -> dict | None:
        """representative's symmetric actor -> the actor of ``state`` holding its part (``state`` is in
        ``rep``'s orbit; equal parts are matched in order); None where the parts differ."""
        free: dict = {}
        for j in self.symmetric:
            free.setdefault(self._sym_part(state, j), []).append(j)
        place = {}
        for i in self.symmetric:
            left = free.get(self._sym_part(rep, i))
            if not left:
                return None
            place[i] = left.pop(0)
        return place

    def _placed(self, state, place):
        """``state`` with its symmetric actors moved as ``place`` says: their states, their rank's per-rank
        monitor instances, and the actor each fabric entry names."""
        if all(i == j for i, j in place.items()):
            return state
        nl = list(state[0])
        for i, j in place.items():
            nl[j] = state[0][i]
        fab = tuple(sorted(((e[0], place.get(e[1], e[1])) + e[2:] if e[0] == "op" else e for e in state[3]),
                           key=lambda e: e[:4]))
        if len(state) > 4:
            ms = self._monitor_set
            mon = list(state[4])
            if ms.moves_with_symmetry:
                rank = self._actor_rank
                for i, j in place.items():
                    for k_new, k_old in zip(ms.rank_slots[rank[j]], ms.rank_slots[rank[i]]):
                        mon[k_new] = state[4][k_old]
            return type(state)(tuple(nl), state[1], state[2], fab, tuple(mon))
        return type(state)(tuple(nl), state[1], state[2], fab)


_UNSET = object()
MEMO_LIMIT = 2_000_000  # distinct records kept by each memo (effects, local steps, property values, ...)
SYM_CHECK_BUDGET = 64  # evaluations of a property on one state's permutations (Reductions._check_symmetric)
AGGREGATE_FROM = 2  # a property reading every one of more symmetric actors than this is an aggregate (the generators)


def _said(verdict) -> str:
    """What a property gave, in a sentence."""
    if not verdict:
        return "nothing"
    return repr(verdict) if isinstance(verdict, str) else "true"


def _field(a, f) -> object:
    """The value of field ``f`` (as the view records it) of actor state ``a``: the value world.py's
    ``_key_function`` keys the property memo on (it compiles the same mapping into code)."""
    if f == ALIVE:
        return a[1] is None
    if f == "ctl":
        return a[0]
    if f == "pending":
        return a[2]
    return getattr(a[1], f, _UNSET)


def arrangements(parts: list) -> int:
    """How many distinct states permuting ``parts`` among their positions gives: m! over the product of
    the factorials of the multiplicities of equal parts.  A decision tree of ``_check_symmetric`` has at
    most that many leaves, whatever the property reads."""
    counts: dict = {}
    for p in parts:
        counts[p] = counts.get(p, 0) + 1
    out = math.factorial(len(parts))
    for c in counts.values():
        out //= math.factorial(c)
    return out


def _arrangement(cons: dict, meeting, m: int) -> list | None:
    """An arrangement of the symmetric actors' states (order[k]: whose state goes to position k)
    meeting ``cons`` ({position: {field: value}}; ``meeting(c)``: the bit mask of the actors whose
    states meet constraints c), found by augmenting paths (a few positions per call, on the
    search's hot path: networkx's matching costs more than the property); the unconstrained
    positions take the rest in order."""
    fits = {k: [j for j in range(m) if mask >> j & 1] for k, mask in ((k, meeting(c)) for k, c in cons.items())}
    owner: dict = {}  # actor -> the constrained position it goes to

    def place(k, seen) -> bool:
        for j in fits[k]:
            if j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = k
                    return True
        return False

    for k in sorted(cons, key=lambda k: len(fits[k])):
        if not place(k, set()):
            return None
    order = [None] * m
    for j, k in owner.items():
        order[k] = j
    rest = iter(j for j in range(m) if j not in owner)
    return [o if o is not None else next(rest) for o in order]


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




def _conflict(fp: tuple, o: tuple) -> bool:
    """Whether steps with footprint ``fp`` (reads, writes, puts, takes) may fail to commute with, or
    enable or disable, steps of others that touch ``o``: any write against any access, a read
    against a change, a FIFO end against any other use of the queue than the opposite end."""
    R, W, P, T = fp
    Ro, Wo, Po, To = o
    return bool(W & (Ro | Wo | Po | To) or R & (Wo | Po | To) or P & (Ro | Wo | Po) or T & (Ro | Wo | To))


def _role_tables(role, names: frozenset, everything: tuple, implied_private: bool = False):
    """(footprints by transition name, by control state, reachable from each control state, control
    states with a back edge, control states from which it may fail, control states from which it may
    post an op) of one role; None tables for a role that declares nothing."""
    private = role.private or implied_private  # (``Protocol._implied_private``: nothing to share)
    declared = private or role.shares is not None or any(t.reads is not None or t.writes is not None
                                                         for t in role.transitions)
    fps: dict = {}
    if declared:
        default = () if private else (role.shares or ())
        for t in role.transitions:
            pu = ta = frozenset()
            if private:
                r = w = frozenset()
            elif t.reads is None and t.writes is None and t.puts is None and t.takes is None:
                r = w = frozenset(default)
            else:
                w = frozenset(t.writes or ())
                r = frozenset(t.reads or ()) | w
                pu, ta = frozenset(t.puts or ()) - r, frozenset(t.takes or ()) - r  # a plain access covers an end
            bad = sorted((r | w | pu | ta) - names)
            if bad:
                raise SpecError(f"{role.name}.{t.name}", ValueError(
                    f"footprint names {', '.join(map(repr, bad))}, which are not shared variables; declared: "
                    f"{', '.join(sorted(names)) or 'none'}"))
            pr, pw, pp, pt = fps.get(t.name, (frozenset(),) * 4)  # transitions sharing a name: the union
            fps[t.name] = (pr | r, pw | w, pp | pu, pt | ta)
    bad = [o for o in role.observed if o not in role.V._fields and o not in CONTROL_FIELDS and o not in names]
    if bad:
        raise SpecError(f"role {role.name}", ValueError(
            f"observed names {', '.join(map(repr, bad))} are neither variables of the role nor shared variables; valid: "
            f"{', '.join(list(role.V._fields) + list(CONTROL_FIELDS) + sorted(names))}"))
    edges: dict = {}
    local: dict = {}
    for t in role.transitions:
        edges.setdefault(t.src, set()).update(t.targets)
        if t.op is None:
            local.setdefault(t.src, set()).update(t.targets)
    by_ctl: dict = {}
    for ctl, tids in role.by_src.items():
        acc = (frozenset(),) * 4
        for k in tids:
            f = fps[role.transitions[k].name] if declared else everything
            acc = tuple(x | y for x, y in zip(acc, f))
        by_ctl[ctl] = acc
    future: dict = {}
    for ctl in role.by_src:
        seen, todo = {ctl}, [ctl]
        while todo:
            for d in edges.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        acc = (frozenset(),) * 4
        for c in seen:
            if c in by_ctl:
                acc = tuple(x | y for x, y in zip(acc, by_ctl[c]))
        future[ctl] = acc
    back = _back_edge_sources(local, role.init)
    # control states from which the role may still end in FAILED or DEAD (a failed op, a fault)
    fails = _reaching(role, edges, lambda t: any(d in (FAILED, DEAD) for d in t.targets))
    # control states from which the role may still post an op (blocking or not)
    posts = _reaching(role, edges, lambda t: t.op is not None)
    return (fps if declared else {}), (by_ctl if declared else None), future, back, fails, posts


def _reaching(role, edges: dict, leaves) -> frozenset:
    """The control states from which a transition that ``leaves`` accepts is reachable (taken there
    or later) along the role's transitions ``edges``."""
    out = {c for c in role.by_src if any(leaves(role.transitions[k]) for k in role.by_src[c])}
    changed = True
    while changed:
        changed = False
        for c in role.by_src:
            if c not in out and any(d in out for d in edges.get(c, ())):
                out.add(c)
                changed = True
    return frozenset(out)


def _back_edge_sources(edges: dict, init) -> frozenset:
    """The sources of the back edges of a depth-first search of {node: successors} from ``init``
    (then from every node not reached): every cycle holds at least one back edge."""
    color: dict = {}
    out = set()
    roots = [init] + sorted(edges, key=str)
    for root in roots:
        if color.get(root, 0):
            continue
        color[root] = 1
        stack = [(root, iter(sorted(edges.get(root, ()), key=str)))]
        while stack:
            u, it = stack[-1]
            w = next(it, None)
            if w is None:
                color[u] = 2
                stack.pop()
                continue
            c = color.get(w, 0)
            if c == 1:
                out.add(u)
            elif c == 0:
                color[w] = 1
                stack.append((w, iter(sorted(edges.get(w, ()), key=str))))
    return frozenset(out)
