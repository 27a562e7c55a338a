"""The unsharded reference: the same planner and Phase B on one process with the full model and no
collectives.  Sharded runs must match it (allclose) chunk by chunk."""
from __future__ import annotations

import torch

from lockstep.tracefmt import schema as S

from .config import RunConfig
from .generator import Generator
from .phase_b import run_phase_b
from .stage0 import Planner


def reference_outputs(cfg: RunConfig) -> dict[tuple[int, int], torch.Tensor]:
    """(cache_epoch, chunk_index) -> latents_out for every chunk the mesh would execute."""
    planner = Planner(cfg)
    gen = Generator(cfg.model)
    trace = S.TraceWriter(None, 0)
    out: dict[tuple[int, int], torch.Tensor] = {}
    for k in range(cfg.chunks):
        if k == cfg.hard_cut_at and k > 0:
            planner.hard_cut()
        msg = planner.plan(k)
        planner.commit(msg)
        x, _, _ = run_phase_b(gen, msg, trace=trace, rank=0, group=None)
        planner.observe(msg.meta, x)
        out[(msg.meta["cache_epoch"], k)] = x
    return out
