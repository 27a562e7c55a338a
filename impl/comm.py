"""The one comm layer: every op names its group, membership is checked before calling, every op is
recorded (enter/exit) in the rank's trace with a per-group sequence number.  ``comm_exit`` is written
when the op has completed on every backend: on NCCL (a CUDA device) the stream is synchronized first,
so a rank whose partner never arrives is recorded inside the op, as on gloo.

Sequence numbers: collectives count per group from 1 (Flight Recorder's ``collective_seq_id``
convention); point-to-point ops count per (group, peer, direction) from 1 and carry ``p2p: true``.
Inside Phase B only functional all-reduces on the Phase-B group are allowed (FM-08 / FM-22 guard).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as fc

from lockstep.tracefmt import schema as S

from .errors import CommError, ForbiddenOpError, Ids, WrongGroupError, is_timeout_message
from .world import World


def _ids_list(ids: Ids) -> list[int]:
    """``comm_enter.ids``: the ids of the message the op carries (the caller's ``msg_ids``; else the
    rank's current ids, e.g. a receiver's before it parses the header)."""
    return [ids.call_id, ids.chunk_index, ids.cache_epoch]


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


class PendingSend:
    """An isend in flight.  ``wait()`` completes it and records its exit."""

    def __init__(self, comm: "Comm", work, enter: dict, tensor: torch.Tensor):
        self.comm, self.work, self.enter, self.tensor = comm, work, enter, tensor
        self.done = False

    def wait(self) -> None:
        if self.done:
            return
        self.done = True
        self.comm._finish(self.enter, lambda: self.work.wait())


class Comm:
    def __init__(self, world: World, trace: S.TraceWriter, ids: Ids | None = None):
        self.world = world
        self.rank = world.rank
        self.trace = trace
        self.ids = ids or Ids()
        self.seq: dict[str, int] = defaultdict(int)
        self.p2p_seq: dict[tuple, int] = defaultdict(int)
        self._phase_b_group: str | None = None
        self.in_phase_b = False
        # NCCL returns from an op once it is enqueued on the GPU stream; the trace's comm_exit means
        # "completed" on every backend, so on a CUDA device the op's stream is synchronized first
        dev = getattr(world, "device", None)
        self._sync_device = dev if (dev is not None and getattr(dev, "type", "cpu") == "cuda") else None

    # ---- guards --------------------------------------------------------------------------------
    def _member(self, group: str, op: str):
        info = self.world.groups.get(group)
        if info is None:
            raise WrongGroupError(f"{op} on unknown group {group!r}; groups: {sorted(self.world.groups)}",
                                  rank=self.rank, group=group, ids=self.ids)
        if info.group_rank is None or info.pg is None:
            raise WrongGroupError(
                f"{op}: rank {self.rank} is not a member of group {group} (global ranks {info.ranks})",
                rank=self.rank, group=group, ids=self.ids)
        return info

    def _outside_phase_b(self, op: str, group: str) -> None:
        if self.in_phase_b:
            raise ForbiddenOpError(
                f"{op} on group {group} inside Phase B: only functional all-reduces on group "
                f"{self._phase_b_group} may run in the generator (FM-08: no in-block broadcast or shape "
                f"inference; the envelope manifest is the only transport)",
                rank=self.rank, group=group, ids=self.ids)

    @contextlib.contextmanager
    def phase_b(self, group: str | None):
        self.in_phase_b, self._phase_b_group = True, group
        try:
            yield
        finally:
            self.in_phase_b, self._phase_b_group = False, None

    # ---- recording -----------------------------------------------------------------------------
    def _enter(self, op: str, group: str, purpose: str, t: torch.Tensor | None, p2p_peer: int | None = None,
               direction: str = "", msg_ids: Ids | None = None, **extra) -> dict:
        if p2p_peer is None:
            self.seq[group] += 1
            seq = self.seq[group]
        else:
            key = (group, p2p_peer, direction)
            self.p2p_seq[key] += 1
            seq = self.p2p_seq[key]
        rec = {"op": op, "group": group, "seq": seq, "purpose": purpose,
               "ids": _ids_list(msg_ids or self.ids), **extra}
        if p2p_peer is not None:
            rec["p2p"] = True
        if t is not None:
            rec["dtype"], rec["shape"] = _dtype_name(t), list(t.shape)
        self.trace.emit(S.COMM_ENTER, **rec)
        rec["_t0"] = time.perf_counter()
        return rec

    def _finish(self, rec: dict, fn):
        try:
            out = fn()
            if self._sync_device is not None:
                torch.cuda.current_stream(self._sync_device).synchronize()  # completed, not just enqueued
        except Exception as e:  # noqa: BLE001 - re-raised with context
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.trace.emit(S.COMM_EXIT, op=rec["op"], group=rec["group"], seq=rec["seq"], ok=False,
                            error=msg[:500], purpose=rec["purpose"])
            raise CommError(f"{rec['op']} on group {rec['group']} (seq {rec['seq']}, {rec['purpose']}) failed: {msg}",
                            timeout=is_timeout_message(msg), rank=self.rank, group=rec["group"], ids=self.ids) from e
        self.trace.emit(S.COMM_EXIT, op=rec["op"], group=rec["group"], seq=rec["seq"], ok=True,
                        ms=round((time.perf_counter() - rec["_t0"]) * 1e3, 3))
        return out

    # ---- control-plane ops (eager) -------------------------------------------------------------
    def broadcast(self, t: torch.Tensor, src: int, group: str, purpose: str) -> torch.Tensor:
        """``src`` is group-local."""
        self._outside_phase_b("broadcast", group)
        info = self._member(group, "broadcast")
        rec = self._enter("broadcast", group, purpose, t, src=src)
        self._finish(rec, lambda: dist.broadcast(t, group=info.pg, group_src=src))
        return t

    def send(self, t: torch.Tensor, dst: int, group: str, tag: int, purpose: str, msg_ids: Ids | None = None) -> None:
        self._outside_phase_b("send", group)
        info = self._member(group, "send")
        rec = self._enter("send", group, purpose, t, p2p_peer=dst, direction="send", msg_ids=msg_ids, dst=dst, tag=tag)
        self._finish(rec, lambda: dist.send(t, group=info.pg, group_dst=dst, tag=tag))

    def isend(self, t: torch.Tensor, dst: int, group: str, tag: int, purpose: str, msg_ids: Ids | None = None) -> PendingSend:
        self._outside_phase_b("isend", group)
        info = self._member(group, "isend")
        rec = self._enter("isend", group, purpose, t, p2p_peer=dst, direction="send", msg_ids=msg_ids, dst=dst, tag=tag)
        box = []
        self._finish_post(rec, lambda: box.append(dist.isend(t, group=info.pg, group_dst=dst, tag=tag)))
        return PendingSend(self, box[0], rec, t)

    def _finish_post(self, rec: dict, fn) -> None:
        """Posting an async op: only a failure to post is recorded now; the exit comes on wait()."""
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - re-raised by _finish with context
            err = e

            def reraise():
                raise err

            self._finish(rec, reraise)

    def recv(self, t: torch.Tensor, src: int, group: str, tag: int, purpose: str) -> torch.Tensor:
        self._outside_phase_b("recv", group)
        info = self._member(group, "recv")
        rec = self._enter("recv", group, purpose, t, p2p_peer=src, direction="recv", src=src, tag=tag)
        self._finish(rec, lambda: dist.recv(t, group=info.pg, group_src=src, tag=tag))
        return t

    def all_gather(self, t: torch.Tensor, group: str, purpose: str) -> list[torch.Tensor]:
        self._outside_phase_b("all_gather", group)
        info = self._member(group, "all_gather")
        out = [torch.empty_like(t) for _ in info.ranks]
        rec = self._enter("all_gather", group, purpose, t)
        self._finish(rec, lambda: dist.all_gather(out, t, group=info.pg))
        return out

    def all_reduce(self, t: torch.Tensor, group: str, purpose: str) -> torch.Tensor:
        self._outside_phase_b("all_reduce", group)
        info = self._member(group, "all_reduce")
        rec = self._enter("all_reduce", group, purpose, t, reduce_op="sum")
        self._finish(rec, lambda: dist.all_reduce(t, group=info.pg))
        return t

    # ---- generator collectives (functional; traceable by torch.compile) ------------------------
    def fc_all_reduce(self, t: torch.Tensor, group: str, purpose: str) -> torch.Tensor:
        if self.in_phase_b and group != self._phase_b_group:
            raise WrongGroupError(
                f"Phase B collective ({purpose}) issued on group_used={group}, expected={self._phase_b_group}; "
                f"raised before the backend was called", rank=self.rank, group=group, ids=self.ids)
        info = self._member(group, "all_reduce")
        if torch.compiler.is_compiling():
            return fc.wait_tensor(fc.all_reduce(t, "sum", info.pg))
        rec = self._enter("all_reduce", group, purpose, t, funcol=True, reduce_op="sum")
        return self._finish(rec, lambda: fc.wait_tensor(fc.all_reduce(t, "sum", info.pg)))

    def note_compiled_collectives(self, group: str, n: int) -> tuple[int, int]:
        """Compiled code issues collectives the recorder cannot see one by one: keep the per-group
        sequence numbers aligned (with Flight Recorder) by advancing them; returns (first, last)."""
        first = self.seq[group] + 1
        self.seq[group] += n
        return first, self.seq[group]
