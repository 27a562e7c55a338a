"""c10d semantics, modelled once for every protocol: ops, process groups, backend profiles.

An op is what a transition issues to the fabric; the issuing process blocks until the fabric
completes it.  Collectives match per group: each member's next call is matched with the others'
next call, and a signature difference (op, group-local root, dtype, shape, reduce op) is a
COLLECTIVE_MISMATCH.  Because matching is by position, a skipped collective silently pairs with the
next one of the same kind, exactly as measured on gloo (docs/platform-facts.md).  Point-to-point ops are
rendezvous (a send blocks until the matching recv is posted, as measured on gloo) and match per
(src, dst, group): by tag on gloo, FIFO ignoring tags on NCCL.  ``src``/``dst``/``root`` are always
group-local ranks.

Backend profiles decide what a process sees when a partner's process is gone (exited, crashed,
killed) — the difference between "crash" and "hang":
- ``gloo``: an immediate error ("Connection reset/closed by peer"), as measured;
- ``nccl``: nothing (no async error handling): the op blocks for ever;
- ``nccl-async``: an error once the PG timeout fires (TORCH_NCCL_ASYNC_ERROR_HANDLING with a
  finite timeout), modelled as a step that is enabled only when nothing else can happen.
A partner that is alive but never calls (it moved on, idles, or is wedged) is never detected by any
backend before the PG timeout, which lockstep counts as a hang, not as a recovery.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

COLLECTIVES = frozenset({"broadcast", "all_reduce", "all_gather", "barrier", "monitored_barrier"})
P2P = frozenset({"send", "recv"})


class Op(NamedTuple):
    kind: str            # broadcast | all_reduce | all_gather | barrier | monitored_barrier | send | recv
    group: str
    peer: int = -1       # group-local: broadcast root, send dst, recv src; -1 otherwise
    tag: int = 0
    sig: tuple = ()      # (dtype, shape) or any hashable signature the matched calls must share
    data: Any = None     # broadcast root's payload, a send's payload, a reduce/gather contribution
    reduce: str = ""     # all_reduce: sum | max | min

    def signature(self) -> tuple:
        return (self.kind, self.peer if self.kind == "broadcast" else -1, self.sig, self.reduce)

    def short(self) -> str:
        parts = [self.kind, f"group={self.group}"]
        if self.kind == "broadcast":
            parts.append(f"src={self.peer}")
        elif self.kind == "send":
            parts.append(f"dst={self.peer}")
        elif self.kind == "recv":
            parts.append(f"src={self.peer}")
        if self.kind in P2P and self.tag:
            parts.append(f"tag={self.tag}")
        if self.sig:
            parts.append("sig=" + ",".join(str(x) for x in self.sig))
        if self.reduce:
            parts.append(f"op={self.reduce}")
        return " ".join(parts)


# --- op constructors (what spec authors write) ------------------------------------------
def broadcast(group: str, src: int, sig: tuple, data: Any = None) -> Op:
    return Op("broadcast", group, src, 0, sig, data)


def all_reduce(group: str, sig: tuple, data: Any = 0, reduce: str = "sum") -> Op:
    return Op("all_reduce", group, -1, 0, sig, data, reduce)


def all_gather(group: str, sig: tuple, data: Any = None) -> Op:
    return Op("all_gather", group, -1, 0, sig, data)


def barrier(group: str) -> Op:
    return Op("barrier", group)


def monitored_barrier(group: str) -> Op:
    return Op("monitored_barrier", group)


def send(group: str, dst: int, sig: tuple, data: Any = None, tag: int = 0) -> Op:
    return Op("send", group, dst, tag, sig, data)


def recv(group: str, src: int, sig: tuple, tag: int = 0) -> Op:
    return Op("recv", group, src, tag, sig)


def combine(kind: str, reduce: str, contributions: list[Any]) -> Any:
    """The value every member gets back when a collective completes."""
    if kind == "all_gather":
        return tuple(contributions)
    if kind == "all_reduce":
        if reduce == "max":
            return max(contributions)
        if reduce == "min":
            return min(contributions)
        return sum(contributions)
    return None


@dataclass(frozen=True)
class Profile:
    name: str
    gone_peer: str        # "immediate" | "timeout" | "never": when a blocked op sees a gone partner
    p2p_tags: bool        # True: p2p matched by tag (gloo); False: FIFO ignoring tags (NCCL)


PROFILES = {
    "gloo": Profile("gloo", gone_peer="immediate", p2p_tags=True),
    "nccl": Profile("nccl", gone_peer="never", p2p_tags=False),
    "nccl-async": Profile("nccl-async", gone_peer="timeout", p2p_tags=False),
}


@dataclass(frozen=True)
class Group:
    name: str
    ranks: tuple[int, ...]  # global ranks; the group-local rank is the position

    def local(self, global_rank: int) -> int:
        return self.ranks.index(global_rank)
