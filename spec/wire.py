"""The fabric's side of a ``Protocol``'s semantics: queues, matching and completion of posted ops,
buffered (eager) messages, non-blocking ops and their waits, failures of ops whose partner is gone, and
the counterexample records of those steps.  A mixin: world.py decides when these steps are enabled
(``raw_successors``); fabric.py holds the ops, their data semantics and the backend profiles.

An endpoint is an op posted and not complete: ``(ref, rank, op, pos)`` where ``ref`` >= 0 is the
blocked actor and ref < 0 the fabric entry -1-ref (a non-blocking op).  Fabric entries
(``WorldState.fabric``):

- ``("msg", group, src rank, dst rank, tag, sig, data)``: a buffered eager send;
- ``("op", actor, handle, k, op, pos, done, result)``: the k-th op posted under ``handle``.

Queues: collectives per group; p2p per (group, peer) on peer-fifo profiles, none on tag ones.
"""
from __future__ import annotations

from ..model.api import COLLECTIVE_MISMATCH, SpecError, Violation
from .fabric import COLLECTIVES, P2P, Op, Post, check_post, combine, ranks_text, splits_mismatch
from .lang import EXITED, ActorDef, Transition
from .state import ActorState, PendingOp, WorldState

_new_state = tuple.__new__  # WorldState(...) without the namedtuple's Python-level __new__

_SAME_FOR_ALL = frozenset({"broadcast", "all_reduce", "all_gather", "barrier", "monitored_barrier"})
# kinds whose results list the members' contributions or chunks by group rank (``_check_swaps``)
_BY_POSITION = frozenset({"gather", "all_gather", "all_to_all", "scatter", "reduce_scatter"})


class _OpFailed:
    """The result of a posted op whose partner's process is gone: one object, found by identity.  It
    stays that object when a state crosses to another process (the parallel and Ray searches ship
    states: unpickling calls the class, which returns the one instance), and it hashes alike in every
    process (their visited sets are partitioned by state hash).  A plain tuple here was copied on the
    way, and a wait on a failed op then returned as if the op had completed."""

    __slots__ = ()
    _one = None

    def __new__(cls):
        if cls._one is None:
            cls._one = object.__new__(cls)
        return cls._one

    def __reduce__(self):
        return (_OpFailed, ())

    def __hash__(self):
        return 0x0F417ED

    def __eq__(self, other):
        return other.__class__ is _OpFailed

    def __repr__(self):
        return "<op failed: partner process gone>"


_OP_FAILED = _OpFailed()  # the result of a posted op whose partner is gone


class Fabric:
    def _queue(self, op: Op):
        if op.kind in COLLECTIVES:
            return (op.group, None)
        if self.profile.p2p_tags:
            return None
        return (op.group, op.peer)

    def _dequeue(self, actors: list, fl, rank: int, key, at: int = 0):
        """The op at position ``at`` of ``rank``'s queue ``key`` left it: the ops behind it move up."""
        if key is None:
            return
        for j in self.actors_of_rank[rank]:
            pend = actors[j][2]
            if pend is not None and pend[2] > at and self._queue(pend[1]) == key:
                c, v, _ = actors[j]
                actors[j] = ActorState(c, v, PendingOp(pend[0], pend[1], pend[2] - 1))
        if fl:
            for j, e in enumerate(fl):
                if e[0] == "op" and not e[6] and e[5] > at and self.actors[e[1]].rank == rank and self._queue(e[4]) == key:
                    fl[j] = e[:5] + (e[5] - 1,) + e[6:]

    def _queue_pos(self, actors, fab, rank: int, op: Op) -> int:
        if op.kind in P2P and self.profile.p2p_tags:
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

    def _posted_collectives(self, actors, fab) -> dict:
        """group -> the ranks that posted a collective on it (waiting on it, or a live fabric entry)."""
        out: dict = {}
        arank = self._actor_rank
        for j, st in enumerate(actors):
            p = st[2]
            if p is not None and p[1].kind in COLLECTIVES:
                out.setdefault(p[1].group, set()).add(arank[j])
        if fab:
            for _j, e in self._live_entries(actors, fab):
                if e[4].kind in COLLECTIVES:
                    out.setdefault(e[4].group, set()).add(arank[e[1]])
        return out

    def _partners_of(self, actors, fab, me: int, op: Op, posted: dict | None = None) -> list[int]:
        """Ranks whose missing call keeps ``me``'s ``op`` waiting; ``posted``: ``_posted_collectives``
        of this state, when the caller has it."""
        grp = self.groups[op.group]
        if op.kind in COLLECTIVES:
            if posted is None:
                posted = self._posted_collectives(actors, fab)
            got = posted.get(op.group, ())
            return [r for r in grp.ranks if r != me and r not in got]
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

    def _waits_on_gone(self, actors, fab, gone: frozenset, ep) -> bool:
        """Whether endpoint ``ep``'s op waits on a rank in ``gone`` (``_partners_of`` meets ``gone``),
        decided from the op's group alone.  A gone rank has no posted op: its actors are DONE, FAILED
        or DEAD, none blocked (a failure or a crash ends every actor of the rank), and
        ``_live_entries`` leaves its fabric entries out.  Nor is ``ep``'s own rank gone.  So every gone
        rank of a collective's group is a missing partner, and of a point-to-point op the peer is the
        only candidate, a missing partner unless the op waits for nobody (an eager send, a recv whose
        message is buffered)."""
        op = ep[2]
        grp = self.groups[op.group]
        if op.kind in COLLECTIVES:
            return not gone.isdisjoint(grp.ranks)
        if grp.ranks[op.peer] not in gone:
            return False
        return bool(self._partners_of(actors, fab, ep[1], op))

    def _names_symmetric_rank(self, op: Op) -> bool:
        """Whether ``op`` names one of the symmetric ranks as its peer or root."""
        return op.peer >= 0 and op.group in self.groups and op.peer < len(self.groups[op.group].ranks) \
            and self.groups[op.group].ranks[op.peer] in self._sym_ranks

    def _refuse_symmetric_peer(self, a: ActorDef, t: Transition, op: Op) -> None:
        """A SpecError where ``op`` names one of the symmetric ranks as its peer or root, blocking or
        posted: the symmetry reduction keeps one arrangement of the symmetric actors' states, so an op
        addressed to one of them would meet whichever actor the arrangement put at that rank."""
        if self._names_symmetric_rank(op):
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(
                f"{op.kind} addresses rank {self.groups[op.group].ranks[op.peer]}, one of the symmetric "
                f"ranks {sorted(self._sym_ranks)}: symmetric actors must not be told apart"))

    def _post(self, actors, fab, i, a: ActorDef, t: Transition, p: Post):
        """The fabric with p's ops outstanding, or the WRONG_GROUP violation of one of them."""
        bad = check_post(p)
        if bad is not None:
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(bad))
        if any(e[0] == "op" and e[1] == i and e[2] == p.handle for e in fab):
            raise SpecError(f"{a.role.name}.{t.name}", ValueError(f"handle {p.handle!r} is still outstanding: wait on it first"))
        entries = []
        for k, op in enumerate(p.ops):
            if self._sym_ranks:
                self._refuse_symmetric_peer(a, t, op)
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

    def _drop_gone_posts(self, succs: list, parent=None) -> list:
        """``succs`` with the posted ops of a process that is gone (exited or crashed) left out of each
        successor's fabric.  Nobody can wait on them or match them any more (``_live_entries`` already
        skips them), so a state that holds them and one that does not behave alike; dropping them
        makes them one state.  That matters for the reduction: a post and the crash of its own rank
        commute only if the crash leaves no trace of the post (model/por.py, "Faults", (iii)).
        ``parent``: the state ``succs`` leave; where no rank of it is gone, a successor by one actor's
        step that does not end it (DONE, FAILED, DEAD) has none gone either (a rank is gone once a
        thread of it failed or died, or every thread is DONE, and such a step changes that actor
        alone), and is not looked at: on a wide world that lookup is a pass over every actor."""
        out = succs
        quiet = parent is not None and not self._gone_ranks(parent[0])
        for k, (a, n) in enumerate(succs):
            if n.__class__ is not WorldState or not n[3]:
                continue
            if quiet and a is not None and a[0] == "t" and n[0][a[1]][0] not in EXITED:
                continue
            gone = self._gone_ranks(n[0])
            if not gone:
                continue
            arank = self._actor_rank
            fab = tuple(e for e in n[3] if e[0] != "op" or arank[e[1]] not in gone)
            if len(fab) != len(n[3]):
                if out is succs:
                    out = list(succs)
                out[k] = (a, WorldState(n[0], n[1], n[2], fab))
        return out

    def collective_step(self, state, action) -> tuple[str, str] | None:
        """(group, op kind) where ``action`` is the fabric matching a collective's calls (blocking ``m``
        or posted ``M``: it completes, or its calls mismatch); None for every other step.  What a
        Flight Recorder dump records once per group member (conformance/flight_follow.py)."""
        if action is None or action[0] not in ("m", "M"):
            return None
        ref = action[2][0]
        op = state[0][ref][2][1] if ref >= 0 else state[3][-1 - ref][4]
        return (action[1], op.kind) if op.kind in COLLECTIVES else None

    @staticmethod
    def rank_fault(action) -> bool:
        """Whether ``action`` is a crash or hang striking a rank (not a step any rank takes)."""
        return action is not None and action[0] in ("crash", "hang")

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
            return c._g, c.violation
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
        grp = self.groups[gname]
        by_rank = {ep[1]: ep for ep in members}
        ordered = [by_rank[r] for r in grp.ranks]
        act, out = self._collective_outcome(state, gname, ordered)
        # the members' afters run in group order: one that writes shared variables may tell them apart too
        if self._sym_ranks and (ordered[0][2].kind in _BY_POSITION
                                or (out.__class__ is not Violation and out[1] is not state[1] and out[1] != state[1])) \
                and not (out.__class__ is Violation and out.verdict == COLLECTIVE_MISMATCH):
            self._check_swaps(state, gname, ordered, out)
        return act, out

    def _check_swaps(self, state, gname, ordered, out) -> None:
        """The symmetry reduction's premise for a call whose results go by group rank (gather,
        all_gather, all_to_all, scatter, reduce_scatter), or whose members' afters (run in group order)
        wrote shared variables: swapping two symmetric members' states before the call must swap them
        after it, and change nothing else.  The call is completed again with
        each of a few swaps (between one member of each class of members alike in state and in the chunks
        the call hands their position, and the first class's), and the outcome, swapped back, compared
        with ``out``.  A member's result tuple it keeps, or another rank keeps, fails the comparison; a
        result every member only summarises (``len(set(envs))``) passes.  Fabric entries of posted ops
        that name the two actors are swapped with them.  Buffered eager messages (which name ranks) exist
        only under eager profiles, which run without the symmetry reduction: nothing to check there."""
        actors, g, fu, fab = state
        grp = self.groups[gname]
        at = [m for m, r in enumerate(grp.ranks) if r in self._sym_ranks]
        if len(at) < 2 or any(e[0] != "op" for e in fab):
            return
        ops = [ep[2] for ep in ordered]
        refs = [ep[0] for ep in ordered]
        kind = ops[0].kind
        tables = {"scatter": [ops[ops[0].peer].data], "all_to_all": [o.data for o in ops],
                  "reduce_scatter": [o.data for o in ops]}.get(kind, [])
        owner = [r if r >= 0 else fab[-1 - r][1] for r in refs]  # the actor of each member's call
        classes: dict = {}
        for m in at:
            try:
                given = tuple(t[m] if t is not None else None for t in tables)
            except (TypeError, IndexError, KeyError):
                given = tuple(tables)
            own = tuple(e for e in fab if e[1] == owner[m])
            classes.setdefault((actors[owner[m]], tuple(e[2:] for e in own), given), m)
        reps = list(classes.values())
        swaps = [(reps[0], x) for x in reps[1:]] + list(zip(reps[1:], reps[2:]))
        for mi, mj in swaps:
            ai, aj = owner[mi], owner[mj]
            nl = list(actors)
            nl[ai], nl[aj] = actors[aj], actors[ai]

            def moved(entries, ai=ai, aj=aj):  # posted ops' entries go with their actors' states
                return tuple(e[:1] + ({ai: aj, aj: ai}.get(e[1], e[1]),) + e[2:] for e in entries)
            swapped = list(ordered)  # a blocked member's endpoint is its actor; a posted one's, its entry
            swapped[mi] = (ai if refs[mj] >= 0 else refs[mj], ordered[mi][1]) + ordered[mj][2:]
            swapped[mj] = (aj if refs[mi] >= 0 else refs[mi], ordered[mj][1]) + ordered[mi][2:]
            _, other = self._collective_outcome(_new_state(WorldState, (tuple(nl), g, fu, moved(fab))), gname, swapped)
            if out.__class__ is Violation or other.__class__ is Violation:
                same = out.__class__ is other.__class__ and (out.__class__ is not Violation or out.verdict == other.verdict)
                diff = "" if same else f"{out.verdict if out.__class__ is Violation else 'no violation'} against " \
                                        f"{other.verdict if other.__class__ is Violation else 'no violation'}"
            else:
                back = list(other[0])
                back[ai], back[aj] = other[0][aj], other[0][ai]
                diff = next((f"{self.actors[k].label}: {out[0][k][:2]} against {back[k][:2]}"
                             for k in range(len(back)) if back[k] != out[0][k]), "")
                if not diff and other[1] != out[1]:
                    diff = f"shared {out[1]} against {other[1]}"
                elif not diff and moved(other[3]) != out[3]:
                    diff = "the results its posted ops hold"
            if diff:
                how = "its results go by group rank" if kind in _BY_POSITION else \
                    "its members' afters run in group order and write shared variables"
                raise SpecError(f"{self._ref_name(actors, fab, refs[mi])} ({kind} on {gname})", ValueError(
                    f"{how}, and with ranks {grp.ranks[mi]} and {grp.ranks[mj]} in each other's states it leads "
                    f"elsewhere ({diff}, swapped back), so it tells the symmetric "
                    f"{ranks_text(sorted(self._sym_ranks & set(grp.ranks)))} apart (the symmetry reduction keeps one "
                    f"arrangement of them); make what they pass and keep alike, or drop them from symmetric=..."))

    def _collective_outcome(self, state, gname, ordered):
        """(action, the successor or a violation) of the matched call ``ordered`` (group order)."""
        actors, g, fu, fab = state
        ops = [ep[2] for ep in ordered]
        refs = tuple(ep[0] for ep in ordered)
        act = ("m" if all(r >= 0 for r in refs) else "M", gname, refs)
        sig0 = ops[0].signature()
        differ = any(o.signature() != sig0 for o in ops[1:])
        why = None if differ else splits_mismatch(ops)
        if differ or why is not None:
            calls = _calls_text(ordered)
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
                ng = c._g
                viol = viol or c.violation
            else:
                ng, v = self._complete_ref(nl, fl, ref, data, ng)
                viol = viol or v
            self._dequeue(nl, fl, rank, key)
        if viol is not None:
            return act, viol
        return act, _new_state(WorldState, (tuple(nl), ng, fu, tuple(fl)))

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
        return act, _new_state(WorldState, (tuple(nl), g2, fu, tuple(fl) if fl else fab))

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
        return act, _new_state(WorldState, (tuple(nl), ng, fu, tuple(fl)))

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
            return act, _new_state(WorldState, (tuple(nl), g, fu, fl))
        results = [e[7] for e in sorted(mine, key=lambda e: e[3])]
        c = self._after(nl, i, results[0] if len(results) == 1 else tuple(results), g)
        if c.violation is not None:
            return act, c.violation
        return act, _new_state(WorldState, (tuple(nl), c._g, fu, fl))

    def _error_step(self, state, ref):
        """The op of endpoint ``ref`` fails (its partner's process is gone) and leaves its queue, as a
        completed op does, from wherever it stands in it: the rank's ops behind it move up
        (``_dequeue``).  So a post and an earlier op's failure lead to the same state in either order
        (the later op's position does not depend on which came first), which the partial-order
        reduction relies on (model/por.py)."""
        actors, g, fu, fab = state
        nl = list(actors)
        fl = list(fab) if fab else None
        if ref < 0:  # a posted op fails; its wait() will raise
            j = -1 - ref
            e = fl[j]
            fl[j] = e[:5] + (0, True, _OP_FAILED)  # out of the queue: position 0, as a completed op
            rank, op, pos = self._actor_rank[e[1]], e[4], e[5]
        else:
            ctl, v, pend = actors[ref]
            t = self.actors[ref].role.transitions[pend[0]]
            self._finish(nl, ref, t.on_error, v)
            rank, op, pos = self._actor_rank[ref], pend[1], pend[2]
        self._dequeue(nl, fl, rank, self._queue(op), pos)
        return ("e", ref), _new_state(WorldState, (tuple(nl), g, fu, tuple(fl) if fl is not None else fab))


def _calls_text(ordered) -> str:
    """The calls of a mismatched collective, one entry per distinct call with the ranks that made it
    (``rank 0: X; ranks 1-15: Y``), so that a 16-rank mismatch reads as what differs."""
    by_call: dict = {}
    for ep in ordered:
        by_call.setdefault(ep[2].short(), []).append(ep[1])
    return "; ".join(f"{ranks_text(rs)}: {call}" for call, rs in by_call.items())
