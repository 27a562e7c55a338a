"""What every mesh rank does with a received (or, on the sender, materialized) envelope:
re-validate, geometry and cache checks, optional input digests and fingerprints, the planned
call-count gather, then Phase B under the comm layer's Phase-B guard."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from lockstep.tracefmt import schema as S

from . import faults, tripwires
from .comm import Comm
from .config import RunConfig
from .envelope import Message, validate_received
from .errors import Ids, ValidationFailure
from .generator import Generator
from .phase_b import check_geometry, run_phase_b
from .world import World


@dataclass
class Ctx:
    cfg: RunConfig                    # this rank's effective config
    world: World
    comm: Comm
    trace: S.TraceWriter
    ids: Ids
    run_dir: str | None
    gen: Generator | None = None
    tp_group: str | None = None       # Phase-B collective group (None: no TP)
    baseline: list[int] = field(default_factory=list)
    last_header_t: float = 0.0
    last_header_ids: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    watchdog: object | None = None    # a Watchdog armed around header waits

    @property
    def rank(self) -> int:
        return self.world.rank

    def arm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.arm()

    def disarm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.disarm()

    def record_for(self, chunk_index: int) -> None:
        """record=alternate (bench): trace even chunks only, to measure the recorder's cost in one run."""
        if self.cfg.record == "alternate" and chunk_index >= 0:
            self.trace.enabled = chunk_index % 2 == 0

    def saw_header(self, ids: Ids, action) -> None:
        self.disarm()
        self.last_header_t = time.time()
        self.last_header_ids = {**ids.as_dict(), "action": action.name}


def check_received(ctx: Ctx, msg: Message, header_ids: Ids, group: str) -> None:
    """Contract re-validation on the receiver, header/meta agreement, plan and geometry checks."""
    validate_received(msg, rank=ctx.rank, group=group)
    kw = {"rank": ctx.rank, "group": group, "ids": header_ids}
    for k in ("call_id", "chunk_index", "cache_epoch"):
        if msg.meta.get(k) != getattr(header_ids, k):
            raise ValidationFailure(f"meta {k}={msg.meta.get(k)} != header {getattr(header_ids, k)}", field=k, **kw)
    if msg.meta.get("tp_plan") != ctx.cfg.tp_plan:
        raise ValidationFailure(f"payload tp_plan {msg.meta.get('tp_plan')!r} != this rank's {ctx.cfg.tp_plan!r}",
                                field="tp_plan", **kw)
    check_geometry(ctx.gen, msg, rank=ctx.rank, group=group)


def mesh_step(ctx: Ctx, msg: Message) -> tuple[torch.Tensor, int, float]:
    """Tripwire gathers, then Phase B.  Returns (latents_out, observed_calls, tB_ms)."""
    cfg, comm, g = ctx.cfg, ctx.comm, ctx.tp_group
    k = msg.meta["chunk_index"]
    if g is not None:
        if cfg.input_digest:
            tripwires.input_digest_check(comm, g, msg)
        if cfg.fingerprint_every > 0 and ctx.baseline and k % cfg.fingerprint_every == 0:
            tripwires.fingerprint_check(comm, g, ctx.gen.W, ctx.baseline)
        tripwires.plan_gather(comm, g, msg)
    ctx.gen.in_block_hook = faults.in_block_hook(cfg, comm, ctx.trace, k, g)
    try:
        with comm.phase_b(g):
            out = run_phase_b(ctx.gen, msg, trace=ctx.trace, rank=ctx.rank, group=g,
                              note_compiled=(lambda n: comm.note_compiled_collectives(g, n)) if g else None,
                              mesh_ms=cfg.mesh_ms)
    finally:
        ctx.gen.in_block_hook = None
    faults.after_phase_b(cfg, ctx.rank, k, ctx.gen.W, ctx.trace)
    return out
