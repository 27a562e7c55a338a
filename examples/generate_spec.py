"""Sharded generation where ranks may finish early (ZeRO-3 style parameter gathering).

Incident: with ZeRO stage 3 every decode step gathers the sharded weights with a collective on all
data-parallel ranks.  A rank whose sequences all reached EOS left ``generate()`` and went on to the
next phase while the others entered another decode step, so the ranks waited in different collectives
(https://github.com/deepspeedai/DeepSpeed/issues/860 "zero3 hangs in inference";
https://github.com/deepspeedai/DeepSpeed/issues/8262 "the completed rank has already entered teacher
forward and waits in a different collective").  The fix is ``generate(synced_gpus=True)``
(https://github.com/huggingface/transformers/pull/22242): every step all-reduces "this rank is done",
finished ranks keep running dummy forward steps, and all ranks leave the loop together.

The model: each rank decodes up to ``max_tokens`` steps; after each step it may hit EOS (a
nondeterministic choice).  Each decode step is one parameter all_gather on the world group; after
generation every rank joins one loss all_reduce (the scoring phase).

Each planted bug is a named patch on the hardened role (``PATCHES`` below), not a branch in the builder.

- hardened: synced loop -- a step all_reduces the done flags (max of "not done"), finished ranks
  keep gathering until nobody needs another step;
- ``leave-on-eos``: a finished rank goes straight to scoring: its all_reduce meets another rank's
  all_gather -> COLLECTIVE_MISMATCH (on real NCCL: a hang or garbage);
- ``exit-on-eos``: a finished rank returns and its process idles (serving nothing further) ->
  STRANDED: the others wait in the next gather for ever.
"""
from lockstep.model.api import COLLECTIVE_MISMATCH, STRANDED
from lockstep.spec.fabric import Group, all_gather, all_reduce
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.patch import Draft, Patches
from lockstep.spec.registry import Param, SpecInfo, Variant

SHARDS = ("bf16", "param-shards")
FLAG = ("int64", (1,))
LOSS = ("fp32", (1,))


def decoder(params) -> Role:
    """The hardened decode loop (synced_gpus): the planted bugs below are patches on it."""
    max_tokens = params["max_tokens"]
    r = Role("decoder", "STEP", {"tok": 0, "eos": False}, ids=("tok",))
    # one decode step: gather the weights, run the forward, maybe hit EOS
    r.op("gather_params", "STEP", "FORWARD", lambda c: all_gather("world", SHARDS))
    r.local("forward", "FORWARD", "SAMPLED", choose=lambda c: (False, True) if not c.v.eos else (True,),
            do=lambda c: c.set(tok=c.v.tok + 1, eos=c.choice or c.v.tok + 1 >= max_tokens),
            doc="sample one token; EOS (or the length limit) ends this rank's sequences")
    r.op("sync_done", "SAMPLED", ("STEP", "SCORE"), lambda c: all_reduce("world", FLAG, data=int(not c.v.eos), reduce="max"),
         after=lambda c, someone_running: c.goto("STEP" if someone_running else "SCORE"),
         doc="synced_gpus: keep stepping while any rank still generates")
    r.op("allreduce_loss", "SCORE", DONE, lambda c: all_reduce("world", LOSS, data=1))
    return r


# ---- the planted bugs: named patches on the hardened role ----
PATCHES = Patches()


def still_generating(c):
    return not c.v.eos


def unsynced(r: Role, leave_to: str) -> None:
    """The loop without synced_gpus: a rank steps while it generates and leaves on its own EOS."""
    r.replace("gather_params", guard=still_generating)
    r.replace("sync_done", name="next_token", dst="STEP", op=None, after=None, doc="", guard=still_generating)
    with r.insert_after("next_token"):
        r.local("leave_generate", "SAMPLED", leave_to, guard=lambda c: c.v.eos, why="this rank hit EOS")


@PATCHES("leave-on-eos")
def leave_on_eos(draft: Draft) -> None:
    """A finished rank goes on to scoring while the others still gather."""
    unsynced(draft["decoder"], leave_to="SCORE")


@PATCHES("exit-on-eos")
def exit_on_eos(draft: Draft) -> None:
    """A finished rank returns and idles: nobody reaches scoring (an unreachable state is refused)."""
    unsynced(draft["decoder"], leave_to="IDLE")
    draft["decoder"].remove("allreduce_loss")


def build(params, variant, backend):
    n = params["ranks"]
    role = decoder(params)
    PATCHES.apply(variant, Draft({"decoder": role}, params))
    return Protocol("generate", groups={"world": Group("world", tuple(range(n)))}, backend=backend, params=params,
                    variant=variant, actors=[ActorDef(r, "main", role) for r in range(n)],
                    symmetric=tuple(range(n)))  # every rank runs the same role on its own prompts


SPEC = SpecInfo(
    name="generate",
    description="data-parallel generation with sharded weights: ranks that finish early keep stepping (synced_gpus)",
    params={"ranks": Param(2, "data-parallel ranks"), "max_tokens": Param(3, "generation length limit")},
    variants={
        "leave-on-eos": Variant("a finished rank goes on to scoring while the others still gather", (COLLECTIVE_MISMATCH,)),
        "exit-on-eos": Variant("a finished rank leaves and idles; the others wait in the next gather", (STRANDED,)),
    },
    build=build,
)
