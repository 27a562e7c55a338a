"""Errors that name where they happened: rank, group, call_id, chunk_index, cache_epoch."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Ids:
    """The identifiers of the message a rank is working on (updated by the control planes)."""

    call_id: int = -1
    chunk_index: int = -1
    cache_epoch: int = -1

    def as_dict(self) -> dict:
        return {"call_id": self.call_id, "chunk_index": self.chunk_index, "cache_epoch": self.cache_epoch}


class LockstepError(RuntimeError):
    """Base: carries a context prefix ``[rank R group G call_id C chunk_index K cache_epoch E]``."""

    kind = "error"

    def __init__(self, message: str, *, rank: int = -1, group: str = "-", ids: Ids | None = None, **extra):
        ids = ids or Ids()
        self.rank, self.group, self.ids, self.extra = rank, group, Ids(**ids.as_dict()), extra
        self.bare = message
        super().__init__(
            f"[rank {rank} group {group} call_id={ids.call_id} chunk_index={ids.chunk_index} "
            f"cache_epoch={ids.cache_epoch}] {self.kind}: {message}")


class PreflightError(LockstepError):
    """Raised before a commitment point: nothing was put on the wire."""

    kind = "preflight failed"

    def __init__(self, message: str, *, step: str, field: str, **kw):
        self.step, self.field = step, field
        super().__init__(f"step {step}, field {field}: {message}", **kw)


class ValidationFailure(LockstepError):
    kind = "validation failed"

    def __init__(self, message: str, *, field: str, **kw):
        self.field = field
        super().__init__(f"field {field}: {message}", **kw)


class TripwireError(LockstepError):
    kind = "tripwire"

    def __init__(self, message: str, *, wire: str, **kw):
        self.wire = wire
        super().__init__(f"{wire}: {message}", **kw)


class WrongGroupError(LockstepError):
    kind = "wrong group"


class ForbiddenOpError(LockstepError):
    kind = "forbidden op"


class CommError(LockstepError):
    """A torch.distributed op raised; ``timeout`` says whether it was a PG timeout."""

    kind = "comm failed"

    def __init__(self, message: str, *, timeout: bool = False, **kw):
        self.timeout = timeout
        super().__init__(message, **kw)


class TerminalAction(LockstepError):
    """A terminal ERROR header arrived: stop."""

    kind = "terminal action"


class MeshError(LockstepError):
    """Rank0 received an ok=False result: the mesh is unusable (treated as fatal)."""

    kind = "mesh error"


class PeerTimeout(LockstepError):
    kind = "timeout"


class RequestFailed(LockstepError):
    """An unsafe-mode server role failed a request after its commitment point and stays alive."""

    kind = "request failed after commitment point"


def is_timeout_message(msg: str) -> bool:
    m = msg.lower()
    return "timed out" in m or "timeout" in m or "deadline" in m
