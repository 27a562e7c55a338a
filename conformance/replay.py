"""Trace-guided replay of a spec: find a spec behaviour whose per-actor projections equal the
recorded observables (mapping.py), or point at the first observable the spec cannot explain.

A search node is (spec state, per-actor cursor into its observables, per-actor observable of the op
it has pending, per-actor deferred isends).  From a node only steps consistent with the trace are
taken:
- an observed transition (mapping.OBSERVED) must match the actor's next observable: its name, and for
  an op its kind, group, group-local peer and, where the spec's signature is concrete, dtype and shape;
- an unobserved transition (Phase A's choice, queue moves, ops the impl does not record) is free;
- a fabric completion is allowed when every participant's observable completed ok; a peer-error
  ("e") or timeout ("x") step only when the recorded op failed;
- ``crash`` only where the rank's trace ends ``killed``; a rank's ``rank_exit`` when its actor is in a
  terminal state that fits how it exited.
IDs (chunk_index, cache_epoch) an observable carries must equal the spec's (the family adapter's
``bind_ids``); the adapter (conformance/adapters/) also names the steps and orders the plan choices,
so this module names no spec transition.

Order: completions first (they commute with everything), then observable-consuming steps by the
trace's timestamps, then free steps and deferrals; a depth-first search with a visited set and
a node budget proportional to the trace backtracks over nondeterministic choices (the plan of a
chunk is only revealed by its later ops).  Ranks are coupled by their collectives, so the explored
part stays a thin band around the recorded behaviour: linear in the trace.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..model.api import Violation
from ..spec.machine import BUILTIN_TERMINAL, DONE, FAILED, Ctx
from ..spec.source import guard_text
from .adapters import for_topology
from .mapping import Mapped, Obs

FREE, UNOBS = -1, -2  # pend markers: no pending op / a pending op the trace does not record


@dataclass
class Unexplained:
    """The first observable of an actor the spec could not explain."""
    rank: int
    actor: str
    line: int                     # 1-based line in the rank's file
    event: str
    expected: list                # spec transition names that would explain it
    spec_state: str               # the actor's control state there
    ids: dict
    enabled: list                 # transitions enabled for this actor there (names)
    guards: list                  # [{transition, guard}] for expected transitions whose guard was false
    reasons: list                 # why a candidate step was refused (op/ids/outcome mismatch)
    waiting_op: str | None = None

    def to_dict(self) -> dict:
        return dict(rank=self.rank, actor=self.actor, line=self.line, event=self.event, expected=self.expected,
                    spec_state=self.spec_state, ids=self.ids, enabled=self.enabled, false_guards=self.guards,
                    refused=self.reasons, pending_op=self.waiting_op)


@dataclass
class ReplayResult:
    conforms: bool
    nodes: int
    seconds: float
    observables: int
    explained: int
    unexplained: list = field(default_factory=list)        # [Unexplained]
    violation: dict | None = None      # a spec violation the trace exhibits ({verdict, message, rank, line})
    stuck: dict | None = None          # the spec is stuck where the trace goes on ({verdict, message, waiting})
    budget_hit: bool = False
    end_state: Any = None
    # the search had to go back further than its window (WINDOW) keeps: which budget ended it
    horizon_hit: bool = False
    peak_kept: int = 0        # the most search nodes the visited set held at once (bounded by WINDOW)

    def to_dict(self) -> dict:
        return dict(conforms=self.conforms, nodes=self.nodes, seconds=round(self.seconds, 3), observables=self.observables,
                    explained=self.explained, unexplained=[u.to_dict() for u in self.unexplained],
                    violation=self.violation, stuck=self.stuck, budget_exhausted=self.budget_hit,
                    window_exhausted=self.horizon_hit, peak_kept=self.peak_kept)


# How far behind the furthest point it reached (in observables explained, summed over the actors) the
# search keeps what it needs to go back: the visited set and the stack frames that still hold
# untried alternatives.  A node that far behind cannot be reached again from where the search is
# (cursors only move forward), so forgetting it from the visited set costs at most some repeated work;
# a forgotten stack frame means a backtrack that far cannot happen: if the search runs out of
# alternatives after forgetting one, it has not explored everything and the result is INCONCLUSIVE
# (``horizon_hit``), never DOES NOT CONFORM.  Real runs backtrack over a chunk's plan at most (tens
# of observables), so the window only bounds the memory of long traces: it is flat in the trace length.
WINDOW = 20000


def _sig_concrete(sig) -> tuple | None:
    if (isinstance(sig, tuple) and len(sig) == 2 and isinstance(sig[0], str) and isinstance(sig[1], tuple)
            and all(isinstance(x, int) for x in sig[1])):
        return sig
    return None


class Replayer:
    def __init__(self, model, mapped: Mapped, budget: int | None = None, seconds: float | None = None,
                 window: int | None = None):
        self.model = model
        model.set_reduction(False)
        self.mapped = mapped
        self.family = mapped.family
        self.adapter = for_topology(mapped.topology)  # everything that names the family's spec transitions
        self.actors = model.actors
        self.seqs: list[list[Obs]] = [mapped.per_actor.get((a.rank, a.thread), []) for a in self.actors]
        known = {(a.rank, a.thread) for a in self.actors}
        self.orphans = [(k, v) for k, v in mapped.per_actor.items() if k not in known and v]
        self.observed = [self.adapter.observed(mapped.topology, a.role.name, mapped.produced((a.rank, a.thread))) for a in self.actors]
        self.total = sum(len(s) for s in self.seqs)
        self.budget = budget if budget is not None else 200 * self.total + 20000
        self.seconds = seconds
        self.window = window if window is not None else WINDOW
        self.rank_actors = model.actors_of_rank
        # actors whose steps commute with every other actor's (see _ample_actor)
        self.solo = [bool(getattr(a.role, "private", False)) and len(model.actors_of_rank[a.rank]) == 1 for a in self.actors]

    # ------------------------------------------------------------------ helpers
    def _op_refusal(self, o: Obs, op, tname: str = "") -> str | None:
        want = o.op
        if want is None:
            return f"the trace has a local event ({o.label}) where the spec issues {op.short()}"
        if want.get("mixed"):
            return f"the parts of one {o.label} differ ({want['mixed']})"
        if op.kind != want["kind"]:
            return f"op: spec issues {op.kind}, trace has {want['kind']}"
        if op.group != want["group"]:
            return f"group: spec issues {op.kind} on {op.group}, trace on {want['group']}"
        if op.kind in ("broadcast", "send", "recv") and op.peer != want["peer"]:
            role = {"broadcast": "src", "send": "dst", "recv": "src"}[op.kind]
            return f"{role}: spec {role}={op.peer}, trace {role}={want['peer']}"
        sig = _sig_concrete(op.sig)
        if sig is not None and want.get("dtype") is not None:
            if sig[0] != want["dtype"] or tuple(sig[1]) != tuple(want["shape"]):
                return f"signature: spec {sig[0]}{list(sig[1])}, trace {want['dtype']}{list(want['shape'])}"
        return None

    def _ids_refusal(self, i: int, o: Obs, tname: str, v, g) -> str | None:
        if not o.ids:
            return None
        want = self.adapter.bind_ids(self.actors[i].role.name, tname, v, g)
        if want is None:
            return None
        bad = {k: (o.ids[k], want[k]) for k in want if k in o.ids and o.ids[k] != want[k]}
        if bad:
            return "ids: " + ", ".join(f"{k} trace={a} spec={b}" for k, (a, b) in bad.items())
        return None

    @staticmethod
    def _exit_fits(how: str, ctl: str, role, saw_error: bool | None = True) -> bool:
        role_terminal = ctl not in BUILTIN_TERMINAL and ctl not in role.by_src
        if how == "clean":
            return ctl == DONE or role_terminal
        if how == "exception" and ctl == DONE:
            # a worker that leaves on the terminal ERROR action: the spec's DONE, the impl raises to
            # exit -- only after the rank met an error (mapping.ERROR_SIGNS)
            return saw_error is not False
        if how in ("exception", "timeout"):
            return ctl == FAILED or role_terminal
        return False

    # ------------------------------------------------------------------ search
    def run(self) -> ReplayResult:
        t0 = time.perf_counter()
        model = self.model
        A = len(self.actors)
        init = next(iter(model.init_states()))
        root = (init, (0,) * A, (FREE,) * A, ((),) * A)
        # the visited set by level (observables explained, summed over the actors): levels far behind the
        # furthest one are forgotten (WINDOW)
        seen_at: dict[int, set] = {0: {root}}
        far = 0              # the furthest level reached
        low = 0              # levels below this one are forgotten
        window = self.window
        forgot_frames = False
        kept = peak_kept = 1  # nodes in the visited set
        stack = [(root, None)]
        best = root
        best_score = -1
        best_refusals: dict = {}
        nodes = 0
        violation = None
        stuck = None
        budget_hit = False
        seqs = self.seqs
        while stack:
            node, it = stack[-1]
            if it is None:
                nodes += 1
                if nodes > self.budget or (self.seconds and nodes % 1000 == 0 and time.perf_counter() - t0 > self.seconds):
                    budget_hit = True
                    break
                state, cur, pend, dfr = node
                score = sum(cur) - sum(len(d) for d in dfr)
                if all(cur[i] >= len(seqs[i]) for i in range(A)) and not any(dfr):
                    res = ReplayResult(True, nodes, time.perf_counter() - t0, self.total, self.total, end_state=state,
                                       peak_kept=max(kept, peak_kept))
                    return res
                # why candidate steps were refused is only reported for the furthest node: not formatted elsewhere
                refusals: dict | None = {} if score > best_score else None
                kids, viol, stk = self._children(node, refusals)
                if viol is not None and (violation is None or score > violation["_score"]):
                    violation = dict(viol, _score=score)
                if stk is not None and (stuck is None or score >= stuck["_score"]):
                    stuck = dict(stk, _score=score)
                if score > best_score:
                    best, best_score, best_refusals = node, score, refusals
                it = iter(kids)
                stack[-1] = (node, it)
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                continue
            lv = sum(nxt[1])
            if lv < low:
                continue  # behind the window: reached before, from a frame already left (see WINDOW)
            bucket = seen_at.get(lv)
            if bucket is None:
                bucket = seen_at[lv] = set()
            elif nxt in bucket:
                continue
            bucket.add(nxt)
            kept += 1
            if it.__length_hint__() == 0:
                stack.pop()  # no alternatives left here: nothing to come back to (a tail call)
            stack.append((nxt, None))
            if lv > far:
                far = lv
                if far - window > low + window // 4:
                    # forget the levels, and the stack frames, that far behind
                    low = far - window
                    if kept > peak_kept:
                        peak_kept = kept
                    for k in [k for k in seen_at if k < low]:
                        kept -= len(seen_at.pop(k))
                    cut = 0
                    while cut < len(stack) - 1 and sum(stack[cut][0][1]) < low:
                        cut += 1
                    if cut:
                        forgot_frames = True
                        del stack[:cut]
                    self._release(stack, best)
        horizon_hit = forgot_frames and not budget_hit
        res = ReplayResult(False, nodes, time.perf_counter() - t0, self.total, max(best_score, 0),
                           budget_hit=budget_hit or horizon_hit, end_state=best[0], horizon_hit=horizon_hit,
                           peak_kept=max(kept, peak_kept))
        res.unexplained = self._explain(best, best_refusals)
        for v in (violation, stuck):
            if v is not None:
                v.pop("_score", None)
        res.violation, res.stuck = violation, stuck
        return res

    def _children(self, node, refusals: dict | None):
        """Trace-consistent successor nodes, best first; a violation the trace reaches; a stuck spec.

        The solo actor whose next observable is earliest is tried alone first (its steps are an ample
        set, see _ample_actor): the other actors' steps are not even examined when it has a trace-
        consistent step, so a step costs the same whatever the number of ranks; otherwise every
        actor's steps are examined."""
        succ = self.model.raw_successors(node[0])
        if succ and succ[0][0] is None:  # a stuck spec: the faults it still offers rescue no run, and no trace
            succ = succ[:1]
        focus = self._focus(node, succ)
        if focus is not None:
            kids, viol, stk, own = self._children_of(node, refusals, succ, focus)
            if own:
                return kids, viol, stk
        kids, viol, stk, _ = self._children_of(node, refusals, succ, None)
        return kids, viol, stk

    def _focus(self, node, succ) -> int | None:
        state, cur, pend, dfr = node
        best, best_t = None, None
        seen_actors = set()
        for action, _ in succ:
            if action is None or action[0] != "t":
                if action is not None and action[0] in ("m", "p", "e", "x", "M", "P", "b", "r", "w"):
                    return None  # completions go first, whole-node logic
                continue
            i = action[1]
            if i in seen_actors or not self.solo[i]:
                continue
            seen_actors.add(i)
            seq = self.seqs[i]
            if cur[i] >= len(seq):
                continue
            t = seq[cur[i]].t
            if best_t is None or t < best_t:
                best, best_t = i, t
        return best

    def _children_of(self, node, refusals, succ, only):
        state, cur, pend, dfr = node
        seqs = self.seqs
        completions, consuming, free, defer = [], [], [], []
        viol = stk = None
        viol_actors: set = set()
        actors_state = state[0]

        def nxt_obs(i):
            return seqs[i][cur[i]] if cur[i] < len(seqs[i]) else None

        def refuse(i, msg):
            refusals.setdefault(i, [])
            if msg not in refusals[i]:
                refusals[i].append(msg)

        def can_advance(i, o):
            # a deferred isend must take effect before the trace passes its wait
            return all(seqs[i][d].defer_until is None or seqs[i][d].defer_until >= o.line for d in dfr[i])

        for action, n in succ:
            if action is None:
                if isinstance(n, Violation):
                    stk = {"verdict": n.verdict, "message": n.message, "waiting": n.detail.get("waiting", [])}
                continue
            kind = action[0]
            if kind == "t":
                _, i, tidx, ch = action
                if only is not None and i != only:
                    continue
                role = self.actors[i].role
                t = role.transitions[tidx]
                if t.fault is not None:
                    # a fault step spends the world's fault budget (shared): not a private step
                    viol_actors.add(i)
                tname = t.name
                tname = self.adapter.step_name(role.name, tname, ch)
                if tname not in self.observed[i]:
                    if isinstance(n, Violation):
                        viol = viol or self._viol(n, i, None)
                        viol_actors.add(i)
                        continue
                    np_ = pend
                    if t.op is not None:
                        np_ = pend[:i] + (UNOBS,) + pend[i + 1:]
                    # free steps of actors with nothing left to explain go last (TP's stop-request thread:
                    # taken early it only ends the stream before the trace does)
                    rank_ = 1 if cur[i] < len(seqs[i]) else 3
                    if ch is not None:
                        hint = self.adapter.plan_hint(role.name, t.name, seqs[i], cur[i], actors_state[i][1], self.mapped)
                        rank_ = 0 if hint is None or hint == ch else 2
                    free.append((rank_, i, (n, cur, np_, dfr)))
                    continue
                # observed: the cursor observable, or the first deferred one
                cands = []
                o = nxt_obs(i)
                if o is not None and o.kind == "step" and can_advance(i, o):
                    cands.append(("cur", cur[i], o))
                if dfr[i]:
                    cands.append(("dfr", dfr[i][0], seqs[i][dfr[i][0]]))
                if not cands:
                    continue
                for where, idx, o in cands:
                    if tname not in o.names:
                        refusals is not None and refuse(i, f"line {o.line + 1} ({o.label}) is explained by {'/'.join(sorted(o.names))}, "
                                  f"the spec offers {tname}")
                        continue
                    if isinstance(n, Violation):
                        viol = viol or self._viol(n, i, o)
                        viol_actors.add(i)
                        continue
                    v_before = actors_state[i][1]
                    if t.op is not None:
                        issued = n[0][i][2]
                        if issued is None:  # a non-blocking post: the observable is its first posted op
                            posted = [e[4] for e in n[3] if e[0] == "op" and e[1] == i and e not in state[3]]
                            why = self._op_refusal(o, posted[0], t.name) if posted else None
                        else:
                            why = self._op_refusal(o, issued[1], t.name)
                        if why:
                            refusals is not None and refuse(i, f"line {o.line + 1}: {t.name}: {why}")
                            continue
                        np_ = pend if issued is None else pend[:i] + (idx,) + pend[i + 1:]
                    else:
                        if o.op is not None:
                            refusals is not None and refuse(i, f"line {o.line + 1}: the trace has an op ({o.label}) where the spec takes local step {t.name}")
                            continue
                        why = self._ids_refusal(i, o, tname, n[0][i][1] if tname in self.adapter.ids_after else v_before, state[1])
                        if why is None and o.effect is not None:
                            nv = n[0][i][1]
                            accepted = nv is not None and v_before is not None and nv.emitted > v_before.emitted
                            if accepted != (o.effect == "accepted"):
                                why = (f"the trace {o.effect} the result, the spec "
                                       f"{'accepts (emits)' if accepted else 'drops or aborts on'} it")
                        if why:
                            refusals is not None and refuse(i, f"line {o.line + 1}: {t.name}: {why}")
                            continue
                        np_ = pend
                    if where == "cur":
                        nc = cur[:i] + (cur[i] + 1,) + cur[i + 1:]
                        nd = dfr
                    else:
                        nc = cur
                        nd = dfr[:i] + (dfr[i][1:],) + dfr[i + 1:]
                    consuming.append((o.t, i, (n, nc, np_, nd)))
            elif kind in ("m", "p", "M", "P", "b", "r", "w"):
                # fabric completions.  Those of non-blocking ops and buffered messages (M P b r, and w:
                # a wait returns) are internal steps: only the actors they unblock (refs >= 0) are checked
                # against the trace, as for a blocking op (m p)
                if kind == "w":
                    idxs = (action[1],)
                elif kind == "r":
                    idxs = tuple(r for r in action[2][:1] if r >= 0)
                else:
                    idxs = tuple(r for r in action[2] if r >= 0)
                ok = True
                for i in idxs:
                    p = pend[i]
                    if p >= 0 and seqs[i][p].outcome != "ok":
                        ok = False
                        refusals is not None and refuse(i, f"line {seqs[i][p].line + 1}: the spec completes {seqs[i][p].label} but the trace shows it "
                                  f"{'failed' if seqs[i][p].outcome == 'failed' else 'never completed'}")
                if not ok:
                    continue
                if isinstance(n, Violation):
                    viol = viol or self._viol(n, idxs[0], seqs[idxs[0]][pend[idxs[0]]] if pend[idxs[0]] >= 0 else None)
                    continue
                bad = False
                for i in idxs:
                    p = pend[i]
                    if p >= 0:
                        o = seqs[i][p]
                        tname = self.actors[i].role.transitions[actors_state[i][2][0]].name
                        why = self._ids_refusal(i, o, tname, n[0][i][1], n[1])
                        if why:
                            refusals is not None and refuse(i, f"line {o.line + 1}: {tname}: {why}")
                            bad = True
                if bad:
                    continue
                np_ = list(pend)
                for i in idxs:
                    np_[i] = FREE
                completions.append((n, cur, tuple(np_), dfr))
            elif kind in ("e", "x"):
                i = action[1]
                p = pend[i]
                if p >= 0 and seqs[i][p].outcome != "failed":
                    refusals is not None and refuse(i, f"line {seqs[i][p].line + 1}: the spec lets {seqs[i][p].label} "
                              f"{'fail (peer gone)' if kind == 'e' else 'time out'}, the trace shows it "
                              f"{'completed' if seqs[i][p].outcome == 'ok' else 'still pending'}")
                    continue
                if p == UNOBS and kind == "x":
                    o = nxt_obs(i)
                    if o is None or o.kind != "exit":
                        continue
                np_ = pend[:i] + (FREE,) + pend[i + 1:]
                completions.append((n, cur, np_, dfr))
            elif kind == "crash":
                r = action[1]
                idxs = self.rank_actors[r]
                main = [i for i in idxs if nxt_obs(i) is not None and nxt_obs(i).kind == "crash"]
                if not main:
                    continue
                if any(nxt_obs(i) is not None and i not in main for i in idxs):
                    continue
                nc = list(cur)
                np_ = list(pend)
                for i in idxs:
                    if i in main:
                        nc[i] += 1
                    np_[i] = FREE
                consuming.append((nxt_obs(main[0]).t, main[0] if len(idxs) == 1 else -1, (n, tuple(nc), tuple(np_), dfr)))
            # "hang" never matches a recorded trace: the impl records no wedge
        # virtual exit steps and deferrals
        for i, (ctl, v, p) in enumerate(actors_state):
            if only is not None and i != only:
                continue
            o = nxt_obs(i)
            if o is None:
                continue
            if o.kind == "exit" and p is None and self._exit_fits(o.how, ctl, self.actors[i].role, o.ok) and not dfr[i]:
                same_rank = [j for j in self.rank_actors[self.actors[i].rank] if j != i]
                if all(actors_state[j][0] in BUILTIN_TERMINAL or actors_state[j][0] not in self.actors[j].role.by_src
                       for j in same_rank):
                    consuming.append((o.t, i, (state, cur[:i] + (cur[i] + 1,) + cur[i + 1:], pend, dfr)))
            elif o.kind == "exit" and p is None:
                refusals is not None and refuse(i, f"line {o.line + 1}: the rank exits {o.how}, the spec actor is in {ctl}")
            if o.kind == "step" and o.defer_until is not None and can_advance(i, o):
                defer.append((i, (state, cur[:i] + (cur[i] + 1,) + cur[i + 1:], pend, dfr[:i] + (dfr[i] + (cur[i],),) + dfr[i + 1:])))
        if completions:
            return [completions[0]], viol, stk, True
        consuming.sort(key=lambda x: x[0])
        free.sort(key=lambda x: x[0])
        if only is not None:
            # the focus actor alone: accepted when it has a trace-consistent step and none of its steps
            # reaches a violation (else every actor is examined)
            ok = only not in viol_actors and bool(consuming or free or defer)
            return ([c for _, _, c in consuming] + [f for _, _, f in free] + [d for _, d in defer]), viol, stk, ok
        amp = self._ample_actor(consuming, free, defer, viol_actors, cur)
        if amp is not None:
            return ([c for _, a, c in consuming if a == amp] + [f for _, a, f in free if a == amp]
                    + [d for a, d in defer if a == amp]), viol, stk, True
        return [c for _, _, c in consuming] + [f for _, _, f in free] + [d for _, d in defer], viol, stk, True

    def _ample_actor(self, consuming, free, defer, viol_actors, cur) -> int | None:
        """Partial-order reduction: an actor whose trace-consistent steps may be explored alone.

        A solo actor (a private role, the only thread of its rank) changes only its own control state,
        variables, pending op and trace cursor: its steps commute with every other actor's, nothing
        another actor does can disable them, and a completion its post enables stays enabled.  So when
        such an actor has steps here, the interleavings with the others' steps are all equivalent and
        only its steps need trying (an ample set; the search's visited set closes cycles).  An actor
        with a step that reaches a spec violation, or a fault step (it spends the world's shared fault
        budget), is not reduced (``viol_actors``).  Actors
        with trace left to explain come first, earliest timestamp first: the search follows the run."""
        best = None
        for t, a, _ in consuming:
            if a >= 0 and self.solo[a] and a not in viol_actors:
                return a
        for _, a, _ in free:
            if self.solo[a] and a not in viol_actors and cur[a] < len(self.seqs[a]):
                best = a
                break
        if best is None:
            for a, _ in defer:
                if self.solo[a] and a not in viol_actors:
                    return a
        return best

    def _release(self, stack, best) -> None:
        """Let a streamed actor sequence (stream.LazyObs) go of the observables no node the search can
        still expand (the stack's, the furthest one) points at: its cursor, pending op, deferred isends."""
        forget = getattr(self.model, "forget_memos", None)
        if forget is not None:
            forget()  # the spec's memos of the states left behind (they grow with the trace otherwise)
        nodes = [n for n, _ in stack] + [best]
        for i, seq in enumerate(self.seqs):
            rel = getattr(seq, "release_below", None)
            if rel is None:
                continue
            floor = min(n[1][i] for n in nodes)
            for n in nodes:
                p = n[2][i]
                if p >= 0 and p < floor:
                    floor = p
                if n[3][i]:
                    floor = min(floor, min(n[3][i]))
            rel(floor)

    def _viol(self, v: Violation, i: int, o: Obs | None) -> dict:
        a = self.actors[i]
        return {"verdict": v.verdict, "message": v.message, "rank": a.rank, "actor": a.label,
                "line": (o.line + 1) if o is not None else None}

    # ------------------------------------------------------------------ report
    def _explain(self, node, refusals: dict) -> list[Unexplained]:
        state, cur, pend, dfr = node
        out = []
        succ = self.model.raw_successors(state)
        for i, a in enumerate(self.actors):
            seq = self.seqs[i]
            if cur[i] >= len(seq) and not dfr[i]:
                continue
            o = seq[dfr[i][0]] if dfr[i] else seq[cur[i]]
            ctl, v, p = state[0][i]
            role = a.role
            enabled = sorted({role.transitions[act[2]].name for act, _ in succ if act is not None and act[0] == "t" and act[1] == i})
            guards = []
            ctx = Ctx(v, state[1], self.model.params, a.rank, ctl, self.model, i) if v is not None else None
            for tidx in role.by_src.get(ctl, ()):
                t = role.transitions[tidx]
                if t.name in o.names and t.guard is not None and ctx is not None:
                    try:
                        ok = t.guard(ctx)
                    except Exception:  # noqa: BLE001 - a guard that cannot be evaluated here
                        ok = None
                    if ok is False:
                        guards.append({"transition": t.name, "guard": guard_text(t)})
            ids = {k: getattr(v, k) for k in role.ids} if v is not None else {}
            ev_name = o.label
            out.append(Unexplained(rank=a.rank, actor=a.label, line=o.line + 1, event=ev_name,
                                   expected=sorted(o.names), spec_state=ctl, ids=ids, enabled=enabled, guards=guards,
                                   reasons=refusals.get(i, [])[:6], waiting_op=p[1].short() if p is not None else None))
        for (r, th), obs in self.orphans:
            out.append(Unexplained(rank=r, actor=f"rank{r}.{th}", line=obs[0].line + 1, event=obs[0].label, expected=[],
                                   spec_state="(no such actor in the spec)", ids={}, enabled=[], guards=[], reasons=[]))
        return out
