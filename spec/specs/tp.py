"""TP v1.1: the broadcast-envelope protocol (docs/domain.md §2.1-2.2, §3.3-3.4).

Rank0 is the leader: it runs Phase A (plans the chunk), preflights, broadcasts the header (the
commitment point), the meta object (two collectives: size, then data) and the tensors in
tensor_specs order, then takes part in Phase B.  Workers run Phase B only.  Every generator call
issues ``reduces`` all_reduces on the world group; the observed call count is asserted against
``expected_generator_calls``.  Idle gaps carry NOOP heartbeats; SHUTDOWN ends the run.

Modelling choices (written down because the library leaves them open):
- rank0 is a server.  A failure it catches in preflight drops the chunk and it goes on.  An
  exception that escapes the control plane (only possible in the planted bugs) fails the request:
  the stream ends and rank0 stays up, issuing nothing further on the wire.  That is the FM-04
  stranding story (OM-01: "peer still waiting").
- workers guard only their wait for the next header with a watchdog (SCOPE_TP_WORKER_WATCHDOG_S);
  a wait inside an envelope or inside Phase B is released only by the PG timeout, which lockstep
  counts as a hang.
- a second rank0 thread receives the stop request.  In the hardened protocol it only sets a flag
  that the main thread reads between chunks; in ``shutdown-race`` it broadcasts SHUTDOWN itself.
- env drift (a per-rank knob that differs) is the ``env-drift`` fault; the parity handshake turns
  it into a fast failure before the first chunk.

Faults: ``raise@validate``, ``raise@pickle``, ``raise@specs``, ``raise@dtype`` (rank0 raises at
that preflight step), ``tripwire`` (a runtime tripwire — input digest, weight fingerprint — fires on a
rank before Phase B and it exits), ``crash`` (any rank dies), ``env-drift``.  At most ``max_faults`` per run.
"""
from __future__ import annotations

from ...model.api import CALL_COUNT, COLLECTIVE_MISMATCH, DEADLOCK, FRANKEN, STRANDED
from ..contract import HEADER_DTYPE, HEADER_SHAPE, Action, expected_generator_calls
from ..fabric import Group, all_gather, all_reduce, broadcast
from ..machine import FAILED, ActorDef, Protocol, Role, parse_faults
from ..monitor import Monitor, Reject
from ..patch import Draft, Patches
from ..view import WorldView
from ..registry import Param, SpecInfo, Variant

HEADER_SIG = (HEADER_DTYPE, HEADER_SHAPE)
META_SIZE_SIG = ("int64", (1,))
META_SIG = ("uint8", "meta")
HIDDEN_SIG = ("float32", "hidden")
PARITY_SIG = ("int64", "parity")
DIGEST_SIG = ("int64", (1,))
PREFLIGHT_STEPS = ("validate", "pickle", "specs", "dtype")
FAULTS = tuple(f"raise@{s}" for s in PREFLIGHT_STEPS) + ("tripwire", "crash", "env-drift")

# env = (tp_plan, recompute_every, input_digest): the knobs that change control flow
ENV_OK = ("v1", 1, 0)


def tensor_keys(plan) -> tuple[str, ...]:
    """tensor_specs order (sorted by key): the envelope's tensors for a plan."""
    recompute = plan[0]
    keys = ["conditioning_embeds", "denoising_step_list", "latents"]
    if recompute:
        keys.append("context_frames")
    return tuple(sorted(keys))


def build(params: dict, variant: str | None, backend: str) -> Protocol:
    """The hardened protocol; a planted-bug variant is a named patch on its roles (PATCHES below)."""
    n, chunks = params["ranks"], params["chunks"]
    if n < 2:
        from ..registry import UsageError
        raise UsageError(f"parameter ranks={n}: tp needs at least 2 ranks")
    faults = parse_faults(params["faults"], FAULTS)
    steps_max, heartbeats = params["steps"], params["heartbeats"]

    # ---------------- rank0: the leader ----------------
    L = Role("leader", "START", dict(chunk_index=0, call_id=0, cache_epoch=0, start_frame=0, plan=None, sent=0,
                                     calls=0, red=0, hb=0, emitted=0, dropped=0, adhoc=False),
             doc="rank0: plans each chunk, broadcasts the envelope, takes part in Phase B")

    L.op("parity_handshake", "START", ("IDLE", FAILED), lambda c: all_gather("world", PARITY_SIG, ENV_OK),
         after=parity_check(ENV_KEYS), event="parity")

    def plans(c):
        out = []
        first_in_epoch = c.v.start_frame == 0
        for hard_cut in ((False, True) if c.v.chunk_index > 0 and params["hard_cuts"] else (False,)):
            for recompute in ((False,) if first_in_epoch or hard_cut else (False, True)):
                for steps in range(1, steps_max + 1):
                    out.append((recompute, steps, hard_cut))
        return out

    def phase_a(c):
        c.set(plan=c.choice, call_id=c.v.call_id + 1, sent=0, calls=0, red=0)

    def commit(c):
        # a hard cut takes effect at the commitment point: a chunk dropped in preflight leaves no trace
        if c.v.plan[2]:
            c.set(cache_epoch=c.v.cache_epoch + 1, start_frame=0)

    L.local("phase_a", "IDLE", "PREFLIGHT", why="chunks left, no stop request", guard=lambda c: c.v.chunk_index < chunks and not c.g.stop, choose=plans, do=phase_a,
            event="plan", doc="decide recompute, denoise steps and hard cut for this chunk")
    L.op("heartbeat", "IDLE", "IDLE", lambda c: header(c, Action.NOOP),
         why="heartbeats left in this gap, chunks left, no stop request",
         guard=lambda c: c.v.hb < heartbeats and c.v.chunk_index < chunks and not c.g.stop,
         do=lambda c: c.set(call_id=c.v.call_id + 1, hb=c.v.hb + 1), event="header_sent", doc="NOOP keepalive")
    L.op("shutdown", "IDLE", "DONE", lambda c: header(c, Action.SHUTDOWN),
         why="every chunk served, or a stop request", guard=lambda c: c.v.chunk_index >= chunks or c.g.stop, do=lambda c: c.set(call_id=c.v.call_id + 1), event="header_sent")

    # preflight: every check before the commitment point (anti-stranding rule, docs/domain.md §2.9)
    drop = lambda c: c.set(chunk_index=c.v.chunk_index + 1, dropped=c.v.dropped + 1, hb=0)
    for s in PREFLIGHT_STEPS:
        L.local(f"preflight_fail@{s}", "PREFLIGHT", "IDLE", fault=f"raise@{s}", do=drop, event="preflight_fail",
                doc=f"rank0 raises in preflight step {s}: the chunk is dropped before any byte is sent")
    L.local("preflight_ok", "PREFLIGHT", "HEADER", event="preflight_ok")
    L.op("send_header", "HEADER", "META_SIZE", lambda c: header(c, Action.INFER), do=commit, commit=True, event="header_sent",
         doc="the commitment point: workers now expect the whole envelope")
    L.op("send_meta_size", "META_SIZE", "META_DATA", lambda c: broadcast("world", 0, META_SIZE_SIG))
    L.op("send_meta", "META_DATA", "TENSORS", lambda c: broadcast("world", 0, META_SIG, (c.v.plan, c.v.start_frame)))
    L.op("send_tensor", "TENSORS", "TENSORS", lambda c: broadcast("world", 0, ("float32", tensor_keys(c.v.plan)[c.v.sent])),
         why="tensors left to send", guard=lambda c: c.v.sent < len(tensor_keys(c.v.plan)), after=lambda c, d: c.set(sent=c.v.sent + 1))
    L.local("envelope_sent", "TENSORS", "PHASE_B", why="every tensor sent", guard=lambda c: c.v.sent == len(tensor_keys(c.v.plan)))
    phase_b(L, "PHASE_B", "PHASE_C", planned_calls, params["reduces"])

    def emit(c):
        c.set(chunk_index=c.v.chunk_index + 1, emitted=c.v.emitted + 1, start_frame=c.v.start_frame + 1, hb=0, adhoc=False)
    L.local("emit", "PHASE_C", "IDLE", do=emit, event="chunk_emitted", emit=True, doc="Phase C: decode and emit the chunk")

    # ---------------- workers ----------------
    W = Role("worker", "START", dict(env=ENV_OK, call_id=-1, chunk_index=-1, cache_epoch=0, start_frame=0, plan=None,
                                     got=0, calls=0, red=0, adhoc=False, between=False),
             doc="ranks 1..N-1: receive the envelope, run Phase B", private=True,
             # FRANKEN compares ranks between chunks only: a worker's steps inside a chunk are invisible
             observed=("between",), observed_when={"cache_epoch": _between, "start_frame": _between})
    W.local("load_env", "START", "ENV", event="env", doc="read the per-rank environment")
    W.local("env_drift", "START", "ENV", fault="env-drift", do=drift_to(("v0", 1, 0)),
            doc="a per-rank knob differs from rank0's")
    W.op("parity_handshake", "ENV", ("WAIT_HEADER", FAILED), lambda c: all_gather("world", PARITY_SIG, c.v.env),
         after=parity_check(ENV_KEYS), event="parity")

    def on_header(c, hdr):
        action, call_id, chunk, epoch = hdr
        if call_id <= c.v.call_id or epoch < c.v.cache_epoch:
            c.goto(FAILED)  # ID monotonicity tripwire
            return
        c.set(call_id=call_id, between=action == Action.NOOP)  # a heartbeat keeps the worker between chunks
        if action == Action.SHUTDOWN:
            c.goto("DONE")
        elif action == Action.INFER:
            c.set(chunk_index=chunk, cache_epoch=epoch, got=0, calls=0, red=0, adhoc=False)
            c.goto("META_SIZE")
    W.op("recv_header", "WAIT_HEADER", ("WAIT_HEADER", "META_SIZE", "DONE", FAILED),
         lambda c: broadcast("world", 0, HEADER_SIG), after=on_header, timeout_kind="recovers", timeout=FAILED, event="header_recv",
         doc="wait for the next header; the watchdog guards this wait")
    W.op("recv_meta_size", "META_SIZE", "META_DATA", lambda c: broadcast("world", 0, META_SIZE_SIG))

    def on_meta(c, meta):
        plan, start = meta
        if plan[2]:  # hard cut: the envelope says reset; never inferred locally
            c.set(start_frame=0)
        c.set(plan=plan, start_frame=start)
        if c.v.env[0] == "v0":
            c.goto("PHASE_B")  # a v0 worker builds its own inputs: it expects no tensor broadcasts
    W.op("recv_meta", "META_DATA", ("TENSORS", "PHASE_B"), lambda c: broadcast("world", 0, META_SIG), after=on_meta)
    W.op("recv_tensor", "TENSORS", "TENSORS", lambda c: broadcast("world", 0, ("float32", tensor_keys(c.v.plan)[c.v.got])),
         why="tensors left to receive", guard=lambda c: c.v.got < len(tensor_keys(c.v.plan)), after=lambda c, d: c.set(got=c.v.got + 1))
    W.local("envelope_received", "TENSORS", "PHASE_B", why="every tensor received", guard=lambda c: c.v.got == len(tensor_keys(c.v.plan)))
    phase_b(W, "PHASE_B", "ADVANCE", planned_calls, params["reduces"])
    W.local("advance", "ADVANCE", "WAIT_HEADER", do=lambda c: c.set(start_frame=c.v.start_frame + 1, between=True),
            event="cache_advance")

    # ---------------- rank0's stop-request thread ----------------
    S = Role("stopper", "WAIT", {}, doc="rank0 thread that receives the stop request")
    S.local("request_stop", "WAIT", "DONE", why="the server is up", guard=lambda c: c.g.started, do=lambda c: c.gset(stop=True),
            doc="set the stop flag; the main thread sends SHUTDOWN between chunks")

    draft = PATCHES.apply(variant, Draft({"leader": L, "worker": W, "stopper": S}, params))

    # the stop request may only arrive once the server is up
    L.transitions = [(_started(t) if t.src == "START" else t) for t in L.transitions]

    actors = [ActorDef(0, "main", L), ActorDef(0, "stop", S)] + [ActorDef(r, "main", W) for r in range(1, n)]
    world = Protocol(
        name="tp", groups={"world": Group("world", tuple(range(n)))}, actors=actors,
        shared={"stop": False, "started": False}, params=params, backend=backend, faults=faults,
        max_faults=params["max_faults"], crash_ranks=tuple(range(n)) if "crash" in faults else (),
        phase_groups={"phaseB": frozenset({"world"})},
        invariants=[("FRANKEN", FRANKEN, franken)], variant=variant,
        symmetric=() if draft.breaks_symmetry else tuple(range(2, len(actors))),  # the workers are interchangeable
        monitors=[EMIT_AFTER_COUNT_CHECK])
    return world


# ---------------- the hardened protocol's parts that the patches below reuse ----------------
ENV_KEYS = slice(0, 3)  # the env fields the parity handshake compares: all of them


def header(c, action):
    return broadcast("world", 0, HEADER_SIG, (int(action), c.v.call_id, c.v.chunk_index, c.v.cache_epoch))


def parity_check(keys: slice):
    """The handshake's verdict: every rank's env agrees on ``keys``, else every rank fails fast."""
    def parity_done(c, envs):
        if len({e[keys] for e in envs}) != 1:
            c.goto(FAILED)
    return parity_done


def drift_to(env):
    """The ``env-drift`` fault: this worker's knobs become ``env``."""
    return lambda c: c.set(env=env)


def planned_calls(c) -> int:
    """Generator calls the envelope's plan asks for."""
    return expected_generator_calls(c.v.plan[0], c.v.plan[1])


def counting(plan_of, reduces: int) -> dict[str, dict]:
    """Phase B's call counting for a role that expects ``plan_of(c)`` generator calls: the guards and
    effects of ``generator_all_reduce`` and ``call_count_check`` (a patch re-plans with another plan_of)."""
    def after_reduce(c, _):
        if c.v.red + 1 == reduces:
            c.set(red=0, calls=c.v.calls + 1)
        else:
            c.set(red=c.v.red + 1)

    def count_check(c):
        if c.v.calls != plan_of(c):
            c.goto(FAILED)
    return {"generator_all_reduce": dict(guard=lambda c: c.v.calls < plan_of(c), why="generator calls left", after=after_reduce),
            "call_count_check": dict(guard=lambda c: c.v.calls >= plan_of(c), why="the planned calls made", do=count_check)}


def phase_b(role: Role, src: str, done: str, plan_of, reduces: int) -> None:
    """Every generator call issues ``reduces`` all_reduces; then the observed count is checked."""
    fns = counting(plan_of, reduces)
    role.local("tripwire_fires", src, FAILED, fault="tripwire", why="before the first generator call",
               guard=lambda c: c.v.calls == 0 and c.v.red == 0,
               event="tripwire", doc="a runtime tripwire (input digest, weight fingerprint) fires before Phase B: crash-only")
    role.op("generator_all_reduce", src, src, lambda c: all_reduce("world", HIDDEN_SIG), **fns["generator_all_reduce"],
            phase="phaseB", event="generator_call")
    role.local("call_count_check", src, (done, FAILED), **fns["call_count_check"],
               event="call_count", doc="observed generator calls == expected_generator_calls, else crash")


# ---------------- the planted bugs: named patches on the hardened roles ----------------
PATCHES = Patches()


def _recount(draft: Draft, plan_of) -> None:
    for name, fields in counting(plan_of, draft.params["reduces"]).items():
        draft["worker"].replace(name, **fields)


@PATCHES("fm01-plan-mismatch")
def plan_mismatch(draft: Draft) -> None:
    """No parity handshake; a drifted worker runs the v0 pipeline and decides recompute locally."""
    draft["leader"].replace("parity_handshake", name="skip_handshake", dst="IDLE", op=None, after=None, event=None,
                            doc="no parity handshake")
    draft["worker"].replace("parity_handshake", name="skip_handshake", dst="WAIT_HEADER", op=None, after=None, event=None)

    def v0_calls(c):  # a v0 worker runs its own pipeline, deciding recompute locally each chunk
        if c.v.env[0] == "v0":
            return expected_generator_calls(c.v.start_frame > 0, c.v.plan[1])
        return planned_calls(c)
    _recount(draft, v0_calls)


@PATCHES("fm02-local-recompute")
def local_recompute(draft: Draft) -> None:
    """A drifted worker's recompute interval differs, and it decides recompute from that knob."""
    draft["worker"].replace("env_drift", do=drift_to(("v1", 2, 0)))

    def local_calls(c):  # the worker decides recompute from its own knob, not the envelope bit
        return expected_generator_calls(c.v.start_frame > 0 and c.v.chunk_index % c.v.env[1] == 0, c.v.plan[1])
    _recount(draft, local_calls)


@PATCHES("fm03-conditional-collective")
def conditional_collective(draft: Draft) -> None:
    """A per-rank debug flag the handshake does not compare gates an extra all_gather."""
    L, W = draft["leader"], draft["worker"]
    for role in (L, W):
        role.replace("parity_handshake", after=parity_check(slice(0, 2)))
    W.replace("env_drift", do=drift_to(("v1", 1, 1)))
    with W.insert_before("envelope_received"):
        W.op("debug_digest", "TENSORS", "PHASE_B", lambda c: all_gather("world", DIGEST_SIG, 0),
             guard=lambda c: c.v.got == len(tensor_keys(c.v.plan)) and c.v.env[2] == 1, why="every tensor received, debug flag on",
             doc="planted bug: a debug all_gather behind a per-rank flag")
    W.replace("envelope_received", guard=lambda c: c.v.got == len(tensor_keys(c.v.plan)) and c.v.env[2] == 0,
              why="every tensor received, debug flag off")


@PATCHES("fm04-throw-after-header")
def throw_after_header(draft: Draft) -> None:
    """Meta is pickled after the header is on the wire: the exception escapes mid-envelope."""
    L = draft["leader"]
    L.remove("preflight_fail@pickle")
    with L.insert_after("send_header"):
        L.local("meta_pickle_fails", "META_SIZE", "SERVER_IDLE", fault="raise@pickle", event="exception",
                doc="planted bug: meta is pickled after the header; the exception escapes to the request handler")


@PATCHES("fm07-late-dtype-check")
def late_dtype_check(draft: Draft) -> None:
    """The dtype check runs while the tensors are being sent, after the header."""
    L = draft["leader"]
    L.remove("preflight_fail@dtype")
    with L.insert_after("send_meta"):
        L.local("tensor_dtype_fails", "TENSORS", "SERVER_IDLE", fault="raise@dtype", why="one tensor sent",
                guard=lambda c: c.v.sent == 1,
                event="exception", doc="planted bug: an unsupported dtype is found while sending tensors")


@PATCHES("fm08-adhoc-broadcast")
def adhoc_broadcast(draft: Draft) -> None:
    """An in-block broadcast before the first generator call, whose shape each worker infers itself."""
    steps_max = draft.params["steps"]
    for role, shape in ((draft["leader"], lambda c: ("steps", c.v.plan[1])), (draft["worker"], lambda c: ("steps", steps_max))):
        src = role.transition("generator_all_reduce").src
        with role.insert_before("tripwire_fires"):
            role.op("adhoc_broadcast", src, src, lambda c, shape=shape: broadcast("world", 0, ("float32", shape(c))),
                    guard=lambda c: c.v.calls == 0 and c.v.red == 0 and not c.v.adhoc, why="before the first generator call",
                    phase="phaseB",
                    after=lambda c, d: c.set(adhoc=True),
                    doc="planted bug: an in-block broadcast whose shape the worker infers locally")
        planned = role.transition("generator_all_reduce").guard
        role.replace("generator_all_reduce", guard=lambda c, planned=planned: planned(c) and c.v.adhoc,
                     why="generator calls left, after the ad-hoc broadcast")


@PATCHES("shutdown-race")
def shutdown_race(draft: Draft) -> None:
    """The stop thread broadcasts SHUTDOWN itself instead of setting the flag the main thread reads."""
    draft["stopper"].replace(
        "request_stop", name="broadcast_shutdown", do=None, event="header_sent",
        op=lambda c: broadcast("world", 0, HEADER_SIG, (int(Action.SHUTDOWN), 10**6, -1, 0)),
        doc="planted bug: SHUTDOWN sent from a second thread, without the broadcast lock")


def _started(t):
    """Mark the server as started when rank0 leaves START (wrap the transition's effect)."""
    from dataclasses import replace

    if t.op is None:
        old = t.do
        def do(c, old=old):
            c.gset(started=True)
            if old:
                old(c)
        return replace(t, do=do)
    old_after = t.after
    def after(c, d, old_after=old_after):
        c.gset(started=True)
        if old_after:
            old_after(c, d)
    return replace(t, after=after)


# rank 0 emits a chunk only after its generator-call count check, and runs no generator call between
# the check and the emit.  Run by the checker and by ``lockstep conform`` on recorded runs; its state
# ("checked" while rank 0 is in PHASE_C) is a function of the leader's control state: it adds no states.
EMIT_AFTER_COUNT_CHECK = Monitor(
    "emit_after_count_check", CALL_COUNT, "open",
    {("open", "call_count"): "checked",
     ("open", "chunk_emitted"): Reject("a chunk is emitted before its generator-call count check"),
     ("checked", "chunk_emitted"): "open",
     ("checked", "generator_call"): Reject("a generator call between the count check and the emit")},
    per="rank", roles=("leader",), doc="emit only what the call-count check passed")


def _between(v) -> bool:
    """A worker is between chunks: waiting for its next header after a header (``between``)."""
    return v.between


def franken(world: WorldView) -> str | None:
    """At a chunk boundary (every rank between chunks) all ranks agree on cache_epoch and
    current_start_frame.  A worker is between chunks from its ``advance`` (or a heartbeat) until its
    next header starts a chunk or ends the run, whether or not its receive is posted yet (its
    variables are the same either way); the worker role observes its cache fields only there."""
    seen = {}
    for a in world.actors(thread="main"):
        boundary = (a.role == "leader" and a.state == "IDLE") or (a.role == "worker" and a.alive and a.vars.between)
        if not boundary:
            return None
        seen[a.rank] = (a.vars.cache_epoch, a.vars.start_frame)
    if len(set(seen.values())) > 1:
        return "ranks disagree at a chunk boundary on (cache_epoch, start_frame): " + ", ".join(
            f"rank {r}: {s}" for r, s in sorted(seen.items()))
    return None


SPEC = SpecInfo(
    name="tp",
    description="TP v1.1 broadcast envelopes: rank0 leads, N-1 workers run Phase B in lockstep",
    params={
        "ranks": Param(2, "world size (rank0 + ranks-1 workers)", min=2, max=64),
        "chunks": Param(2, "chunks rank0 serves before SHUTDOWN", min=1),
        "steps": Param(2, "maximum denoise steps a plan may choose (1..steps)", min=1),
        "reduces": Param(1, "all_reduces per generator call", min=1),
        "heartbeats": Param(1, "NOOP heartbeats rank0 may send in each idle gap", min=0),
        "hard_cuts": Param(True, "whether Phase A may choose a hard cut"),
        "faults": Param("all", "enabled faults: all, none, or a comma list of " + ", ".join(FAULTS)),
        "max_faults": Param(1, "injected faults per run", min=0),
    },
    variants={
        "fm01-plan-mismatch": Variant("ranks run different plans (v0 vs v1), no parity handshake", (COLLECTIVE_MISMATCH, DEADLOCK)),
        "fm02-local-recompute": Variant("workers decide recompute from a per-rank knob instead of the envelope bit",
                                        (COLLECTIVE_MISMATCH, DEADLOCK)),
        "fm03-conditional-collective": Variant("a debug all_gather behind a per-rank flag the handshake does not cover",
                                               (DEADLOCK, COLLECTIVE_MISMATCH)),
        "fm04-throw-after-header": Variant("meta is serialized after the header is sent; the exception escapes", (STRANDED,)),
        "fm07-late-dtype-check": Variant("an unsupported dtype is found while sending tensors, after the header", (STRANDED,)),
        "fm08-adhoc-broadcast": Variant("a worker infers a tensor shape locally for an in-block broadcast", (COLLECTIVE_MISMATCH,)),
        "shutdown-race": Variant("SHUTDOWN broadcast from a second thread while an INFER broadcast is under way",
                                 (COLLECTIVE_MISMATCH, DEADLOCK)),
    },
    build=build,
)
