"""Rank 0 prepares a checkpoint first; the other ranks wait at a barrier, then all load and sync.

Incidents:
- the barrier ended up inside ``if rank == 0`` during a refactor, so rank 0 waited in a barrier the
  other ranks never called while they went on to the next collective ("rank 0 calls dist.barrier()
  while other processes don't. Cause deadlock forever",
  https://github.com/huggingface/transformers-bloom-inference/pull/40; the same shape as
  https://github.com/pytorch/pytorch/issues/138322, where a rank that skips a barrier leaves the rest
  hanging);
- an exception on one rank leaves its partners in the collective until the timeout
  (https://github.com/dmlc/xgboost/issues/11217, "NCCL might hang (until timeout) during exception"):
  a rank that raises must exit (or reach the barrier) rather than swallow the error and stay alive.

The model: rank 0 downloads (the ``download-error`` fault makes it raise), every rank meets at the
barrier, then rank 0 broadcasts the weights.  One role runs on every rank and branches on ``c.rank == 0``,
as the script does; ranks 1 to N-1 take the same branches, so they are declared symmetric (the checker
runs each step that reads the rank again at every symmetric rank and refuses the declaration where
anything differs).  At 16 ranks that is 247 states; without the declaration, 688,144.

Each planted bug is a named patch on the hardened role (``PATCHES`` below): here each one only moves
a transition's destination (``Role.replace(name, dst=...)``).

- hardened: the barrier is called by every rank; a failed download raises and the process exits, so on
  gloo its partners fail fast (HOLDS with fail-fast ends); on nccl without async error handling the
  same exit strands them (``--backend nccl``: STRANDED; use nccl-async or a monitored barrier there);
- ``conditional-barrier``: only rank 0 calls the barrier: it meets the others' broadcast ->
  COLLECTIVE_MISMATCH;
- ``swallow-error``: rank 0 catches the download error, logs it and stays up serving: its partners
  wait at the barrier for ever -> STRANDED on every backend.
"""
from lockstep.model.api import COLLECTIVE_MISMATCH, STRANDED
from lockstep.spec.fabric import Group, barrier, broadcast
from lockstep.spec.machine import DONE, FAILED, ActorDef, Protocol, Role, parse_faults
from lockstep.spec.patch import Draft, Patches
from lockstep.spec.registry import Param, SpecInfo, Variant

WEIGHTS = ("bf16", "weights")
FAULTS = ("download-error",)


def loader() -> Role:
    """The hardened startup; the planted bugs are patches on it (below)."""
    r = Role("loader", "START", {"ckpt": None})
    r.local("download", "START", "SYNC", guard=lambda c: c.rank == 0, do=lambda c: c.set(ckpt="v1"),
            doc="rank 0 fetches the checkpoint once for the node")
    r.local("download_fails", "START", FAILED, fault="download-error",
            guard=lambda c: c.rank == 0, doc="the download raises")
    r.local("wait_for_main", "START", "SYNC", guard=lambda c: c.rank != 0,
            doc="the other ranks go to the barrier")
    r.op("barrier", "SYNC", "LOAD", lambda c: barrier("world"))
    r.op("sync_weights", "LOAD", DONE, lambda c: broadcast("world", 0, WEIGHTS, data=c.v.ckpt),
         after=lambda c, data: c.set(ckpt=data))
    return r


PATCHES = Patches()


@PATCHES("conditional-barrier")
def conditional_barrier(draft: Draft) -> None:
    """The barrier moved inside ``if rank == 0``: the other ranks go straight to loading."""
    draft["loader"].replace("wait_for_main", dst="LOAD", doc="planted bug: the other ranks skip the barrier")


@PATCHES("swallow-error")
def swallow_error(draft: Draft) -> None:
    """rank 0 catches the download error, logs it and stays up serving."""
    draft["loader"].replace("download_fails", dst="SERVE")


def build(params, variant, backend):
    n = params["ranks"]
    role = loader()
    PATCHES.apply(variant, Draft({"loader": role}, params))
    return Protocol("main-first", groups={"world": Group("world", tuple(range(n)))}, backend=backend, params=params,
                    variant=variant, actors=[ActorDef(r, "main", role) for r in range(n)],
                    faults=parse_faults(params["faults"], FAULTS), symmetric=tuple(range(1, n)))


SPEC = SpecInfo(
    name="main-first",
    description="rank 0 prepares a checkpoint while the others wait at a barrier; then all load it",
    params={"ranks": Param(3, "ranks"), "faults": Param("all", "enabled faults: all, none or download-error")},
    variants={
        "conditional-barrier": Variant("the barrier is called only on rank 0", (COLLECTIVE_MISMATCH,)),
        "swallow-error": Variant("rank 0 swallows the download error and stays up", (STRANDED,)),
    },
    build=build,
)
