"""World semantics: a ``Protocol`` places actors (a rank's thread running a role) on ranks, declares
the process groups and shared variables (per-world, e.g. the rank0 queues), and implements the
checker's ``Model`` interface:

- actor steps: a local transition, or issuing an op (the actor then waits in its source state);
- fabric steps: a collective completes when every member's next call on the group is posted
  (signatures compared), a send completes with its matching recv;
- failure steps (backend profile): an op whose partner's process is gone fails, and the actor goes to
  the transition's ``on_error`` state;
- quiescent steps: watchdogs and timed waits (``timeout=`` on an op, ``quiescent=True`` on a local
  transition) fire only when no other step can happen — time passes only when nothing else can —
  and only after a fault was injected: deadlines are the designed recovery from faults, so a
  fault-free run that can only continue through a timeout is stuck;
- fault steps, enabled by configuration and at most ``max_faults`` per run: named fault transitions
  (a throw at a named point), ``crash`` (the process dies, anywhere) and ``hang`` (the process wedges,
  alive, at a message boundary its role declares in ``hang_points``).

A state where no step but a fault can happen and some actor is still waiting is stuck: STRANDED when
a waiter's partner is gone, wedged or idle for good, DEADLOCK when every partner is itself waiting.
Faults never rescue a stuck state.  An end where every process finished or failed is clean or
FAIL_FAST (crash beats hang).

Reductions (partial order, symmetry) live in reduce.py, explanations (describe, waiting) in
explain.py; states are the typed tuples of state.py.
"""
from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..model.api import COLLECTIVE_MISMATCH, DEADLOCK, FAIL_FAST, STRANDED, WRONG_GROUP, SpecError, Violation
from .explain import Explanation
from .fabric import COLLECTIVES, PROFILES, Group, Op, combine
from ..model.por import ample
from .lang import BUILTIN_TERMINAL, DEAD, DONE, EXITED, FAILED, HUNG, PRIVATE, SYMMETRIC, ActorDef, Ctx, Role, Transition
from .reduce import Reductions
from .state import ActorState, PendingOp, WorldState
from .view import WorldView


@dataclass
class Protocol(Reductions, Explanation):
    """A world of actors over the fabric; implements model.api.Model."""

    name: str
    groups: dict[str, Group]
    actors: list[ActorDef]
    shared: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    backend: str = "gloo"
    faults: frozenset = frozenset()
    max_faults: int = 1
    crash_ranks: tuple[int, ...] = ()
    hang_ranks: tuple[int, ...] = ()
    phase_groups: dict[str, frozenset] = field(default_factory=dict)
    # (name, verdict, fn(view) -> msg|None): fn takes a view.WorldView; a two-argument fn(world, state)
    # is still accepted, but it reads raw tuples the world cannot watch, so it turns the
    # partial-order reduction off
    invariants: list[tuple[str, str, Callable]] = field(default_factory=list)
    pending_fn: Callable | None = None  # fn(view) -> bool: a liveness obligation is open
    variant: str | None = None
    symmetric: tuple[int, ...] = ()  # actor indices whose roles are interchangeable (symmetry reduction)

    def __post_init__(self):
        self.profile = PROFILES[self.backend]
        self.G = namedtuple("shared_vars", list(self.shared)) if self.shared else None
        self.ranks = sorted({a.rank for a in self.actors})
        self.actors_of_rank = {r: [i for i, a in enumerate(self.actors) if a.rank == r] for r in self.ranks}
        self.member_of = {g: frozenset(grp.ranks) for g, grp in self.groups.items()}
        if self.pending_fn is not None:
            self.pending = self._pending
            self.actor_of = self._actor_of
        self.validate()
        self._sym_wanted = self._sym_on = len(self.symmetric) > 1
        self._sym_keys: dict = {}
        self._sym_checks = 0
        self._sym_ranks = frozenset(self.actors[i].rank for i in self.symmetric) if len(self.symmetric) > 1 else frozenset()
        self._ctx_flags = [(PRIVATE if a.role.private else 0) | (SYMMETRIC if i in self._sym_ranks_idx() else 0)
                           for i, a in enumerate(self.actors)]
        self._props = [(name, verdict, *_as_view_fn(fn)) for name, verdict, fn in self.invariants]
        self._pending_view = _as_view_fn(self.pending_fn) if self.pending_fn is not None else None
        self._por_reduce = True
        self._por_live = False
        raw = any(not viewed for _, _, _, viewed in self._props) or (self._pending_view is not None and not self._pending_view[1])
        self._por_actors = frozenset() if raw else self._por_eligible_actors()
        self._faults_possible = bool(("crash" in self.faults and self.crash_ranks) or ("hang" in self.faults and self.hang_ranks)
                                     or any(t.fault in self.faults for a in self.actors for t in a.role.transitions))
        self._por_on = bool(self._por_actors)
        self.fired: set = set()  # (actor index, transition index) of every actor step offered so far

    def _sym_ranks_idx(self) -> frozenset:
        return frozenset(self.symmetric) if len(self.symmetric) > 1 else frozenset()

    def validate(self) -> None:
        """Refuse a world whose declarations cannot be right (SpecError, one line): unknown groups,
        ranks outside the world, states no transition reaches, symmetric actors that differ."""
        ranks = {a.rank for a in self.actors}
        for gname, grp in self.groups.items():
            bad = [r for r in grp.ranks if r not in ranks]
            if bad:
                raise SpecError(f"{self.name} group {gname}", ValueError(f"ranks {bad} run no actor"))
        for ph, gs in self.phase_groups.items():
            bad = sorted(x for x in gs if x not in self.groups)
            if bad:
                raise SpecError(f"{self.name} phase {ph}", ValueError(f"unknown groups {bad}; declared: {sorted(self.groups)}"))
        for what, rs in (("crash_ranks", self.crash_ranks), ("hang_ranks", self.hang_ranks)):
            bad = [r for r in rs if r not in ranks]
            if bad:
                raise SpecError(f"{self.name} {what}", ValueError(f"ranks {bad} run no actor"))
        seen_roles = {}
        for a in self.actors:
            if seen_roles.setdefault(a.role.name, a.role) is not a.role:
                raise SpecError(f"{self.name}", ValueError(f"two different roles are named {a.role.name!r}"))
        for role in seen_roles.values():
            _validate_role(role)
        sym = self.symmetric
        if len(sym) > 1:
            if len(set(sym)) != len(sym) or any(not 0 <= i < len(self.actors) for i in sym):
                raise SpecError(f"{self.name} symmetric", ValueError(f"expected distinct actor indices, got {sym}"))
            first = self.actors[sym[0]]
            for i in sym:
                a = self.actors[i]
                if a.role is not first.role or a.thread != first.thread:
                    raise SpecError(f"{self.name} symmetric", ValueError(
                        f"symmetric actors must run one role on one thread name: {first.label} runs {first.role.name}, "
                        f"{a.label} runs {a.role.name}"))
            srank = [self.actors[i].rank for i in sym]
            if len(set(srank)) != len(srank) or any(len(self.actors_of_rank[r]) != 1 for r in srank):
                raise SpecError(f"{self.name} symmetric", ValueError("symmetric actors must each be alone on its rank"))
            for what, rs in (("group", None), ("crash_ranks", self.crash_ranks), ("hang_ranks", self.hang_ranks)):
                sets = [grp.ranks for grp in self.groups.values()] if rs is None else [rs]
                for rr in sets:
                    inside = [r in rr for r in srank]
                    if any(inside) and not all(inside):
                        raise SpecError(f"{self.name} symmetric", ValueError(
                            f"symmetric ranks {srank} are not treated alike by {what} {tuple(rr)}"))


    # -- Model interface ----------------------------------------------------------------
    def init_states(self):
        actors = tuple(ActorState(a.role.init, a.role.init_vars, None) for a in self.actors)
        g = self.G(**self.shared) if self.G else ()
        yield WorldState(actors, g, 0)

    def invariant(self, state):
        for name, verdict, fn, _viewed in self._props:
            msg = self._property(f"{self.name} invariant {name}", fn, state)
            if msg:
                return Violation(verdict, f"{name}: {msg}", {"invariant": name})
        return None

    def _property(self, what: str, fn, state):
        """Evaluate a property on a view of ``state``; under reduction, check what it read."""
        rec = set() if self._por_on else None
        try:
            out = fn(self, state, rec)
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001 - a spec bug, reported as such
            raise SpecError(what, e) from e
        if rec:
            self._check_reads(what, rec)
        if self._sym_on:
            # every state while the search is young, then one in eight: a detector, bounded in cost
            self._sym_checks += 1
            if self._sym_checks <= 5000 or not self._sym_checks & 7:
                self._check_symmetric(what, lambda st: _quiet(fn, self, st), state, out)
        return out

    def _pending(self, state) -> bool:
        return bool(self._property(f"{self.name} liveness obligation", self._pending_view[0], state))

    @staticmethod
    def _actor_of(action):
        if action is None:
            return None
        k = action[0]
        if k in ("t", "e", "x"):
            return ("actor", action[1])
        if k in ("m", "p"):
            return ("fabric", action[1])
        return None  # faults are never owed a step under fairness

    # -- helpers ---------------------------------------------------------------------------
    def vars_of(self, state, role_name: str) -> list:
        return [st[1] for a, st in zip(self.actors, state[0]) if a.role.name == role_name]

    def rank_status(self, actors) -> dict[int, str]:
        """alive | gone (exited or crashed) | hung | idle (alive, terminal, issues nothing more)."""
        out = {}
        for r, idxs in self.actors_of_rank.items():
            ctls = [actors[i][0] for i in idxs]
            if any(c in (FAILED, DEAD) for c in ctls) or all(c == DONE for c in ctls):
                out[r] = "gone"
            elif any(c == HUNG for c in ctls):
                out[r] = "hung"
            elif all(actors[i][2] is None and (actors[i][0] in BUILTIN_TERMINAL or actors[i][0] not in self.actors[i].role.by_src)
                     for i in idxs):
                out[r] = "idle"
            else:
                out[r] = "alive"
        return out

    def _terminal(self, i: int, ctl: str) -> bool:
        return ctl in BUILTIN_TERMINAL or ctl not in self.actors[i].role.by_src

    def _call(self, where: str, fn, *args):
        try:
            return fn(*args)
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001
            raise SpecError(where, e) from e

    def _kill_rank(self, actors: list, rank: int, ctl: str):
        # a failed, dead or wedged process keeps no variables: where exactly it stopped cannot matter
        # to anyone, so runs that differ only there end in one state
        for j in self.actors_of_rank[rank]:
            c = actors[j][0]
            if c not in (DONE, FAILED, DEAD):
                actors[j] = ActorState(ctl, None, None)

    def _finish(self, actors: list, i: int, ctl: str, v):
        if ctl in (FAILED, DEAD):  # a process that exits with an error takes its threads with it
            actors[i] = ActorState(ctl, None, None)
            self._kill_rank(actors, self.actors[i].rank, ctl)
        else:
            actors[i] = ActorState(ctl, v, None)

    def _dequeue(self, actors: list, rank: int, group: str, kind_is_coll: bool):
        for j in self.actors_of_rank[rank]:
            c, v, pend = actors[j]
            if pend is not None and pend[1].group == group and (pend[1].kind in COLLECTIVES) == kind_is_coll and pend[2] > 0:
                actors[j] = ActorState(c, v, PendingOp(pend[0], pend[1], pend[2] - 1))

    def _queue_pos(self, actors, rank: int, op: Op) -> int:
        coll = op.kind in COLLECTIVES
        if not coll and self.profile.p2p_tags:
            return 0
        return sum(1 for j in self.actors_of_rank[rank]
                   if actors[j][2] is not None and actors[j][2][1].group == op.group and (actors[j][2][1].kind in COLLECTIVES) == coll)

    # -- successors --------------------------------------------------------------------------
    def raw_successors(self, state) -> Iterable:
        actors, g, fu = state
        normal: list = []
        for i, (ctl, v, pend) in enumerate(actors):
            if pend is not None or ctl in BUILTIN_TERMINAL:
                continue
            a = self.actors[i]
            role = a.role
            for tidx in role.by_src.get(ctl, ()):
                t = role.transitions[tidx]
                if t.quiescent:
                    continue
                if t.fault is not None and (t.fault not in self.faults or fu >= self.max_faults):
                    continue
                normal.extend(self._fire(state, i, tidx, t, ctl, v, g, fu))
        # fabric: collectives
        by_group: dict[str, list[int]] = {}
        sends: list[int] = []
        recvs: list[int] = []
        for i, (ctl, v, pend) in enumerate(actors):
            if pend is None:
                continue
            op = pend[1]
            if op.kind in COLLECTIVES:
                if pend[2] == 0:
                    by_group.setdefault(op.group, []).append(i)
            elif op.kind == "send":
                sends.append(i)
            else:
                recvs.append(i)
        for gname, idxs in by_group.items():
            ranks = self.groups[gname].ranks
            if len(idxs) != len(ranks):
                continue
            normal.append(self._complete_collective(state, gname, idxs))
        for si in sends:
            sop = actors[si][2][1]
            grp = self.groups[sop.group]
            src_local = grp.local(self.actors[si].rank)
            dst_rank = grp.ranks[sop.peer]
            for ri in self.actors_of_rank[dst_rank]:
                rp = actors[ri][2]
                if rp is None or rp[1].kind != "recv" or rp[1].group != sop.group or rp[1].peer != src_local:
                    continue
                if self.profile.p2p_tags:
                    if rp[1].tag != sop.tag:
                        continue
                elif rp[2] != 0 or actors[si][2][2] != 0:
                    continue
                normal.append(self._complete_p2p(state, si, ri))
        # failure steps: an op whose partner's process is gone
        gone_waits = []
        if any(c in EXITED for c, _, _ in actors):
            status = self.rank_status(actors)
            for i, (ctl, v, pend) in enumerate(actors):
                if pend is not None and any(status[r] == "gone" for r in self._partners(actors, i)):
                    gone_waits.append(i)
        if self.profile.gone_peer == "immediate":
            for i in gone_waits:
                normal.append(self._error_step(state, i))
        quiet: list = []
        # Deadlines are the designed recovery from faults: a run with no fault injected that can only
        # go on by letting a timeout fire is itself stuck (a protocol that always needs the PG timeout).
        if not normal and fu > 0:
            if self.profile.gone_peer == "timeout":
                quiet.extend(self._error_step(state, i) for i in gone_waits)
            for i, (ctl, v, pend) in enumerate(actors):
                if ctl in BUILTIN_TERMINAL:
                    continue
                role = self.actors[i].role
                if pend is not None:
                    t = role.transitions[pend[0]]
                    if t.timeout:
                        nl = list(actors)
                        self._finish(nl, i, t.timeout, v)
                        quiet.append((("x", i), WorldState(tuple(nl), g, fu)))
                    continue
                for tidx in role.by_src.get(ctl, ()):
                    t = role.transitions[tidx]
                    if t.quiescent:
                        quiet.extend(self._fire(state, i, tidx, t, ctl, v, g, fu))
        faults = self._fault_steps(state)
        if not normal and not quiet:
            stuck = self._stuck(state)
            if stuck is not None:
                return [(None, stuck)]
        out = normal + quiet + faults
        if self._por_on and len(normal) > 1:
            pa = self._por_actors
            if any(a[0] == "t" and a[1] in pa for a, _ in normal):
                out = ample(self, state, out)
        self.fired.update((a[1], a[2]) for a, _ in out if a is not None and a[0] == "t")
        return out

    def _partners(self, actors, i) -> list[int]:
        """Ranks whose missing call keeps actor i waiting."""
        op = actors[i][2][1]
        me = self.actors[i].rank
        grp = self.groups[op.group]
        if op.kind in COLLECTIVES:
            posted = {self.actors[j].rank for j, st in enumerate(actors)
                      if st[2] is not None and st[2][1].group == op.group and st[2][1].kind in COLLECTIVES}
            return [r for r in grp.ranks if r != me and r not in posted]
        peer = grp.ranks[op.peer]
        want = "recv" if op.kind == "send" else "send"
        my_local = grp.local(me)
        for j in self.actors_of_rank[peer]:
            p = actors[j][2]
            if (p is not None and p[1].kind == want and p[1].group == op.group and p[1].peer == my_local
                    and (p[1].tag == op.tag or not self.profile.p2p_tags)):
                return []
        return [peer]

    def _fire(self, state, i, tidx, t: Transition, ctl, v, g, fu):
        actors = state[0]
        a = self.actors[i]
        stage = "guard"
        try:
            fl = self._ctx_flags[i]
            ctx = Ctx(v, g, self.params, a.rank, t.dst[0], self, i, None, fl, t.name)
            if t.guard is not None and not t.guard(ctx):
                return ()
            stage = "choose"
            choices = t.choose(ctx) if t.choose is not None else None
            out = []
            for ch in (choices if choices is not None else (None,)):
                c = ctx if choices is None else Ctx(v, g, self.params, a.rank, t.dst[0], self, i, ch, fl, t.name)
                if t.do is not None:
                    stage = "do"
                    t.do(c)
                act = ("t", i, tidx, ch)
                if t.op is not None:
                    stage = "op"
                    op = t.op(c)
                    if self._sym_ranks and op.peer >= 0 and op.group in self.groups and op.peer < len(self.groups[op.group].ranks) \
                            and self.groups[op.group].ranks[op.peer] in self._sym_ranks:
                        raise SpecError(f"{a.role.name}.{t.name}", ValueError(
                            f"{op.kind} addresses rank {self.groups[op.group].ranks[op.peer]}, one of the symmetric ranks "
                            f"{sorted(self._sym_ranks)}: symmetric actors must not be told apart"))
                    bad = self._group_rule(a, t, op)
                    if bad is not None:
                        out.append((act, bad))
                        continue
                    nl = list(actors)
                    nl[i] = ActorState(ctl, c.v, PendingOp(tidx, op, self._queue_pos(actors, a.rank, op)))
                else:
                    if c.dst not in t.dst:
                        raise SpecError(f"{a.role.name}.{t.name}",
                                        ValueError(f"goto({c.dst!r}) is not one of the declared destinations {t.dst}"))
                    nl = list(actors)
                    self._finish(nl, i, c.dst, c.v)
                if t.check is not None:
                    stage = "check"
                    t.check(c)
                if c.violation is not None:
                    out.append((act, c.violation))
                    continue
                out.append((act, WorldState(tuple(nl), c._g, fu + 1 if t.fault is not None else fu)))
            return out
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in the spec, reported with its role and transition
            raise SpecError(f"{a.role.name}.{t.name} ({stage})", e) from e

    def _group_rule(self, a: ActorDef, t: Transition, op: Op):
        if op.group not in self.groups:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"unknown group {op.group!r}"))
        if a.rank not in self.member_of[op.group]:
            return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) calls {op.kind} on {op.group}, a group it is not a "
                                          f"member of (c10d: 'Invalid process group specified')",
                             {"rank": a.rank, "group": op.group, "transition": t.name})
        if t.phase is not None and t.phase in self.phase_groups and op.group not in self.phase_groups[t.phase]:
            allowed = ", ".join(sorted(self.phase_groups[t.phase]))
            return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) issues {op.kind} on {op.group} in {t.phase}, where "
                                          f"only {allowed} is allowed", {"rank": a.rank, "group": op.group, "expected": allowed,
                                                                         "transition": t.name})
        if op.kind not in COLLECTIVES:
            grp = self.groups[op.group]
            if not 0 <= op.peer < len(grp.ranks):
                return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) {op.kind} with group-local peer {op.peer} on "
                                              f"{op.group} of size {len(grp.ranks)}", {"rank": a.rank, "group": op.group})
        return None

    def _after(self, nl, i, data, g):
        ctl, v, pend = nl[i]
        a = self.actors[i]
        t = a.role.transitions[pend[0]]
        c = Ctx(v, g, self.params, a.rank, t.dst[0], self, i, None, self._ctx_flags[i], t.name)
        if t.after is not None:
            self._call(f"{a.role.name}.{t.name} after", t.after, c, data)
        if c.dst not in t.dst:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"goto({c.dst!r}) is not one of the declared destinations {t.dst}"))
        self._finish(nl, i, c.dst, c.v)
        return c

    def _complete_collective(self, state, gname, idxs):
        actors, g, fu = state
        grp = self.groups[gname]
        by_rank = {self.actors[i].rank: i for i in idxs}
        ordered = [by_rank[r] for r in grp.ranks]
        ops = [actors[i][2][1] for i in ordered]
        act = ("m", gname, tuple(ordered))
        sig0 = ops[0].signature()
        if any(o.signature() != sig0 for o in ops[1:]):
            calls = "; ".join(f"rank {self.actors[i].rank}: {o.short()}" for i, o in zip(ordered, ops))
            return act, Violation(COLLECTIVE_MISMATCH, f"matched calls on {gname} differ: {calls}",
                                  {"group": gname, "calls": {str(self.actors[i].rank): o.short() for i, o in zip(ordered, ops)}})
        kind = ops[0].kind
        data = ops[0].peer if False else None
        if kind == "broadcast":
            data = ops[ops[0].peer].data
        elif kind in ("all_reduce", "all_gather"):
            data = combine(kind, ops[0].reduce, [o.data for o in ops])
        nl = list(actors)
        ng = g
        viol = None
        for i in ordered:
            c = self._after(nl, i, data, ng)
            ng = c._g
            viol = viol or c.violation
            self._dequeue(nl, self.actors[i].rank, gname, True)
        if viol is not None:
            return act, viol
        return act, WorldState(tuple(nl), ng, fu)

    def _complete_p2p(self, state, si, ri):
        actors, g, fu = state
        sop, rop = actors[si][2][1], actors[ri][2][1]
        act = ("p", sop.group, (si, ri))
        if sop.sig != rop.sig:
            return act, Violation(COLLECTIVE_MISMATCH, f"matched p2p on {sop.group} differ: rank {self.actors[si].rank} sends "
                                                       f"{sop.short()}, rank {self.actors[ri].rank} receives {rop.short()}",
                                  {"group": sop.group, "send": sop.short(), "recv": rop.short()})
        nl = list(actors)
        c1 = self._after(nl, si, None, g)
        c2 = self._after(nl, ri, sop.data, c1._g)
        if not self.profile.p2p_tags:
            self._dequeue(nl, self.actors[si].rank, sop.group, False)
            self._dequeue(nl, self.actors[ri].rank, sop.group, False)
        viol = c1.violation or c2.violation
        if viol is not None:
            return act, viol
        return act, WorldState(tuple(nl), c2._g, fu)

    def _error_step(self, state, i):
        actors, g, fu = state
        ctl, v, pend = actors[i]
        t = self.actors[i].role.transitions[pend[0]]
        nl = list(actors)
        self._finish(nl, i, t.on_error, v)
        return ("e", i), WorldState(tuple(nl), g, fu)

    def _fault_steps(self, state):
        actors, g, fu = state
        if fu >= self.max_faults:
            return []
        out = []
        for kind, ranks, ctl in (("crash", self.crash_ranks, DEAD), ("hang", self.hang_ranks, HUNG)):
            if kind not in self.faults:
                continue
            for r in ranks:
                idxs = self.actors_of_rank[r]
                if all(self._terminal(j, actors[j][0]) and actors[j][2] is None for j in idxs):
                    continue
                if kind == "hang" and not all(actors[j][0] in self.actors[j].role.hang_points or self._terminal(j, actors[j][0])
                                              for j in idxs):
                    continue
                nl = list(actors)
                self._kill_rank(nl, r, ctl)
                out.append(((kind, r), WorldState(tuple(nl), g, fu + 1)))
        return out

    def _stuck(self, state):
        actors, g, fu = state
        status = self.rank_status(actors)
        waiting = self.waiting(state)
        if not waiting:
            return None
        stranded = [w for w in waiting if any(status.get(r) in ("gone", "hung", "idle") for r in w["waits_for"])]
        if stranded:
            w = stranded[0]
            who = ", ".join(f"rank {r} ({status[r]})" for r in w["waits_for"])
            return Violation(STRANDED, f"rank {w['rank']} ({w['role']}) is blocked for ever in {w['op']} waiting on {who}",
                             {"waiting": waiting})
        ops = "; ".join(f"rank {w['rank']} in {w['op'] or w['state']}" for w in waiting)
        return Violation(DEADLOCK, f"every live rank is blocked and nothing can time out: {ops}", {"waiting": waiting})

    def classify_end(self, state):
        actors = state[0]
        if any(c in (FAILED, DEAD, HUNG) for c, _, _ in actors):
            return FAIL_FAST
        return None


def _as_view_fn(fn):
    """(fn(world, state, record), takes_a_view) for a property written over a WorldView (one
    parameter) or over the raw state (two parameters: world, state)."""
    import inspect

    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = [None, None]
    if len(params) == 1:
        return (lambda world, state, rec: fn(WorldView(world, state, rec))), True
    return (lambda world, state, rec: fn(world, state)), False


def _quiet(fn, world, state):
    try:
        return fn(world, state, None)
    except Exception:  # noqa: BLE001 - a permuted state the property cannot read: no verdict
        return None


def _validate_role(role: Role) -> None:
    """Every state is reachable from the initial one, and every destination is a declared state."""
    edges: dict[str, set] = {}
    for t in role.transitions:
        edges.setdefault(t.src, set()).update(t.targets)
    seen, todo = {role.init}, [role.init]
    while todo:
        for d in edges.get(todo.pop(), ()):
            if d not in seen:
                seen.add(d)
                todo.append(d)
    dead = [s for s in role.by_src if s not in seen]
    if dead:
        raise SpecError(f"role {role.name}", ValueError(
            f"states {', '.join(dead)} have transitions but no transition reaches them from {role.init}"))
