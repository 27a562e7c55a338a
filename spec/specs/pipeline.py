"""``pipeline``: a generic benchmark spec, S stages passing M microbatches through S+1 bounded FIFO
queues of capacity C.

Roles (one machine each, named by what it waits for):
- the **source** puts microbatches 0..M-1 into queue 0, one put per transition (blocks while full);
- **stage i** loops M times through five steps: ``ready``, ``receive`` from queue i (blocks while
  empty), ``compute`` (records the value it holds), ``send`` to queue i+1 (blocks while full),
  ``count``.  A stage whose count reached M has finished: there is no separate exit step;
- the **sink** takes from queue S, one take per transition, and asserts the microbatches arrive in
  order: an out-of-order arrival is an INVARIANT violation on that take.

The state where every role has finished is a valid end, any other state without successors is
STRANDED (a role waits on a queue whose only partner has finished) or DEADLOCK (a circular wait).
With stages=6, microbatches=4, capacity=2 the unreduced state graph has 646,157 states and
3,441,072 transitions (SPIN, Rumur and TLC agree on this guarded-command model).

State: a flat tuple ``(source, sink, pc_0, count_0, held_0, ..., pc_{S-1}, count_{S-1},
held_{S-1}, q_0, ..., q_S)``: ``source``/``sink`` count the microbatches put/taken, ``held`` is the
microbatch a stage holds between receive and send (-1 for none), each queue a tuple, head first.
Actions: ``(actor, transition)`` with actor ``"source"``, a stage index, or ``"sink"``.

The model also implements the footprint hooks of model/por.py's one ample-set rule (actor, footprint,
local choices, progress) and ``packed()`` for the vectorized core of model/fast.py.
"""
from __future__ import annotations

from typing import Any

from lockstep.model.api import DEADLOCK, INVARIANT, STRANDED, Violation
from lockstep.model.por import FootprintHooks, ample
from lockstep.spec.registry import Param, SpecInfo, UsageError, Variant

# Stage control states, in loop order.
READY, RECEIVE, COMPUTE, SEND, COUNT = range(5)
STEP_NAMES = ("ready", "receive", "compute", "send", "count")
NOTHING = -1  # held value of a stage that holds no microbatch


def _name(actor) -> str:
    return actor if isinstance(actor, str) else f"stage {actor}"


class PipelineModel(FootprintHooks):
    """The guarded-command pipeline.  ``lifo`` makes every queue pop its tail (the wrong end);
    ``skip_send_stage`` names a stage that drops the send of its last microbatch."""

    def __init__(self, stages: int = 6, microbatches: int = 4, capacity: int = 2, *, lifo: bool = False,
                 skip_send_stage: int | None = None):
        if stages < 1 or microbatches < 0 or capacity < 0:
            raise UsageError("pipeline needs stages >= 1, microbatches >= 0 and capacity >= 0")
        self.stages, self.microbatches, self.capacity = stages, microbatches, capacity
        self.lifo = lifo
        self.reduction = False  # the full interleaving graph unless the checker asks for reduction
        self.skip_send_stage = skip_send_stage
        variant = "lifo-queue" if lifo else (f"stage-skips-send@{skip_send_stage}" if skip_send_stage is not None else "")
        self.name = f"pipeline(S={stages},M={microbatches},C={capacity}{',' + variant if variant else ''})"
        self._q0 = 2 + 3 * stages  # index of queue 0 in the state tuple

    # -- Init / Next ---------------------------------------------------------------------
    def init_states(self):
        return [(0, 0) + (READY, 0, NOTHING) * self.stages + ((),) * (self.stages + 1)]

    features = frozenset({"reduction", "packed"})  # model/features.py

    def set_reduction(self, on: bool):
        """Partial-order reduction (model/por.py) on or off; the checker calls this."""
        self.reduction = on

    def reducing(self) -> bool:
        return self.reduction

    def successors(self, s):
        if self.reduction:
            return ample(self, s, self.all_successors(s))
        return self.all_successors(s)

    def all_successors(self, s):
        """Enabled transitions in a fixed order: source, stages 0..S-1, sink (the packed core
        of model/fast.py yields them in the same order)."""
        S, M, C, q0 = self.stages, self.microbatches, self.capacity, self._q0
        out = []
        src = s[0]
        if src < M and len(s[q0]) < C:  # source: put
            out.append((("source", "put"), (src + 1,) + s[1:q0] + (s[q0] + (src,),) + s[q0 + 1:]))
        for i in range(S):
            b = 2 + 3 * i
            pc = s[b]
            if pc == READY:
                if s[b + 1] < M:
                    out.append(((i, "ready"), s[:b] + (RECEIVE,) + s[b + 1:]))
            elif pc == RECEIVE:
                q = s[q0 + i]
                if q:
                    if self.lifo:
                        v, rest = q[-1], q[:-1]
                    else:
                        v, rest = q[0], q[1:]
                    out.append(((i, "receive"), s[:b] + (COMPUTE, s[b + 1], v) + s[b + 3:q0 + i] + (rest,) + s[q0 + i + 1:]))
            elif pc == COMPUTE:
                out.append(((i, "compute"), s[:b] + (SEND,) + s[b + 1:]))
            elif pc == SEND:
                if i == self.skip_send_stage and s[b + 1] == M - 1:
                    # planted bug: the last microbatch is never sent
                    out.append(((i, "send"), s[:b] + (COUNT, s[b + 1], NOTHING) + s[b + 3:]))
                else:
                    j = q0 + i + 1
                    q = s[j]
                    if len(q) < C:
                        out.append(((i, "send"), s[:b] + (COUNT, s[b + 1], NOTHING) + s[b + 3:j] + (q + (s[b + 2],),) + s[j + 1:]))
            else:  # COUNT
                out.append(((i, "count"), s[:b] + (READY, s[b + 1] + 1) + s[b + 2:]))
        q = s[q0 + S]
        if q:  # sink: take, asserting order
            v, rest = (q[-1], q[:-1]) if self.lifo else (q[0], q[1:])
            if v != s[1]:
                out.append((("sink", "take"), Violation(
                    INVARIANT, f"sink received microbatch {v} out of order: expected microbatch {s[1]}",
                    {"expected": s[1], "received": v, "queue": S})))
            else:
                out.append((("sink", "take"), s[:1] + (s[1] + 1,) + s[2:q0 + S] + (rest,)))
        return out

    def invariant(self, s):
        return None  # the order property is checked on the sink's take (an edge property)

    # -- ends ------------------------------------------------------------------------------
    def finished(self, s, actor) -> bool:
        M = self.microbatches
        if actor == "source":
            return s[0] == M
        if actor == "sink":
            return s[1] == M
        b = 2 + 3 * actor
        return s[b] == READY and s[b + 1] == M

    def classify_end(self, s):
        roles = ["source", *range(self.stages), "sink"]
        if all(self.finished(s, r) for r in roles):
            return None
        waits = self.waiting(s)
        stranded = [w for w in waits if w["partner_finished"]]
        if stranded:
            w = stranded[0]
            return Violation(STRANDED, f"{_name(w['rank'])} waits for ever on {w['waits_on']}: {w['reason']}",
                             {"waiting": waits})
        return Violation(DEADLOCK, "every unfinished role is blocked on a queue: "
                         + "; ".join(f"{_name(w['rank'])} waits on {w['waits_on']}" for w in waits), {"waiting": waits})

    def waiting(self, s) -> list[dict[str, Any]]:
        S, M, C, q0 = self.stages, self.microbatches, self.capacity, self._q0
        out = []

        def entry(rank, role, at, queue, want, partner):
            fin = self.finished(s, partner)
            side = "data" if want == "non-empty" else "room"
            partner_name = _name(partner)
            reason = (f"{partner_name} has finished and will never provide {side}" if fin
                      else f"{partner_name} is blocked too")
            # the documented fields (docs/json.md) and the pipeline's own: a queue, not a group op
            out.append({"rank": rank, "role": role, "actor": _name(rank), "state": at, "op": f"q{queue} {want}",
                        "group": None, "waits_for": [partner],
                        "partner_status": {str(partner): "finished" if fin else "alive"},
                        "at": at, "waits_on": f"q{queue} {want}", "partner": partner, "partner_finished": fin,
                        "reason": reason})

        if s[0] < M and len(s[q0]) >= C:
            entry("source", "source", "put", 0, "not full", 0 if S else "sink")
        for i in range(S):
            b = 2 + 3 * i
            if s[b] == RECEIVE and not s[q0 + i]:
                entry(i, "stage", "receive", i, "non-empty", i - 1 if i else "source")
            elif s[b] == SEND and len(s[q0 + i + 1]) >= C:
                entry(i, "stage", "send", i + 1, "not full", i + 1 if i + 1 < S else "sink")
        if s[1] < M and not s[q0 + S]:
            entry("sink", "sink", "take", S, "non-empty", S - 1)
        return out

    # -- counterexamples ---------------------------------------------------------------------
    def _fields(self, s) -> dict[str, Any]:
        f = {"source.put": s[0], "sink.taken": s[1]}
        for i in range(self.stages):
            b = 2 + 3 * i
            f[f"stage {i}.step"] = STEP_NAMES[s[b]]
            f[f"stage {i}.count"] = s[b + 1]
            f[f"stage {i}.held"] = s[b + 2]
        for k in range(self.stages + 1):
            f[f"q{k}"] = list(s[self._q0 + k])
        return f

    def describe(self, s, action, nxt) -> dict[str, Any]:
        actor, transition = action
        role = actor if isinstance(actor, str) else "stage"
        q0 = self._q0
        op = None
        if actor == "source":
            op = f"put microbatch {s[0]} into q0"
        elif actor == "sink":
            q = s[q0 + self.stages]
            if q:
                op = f"take microbatch {q[-1] if self.lifo else q[0]} from q{self.stages}"
        elif transition == "receive":
            q = s[q0 + actor]
            op = f"receive microbatch {q[-1] if self.lifo else q[0]} from q{actor}"
        elif transition == "send":
            held = s[2 + 3 * actor + 2]
            dropped = actor == self.skip_send_stage and s[2 + 3 * actor + 1] == self.microbatches - 1
            op = f"drop microbatch {held} (never sent)" if dropped else f"send microbatch {held} to q{actor + 1}"
        elif transition == "compute":
            op = f"compute microbatch {s[2 + 3 * actor + 2]}"
        d = {"step": None, "rank": actor, "role": role, "transition": transition, "op": op, "group": None, "ids": {}}
        if isinstance(nxt, Violation):
            d["changed"] = {}
            d["violation"] = nxt.message
        else:
            before, after = self._fields(s), self._fields(nxt)
            d["changed"] = {k: f"{before[k]} -> {after[k]}" for k in before if before[k] != after[k]}
        return d

    # -- partial-order reduction hooks (model/por.py) ---------------------------------------
    # Footprints below are exact for these roles: a stage's five steps touch at most the head of
    # its input queue and the tail of its output queue, so every step but the sink's checked take
    # is independent of all other roles' steps in the FIFO pipeline.
    def actor_of(self, action):
        return action[0]

    def footprint(self, action):
        """The shared resources an action touches.  A FIFO queue's head and tail are distinct
        resources: a put and a take that are both enabled commute and never disable each other.
        A LIFO take pops the tail, so there both ends are one resource.  The sink's take carries the
        order assertion, so it is visible (None) and never reduced alone."""
        actor, transition = action
        if actor == "sink":
            return None
        if actor == "source":
            return frozenset({("q", 0, "tail")})
        if transition == "receive":
            return frozenset({("q", actor, "tail" if self.lifo else "head")})
        if transition == "send":
            return frozenset({("q", actor + 1, "tail")})
        return frozenset()

    def footprints(self) -> dict[Any, frozenset]:
        """Static over-approximation: every resource each actor may ever touch."""
        S = self.stages
        out: dict[Any, frozenset] = {"source": frozenset({("q", 0, "tail")}),
                                     "sink": frozenset({("q", S, "tail" if self.lifo else "head")})}
        for i in range(S):
            out[i] = frozenset({("q", i, "tail" if self.lifo else "head"), ("q", i + 1, "tail")})
        return out

    def local_choices(self, s, actor) -> int:
        """Transitions ``actor`` has at its current control state, enabled or not: one each."""
        return 0 if self.finished(s, actor) else 1

    def progress(self, s) -> int:
        """Strictly increases by one on every transition (so the state graph is acyclic)."""
        return s[0] + s[1] + sum(5 * s[2 + 3 * i + 1] + s[2 + 3 * i] for i in range(self.stages))

    # -- vectorized core (model/fast.py) -----------------------------------------------------
    def packed(self):
        """The packed form explores every interleaving, so there is none while reduction is on."""
        return None if self.reduction else _packed_class()(self)


def _packed_class():
    """The packed form imports numpy, so it is built on first use: checking starts fast."""
    global _PackedPipeline
    if _PackedPipeline is None:
        _PackedPipeline = _define_packed()
    return _PackedPipeline


_PackedPipeline = None


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


def _define_packed():
    import numpy as np

    u64 = np.uint64

    class PackedPipeline:
        """The pipeline state as bit fields in a few uint64 words (see model/fast.py).

        Fields never straddle a word.  A queue is one field: its length in the low bits, then
        its items head first; unused item bits are zero so equal states pack equally.  ``held``
        is stored plus one (0 = nothing held).  Slots: 0 the source, 1..S the stages, S+1 the sink.
        """

        invariant_free = True

        def __init__(self, m: PipelineModel):
            self.m = m
            S, M, C = m.stages, m.microbatches, m.capacity
            self.slots = S + 2
            self.lb, self.ib = _bits(C), _bits(max(M - 1, 0))
            sizes = [("source", _bits(M)), ("sink", _bits(M))]
            for i in range(S):
                sizes += [(("pc", i), 3), (("count", i), _bits(M)), (("held", i), _bits(M))]
            for k in range(S + 1):
                sizes.append((("q", k), self.lb + C * self.ib))
            if any(w > 64 for _, w in sizes):
                raise UsageError("pipeline queue too wide to pack into 64 bits")
            self.at: dict[Any, tuple[int, int, int]] = {}  # field -> (word, shift, width)
            word, used = 0, 0
            for name, w in sizes:
                if used + w > 64:
                    word, used = word + 1, 0
                self.at[name] = (word, used, w)
                used += w
            self.words = word + 1

        # -- scalar encode/decode -----------------------------------------------------------
        def encode(self, s) -> tuple[int, ...]:
            m = self.m
            out = [0] * self.words

            def put(name, v):
                w, sh, _ = self.at[name]
                out[w] |= v << sh

            put("source", s[0])
            put("sink", s[1])
            for i in range(m.stages):
                b = 2 + 3 * i
                put(("pc", i), s[b])
                put(("count", i), s[b + 1])
                put(("held", i), s[b + 2] + 1)
            for k in range(m.stages + 1):
                q = s[m._q0 + k]
                v = len(q)
                for j, x in enumerate(q):
                    v |= x << (self.lb + j * self.ib)
                put(("q", k), v)
            return tuple(out)

        def decode(self, words) -> tuple:
            m = self.m

            def get(name):
                w, sh, width = self.at[name]
                return (words[w] >> sh) & ((1 << width) - 1)

            s = [get("source"), get("sink")]
            for i in range(m.stages):
                s += [get(("pc", i)), get(("count", i)), get(("held", i)) - 1]
            qs = []
            for k in range(m.stages + 1):
                v = get(("q", k))
                n = v & ((1 << self.lb) - 1)
                qs.append(tuple((v >> (self.lb + j * self.ib)) & ((1 << self.ib) - 1) for j in range(n)))
            return tuple(s) + tuple(qs)

        # -- vectorized expansion -------------------------------------------------------------
        def expand(self, rows):
            m = self.m
            S, M, C = m.stages, m.microbatches, m.capacity
            N, K, A = rows.shape[0], self.words, self.slots
            lb, ib = u64(self.lb), u64(self.ib)
            lmask, imask = u64((1 << self.lb) - 1), u64((1 << self.ib) - 1)
            cols = [np.ascontiguousarray(rows[:, w]) for w in range(K)]
            enabled = np.zeros((N, A), dtype=bool)
            bad = np.zeros((N, A), dtype=bool)
            out = [list(cols) for _ in range(A)]  # per slot, per word: a contiguous column

            def get(name):
                w, sh, width = self.at[name]
                return (cols[w] >> u64(sh)) & u64((1 << width) - 1)

            def setf(slot, name, value, where):
                """Write field ``name`` of slot ``slot``'s successor where ``where`` holds."""
                w, sh, width = self.at[name]
                col = out[slot][w]
                fm = u64(~(((1 << width) - 1) << sh) & (2**64 - 1))
                out[slot][w] = np.where(where, (col & fm) | (value << u64(sh)), col)

            def qlen(q):
                return q & lmask

            def head(q):
                return (q >> lb) & imask

            def tail(q, n):
                return (q >> (lb + (n - u64(1)) * ib)) & imask

            def pop(q, lifo):
                n = qlen(q)
                if lifo:
                    sh = lb + (n - u64(1)) * ib
                    return (q & ~(imask << sh)) - u64(1)
                items = q >> lb
                return ((items >> ib) << lb) | (n - u64(1))

            def push(q, v):
                n = qlen(q)
                return (q | (v << (lb + n * ib))) + u64(1)

            queues = [get(("q", k)) for k in range(S + 1)]
            # source
            src = get("source")
            en = (src < M) & (qlen(queues[0]) < C)
            enabled[:, 0] = en
            setf(0, "source", src + u64(1), en)
            q_safe = np.where(en, queues[0], u64(0))
            setf(0, ("q", 0), push(q_safe, src), en)
            # stages
            for i in range(S):
                slot = 1 + i
                pc, cnt, held = get(("pc", i)), get(("count", i)), get(("held", i))
                qi, qo = queues[i], queues[i + 1]
                ready = (pc == READY) & (cnt < M)
                recv = (pc == RECEIVE) & (qlen(qi) > 0)
                comp = pc == COMPUTE
                skip = (pc == SEND) & (cnt == M - 1) if i == m.skip_send_stage else np.zeros(N, dtype=bool)
                send = (pc == SEND) & ~skip & (qlen(qo) < C)
                cnt_step = pc == COUNT
                en = ready | recv | comp | skip | send | cnt_step
                enabled[:, slot] = en
                setf(slot, ("pc", i), np.where(cnt_step, u64(0), pc + u64(1)), en)
                setf(slot, ("count", i), cnt + u64(1), cnt_step)
                qi_safe = np.where(recv, qi, u64(1))  # a non-empty dummy keeps shifts in range
                v = tail(qi_safe, qlen(qi_safe)) if m.lifo else head(qi_safe)
                setf(slot, ("held", i), v + u64(1), recv)
                setf(slot, ("q", i), pop(qi_safe, m.lifo), recv)
                setf(slot, ("held", i), u64(0), skip | send)
                qo_safe = np.where(send, qo, u64(0))
                setf(slot, ("q", i + 1), push(qo_safe, held - np.where(send, u64(1), u64(0))), send)
            # sink
            q = queues[S]
            en = qlen(q) > 0
            enabled[:, S + 1] = en
            q_safe = np.where(en, q, u64(1))
            v = tail(q_safe, qlen(q_safe)) if m.lifo else head(q_safe)
            snk = get("sink")
            bad[:, S + 1] = en & (v != snk)
            setf(S + 1, "sink", snk + u64(1), en)
            setf(S + 1, ("q", S), pop(q_safe, m.lifo), en)
            nxt = np.empty((N, A, K), dtype=np.uint64)
            for a in range(A):
                for w in range(K):
                    nxt[:, a, w] = out[a][w]
            return enabled, nxt, bad

    return PackedPipeline


def build(params: dict, variant: str | None, backend: str = "gloo") -> PipelineModel:
    kw: dict[str, Any] = {}
    if variant == "lifo-queue":
        kw["lifo"] = True
    elif variant == "stage-skips-send":
        kw["skip_send_stage"] = 0
    return PipelineModel(params["stages"], params["microbatches"], params["capacity"], **kw)


SPEC = SpecInfo(
    name="pipeline",
    description="generic benchmark: S stages pass M microbatches through S+1 bounded FIFO queues; the sink "
                "asserts in-order arrival (646,157 states / 3,441,072 transitions at the defaults, unreduced)",
    params={
        "stages": Param(6, "number of stages S (there are S+1 queues)", min=1, max=64),
        "microbatches": Param(4, "microbatches M the source puts", min=0),
        "capacity": Param(2, "capacity C of every queue", min=0),
    },
    variants={
        "lifo-queue": Variant("every queue pops its tail instead of its head, so microbatches overtake each "
                              "other and the sink's order assertion fails", ("INVARIANT",)),
        "stage-skips-send": Variant("stage 0 finishes its loop without sending its last microbatch, so stage 1 "
                                    "waits for ever on a partner that has finished", ("STRANDED",)),
        "capacity-zero": Variant("queues of capacity 0: the source can never put and stage 0 can never receive, "
                                 "a circular wait", ("DEADLOCK",), params={"capacity": 0}),
    },
    build=build,
)
