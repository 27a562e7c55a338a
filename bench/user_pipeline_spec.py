"""The 6/4/2 pipeline written with the generic Role API, the way a user would write it: the S+1
bounded FIFO queues are shared variables (tuples, head first) and every role guards on them.

Each queue is a ``Fifo`` (an immutable tuple with put/take) and each transition declares the queue end
it uses (``puts=``/``takes=``): with one putter and one taker per queue, a put and a take commute, and
the partial-order reduction explores them as independent, as the hand-written pipeline's head/tail
footprints do.  The other steps touch no shared variable; ``progress=`` (the loop counter) lets the
loop states be reduced too.

It is the model of ``spec/specs/pipeline.py`` and ``bench/pipeline.pml`` transition for transition:
the source puts microbatches 0..M-1 into queue 0; stage i loops M times through ``ready``,
``receive`` (from queue i, blocks while empty), ``compute``, ``send`` (to queue i+1, blocks while
full) and ``count``; the sink takes from queue S and flags an out-of-order arrival.  A role that has
done its last step goes to DONE instead of resting in its loop state, a one-to-one renaming, so the
unreduced graph has the same 646,157 states at the defaults (S=6, M=4, C=2).

    lockstep check bench/user_pipeline_spec.py --no-reduction --no-liveness
    lockstep check bench/user_pipeline_spec.py -p stages=3 -p microbatches=2
    lockstep check bench/user_pipeline_spec.py --variant source-skips --no-reduction   # INVARIANT

bench/bench_engine.py times it through the generic explorer next to SPIN on bench/pipeline.pml.
"""
from lockstep.model.api import INVARIANT
from lockstep.spec.machine import DONE, ActorDef, Fifo, Protocol, Role
from lockstep.spec.patch import Draft, Patches
from lockstep.spec.registry import Param, SpecInfo, Variant

PATCHES = Patches()

NOTHING = -1  # what a stage holds between send and the next receive


def _source(M: int, C: int) -> Role:
    r = Role("source", "PUT", {"n": 0}, shares=(), progress=lambda v: v.n)

    def put(c):
        c.gset(q0=c.g.q0.put(c.v.n))
        c.set(n=c.v.n + 1)
        if c.v.n == M:
            c.goto(DONE)

    r.local("put", "PUT", ("PUT", DONE), guard=lambda c: c.g.q0.has_room(C), do=put, puts=("q0",))
    return r


def _stage(i: int, M: int, C: int) -> Role:
    r = Role(f"stage{i}", "READY", {"count": 0, "held": NOTHING}, shares=(), progress=lambda v: v.count)  # shares nothing but below
    qin, qout = f"q{i}", f"q{i + 1}"

    def receive(c):
        item, rest = getattr(c.g, qin).take()
        c.gset(**{qin: rest})
        c.set(held=item)

    def send(c):
        c.gset(**{qout: getattr(c.g, qout).put(c.v.held)})
        c.set(held=NOTHING)

    def count(c):
        c.set(count=c.v.count + 1)
        if c.v.count == M:
            c.goto(DONE)

    r.local("ready", "READY", "RECEIVE")
    r.local("receive", "RECEIVE", "COMPUTE", guard=lambda c: getattr(c.g, qin).nonempty(), do=receive, takes=(qin,))
    r.local("compute", "COMPUTE", "SEND")
    r.local("send", "SEND", "COUNT", guard=lambda c: getattr(c.g, qout).has_room(C), do=send, puts=(qout,))
    r.local("count", "COUNT", ("READY", DONE), do=count)
    return r


def _sink(S: int, M: int) -> Role:
    qin = f"q{S}"
    r = Role("sink", "TAKE", {"n": 0}, shares=(), progress=lambda v: v.n)

    def take(c):
        item, rest = getattr(c.g, qin).take()
        if item != c.v.n:
            c.violate(INVARIANT, f"sink received microbatch {item} out of order: expected microbatch {c.v.n}")
        c.gset(**{qin: rest})
        c.set(n=c.v.n + 1)
        if c.v.n == M:
            c.goto(DONE)

    r.local("take", "TAKE", ("TAKE", DONE), guard=lambda c: getattr(c.g, qin).nonempty(), do=take, takes=(qin,))
    return r


@PATCHES("source-skips")
def source_skips(draft):
    """the source skips microbatch 2 (it counts 1 -> 3): with 4 or more microbatches the sink finds 3 where it
    expects 2 (INVARIANT); with 3 the stages wait for a third microbatch that never comes (DEADLOCK)"""
    M = draft.params["microbatches"]

    def put(c):
        c.gset(q0=c.g.q0.put(c.v.n))
        c.set(n=c.v.n + (2 if c.v.n == 1 else 1))
        if c.v.n >= M:
            c.goto(DONE)

    draft.role("source").replace("put", do=put)


def build(params, variant, backend):
    S, M, C = params["stages"], params["microbatches"], params["capacity"]
    roles = [_source(M, C)] + [_stage(i, M, C) for i in range(S)] + [_sink(S, M)]
    actors = [ActorDef(k, "main", role) for k, role in enumerate(roles)]
    draft = PATCHES.apply(variant, Draft({r.name: r for r in roles}, params, actors))
    return Protocol(f"user-pipeline(S={S},M={M},C={C})", groups={}, backend=backend, actors=draft.actors,
                    shared={f"q{k}": Fifo() for k in range(S + 1)})


SPEC = SpecInfo(name="user-pipeline", description="the 6/4/2 pipeline over shared-variable queues (benchmark)",
                params={"stages": Param(6, "pipeline stages", min=1, max=12),
                        "microbatches": Param(4, "microbatches through the pipeline", min=1, max=8),
                        "capacity": Param(2, "queue capacity", min=1, max=4)},
                build=build, variants={"source-skips": Variant("the source skips a microbatch", ("INVARIANT",))})
