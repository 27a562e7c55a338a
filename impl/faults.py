"""Fault injection for the operator test matrix (OM-01..OM-13, C-01, C-03) and the test-only
``--unsafe`` switches that remove one guard each (mirroring the spec's planted-bug variants).

A fault is configured identically on every rank (it is a parity key).  Where its effect is
per-rank (OM-04/05/11/12, C-01/03) the target is ``cfg.target_rank``, chosen from the shared
config, so the injection itself never becomes a conditional collective.  Every injection writes a
``fault_injected`` event.  Expected signatures are checked in ``signatures.py``.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import torch

from lockstep.tracefmt import schema as S

from .config import RunConfig
from .envelope import Message


@dataclass(frozen=True)
class FaultInfo:
    id: str
    fm: str
    topologies: tuple[str, ...]
    default_topology: str
    injection: str
    signature: str
    params: dict = field(default_factory=dict)  # config overrides the scenario needs


FAULTS: dict[str, FaultInfo] = {f.id: f for f in (
    FaultInfo("om-01", "FM-04", ("tp", "pp0", "pp1"), "tp",
              "rank0 puts an unserializable value (a lambda) into the meta of chunk fault_at",
              "rank0 preflight_fail step=serialize_meta naming the key path, BEFORE the header; the chunk is "
              "dropped with that reason; peers keep waiting for the next header; every rank ends clean"),
    FaultInfo("om-02", "FM-07", ("tp", "pp0", "pp1"), "tp",
              "rank0 builds `latents` of chunk fault_at as torch.bool",
              "rank0 preflight_fail (unsupported dtype 'bool', field latents) before the header; chunk dropped; "
              "every rank ends clean"),
    FaultInfo("om-03", "FM-02", ("tp", "pp0", "pp1"), "tp",
              "rank0 writes expected_generator_calls off by one for chunk fault_at",
              "rank0 preflight_fail step=validate field=expected_generator_calls (expected vs computed) before "
              "the header; chunk dropped; every rank ends clean"),
    FaultInfo("om-04", "FM-01", ("tp", "pp0", "pp1"), "pp1",
              "the target rank runs tp_plan=v0_full_pipeline",
              "the startup parity handshake fails on every rank before the first chunk, printing the per-rank "
              "tp_plan values; no header is ever sent"),
    FaultInfo("om-05", "FM-03", ("tp", "pp1"), "tp",
              "the target rank enables the input-digest debug collective on its own",
              "the parity handshake fails on every rank (key input_digest) before any gated collective"),
    FaultInfo("om-06", "FM-08", ("tp", "pp1"), "tp",
              "block 0 of the first generator call of chunk fault_at issues a broadcast (shape inference)",
              "every mesh rank raises 'forbidden op ... FM-08' before the collective; PP1 rank0 gets an ok=False "
              "result and exits; nobody waits for a timeout"),
    FaultInfo("om-07", "PP-FM-LEADER-THROW", ("pp1",), "pp1",
              "rank0 sends chunk fault_at with current_start_frame off by one (passes rank0's contract checks, "
              "the leader's cache check rejects it)",
              "the leader rejects before any mesh_pg broadcast of that envelope, broadcasts ERROR, sends an "
              "ok=False result and exits; workers exit on ERROR; rank0 exits on the error result"),
    FaultInfo("om-08", "PP-FM-WRONG-GROUP", ("pp1",), "pp1",
              "one Phase-B collective of chunk fault_at is issued on world_pg instead of mesh_pg",
              "every mesh rank raises 'wrong group: ... group_used=world, expected=mesh' before the backend is "
              "called; the leader sends ok=False; rank0 exits on the error result"),
    FaultInfo("om-09", "FM-10", ("pp0", "pp1"), "pp0",
              "stage 1 holds back the result of chunk fault_at-1 for delay_ms; rank0 hard-cuts at fault_at",
              "rank0 drains it after the epoch bump and drops it (reason stale_epoch, logging both epochs); it is "
              "never emitted; every rank ends clean",
              {"d_in": 2, "d_out": 2}),
    FaultInfo("om-10", "FM-06", ("tp", "pp0", "pp1"), "pp1",
              "rank0 plans do_kv_recompute=True for chunk fault_at without context_frames",
              "rank0 preflight_fail step=validate field=context_frames ('required ... with recompute'); chunk "
              "dropped; every rank ends clean"),
    FaultInfo("om-11", "Franken", ("tp", "pp1"), "tp",
              "the target rank perturbs the received `latents` of chunk fault_at (receiver side)",
              "the input-digest all_gather fails on every mesh rank with the per-rank digests, before Phase B",
              {"input_digest": True}),
    FaultInfo("om-12", "Franken", ("tp", "pp1"), "tp",
              "the target rank mutates one weight of its shard after chunk fault_at",
              "the next fingerprint check fails on every mesh rank, naming baseline and current fingerprints",
              {"fingerprint_every": 1}),
    FaultInfo("om-13", "hang hygiene", ("tp", "pp0", "pp1"), "pp1",
              "rank0 idles after chunk fault_at (NOOP heartbeats), then SIGKILLs itself",
              "rank0 killed; every other rank exits promptly (peer lost / terminal ERROR) with its last "
              "header time in the exit event; no PG-timeout-length wait"),
    FaultInfo("c-01", "C-01", ("tp", "pp1"), "tp",
              "torch.compile is enabled on the target rank only",
              "the parity handshake fails (key compile) before the first chunk", {}),
    FaultInfo("c-03", "C-03", ("tp", "pp1"), "tp",
              "a graph break inside the compiled block on the target rank only",
              "the compile-health gather after warmup differs; every mesh rank crashes before the first chunk",
              {}),
)}
OM_FAULTS = tuple(f for f in FAULTS if f.startswith("om-"))


@dataclass(frozen=True)
class UnsafeInfo:
    name: str
    fault: str
    topologies: tuple[str, ...]
    removes: str
    predicts: str


UNSAFE: dict[str, UnsafeInfo] = {u.name: u for u in (
    UnsafeInfo("fm04-throw-after-header", "om-01", ("tp",),
               "preflight serialization moves after the header broadcast",
               "STRANDED: rank0 fails the request and stays alive issuing nothing; workers block in the meta "
               "broadcast until the PG timeout"),
    UnsafeInfo("om07-leader-throws", "om-07", ("pp1",),
               "the leader broadcasts the INFER header on mesh_pg before validating",
               "STRANDED: the leader rejects after the header; non-leaders block in the mesh meta broadcast until "
               "the PG timeout"),
    UnsafeInfo("om09-no-epoch-fence", "om-09", ("pp0", "pp1"),
               "rank0 accepts results without the cache_epoch check",
               "STALE_EMIT: the result of chunk fault_at-1 (old epoch) is emitted after the hard cut"),
    UnsafeInfo("result-throw-after-header", "", ("pp0", "pp1"),
               "Stage 1 sends the result of chunk fault_at as one unit: its send fails after the header",
               "STRANDED: rank0 got the result header and blocks in the rest of the result until the PG timeout; "
               "the leader fails the request and issues nothing further"),
    UnsafeInfo("o02-send-after-decode", "", ("pp0", "pp1"),
               "rank0 sends the next envelope only after decoding the previous result",
               "O-02 bug signature: mesh idle time tracks decode time, queues stay near 0"),
)}


def check_fault_config(cfg: RunConfig) -> None:
    if cfg.fault:
        f = FAULTS.get(cfg.fault)
        if f is None:
            raise ValueError(f"unknown fault {cfg.fault!r}; valid: {', '.join(FAULTS)}")
        if cfg.topology not in f.topologies:
            raise ValueError(f"fault {cfg.fault} applies to topologies {', '.join(f.topologies)}, not {cfg.topology}")
        if cfg.fault == "om-09" and cfg.hard_cut_at != cfg.fault_at:
            raise ValueError(f"om-09 hard-cuts at fault_at: set hard_cut_at={cfg.fault_at} (got {cfg.hard_cut_at})")
        if cfg.fault in ("om-09",) and cfg.fault_at < 1:
            raise ValueError("om-09 needs fault_at >= 1")
        if cfg.fault in ("c-01", "c-03") and not cfg.compile:
            raise ValueError(f"{cfg.fault} needs --compile")
        if cfg.fault in ("om-11", "om-12", "c-01", "c-03", "om-04", "om-05") and not 0 <= cfg.target_rank < cfg.world:
            raise ValueError(f"fault_rank {cfg.target_rank} outside the world of {cfg.world}")
        if cfg.fault in ("om-11", "om-12", "c-03") and cfg.target_rank not in cfg.mesh_ranks:
            raise ValueError(f"{cfg.fault} targets a mesh rank; rank {cfg.target_rank} is not in {cfg.mesh_ranks}")
        if cfg.fault == "om-11" and cfg.topology == "tp" and cfg.target_rank == 0:
            raise ValueError("om-11 perturbs a receiver: the target must not be the TP sender rank 0")
    if cfg.unsafe:
        u = UNSAFE.get(cfg.unsafe)
        if u is None:
            raise ValueError(f"unknown unsafe switch {cfg.unsafe!r}; valid: {', '.join(UNSAFE)}")
        if cfg.topology not in u.topologies:
            raise ValueError(f"--unsafe {cfg.unsafe} applies to topologies {', '.join(u.topologies)}, not {cfg.topology}")
        if u.fault and cfg.fault != u.fault:
            raise ValueError(f"--unsafe {cfg.unsafe} only changes what happens under --fault {u.fault}")


def scenario_config(cfg: RunConfig) -> RunConfig:
    """Apply the overrides a fault scenario needs (hard cut for om-09, digests for om-11, ...)."""
    if not cfg.fault:
        return cfg
    f = FAULTS[cfg.fault]
    kw = dict(f.params)
    if cfg.fault == "om-09" and cfg.hard_cut_at < 0:
        kw["hard_cut_at"] = cfg.fault_at if cfg.fault_at >= 1 else 2
        kw.setdefault("fault_at", kw["hard_cut_at"])
    if cfg.fault == "om-09":
        kw["recompute_every"] = 0  # keep envelopes independent of in-flight results
    return cfg.with_(**kw)


# ---- per-rank effective config (what the parity handshake compares) -------------------------
def effective_config(cfg: RunConfig, rank: int) -> RunConfig:
    if rank != cfg.target_rank:
        return cfg
    if cfg.fault == "om-04":
        return cfg.with_(tp_plan="v0_full_pipeline")
    if cfg.fault == "om-05":
        return cfg.with_(input_digest=not cfg.input_digest)
    if cfg.fault == "c-01":
        return cfg.with_(compile="")  # compile on every rank but this one
    return cfg


def note(trace: S.TraceWriter, fault: str, detail: str, **extra) -> None:
    trace.force(S.FAULT_INJECTED, fault=fault, detail=detail, **extra)


# ---- injection points ------------------------------------------------------------------------
def mutate_envelope(cfg: RunConfig, msg: Message, trace: S.TraceWriter) -> None:
    """Rank0 Phase A (before preflight)."""
    k = msg.meta["chunk_index"]
    if k != cfg.fault_at:
        return
    f = cfg.fault
    if f == "om-01":
        msg.meta["debug_hook"] = lambda: None
        note(trace, f, "meta.debug_hook = <lambda>", chunk_index=k)
    elif f == "om-02":
        msg.tensors["latents"] = msg.tensors["latents"] > 0
        note(trace, f, "latents cast to torch.bool", chunk_index=k)
    elif f == "om-03":
        msg.meta["expected_generator_calls"] += 1
        note(trace, f, "expected_generator_calls += 1", chunk_index=k)
    elif f == "om-07":
        msg.meta["current_start_frame"] += 1
        note(trace, f, "current_start_frame += 1", chunk_index=k)
    elif f == "om-10":
        msg.meta["do_kv_recompute"] = True
        msg.meta["expected_generator_calls"] = msg.meta["num_denoise_steps"] + 1
        msg.tensors.pop("context_frames", None)
        note(trace, f, "do_kv_recompute=True without context_frames", chunk_index=k)


def in_block_hook(cfg: RunConfig, comm, trace: S.TraceWriter, chunk_index: int, group: str | None):
    """Returns the generator's in-block hook for this chunk, or None."""
    if chunk_index != cfg.fault_at or cfg.fault not in ("om-06", "om-08") or group is None:
        return None
    fired = []

    def hook(block: int, call: int) -> None:
        if fired or block != 0:
            return
        fired.append(1)
        if cfg.fault == "om-06":
            note(trace, "om-06", f"in-block broadcast of a shape tensor on {group}", chunk_index=chunk_index)
            comm.broadcast(torch.zeros(4, dtype=torch.int64, device=comm.world.device), 0, group, "in_block_shape")
        else:
            note(trace, "om-08", "Phase-B all_reduce on world instead of mesh", chunk_index=chunk_index)
            comm.fc_all_reduce(torch.zeros(1, device=comm.world.device), "world", "debug_sum")
    return hook


def after_receive(cfg: RunConfig, rank: int, msg: Message, trace: S.TraceWriter) -> None:
    if cfg.fault == "om-11" and rank == cfg.target_rank and msg.meta.get("chunk_index") == cfg.fault_at:
        msg.tensors["latents"] = msg.tensors["latents"] + 1e-3
        note(trace, "om-11", "received latents += 1e-3", chunk_index=cfg.fault_at)


def after_phase_b(cfg: RunConfig, rank: int, chunk_index: int, weights: dict, trace: S.TraceWriter) -> None:
    if cfg.fault == "om-12" and rank == cfg.target_rank and chunk_index == cfg.fault_at:
        k = sorted(w for w in weights if w.endswith(".wq"))[0]
        weights[k].view(-1)[0] += 1e-3
        note(trace, "om-12", f"weight {k}[0] += 1e-3", chunk_index=chunk_index)


def result_delay(cfg: RunConfig, chunk_index: int, trace: S.TraceWriter) -> None:
    if cfg.fault == "om-09" and chunk_index == cfg.fault_at - 1:
        note(trace, "om-09", f"result held back {cfg.delay_ms} ms", chunk_index=chunk_index)
        time.sleep(cfg.delay_ms / 1000.0)


def rank0_after_emit(cfg: RunConfig, chunk_index: int, trace: S.TraceWriter, idle) -> None:
    """OM-13: idle with heartbeats, then die like kill -9."""
    if cfg.fault == "om-13" and chunk_index == cfg.fault_at:
        idle(2.5 * cfg.heartbeat_s)
        note(trace, "om-13", "rank0 SIGKILLs itself mid-idle")
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)


def graph_break_rank(cfg: RunConfig, rank: int) -> bool:
    return cfg.fault == "c-03" and rank == cfg.target_rank
