"""PP0 and PP1 control planes.

Rank0 (Stage 0) plans envelopes, preflights them and hands them to the comms thread; it accepts
results by the contract's acceptance rules (epoch fence, duplicates, ahead-of-expectation),
decodes and emits.  The head of Stage 1 -- PP0's single stage-1 rank or PP1's mesh leader --
receives the WHOLE envelope over p2p and validates it before any mesh_pg collective; the PP1
leader then re-preflights it and broadcasts it on mesh_pg (TP v1.1 framing), runs Phase B with
the workers and sends the result back.  A leader that rejects an envelope broadcasts the terminal
ERROR instead of the INFER header, sends an ok=False result and exits.
"""
from __future__ import annotations

import time
from collections import deque

import torch

from lockstep.tracefmt import schema as S
from lockstep.spec import contract as C

from . import faults
from .envelope import Message, Prepared, bare_header, preflight, validate_received
from .errors import (CommError, Ids, LockstepError, MeshError, PreflightError, RequestFailed, TerminalAction,
                     TripwireError, ValidationFailure)
from .mesh import Ctx, check_received, mesh_step
from .overlap import CommsFailure, CommsThread, Received
from .stage0 import ChunkAccount, Emitter, Planner
from .tp import SHUTDOWN_LINGER_S, accept_ids
from .wire import (TAG_RESULT_HEADER, bcast_header, bcast_payload, bcast_send, p2p_post, p2p_recv_header, p2p_recv_payload,
                   p2p_send_bare_header)

WORLD = "world"
MESH = "mesh"


def bare_prepared(action: C.Action, ids: Ids, device) -> Prepared:
    meta = {"envelope_version": C.ENVELOPE_VERSION, "action": int(action), **ids.as_dict()}
    return Prepared(Message("envelope", meta), bare_header(action, ids.call_id, ids.chunk_index, ids.cache_epoch, device),
                    torch.empty(0, dtype=torch.uint8), [], [])


# ---------------------------------------------------------------- rank0 (Stage 0)
def stage0(ctx: Ctx) -> None:
    cfg, comm, trace, dev = ctx.cfg, ctx.comm, ctx.trace, ctx.world.device
    leader = cfg.mesh_ranks[0]
    planner = Planner(cfg)
    emitter = Emitter(cfg, trace, ctx.run_dir)
    account = ChunkAccount(cfg.chunks, trace)
    ct = CommsThread(comm, WORLD, leader, cfg.d_in, cfg.d_out, trace)
    ct.start()
    outstanding: deque = deque()  # (envelope, tA0, tA1), oldest first
    fence = cfg.unsafe != "om09-no-epoch-fence"
    stats = {"max_ready": 0}

    def set_ids(ids: Ids) -> None:
        comm.ids.call_id, comm.ids.chunk_index, comm.ids.cache_epoch = ids.call_id, ids.chunk_index, ids.cache_epoch

    def take() -> None:
        stats["max_ready"] = max(stats["max_ready"], ct.recv_q.qsize())
        item = ct.recv_q.get()
        if isinstance(item, CommsFailure):
            raise item.error
        rec: Received = item
        sent, t_a0, t_a1 = outstanding.popleft()
        k = sent.meta["chunk_index"]
        res = rec.msg
        try:
            validate_received(res, rank=ctx.rank, group=WORLD)
        except ValidationFailure as e:
            trace.emit(S.VALIDATION_FAIL, where="rank0", field=e.field, message=e.bare, **sent.ids.as_dict())
            raise
        m = res.meta
        rids = Ids(m["call_id"], m["chunk_index"], m["cache_epoch"])
        if not m["ok"]:
            trace.emit(S.RESULT_DROPPED, reason="error_result", **rids.as_dict(), error=m.get("error_message", ""))
            account.drop(k, "mesh_error", error=m.get("error_message", ""))
            raise MeshError(f"ok=False result from the mesh: {m.get('error_message', '')}", rank=ctx.rank, group=WORLD,
                            ids=rids)
        ok, reason = C.accept_result(current_epoch=planner.epoch, expected_call_id=sent.meta["call_id"],
                                     expected_chunk_index=k, call_id=rids.call_id, chunk_index=rids.chunk_index,
                                     cache_epoch=rids.cache_epoch, epoch_fence=fence)
        if not ok:
            trace.emit(S.RESULT_DROPPED, reason=reason, **rids.as_dict(), current_epoch=planner.epoch,
                       dropped_result_epoch=rids.cache_epoch)
            if reason == "stale_epoch":
                account.drop(k, "stale_epoch", result_epoch=rids.cache_epoch, current_epoch=planner.epoch)
                return
            raise TripwireError(f"result {reason}: got {rids.as_dict()}, expected call_id {sent.meta['call_id']} "
                                f"chunk_index {k}", wire="result_ids", rank=ctx.rank, group=WORLD, ids=rids)
        trace.emit(S.RESULT_ACCEPTED, **rids.as_dict(), current_epoch=planner.epoch)
        exp = sent.meta["expected_generator_calls"]
        if m["observed_generator_calls"] != exp:
            trace.emit(S.TRIPWIRE, kind="call_count", message=f"observed {m['observed_generator_calls']} != {exp}")
            raise TripwireError(f"observed_generator_calls {m['observed_generator_calls']} != expected {exp}",
                                wire="call_count", rank=ctx.rank, group=WORLD, ids=rids)
        out = res.tensors["latents_out"]
        if tuple(out.shape) != tuple(sent.tensors["latents"].shape) or not bool(torch.isfinite(out).all()):
            raise TripwireError(f"latents_out shape {tuple(out.shape)} or values invalid", wire="result_tensor",
                                rank=ctx.rank, group=WORLD, ids=rids)
        emitter.decode(out)
        if rids.cache_epoch == planner.epoch:
            planner.observe(sent.meta, out)
        emitter.emit(rids, out, tA0=t_a0, tA1=t_a1, tSend=rec.t_send, tRecv=rec.t_recv, tEmit=time.time(),
                     tB_ms=m.get("tB_ms"), t_mesh_idle_ms=m.get("t_mesh_idle_ms"),
                     inflight=len(outstanding), ready=ct.recv_q.qsize(),
                     stale=rids.cache_epoch != planner.epoch, current_epoch=planner.epoch)
        account.emitted(k)
        faults.rank0_after_emit(cfg, k, trace, idle)
        if cfg.idle_s > 0 and k < cfg.chunks - 1:
            idle(cfg.idle_s)

    def idle(seconds: float) -> None:
        while outstanding:
            take()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if cfg.heartbeat_s <= 0:
                time.sleep(end - time.monotonic())
                break
            time.sleep(min(cfg.heartbeat_s, max(0.0, end - time.monotonic())))
            ids = Ids(planner.call_id(), -1, planner.epoch)
            ct.send_q.put(bare_prepared(C.Action.NOOP, ids, dev))

    reason = "aborted"
    try:
        k, cut_done = 0, False
        while k < cfg.chunks or outstanding:
            if k < cfg.chunks:
                if k == cfg.hard_cut_at and k > 0 and not cut_done:
                    cut_done = True
                    old = planner.hard_cut()
                    trace.emit(S.HARD_CUT, old_epoch=old, new_epoch=planner.epoch, drained=len(outstanding))
                    while outstanding:  # never skip a receive: drain, the fence drops them
                        take()
                    continue
                fill = len(outstanding) < cfg.d_in and not (planner.needs_outputs(k) and outstanding)
                if cfg.unsafe == "o02-send-after-decode":
                    fill = fill and not outstanding
                if fill:
                    ctx.record_for(k)
                    t_a0 = time.time()
                    msg = planner.plan(k)
                    faults.mutate_envelope(cfg, msg, trace)
                    set_ids(msg.ids)
                    try:
                        prep = preflight(msg, dev, ids=msg.ids, rank=ctx.rank, group=WORLD)
                    except PreflightError as e:
                        trace.emit(S.PREFLIGHT_FAIL, what="envelope", step=e.step, field=e.field, message=e.bare,
                                   **msg.ids.as_dict())
                        account.drop(k, f"preflight_fail:{e.step}:{e.field}", message=e.bare)
                        k += 1
                        continue
                    trace.emit(S.PREFLIGHT_OK, what="envelope", **msg.ids.as_dict(), **prep.summary())
                    ct.send_q.put(prep)
                    planner.commit(msg)
                    outstanding.append((msg, t_a0, time.time()))
                    k += 1
                    continue
            take()
        reason = "not_attempted"
        if not ct.stop(timeout=max(5.0, cfg.dist_timeout_s)):
            raise CommError("comms thread did not join: poisoned, no further dist calls", rank=ctx.rank, group=WORLD,
                            ids=comm.ids)
        ids = Ids(planner.call_id(), -1, planner.epoch)
        set_ids(ids)
        p2p_send_bare_header(comm, WORLD, leader, bare_header(C.Action.SHUTDOWN, ids.call_id, -1, ids.cache_epoch, dev),
                             C.Action.SHUTDOWN, ids)
        time.sleep(SHUTDOWN_LINGER_S)
        trace.emit(S.MARK, note="overlap_stats", max_inflight=ct.max_inflight, max_ready=stats["max_ready"],
                   d_in=cfg.d_in, d_out=cfg.d_out)
    except BaseException as e:
        reason = f"aborted: {getattr(e, 'kind', type(e).__name__)}"
        raise
    finally:
        account.finish(reason)


# ---------------------------------------------------------------- Stage-1 head (PP0 rank1 / PP1 leader)
def _result_meta(ids: Ids, ok: bool, **kw) -> dict:
    return {"result_version": C.RESULT_VERSION, **ids.as_dict(), "ok": ok, **kw}


def send_error_result(ctx: Ctx, ids: Ids, message: str) -> None:
    """Best effort: tell rank0 why (it is waiting for this result)."""
    msg = Message("result", _result_meta(ids, False, observed_generator_calls=0,
                                         mesh_current_start_frame=ctx.gen.next_start_frame if ctx.gen else -1,
                                         error_message=message[:2000]))
    try:
        prep = preflight(msg, ctx.world.device, ids=ids, rank=ctx.rank, group=WORLD)
        p2p_post(ctx.comm, WORLD, 0, prep, result=True, blocking=True)
        ctx.trace.emit(S.RESULT_SENT, ok=False, **ids.as_dict(), error=message[:500])
    except Exception as e:  # noqa: BLE001 - best effort on an already failing path
        ctx.trace.emit(S.MARK, note=f"error result not delivered: {e}")


def pp_head(ctx: Ctx) -> None:
    cfg, comm, trace, dev = ctx.cfg, ctx.comm, ctx.trace, ctx.world.device
    pp1 = cfg.topology == "pp1"
    where = "leader" if pp1 else "stage1"
    tracker = C.IdTracker()
    last_tb1: float | None = None

    def relay(action: C.Action, ids: Ids) -> None:
        if pp1:
            bcast_header(comm, MESH, bare_header(action, ids.call_id, ids.chunk_index, ids.cache_epoch, dev), action, ids)

    while True:
        ctx.arm()
        try:
            action, ids = p2p_recv_header(comm, WORLD, 0, dev, result=False)
        except CommError:
            if pp1:  # rank0 is gone: release the mesh with a terminal action (OM-13)
                term = Ids(tracker.last_call_id + 1, -1, max(tracker.last_cache_epoch, 0))
                try:
                    relay(C.Action.ERROR, term)
                    time.sleep(SHUTDOWN_LINGER_S)
                except LockstepError:
                    pass
            raise
        ctx.saw_header(ids, action)
        ctx.record_for(ids.chunk_index)
        accept_ids(ctx, tracker, ids, action, WORLD)
        if action == C.Action.NOOP:
            relay(C.Action.NOOP, ids)
            continue
        if action == C.Action.SHUTDOWN:
            relay(C.Action.SHUTDOWN, ids)
            time.sleep(SHUTDOWN_LINGER_S)
            return
        if action == C.Action.ERROR:
            relay(C.Action.ERROR, ids)
            raise TerminalAction("terminal ERROR from rank0", rank=ctx.rank, group=WORLD, ids=ids)
        msg = p2p_recv_payload(comm, WORLD, 0, "envelope", ids, dev)
        tb0 = time.perf_counter()
        idle_ms = (tb0 - last_tb1) * 1e3 if last_tb1 is not None else 0.0
        unsafe_early = pp1 and cfg.unsafe == "om07-leader-throws"
        if unsafe_early:  # the planted bug: commit the mesh before validating
            bcast_header(comm, MESH, torch.tensor(msg.header_values(), dtype=torch.int64, device=dev), C.Action.INFER, ids)
        try:
            check_received(ctx, msg, ids, WORLD)
            prep = preflight(msg, dev, ids=ids, rank=ctx.rank, group=MESH) if pp1 else None
        except (ValidationFailure, PreflightError) as e:
            fld = getattr(e, "field", "?")
            trace.emit(S.VALIDATION_FAIL, where=where, field=fld, message=e.bare, **ids.as_dict())
            if unsafe_early:
                send_error_result(ctx, ids, str(e))
                trace.emit(S.REQUEST_FAILED, message=str(e), **ids.as_dict())
                raise RequestFailed(f"{e.bare} (after the mesh INFER header: unsafe om07-leader-throws)",
                                    rank=ctx.rank, group=MESH, ids=ids) from None
            relay(C.Action.ERROR, ids)  # terminal action instead of the INFER broadcast
            send_error_result(ctx, ids, str(e))
            time.sleep(SHUTDOWN_LINGER_S)
            raise
        if pp1:
            trace.emit(S.PREFLIGHT_OK, what="mesh_envelope", **ids.as_dict(), **prep.summary())
            if unsafe_early:
                bcast_payload(comm, MESH, prep)
            else:
                bcast_send(comm, MESH, prep)
        try:
            out, observed, tb_ms = mesh_step(ctx, msg)
        except LockstepError as e:  # after the commitment point: poisoned; tell rank0, then exit
            send_error_result(ctx, ids, str(e))
            raise
        faults.result_delay(cfg, ids.chunk_index, trace)
        res = Message("result", _result_meta(ids, True, observed_generator_calls=observed,
                                             mesh_current_start_frame=ctx.gen.next_start_frame,
                                             tB_ms=round((time.perf_counter() - tb0) * 1e3, 3),
                                             t_mesh_idle_ms=round(idle_ms, 3)),
                      {"latents_out": out})
        rprep = preflight(res, dev, ids=ids, rank=ctx.rank, group=WORLD)
        trace.emit(S.PREFLIGHT_OK, what="result", **ids.as_dict(), **rprep.summary())
        if cfg.unsafe == "result-throw-after-header" and ids.chunk_index == cfg.fault_at:  # the planted bug
            comm.send(rprep.header, 0, WORLD, TAG_RESULT_HEADER, "result_header", msg_ids=ids)
            trace.emit(S.REQUEST_FAILED, message="the result send failed after its header", **ids.as_dict())
            raise RequestFailed("the result send failed after its header (unsafe result-throw-after-header)",
                                rank=ctx.rank, group=WORLD, ids=ids)
        p2p_post(comm, WORLD, 0, rprep, result=True, blocking=True)
        trace.emit(S.RESULT_SENT, ok=True, **ids.as_dict(), observed_generator_calls=observed)
        last_tb1 = time.perf_counter()
