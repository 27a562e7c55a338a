"""Two adjacent pipeline stages exchange activations and gradients with blocking send/recv.

Incident: with blocking point-to-point ops both ranks of a pipeline boundary sent first and then
received; neither send can complete until its peer posts the matching recv, so both hang.  Reported
against NCCL (https://github.com/NVIDIA/nccl/issues/479: "rank 0 sends x0 then receives x1, rank 1
sends x1 then receives x0 ... it will be stuck") and again in PyTorch's pipelining schedules
(https://github.com/pytorch/pytorch/issues/172668: "both ranks are waiting for the send to finish so
that they can receive"), whose fix (https://github.com/pytorch/pytorch/pull/178815) and Megatron-LM's
p2p_communication order the pair by rank parity: the lower rank receives before it sends to its
higher peer.

The model: stage 0 sends the forward activation of micro-batch m to stage 1 and receives its gradient;
stage 1 receives the activation, and both also push a "look-ahead" message the other way before
receiving (the overlapped 1F1B step).  Sends are rendezvous (as gloo and large NCCL messages behave).

- hardened: rank-parity order -- the lower rank of the pair sends first, the higher rank receives
  first, on every micro-batch;
- ``send-first``: both ranks send before they receive -> DEADLOCK;
- ``tag-swap``: parity order, but stage 1 answers with the wrong tag: gloo matches by tag -> DEADLOCK,
  NCCL ignores tags and matches in order -> HOLDS (run it with --backend nccl to see the difference).
"""
from lockstep.model.api import DEADLOCK
from lockstep.spec.fabric import Group, recv, send
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import Param, SpecInfo, Variant

ACT = ("bf16", "activation")  # both directions carry one activation-sized tensor
FWD, BWD = 1, 2                # tags: forward activations, backward gradients


def stage_role(name: str, me: int, peer: int, send_first: bool, micro: int, my_tag: int, peer_tag: int) -> Role:
    """One stage: per micro-batch, one send to and one recv from its neighbour, in the given order."""
    r = Role(name, "STEP", {"mb": 0}, ids=("mb",), private=True, observed=("mb",))
    first, second = ("SEND", "RECV") if send_first else ("RECV", "SEND")

    def to_peer(c):
        return send("pp", peer, ACT, data=(me, c.v.mb), tag=my_tag)

    def from_peer(c):
        return recv("pp", peer, ACT, tag=peer_tag)

    r.local("next_microbatch", "STEP", first, guard=lambda c: c.v.mb < micro)
    r.local("finish", "STEP", DONE, guard=lambda c: c.v.mb >= micro)
    ops = {"SEND": ("send_to_peer", to_peer), "RECV": ("recv_from_peer", from_peer)}
    r.op(ops[first][0], first, second, ops[first][1])
    r.op(ops[second][0], second, "STEP", ops[second][1], after=lambda c, data: c.set(mb=c.v.mb + 1))
    return r


def build(params, variant, backend):
    micro = params["microbatches"]
    s0 = stage_role("stage0", 0, 1, send_first=True, micro=micro, my_tag=FWD, peer_tag=BWD)
    s1 = stage_role("stage1", 1, 0, send_first=(variant == "send-first"), micro=micro,
                    my_tag=FWD if variant == "tag-swap" else BWD, peer_tag=FWD)
    return Protocol("pp-exchange", groups={"pp": Group("pp", (0, 1))}, backend=backend, params=params, variant=variant,
                    actors=[ActorDef(0, "main", s0), ActorDef(1, "main", s1)])


SPEC = SpecInfo(
    name="pp-exchange",
    description="two pipeline stages exchange tensors each micro-batch with blocking send/recv (rank-parity order)",
    params={"microbatches": Param(2, "micro-batches each stage exchanges")},
    variants={
        "send-first": Variant("both stages send before they receive (no parity order)", (DEADLOCK,)),
        "tag-swap": Variant("stage 1 replies with the forward tag: gloo matches by tag and never pairs it", (DEADLOCK,)),
    },
    build=build,
)
