"""Phase B: apply the envelope's reset bits, the optional recompute call, N denoise calls, advance
the cache.  The envelope alone decides what runs; nothing here infers a reset or a recompute."""
from __future__ import annotations

import time

import torch

from lockstep.tracefmt import schema as S
from lockstep.spec import contract as C

from .envelope import Message
from .errors import Ids, TripwireError, ValidationFailure
from .generator import Generator


def check_geometry(gen: Generator, msg: Message, *, rank: int, group: str) -> None:
    """Mesh-side checks the generic contract cannot make: tensor geometry against the model and
    ``current_start_frame`` against the mesh's own cache progress (drift tripwire)."""
    mc, m, t = gen.mc, msg.meta, msg.tensors
    kw = {"rank": rank, "group": group, "ids": msg.ids}
    want = {"latents": (1, mc.frames_per_chunk, mc.tokens_per_frame, mc.latent_channels),
            "conditioning_embeds": (1, mc.text_len, mc.text_dim),
            "denoising_step_list": (m["num_denoise_steps"],)}
    if m.get("do_kv_recompute"):
        want["context_frames"] = (1, mc.context_frames, mc.tokens_per_frame, mc.latent_channels)
    for key, shape in want.items():
        got = tuple(t[key].shape) if key in t else None
        if got != shape:
            raise ValidationFailure(f"shape {got} != expected {shape}", field=key, **kw)
    s = m["current_start_frame"]
    if not m["init_cache"] and s != gen.next_start_frame:
        raise ValidationFailure(
            f"current_start_frame {s} != the mesh cache's next start frame {gen.next_start_frame} "
            f"(only init_cache may move it)", field="current_start_frame", **kw)
    if m.get("do_kv_recompute") and s < mc.context_frames:
        raise ValidationFailure(f"recompute at start frame {s} < context_frames {mc.context_frames}",
                                field="do_kv_recompute", **kw)


def run_phase_b(gen: Generator, msg: Message, *, trace: S.TraceWriter, rank: int, group: str | None,
                note_compiled=None, mesh_ms: float = 0.0) -> tuple[torch.Tensor, int, float]:
    """Returns (latents_out, observed_generator_calls, tB_ms)."""
    t0 = time.perf_counter()
    m, T = msg.meta, msg.tensors
    ids: Ids = msg.ids
    epoch, s = m["cache_epoch"], m["current_start_frame"]
    if m["init_cache"]:
        gen.reset_kv(s)
        gen.reset_crossattn()
        trace.emit(S.CACHE_RESET, what="kv", cache_epoch=epoch, start_frame=s)
        trace.emit(S.CACHE_RESET, what="crossattn", cache_epoch=epoch, start_frame=s)
    elif m["reset_crossattn_cache"]:
        gen.reset_crossattn()
        trace.emit(S.CACHE_RESET, what="crossattn", cache_epoch=epoch, start_frame=s)
    gen.conditioning = T["conditioning_embeds"]
    gen.bias = float(m["kv_cache_attention_bias"])
    observed = 0

    def called(kind: str, **extra):
        nonlocal observed
        ev = {"kind": kind, "call_index": observed, **ids.as_dict(), **extra}
        if gen.compiled and note_compiled is not None and gen.collectives_per_call:
            first, last = note_compiled(gen.collectives_per_call)
            ev.update(compiled=True, collectives=gen.collectives_per_call, seq_first=first, seq_last=last)
        trace.emit(S.GENERATOR_CALL, **ev)
        observed += 1

    if m["do_kv_recompute"]:
        ctx = T["context_frames"]
        start = s - ctx.shape[1]
        gen.reset_kv(start)
        gen.forward(ctx, 0.0, start)
        called("recompute", start_frame=start)
        ge, le = gen.indices
        trace.emit(S.CACHE_RECOMPUTE, cache_epoch=epoch, start_frame=start, end_index_global=ge, end_index_local=le)
    x = T["latents"]
    steps = [float(v) for v in T["denoising_step_list"].tolist()]
    evicted = 0
    for i, t in enumerate(steps):
        v, ev = gen.forward(x, t, s)
        evicted += ev
        called("denoise", step=i, timestep=t)
        t_next = steps[i + 1] if i + 1 < len(steps) else 0.0
        x = x + (t_next - t) / 1000.0 * v
    gen.next_start_frame = s + x.shape[1]
    ge, le = gen.indices
    trace.emit(S.CACHE_ADVANCE, cache_epoch=epoch, start_frame=s, end_index_global=ge, end_index_local=le,
               evicted=evicted, next_start_frame=gen.next_start_frame)
    expected = m["expected_generator_calls"]
    trace.emit(S.PHASE_B_END, expected=expected, observed=observed, **ids.as_dict())
    if observed != C.expected_generator_calls(m["do_kv_recompute"], m["num_denoise_steps"]) or observed != expected:
        raise TripwireError(f"observed_generator_calls {observed} != expected_generator_calls {expected}",
                            wire="call_count", rank=rank, group=group or "-", ids=ids)
    if mesh_ms > 0:
        time.sleep(mesh_ms / 1000.0)
    return x, observed, (time.perf_counter() - t0) * 1e3
