"""One rank from start to exit: world setup, startup tripwires, role dispatch, and an exit event
that says how the rank ended (clean, exception + message, timeout).  Returns the exit code."""
from __future__ import annotations

import json
import os
import pickle
import signal
import threading
import time
import traceback

import torch

from lockstep.tracefmt import schema as S

from . import faults, tripwires
from .comm import Comm
from .config import RunConfig
from .errors import CommError, Ids, LockstepError, PeerTimeout, RequestFailed, is_timeout_message
from .generator import Generator
from .mesh import Ctx
from .watchdog import Watchdog
from .world import (ROLE_LEADER, ROLE_MESH_WORKER, ROLE_STAGE0, ROLE_STAGE1, ROLE_TP_RANK0, ROLE_TP_WORKER,
                    init_world, role_of, tp_group_name)

EXIT_CLEAN, EXIT_EXCEPTION, EXIT_TIMEOUT, EXIT_INTERRUPTED = 0, 2, 3, 130
READY_KEY = "lockstep/mesh_ready"
FAILED_KEY = "lockstep/mesh_failed"


def _store():
    import torch.distributed as dist
    return dist.distributed_c10d._get_default_store()
REQUEST_FAILED_HOLD_MARGIN_S = 1.5


def startup(ctx: Ctx) -> None:
    cfg, comm, trace, world = ctx.cfg, ctx.comm, ctx.trace, ctx.world
    tripwires.parity_handshake(comm, cfg, tripwires.parity_values(cfg))
    if world.is_mesh_member:
        g = ctx.tp_group
        ar = (lambda t, purpose: comm.fc_all_reduce(t, g, purpose)) if g else None
        gen = Generator(cfg.model, tp_rank=world.mesh_rank if g else 0, tp_size=cfg.tp_degree if g else 1,
                        all_reduce=ar, device=world.device, compile_backend=cfg.compile)
        gen.debug_graph_break = faults.graph_break_rank(cfg, world.rank)
        ctx.gen = gen
        if cfg.compile:
            t0 = time.perf_counter()
            with comm.phase_b(g):
                calls = gen.warmup()
            first, last = comm.note_compiled_collectives(g, gen.collectives_per_call * calls) if g else (0, 0)
            trace.emit(S.STARTUP_STEP, name="warmup", seconds=round(time.perf_counter() - t0, 3),
                       seq_first=first, seq_last=last, backend=cfg.compile, calls=calls)
            if g:
                tripwires.compile_health(comm, g)
            if world.mesh_rank == 0 and world.rank != 0:
                _store().set(READY_KEY, str(world.rank))  # READY: the mesh finished its warmup
        if cfg.fingerprint_every > 0 and g:
            ctx.baseline = tripwires.fingerprint_baseline(comm, g, gen.W)
    elif cfg.compile:
        # Outside the mesh (PP rank0): wait for READY on the store, not in a collective bounded by
        # the short PG timeout, while the mesh compiles (docs/domain.md §3.2 step 7, §10.15).
        t0 = time.perf_counter()
        store = _store()
        while not store.check([READY_KEY]):
            if store.check([FAILED_KEY]):
                raise LockstepError(f"the mesh failed during warmup: {store.get(FAILED_KEY).decode()}",
                                    rank=world.rank, group="world")
            if time.perf_counter() - t0 > cfg.warmup_timeout_s:
                raise PeerTimeout(f"no READY from the mesh within warmup_timeout_s={cfg.warmup_timeout_s}",
                                  rank=world.rank, group="world")
            time.sleep(0.05)
        trace.emit(S.STARTUP_STEP, name="mesh_ready", waited_s=round(time.perf_counter() - t0, 3))
    ok = torch.ones(1, device=world.device)
    comm.all_reduce(ok, "world", "load_ok")
    if int(ok.item()) != cfg.world:
        raise LockstepError(f"load_ok sum {int(ok.item())} != world {cfg.world}", rank=world.rank, group="world")
    trace.emit(S.STARTUP_STEP, name="ready")


def dispatch(ctx: Ctx) -> None:
    from . import pp, tp
    role = ctx.world.role
    if role == ROLE_TP_RANK0:
        tp.tp_rank0(ctx)
    elif role == ROLE_TP_WORKER:
        tp.worker_loop(ctx, "world")
    elif role == ROLE_STAGE0:
        pp.stage0(ctx)
    elif role in (ROLE_STAGE1, ROLE_LEADER):
        pp.pp_head(ctx)
    elif role == ROLE_MESH_WORKER:
        tp.worker_loop(ctx, "mesh")
    else:  # pragma: no cover
        raise ValueError(f"unknown role {role}")


class Interrupted(BaseException):
    """SIGTERM/SIGINT/SIGHUP reached this rank (the launcher forwards an interrupt, or torchrun stops its
    workers).  A BaseException so that no ``except Exception`` in the protocol code swallows it."""


def _install_interrupt_handlers(trace: S.TraceWriter) -> None:
    """The first interrupt signal raises :class:`Interrupted` in the main thread, which records an
    interrupted ``rank_exit``; later ones are ignored (the launcher SIGKILLs after a grace period).
    The exception goes through *trace*, which holds it while the main thread writes a line."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum, frame):
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        trace.interrupt(Interrupted(f"{signal.Signals(signum).name} received"))

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


def _classify(e: BaseException) -> str:
    if isinstance(e, Interrupted):
        return "interrupted"
    if isinstance(e, PeerTimeout) or (isinstance(e, CommError) and e.timeout):
        return "timeout"
    if isinstance(e, RuntimeError) and not isinstance(e, LockstepError) and is_timeout_message(str(e)):
        return "timeout"
    return "exception"


def _run_id(run_dir: str | None) -> str | None:
    """The run id the launcher wrote into the manifest (None without a run directory)."""
    if not run_dir:
        return None
    try:
        with open(os.path.join(run_dir, S.MANIFEST_NAME), encoding="utf-8") as f:
            rid = json.load(f).get("run_id")
        return rid if isinstance(rid, str) else None
    except (OSError, ValueError):
        return None


def dump_flight_recorder(fr_dir: str, ctx: Ctx | None, rank: int, *, run_id: str | None = None,
                         backend: str = "gloo", world: int | None = None, trace_path: str | None = None,
                         interrupted: bool = False) -> None:
    """Flight Recorder dump (pickle, our own process's bytes) named ``lockstep_fr_rank_<N>`` (the
    <prefix><rank> form PyTorch's fr_trace analyzer reads), carrying the run id, rank and world size,
    with pg_config rebuilt from dist.get_process_group_ranks (gloo leaves it empty or partial).  On
    NCCL the entries are only returned by ``_dump_nccl_trace`` (``_dump_fr_trace`` comes back empty)."""
    try:
        import torch.distributed as dist
        from ..tracefmt.plain import loads_plain
        from .launch import fr_dump_name

        c10d = torch._C._distributed_c10d
        raw = None
        if backend == "nccl" and hasattr(c10d, "_dump_nccl_trace"):
            # include collectives and stack traces, not only active entries.  NCCL's watchdog marks an
            # entry completed when it next polls: give it a moment, so a clean run's ops read completed
            t_end = time.monotonic() + 3.0
            while True:
                raw = c10d._dump_nccl_trace(True, True, False)
                states = {e.get("state") for e in loads_plain(raw).get("entries", [])}
                if states <= {"completed"} or time.monotonic() > t_end:
                    break
                time.sleep(0.1)
        if raw is None or not loads_plain(raw).get("entries"):
            raw_fr = c10d._dump_fr_trace()
            raw = raw_fr if raw is None or loads_plain(raw_fr).get("entries") else raw
        obj = loads_plain(raw)  # plain data only, as every Flight Recorder dump is read
        if ctx is not None:
            cfgs = dict(obj.get("pg_config") or {})
            for name, info in ctx.world.groups.items():
                if info.pg is None:
                    continue
                pg_name = dist.distributed_c10d._get_process_group_name(info.pg)
                cfgs[pg_name] = {"name": pg_name, "desc": name, "ranks": str(list(dist.get_process_group_ranks(info.pg)))}
            obj["pg_config"] = cfgs
        obj["rank"] = rank
        obj["lockstep"] = {"run_id": run_id, "rank": rank, "world_size": world, "backend": backend}
        if interrupted:  # dumped because the run was stopped: pending ops are where it stopped, not a hang
            obj["lockstep"]["interrupted"] = True
        if trace_path and not any(e.get("is_p2p") for e in obj.get("entries") or []):
            from .launch import fr_p2p_entries  # gloo's recorder has no p2p: the trace's, beside torch's entries
            try:
                obj["lockstep"]["p2p_entries"] = fr_p2p_entries(trace_path, rank, backend)
            except Exception as e:  # noqa: BLE001 - the dump itself must still be written
                obj["lockstep"]["p2p_error"] = f"p2p entries not recorded: {str(e)[:200]}"
        os.makedirs(fr_dir, exist_ok=True)
        with open(os.path.join(fr_dir, fr_dump_name(rank)), "wb") as f:
            pickle.dump(obj, f)
    except Exception as e:  # noqa: BLE001 - diagnostics must not change the outcome
        print(f"[lockstep rank {rank}] flight recorder dump failed: {e}", flush=True)


def run_rank(cfg: RunConfig, rank: int, init_method: str, run_dir: str | None, *, local_rank: int = 0,
             fr_dir: str | None = None, trace_path: str | None = None) -> int:
    torch.set_num_threads(1)
    ecfg = faults.effective_config(cfg, rank)
    path = trace_path or (os.path.join(run_dir, S.rank_file_name(rank)) if run_dir else None)
    trace = S.TraceWriter(path, rank)
    _install_interrupt_handlers(trace)
    role = role_of(cfg, rank)
    run_id = _run_id(run_dir)
    trace.emit(S.RANK_START, role=role, pid=os.getpid(), world=cfg.world, topology=cfg.topology,
               fault=cfg.fault, unsafe=cfg.unsafe, config_digest=cfg.digest(), run_id=run_id,
               backend=cfg.backend)
    ctx: Ctx | None = None
    code = EXIT_CLEAN
    dispatched = False
    try:
        world = init_world(ecfg, rank, init_method, local_rank)
        trace.emit(S.STARTUP_STEP, name="init", groups={n: g.ranks for n, g in world.groups.items()},
                   mesh_rank=world.mesh_rank)
        ids = Ids()
        comm = Comm(world, trace, ids)
        ctx = Ctx(ecfg, world, comm, trace, ids, run_dir,
                  tp_group=tp_group_name(cfg) if world.is_mesh_member else None)
        startup(ctx)
        if role != ROLE_TP_RANK0 and role != ROLE_STAGE0:
            c = ctx
            ctx.watchdog = Watchdog(trace, cfg.watchdog_s, lambda: {
                "last_header_t": c.last_header_t, "last_header": c.last_header_ids})
        dispatched = True
        dispatch(ctx)
        trace.force(S.RANK_EXIT, how="clean", message="", **_last_header(ctx))
    except RequestFailed as e:
        # Server semantics (unsafe variants): the request failed after a commitment point; this rank
        # stays alive and issues nothing further on the wire, then ends.
        hold = cfg.dist_timeout_s + REQUEST_FAILED_HOLD_MARGIN_S
        trace.force(S.MARK, note=f"request failed; holding {hold:.1f}s with no further dist calls")
        time.sleep(hold)
        trace.force(S.RANK_EXIT, how="exception", message=str(e), exc_type=type(e).__name__, held_s=hold,
                    **_last_header(ctx))
        code = EXIT_EXCEPTION
    except BaseException as e:  # noqa: BLE001 - every ending is recorded
        how = _classify(e)
        if not dispatched and ctx is not None and ctx.world.is_mesh_member and cfg.compile:
            try:  # release a rank waiting outside the mesh for READY
                _store().set(FAILED_KEY, f"rank {rank}: {str(e)[:500]}")
            except Exception:  # noqa: BLE001
                pass
        if rank == 0 and not dispatched:
            for k in range(cfg.chunks):  # nothing was planned: account for every chunk
                trace.force(S.CHUNK_DROPPED, chunk_index=k, reason=f"not_attempted: startup failed ({how})")
        tb = traceback.format_exc(limit=6)
        trace.force(S.RANK_EXIT, how=how, message=str(e)[:4000], exc_type=type(e).__name__,
                    traceback=tb[-3000:], **_last_header(ctx))
        code = {"timeout": EXIT_TIMEOUT, "interrupted": EXIT_INTERRUPTED}.get(how, EXIT_EXCEPTION)
    finally:
        if fr_dir:
            dump_flight_recorder(fr_dir, ctx, rank, run_id=run_id, backend=cfg.backend, world=cfg.world,
                                 trace_path=path, interrupted=code == EXIT_INTERRUPTED)
        trace.close()
    return code


def _last_header(ctx: Ctx | None) -> dict:
    if ctx is None or not ctx.last_header_ids:
        return {}
    return {"last_header_t": ctx.last_header_t, "last_header": ctx.last_header_ids}
