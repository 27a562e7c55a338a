"""Sharded checkpoint save: every rank writes its shard, the ranks agree that every write landed, and
only then the coordinator (rank 0) publishes the checkpoint's metadata; no rank returns from save()
before the checkpoint is settled (published, or abandoned because a write failed).

Incidents:
- the coordinator published the completion marker because *its own* copy had succeeded, although
  another rank's copy had failed: a checkpoint that looks complete and is not
  (https://github.com/ByteDance-Seed/VeOmni/pull/1172, "do not publish a staged checkpoint when another
  rank's copy failed"; the fix decides with a collective over every rank's failure flag);
- a rank whose copy failed went to the cleanup barrier of its ``finally`` block, while the other ranks
  were in the collective that closes the copy phase: "This deadlocks the save" (found in review of
  https://github.com/ByteDance-Seed/VeOmni/pull/1164);
- save() returned on the other ranks before rank 0 had written the metadata, so readers on those ranks
  raced rank 0's writes (https://github.com/KempnerInstitute/KempnerForge/issues/49; the fix ends save()
  with a collective every rank waits in).

The protocol all three follow is the one proposed for torch.distributed.checkpoint
(https://github.com/pytorch/pytorch/issues/76395): write, agree on the results, rank 0 writes the
metadata, rank 0 tells the ranks.  One role runs on every rank and branches on ``c.rank == 0``, so
ranks 1 to N-1 are declared symmetric.  Both properties are monitors over event names, so they read
no variables: the reductions need no ``observed=`` declarations.

- hardened: the write flags are all-reduced (max of "failed"), rank 0 publishes only when no write
  failed, and broadcasts the outcome; every rank returns after that broadcast -> HOLDS;
- ``publish-on-local-ok``: rank 0 decides from its own write -> TORN_CHECKPOINT;
- ``cleanup-barrier-first``: a failed write goes to the cleanup barrier -> COLLECTIVE_MISMATCH;
- ``no-final-sync``: no closing broadcast; the other ranks return once they agreed -> EARLY_RETURN.
"""
from lockstep.model.api import COLLECTIVE_MISMATCH
from lockstep.spec.fabric import Group, all_reduce, barrier, broadcast
from lockstep.spec.machine import DONE, FAILED, ActorDef, Protocol, Role, parse_faults
from lockstep.spec.monitor import Monitor, Reject
from lockstep.spec.patch import Draft, Patches
from lockstep.spec.registry import Param, SpecInfo, Variant

FLAG = ("int64", (1,))
FAULTS = ("write-error",)

# a write failed, and the metadata was published all the same
COMPLETE = Monitor.never_after("published_only_if_every_write_landed", "TORN_CHECKPOINT",
                               first="write_failed", then="published")
# save() returns on a rank only once rank 0 has published or abandoned the checkpoint
SETTLED = Monitor("returns_after_settled", "EARLY_RETURN", init="open",
                  on={("open", "published"): "settled", ("open", "aborted"): "settled",
                      ("open", "save_returned"): Reject("a rank returned from save() before the checkpoint was settled")})


def saver() -> Role:
    """The hardened save; the planted bugs are patches on it (below)."""
    r = Role("saver", "WRITE", {"failed": False, "anyone_failed": None})
    r.local("write_shard", "WRITE", "AGREE", doc="this rank's shard is written and fsynced")
    r.local("write_fails", "WRITE", "AGREE", fault="write-error", do=lambda c: c.set(failed=True),
            event="write_failed", doc="the write raises; the error is kept for the agreement")
    r.op("agree", "AGREE", "DECIDE", lambda c: all_reduce("world", FLAG, data=int(c.v.failed), reduce="max"),
         after=lambda c, anyone: c.set(anyone_failed=bool(anyone)), doc="did any rank's write fail?")
    r.local("publish", "DECIDE", "ANNOUNCE", guard=lambda c: c.rank == 0 and not c.v.anyone_failed,
            why="rank 0, no write failed", event="published", doc="rank 0 writes the metadata: the checkpoint is complete")
    r.local("abandon", "DECIDE", "ANNOUNCE", guard=lambda c: c.rank == 0 and c.v.anyone_failed,
            why="rank 0, a write failed", event="aborted", doc="rank 0 leaves the checkpoint unpublished")
    r.local("await_outcome", "DECIDE", "ANNOUNCE", guard=lambda c: c.rank != 0, why="not rank 0")
    r.op("announce", "ANNOUNCE", "RETURN", lambda c: broadcast("world", 0, FLAG, data=int(not c.v.anyone_failed)),
         doc="rank 0 tells every rank how the save ended")
    r.local("return", "RETURN", DONE, event="save_returned")
    return r


PATCHES = Patches()


@PATCHES("publish-on-local-ok")
def publish_on_local_ok(draft: Draft) -> None:
    """rank 0 publishes when its own write succeeded."""
    role = draft["saver"]
    role.replace("publish", guard=lambda c: c.rank == 0 and not c.v.failed, why="rank 0, its own write landed")
    role.replace("abandon", guard=lambda c: c.rank == 0 and c.v.failed, why="rank 0, its own write failed")


@PATCHES("cleanup-barrier-first")
def cleanup_barrier_first(draft: Draft) -> None:
    """A failed write raises into the ``finally`` block, whose barrier is this rank's next collective."""
    role = draft["saver"]
    role.replace("write_fails", dst="CLEANUP")
    role.op("cleanup_barrier", "CLEANUP", FAILED, lambda c: barrier("world"), doc="finally: barrier, then re-raise")


@PATCHES("no-final-sync")
def no_final_sync(draft: Draft) -> None:
    """No closing collective: each rank returns once the agreement is done."""
    role = draft["saver"]
    for name in ("publish", "abandon", "await_outcome"):
        role.replace(name, dst="RETURN")
    role.remove("announce")


def build(params, variant, backend):
    n = params["ranks"]
    role = saver()
    PATCHES.apply(variant, Draft({"saver": role}, params))
    return Protocol("checkpoint-commit", groups={"world": Group("world", tuple(range(n)))}, backend=backend,
                    params=params, variant=variant, actors=[ActorDef(r, "main", role) for r in range(n)],
                    faults=parse_faults(params["faults"], FAULTS), monitors=[COMPLETE, SETTLED],
                    symmetric=tuple(range(1, n)))


SPEC = SpecInfo(
    name="checkpoint-commit",
    description="every rank writes its shard; rank 0 publishes the metadata only once all writes landed",
    params={"ranks": Param(4, "ranks", min=2), "faults": Param("all", "enabled faults: all, none or write-error")},
    variants={
        "publish-on-local-ok": Variant("rank 0 publishes when its own write succeeded", ("TORN_CHECKPOINT",)),
        "cleanup-barrier-first": Variant("a failed write goes to the cleanup barrier", (COLLECTIVE_MISMATCH,)),
        "no-final-sync": Variant("the ranks return before rank 0 settled the checkpoint", ("EARLY_RETURN",)),
    },
    build=build,
)
