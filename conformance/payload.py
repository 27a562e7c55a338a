"""Run-level checks the spec's symbolic signatures cannot make: concrete payload signatures against the
contract's field table, and rank 0's chunk accounting against the manifest.

- payload: every ``tensor:<field>[k]`` op carries a tensor field of the envelope or result table (never
  ``video``), with a wire dtype; ``denoising_step_list`` is int64 of length ``steps``; ``latents``,
  ``latents_out``, ``context_frames`` and ``conditioning_embeds`` have the shapes the run's model
  config gives them, and every float payload of the run has one dtype.  A tensor whose dtype or shape
  was changed on every rank alike passes c10d matching and the symbolic replay; it fails here.
  Runs with an injected fault or an ``--unsafe`` switch are skipped (their faults may put a bad payload
  on the wire on purpose; the spec models that).
- chunks: when rank 0 ended cleanly, every chunk the manifest plans (``config.chunks``) is emitted or
  dropped exactly once on rank 0, and no other chunk is.  A run whose last chunk was cut from every
  rank, or whose manifest promises more chunks than it ran, fails here.
Each problem is a dict like fabric_check's mismatches (kind, rank, line, field, message).
"""
from __future__ import annotations

import re

from ..tracefmt import schema as S
from .fabric_check import _mm

ENVELOPE_TENSORS = frozenset({"latents", "conditioning_embeds", "denoising_step_list", "context_frames"})
RESULT_TENSORS = frozenset({"latents_out"})
FORBIDDEN_TENSORS = frozenset({"video"})
WIRE_DTYPES = frozenset({"float32", "float16", "bfloat16", "int64"})
_TENSOR = re.compile(r"tensor:([A-Za-z_]\w*)(\[\d+\])?$")


def expected_shapes(cfg: dict) -> dict[str, tuple]:
    """field -> (dtype or None for 'the run's float dtype', shape or None) from the run's config."""
    m = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    out: dict[str, tuple] = {}
    steps = cfg.get("steps")
    out["denoising_step_list"] = ("int64", (steps,) if isinstance(steps, int) else None)
    try:
        lat = (1, int(m["frames_per_chunk"]), int(m["tokens_per_frame"]), int(m["latent_channels"]))
        ctx = (1, int(m["context_frames"]), int(m["tokens_per_frame"]), int(m["latent_channels"]))
        cond = (1, int(m["text_len"]), int(m["text_dim"]))
    except (KeyError, TypeError, ValueError):
        lat = ctx = cond = None
    out["latents"] = (None, lat)
    out["latents_out"] = (None, lat)
    out["context_frames"] = (None, ctx)
    out["conditioning_embeds"] = (None, cond)
    return out


class Shared:
    """What a run-level check carries from rank to rank (the ranks are checked one after the other)."""

    def __init__(self, manifest: dict):
        self.out: list[dict] = []
        self.float_dtype: tuple | None = None  # (dtype, rank, line) of the first float payload
        cfg = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
        self.skip = bool(manifest.get("fault") or manifest.get("unsafe") or cfg.get("fault") or cfg.get("unsafe"))
        self.want = expected_shapes(cfg)


def payloads_co(r: int, sh: Shared):
    """Payload signatures of rank r's tensor ops (a coroutine: send the events, then None; at most 20
    problems over all ranks)."""
    out, want = sh.out, sh.want
    while True:
        e = yield
        if e is None or len(out) >= 20 or sh.skip:
            return
        if e["ev"] != S.COMM_ENTER or not str(e.get("purpose", "")).startswith("tensor:"):
            continue
        mt = _TENSOR.match(e["purpose"])
        name = mt.group(1) if mt else e["purpose"]
        if name in FORBIDDEN_TENSORS:
            out.append(_mm("payload", r, e["i"], "purpose", f"{name} is never sent (the contract forbids it)"))
            continue
        if name not in ENVELOPE_TENSORS | RESULT_TENSORS:
            out.append(_mm("payload", r, e["i"], "purpose", f"{name!r} is not a tensor field of the envelope or result"))
            continue
        dt, shape = e.get("dtype"), e.get("shape")
        if dt is None:
            continue
        if dt not in WIRE_DTYPES:
            out.append(_mm("payload", r, e["i"], "dtype", f"{name}: {dt} is not a wire dtype ({', '.join(sorted(WIRE_DTYPES))})"))
            continue
        wdt, wshape = want.get(name, (None, None))
        if wdt is not None and dt != wdt:
            out.append(_mm("payload", r, e["i"], "dtype", f"{name}: {dt}, the contract says {wdt}"))
        elif wdt is None:
            fd = sh.float_dtype
            if fd is None:
                sh.float_dtype = (dt, r, e["i"])
            elif dt != fd[0]:
                out.append(_mm("payload", r, e["i"], "dtype", f"{name}: {dt}, but the run's payloads are {fd[0]} "
                                                           f"(rank {fd[1]} line {fd[2] + 1})"))
        if wshape is not None and shape is not None and tuple(shape) != tuple(wshape):
            out.append(_mm("payload", r, e["i"], "shape", f"{name}: shape {list(shape)}, the run's config gives {list(wshape)}"))


def chunks_co(manifest: dict, facts):
    """Rank 0's chunk accounting (a coroutine over rank 0's events, then None; ``facts`` -- its exit and
    whether its last line was cut off -- filled by then)."""
    cfg = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    chunks = cfg.get("chunks")
    seen: dict[int, int] = {}   # chunk -> the line index that first accounted for it
    out: list[dict] = []
    while True:
        e = yield
        if e is None:
            break
        if e["ev"] in (S.CHUNK_EMITTED, S.CHUNK_DROPPED) and isinstance(chunks, int):
            k = e["chunk_index"]
            if k in seen:
                out.append(_mm("chunks", 0, e["i"], "chunk_index", f"chunk {k} accounted for twice (first at line {seen[k] + 1})"))
            elif not 0 <= k < chunks:
                out.append(_mm("chunks", 0, e["i"], "chunk_index", f"chunk {k} is outside the manifest's {chunks} chunks"))
            seen[k] = e["i"]
    if not isinstance(chunks, int) or facts.truncated:
        return []
    ex = facts.exit
    if ex is None or ex.get("how") != "clean":
        return []  # an ended-early rank 0 accounts only for what it got to
    lost = []
    for k in range(chunks):  # bounded: stops after 50 lost chunks
        if k not in seen:
            lost.append(k)
            if len(lost) >= 50:
                break
    if lost:
        out.append(_mm("chunks", 0, ex["i"], "chunks", f"rank 0 ended cleanly without emitting or dropping chunk(s) "
                                                      f"{_ranges(lost)}{' ...' if len(lost) >= 50 else ''} of the manifest's {chunks}"))
    return out


def _ranges(xs: list[int]) -> str:
    parts, start = [], None
    for i, x in enumerate(xs):
        if start is None:
            start = x
        if i + 1 == len(xs) or xs[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ", ".join(parts)





def check_ids(run: S.RunTrace) -> list[dict]:
    """``comm_enter.ids`` = [call_id, chunk_index, cache_epoch] of the message the op carries: on the
    header op of an INFER message (sent or received: checked against the header event after it) and on
    every payload op of that message (meta size, meta, tensors) up to the next header."""
    out: list[dict] = []
    for r, tr in sorted(run.ranks.items()):
        co = ids_co(r, out)
        next(co)
        for e in tr.events:
            co.send(e)
            if len(out) >= 20:
                return out
        co.close()
    return out


def ids_co(r: int, out: list):
    """check_ids over rank r's events as they stream by (send the events, then None)."""
    msg_ids: list | None = None   # the current INFER message's ids, per (group, direction)
    last_header_enter: dict | None = None
    while True:
        e = yield
        if e is None or len(out) >= 20:
            return
        k = e["ev"]
        if k == S.COMM_ENTER:
            p = str(e.get("purpose", ""))
            if p in ("header", "result_header"):
                last_header_enter = e if p == "header" else None
                msg_ids = None
                continue
            if msg_ids is not None and (p in ("meta_size", "meta") or p.startswith("tensor:")) and e.get("ids") is not None:
                if list(e["ids"]) != msg_ids:
                    out.append(_mm("ids", r, e["i"], "ids", f"{p} of the message {msg_ids} carries ids {e['ids']}"))
            elif p in GEN_OR_OTHER:
                msg_ids = None
        elif k in (S.HEADER_SENT, S.HEADER_RECV) and e.get("action") == "INFER":
            want = [e["call_id"], e["chunk_index"], e["cache_epoch"]]
            h = last_header_enter
            if h is not None and h.get("ids") is not None and k == S.HEADER_SENT and list(h["ids"]) != want:
                out.append(_mm("ids", r, h["i"], "ids", f"the header op of message {want} carries ids {h['ids']}"))
            msg_ids = want
            last_header_enter = None


GEN_OR_OTHER = frozenset({"qnorm", "knorm", "attn_out", "xattn_out", "ffn_out", "parity", "parity_size", "load_ok", "plan",
                          "adhoc"})


def check_payloads(run: S.RunTrace) -> list[dict]:
    sh = Shared(run.manifest)
    for r, tr in sorted(run.ranks.items()):
        co = payloads_co(r, sh)
        next(co)
        try:
            for e in tr.events:
                co.send(e)
            co.send(None)
        except StopIteration:
            pass
    return sh.out


def check_chunks(run: S.RunTrace) -> list[dict]:
    from .fabric_check import RankFacts
    tr = run.ranks.get(0)
    if tr is None:
        return []
    facts = RankFacts(0)
    facts.exit, facts.truncated = tr.exit, tr.truncated
    co = chunks_co(run.manifest, facts)
    next(co)
    for e in tr.events:
        co.send(e)
    try:
        co.send(None)
    except StopIteration as s:
        return s.value
    return []


def check(run: S.RunTrace) -> list[dict]:
    return check_payloads(run) + check_chunks(run) + check_ids(run)
