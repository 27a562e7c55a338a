"""PP0 and PP1: rank0 outside the mesh, envelopes and results point-to-point, overlap queues.

World: rank0 (Stage 0: a main thread that plans, decodes and emits, and a comms thread that owns
every ``dist`` call after startup), the leader (global rank 1, mesh group-rank 0) and, in PP1, mesh
workers (global ranks 2..mesh).  PP0 is the same protocol with a mesh of one: Stage 1 runs Phase B
locally, with no collectives.

Startup, every rank, in the same order: ``new_group(mesh)`` (a store-based barrier over all ranks,
members or not), the parity handshake, ``all_reduce(load_ok)`` and a barrier, all on world_pg.

Per chunk: rank0's main thread plans (Phase A), preflights and puts the envelope on D_in; the comms
thread sends header (the commitment point), meta and tensors to the leader and receives the result
(its own header first, then ``latents_out`` when ok) into D_out; the main thread drains D_out before
it fills D_in, applies the acceptance rules (contract.accept_result: cache_epoch, call_id,
chunk_index) and emits or drops.  The leader receives and validates the whole envelope before any
mesh_pg collective, then broadcasts it on mesh_pg; every mesh rank applies the KV lifecycle
(kv.apply: the same functions as the ``kv`` spec) and runs its generator calls, each an all_reduce on
mesh_pg; the observed call count is checked; the leader preflights the result before its header.

Choices written down (docs/domain.md §10 leaves them open):
- §10.1 the result path gets the anti-stranding treatment: a result header (ok, IDs, observed calls)
  precedes ``latents_out``, and the leader preflights the result before that header.  A failed result
  preflight sends ``ok=False`` and the leader goes on.
- §10.2 ERROR is a terminal action (envelope version 1): a leader that rejects an envelope broadcasts
  ERROR on mesh_pg (workers exit), sends ``ok=False`` to rank0 and exits.
- §10.4 no ``pp_pg``: p2p runs on world_pg.
- §10.5 rank0's result receive is timed (irecv polling): after ``patience`` empty polls it gives up
  and exits (crash-only).  The leader and the workers guard their header waits with a watchdog; a
  leader whose watchdog fires broadcasts ERROR before exiting.  NOOP keepalives are relayed by the leader.
- §6.5 rank0 treats ``ok=False`` as fatal: it exits (crash-only); it never retries into broken state.
- hard cut under overlap (§5.4): rank0 stops enqueuing, flushes D_in (those chunks are reported as
  dropped), bumps cache_epoch, and submits the ``init_cache`` envelope; results of envelopes already
  sent are still received and dropped by the epoch fence, never emitted.
- mesh ranks are worker loops: an exception there kills the process; rank0 is a server.

Faults (at most ``max_faults`` per run): ``raise@preflight`` (rank0 raises in preflight: the chunk is
dropped), ``missing-override`` (rank0 plans recompute without context frames; the contract rejects it
in preflight), ``reject@leader`` (the envelope fails the leader's validation), ``raise@result`` (the
leader's result preflight fails), ``tripwire`` (a mesh rank's runtime tripwire fires before Phase B:
OM-06/08/11/12 in the real system), ``crash`` (any rank dies), ``hang`` (rank0 or the leader wedges).

Liveness: every envelope rank0 handed to its comms thread ends in an emitted result, an explicit
drop, or rank0's fast failure (weak fairness; see README).
"""
from __future__ import annotations

from typing import NamedTuple

from ...model.api import CALL_COUNT, COLLECTIVE_MISMATCH, DEADLOCK, FRANKEN, LIVENESS, STALE_EMIT, STRANDED
from ..contract import Action, accept_result, expected_generator_calls
from ..fabric import Group, all_gather, all_reduce, barrier, broadcast, recv, send
from ..machine import FAILED, ActorDef, Protocol, Role, parse_faults
from ..patch import Draft, Patches
from ..registry import Param, UsageError, Variant
from ..view import WorldView
from . import kv as KVL

FAULTS = ("raise@preflight", "missing-override", "reject@leader", "raise@result", "tripwire", "env-drift", "crash", "hang")
TAG_HEADER, TAG_META, TAG_TENSORS, TAG_RESULT, TAG_LATENTS = 1, 2, 3, 4, 5
HEADER_SIG = ("int64", (5,))
META_SIG = ("uint8", "meta")
RESULT_SIG = ("int64", "result-header")
LATENTS_SIG = ("bfloat16", "latents_out")
HIDDEN_SIG = ("float32", "hidden")
MESH_HEADER_SIG = ("int64", (5,))


class Envelope(NamedTuple):
    action: int
    call_id: int
    chunk_index: int
    cache_epoch: int
    start_frame: int
    init_cache: bool
    recompute: bool
    context: object  # "rank0" | "latent" | None
    expected_calls: int

    def tensors(self) -> tuple[str, ...]:
        keys = ["conditioning_embeds", "denoising_step_list", "latents"]
        if self.context == "rank0":
            keys.append("context_frames")
        return tuple(sorted(keys))

    def lifecycle(self) -> KVL.Env:
        return KVL.Env(self.call_id, self.cache_epoch, self.start_frame, self.init_cache, False, 0, self.recompute,
                       self.context)


class ResultMsg(NamedTuple):
    ok: bool
    call_id: int
    chunk_index: int
    cache_epoch: int
    observed_calls: int


def _noop(call_id: int) -> Envelope:
    return Envelope(int(Action.NOOP), call_id, -1, -1, 0, False, False, None, 0)


SENTINEL = "stop"


def contract_ok(env: Envelope, mode: str) -> bool:
    """The envelope contract's recompute rule: context_frames iff recompute under R0a."""
    if env.recompute and mode == "R0a":
        return env.context == "rank0"
    return True


def build_pp(params: dict, variant: str | None, backend: str, mesh: int, name: str) -> Protocol:
    """The hardened protocol; a planted-bug variant is a named patch on its roles (PATCHES below)."""
    chunks, depth, cuts_max = params["chunks"], params["depth"], params["hard_cuts"]
    mode, keepalives, patience = params["recompute"], params["keepalives"], params["patience"]
    if not 1 <= depth <= 3:
        raise UsageError(f"parameter depth={depth}: expected 1..3 (the bounded D_in/D_out queues)")
    faults = parse_faults(params["faults"], FAULTS)
    pp1 = mesh >= 2
    leader = LEADER
    world_ranks = tuple(range(mesh + 1))
    mesh_ranks = tuple(range(1, mesh + 1))

    def startup(role: Role, first: str, then: str, watch: bool = False):
        """new_group(mesh) on every rank (a store barrier), parity, load_ok, barrier — same order everywhere."""
        role.local("load_env", first, "ENV", event="env", doc="read the knobs that change control flow")
        role.local("env_drift", first, "ENV", fault="env-drift", do=lambda c: c.set(knob=1),
                   doc="a per-rank knob differs (OM-04, OM-05, C-01): the parity handshake must catch it")
        if not pp1:
            role.local("no_groups", "ENV", "PARITY", doc="PP0 has no mesh group to create")
        else:
            role.op("new_group_mesh", "ENV", "PARITY", lambda c: barrier("store"), event="new_group", timeout_kind="recovers", timeout=FAILED,
                    doc="new_group is collective over the default group: members and non-members call it")
        # startup runs under a deadline (monitored_barrier / init timeout): a missing rank fails it fast
        def parity(c, envs):
            if len(set(envs)) != 1:
                c.goto(FAILED)  # the per-rank diff is printed and every rank exits before the first chunk
        role.op("parity_handshake", "PARITY", ("LOAD_OK", FAILED), lambda c: all_gather("world", ("int64", "parity"), c.v.knob),
                after=parity, event="parity", timeout_kind="recovers", timeout=FAILED)
        role.op("all_reduce_load_ok", "LOAD_OK", "BARRIER", lambda c: all_reduce("world", ("float32", (1,)), 1), timeout_kind="recovers", timeout=FAILED)
        role.op("startup_barrier", "BARRIER", then, lambda c: barrier("world"), timeout_kind="recovers", timeout=FAILED,
                after=(lambda c, d: c.gset(started=True)) if watch else None, writes=("started",) if watch else None)

    # ---------------------------------------------------------------- rank0 main thread
    M = Role("stage0", "START", dict(knob=0, next_chunk=0, call_id=0, cache_epoch=0, start_frame=0, cuts=0, env=None, needs_init=True,
                                     outstanding=(), emitted=0, dropped=0, stale_dropped=0),
             ids=("call_id", "cache_epoch"), doc="rank0 main thread: Phase A, preflight, D_in; drains D_out, accepts, emits",
             hang_points=("RUN", "JOIN", "ABORT"), shares=(), observed=("outstanding",))  # footprints: per transition below
    startup(M, "START", "RUN", watch=True)

    def plans(c):
        return (False,) if mode == "R1" or c.v.needs_init else (False, True)

    def phase_a(c):
        rec = c.choice
        context = None if not rec else ("latent" if mode == "R0" else "rank0")
        env = Envelope(int(Action.INFER), c.v.call_id + 1, c.v.next_chunk, c.v.cache_epoch, c.v.start_frame, c.v.needs_init,
                       rec, context, expected_generator_calls(rec, 1))
        c.set(env=env, call_id=env.call_id)

    def hard_cut(c):
        # §5.4: stop enqueuing, flush the unsent envelopes (dropped), bump the epoch; the results of envelopes
        # already sent are still received, and dropped by the epoch fence, before the init_cache envelope goes
        flushed = [e for e in c.g.d_in if e != SENTINEL]
        c.gset(d_in=())
        c.set(cache_epoch=c.v.cache_epoch + 1, start_frame=0, cuts=c.v.cuts + 1, needs_init=True,
              outstanding=tuple(o for o in c.v.outstanding if o not in flushed), dropped=c.v.dropped + len(flushed))
    M.local("hard_cut", "RUN", "RUN", why="a reset request may come: after the first chunk, cuts left, none pending", guard=lambda c: 0 < c.v.next_chunk < chunks and c.v.cuts < cuts_max and not c.v.needs_init,
            do=hard_cut, event="hard_cut", doc="a reset request: flush D_in, bump cache_epoch; in-flight results drain stale",
            writes=("d_in",))

    room = lambda c: len(c.g.d_in) < depth
    # drain-before-fill: never plan while a result waits in D_out, never block on a full D_in
    plan_guard = lambda c: (c.v.next_chunk < chunks and not c.g.d_out and room(c)
                            and not (c.v.needs_init and c.v.outstanding))  # the cut envelope waits for the drain
    M.local("phase_a", "RUN", "PREFLIGHT", why="chunks left, D_out drained, room in D_in, no cut envelope waiting for the drain", guard=plan_guard, choose=plans, do=phase_a, event="plan",
            doc="plan the chunk (recompute? hard cut?) and materialize the envelope", reads=("d_in", "d_out"))

    def drop_chunk(c):
        c.set(next_chunk=c.v.next_chunk + 1, dropped=c.v.dropped + 1, start_frame=c.v.env.start_frame)
    M.local("preflight_fail", "PREFLIGHT", "RUN", fault="raise@preflight", do=drop_chunk, event="preflight_fail",
            doc="preflight raises before the commitment point: the chunk is dropped, nothing was sent")
    if mode == "R0a":
        M.local("lose_override", "PREFLIGHT", "PREFLIGHT", fault="missing-override",
                guard=lambda c: c.v.env.recompute and c.v.env.context == "rank0",
                do=lambda c: c.set(env=c.v.env._replace(context=None)),
                doc="recompute is planned but no context_frames were built")
    M.local("preflight_rejects", "PREFLIGHT", "RUN", why="the envelope breaks the context_frames contract", guard=lambda c: not contract_ok(c.v.env, mode),
            do=drop_chunk, event="preflight_fail", doc="contract: context_frames required iff recompute (R0a)")

    def enqueue(c):
        e = c.v.env
        c.gset(d_in=c.g.d_in + (e,))
        c.set(next_chunk=c.v.next_chunk + 1, start_frame=e.start_frame + 1, outstanding=c.v.outstanding + (e,), needs_init=False)
    M.local("preflight_ok_enqueue", "PREFLIGHT", "RUN", why="room in D_in, the envelope within the contract", guard=lambda c: room(c) and contract_ok(c.v.env, mode),
            do=enqueue, event="preflight_ok", doc="hand the envelope to the comms thread (blocks while D_in is full)",
            writes=("d_in",))

    M.local("drain_result", "RUN", ("RUN", "ABORT"), why="a result in D_out", guard=lambda c: bool(c.g.d_out), do=acceptor(), check=_emit_properties, emit=True,
            event="result", doc="drain D_out first; accept (emit) or drop by the acceptance rules", writes=("d_out", "abort"))
    M.local("abort_exit", "ABORT", FAILED, why="the comms thread stopped", guard=lambda c: c.g.comms_done, event="exit",
            doc="the comms thread has stopped between messages: os._exit(2)", reads=("comms_done",))
    M.local("finish", "RUN", "JOIN", why="every chunk planned, every result drained", guard=lambda c: c.v.next_chunk >= chunks and not c.v.outstanding and not c.g.d_out,
            do=lambda c: c.gset(d_in=c.g.d_in + (SENTINEL,)), doc="stop the comms thread: push the sentinel",
            reads=("d_out",), writes=("d_in",))
    M.op("send_shutdown", "JOIN", "DONE", lambda c: send("world", leader, HEADER_SIG, _shutdown(c.v.call_id + 1), TAG_HEADER),
         why="the comms thread stopped", guard=lambda c: c.g.comms_done, do=lambda c: c.set(call_id=c.v.call_id + 1), event="header_sent", timeout_kind="recovers", timeout=FAILED,
         doc="after the comms thread joined, the main thread sends SHUTDOWN", reads=("comms_done",))

    # ---------------------------------------------------------------- rank0 comms thread
    C = Role("comms", "WAIT_START", dict(env=None, res=None, polls=0, ka=0, last_call=0),
             ids=(), doc="rank0 comms thread: the single owner of the transport after startup",
             hang_points=("WAIT_START", "IDLE", "RECV_RESULT", "POLL", "PUT"), shares=())
    C.local("start", "WAIT_START", "IDLE", why="startup done", guard=lambda c: c.g.started, reads=("started",))

    def take(c):
        e = c.g.d_in[0]
        c.gset(d_in=c.g.d_in[1:])
        if e == SENTINEL:
            c.gset(comms_done=True)
            c.goto("DONE")
            return
        c.set(env=e, polls=0, ka=0, last_call=e.call_id)
    C.local("take_envelope", "IDLE", ("SEND_HEADER", "DONE"), why="an envelope in D_in, no abort", guard=lambda c: bool(c.g.d_in) and not c.g.abort, do=take,
            reads=("abort",), writes=("d_in", "comms_done"))
    stop = lambda c: c.gset(comms_done=True)
    C.local("stop_on_abort", "IDLE", "DONE", why="rank0 aborts", guard=lambda c: c.g.abort, do=stop, doc="the main thread aborts: stop between messages",
            reads=("abort",), writes=("comms_done",))
    C.op("keepalive", "IDLE", "IDLE", lambda c: send("world", leader, HEADER_SIG, _noop(0), TAG_HEADER),
         why="D_in empty, keepalives left, no abort", guard=lambda c: not c.g.d_in and c.v.ka < keepalives and not c.g.abort, do=lambda c: c.set(ka=c.v.ka + 1), event="header_sent", timeout_kind="recovers", timeout=FAILED,
         doc="NOOP keepalive while idle", reads=("d_in", "abort"))
    C.op("send_header", "SEND_HEADER", "SEND_META", lambda c: send("world", leader, HEADER_SIG, c.v.env, TAG_HEADER),
         commit=True, event="header_sent", timeout_kind="recovers", timeout=FAILED,
         doc="the commitment point: the leader now expects meta and tensors; rank0's watchdog guards this wait")
    C.op("send_meta", "SEND_META", "SEND_TENSORS", lambda c: send("world", leader, META_SIG, c.v.env.tensors(), TAG_META))
    C.op("send_tensors", "SEND_TENSORS", "RECV_RESULT",
         lambda c: send("world", leader, ("tensors",) + c.v.env.tensors(), None, TAG_TENSORS))

    def got_result(c, res):
        c.set(res=res)
        if res.ok:
            c.goto("RECV_LATENTS")
        else:
            c.goto("PUT")
    C.op("recv_result_header", "RECV_RESULT", ("RECV_LATENTS", "PUT"), lambda c: recv("world", leader, RESULT_SIG, TAG_RESULT),
         after=got_result, timeout_kind="recovers", timeout="POLL", event="result_recv", doc="timed receive (irecv polling)")
    C.local("poll_again", "POLL", "RECV_RESULT", why="polls left", guard=lambda c: c.v.polls < patience,
            do=lambda c: c.set(polls=c.v.polls + 1))
    C.local("give_up", "POLL", FAILED, why="patience used up", guard=lambda c: c.v.polls >= patience,
            doc="SCOPE_PP_WATCHDOG_S expired: crash-only exit")
    C.op("recv_latents", "RECV_LATENTS", "PUT", lambda c: recv("world", leader, LATENTS_SIG, TAG_LATENTS))
    C.local("put_result", "PUT", "IDLE", why="room in D_out, no abort", guard=lambda c: len(c.g.d_out) < depth and not c.g.abort,
            do=lambda c: c.gset(d_out=c.g.d_out + (c.v.res,)), doc="blocks while D_out is full", reads=("abort",), writes=("d_out",))
    C.local("discard_on_abort", "PUT", "DONE", why="rank0 aborts", guard=lambda c: c.g.abort, do=stop, reads=("abort",), writes=("comms_done",))

    # ---------------------------------------------------------------- the leader (mesh group-rank 0)
    Ld = Role("leader", "START", dict(knob=0, env=None, kv=KVL.KV(), call_id=-1, chunk_index=-1, cache_epoch=-1, calls=0, tensors=None,
                                      settled=False),
              doc="global rank 1, mesh group-rank 0: receives and validates the envelope, broadcasts it on mesh_pg",
              hang_points=("WAIT_HEADER", "RESULT_PREFLIGHT"), private=True, **OBSERVED_KV)
    startup(Ld, "START", "WAIT_HEADER")
    watchdog = "WATCHDOG"
    guard_exit = "WATCHDOG" if pp1 else FAILED  # a wait at a message start under the leader's watchdog

    def on_header(c, env):
        if env.action == Action.SHUTDOWN:
            c.goto("RELAY_SHUTDOWN" if pp1 else "DONE")
        elif env.action == Action.NOOP:
            c.goto("RELAY_NOOP" if pp1 else "WAIT_HEADER")
        else:
            if env.call_id <= c.v.call_id or env.cache_epoch < c.v.cache_epoch:
                c.goto(FAILED)  # ID monotonicity tripwire
                return
            c.set(env=env, call_id=env.call_id, chunk_index=env.chunk_index, cache_epoch=env.cache_epoch, calls=0,
                  settled=False)
            c.goto("RECV_META")
    Ld.op("recv_header", "WAIT_HEADER", ("RECV_META", "RELAY_NOOP", "RELAY_SHUTDOWN", "DONE", "WAIT_HEADER", FAILED),
          lambda c: recv("world", 0, HEADER_SIG, TAG_HEADER), after=on_header, timeout_kind="recovers", timeout=watchdog, event="header_recv",
          on_error=watchdog if pp1 else FAILED,
          doc="wait for rank0's next header; the watchdog guards this wait")
    if not pp1:
        Ld.local("watchdog_exit", "WATCHDOG", FAILED)
    else:
        Ld.op("watchdog_error", "WATCHDOG", FAILED, lambda c: broadcast("mesh", 0, MESH_HEADER_SIG, (int(Action.ERROR), -1)),
              timeout_kind="recovers", timeout=FAILED, event="header_sent", doc="rank0 went silent: tell the mesh to exit, then exit")
        Ld.op("relay_noop", "RELAY_NOOP", "WAIT_HEADER", lambda c: broadcast("mesh", 0, MESH_HEADER_SIG, (int(Action.NOOP), -1)),
              timeout_kind="recovers", timeout=FAILED, event="header_sent", doc="keepalive relay keeps the workers' watchdogs quiet")
        Ld.op("relay_shutdown", "RELAY_SHUTDOWN", "DONE",
              lambda c: broadcast("mesh", 0, MESH_HEADER_SIG, (int(Action.SHUTDOWN), -1)), timeout_kind="recovers", timeout=FAILED, event="header_sent")
    Ld.op("recv_meta", "RECV_META", "RECV_TENSORS", lambda c: recv("world", 0, META_SIG, TAG_META))
    Ld.op("recv_tensors", "RECV_TENSORS", "VALIDATE",
          lambda c: recv("world", 0, ("tensors",) + c.v.env.tensors(), TAG_TENSORS))

    # validation of the whole envelope, before any mesh_pg collective (docs/domain.md §3.6 step 4)
    Ld.local("validate_ok", "VALIDATE", "MESH_HEADER" if pp1 else "PHASE_B",
             why="the envelope within the contract", guard=lambda c: contract_ok(c.v.env, mode), event="validate_ok")
    Ld.local("validation_fails", "VALIDATE", "REJECT", fault="reject@leader", event="validation_fail",
             doc="the envelope passed rank0's checks but the leader rejects it (e.g. pp_disable_vace=False)")
    Ld.local("validation_rejects", "VALIDATE", "REJECT", why="the envelope breaks the contract", guard=lambda c: not contract_ok(c.v.env, mode),
             event="validation_fail", doc="context_frames missing although recompute is planned")
    reject_result = lambda c: send("world", 0, RESULT_SIG, ResultMsg(False, c.v.call_id, c.v.chunk_index, c.v.cache_epoch, 0),
                                   TAG_RESULT)
    if pp1:
        Ld.op("broadcast_error", "REJECT", "REJECT_REPLY", lambda c: broadcast("mesh", 0, MESH_HEADER_SIG, (int(Action.ERROR), -1)),
              timeout_kind="recovers", timeout=FAILED, event="header_sent", doc="terminal ERROR so the workers exit instead of stranding")
        Ld.op("reject_reply", "REJECT_REPLY", FAILED, reject_result, event="result_sent", timeout_kind="recovers", timeout=FAILED)
    else:
        Ld.op("reject_reply", "REJECT", FAILED, reject_result, event="result_sent", timeout_kind="recovers", timeout=FAILED)

    if pp1:
        Ld.op("mesh_header", "MESH_HEADER", "MESH_META",
              lambda c: broadcast("mesh", 0, MESH_HEADER_SIG, (int(Action.INFER), c.v.call_id)), commit=True,
              timeout_kind="recovers", timeout=FAILED, event="header_sent", doc="the mesh commitment point")
        Ld.op("mesh_meta", "MESH_META", "MESH_TENSORS", lambda c: broadcast("mesh", 0, META_SIG, c.v.env))
        Ld.op("mesh_tensors", "MESH_TENSORS", "PHASE_B",
              lambda c: broadcast("mesh", 0, ("tensors",) + c.v.env.tensors()))

    def phase_b(role: Role, src: str, dst: str):
        """Apply the lifecycle (kv.apply), then the generator calls, then the observed-count check."""
        role.local("apply_lifecycle", src, "GENERATE", do=lifecycle(params["ring"]), event="cache_advance",
                   doc="the KV lifecycle step of the kv spec, driven only by the envelope")
        role.local("tripwire_fires", src, tripwire_exit(role), fault="tripwire", event="tripwire",
                   doc="a runtime tripwire (input digest, weight fingerprint, group check) fires before Phase B: crash-only")
        fns = counting(planned_calls)
        if pp1:
            role.op("generator_all_reduce", "GENERATE", "GENERATE", lambda c: all_reduce("mesh", HIDDEN_SIG),
                    **fns["generator"], after=lambda c, d: c.set(calls=c.v.calls + 1, settled=True), phase="phaseB",
                    event="generator_call", doc="each generator call all_reduces on mesh_pg")
        else:
            role.local("generator_call", "GENERATE", "GENERATE", **fns["generator"],
                       do=lambda c: c.set(calls=c.v.calls + 1), event="generator_call", doc="Stage 1 runs the generator locally")
        role.local("call_count_check", "GENERATE", (dst, FAILED), **fns["call_count_check"], event="call_count")

    def tripwire_exit(role: Role) -> str:
        # never a mesh broadcast after the mesh commitment point: the workers are already in Phase B and a
        # terminal ERROR would pair with their first all_reduce (the checker finds exactly that).  The leader
        # only reports the failure to rank0, which is waiting for this chunk's result, then exits.
        return "TRIP_REPLY" if role.name == "leader" else FAILED

    phase_b(Ld, "PHASE_B", "RESULT_PREFLIGHT")
    Ld.op("reject_reply", "TRIP_REPLY", FAILED, reject_result, event="result_sent", timeout_kind="recovers", timeout=FAILED,
          doc="the tripwire's ok=False result to rank0 (it waits for this chunk's result), then exit")
    result_msg = lambda c: ResultMsg(True, c.v.call_id, c.v.chunk_index, c.v.cache_epoch, c.v.calls)
    Ld.op("result_preflight_fails", "RESULT_PREFLIGHT", "WAIT_HEADER", reject_result, fault="raise@result",
          event="result_sent", timeout_kind="recovers", timeout=guard_exit, doc="the result fails its preflight: an ok=False result, before any result byte")
    Ld.local("result_preflight_ok", "RESULT_PREFLIGHT", "SEND_RESULT")
    Ld.op("send_result_header", "SEND_RESULT", "SEND_LATENTS", lambda c: send("world", 0, RESULT_SIG, result_msg(c), TAG_RESULT),
          commit=True, event="result_sent", timeout_kind="recovers", timeout=guard_exit, doc="the result's commitment point")
    Ld.op("send_latents", "SEND_LATENTS", "WAIT_HEADER", lambda c: send("world", 0, LATENTS_SIG, None, TAG_LATENTS))

    # ---------------------------------------------------------------- mesh workers
    W = Role("worker", "START", dict(knob=0, env=None, kv=KVL.KV(), call_id=-1, chunk_index=-1, cache_epoch=-1, calls=0, oob=False,
                                     settled=False),
             doc="mesh ranks 2..: receive the leader's broadcast, run Phase B on mesh_pg", private=True, **OBSERVED_KV)
    startup(W, "START", "WAIT_HEADER")

    def w_header(c, msg):
        action = msg[0]
        if action in (Action.SHUTDOWN, Action.ERROR):
            c.goto("DONE")
        elif action == Action.INFER:
            c.set(settled=False)
            c.goto("MESH_META")
    W.op("recv_mesh_header", "WAIT_HEADER", ("WAIT_HEADER", "MESH_META", "DONE"),
         lambda c: broadcast("mesh", 0, MESH_HEADER_SIG), after=w_header,
         timeout_kind="recovers", timeout=FAILED, event="header_recv",
         doc="wait for the leader's next header; the watchdog guards this wait")

    def w_meta(c, env):
        c.set(env=env, call_id=env.call_id, chunk_index=env.chunk_index, cache_epoch=env.cache_epoch)
    W.op("recv_mesh_meta", "MESH_META", "MESH_TENSORS", lambda c: broadcast("mesh", 0, META_SIG), after=w_meta)
    W.op("recv_mesh_tensors", "MESH_TENSORS", "PHASE_B", lambda c: broadcast("mesh", 0, ("tensors",) + c.v.env.tensors()))
    phase_b(W, "PHASE_B", "WAIT_HEADER")

    actors = [ActorDef(0, "main", M), ActorDef(0, "comms", C), ActorDef(leader, "main", Ld)]
    actors += [ActorDef(r, "main", W) for r in range(2, mesh + 1)]
    draft = PATCHES.apply(variant, Draft({"stage0": M, "comms": C, "leader": Ld, "worker": W}, params, actors))
    actors = draft.actors
    groups = {"world": Group("world", world_ranks), "store": Group("store", world_ranks)}
    if pp1:
        groups["mesh"] = Group("mesh", mesh_ranks)
    invariants = [("FRANKEN", FRANKEN, _franken)] if pp1 else []
    return Protocol(
        name=name, groups=groups, actors=actors,
        shared=dict(d_in=(), d_out=(), started=False, comms_done=False, abort=False),
        params=params, backend=backend, faults=faults, max_faults=params["max_faults"],
        crash_ranks=world_ranks if "crash" in faults else (), hang_ranks=(0, leader) if "hang" in faults else (),
        phase_groups={"phaseB": frozenset({"mesh"})} if pp1 else {}, invariants=invariants, pending_fn=_pending, variant=variant,
        # mesh workers are interchangeable unless a planted bug singles one out by rank
        symmetric=() if draft.breaks_symmetry else tuple(i for i, a in enumerate(actors) if a.role.name == "worker"))


def _shutdown(call_id: int) -> Envelope:
    return Envelope(int(Action.SHUTDOWN), call_id, -1, -1, 0, False, False, None, 0)


def planned_calls(c) -> int:
    """Generator calls the envelope plans."""
    return c.v.env.expected_calls


def counting(plan_of, count_check: bool = True) -> dict[str, dict]:
    """Phase B's call counting for ranks that expect ``plan_of(c)`` generator calls: the guard of the
    generator call and the guard and effect of ``call_count_check`` (a patch re-plans with another
    plan_of, or drops the count check)."""
    def count(c):
        if c.v.calls != c.v.env.expected_calls and count_check:
            c.goto(FAILED)
    return {"generator": dict(guard=lambda c: c.v.calls < plan_of(c), why="generator calls left"),
            "call_count_check": dict(guard=lambda c: c.v.calls >= plan_of(c), why="the planned calls made", do=count)}


def lifecycle(ring: int, own_start=None):
    """``apply_lifecycle``: the kv spec's lifecycle step on the envelope; ``own_start(c)`` (a planted
    bug) returns a start frame the rank derives itself, or None to use the envelope's."""
    def start(c):
        c.set(kv=KVL.apply(c.v.kv, c.v.env.lifecycle(), lambda: c.rank, ring, own_start(c) if own_start else None), calls=0)
    return start


def acceptor(epoch_fence: bool = True, count_check: bool = True):
    """rank0's acceptance of the result at the head of D_out (``drain_result``): the rules of
    contract.accept_result, with the epoch fence and the call-count tripwire unless a patch drops them."""
    def accept(c):
        res, rest = c.g.d_out[0], c.g.d_out[1:]
        c.gset(d_out=rest)

        def fatal():
            # crash-only, but never mid-message: stop the comms thread first, then exit (§6.2)
            c.gset(abort=True)
            c.goto("ABORT")
        if not c.v.outstanding or not res.ok:
            return fatal()  # ok=False (or a result nobody asked for) is fatal
        head = c.v.outstanding[0]
        ok, reason = accept_result(current_epoch=c.v.cache_epoch, expected_call_id=head.call_id,
                                   expected_chunk_index=head.chunk_index, call_id=res.call_id, chunk_index=res.chunk_index,
                                   cache_epoch=res.cache_epoch, epoch_fence=epoch_fence)
        if reason == "ahead_of_expectation" or (not ok and reason == "duplicate"):
            return fatal()
        c.set(outstanding=c.v.outstanding[1:])
        if not ok:
            c.set(stale_dropped=c.v.stale_dropped + 1, dropped=c.v.dropped + 1)
            return
        if res.observed_calls != head.expected_calls and count_check:
            return fatal()  # call-count tripwire
        c.set(emitted=c.v.emitted + 1)
        c.scratch = (res, head, c.v.cache_epoch)
    return accept


def _emit_properties(c):
    """Observer checks on rank0's acceptance step (properties, not behaviour): an emitted result is
    from the current cache_epoch, and its observed generator calls match the plan."""
    if c.scratch is None:
        return
    res, head, epoch = c.scratch
    if res.cache_epoch != epoch:
        c.violate(STALE_EMIT, f"rank0 emits chunk {res.chunk_index} (call_id {res.call_id}) from cache_epoch "
                              f"{res.cache_epoch} while the current epoch is {epoch}")
    elif res.observed_calls != head.expected_calls:
        c.violate(CALL_COUNT, f"rank0 emits chunk {res.chunk_index} computed with {res.observed_calls} generator calls; "
                              f"the envelope planned {head.expected_calls}")


# FRANKEN compares a mesh rank's cache once it has settled for the chunk: from the chunk's first
# generator all_reduce (its apply is done, and every mesh rank's, in a run without faults) until its
# next header starts another chunk.  The rank's steps inside a chunk (the apply, the count check)
# are then invisible to the partial-order reduction: a settled cache changes only through a planted
# bug, and that change is seen.
OBSERVED_KV = dict(observed=("settled",), observed_when={"kv": lambda v: v.settled})


def _franken(world: WorldView) -> str | None:
    kvs = {a.rank: a.vars.kv for a in world.actors(role=("leader", "worker")) if a.alive and a.vars.settled}
    return KVL.franken_check(kvs)


def _pending(world: WorldView) -> bool:
    """An envelope rank0 handed to its comms thread is still open and rank0 is alive."""
    main, comms = world.actor(0, "main"), world.actor(0, "comms")
    if not main.alive or not comms.alive:  # FAILED, DEAD or HUNG: the process kept no variables
        return False
    return bool(main.vars.outstanding)


# ---------------------------------------------------------------- the planted bugs: named patches
PATCHES = Patches()
LEADER = 1  # global rank of the leader (mesh group-rank 0)


@PATCHES("om09-no-epoch-fence")
def no_epoch_fence(draft: Draft) -> None:
    """rank0 accepts results without comparing their cache_epoch with the current one."""
    draft["stage0"].replace("drain_result", do=acceptor(epoch_fence=False))


@PATCHES("om13-no-watchdog")
def no_watchdog(draft: Draft) -> None:
    """No watchdog anywhere: rank0's result receive, the leader's and the workers' header waits are untimed."""
    C, Ld = draft["comms"], draft["leader"]
    C.replace("recv_result_header", timeout=None)
    C.remove("poll_again", "give_up")
    Ld.replace("recv_header", timeout=None, on_error=FAILED)
    Ld.remove("watchdog_error" if "watchdog_error" in Ld else "watchdog_exit")
    draft["worker"].replace("recv_mesh_header", timeout=None)


@PATCHES("result-throw-after-header")
def result_throw_after_header(draft: Draft) -> None:
    """The leader serializes the result after its header is sent; the exception kills it mid-message."""
    Ld = draft["leader"]
    Ld.remove("result_preflight_fails")
    with Ld.insert_after("send_result_header"):
        Ld.local("latents_serialize_fails", "SEND_LATENTS", FAILED, fault="raise@result",
                 doc="planted bug: the result is serialized after its header; the exception kills the leader")


@PATCHES("queue-no-drain")
def queue_no_drain(draft: Draft) -> None:
    """The main thread plans whenever chunks remain: it blocks on a full D_in without draining D_out."""
    chunks = draft.params["chunks"]
    draft["stage0"].replace("phase_a", guard=lambda c: c.v.next_chunk < chunks, why="chunks left")


@PATCHES("second-transport-caller")
def second_transport_caller(draft: Draft) -> None:
    """A debug endpoint on rank0 calls the transport while the comms thread owns it."""
    D = Role("debug", "WAIT", {}, ids=(), doc="a debug endpoint on rank0 that calls the transport directly")
    D.op("debug_send_envelope", "WAIT", "DONE",
         lambda c: send("world", LEADER, HEADER_SIG, Envelope(int(Action.INFER), 10**6, 10**6, 0, 0, False, False, None, 1), TAG_HEADER),
         guard=lambda c: c.g.started, doc="planted bug: sends an envelope header while the comms thread owns the transport")
    draft.roles["debug"] = D
    draft.actors.append(ActorDef(0, "debug", D))


@PATCHES("retry-forever")
def retry_forever(draft: Draft) -> None:
    """rank0's result receive polls again for ever instead of giving up after ``patience`` polls."""
    C = draft["comms"]
    C.replace("poll_again", guard=None, do=None, doc="planted bug: retries the receive for ever, never gives up")
    C.remove("give_up")


@PATCHES("pp0-local-recompute")
def local_recompute(draft: Draft) -> None:
    """Stage 1 decides recompute from its own state instead of the envelope bit, and nobody checks the count."""
    def local_calls(c):  # planted bug: Stage 1 decides recompute from its own knob instead of the envelope bit
        return expected_generator_calls(c.v.env.start_frame > 0, 1)
    fns = counting(local_calls, count_check=False)
    for role in (draft["leader"], draft["worker"]):
        role.replace("generator_all_reduce" if "generator_all_reduce" in role else "generator_call", **fns["generator"])
        role.replace("call_count_check", **fns["call_count_check"])
    draft["stage0"].replace("drain_result", do=acceptor(count_check=False))


@PATCHES("om07-leader-throws")
def leader_throws(draft: Draft) -> None:
    """The pre-fix leader: it starts the mesh broadcast before validating, and on a rejection reports to
    rank0 and exits without a terminal ERROR for the workers."""
    Ld = draft["leader"]
    Ld.replace("recv_tensors", dst="MESH_HEADER")
    Ld.replace("mesh_header", dst="VALIDATE")
    Ld.replace("validate_ok", dst="MESH_META")
    Ld.remove("broadcast_error")
    Ld.replace(("reject_reply", "REJECT_REPLY"), src="REJECT",
               doc="planted bug: the mesh broadcast has already started; the workers are left mid-envelope")


@PATCHES("om08-wrong-group")
def wrong_group(draft: Draft) -> None:
    """The leader's first Phase-B all_reduce of each chunk goes to world_pg instead of mesh_pg."""
    draft["leader"].replace("generator_all_reduce",
                            op=lambda c: all_reduce("world" if c.v.calls == 0 else "mesh", HIDDEN_SIG))


@PATCHES("om10-missing-override", breaks_symmetry=True)
def missing_override(draft: Draft) -> None:
    """Neither rank0's preflight nor the leader's validation checks the context_frames contract."""
    depth = draft.params["depth"]
    M, Ld = draft["stage0"], draft["leader"]
    M.remove("preflight_rejects")
    M.replace("preflight_ok_enqueue", guard=lambda c: len(c.g.d_in) < depth, why="room in D_in")
    Ld.remove("validation_rejects")
    Ld.replace("validate_ok", guard=None)


@PATCHES("reset-drift", breaks_symmetry=True)
def reset_drift(draft: Draft) -> None:
    """The last mesh rank clears its cache once, between chunks, through a rank-local endpoint."""
    mesh = draft.params.get("mesh", 1)
    draft["worker"].local("out_of_band_reset", "WAIT_HEADER", "WAIT_HEADER",
                          guard=lambda c: c.rank == mesh and not c.v.oob and c.v.kv.applied > 0,
                          do=lambda c: c.set(oob=True, kv=c.v.kv._replace(phase=KVL.EPOCH_START, global_end=0, local_end=0,
                                                                           valid_from=c.v.kv.start_frame)),
                          doc="planted bug: a rank-local endpoint clears this rank's cache outside the envelope")


@PATCHES("start-frame-drift", breaks_symmetry=True)
def start_frame_drift(draft: Draft) -> None:
    """The last mesh rank advances current_start_frame itself, ignoring the envelope's (and its hard cuts)."""
    mesh = draft.params.get("mesh", 1)
    own = lambda c: c.v.kv.start_frame if c.rank == mesh else None  # the last mesh rank derives its own start frame
    for role in (draft["leader"], draft["worker"]):
        role.replace("apply_lifecycle", do=lifecycle(draft.params["ring"], own))


@PATCHES("nonmember-skips-new-group")
def nonmember_skips_new_group(draft: Draft) -> None:
    """rank0, outside mesh_pg, skips new_group(mesh), which is collective over the default group."""
    draft["stage0"].replace("new_group_mesh", name="skip_new_group", op=None, event=None, timeout_kind=None, timeout=None,
                            doc="planted bug: a non-member skips new_group(mesh)")


def pp_params(mesh_default: int | None) -> dict[str, Param]:
    p = {}
    if mesh_default is not None:
        p["mesh"] = Param(mesh_default, "mesh size (leader + mesh-1 workers); world = mesh + 1", min=1, max=63)
    p.update({
        "chunks": Param(3, "chunks rank0 serves before SHUTDOWN", min=1),
        "depth": Param(2, "D: capacity of D_in and D_out (1..3)", min=1, max=3),
        "hard_cuts": Param(1, "hard cuts rank0 may make after the first chunk", min=0),
        "recompute": Param("R0a", "recompute mode", choices=("R1", "R0a", "R0")),
        "keepalives": Param(1, "NOOP keepalives the comms thread may send per idle gap", min=0),
        "patience": Param(1, "empty polls of the result receive before rank0 gives up", min=0),
        "ring": Param(2, "KV ring size in frames", min=1),
        "faults": Param("all", "enabled faults: all, none, or a comma list of " + ", ".join(FAULTS)),
        "max_faults": Param(1, "injected faults per run", min=0),
    })
    return p


COMMON_VARIANTS = {
    "om09-no-epoch-fence": Variant("rank0 accepts results without the cache_epoch check", (STALE_EMIT,)),
    "om13-no-watchdog": Variant("rank0 wedges while the mesh idles and nobody watches", (STRANDED,), params={"faults": "hang"}),
    "result-throw-after-header": Variant("the leader's result send throws after its header; the leader process dies",
                                         (STRANDED,), params={"faults": "raise@result"}, backend="nccl"),
    "queue-no-drain": Variant("the main thread fills D_in without draining D_out", (DEADLOCK,),
                              params={"depth": 1, "chunks": 4, "faults": "none"}),
    "second-transport-caller": Variant("a debug endpoint sends an envelope while the comms thread owns the transport",
                                       (COLLECTIVE_MISMATCH, STRANDED)),
    "retry-forever": Variant("rank0's result receive retries for ever instead of giving up", (LIVENESS,),
                             params={"faults": "hang"}),
}
