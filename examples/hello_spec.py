"""Two ranks, one broadcast: the smallest lockstep spec (docs/writing-a-spec.md walks through it).

``lockstep check examples/hello_spec.py`` HOLDS; ``--variant worker-skips`` is STRANDED: the worker
never joins the broadcast, stays alive and idle, and rank 0 waits for it for ever.
"""
from lockstep.model.api import STRANDED
from lockstep.spec.fabric import Group, broadcast
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import SpecInfo, Variant

CONFIG = ("int64", (1,))  # the signature every matched call must share: (dtype, shape)


def build(params, variant, backend):
    leader = Role("leader", "SEND", {"config": 7})
    leader.op("broadcast_config", "SEND", DONE, lambda c: broadcast("world", 0, CONFIG, data=c.v.config))
    worker = Role("worker", "RECV", {"config": None})
    if variant != "worker-skips":
        worker.op("receive_config", "RECV", DONE, lambda c: broadcast("world", 0, CONFIG),
                  after=lambda c, data: c.set(config=data))
    return Protocol("hello", groups={"world": Group("world", (0, 1))}, backend=backend,
                    actors=[ActorDef(0, "main", leader), ActorDef(1, "main", worker)])


SPEC = SpecInfo(name="hello", description="rank 0 broadcasts a config to rank 1", params={}, build=build,
                variants={"worker-skips": Variant("the worker never calls the broadcast", (STRANDED,))})
