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
from .fabric import COLLECTIVES, ROOTED, Group, Op, check_op, check_splits, combine, parse_profile, splits_mismatch
from .lang import BUILTIN_TERMINAL, DEAD, DONE, EXITED, FAILED, HUNG, ActorDef, Ctx, Transition
from .reduce import Reductions
from .state import ActorState, PendingOp, WorldState


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
    invariants: list[tuple[str, str, Callable]] = field(default_factory=list)  # (name, verdict, fn(world, state) -> msg|None)
    pending_fn: Callable | None = None
    variant: str | None = None
    symmetric: tuple[int, ...] = ()  # actor indices whose roles are interchangeable (symmetry reduction)

    def __post_init__(self):
        try:
            self.profile = parse_profile(self.backend)
        except ValueError as e:
            raise SpecError(f"{self.name} backend", e) from None
        self._checked = False
        self.G = namedtuple("shared_vars", list(self.shared)) if self.shared else None
        self.ranks = sorted({a.rank for a in self.actors})
        self.actors_of_rank = {r: [i for i, a in enumerate(self.actors) if a.rank == r] for r in self.ranks}
        self.member_of = {g: frozenset(grp.ranks) for g, grp in self.groups.items()}
        if self.pending_fn is not None:
            self.pending = self._pending
            self.actor_of = self._actor_of
        self._sym_on = len(self.symmetric) > 1
        self._sym_keys: dict = {}
        self._por_reduce = True
        self._por_live = False
        self._por_actors = self._por_eligible_actors()
        if self.profile.eager_below > 0:
            # buffered messages name ranks and carry an order: no symmetry or partial-order argument
            # covers them yet, so eager profiles explore the full interleaving graph
            self.symmetric = ()
            self._sym_on = False
            self._por_actors = frozenset()
        self._por_on = bool(self._por_actors)

    def _check_declarations(self):
        """Spec mistakes a run may never reach, found before exploring: every op timeout says
        whether it is the designed recovery."""
        for a in self.actors:
            for t in a.role.transitions:
                if t.timeout and t.op is not None:
                    timeout_kind(a.role.name, t)
        self._checked = True


    # -- Model interface ----------------------------------------------------------------
    def init_states(self):
        if not self._checked:
            self._check_declarations()
        actors = tuple(ActorState(a.role.init, a.role.init_vars, None) for a in self.actors)
        g = self.G(**self.shared) if self.G else ()
        yield WorldState(actors, g, 0, ())

    def invariant(self, state):
        for name, verdict, fn in self.invariants:
            try:
                msg = fn(self, state)
            except Exception as e:  # noqa: BLE001 - a spec bug, reported as such
                raise SpecError(f"{self.name} invariant {name}", e) from e
            if msg:
                return Violation(verdict, f"{name}: {msg}", {"invariant": name})
        return None

    def _pending(self, state) -> bool:
        return bool(self.pending_fn(self, state))

    @staticmethod
    def _actor_of(action):
        if action is None:
            return None
        k = action[0]
        if k in ("t", "e", "x"):
            return ("actor", action[1])
        if k in ("m", "p", "b", "r"):
            return ("fabric", action[1])
        return None  # faults are never owed a step under fairness

    # -- helpers ---------------------------------------------------------------------------
    def vars_of(self, state, role_name: str) -> list:
        return [st[1] for a, st in zip(self.actors, state[0]) if a.role.name == role_name]

    def rank_status(self, actors) -> dict[int, str]:
        """alive | gone (exited or crashed) | finished (returned, process alive: profiles whose finished
        peers linger) | hung | idle (alive, terminal, issues nothing more)."""
        out = {}
        linger = self.profile.finished_peer == "alive"
        for r, idxs in self.actors_of_rank.items():
            ctls = [actors[i][0] for i in idxs]
            if any(c in (FAILED, DEAD) for c in ctls):
                out[r] = "gone"
            elif all(c == DONE for c in ctls):
                out[r] = "finished" if linger else "gone"
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

    # -- queues: collectives per group; p2p per (group, peer) on peer-fifo profiles, none on tag ones --
    def _queue(self, op: Op):
        if op.kind in COLLECTIVES:
            return (op.group, None)
        if self.profile.p2p_tags:
            return None
        return (op.group, op.peer)

    def _dequeue(self, actors: list, rank: int, key):
        if key is None:
            return
        for j in self.actors_of_rank[rank]:
            c, v, pend = actors[j]
            if pend is not None and pend[2] > 0 and self._queue(pend[1]) == key:
                actors[j] = ActorState(c, v, PendingOp(pend[0], pend[1], pend[2] - 1))

    def _queue_pos(self, actors, rank: int, op: Op) -> int:
        key = self._queue(op)
        if key is None:
            return 0
        return sum(1 for j in self.actors_of_rank[rank] if actors[j][2] is not None and self._queue(actors[j][2][1]) == key)

    # -- buffered (eager) messages: (group, src rank, dst rank, tag, sig, data), ordered per (group, src, dst) --
    def _message_for(self, fab, rop: Op, rank: int) -> int:
        """The index of the buffered message a recv on ``rank`` takes next, or -1."""
        src = self.groups[rop.group].ranks[rop.peer]
        tags = self.profile.p2p_tags
        for k, m in enumerate(fab):
            if m[0] == rop.group and m[1] == src and m[2] == rank and (not tags or m[3] == rop.tag):
                return k
        return -1

    def _older_message(self, fab, sop: Op, src: int, dst: int) -> bool:
        """A buffered message from src to dst that a recv must take before a rendezvous send (no overtaking)."""
        tags = self.profile.p2p_tags
        return any(m[0] == sop.group and m[1] == src and m[2] == dst and (not tags or m[3] == sop.tag) for m in fab)

    @staticmethod
    def _buffer(fab, msg) -> tuple:
        key = msg[:3]
        k = len(fab)
        while k > 0 and fab[k - 1][:3] > key:
            k -= 1
        return fab[:k] + (msg,) + fab[k:]

    # -- successors --------------------------------------------------------------------------
    def raw_successors(self, state) -> Iterable:
        actors, g, fu, fab = state
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
        fifo = not self.profile.p2p_tags
        for si in sends:
            spend = actors[si][2]
            sop = spend[1]
            if fifo and spend[2] != 0:
                continue
            if self.profile.eager(sop):
                normal.append(self._buffer_send(state, si))
                continue
            grp = self.groups[sop.group]
            src_rank = self.actors[si].rank
            src_local = grp.local(src_rank)
            dst_rank = grp.ranks[sop.peer]
            if fab and self._older_message(fab, sop, src_rank, dst_rank):
                continue
            for ri in self.actors_of_rank[dst_rank]:
                rp = actors[ri][2]
                if rp is None or rp[1].kind != "recv" or rp[1].group != sop.group or rp[1].peer != src_local:
                    continue
                if fifo:
                    if rp[2] != 0:
                        continue
                elif rp[1].tag != sop.tag:
                    continue
                normal.append(self._complete_p2p(state, si, ri))
        if fab:
            for ri in recvs:
                rp = actors[ri][2]
                if fifo and rp[2] != 0:
                    continue
                k = self._message_for(fab, rp[1], self.actors[ri].rank)
                if k >= 0:
                    normal.append(self._take_message(state, ri, k))
        # failure steps: an op whose partner's process is gone
        gone_waits = []
        if any(c in EXITED for c, _, _ in actors):
            status = self.rank_status(actors)
            for i, (ctl, v, pend) in enumerate(actors):
                if pend is not None and any(status[r] == "gone" for r in self._partners(actors, i, fab)):
                    gone_waits.append(i)
        if self.profile.gone_peer == "immediate":
            for i in gone_waits:
                normal.append(self._error_step(state, i))
        quiet: list = []
        # Deadlines are the designed recovery from faults: a run with no fault injected that can only
        # go on by letting a timeout fire is itself stuck (a protocol that always needs the PG timeout).
        # A timeout declared ``hangs`` never rescues a run: the waiter is reported as stranded.
        if not normal and fu > 0:
            if self.profile.gone_peer == "timeout":
                quiet.extend(self._error_step(state, i) for i in gone_waits)
            for i, (ctl, v, pend) in enumerate(actors):
                if ctl in BUILTIN_TERMINAL:
                    continue
                role = self.actors[i].role
                if pend is not None:
                    t = role.transitions[pend[0]]
                    if t.timeout and timeout_kind(role.name, t) == "recovers":
                        nl = list(actors)
                        self._finish(nl, i, t.timeout, v)
                        quiet.append((("x", i), WorldState(tuple(nl), g, fu, fab)))
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
        if self._por_on and len(normal) > 1:
            amp = self._ample(state, normal)
            if amp is not normal:
                return amp
        return normal + quiet + faults

    def _partners(self, actors, i, fab=None) -> list[int]:
        """Ranks whose missing call keeps actor i waiting."""
        op = actors[i][2][1]
        me = self.actors[i].rank
        grp = self.groups[op.group]
        if op.kind in COLLECTIVES:
            posted = {self.actors[j].rank for j, st in enumerate(actors)
                      if st[2] is not None and st[2][1].group == op.group and st[2][1].kind in COLLECTIVES}
            return [r for r in grp.ranks if r != me and r not in posted]
        if op.kind == "send" and self.profile.eager(op):
            return []  # waits only for its own queue
        peer = grp.ranks[op.peer]
        if op.kind == "recv" and fab and self._message_for(fab, op, me) >= 0:
            return []
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
        fab = state[3]
        a = self.actors[i]
        stage = "guard"
        try:
            ctx = Ctx(v, g, self.params, a.rank, t.dst[0], self, i)
            if t.guard is not None and not t.guard(ctx):
                return ()
            stage = "choose"
            choices = t.choose(ctx) if t.choose is not None else None
            out = []
            for ch in (choices if choices is not None else (None,)):
                c = ctx if choices is None else Ctx(v, g, self.params, a.rank, t.dst[0], self, i, ch)
                if t.do is not None:
                    stage = "do"
                    t.do(c)
                act = ("t", i, tidx, ch)
                if t.op is not None:
                    stage = "op"
                    op = t.op(c)
                    bad = check_op(op)
                    if bad is not None:
                        raise SpecError(f"{a.role.name}.{t.name}", ValueError(bad))
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
                out.append((act, WorldState(tuple(nl), c.g, fu + 1 if t.fault is not None else fu, fab)))
            return out
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in the spec, reported with its role and transition
            raise SpecError(f"{a.role.name}.{t.name} ({stage})", e) from e

    def _group_rule(self, a: ActorDef, t: Transition, op: Op):
        if op.group not in self.groups:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"unknown group {op.group!r}"))
        grp = self.groups[op.group]
        bad = check_splits(op, len(grp.ranks))
        if bad is not None:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(bad))
        if a.rank not in self.member_of[op.group]:
            return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) calls {op.kind} on {op.group}, a group it is not a "
                                          f"member of (c10d: 'Invalid process group specified')",
                             {"rank": a.rank, "group": op.group, "transition": t.name})
        if t.phase is not None and t.phase in self.phase_groups and op.group not in self.phase_groups[t.phase]:
            allowed = ", ".join(sorted(self.phase_groups[t.phase]))
            return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) issues {op.kind} on {op.group} in {t.phase}, where "
                                          f"only {allowed} is allowed", {"rank": a.rank, "group": op.group, "expected": allowed,
                                                                         "transition": t.name})
        if op.kind not in COLLECTIVES or op.kind in ROOTED:
            if not 0 <= op.peer < len(grp.ranks):
                what = "root" if op.kind in ROOTED else "peer"
                return Violation(WRONG_GROUP, f"rank {a.rank} ({a.role.name}) {op.kind} with group-local {what} {op.peer} on "
                                              f"{op.group} of size {len(grp.ranks)}", {"rank": a.rank, "group": op.group})
        return None

    def _after(self, nl, i, data, g):
        ctl, v, pend = nl[i]
        a = self.actors[i]
        t = a.role.transitions[pend[0]]
        c = Ctx(v, g, self.params, a.rank, t.dst[0], self, i)
        if t.after is not None:
            self._call(f"{a.role.name}.{t.name} after", t.after, c, data)
        if c.dst not in t.dst:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"goto({c.dst!r}) is not one of the declared destinations {t.dst}"))
        self._finish(nl, i, c.dst, c.v)
        return c

    def _complete_collective(self, state, gname, idxs):
        actors, g, fu, fab = state
        grp = self.groups[gname]
        by_rank = {self.actors[i].rank: i for i in idxs}
        ordered = [by_rank[r] for r in grp.ranks]
        ops = [actors[i][2][1] for i in ordered]
        act = ("m", gname, tuple(ordered))
        sig0 = ops[0].signature()
        why = None if any(o.signature() != sig0 for o in ops[1:]) else splits_mismatch(ops)
        if why is not None or any(o.signature() != sig0 for o in ops[1:]):
            calls = "; ".join(f"rank {self.actors[i].rank}: {o.short()}" for i, o in zip(ordered, ops))
            return act, Violation(COLLECTIVE_MISMATCH, f"matched calls on {gname} differ: {calls}" + (f" ({why})" if why else ""),
                                  {"group": gname, "calls": {str(self.actors[i].rank): o.short() for i, o in zip(ordered, ops)}})
        kind = ops[0].kind
        contributions = [o.data for o in ops]
        nl = list(actors)
        ng = g
        viol = None
        for member, i in enumerate(ordered):
            a = self.actors[i]
            data = self._call(f"{a.role.name}.{a.role.transitions[actors[i][2][0]].name} ({kind} data)",
                              combine, kind, ops[0].reduce, contributions, ops[0].peer, member)
            c = self._after(nl, i, data, ng)
            ng = c.g
            viol = viol or c.violation
            self._dequeue(nl, a.rank, (gname, None))
        if viol is not None:
            return act, viol
        return act, WorldState(tuple(nl), ng, fu, fab)

    def _p2p_mismatch(self, group, src_rank, sop: Op, dst_rank, rop: Op):
        return Violation(COLLECTIVE_MISMATCH, f"matched p2p on {group} differ: rank {src_rank} sends "
                                              f"{sop.short()}, rank {dst_rank} receives {rop.short()}",
                         {"group": group, "send": sop.short(), "recv": rop.short()})

    def _complete_p2p(self, state, si, ri):
        actors, g, fu, fab = state
        sop, rop = actors[si][2][1], actors[ri][2][1]
        act = ("p", sop.group, (si, ri))
        if sop.sig != rop.sig:
            return act, self._p2p_mismatch(sop.group, self.actors[si].rank, sop, self.actors[ri].rank, rop)
        nl = list(actors)
        c1 = self._after(nl, si, None, g)
        c2 = self._after(nl, ri, sop.data, c1.g)
        self._dequeue(nl, self.actors[si].rank, self._queue(sop))
        self._dequeue(nl, self.actors[ri].rank, self._queue(rop))
        viol = c1.violation or c2.violation
        if viol is not None:
            return act, viol
        return act, WorldState(tuple(nl), c2.g, fu, fab)

    def _buffer_send(self, state, si):
        """An eager send completes: the fabric keeps its message until the recv takes it."""
        actors, g, fu, fab = state
        sop = actors[si][2][1]
        grp = self.groups[sop.group]
        src = self.actors[si].rank
        nl = list(actors)
        c = self._after(nl, si, None, g)
        self._dequeue(nl, src, self._queue(sop))
        msg = (sop.group, src, grp.ranks[sop.peer], sop.tag, sop.sig, sop.data)
        act = ("b", sop.group, (si,))
        if c.violation is not None:
            return act, c.violation
        return act, WorldState(tuple(nl), c.g, fu, self._buffer(fab, msg))

    def _take_message(self, state, ri, k):
        actors, g, fu, fab = state
        rop = actors[ri][2][1]
        group, src, dst, tag, sig, data = fab[k]
        act = ("r", group, (ri, k))
        if sig != rop.sig:
            grp = self.groups[group]
            sent = Op("send", group, grp.local(dst), tag, sig, data)
            return act, self._p2p_mismatch(group, src, sent, dst, rop)
        nl = list(actors)
        c = self._after(nl, ri, data, g)
        self._dequeue(nl, dst, self._queue(rop))
        if c.violation is not None:
            return act, c.violation
        return act, WorldState(tuple(nl), c.g, fu, fab[:k] + fab[k + 1:])

    def _error_step(self, state, i):
        actors, g, fu, fab = state
        ctl, v, pend = actors[i]
        t = self.actors[i].role.transitions[pend[0]]
        nl = list(actors)
        self._finish(nl, i, t.on_error, v)
        return ("e", i), WorldState(tuple(nl), g, fu, fab)

    def _fault_steps(self, state):
        actors, g, fu, fab = state
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
                out.append(((kind, r), WorldState(tuple(nl), g, fu + 1, fab)))
        return out

    def _hang_timeout(self, state, w) -> str:
        """' until its timeout ... fires' when the waiter's op declares a timeout that hangs, else ''."""
        for i, a in enumerate(self.actors):
            if a.label == w["actor"]:
                pend = state[0][i][2]
                if pend is None:
                    return ""
                t = a.role.transitions[pend[0]]
                if t.timeout and timeout_kind(a.role.name, t) == "hangs":
                    return f" until its {t.name} timeout{_duration(t)} fires (declared hangs)"
        return ""

    def _stuck(self, state):
        actors = state[0]
        status = self.rank_status(actors)
        waiting = self.waiting(state)
        if not waiting:
            return None
        stranded = [w for w in waiting if any(status.get(r) in ("gone", "hung", "idle", "finished") for r in w["waits_for"])]
        timed = [w for w in waiting if self._hang_timeout(state, w)]
        if stranded or timed:
            w = stranded[0] if stranded else timed[0]
            who = ", ".join(f"rank {r} ({status[r]})" for r in w["waits_for"])
            until = self._hang_timeout(state, w)
            what = "blocked for ever" if not until else "blocked"
            detail = {"waiting": waiting}
            if until:
                detail["timeout"] = until.strip()
            return Violation(STRANDED, f"rank {w['rank']} ({w['role']}) is {what} in {w['op'] or w['state']}{until}"
                                       + (f" waiting on {who}" if who else ""), detail)
        ops = "; ".join(f"rank {w['rank']} in {w['op'] or w['state']}" for w in waiting)
        return Violation(DEADLOCK, f"every live rank is blocked and nothing can time out: {ops}", {"waiting": waiting})

    def classify_end(self, state):
        actors = state[0]
        if any(c in (FAILED, DEAD, HUNG) for c, _, _ in actors):
            return FAIL_FAST
        return None


TIMEOUT_KINDS = ("recovers", "hangs")
HANG_AFTER_S = 60.0  # an op timeout longer than this is not a recovery unless declared so


def timeout_kind(role: str, t: Transition) -> str:
    """``recovers`` (the designed recovery: the op fails and the actor goes to ``timeout=``'s state once
    nothing else can happen) or ``hangs`` (the waiter counts as stranded).  Declared with
    ``timeout_kind=``; else from ``timeout_s=``: over a minute hangs."""
    kind = getattr(t, "timeout_kind", None)
    if kind is not None:
        if kind not in TIMEOUT_KINDS:
            raise SpecError(f"{role}.{t.name}", ValueError(f"timeout_kind={kind!r}: expected one of {', '.join(TIMEOUT_KINDS)}"))
        return kind
    secs = getattr(t, "timeout_s", None)
    if secs is None:
        raise SpecError(f"{role}.{t.name}", ValueError(
            f"timeout={t.timeout!r} needs timeout_kind='recovers' (the designed recovery) or 'hangs', or a duration "
            f"timeout_s=SECONDS (over {HANG_AFTER_S:g} s it hangs)"))
    return "hangs" if secs > HANG_AFTER_S else "recovers"


def _duration(t: Transition) -> str:
    secs = getattr(t, "timeout_s", None)
    return "" if secs is None else f" ({secs:g} s)"
