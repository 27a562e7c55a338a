"""TP v1.1 control plane: rank0 broadcasts envelopes on the world group and takes part in Phase B;
generator-only workers receive and run Phase B.  The worker loop is also the PP1 mesh worker
(same wire format on mesh_pg, leader = group-rank 0)."""
from __future__ import annotations

import time

import torch

from lockstep.tracefmt import schema as S
from lockstep.spec import contract as C

from . import faults
from .envelope import assemble, bare_header, decode_meta, describe_tensors, preflight
from .errors import Ids, PreflightError, RequestFailed, TerminalAction, TripwireError, ValidationFailure
from .mesh import Ctx, check_received, mesh_step
from .stage0 import ChunkAccount, Emitter, Planner
from .wire import bcast_header, bcast_payload, bcast_recv_header, bcast_recv_payload, bcast_send

SHUTDOWN_LINGER_S = 0.2  # let the terminal header drain out of the socket before os._exit


def accept_ids(ctx: Ctx, tracker: C.IdTracker, ids: Ids, action: C.Action, group: str) -> None:
    try:
        tracker.accept(ids.call_id, ids.chunk_index, ids.cache_epoch, int(action))
    except C.IdOrderError as e:
        ctx.trace.emit(S.TRIPWIRE, kind="id_order", message=str(e), field=e.field)
        raise TripwireError(str(e), wire="id_order", rank=ctx.rank, group=group, ids=ids) from None


def worker_loop(ctx: Ctx, group: str) -> None:
    """Receive headers on ``group`` (src = group-rank 0) until SHUTDOWN or ERROR."""
    comm, dev = ctx.comm, ctx.world.device
    tracker = C.IdTracker()
    while True:
        ctx.arm()
        action, ids = bcast_recv_header(comm, group, dev)
        ctx.saw_header(ids, action)
        ctx.record_for(ids.chunk_index)
        accept_ids(ctx, tracker, ids, action, group)
        if action == C.Action.NOOP:
            continue
        if action == C.Action.SHUTDOWN:
            return
        if action == C.Action.ERROR:
            raise TerminalAction(f"terminal ERROR header on {group} (call_id {ids.call_id}) from the leader: stop", rank=ctx.rank, group=group, ids=ids)
        msg = bcast_recv_payload(comm, group, "envelope", ids, dev)
        faults.after_receive(ctx.cfg, ctx.rank, msg, ctx.trace)
        try:
            check_received(ctx, msg, ids, group)
        except ValidationFailure as e:
            ctx.trace.emit(S.VALIDATION_FAIL, where="worker", field=e.field, message=e.bare, **ids.as_dict())
            raise
        mesh_step(ctx, msg)


def tp_rank0(ctx: Ctx) -> None:
    cfg, comm, trace, dev = ctx.cfg, ctx.comm, ctx.trace, ctx.world.device
    group = "world"
    planner = Planner(cfg)
    emitter = Emitter(cfg, trace, ctx.run_dir)
    account = ChunkAccount(cfg.chunks, trace)

    def send_bare(action: C.Action) -> None:
        ids = Ids(planner.call_id(), -1, planner.epoch)
        comm.ids.call_id, comm.ids.chunk_index, comm.ids.cache_epoch = ids.call_id, ids.chunk_index, ids.cache_epoch
        bcast_header(comm, group, bare_header(action, ids.call_id, -1, ids.cache_epoch, dev), action, ids)

    def idle(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if cfg.heartbeat_s <= 0:
                time.sleep(end - time.monotonic())
                break
            time.sleep(min(cfg.heartbeat_s, max(0.0, end - time.monotonic())))
            send_bare(C.Action.NOOP)

    reason = "aborted"
    try:
        for k in range(cfg.chunks):
            if k == cfg.hard_cut_at and k > 0:
                old = planner.hard_cut()
                trace.emit(S.HARD_CUT, old_epoch=old, new_epoch=planner.epoch, drained=0)
            ctx.record_for(k)
            t_a0 = time.time()
            msg = planner.plan(k)
            faults.mutate_envelope(cfg, msg, trace)
            ids = msg.ids
            comm.ids.call_id, comm.ids.chunk_index, comm.ids.cache_epoch = ids.call_id, ids.chunk_index, ids.cache_epoch
            if cfg.unsafe == "fm04-throw-after-header":
                prep = _unsafe_header_then_preflight(ctx, planner, msg, group, account)
                if prep is None:
                    continue
            else:
                try:
                    prep = preflight(msg, dev, ids=ids, rank=ctx.rank, group=group)
                except PreflightError as e:
                    trace.emit(S.PREFLIGHT_FAIL, what="envelope", step=e.step, field=e.field, message=e.bare,
                               **ids.as_dict())
                    account.drop(k, f"preflight_fail:{e.step}:{e.field}", message=e.bare)
                    continue
                trace.emit(S.PREFLIGHT_OK, what="envelope", **ids.as_dict(), **prep.summary())
                bcast_send(comm, group, prep)
                planner.commit(msg)
            t_a1 = time.time()
            meta, _ = decode_meta(bytes(prep.meta_bytes.cpu().numpy().tobytes()), "envelope", ids=ids,
                                  rank=ctx.rank, group=group)
            local = assemble("envelope", meta, prep.specs, prep.tensors)
            check_received(ctx, local, ids, group)
            out, observed, tb_ms = mesh_step(ctx, local)
            t_recv = time.time()
            emitter.decode(out)
            planner.observe(local.meta, out)
            emitter.emit(ids, out, tA0=t_a0, tA1=t_a1, tRecv=t_recv, tEmit=time.time(), tB_ms=round(tb_ms, 3),
                         observed_generator_calls=observed)
            account.emitted(k)
            faults.rank0_after_emit(cfg, k, trace, idle)
            if cfg.idle_s > 0:
                idle(cfg.idle_s)
        reason = "not_attempted"
        send_bare(C.Action.SHUTDOWN)
        time.sleep(SHUTDOWN_LINGER_S)
    except BaseException as e:
        reason = f"aborted: {getattr(e, 'kind', type(e).__name__)}"
        raise
    finally:
        account.finish(reason)


def _unsafe_header_then_preflight(ctx: Ctx, planner: Planner, msg, group: str, account: ChunkAccount):
    """fm04-throw-after-header: only the contract check runs before the commitment point; the
    meta serialization runs after the header broadcast.  A failure then is a failed request: rank0
    stays alive and issues nothing further (raised as RequestFailed, held by the rank runner)."""
    ids, dev, trace = msg.ids, ctx.world.device, ctx.trace
    try:
        C.validate_envelope(msg.meta, C.sort_tensor_specs(describe_tensors(msg.tensors)))
    except C.ContractError as e:
        trace.emit(S.PREFLIGHT_FAIL, what="envelope", step="validate", field=e.field, message=str(e), **ids.as_dict())
        account.drop(ids.chunk_index, f"preflight_fail:validate:{e.field}")
        return None
    header = torch.tensor(msg.header_values(), dtype=torch.int64, device=dev)
    bcast_header(ctx.comm, group, header, C.Action.INFER, ids)  # commitment point
    planner.commit(msg)
    try:
        prep = preflight(msg, dev, ids=ids, rank=ctx.rank, group=group)
    except PreflightError as e:
        trace.emit(S.PREFLIGHT_FAIL, what="envelope", step=e.step, field=e.field, message=e.bare, **ids.as_dict(),
                   after_header=True)
        trace.emit(S.REQUEST_FAILED, message=str(e), **ids.as_dict())
        account.drop(ids.chunk_index, f"request_failed:{e.step}:{e.field}")
        raise RequestFailed(f"{e.bare} (after the INFER header: unsafe fm04-throw-after-header)", rank=ctx.rank,
                            group=group, ids=ids) from None
    bcast_payload(ctx.comm, group, prep)
    return prep
