"""The 6/4/2 pipeline written with the generic Role API, the way a user would write it: the S+1
bounded FIFO queues are shared variables (tuples, head first) and every role guards on them.

It is the model of ``spec/specs/pipeline.py`` and ``bench/pipeline.pml`` transition for transition:
the source puts microbatches 0..M-1 into queue 0; stage i loops M times through ``ready``,
``receive`` (from queue i, blocks while empty), ``compute``, ``send`` (to queue i+1, blocks while
full) and ``count``; the sink takes from queue S and flags an out-of-order arrival.  A role that has
done its last step goes to DONE instead of resting in its loop state, a one-to-one renaming, so the
unreduced graph has the same 646,157 states at the defaults (S=6, M=4, C=2).

    lockstep check bench/user_pipeline_spec.py --no-reduction --no-liveness
    lockstep check bench/user_pipeline_spec.py -p stages=3 -p microbatches=2

bench/bench_engine.py times it through the generic explorer next to SPIN on bench/pipeline.pml.
"""
from lockstep.model.api import INVARIANT
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.registry import Param, SpecInfo

NOTHING = -1  # what a stage holds between send and the next receive


def _source(M: int, C: int) -> Role:
    r = Role("source", "PUT", {"n": 0}, shares=("q0",), progress=lambda v: v.n)

    def put(c):
        c.gset(q0=c.g.q0 + (c.v.n,))
        c.set(n=c.v.n + 1)
        if c.v.n == M:
            c.goto(DONE)

    r.local("put", "PUT", ("PUT", DONE), guard=lambda c: len(c.g.q0) < C, do=put)
    return r


def _stage(i: int, M: int, C: int) -> Role:
    r = Role(f"stage{i}", "READY", {"count": 0, "held": NOTHING}, shares=(), progress=lambda v: v.count)  # shares nothing but below
    qin, qout = f"q{i}", f"q{i + 1}"

    def receive(c):
        q = getattr(c.g, qin)
        c.gset(**{qin: q[1:]})
        c.set(held=q[0])

    def send(c):
        c.gset(**{qout: getattr(c.g, qout) + (c.v.held,)})
        c.set(held=NOTHING)

    def count(c):
        c.set(count=c.v.count + 1)
        if c.v.count == M:
            c.goto(DONE)

    r.local("ready", "READY", "RECEIVE")
    r.local("receive", "RECEIVE", "COMPUTE", guard=lambda c: len(getattr(c.g, qin)) > 0, do=receive,
            writes=(qin,))
    r.local("compute", "COMPUTE", "SEND")
    r.local("send", "SEND", "COUNT", guard=lambda c: len(getattr(c.g, qout)) < C, do=send,
            writes=(qout,))
    r.local("count", "COUNT", ("READY", DONE), do=count)
    return r


def _sink(S: int, M: int) -> Role:
    qin = f"q{S}"
    r = Role("sink", "TAKE", {"n": 0}, shares=(qin,), progress=lambda v: v.n)

    def take(c):
        q = getattr(c.g, qin)
        if q[0] != c.v.n:
            c.violate(INVARIANT, f"sink received microbatch {q[0]} out of order: expected microbatch {c.v.n}")
        c.gset(**{qin: q[1:]})
        c.set(n=c.v.n + 1)
        if c.v.n == M:
            c.goto(DONE)

    r.local("take", "TAKE", ("TAKE", DONE), guard=lambda c: len(getattr(c.g, qin)) > 0, do=take)
    return r


def build(params, variant, backend):
    S, M, C = params["stages"], params["microbatches"], params["capacity"]
    roles = [_source(M, C)] + [_stage(i, M, C) for i in range(S)] + [_sink(S, M)]
    return Protocol(f"user-pipeline(S={S},M={M},C={C})", groups={}, backend=backend,
                    actors=[ActorDef(k, "main", role) for k, role in enumerate(roles)],
                    shared={f"q{k}": () for k in range(S + 1)})


SPEC = SpecInfo(name="user-pipeline", description="the 6/4/2 pipeline over shared-variable queues (benchmark)",
                params={"stages": Param(6, "pipeline stages", min=1, max=12),
                        "microbatches": Param(4, "microbatches through the pipeline", min=1, max=8),
                        "capacity": Param(2, "queue capacity", min=1, max=4)},
                build=build, variants={})
