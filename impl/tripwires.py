"""Tripwires: the startup parity handshake, input digests, weight-shard fingerprints, the planned
call-count gather and rank-symmetric compile health.  Each gathers on a named group and fails
with a message naming rank, group, call_id, chunk_index and cache_epoch, plus the per-rank diff."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

import torch

from lockstep.tracefmt import schema as S
from lockstep.tracefmt.schema import canonical_json
from lockstep.spec import contract as C

from .comm import Comm
from .config import RunConfig
from .envelope import Message
from .errors import TripwireError


def tensor_digest(t: torch.Tensor) -> int:
    """A signed int64 digest of a tensor's bytes (dtype-agnostic)."""
    b = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    h = hashlib.blake2b(b, digest_size=8, person=str(t.dtype).encode()[:16]).digest()
    return int.from_bytes(h, "little", signed=True)


def parity_values(cfg: RunConfig) -> dict:
    """This rank's effective values for every contract parity key."""
    v = {
        "world_size": cfg.world, "topology": cfg.topology, "tp_plan": cfg.tp_plan, "backend": cfg.backend,
        "dist_timeout_s": cfg.dist_timeout_s, "envelope_version": C.ENVELOPE_VERSION,
        "recompute_every": cfg.recompute_every, "input_digest": cfg.input_digest, "compile": cfg.compile,
        "fault": cfg.fault, "unsafe": cfg.unsafe, "fingerprint_every": cfg.fingerprint_every,
        "model": asdict(cfg.model),
    }
    missing = [k for k, _ in C.PARITY_KEYS if k not in v]
    assert not missing, f"parity keys without a value: {missing}"
    return v


def _gather_bytes(comm: Comm, group: str, raw: bytes, purpose: str) -> list[bytes]:
    dev = comm.world.device
    n = torch.tensor([len(raw)], dtype=torch.int64, device=dev)
    sizes = [int(x.item()) for x in comm.all_gather(n, group, f"{purpose}_size")]
    buf = torch.zeros(max(sizes), dtype=torch.uint8, device=dev)
    buf[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    got = comm.all_gather(buf, group, purpose)
    return [bytes(g[:s].cpu().numpy().tobytes()) for g, s in zip(got, sizes)]


def parity_handshake(comm: Comm, cfg: RunConfig, values: dict) -> None:
    """all_gather every rank's parity values on the world group; compare "world" keys across all
    ranks and "mesh" keys across the mesh ranks.  Every rank reaches the same verdict."""
    blobs = _gather_bytes(comm, "world", canonical_json(values).encode(), "parity")
    per_rank = [json.loads(b) for b in blobs]
    diff = []
    for key, scope in C.PARITY_KEYS:
        ranks = list(range(cfg.world)) if scope == "world" else cfg.mesh_ranks
        vals = {r: per_rank[r].get(key) for r in ranks}
        if len({canonical_json(x) for x in vals.values()}) > 1:
            diff.append({"key": key, "scope": scope, "values": {str(r): x for r, x in vals.items()}})
    digest = hashlib.blake2b(canonical_json(values).encode(), digest_size=8).hexdigest()
    if diff:
        comm.trace.emit(S.PARITY_FAIL, diff=diff)
        lines = "; ".join(f"{d['key']} ({d['scope']}): " + ", ".join(f"rank{r}={v!r}" for r, v in d["values"].items())
                          for d in diff)
        raise TripwireError(f"parity handshake failed before the first chunk: {lines}", wire="parity",
                            rank=comm.rank, group="world", ids=comm.ids)
    comm.trace.emit(S.PARITY_OK, digest=digest)


def _gather_ints(comm: Comm, group: str, vals: list[int], purpose: str) -> list[list[int]]:
    t = torch.tensor(vals, dtype=torch.int64, device=comm.world.device)
    return [[int(x) for x in g.cpu().tolist()] for g in comm.all_gather(t, group, purpose)]


def _ranks(comm: Comm, group: str) -> list[int]:
    return comm.world.groups[group].ranks


def input_digest_check(comm: Comm, group: str, msg: Message) -> None:
    keys = sorted(msg.tensors)
    mine = [tensor_digest(msg.tensors[k]) for k in keys]
    got = _gather_ints(comm, group, mine, "input_digest")
    for i, k in enumerate(keys):
        col = {r: g[i] for r, g in zip(_ranks(comm, group), got)}
        if len(set(col.values())) > 1:
            comm.trace.emit(S.TRIPWIRE, kind="input_digest", message=f"{k}: {col}", key=k)
            raise TripwireError(f"input digest mismatch for {k}: " + ", ".join(f"rank{r}={d}" for r, d in col.items()),
                                wire="input_digest", rank=comm.rank, group=group, ids=comm.ids)


def shard_fingerprint(weights: dict[str, torch.Tensor]) -> int:
    h = hashlib.blake2b(digest_size=8)
    for k in sorted(weights):
        h.update(k.encode())
        h.update(weights[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


def fingerprint_baseline(comm: Comm, group: str, weights) -> list[int]:
    fps = [g[0] for g in _gather_ints(comm, group, [shard_fingerprint(weights)], "fingerprint_baseline")]
    if len(fps) > 1 and len(set(fps)) == 1:
        # Run 3's bug: identical baselines mean the fingerprint does not see the shard.
        raise TripwireError(f"fingerprint baseline identical on every shard {fps}: the fingerprint is blind",
                            wire="fingerprint", rank=comm.rank, group=group, ids=comm.ids)
    comm.trace.emit(S.STARTUP_STEP, name="fingerprint_baseline", fingerprints=fps)
    return fps


def fingerprint_check(comm: Comm, group: str, weights, baseline: list[int]) -> None:
    now = [g[0] for g in _gather_ints(comm, group, [shard_fingerprint(weights)], "fingerprint")]
    bad = [(r, b, n) for r, b, n in zip(_ranks(comm, group), baseline, now) if b != n]
    if bad:
        msg = ", ".join(f"rank{r}: baseline {b} now {n}" for r, b, n in bad)
        comm.trace.emit(S.TRIPWIRE, kind="fingerprint", message=msg)
        raise TripwireError(f"weight shard fingerprint mismatch: {msg}", wire="fingerprint", rank=comm.rank,
                            group=group, ids=comm.ids)


def plan_gather(comm: Comm, group: str, msg: Message) -> None:
    """Pre-Phase-B: every mesh rank must hold the same IDs, plan and start frame (FM-02, drift)."""
    m = msg.meta
    names = ("call_id", "chunk_index", "cache_epoch", "expected_generator_calls", "current_start_frame",
             "do_kv_recompute", "init_cache")
    mine = [int(m[n]) for n in names]
    got = _gather_ints(comm, group, mine, "plan")
    if any(g != got[0] for g in got):
        rows = ", ".join(f"rank{r}={dict(zip(names, g))}" for r, g in zip(_ranks(comm, group), got))
        comm.trace.emit(S.TRIPWIRE, kind="plan", message=rows)
        raise TripwireError(f"planned call count / IDs differ across the mesh: {rows}", wire="call_count",
                            rank=comm.rank, group=group, ids=comm.ids)


def compile_counters() -> tuple[int, int]:
    from torch._dynamo.utils import counters
    graphs = int(counters["stats"].get("unique_graphs", 0))
    breaks = int(sum(counters["graph_break"].values()))
    return graphs, breaks


def compile_health(comm: Comm, group: str) -> None:
    """C-03: graph and graph-break counts after warmup must be identical on every mesh rank."""
    g, b = compile_counters()
    got = _gather_ints(comm, group, [g, b], "compile_health")
    comm.trace.emit(S.STARTUP_STEP, name="compile_health", graphs=g, graph_breaks=b,
                    per_rank=[[r, *x] for r, x in zip(_ranks(comm, group), got)])
    if any(x != got[0] for x in got):
        rows = ", ".join(f"rank{r}: graphs={x[0]} graph_breaks={x[1]}" for r, x in zip(_ranks(comm, group), got))
        comm.trace.emit(S.TRIPWIRE, kind="compile_health", message=rows)
        raise TripwireError(f"compile health diverges after warmup (a rank-only graph break or recompile): {rows}",
                            wire="compile_health", rank=comm.rank, group=group, ids=comm.ids)
