"""Mixed-precision training with a dynamic loss scaler: every rank must update its scaler from the
same overflow decision.

Incidents:
- Each rank's backward may overflow on its own shard. The step is skipped everywhere once any rank
  overflowed, so the ranks agree on that through an all_reduce (MAX) of their found-inf flags. In
  Megatron-Bridge's MIMO training, each module grid updated its own scaler from its local flag before
  that consensus ran. After an overflow on one grid only, the step was skipped everywhere, but the
  scales differed (4 on one grid, 8 on the other), and later steps silently trained with mismatched
  gradient scales (https://github.com/NVIDIA-NeMo/Megatron-Bridge/pull/5591). The fix replays one
  scaler update with the world-wide result.
- In ColossalAI's fp16 optimizer, a rank that overflowed skipped gradient clipping, whose norm is an
  all_reduce; the ranks that did not overflow waited in it, and training hung
  (https://github.com/hpcaitech/ColossalAI/pull/1175). The fix runs the clipping collective on every
  rank, or agrees on overflow first.

The model, per training step on every rank: backward (this rank's gradients are finite or overflow: a
choice), the gradient-norm all_reduce for clipping, the found-inf all_reduce (MAX), the scaler update,
then the optimizer step or the skip. The scaler is (scale exponent, clean steps since the last
change); the scale doubles after ``growth`` clean steps and halves on an overflow.

The property SCALERS_AGREE compares ranks between steps only: ranks that have finished the same
number of steps hold the same scaler and the same number of applied optimizer steps. So the role
observes ``busy`` and ``step`` everywhere, and its scaler only between steps (``observed_when``): the
steps inside one training step are explored once, not in every interleaving across ranks.

- hardened: the scaler is updated from the agreed flag;
- ``scaler-before-consensus``: each rank updates its scaler from its local flag before the
  all_reduce: FRANKEN (the ranks diverge silently);
- ``skip-clip-on-overflow``: a rank that overflowed skips the clipping all_reduce: its found-inf
  all_reduce meets the other ranks' gradient-norm all_reduce (COLLECTIVE_MISMATCH: the calls differ).
"""
from lockstep.model.api import COLLECTIVE_MISMATCH, FRANKEN
from lockstep.spec.fabric import Group, all_reduce
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import Param, SpecInfo, Variant

GRAD_NORM = ("fp32", "grad-norm")
FOUND_INF = ("int64", "found-inf")


def update(scaler: tuple, overflow: bool, growth: int) -> tuple:
    """The dynamic loss scaler: halve on an overflow, double after ``growth`` clean steps."""
    exp, clean = scaler
    if overflow:
        return (exp - 1, 0)
    return (exp + 1, 0) if clean + 1 >= growth else (exp, clean + 1)


def trainer(params, variant) -> Role:
    steps, growth = params["steps"], params["growth"]
    r = Role("trainer", "TRAIN", {"step": 0, "busy": False, "local_inf": False, "global_inf": False, "scaler": (0, 0),
                                    "applied": 0},
             ids=("step",), private=True, observed=("busy", "step"),
             observed_when={"scaler": lambda v: not v.busy, "applied": lambda v: not v.busy})
    r.local("finish", "TRAIN", DONE, guard=lambda c: c.v.step >= steps, doc="every step trained")

    def backward(c):
        c.set(busy=True, local_inf=c.choice == "overflow")
        if variant == "scaler-before-consensus":  # the bug: the scaler moves on this rank's flag alone
            c.set(scaler=update(c.v.scaler, c.choice == "overflow", growth))
    r.local("backward", "TRAIN", "CLIP", guard=lambda c: c.v.step < steps, choose=lambda c: ("finite", "overflow"),
            do=backward, doc="this rank's gradients are finite or overflow (its own shard)")
    r.op("clip_grad_norm", "CLIP", "AGREE", lambda c: all_reduce("world", GRAD_NORM, data=1),
         guard=lambda c: variant != "skip-clip-on-overflow" or not c.v.local_inf, doc="the global gradient norm")
    if variant == "skip-clip-on-overflow":
        r.local("skip_clip", "CLIP", "AGREE", guard=lambda c: c.v.local_inf, doc="the bug: an overflowed rank skips clipping")

    r.op("agree_found_inf", "AGREE", "UPDATE", lambda c: all_reduce("world", FOUND_INF, data=int(c.v.local_inf), reduce="max"),
         after=lambda c, anyone: c.set(global_inf=bool(anyone)), doc="skip the step everywhere if any rank overflowed")
    if variant == "scaler-before-consensus":
        r.local("update_scaler", "UPDATE", "STEP", doc="already updated from the local flag (the bug)")
    else:
        r.local("update_scaler", "UPDATE", "STEP", do=lambda c: c.set(scaler=update(c.v.scaler, c.v.global_inf, growth)),
                doc="the scaler follows the agreed flag")
    r.local("optimizer_step", "STEP", "END", guard=lambda c: not c.v.global_inf, do=lambda c: c.set(applied=c.v.applied + 1))
    r.local("skip_step", "STEP", "END", guard=lambda c: c.v.global_inf, doc="some rank overflowed: no rank steps")
    r.local("end_step", "END", "TRAIN", do=lambda c: c.set(busy=False, step=c.v.step + 1))
    return r


def scalers_agree(world):
    """Ranks between steps that have finished the same number of steps hold the same scaler and have
    applied the same optimizer steps (read through the view: the reduction checks what it reads)."""
    by_step: dict = {}
    for a in world.actors():
        if a.alive and not a.vars.busy:
            by_step.setdefault(a.vars.step, {})[a.rank] = (a.vars.scaler, a.vars.applied)
    for step, seen in sorted(by_step.items()):
        if len(set(seen.values())) > 1:
            return f"after {step} steps the ranks' (scaler, applied steps) differ: " + ", ".join(
                f"rank {r}: {s}" for r, s in sorted(seen.items()))
    return None


def build(params, variant, backend):
    n = params["ranks"]
    role = trainer(params, variant)
    return Protocol("loss-scaler", groups={"world": Group("world", tuple(range(n)))}, backend=backend, params=params,
                    variant=variant, actors=[ActorDef(r, "main", role) for r in range(n)],
                    invariants=[("SCALERS_AGREE", FRANKEN, scalers_agree)],
                    symmetric=tuple(range(n)))  # every rank runs the same role on its own shard


SPEC = SpecInfo(
    name="loss-scaler",
    description="fp16 training whose loss-scaler update follows the all-reduced overflow flag",
    params={"ranks": Param(2, "data-parallel ranks", min=2), "steps": Param(2, "training steps", min=1),
            "growth": Param(2, "clean steps before the scale doubles", min=1)},
    variants={
        "scaler-before-consensus": Variant("each rank updates its scaler from its local overflow flag", (FRANKEN,)),
        "skip-clip-on-overflow": Variant("an overflowed rank skips the clipping all_reduce", (COLLECTIVE_MISMATCH,)),
    },
    build=build,
)
