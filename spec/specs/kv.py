"""The KV-cache lifecycle as a lockstep state machine (docs/domain.md §4).

States: UNINIT, EPOCH_START (after a hard cut, caches empty), STEADY_EARLY (the ring is not yet
full), STEADY_FULL.  Events come only from the envelope: hard cut (cache_epoch+1, caches cleared,
indices reset), cross-attention reset (prompt change), soft transition (bias change), normal
advance, recompute (one extra generator call from context frames), evict/roll of the bounded ring
with derived global and local end indices.  Nothing here is ever inferred from rank-local state.

The lifecycle functions below are the single definition: the ``kv`` role (the diagram) steps through
them one named event at a time, and every rank that runs Phase B in ``pp0``/``pp1`` applies the same
functions to the envelope it received (``apply``), so the embedded machine and the diagram cannot
drift apart.

Recompute modes: R1 (no recompute), R0a (rank0 sends ``context_frames``; required iff recompute is
planned, no fallback), R0 (the mesh builds a latent-only anchor from its own, lockstep-identical
state; an explicit mode bit makes the semantic change deliberate).

Invariant FRANKEN: whenever all mesh ranks have applied the same number of envelopes, their lifecycle
states agree: phase, cache_epoch, current_start_frame, global and local end index, the cache content
identity (the frame its contents are valid from), cross-attention validity, bias, and the identity of
their generator inputs (the envelope and the recompute context).
"""
from __future__ import annotations

from typing import NamedTuple

from ...model.api import FRANKEN
from ..contract import Action
from ..fabric import Group, broadcast
from ..machine import ActorDef, Protocol, Role, parse_faults
from ..patch import Draft, Patches
from ..registry import Param, SpecInfo, Variant
from ..view import WorldView

UNINIT, EPOCH_START, STEADY_EARLY, STEADY_FULL = "UNINIT", "EPOCH_START", "STEADY_EARLY", "STEADY_FULL"
LIFECYCLE_STATES = (UNINIT, EPOCH_START, STEADY_EARLY, STEADY_FULL)


class KV(NamedTuple):
    phase: str = UNINIT
    cache_epoch: int = 0
    start_frame: int = 0
    global_end: int = 0     # monotonic position in the token timeline (frames here)
    local_end: int = 0      # position inside the ring after rolls
    valid_from: int = 0     # the first frame the cache contents stem from (content identity)
    xattn: bool = False     # cross-attention cache filled
    bias: int = 0           # kv_cache_attention_bias, as a small level
    inputs: tuple = ()      # identity of the last generator inputs: (call_id, recompute context)
    applied: int = 0        # envelopes applied (to compare ranks at the same chunk boundary)


class Env(NamedTuple):
    """The lifecycle part of an envelope."""
    call_id: int
    cache_epoch: int
    start_frame: int
    init_cache: bool
    reset_xattn: bool
    bias: int
    recompute: bool
    context: object  # "rank0" (R0a context_frames), "latent" (R0 anchor), None (missing)


# -- the lifecycle events (one definition, used by the role and by pp0/pp1) ---------------------
def hard_cut(kv: KV, env: Env) -> KV:
    return kv._replace(phase=EPOCH_START, cache_epoch=env.cache_epoch, global_end=0, local_end=0,
                       valid_from=env.start_frame, xattn=False)


def crossattn_reset(kv: KV, env: Env) -> KV:
    return kv._replace(xattn=False)


def soft_transition(kv: KV, env: Env) -> KV:
    return kv._replace(bias=env.bias)


def recompute_context(env: Env, rank):
    """What the recompute call reads.  A missing override falls back to rank-local state, which
    nothing in the protocol keeps identical across ranks (FM-06): modelled as rank-specific.
    ``rank`` may be a function returning it: it is asked only then (a symmetric rank may not ask)."""
    if env.context is None:
        return ("local", rank() if callable(rank) else rank)
    if env.context == "latent":
        return ("latent", env.cache_epoch, env.start_frame)
    return ("rank0", env.call_id)


def advance(kv: KV, env: Env, ring: int, start_frame: int | None = None) -> KV:
    """Append one chunk of frames at ``start_frame`` (the envelope's, unless a buggy rank derives
    its own); the local end index rolls inside a ring of ``ring`` frames (evict/roll)."""
    start = env.start_frame if start_frame is None else start_frame
    gend = start + 1
    lend = gend if gend <= ring else ring  # the roll keeps the newest ``ring`` frames
    phase = STEADY_EARLY if gend < ring else STEADY_FULL
    return kv._replace(phase=phase, start_frame=start + 1, global_end=gend, local_end=lend, xattn=True)


def overflows(kv: KV, env: Env, ring: int) -> bool:
    return env.start_frame + 1 > ring


def apply(kv: KV, env: Env, rank, ring: int, start_frame: int | None = None) -> KV:
    """The whole lifecycle step of one envelope on one rank (what pp0/pp1 embed)."""
    if env.init_cache:
        kv = hard_cut(kv, env)
    elif env.reset_xattn:
        kv = crossattn_reset(kv, env)
    if env.bias != kv.bias:
        kv = soft_transition(kv, env)
    ctx = recompute_context(env, rank) if env.recompute else None
    kv = advance(kv, env, ring, start_frame)
    return kv._replace(inputs=(env.call_id, ctx), applied=kv.applied + 1)


def franken_check(kvs: dict[int, KV]) -> str | None:
    """Mesh ranks that have applied the same number of envelopes must agree on everything."""
    by_count: dict[int, dict[int, KV]] = {}
    for r, kv in kvs.items():
        by_count.setdefault(kv.applied, {})[r] = kv
    for count, group in by_count.items():
        if len(group) > 1 and len(set(group.values())) > 1:
            ranks = sorted(group)
            a = group[ranks[0]]
            for r in ranks[1:]:
                b = group[r]
                diff = [f"{f}: rank {ranks[0]}={getattr(a, f)!r} rank {r}={getattr(b, f)!r}"
                        for f in KV._fields if getattr(a, f) != getattr(b, f)]
                if diff:
                    return f"after {count} envelopes mesh ranks diverge: " + "; ".join(diff)
    return None


# -- the standalone spec: a planner broadcasting lifecycle envelopes to mesh ranks ----------------
ENV_SIG = ("int64", "kv-envelope")
FAULTS = ("missing-override",)


def build(params: dict, variant: str | None, backend: str) -> Protocol:
    mesh, chunks, ring, cuts_max = params["mesh"], params["chunks"], params["ring"], params["hard_cuts"]
    mode = params["recompute"]
    faults = parse_faults(params["faults"], FAULTS)

    P = Role("planner", "PLAN", dict(call_id=0, chunk_index=0, cache_epoch=0, start_frame=0, cuts=0, bias=0, env=None),
             doc="decides each chunk's lifecycle bits and broadcasts them to the mesh")

    def plans(c):
        out = []
        first = c.v.chunk_index == 0
        for cut in ((True,) if first else ((False, True) if c.v.cuts < cuts_max else (False,))):
            start = 0 if cut else c.v.start_frame
            for rec in ((False,) if mode == "R1" or start == 0 else (False, True)):
                for xr in ((False,) if cut else (False, True)):
                    for bias in ((c.v.bias,) if first else (c.v.bias, 1 - c.v.bias)):
                        out.append((cut, rec, xr, bias))
        return out

    def plan(c):
        cut, rec, xr, bias = c.choice
        epoch = c.v.cache_epoch + (1 if cut and c.v.chunk_index > 0 else 0)
        start = 0 if cut else c.v.start_frame
        context = None if not rec else ("latent" if mode == "R0" else "rank0")
        env = Env(c.v.call_id + 1, epoch, start, cut, xr, bias, rec, context)
        c.set(call_id=env.call_id, cache_epoch=epoch, start_frame=start + 1, cuts=c.v.cuts + (1 if cut and c.v.chunk_index > 0 else 0),
              bias=bias, env=env, chunk_index=c.v.chunk_index + 1)

    P.local("plan_chunk", "PLAN", "SEND", why="chunks left", guard=lambda c: c.v.chunk_index < chunks, choose=plans, do=plan)
    if mode == "R0a":
        P.local("drop_override", "SEND", "SEND", fault="missing-override", guard=lambda c: c.v.env.recompute and c.v.env.context,
                do=lambda c: c.set(env=c.v.env._replace(context=None)),
                doc="rank0 plans recompute but builds no context_frames")
    P.local("reject_missing_override", "SEND", "PLAN", why="recompute without context frames", guard=lambda c: c.v.env.recompute and c.v.env.context is None,
            doc="contract: context_frames required iff recompute (R0a); the chunk is dropped before sending")
    P.op("broadcast_envelope", "SEND", "PLAN", lambda c: broadcast("mesh", 0, ENV_SIG, (int(Action.INFER), c.v.env)),
         why="the envelope within the contract", guard=lambda c: not (c.v.env.recompute and c.v.env.context is None), commit=True)
    P.op("broadcast_shutdown", "PLAN", "DONE", lambda c: broadcast("mesh", 0, ENV_SIG, (int(Action.SHUTDOWN), None)),
         why="every chunk planned", guard=lambda c: c.v.chunk_index >= chunks)

    K = kv_role(ring)
    actors = [ActorDef(0, "main", P)] + [ActorDef(r, "main", K) for r in range(1, mesh + 1)]
    draft = PATCHES.apply(variant, Draft({"planner": P, "kv": K}, params, actors))
    return Protocol(name="kv", groups={"mesh": Group("mesh", tuple(range(mesh + 1)))}, actors=draft.actors, params=params,
                    backend=backend, faults=faults, max_faults=params["max_faults"],
                    invariants=[("FRANKEN", FRANKEN, _franken)], variant=variant,
                    symmetric=() if draft.breaks_symmetry else tuple(range(1, mesh + 1)))


def kv_role(ring: int) -> Role:
    """A mesh rank's cache lifecycle, one named event per transition: the lifecycle diagram."""
    K = Role("kv", UNINIT, dict(kv=KV(), env=None, call_id=-1, drifted=False, busy=False),
             ids=("call_id",), doc="a mesh rank's KV-cache lifecycle", private=True, observed=("busy",),
             observed_when={"kv": lambda v: not v.busy})  # FRANKEN compares caches between envelopes only

    def on_env(c, msg):
        action, env = msg
        if action == Action.SHUTDOWN:
            c.goto("DONE")
            return
        c.set(env=env, call_id=env.call_id, busy=True)
        c.goto("RESETS")
    for s in LIFECYCLE_STATES:
        K.op(f"receive_envelope@{s}", s, ("RESETS", "DONE"), lambda c: broadcast("mesh", 0, ENV_SIG), after=on_env,
             why="between envelopes", guard=lambda c: not c.v.busy, doc="the envelope carries every lifecycle bit")
    K.local("hard_cut", "RESETS", EPOCH_START, why="init_cache", guard=lambda c: c.v.env.init_cache, do=lambda c: c.set(kv=hard_cut(c.v.kv, c.v.env)),
            doc="init_cache: cache_epoch+1, caches cleared, indices reset")
    K.local("crossattn_reset", "RESETS", "BIAS", why="reset_crossattn, no init_cache", guard=lambda c: not c.v.env.init_cache and c.v.env.reset_xattn,
            do=lambda c: c.set(kv=crossattn_reset(c.v.kv, c.v.env)), doc="prompt change: only the cross-attention cache")
    K.local("keep_caches", "RESETS", "BIAS", why="no reset bit", guard=lambda c: not c.v.env.init_cache and not c.v.env.reset_xattn)
    for s in ("BIAS", EPOCH_START):  # after a hard cut the cache sits in EPOCH_START, empty, until it advances
        K.local("soft_transition", s, "GENERATE", why="the bias changes", guard=lambda c: c.v.busy and c.v.env.bias != c.v.kv.bias,
                do=lambda c: c.set(kv=soft_transition(c.v.kv, c.v.env)), doc="kv_cache_attention_bias changes")
        K.local("same_bias", s, "GENERATE", why="the same bias", guard=lambda c: c.v.busy and c.v.env.bias == c.v.kv.bias)
    K.local("recompute", "GENERATE", "DENOISE", why="recompute planned", guard=lambda c: c.v.env.recompute,
            do=lambda c: c.set(kv=c.v.kv._replace(inputs=(c.v.env.call_id, recompute_context(c.v.env, lambda: c.rank)))),
            doc="one extra generator call rewrites the window from the context frames")
    K.local("no_recompute", "GENERATE", "DENOISE", why="no recompute", guard=lambda c: not c.v.env.recompute,
            do=lambda c: c.set(kv=c.v.kv._replace(inputs=(c.v.env.call_id, None))))
    K.local("advance", "DENOISE", (STEADY_EARLY, STEADY_FULL), why="the ring has room", guard=lambda c: not overflows(c.v.kv, c.v.env, ring),
            do=advancer(ring), doc="append the chunk's frames; current_start_frame advances")
    K.local("evict_roll", "DENOISE", (STEADY_FULL,), why="the ring would overflow", guard=lambda c: overflows(c.v.kv, c.v.env, ring), do=advancer(ring),
            doc="the ring would overflow: roll, deriving the local end index")
    return K


def advancer(ring: int, own_start=None):
    """The ``advance``/``evict_roll`` effect: append the chunk at the envelope's start frame, or at
    ``own_start(c)`` where that returns a frame (a rank that derives its own)."""
    def adv(c):
        kv = advance(c.v.kv, c.v.env, ring, own_start(c) if own_start else None)
        c.set(kv=kv._replace(applied=c.v.kv.applied + 1), busy=False)
        c.goto(kv.phase)
    return adv


# -- the planted bugs: named patches on the hardened roles -------------------------------------
PATCHES = Patches()


@PATCHES("om10-missing-override", breaks_symmetry=True)
def missing_override(draft: Draft) -> None:
    """The planner does not check the contract: a recompute envelope without context frames goes out,
    and each rank falls back to its own state."""
    P = draft["planner"]
    P.remove("reject_missing_override")
    P.replace("broadcast_envelope", guard=None)


@PATCHES("reset-drift", breaks_symmetry=True)
def reset_drift(draft: Draft) -> None:
    """Rank 1 clears its cache once, outside the envelope, through a rank-local endpoint."""
    K = draft["kv"]
    with K.insert_after(f"receive_envelope@{STEADY_FULL}"):
        for s in (STEADY_EARLY, STEADY_FULL):
            K.local(f"out_of_band_reset@{s}", s, EPOCH_START,
                    guard=lambda c: c.rank == 1 and not c.v.drifted,
                    do=lambda c: c.set(kv=c.v.kv._replace(phase=EPOCH_START, global_end=0, local_end=0,
                                                         valid_from=c.v.kv.start_frame), drifted=True),
                    doc="planted bug: a rank-local endpoint clears this rank's cache outside the envelope")


@PATCHES("start-frame-drift", breaks_symmetry=True)
def start_frame_drift(draft: Draft) -> None:
    """Rank 1 advances current_start_frame itself, ignoring the envelope's (and so its hard cuts)."""
    ring = draft.params["ring"]
    own = lambda c: c.v.kv.start_frame if c.rank == 1 else None  # derives its own start frame
    for name in ("advance", "evict_roll"):
        draft["kv"].replace(name, do=advancer(ring, own))


def _franken(world: WorldView) -> str | None:
    kvs = {a.rank: a.vars.kv for a in world.actors(role="kv") if a.alive and not a.vars.busy}  # between envelopes
    return franken_check(kvs)


SPEC = SpecInfo(
    name="kv",
    description="the KV-cache lifecycle as a lockstep state machine on every mesh rank, driven only by the envelope",
    params={
        "mesh": Param(2, "mesh ranks applying the lifecycle", min=1, max=64),
        "chunks": Param(3, "chunks planned", min=1),
        "ring": Param(2, "ring buffer size in frames (evict/roll beyond it)", min=1),
        "hard_cuts": Param(1, "hard cuts after the first chunk", min=0),
        "recompute": Param("R0a", "recompute mode", choices=("R1", "R0a", "R0")),
        "faults": Param("all", "enabled faults: all, none, or " + ", ".join(FAULTS)),
        "max_faults": Param(1, "injected faults per run", min=0),
    },
    variants={
        "om10-missing-override": Variant("recompute planned without context frames; ranks fall back to local state", (FRANKEN,)),
        "reset-drift": Variant("an out-of-band cache reset on one mesh rank", (FRANKEN,)),
        "start-frame-drift": Variant("one mesh rank advances current_start_frame itself and misses the hard cut", (FRANKEN,)),
    },
    build=build,
)
