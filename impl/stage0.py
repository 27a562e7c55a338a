"""Rank0's Phase A (the planner that decides every chunk's lifecycle bits and materializes its
inputs) and Phase C (simulated decode, the context mirror, emission).  Deterministic: the
envelope for chunk k is a function of the config, the epoch and the previously emitted outputs,
so the unsharded reference can replay it."""
from __future__ import annotations

import hashlib
import json
import os
import time

import torch

from lockstep.tracefmt import schema as S
from lockstep.spec import contract as C

from .config import RunConfig
from .envelope import Message
from .errors import Ids
from .tripwires import tensor_digest


def _seeded(*parts: int) -> torch.Generator:
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & ((1 << 62) - 1))


def step_list(steps: int) -> torch.Tensor:
    return torch.tensor([round(1000 - i * 1000 / steps) for i in range(steps)], dtype=torch.int64)


class Planner:
    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.mc = cfg.model
        self.epoch = 0
        self.next_call_id = 0
        self.start_frame = 0
        self.chunks_in_epoch = 0
        self.prompt_id = -1
        self.first_frame: torch.Tensor | None = None
        self.last_frames: torch.Tensor | None = None

    # -- identifiers --
    def call_id(self) -> int:
        """Allocate a call_id (all actions share one counter)."""
        c = self.next_call_id
        self.next_call_id += 1
        return c

    def needs_outputs(self, k: int) -> bool:
        """A recompute chunk's context frames come from the previous outputs: rank0 must have
        received every in-flight result before building it (R0a: envelope k+1 waits on k)."""
        return self._recompute(k)

    def _recompute(self, k: int) -> bool:
        n = self.cfg.recompute_every
        return n > 0 and self.chunks_in_epoch > 0 and self.chunks_in_epoch % n == 0

    # -- Phase A --
    def plan(self, k: int) -> Message:
        cfg, mc = self.cfg, self.mc
        init = self.chunks_in_epoch == 0
        recompute = self._recompute(k)
        prompt = (k // cfg.prompt_every) if cfg.prompt_every > 0 else 0
        latents = torch.randn(1, mc.frames_per_chunk, mc.tokens_per_frame, mc.latent_channels,
                              generator=_seeded(cfg.base_seed, self.epoch, k))
        cond = torch.randn(1, mc.text_len, mc.text_dim, generator=_seeded(cfg.base_seed, 7919, prompt))
        meta = {
            "envelope_version": C.ENVELOPE_VERSION, "action": int(C.Action.INFER),
            "call_id": self.next_call_id, "chunk_index": k, "cache_epoch": self.epoch,
            "current_start_frame": self.start_frame, "init_cache": init,
            "reset_crossattn_cache": (not init) and prompt != self.prompt_id,
            "kv_cache_attention_bias": float(cfg.bias), "do_kv_recompute": recompute,
            "num_denoise_steps": cfg.steps,
            "expected_generator_calls": C.expected_generator_calls(recompute, cfg.steps),
            "base_seed": cfg.base_seed, "tp_plan": cfg.tp_plan, "prompt_id": prompt, "context_frames": None,
        }
        tensors = {"latents": latents, "conditioning_embeds": cond, "denoising_step_list": step_list(cfg.steps)}
        if recompute:
            tensors["context_frames"] = self.context_frames()
        return Message("envelope", meta, tensors)

    def context_frames(self) -> torch.Tensor:
        """first_context_frame + the newest (context_frames - 1) latent frames."""
        n = self.mc.context_frames - 1
        parts = [self.first_frame] + ([self.last_frames[:, -n:]] if n > 0 else [])
        return torch.cat(parts, dim=1).contiguous()

    def commit(self, msg: Message) -> None:
        """The header went out: the mesh will execute this envelope."""
        m = msg.meta
        assert m["call_id"] == self.next_call_id
        self.next_call_id += 1
        self.start_frame = m["current_start_frame"] + self.mc.frames_per_chunk
        self.chunks_in_epoch += 1
        self.prompt_id = m["prompt_id"]

    def observe(self, msg_meta: dict, latents_out: torch.Tensor) -> None:
        """An accepted result: keep the latent mirror the next context frames are built from."""
        if msg_meta["current_start_frame"] == 0 or self.first_frame is None:
            self.first_frame = latents_out[:, :1].clone()
        self.last_frames = latents_out.clone()

    def hard_cut(self) -> int:
        old = self.epoch
        self.epoch += 1
        self.start_frame = 0
        self.chunks_in_epoch = 0
        self.prompt_id = -1
        self.first_frame = self.last_frames = None
        return old


class Emitter:
    """Phase C: simulated decode, then emission (trace event and, optionally, saved outputs)."""

    def __init__(self, cfg: RunConfig, trace: S.TraceWriter, run_dir: str | None):
        self.cfg, self.trace = cfg, trace
        self.out_path = os.path.join(run_dir, "outputs.jsonl") if (run_dir and cfg.save_outputs) else None
        self.emitted = 0

    def decode(self, latents_out: torch.Tensor) -> None:
        if self.cfg.decode_ms > 0:
            time.sleep(self.cfg.decode_ms / 1000.0)

    def emit(self, ids: Ids, latents_out: torch.Tensor, **timing) -> None:
        self.trace.force(S.CHUNK_EMITTED, **ids.as_dict(), digest=tensor_digest(latents_out), **timing)
        self.emitted += 1
        if self.out_path:
            with open(self.out_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"chunk_index": ids.chunk_index, "cache_epoch": ids.cache_epoch,
                                    "call_id": ids.call_id, "shape": list(latents_out.shape),
                                    "values": latents_out.detach().cpu().reshape(-1).tolist()}) + "\n")


def load_outputs(run_dir: str) -> dict[tuple[int, int], torch.Tensor]:
    out = {}
    p = os.path.join(run_dir, "outputs.jsonl")
    with open(p, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out[(r["cache_epoch"], r["chunk_index"])] = torch.tensor(r["values"], dtype=torch.float32).reshape(r["shape"])
    return out


class ChunkAccount:
    """Every planned chunk ends emitted or dropped with a reason; ``finish`` records the rest."""

    def __init__(self, chunks: int, trace: S.TraceWriter):
        self.trace = trace
        self.open = set(range(chunks))

    def emitted(self, k: int) -> None:
        self.open.discard(k)

    def drop(self, k: int, reason: str, **extra) -> None:
        self.trace.force(S.CHUNK_DROPPED, chunk_index=k, reason=reason, **extra)
        self.open.discard(k)

    def finish(self, reason: str) -> None:
        for k in sorted(self.open):
            self.drop(k, reason)
