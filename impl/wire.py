"""Wire framing, identical for envelopes and results:
header (int64[5]) -> meta size (int64[1]) -> meta bytes (uint8[n]) -> one tensor per spec, in
tensor_specs order.  NOOP/SHUTDOWN/ERROR headers carry nothing after them.

Broadcast framing (TP v1.1, PP1 mesh) uses a group-local ``src``.  Point-to-point framing (PP)
tags every field with (cache_epoch, call_id, field) so a stale field is never read as current work
(gloo matches by tag; NCCL ignores tags and relies on the FIFO order, which is the same).
"""
from __future__ import annotations

import torch

from lockstep.tracefmt import schema as S
from lockstep.spec import contract as C

from .comm import Comm, PendingSend
from .envelope import MAX_META_BYTES, Message, Prepared, assemble, decode_meta, dtype_from_name, parse_header
from .errors import Ids, ValidationFailure

TAG_HEADER = 1
TAG_RESULT_HEADER = 2


def field_tag(ids: Ids, field_id: int, result: bool) -> int:
    return (((ids.cache_epoch & 0x3) << 29) | ((1 << 28) if result else 0)
            | ((ids.call_id & 0xFFFFF) << 8) | min(field_id, 255))


def header_event(trace: S.TraceWriter, ev: str, action: C.Action, ids: Ids, group: str, **extra) -> None:
    trace.emit(ev, action=action.name, group=group, **ids.as_dict(), **extra)


# ---- broadcast framing -------------------------------------------------------------------------
def bcast_header(comm: Comm, group: str, header: torch.Tensor, action: C.Action, ids: Ids) -> None:
    comm.broadcast(header, 0, group, "header")
    header_event(comm.trace, S.HEADER_SENT, action, ids, group)


def bcast_payload(comm: Comm, group: str, prep: Prepared) -> None:
    size = torch.tensor([prep.meta_bytes.numel()], dtype=torch.int64, device=prep.header.device)
    comm.broadcast(size, 0, group, "meta_size")
    comm.broadcast(prep.meta_bytes, 0, group, "meta")
    for s, t in zip(prep.specs, prep.tensors):
        comm.broadcast(t, 0, group, f"tensor:{s.key}[{s.index}]")


def bcast_send(comm: Comm, group: str, prep: Prepared) -> None:
    bcast_header(comm, group, prep.header, prep.action, prep.msg.ids)
    if prep.action == C.Action.INFER:
        bcast_payload(comm, group, prep)


def bcast_recv_header(comm: Comm, group: str, device) -> tuple[C.Action, Ids]:
    h = torch.empty(C.HEADER_SHAPE, dtype=torch.int64, device=device)
    comm.broadcast(h, 0, group, "header")
    action, ids, _ = parse_header(h)
    comm.ids.call_id, comm.ids.chunk_index, comm.ids.cache_epoch = ids.call_id, ids.chunk_index, ids.cache_epoch
    header_event(comm.trace, S.HEADER_RECV, action, ids, group)
    return action, ids


def _alloc_and_check(size: int, ids: Ids, comm: Comm, group: str) -> None:
    if not 0 < size <= MAX_META_BYTES:
        raise ValidationFailure(f"meta size {size} outside (0, {MAX_META_BYTES}]: refusing to allocate",
                                field="meta_size", rank=comm.rank, group=group, ids=ids)


def bcast_recv_payload(comm: Comm, group: str, kind: str, ids: Ids, device) -> Message:
    size = torch.empty(1, dtype=torch.int64, device=device)
    comm.broadcast(size, 0, group, "meta_size")
    n = int(size.item())
    _alloc_and_check(n, ids, comm, group)
    raw = torch.empty(n, dtype=torch.uint8, device=device)
    comm.broadcast(raw, 0, group, "meta")
    meta, specs = decode_meta(bytes(raw.cpu().numpy().tobytes()), kind, ids=ids, rank=comm.rank, group=group)
    tensors = []
    for s in specs:
        t = torch.empty(s.shape, dtype=dtype_from_name(s.dtype, s.key), device=device)
        comm.broadcast(t, 0, group, f"tensor:{s.key}[{s.index}]")
        tensors.append(t)
    return assemble(kind, meta, specs, tensors)


# ---- point-to-point framing --------------------------------------------------------------------
def p2p_post(comm: Comm, group: str, dst: int, prep: Prepared, *, result: bool, blocking: bool) -> list[PendingSend]:
    """Send a prepared message.  ``blocking=False`` posts isends (the rank0 comms thread) and returns
    them; the caller keeps them (and so the tensors) alive until ``wait()``."""
    ids = prep.msg.ids
    parts = [(prep.header, TAG_RESULT_HEADER if result else TAG_HEADER, "result_header" if result else "header")]
    if prep.action in (C.Action.INFER,) or (result and prep.action == C.Action.ERROR):
        size = torch.tensor([prep.meta_bytes.numel()], dtype=torch.int64, device=prep.header.device)
        parts.append((size, field_tag(ids, 0, result), "meta_size"))
        parts.append((prep.meta_bytes, field_tag(ids, 1, result), "meta"))
        for i, (s, t) in enumerate(zip(prep.specs, prep.tensors)):
            parts.append((t, field_tag(ids, 2 + i, result), f"tensor:{s.key}[{s.index}]"))
    pend = []
    for k, (t, tag, purpose) in enumerate(parts):
        if blocking:
            comm.send(t, dst, group, tag, purpose, msg_ids=ids)
        else:  # the rank0 comms thread: the main thread may already plan the next chunk (comm.ids)
            pend.append(comm.isend(t, dst, group, tag, purpose, msg_ids=ids))
        if k == 0 and not result:
            header_event(comm.trace, S.HEADER_SENT, prep.action, ids, group, dst=dst)
    return pend


def p2p_send_bare_header(comm: Comm, group: str, dst: int, header: torch.Tensor, action: C.Action, ids: Ids,
                         blocking: bool = True) -> list[PendingSend]:
    if blocking:
        comm.send(header, dst, group, TAG_HEADER, "header", msg_ids=ids)
        out = []
    else:
        out = [comm.isend(header, dst, group, TAG_HEADER, "header", msg_ids=ids)]
    header_event(comm.trace, S.HEADER_SENT, action, ids, group, dst=dst)
    return out


def p2p_recv_header(comm: Comm, group: str, src: int, device, *, result: bool) -> tuple[C.Action, Ids]:
    h = torch.empty(C.HEADER_SHAPE, dtype=torch.int64, device=device)
    comm.recv(h, src, group, TAG_RESULT_HEADER if result else TAG_HEADER, "result_header" if result else "header")
    action, ids, _ = parse_header(h)
    if not result:
        comm.ids.call_id, comm.ids.chunk_index, comm.ids.cache_epoch = ids.call_id, ids.chunk_index, ids.cache_epoch
        header_event(comm.trace, S.HEADER_RECV, action, ids, group, src=src)
    return action, ids


def p2p_recv_payload(comm: Comm, group: str, src: int, kind: str, ids: Ids, device) -> Message:
    result = kind == "result"
    size = torch.empty(1, dtype=torch.int64, device=device)
    comm.recv(size, src, group, field_tag(ids, 0, result), "meta_size")
    n = int(size.item())
    _alloc_and_check(n, ids, comm, group)
    raw = torch.empty(n, dtype=torch.uint8, device=device)
    comm.recv(raw, src, group, field_tag(ids, 1, result), "meta")
    meta, specs = decode_meta(bytes(raw.cpu().numpy().tobytes()), kind, ids=ids, rank=comm.rank, group=group)
    tensors = []
    for i, s in enumerate(specs):
        t = torch.empty(s.shape, dtype=dtype_from_name(s.dtype, s.key), device=device)
        comm.recv(t, src, group, field_tag(ids, 2 + i, result), f"tensor:{s.key}[{s.index}]")
        tensors.append(t)
    return assemble(kind, meta, specs, tensors)
