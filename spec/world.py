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
from .fabric import P2P as P2P_KINDS
from .fabric import (COLLECTIVES, ROOTED, Group, Op, Post, check_op, check_post, check_splits, combine, parse_profile,
                     splits_mismatch)
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
        self._recovers: dict = {}  # op transition with a timeout -> whether the timeout is a designed recovery
        self.G = namedtuple("shared_vars", list(self.shared)) if self.shared else None
        self.ranks = sorted({a.rank for a in self.actors})
        self.actors_of_rank = {r: [i for i, a in enumerate(self.actors) if a.rank == r] for r in self.ranks}
        self._actor_rank = [a.rank for a in self.actors]
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

    def _timeout_recovers(self, role: str, t: Transition) -> bool:
        r = self._recovers.get(id(t))
        if r is None:
            r = self._recovers[id(t)] = timeout_kind(role, t) == "recovers"
        return r

    def _check_declarations(self):
        """Spec mistakes a run may never reach, found before exploring: every op timeout says
        whether it is the designed recovery."""
        for a in self.actors:
            for t in a.role.transitions:
                if t.timeout and t.op is not None:
                    self._recovers[id(t)] = timeout_kind(a.role.name, t) == "recovers"
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
        if k == "e" and action[1] < 0:
            return ("fabric", action[1])
        if k in ("t", "e", "x", "w"):
            return ("actor", action[1])
        if k in ("m", "p", "b", "r", "M", "P"):
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
    # An endpoint is an op posted and not complete: ``ref`` >= 0 is the blocked actor, ref < 0 the
    # fabric entry -1-ref (a non-blocking op).  Fabric entries (WorldState.fabric):
    #   ("msg", group, src rank, dst rank, tag, sig, data)    a buffered eager send
    #   ("op", actor, handle, k, op, pos, done, result)        the k-th op posted under handle
    def _queue(self, op: Op):
        if op.kind in COLLECTIVES:
            return (op.group, None)
        if self.profile.p2p_tags:
            return None
        return (op.group, op.peer)

    def _dequeue(self, actors: list, fl, rank: int, key):
        if key is None:
            return
        for j in self.actors_of_rank[rank]:
            pend = actors[j][2]
            if pend is not None and pend[2] > 0 and self._queue(pend[1]) == key:
                c, v, _ = actors[j]
                actors[j] = ActorState(c, v, PendingOp(pend[0], pend[1], pend[2] - 1))
        if fl:
            for j, e in enumerate(fl):
                if e[0] == "op" and not e[6] and e[5] > 0 and self.actors[e[1]].rank == rank and self._queue(e[4]) == key:
                    fl[j] = e[:5] + (e[5] - 1,) + e[6:]

    def _queue_pos(self, actors, fab, rank: int, op: Op) -> int:
        if op.kind in P2P_KINDS and self.profile.p2p_tags:
            return 0
        key = self._queue(op)
        n = sum(1 for j in self.actors_of_rank[rank] if actors[j][2] is not None and self._queue(actors[j][2][1]) == key)
        if fab:
            n += sum(1 for e in fab if e[0] == "op" and not e[6] and self.actors[e[1]].rank == rank and self._queue(e[4]) == key)
        return n

    def _endpoints(self, actors, fab) -> list:
        """(ref, rank, op, pos) for every posted op not yet complete; ops of gone processes are void."""
        eps = [(i, self.actors[i].rank, pend[1], pend[2]) for i, (_c, _v, pend) in enumerate(actors)
               if pend is not None and pend[1].kind != "wait"]
        if fab:
            eps.extend((-1 - j, self._actor_rank[e[1]], e[4], e[5]) for j, e in self._live_entries(actors, fab)
                       if not (e[3] and self._held(fab, e)))
        return eps

    @staticmethod
    def _held(fab, e) -> bool:
        """Within one batch, a send (recv) towards a peer waits for the batch's earlier sends (recvs)
        towards that peer: NCCL matches them in order."""
        op = e[4]
        return any(f[0] == "op" and f[1] == e[1] and f[2] == e[2] and f[3] < e[3] and not f[6] and f[4].kind == op.kind
                   and f[4].group == op.group and f[4].peer == op.peer for f in fab)

    def _live_entries(self, actors, fab) -> list:
        """(index, entry) of the posted ops not yet complete whose process is not gone."""
        out = [(j, e) for j, e in enumerate(fab) if e[0] == "op" and not e[6]]
        if out and any(st[0] in EXITED for st in actors):
            status = self.rank_status(actors)
            out = [(j, e) for j, e in out if status[self._actor_rank[e[1]]] != "gone"]
        return out

    # -- buffered (eager) messages, ordered per (group, src, dst) --
    def _message_for(self, fab, rop: Op, rank: int) -> int:
        """The index of the buffered message a recv on ``rank`` takes next, or -1."""
        src = self.groups[rop.group].ranks[rop.peer]
        tags = self.profile.p2p_tags
        for k, m in enumerate(fab):
            if m[0] == "msg" and m[1] == rop.group and m[2] == src and m[3] == rank and (not tags or m[4] == rop.tag):
                return k
        return -1

    def _older_message(self, fab, sop: Op, src: int, dst: int) -> bool:
        """A buffered message from src to dst that a recv must take before a rendezvous send (no overtaking)."""
        tags = self.profile.p2p_tags
        return any(m[0] == "msg" and m[1] == sop.group and m[2] == src and m[3] == dst and (not tags or m[4] == sop.tag)
                   for m in fab)

    @staticmethod
    def _insert(fab, entry) -> tuple:
        key = entry[:4]
        k = len(fab)
        while k > 0 and fab[k - 1][:4] > key:
            k -= 1
        return fab[:k] + (entry,) + fab[k:]

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
        by_group: dict[str, list] = {}
        sends: list = []
        recvs: list = []
        arank = self._actor_rank
        for i, st in enumerate(actors):
            pend = st[2]
            if pend is None:
                continue
            op = pend[1]
            kind = op.kind
            if kind in COLLECTIVES:
                if pend[2] == 0:
                    by_group.setdefault(op.group, []).append((i, arank[i], op, 0))
            elif kind == "send":
                sends.append((i, arank[i], op, pend[2]))
            elif kind == "recv":
                recvs.append((i, arank[i], op, pend[2]))
        if fab:
            for ep in self._endpoints(actors, fab):
                if ep[0] >= 0:
                    continue
                op = ep[2]
                if op.kind in COLLECTIVES:
                    if ep[3] == 0:
                        by_group.setdefault(op.group, []).append(ep)
                elif op.kind == "send":
                    sends.append(ep)
                else:
                    recvs.append(ep)
        for gname, members in by_group.items():
            if len(members) != len(self.groups[gname].ranks):
                continue
            normal.append(self._complete_collective(state, gname, members))
        fifo = not self.profile.p2p_tags
        eager_on = self.profile.eager_below > 0
        for sref, src_rank, sop, spos in sends:
            if fifo and spos != 0:
                continue
            if eager_on and self.profile.eager(sop):
                normal.append(self._buffer_send(state, sref, sop))
                continue
            grp = self.groups[sop.group]
            src_local = grp.local(src_rank)
            dst_rank = grp.ranks[sop.peer]
            if fab and self._older_message(fab, sop, src_rank, dst_rank):
                continue
            for rref, r_rank, rop, rpos in recvs:
                if r_rank != dst_rank or rop.group != sop.group or rop.peer != src_local:
                    continue
                if fifo:
                    if rpos != 0:
                        continue
                elif rop.tag != sop.tag:
                    continue
                normal.append(self._complete_p2p(state, sref, sop, rref, rop))
        if fab:
            for rref, r_rank, rop, rpos in recvs:
                if fifo and rpos != 0:
                    continue
                k = self._message_for(fab, rop, r_rank)
                if k >= 0:
                    normal.append(self._take_message(state, rref, rop, k))
            for i, (ctl, v, pend) in enumerate(actors):
                if pend is not None and pend[1].kind == "wait":
                    step = self._wait_step(state, i)
                    if step is not None:
                        normal.append(step)
        # failure steps: an op whose partner's process is gone
        gone_waits = []
        if any(c in EXITED for c, _, _ in actors):
            status = self.rank_status(actors)
            for ep in self._endpoints(actors, fab):
                if any(status[r] == "gone" for r in self._partners_of(actors, fab, ep[1], ep[2])):
                    gone_waits.append(ep[0])
        if self.profile.gone_peer == "immediate":
            for ref in gone_waits:
                normal.append(self._error_step(state, ref))
        quiet: list = []
        # Deadlines are the designed recovery from faults: a run with no fault injected that can only
        # go on by letting a timeout fire is itself stuck (a protocol that always needs the PG timeout).
        # A timeout declared ``hangs`` never rescues a run: the waiter is reported as stranded.
        if not normal and fu > 0:
            if self.profile.gone_peer == "timeout":
                quiet.extend(self._error_step(state, ref) for ref in gone_waits)
            for i, (ctl, v, pend) in enumerate(actors):
                if ctl in BUILTIN_TERMINAL:
                    continue
                role = self.actors[i].role
                if pend is not None:
                    t = role.transitions[pend[0]]
                    if t.timeout and self._timeout_recovers(role.name, t):
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

    def canonical(self, state):
        # fabric entries name actors and ranks: a state holding some is its own representative
        return state if state[3] else Reductions.canonical(self, state)

    def _partners(self, actors, i, fab=()) -> list[int]:
        """Ranks whose missing call keeps actor i waiting."""
        op = actors[i][2][1]
        me = self.actors[i].rank
        if op.kind != "wait":
            return self._partners_of(actors, fab, me, op)
        out: list[int] = []
        for e in fab or ():
            if e[0] == "op" and e[1] == i and e[2] == op.data and not e[6]:
                out.extend(r for r in self._partners_of(actors, fab, me, e[4]) if r not in out)
        return out

    def _partners_of(self, actors, fab, me: int, op: Op) -> list[int]:
        grp = self.groups[op.group]
        if op.kind in COLLECTIVES:
            posted = {self.actors[j].rank for j, st in enumerate(actors)
                      if st[2] is not None and st[2][1].group == op.group and st[2][1].kind in COLLECTIVES}
            if fab:
                posted.update(self._actor_rank[e[1]] for _j, e in self._live_entries(actors, fab)
                              if e[4].group == op.group and e[4].kind in COLLECTIVES)
            return [r for r in grp.ranks if r != me and r not in posted]
        if op.kind == "send" and self.profile.eager(op):
            return []  # waits only for its own queue
        peer = grp.ranks[op.peer]
        if op.kind == "recv" and fab and self._message_for(fab, op, me) >= 0:
            return []
        want = "recv" if op.kind == "send" else "send"
        my_local = grp.local(me)
        tags = self.profile.p2p_tags

        def fits(p: Op) -> bool:
            return p.kind == want and p.group == op.group and p.peer == my_local and (p.tag == op.tag or not tags)
        for j in self.actors_of_rank[peer]:
            p = actors[j][2]
            if p is not None and fits(p[1]):
                return []
        if fab and any(self._actor_rank[e[1]] == peer and fits(e[4]) for _j, e in self._live_entries(actors, fab)):
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
                nfab = fab
                if t.op is not None:
                    stage = "op"
                    op = t.op(c)
                    if isinstance(op, Post):
                        res = self._post(actors, fab, i, a, t, op)
                        if isinstance(res, Violation):
                            out.append((act, res))
                            continue
                        nfab = res
                        if c.dst not in t.dst:
                            raise SpecError(f"{a.role.name}.{t.name}",
                                            ValueError(f"goto({c.dst!r}) is not one of the declared destinations {t.dst}"))
                        nl = list(actors)
                        self._finish(nl, i, c.dst, c.v)
                    else:
                        bad = check_op(op)
                        if bad is not None:
                            raise SpecError(f"{a.role.name}.{t.name}", ValueError(bad))
                        if op.kind == "wait":
                            if not any(e[0] == "op" and e[1] == i and e[2] == op.data for e in fab):
                                raise SpecError(f"{a.role.name}.{t.name}",
                                                ValueError(f"wait({op.data!r}): no op is outstanding under that handle"))
                        else:
                            bad = self._group_rule(a, t, op)
                            if bad is not None:
                                out.append((act, bad))
                                continue
                        nl = list(actors)
                        pos = 0 if op.kind == "wait" else self._queue_pos(actors, fab, a.rank, op)
                        nl[i] = ActorState(ctl, c.v, PendingOp(tidx, op, pos))
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
                out.append((act, WorldState(tuple(nl), c.g, fu + 1 if t.fault is not None else fu, nfab)))
            return out
        except SpecError:
            raise
        except Exception as e:  # noqa: BLE001 - a bug in the spec, reported with its role and transition
            raise SpecError(f"{a.role.name}.{t.name} ({stage})", e) from e

    def _post(self, actors, fab, i, a: ActorDef, t: Transition, p: Post):
        """The fabric with p's ops outstanding, or the WRONG_GROUP violation of one of them."""
        bad = check_post(p)
        if bad is not None:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(bad))
        if any(e[0] == "op" and e[1] == i and e[2] == p.handle for e in fab):
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"handle {p.handle!r} is still outstanding: wait on it first"))
        entries = []
        for k, op in enumerate(p.ops):
            v = self._group_rule(a, t, op)
            if v is not None:
                return v
            # a batch's ops queue only behind ops issued before the batch (NCCL group semantics)
            pos = self._queue_pos(actors, fab, a.rank, op)
            if not p.batch:
                pos += sum(1 for e in entries if self._queue(e[4]) == self._queue(op) and self._queue(op) is not None)
            entries.append(("op", i, p.handle, k, op, pos, False, None))
        for e in entries:
            fab = self._insert(fab, e)
        return fab

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


    # -- counterexample steps of eager and non-blocking ops (explain.describe asks first) --------
    def describe_fabric_step(self, state, action, nxt) -> dict | None:
        actors, fab = state[0], state[3]
        kind = action[0]

        def who(ref) -> dict:
            i = ref if ref >= 0 else fab[-1 - ref][1]
            a = self.actors[i]
            return {"rank": a.rank, "role": a.role.name, "actor": a.label, "ids": self._ids(i, actors[i][1])}

        def op_of(ref) -> Op:
            return actors[ref][2][1] if ref >= 0 else fab[-1 - ref][4]

        if kind == "b":
            ref = action[2][0]
            d = who(ref)
            name = (self.actors[ref].role.transitions[actors[ref][2][0]].name if ref >= 0
                    else f"posted {fab[-1 - ref][2]!r}")
            d.update(transition=f"{name} completes (eager send, buffered)", op=op_of(ref).short(), group=action[1])
            return d
        if kind == "r":
            rref, k = action[2]
            _m, group, src, dst, tag, sig, _data = fab[k]
            sent = Op("send", group, self.groups[group].local(dst), tag, sig).short()
            return {"rank": [src, dst], "role": "fabric", "transition": "buffered send/recv completes", "group": group,
                    "op": f"{sent} (buffered) -> {op_of(rref).short()}", "ids": who(rref)["ids"]}
        if kind == "M":
            refs = action[2]
            op = op_of(refs[0])
            d = {"rank": [who(r)["rank"] for r in refs], "role": "fabric", "transition": f"{op.kind} completes",
                 "op": op.short(), "group": action[1], "ids": who(refs[0])["ids"]}
            if isinstance(nxt, Violation):
                d["calls"] = {str(who(r)["rank"]): op_of(r).short() for r in refs}
            return d
        if kind == "P":
            sref, rref = action[2]
            return {"rank": [who(sref)["rank"], who(rref)["rank"]], "role": "fabric", "transition": "send/recv completes",
                    "op": f"{op_of(sref).short()} -> {op_of(rref).short()}", "group": action[1], "ids": who(sref)["ids"]}
        if kind == "w":
            i, handle = action[1], action[2]
            d = who(i)
            d.update(transition=f"{self.actors[i].role.transitions[actors[i][2][0]].name} returns (wait {handle})",
                     op=f"wait {handle}")
            if isinstance(nxt, tuple):
                d["dst"] = nxt[0][i][0]
            return d
        if kind == "e" and action[1] < 0:
            e = fab[-1 - action[1]]
            d = who(action[1])
            d.update(transition=f"posted {e[2]!r} fails: partner process gone ({self.backend})", op=e[4].short(),
                     group=e[4].group)
            return d
        return None

    def posted(self, state, action, nxt) -> dict:
        """What a step that posted ops without blocking adds to its counterexample record."""
        i = action[1]
        new = [e for e in nxt[3] if e[0] == "op" and e[1] == i and e not in state[3]]
        if not new:
            return {}
        return {"op": "; ".join(e[4].short() for e in new), "group": new[0][4].group, "posted": new[0][2]}

    # -- completions --------------------------------------------------------------------------
    def _complete_ref(self, nl, fl, ref, data, g):
        """Hand ``data`` to an endpoint: a blocked actor runs its ``after``; a posted op is marked done."""
        if ref >= 0:
            c = self._after(nl, ref, data, g)
            return c.g, c.violation
        j = -1 - ref
        fl[j] = fl[j][:6] + (True, data)
        return g, None

    def _ref_name(self, actors, fab, ref) -> str:
        """role.transition of an endpoint (for spec errors)."""
        if ref >= 0:
            a = self.actors[ref]
            return f"{a.role.name}.{a.role.transitions[actors[ref][2][0]].name}"
        e = fab[-1 - ref]
        return f"{self.actors[e[1]].role.name} (posted {e[2]!r})"

    def _complete_collective(self, state, gname, members):
        actors, g, fu, fab = state
        grp = self.groups[gname]
        by_rank = {ep[1]: ep for ep in members}
        ordered = [by_rank[r] for r in grp.ranks]
        ops = [ep[2] for ep in ordered]
        refs = tuple(ep[0] for ep in ordered)
        act = ("m" if all(r >= 0 for r in refs) else "M", gname, refs)
        sig0 = ops[0].signature()
        differ = any(o.signature() != sig0 for o in ops[1:])
        why = None if differ else splits_mismatch(ops)
        if differ or why is not None:
            calls = "; ".join(f"rank {ep[1]}: {ep[2].short()}" for ep in ordered)
            return act, Violation(COLLECTIVE_MISMATCH, f"matched calls on {gname} differ: {calls}" + (f" ({why})" if why else ""),
                                  {"group": gname, "calls": {str(ep[1]): ep[2].short() for ep in ordered}})
        kind = ops[0].kind
        contributions = [o.data for o in ops]
        nl = list(actors)
        fl = list(fab)
        ng = g
        viol = None
        uniform = kind in _SAME_FOR_ALL
        data = None
        key = (gname, None)
        for member, (ref, rank, _op, _pos) in enumerate(ordered):
            if member == 0 or not uniform:
                try:
                    data = combine(kind, ops[0].reduce, contributions, ops[0].peer, member)
                except Exception as e:  # noqa: BLE001 - contributions the op kind cannot combine: a spec bug
                    raise SpecError(f"{self._ref_name(actors, fab, ref)} ({kind} data)", e) from e
            if ref >= 0:
                c = self._after(nl, ref, data, ng)
                ng = c.g
                viol = viol or c.violation
            else:
                ng, v = self._complete_ref(nl, fl, ref, data, ng)
                viol = viol or v
            self._dequeue(nl, fl, rank, key)
        if viol is not None:
            return act, viol
        return act, WorldState(tuple(nl), ng, fu, tuple(fl))

    def _p2p_mismatch(self, group, src_rank, sop: Op, dst_rank, rop: Op):
        return Violation(COLLECTIVE_MISMATCH, f"matched p2p on {group} differ: rank {src_rank} sends "
                                              f"{sop.short()}, rank {dst_rank} receives {rop.short()}",
                         {"group": group, "send": sop.short(), "recv": rop.short()})

    def _rank_of(self, fab, ref) -> int:
        return self.actors[ref if ref >= 0 else fab[-1 - ref][1]].rank

    def _complete_p2p(self, state, sref, sop, rref, rop):
        actors, g, fu, fab = state
        act = ("p" if sref >= 0 and rref >= 0 else "P", sop.group, (sref, rref))
        src, dst = self._rank_of(fab, sref), self._rank_of(fab, rref)
        if sop.sig != rop.sig:
            return act, self._p2p_mismatch(sop.group, src, sop, dst, rop)
        nl = list(actors)
        fl = list(fab) if fab else None
        g1, v1 = self._complete_ref(nl, fl, sref, None, g)
        g2, v2 = self._complete_ref(nl, fl, rref, sop.data, g1)
        if not self.profile.p2p_tags:
            self._dequeue(nl, fl, src, self._queue(sop))
            self._dequeue(nl, fl, dst, self._queue(rop))
        viol = v1 or v2
        if viol is not None:
            return act, viol
        return act, WorldState(tuple(nl), g2, fu, tuple(fl) if fl else fab)

    def _buffer_send(self, state, sref, sop):
        """An eager send completes: the fabric keeps its message until the recv takes it."""
        actors, g, fu, fab = state
        grp = self.groups[sop.group]
        src = self._rank_of(fab, sref)
        nl = list(actors)
        fl = list(fab)
        ng, viol = self._complete_ref(nl, fl, sref, None, g)
        self._dequeue(nl, fl, src, self._queue(sop))
        act = ("b", sop.group, (sref,))
        if viol is not None:
            return act, viol
        return act, WorldState(tuple(nl), ng, fu, self._insert(tuple(fl), ("msg", sop.group, src, grp.ranks[sop.peer], sop.tag,
                                                                             sop.sig, sop.data)))

    def _take_message(self, state, rref, rop, k):
        actors, g, fu, fab = state
        _m, group, src, dst, tag, sig, data = fab[k]
        act = ("r", group, (rref, k))
        if sig != rop.sig:
            sent = Op("send", group, self.groups[group].local(dst), tag, sig, data)
            return act, self._p2p_mismatch(group, src, sent, dst, rop)
        nl = list(actors)
        fl = list(fab)
        ng, viol = self._complete_ref(nl, fl, rref, data, g)
        self._dequeue(nl, fl, dst, self._queue(rop))
        if viol is not None:
            return act, viol
        del fl[k]
        return act, WorldState(tuple(nl), ng, fu, tuple(fl))

    def _wait_step(self, state, i):
        """wait(handle) returns once every op of the handle completed; one failed op fails the wait."""
        actors, g, fu, fab = state
        handle = actors[i][2][1].data
        mine = [e for e in fab if e[0] == "op" and e[1] == i and e[2] == handle]
        if not mine or not all(e[6] for e in mine):
            return None
        fl = tuple(e for e in fab if not (e[0] == "op" and e[1] == i and e[2] == handle))
        nl = list(actors)
        act = ("w", i, handle)
        if any(e[7] is _OP_FAILED for e in mine):
            t = self.actors[i].role.transitions[actors[i][2][0]]
            self._finish(nl, i, t.on_error, actors[i][1])
            return act, WorldState(tuple(nl), g, fu, fl)
        results = [e[7] for e in sorted(mine, key=lambda e: e[3])]
        c = self._after(nl, i, results[0] if len(results) == 1 else tuple(results), g)
        if c.violation is not None:
            return act, c.violation
        return act, WorldState(tuple(nl), c.g, fu, fl)

    def _error_step(self, state, ref):
        actors, g, fu, fab = state
        if ref < 0:  # a posted op fails; its wait() will raise
            fl = list(fab)
            j = -1 - ref
            fl[j] = fl[j][:6] + (True, _OP_FAILED)
            return ("e", ref), WorldState(actors, g, fu, tuple(fl))
        ctl, v, pend = actors[ref]
        t = self.actors[ref].role.transitions[pend[0]]
        nl = list(actors)
        self._finish(nl, ref, t.on_error, v)
        return ("e", ref), WorldState(tuple(nl), g, fu, fab)

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


_SAME_FOR_ALL = frozenset({"broadcast", "all_reduce", "all_gather", "barrier", "monitored_barrier"})
_OP_FAILED = ("error: partner process gone",)  # the result of a posted op whose partner is gone

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
