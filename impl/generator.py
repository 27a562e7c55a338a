"""A tiny causal video-DiT-like generator, head-sharded across a TP degree.

Per block: adaLN-Zero modulation from the timestep, self-attention over a per-layer KV-cache ring
buffer (global/local end indices, eviction by rolling), a distributed RMSNorm on Q and K (two tiny
all-reduces), a row-parallel output projection (all-reduce), cross-attention over a cached
projection of the conditioning (all-reduce), and a column/row-parallel FFN (all-reduce): five
collectives per block, all functional collectives on the Phase-B group.  Deterministic float32.

The cache bookkeeping (ring indices, slicing) is eager Python; the pure compute around it can run
under torch.compile (the KV slicing is the real system's remaining graph break too).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as Fn

from .config import ModelConfig

COLLECTIVES_PER_BLOCK = 5


# ---- weights -----------------------------------------------------------------------------------
def full_weights(mc: ModelConfig) -> dict[str, torch.Tensor]:
    """The unsharded weights, a pure function of the model config (seeded)."""
    g = torch.Generator().manual_seed(mc.seed)
    D, C, Dt, Fd, T = mc.dim, mc.latent_channels, mc.text_dim, mc.dim * mc.ffn_mult, mc.tokens_per_frame

    def w(*shape, fan_in):
        return torch.randn(*shape, generator=g, dtype=torch.float32) / math.sqrt(fan_in)

    W = {"patch_in": w(C, D, fan_in=C), "tok_pos": w(T, D, fan_in=D), "t1": w(D, D, fan_in=D),
         "t2": w(D, D, fan_in=D), "out": w(D, C, fan_in=D)}
    for b in range(mc.blocks):
        W[f"b{b}.ada"] = w(D, 6 * D, fan_in=D) * 0.1
        for n in ("wq", "wk", "wv", "wo", "cq", "co"):
            W[f"b{b}.{n}"] = w(D, D, fan_in=D)
        W[f"b{b}.ck"] = w(Dt, D, fan_in=Dt)
        W[f"b{b}.cv"] = w(Dt, D, fan_in=Dt)
        W[f"b{b}.gq"] = 1.0 + 0.1 * torch.randn(D, generator=g)
        W[f"b{b}.gk"] = 1.0 + 0.1 * torch.randn(D, generator=g)
        W[f"b{b}.w1"] = w(D, Fd, fan_in=D)
        W[f"b{b}.w2"] = w(Fd, D, fan_in=Fd)
    return W


_COL = ("wq", "wk", "wv", "cq", "ck", "cv", "gq", "gk")  # sharded along the output (head) dim
_ROW = ("wo", "co")                                       # sharded along the input (head) dim


def shard_weights(full: dict[str, torch.Tensor], mc: ModelConfig, tp_rank: int, tp_size: int) -> dict[str, torch.Tensor]:
    D, Fd = mc.dim, mc.dim * mc.ffn_mult
    hs = slice(tp_rank * D // tp_size, (tp_rank + 1) * D // tp_size)
    fs = slice(tp_rank * Fd // tp_size, (tp_rank + 1) * Fd // tp_size)
    out = {}
    for k, v in full.items():
        n = k.split(".")[-1]
        if n in _COL:
            out[k] = v[..., hs].clone()
        elif n in _ROW:
            out[k] = v[hs, :].clone()
        elif n == "w1":
            out[k] = v[:, fs].clone()
        elif n == "w2":
            out[k] = v[fs, :].clone()
        else:
            out[k] = v.clone()
    return out


# ---- caches ------------------------------------------------------------------------------------
class KVRing:
    """One layer's self-attention cache: ``[1, capacity_tokens, local_heads, head_dim]`` with a
    monotonic ``global_end_index`` (token timeline) and ``local_end_index`` (position in the ring)."""

    def __init__(self, capacity: int, heads: int, head_dim: int, device):
        self.capacity = capacity
        self.k = torch.zeros(1, capacity, heads, head_dim, device=device)
        self.v = torch.zeros_like(self.k)
        self.global_end = 0
        self.local_end = 0

    def reset(self, global_end: int = 0) -> None:
        self.k.zero_()
        self.v.zero_()
        self.global_end, self.local_end = global_end, 0

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor, cur_start: int):
        """Write ``k_new``/``v_new`` for tokens [cur_start, cur_start+n); roll out the oldest tokens if
        the ring would overflow.  Returns (k_ctx, v_ctx, n_past, evicted)."""
        n = k_new.shape[1]
        cur_end = cur_start + n
        evicted = 0
        if cur_start > self.global_end:
            raise RuntimeError(f"KV gap: write starts at token {cur_start} but the cache ends at {self.global_end}")
        if cur_end > self.global_end:
            advance = cur_end - self.global_end
            if self.local_end + advance > self.capacity:
                evicted = self.local_end + advance - self.capacity
                keep = self.local_end - evicted
                self.k[:, :keep] = self.k[:, evicted:evicted + keep].clone()
                self.v[:, :keep] = self.v[:, evicted:evicted + keep].clone()
                self.local_end = keep
            self.local_end += advance
            self.global_end = cur_end
        local_start = self.local_end - (self.global_end - cur_start)
        if local_start < 0:
            raise RuntimeError(f"KV write at token {cur_start} was already evicted (ring starts at "
                               f"{self.global_end - self.local_end})")
        self.k[:, local_start:local_start + n] = k_new
        self.v[:, local_start:local_start + n] = v_new
        stop = local_start + n
        return self.k[:, :stop], self.v[:, :stop], local_start, evicted


@dataclass
class CrossCache:
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None

    def reset(self) -> None:
        self.k = self.v = None


# ---- the model ---------------------------------------------------------------------------------
def _sinusoid(pos: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=pos.device) / half)
    a = pos.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=-1)


def _ln(x: torch.Tensor) -> torch.Tensor:
    return Fn.layer_norm(x, (x.shape[-1],), eps=1e-6)


AllReduce = Callable[[torch.Tensor, str], torch.Tensor]


class Generator:
    """``all_reduce(t, purpose)`` is the comm layer's functional all-reduce on the Phase-B group,
    or None when the model is unsharded (tp_size == 1)."""

    def __init__(self, mc: ModelConfig, tp_rank: int = 0, tp_size: int = 1, all_reduce: AllReduce | None = None,
                 device=torch.device("cpu"), compile_backend: str = "", full: dict | None = None):
        if mc.heads % tp_size:
            raise ValueError(f"TP degree {tp_size} does not divide the head count {mc.heads}")
        self.mc, self.tp_rank, self.tp_size, self.device = mc, tp_rank, tp_size, device
        self._ar = all_reduce
        full = full if full is not None else full_weights(mc)
        self.W = {k: v.to(device) for k, v in shard_weights(full, mc, tp_rank, tp_size).items()}
        self.local_heads = mc.heads // tp_size
        self.local_dim = mc.dim // tp_size
        cap = mc.cache_frames * mc.tokens_per_frame
        self.kv = [KVRing(cap, self.local_heads, mc.head_dim, device) for _ in range(mc.blocks)]
        self.xattn = [CrossCache() for _ in range(mc.blocks)]
        self.next_start_frame = 0
        self.conditioning: torch.Tensor | None = None
        self.bias = 1.0
        self.in_block_hook: Callable[[int, int], None] | None = None  # fault injection point
        self.debug_graph_break = False                                 # C-03: a rank-only graph break
        self.calls = 0
        self.compiled = bool(compile_backend)
        if compile_backend:
            if compile_backend == "inductor":
                import torch._inductor.config as ic
                ic.compile_threads = 1  # no compile-worker pool inside a forked rank
            self._pre = torch.compile(self._pre_impl, backend=compile_backend, dynamic=False)
            self._post = torch.compile(self._post_impl, backend=compile_backend, dynamic=False)
        else:
            self._pre, self._post = self._pre_impl, self._post_impl

    @property
    def collectives_per_call(self) -> int:
        return self.mc.blocks * COLLECTIVES_PER_BLOCK if self._ar is not None else 0

    # -- collectives --
    def _reduce(self, t: torch.Tensor, purpose: str) -> torch.Tensor:
        return self._ar(t, purpose) if self._ar is not None else t

    def _dist_rmsnorm(self, x: torch.Tensor, g: torch.Tensor, purpose: str) -> torch.Tensor:
        ss = (x * x).sum(-1, keepdim=True)
        ss = self._reduce(ss, purpose)
        return x * torch.rsqrt(ss / self.mc.dim + 1e-6) * g

    # -- compiled pieces --
    def _pre_impl(self, h: torch.Tensor, mod: torch.Tensor, b: int):
        W = self.W
        sh1, sc1 = mod[..., 0], mod[..., 1]
        hn = _ln(h) * (1 + sc1) + sh1
        q = self._dist_rmsnorm(hn @ W[f"b{b}.wq"], W[f"b{b}.gq"], "qnorm")
        k = self._dist_rmsnorm(hn @ W[f"b{b}.wk"], W[f"b{b}.gk"], "knorm")
        v = hn @ W[f"b{b}.wv"]
        N = h.shape[1]
        shp = (1, N, self.local_heads, self.mc.head_dim)
        return q.reshape(shp), k.reshape(shp), v.reshape(shp)

    def _attend(self, q, k, v, logit_bias):
        s = torch.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(self.mc.head_dim)
        if logit_bias is not None:
            s = s + logit_bias
        return torch.einsum("bhnm,bmhd->bnhd", torch.softmax(s, dim=-1), v)

    def _post_impl(self, h, q, k_ctx, v_ctx, logit_bias, xk, xv, mod, b: int):
        W = self.W
        N = h.shape[1]
        g1, sh2, sc2, g2 = mod[..., 2], mod[..., 3], mod[..., 4], mod[..., 5]
        a = self._attend(q, k_ctx, v_ctx, logit_bias).reshape(1, N, self.local_dim)
        o = self._reduce(a @ W[f"b{b}.wo"], "attn_out")
        h = h + g1 * o
        if self.debug_graph_break:
            torch._dynamo.graph_break()
        qc = (_ln(h) @ W[f"b{b}.cq"]).reshape(1, N, self.local_heads, self.mc.head_dim)
        c = self._attend(qc, xk, xv, None).reshape(1, N, self.local_dim)
        h = h + self._reduce(c @ W[f"b{b}.co"], "xattn_out")
        hn = _ln(h) * (1 + sc2) + sh2
        f = self._reduce(Fn.gelu(hn @ W[f"b{b}.w1"]) @ W[f"b{b}.w2"], "ffn_out")
        return h + g2 * f

    # -- one generator call --
    def forward(self, x: torch.Tensor, timestep: float, start_frame: int) -> tuple[torch.Tensor, int]:
        """One generator call on latents ``x`` [1, F, T, C] at absolute frame ``start_frame``:
        returns (velocity, tokens evicted from the ring by layer 0)."""
        mc, W = self.mc, self.W
        F, T = x.shape[1], x.shape[2]
        N = F * T
        dev = x.device
        h = x.reshape(1, N, mc.latent_channels) @ W["patch_in"]
        frames = torch.arange(start_frame, start_frame + F, device=dev).repeat_interleave(T)
        h = h + _sinusoid(frames, mc.dim)[None] + W["tok_pos"].repeat(F, 1)[None]
        temb = _sinusoid(torch.tensor([timestep], device=dev), mc.dim)
        temb = Fn.silu(temb @ W["t1"]) @ W["t2"]
        evicted0 = 0
        if self.conditioning is None:
            raise RuntimeError("generator called without conditioning")
        for b in range(mc.blocks):
            if self.in_block_hook is not None:
                self.in_block_hook(b, self.calls)
            mod = (temb @ W[f"b{b}.ada"]).reshape(1, 1, mc.dim, 6)
            q, k, v = self._pre(h, mod, b)
            k_ctx, v_ctx, n_past, ev = self.kv[b].update(k, v, start_frame * T)
            if b == 0:
                evicted0 = ev
            L = k_ctx.shape[1]
            lb = torch.zeros(L, device=dev)
            if n_past:
                lb[:n_past] = math.log(max(self.bias, 1e-6))
            xc = self.xattn[b]
            if xc.k is None:
                L2 = self.conditioning.shape[1]
                xc.k = (self.conditioning[0] @ W[f"b{b}.ck"]).reshape(1, L2, self.local_heads, mc.head_dim)
                xc.v = (self.conditioning[0] @ W[f"b{b}.cv"]).reshape(1, L2, self.local_heads, mc.head_dim)
            h = self._post(h, q, k_ctx, v_ctx, lb, xc.k, xc.v, mod, b)
        out = (_ln(h) @ W["out"]).reshape(1, F, T, mc.latent_channels)
        self.calls += 1
        return out, evicted0

    # -- lifecycle --
    def reset_kv(self, start_frame: int = 0) -> None:
        for r in self.kv:
            r.reset(start_frame * self.mc.tokens_per_frame)

    def reset_crossattn(self) -> None:
        for c in self.xattn:
            c.reset()

    def warmup(self) -> int:
        """Compile warmup on scratch state, restoring the real caches afterwards: one forward per
        context length the KV ring goes through (chunk 0, 1, ... until the ring is full), so that no
        shape is first compiled inside the protocol, where a peer waits under the PG timeout.
        Returns the number of forward calls made."""
        saved = [(r.k.clone(), r.v.clone(), r.global_end, r.local_end) for r in self.kv]
        saved_x = [(c.k, c.v) for c in self.xattn]
        saved_cond, calls = self.conditioning, self.calls
        mc = self.mc
        self.conditioning = torch.zeros(1, mc.text_len, mc.text_dim, device=self.device)
        self.reset_crossattn()
        self.reset_kv(0)
        x = torch.zeros(1, mc.frames_per_chunk, mc.tokens_per_frame, mc.latent_channels, device=self.device)
        starts = range(0, mc.cache_frames + mc.frames_per_chunk, mc.frames_per_chunk)
        for start in starts:
            self.forward(x, 1000.0, start)
        for r, (k, v, ge, le) in zip(self.kv, saved):
            r.k.copy_(k), r.v.copy_(v)
            r.global_end, r.local_end = ge, le
        for c, (k, v) in zip(self.xattn, saved_x):
            c.k, c.v = k, v
        self.conditioning, self.calls = saved_cond, calls
        return len(starts)

    @property
    def indices(self) -> tuple[int, int]:
        return self.kv[0].global_end, self.kv[0].local_end
