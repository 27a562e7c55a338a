"""Data-parallel training with early stopping: the stop decision must be the same on every rank.

Incident: each DDP rank evaluated its own early-stopping criterion; when it fired on some ranks but
not on others, the stopped ranks left the training loop and the rest hung in the next epoch's
gradient all_reduce (https://github.com/Lightning-AI/pytorch-lightning/issues/379, "the training
hangs"; the same with a 1-hour NCCL watchdog timeout in
https://github.com/speechbrain/speechbrain/issues/1939).  The fix makes the decision collective:
rank 0's decision is broadcast (https://github.com/ultralytics/yolov5/pull/8345) or every rank's flag
is reduced so that all ranks stop together (Lightning's ``reduce_boolean_decision``).

The model: per epoch every rank runs one gradient all_reduce, then evaluates; its validation result
("improved" or not) is a nondeterministic choice; after ``patience`` epochs without improvement the
rank wants to stop.

- hardened: the ranks all_reduce their stop flags (max) and stop together;
- ``local-decision``: each rank stops on its own flag and exits.  Where a process that exits is seen
  at once (gloo: "Connection closed by peer") the waiting rank fails fast, which lockstep counts as
  safe; on NCCL without async error handling it waits for ever: STRANDED (the variant's documented
  backend is nccl; ``--backend gloo`` shows the fail-fast end);
- ``local-decision-teardown``: as above, but a stopped rank stays alive for its teardown (saving a
  checkpoint, idling until the job ends): STRANDED on every backend.
"""
from lockstep.model.api import INVARIANT, STRANDED
from lockstep.spec.fabric import Group, all_reduce
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import Param, SpecInfo, Variant

GRAD = ("fp32", "grads")
FLAG = ("int64", (1,))


def trainer(params, variant) -> Role:
    epochs, patience = params["epochs"], params["patience"]
    local = variant in ("local-decision", "local-decision-teardown")
    stopped = "TEARDOWN" if variant == "local-decision-teardown" else DONE
    r = Role("trainer", "TRAIN", {"epoch": 0, "bad": 0, "stop": False}, ids=("epoch",))
    r.local("epoch_done", "TRAIN", DONE, guard=lambda c: c.v.epoch >= epochs, doc="max epochs reached")
    r.op("allreduce_grads", "TRAIN", "EVAL", lambda c: all_reduce("world", GRAD, data=0),
         guard=lambda c: c.v.epoch < epochs)

    def evaluate(c):
        bad = 0 if c.choice == "improved" else c.v.bad + 1
        c.set(bad=bad, stop=bad >= patience, epoch=c.v.epoch + 1)
    r.local("validate", "EVAL", "DECIDE", choose=lambda c: ("improved", "worse"), do=evaluate,
            doc="this rank's validation metric improved or not (each rank sees its own shard)")
    if local:
        r.local("stop_early", "DECIDE", stopped, guard=lambda c: c.v.stop)
        r.local("continue", "DECIDE", "TRAIN", guard=lambda c: not c.v.stop)
    else:
        r.op("agree_on_stop", "DECIDE", ("TRAIN", DONE), lambda c: all_reduce("world", FLAG, data=int(c.v.stop), reduce="max"),
             after=lambda c, anyone: c.goto(DONE if anyone else "TRAIN"),
             doc="all ranks stop if any rank wants to (reduce_boolean_decision)")
    return r


def same_stop_epoch(world):
    """A property: ranks that finished training finished at the same epoch (the model they save is the
    same), read through the view (what it reads is recorded: the reductions and the symmetry check see it)."""
    epochs = {a.rank: a.vars.epoch for a in world.actors() if a.state == DONE and a.alive}
    if len(set(epochs.values())) > 1:
        return "ranks stopped at different epochs: " + ", ".join(f"rank {r}: {e}" for r, e in sorted(epochs.items()))
    return None


def build(params, variant, backend):
    n = params["ranks"]
    role = trainer(params, variant)
    return Protocol("early-stop", groups={"world": Group("world", tuple(range(n)))}, backend=backend, params=params,
                    variant=variant, actors=[ActorDef(r, "main", role) for r in range(n)],
                    invariants=[("same-stop-epoch", INVARIANT, same_stop_epoch)],
                    symmetric=tuple(range(n)))  # every rank runs the same role on its own data


SPEC = SpecInfo(
    name="early-stop",
    description="DDP training loop whose early-stopping decision is agreed by an all_reduce",
    params={"ranks": Param(2, "data-parallel ranks"), "epochs": Param(3, "maximum epochs"),
            "patience": Param(1, "epochs without improvement before a rank wants to stop")},
    variants={
        "local-decision": Variant("each rank stops on its own metric and exits", (STRANDED,), backend="nccl"),
        "local-decision-teardown": Variant("each rank stops on its own metric and stays alive in teardown", (STRANDED,)),
    },
    build=build,
)
