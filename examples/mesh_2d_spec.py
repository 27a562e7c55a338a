"""A 2-D device mesh (tensor parallel x data parallel): every step a rank all-reduces activations in
its TP group, then gradients in its DP group.  Ranks 0..tp-1 form TP group tp0, the next tp ranks tp1,
and so on; DP group dp<j> holds the ranks whose TP rank is j (rank r: TP group r // tp, DP group r % tp).

Incidents:
- ranks that issue collectives on two process groups in different orders deadlock once their waits
  form a cycle: rank A waits in group X for B, which waits in group Y for A.  A production TorchRec job
  hung this way, an all_to_all on one mesh dimension and an all_reduce on the other issued in
  rank-divergent order (https://github.com/meta-pytorch/torchrec/pull/4149); torch.distributed's own
  documentation asks for "a globally consistent execution order of collectives across ranks" when
  several process groups are used (https://github.com/pytorch/pytorch/pull/131895);
- a collective issued without its ``group=`` lands on the default (world) group while its peers call
  the subgroup: "the collective communication will get stuck if data parallel group is not the world
  group" (https://github.com/areal-project/AReaL/pull/311, "add the missing group argument").

- hardened: every rank runs TP, then DP, every step -> HOLDS;
- ``crossed-order``: the ranks whose TP group index plus DP group index is odd (a checkerboard)
  reduce gradients before activations: their TP and DP waits form a cycle -> DEADLOCK;
- ``default-group``: rank 0's gradient all_reduce forgets ``group=`` and runs on the world group ->
  DEADLOCK (rank 0 waits in a world all_reduce nobody else joins; its TP and DP peers wait for it).

No ranks are symmetric: a group of the mesh holds some ranks of every other group, never all or none.
"""
from lockstep.model.api import DEADLOCK
from lockstep.spec.fabric import Group, all_reduce
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import Param, SpecInfo, Variant

ACT = ("bf16", "activations")
GRAD = ("fp32", "grads")


def groups(tp: int, dp: int) -> dict[str, Group]:
    out = {"world": Group("world", tuple(range(tp * dp)))}
    for i in range(dp):
        out[f"tp{i}"] = Group(f"tp{i}", tuple(range(i * tp, i * tp + tp)))
    for j in range(tp):
        out[f"dp{j}"] = Group(f"dp{j}", tuple(range(j, tp * dp, tp)))
    return out


def trainer(params, variant) -> Role:
    tp, steps = params["tp"], params["steps"]

    def crossed(c) -> bool:  # the planted order, on a checkerboard of the mesh
        return variant == "crossed-order" and (c.rank // tp + c.rank % tp) % 2 == 1

    def grad_group(c) -> str:
        return "world" if variant == "default-group" and c.rank == 0 else f"dp{c.rank % tp}"

    r = Role("trainer", "STEP", {"step": 0}, ids=("step",))
    r.local("finish", "STEP", DONE, guard=lambda c: c.v.step >= steps, why="all steps run")
    r.local("tp_first", "STEP", "TP", guard=lambda c: c.v.step < steps and not crossed(c), why="a step left, TP first")
    r.local("dp_first", "STEP", "DP_FIRST", guard=lambda c: c.v.step < steps and crossed(c), why="a step left, DP first")
    r.op("tp_allreduce", "TP", "DP", lambda c: all_reduce(f"tp{c.rank // tp}", ACT, data=1),
         doc="activations summed over the TP group")
    r.op("dp_allreduce", "DP", "STEP", lambda c: all_reduce(grad_group(c), GRAD, data=1),
         after=lambda c, _: c.set(step=c.v.step + 1), doc="gradients summed over the DP group")
    r.op("dp_allreduce_first", "DP_FIRST", "TP_LAST", lambda c: all_reduce(f"dp{c.rank % tp}", GRAD, data=1))
    r.op("tp_allreduce_last", "TP_LAST", "STEP", lambda c: all_reduce(f"tp{c.rank // tp}", ACT, data=1),
         after=lambda c, _: c.set(step=c.v.step + 1))
    return r


def build(params, variant, backend):
    tp, dp = params["tp"], params["dp"]
    role = trainer(params, variant)
    return Protocol("mesh-2d", groups=groups(tp, dp), backend=backend, params=params, variant=variant,
                    actors=[ActorDef(r, "main", role) for r in range(tp * dp)])


SPEC = SpecInfo(
    name="mesh-2d",
    description="a TP x DP mesh: every step a TP all_reduce, then a DP all_reduce, on every rank",
    params={"tp": Param(2, "ranks per TP group", min=2), "dp": Param(2, "ranks per DP group", min=2),
            "steps": Param(2, "training steps", min=1)},
    variants={
        "crossed-order": Variant("ranks on a checkerboard of the mesh reduce gradients before activations", (DEADLOCK,)),
        "default-group": Variant("rank 0's gradient all_reduce runs on the world group", (DEADLOCK,)),
    },
    build=build,
)
