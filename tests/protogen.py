"""A random protocol generator for differential testing of the checker's reductions.

``describe(pick)`` draws a protocol *description* (plain data: printable, reproducible) from
``pick(lo, hi)``, any source of integers in [lo, hi]: hypothesis (``hypothesis_pick``) in the test
suite, ``random.Random`` in bench/bench_differential.py.  ``build(desc)`` turns it into a
``Protocol``: 2-3 ranks, or 4-6 with ``describe(pick, wide=True)``, or 8-16 with ``big`` (rank 0
sometimes with a second thread, which may post ops of its own, and sometimes a third one), one role per
actor or one shared role for symmetric workers (an orbit of up to 5 ranks in a wide world), local steps
with guards over local and shared variables, collectives on the world and on sub-groups and tagged
point-to-point (each blocking, or posted without blocking under a handle and waited for in a state of its
own; with ``describe(pick, detach=True)`` also posted and never waited for), named faults, crash and hang
faults, watchdog timeouts, invariants over control states and variables, a monitor over the transitions' events (per
world or per rank, possibly rejecting, possibly with ``must_end``), a liveness obligation, the gloo,
nccl, nccl-async and mpi backends, protocols without shared variables (where every role is private,
declared or not, unless an invariant or obligation reads roles), and ``private`` /
``observed`` / ``symmetric`` declarations and footprints (a role's ``shares=`` or each transition's
``reads=``/``writes=`` over two shared variables, ``puts=``/``takes=`` on a FIFO queue) that are honest or
planted wrong, and progress
measures (any function: the reduction checks what it relies on).  The keyword draws of ``describe`` add
what the default mix leaves out (fire-and-forget posts, recovering failures, more op kinds, threads on
other ranks, every collective kind with data that may tell symmetric ranks apart, profile fields, 8-16
ranks); bench/bench_differential.py names them as flags.

``compare(desc)`` checks one description reduced, unreduced and with ``workers=2`` and returns the
list of disagreements (empty when all agree), among them an invariant the checker accepted that reports
differently on a state and on its symmetric actors sorted (the symmetry check, checked), and a reduced
counterexample that is not a run of the unreduced world (``replays``).  A
planted-wrong declaration must be refused with a SpecError — or be harmless (the reduced and unreduced
answers agree).
"""
from __future__ import annotations

from typing import Any, Callable

from lockstep.model.api import INVARIANT, SpecError
from lockstep.model.checker import Bounds, check
from lockstep.model.crosscheck import reachable_classes, verdict_class
from lockstep.model.features import configure
from lockstep.spec.fabric import (Group, all_gather, all_reduce, all_to_all, barrier, batch_isend_irecv, broadcast,
                                  gather, irecv, isend, monitored_barrier, post, recv, reduce, reduce_scatter, scatter,
                                  send, wait)
from lockstep.spec import wire
from lockstep.spec.machine import FAILED, ActorDef, Fifo, Protocol, Role

Pick = Callable[[int, int], int]
MAX_STATES = 20_000
BIG_MAX_STATES = 60_000  # a world of more than 6 ranks (``big``): its unreduced graph is compared up to this
SHARED = ("s", "u")  # shared variables; descriptions from before footprints name only "s"


def describe(pick: Pick, wide: bool = False, detach: bool = False, recover: bool = False,
             rich: bool = False, threads: bool = False, rooted: bool = False, profiles: bool = False,
             big: tuple[int, int] | None = None, ranked: bool = False) -> dict[str, Any]:
    """A description drawn from ``pick``.  ``wide``: 4-6 ranks, two thirds of them with a symmetric
    orbit of 2-5 ranks (from rank 1 or rank 2 on: rank 1 then has a role of its own and may talk to
    rank 0 point-to-point), and 1-2 drawn sub-groups (a sub-group holds all the symmetric ranks or
    none), where the default draws 2-3 ranks as the generator always did.  ``detach``: roles (of the
    main threads, and of rank 0's other threads where they post ops) may also post an op and never wait
    for it (``_detach``), so that two actors can reach one local state, one with an op outstanding in the
    fabric and one without, and a process can exit with ops outstanding.  ``recover``: some ops
    that fail (their partner's process gone) send their thread on to a later state of its role instead
    of ``FAILED`` (``on_error=``), so a thread outlives a failed op and goes on posting.  ``rich``: more
    op kinds (all_gather, all_reduce with max, broadcast from rank 0 of the world, batch_isend_irecv of a
    send and a recv) and a fault budget of two where faults are drawn.  ``threads``: ranks other than 0
    (outside the symmetric orbit: a symmetric actor is alone on its rank) get a second thread that posts
    ops as rank 0's does (``_more_threads``).  ``rooted``: the collectives rank 0's draws never had
    (``_rooted``): reduce, gather, scatter and broadcast with a drawn root (on sub-groups too),
    reduce_scatter, all_to_all, monitored_barrier and all_gather with uneven sizes, some of which
    disagree.  ``profiles``: the backend's profile fields drawn each on its own (``gloo:p2p_match=...,
    gone_peer=...,finished_peer=...``, a third of them with eager sends), where the default draws one of
    the four presets.  ``big=(lo, hi)``: a wide world of lo-hi ranks, always with a symmetric orbit (from rank 1 or 2 on): the sizes users run,
    where only the orbit keeps the unreduced graph small enough to compare (``BIG_MAX_STATES``).
    ``ranked``: guards and effects that read ``c.rank`` (``_ranked``), on the symmetric role too, where
    most of them give the same at every symmetric rank (``rank != 0``) and the others tell the ranks
    apart (``rank == 2``: planted, which the checker must refuse, or which must be harmless)."""
    wide = wide or big is not None
    if wide:
        n = pick(4, 6) if big is None else pick(*big)
        sym_from = (0, 1, 2)[pick(0, 2)] if big is None else pick(1, 2)  # 0: no symmetric ranks
        sym = sym_from > 0
        two_threads = pick(0, 4) == 0
    else:
        n = pick(2, 3)
        sym = n == 3 and pick(0, 3) == 0  # ranks 1 and 2 share one role, declared symmetric
        sym_from = 1 if sym else 0
        two_threads = not sym and pick(0, 4) == 0
    actors = [(0, "main")] + ([(0, "aux")] if two_threads else []) + [(r, "main") for r in range(1, n)]
    symset = set(range(sym_from, n)) if sym else set()
    if wide:
        subgroups = _wide_subgroups(pick, n, symset)
    else:
        subgroups = [] if sym else [(0, 1)] + ([(1, 2)] if n == 3 else [])  # symmetric ranks: all or none
    roles = {}
    for idx, (rank, thread) in enumerate(actors):
        key = _key(sym_from, idx, rank) if sym else f"r{idx}"
        if key not in roles:
            roles[key] = _draw_role(pick, n, rank, thread, symset, subgroups)
    inv = None
    if pick(0, 2) > 0:
        a, b = pick(0, len(actors) - 1), pick(0, len(actors) - 1)
        kind = pick(0, 3)
        inv = {"kind": ("ctl", "x", "pending", "g")[kind], "var": SHARED[pick(0, len(SHARED) - 1)], "a": a, "b": b, "sa": pick(0, 3), "sb": pick(0, 3), "val": pick(0, 2)}
        if kind == 0 and inv["val"] == 0:
            # a third of the control-state invariants read the state only where the actor's x has a
            # value, declared ``observed_when``; a quarter of those planted wrong (the state read
            # everywhere).  From draws a control-state invariant does not use (val, var), so the draws
            # of every description stay those of the generator before this form
            inv["when"] = {"x": (a + b) % 3, "plant": inv["var"] == SHARED[1] and inv["sa"] % 2 == 0}
    faults = [f for f, on in (("crash", pick(0, 3) > 0), ("hang", pick(0, 2) == 0), ("boom", pick(0, 1))) if on]
    monitor = None
    # a monitor over the transitions' events: moves between states M0..M2, one may reject.  A wide
    # world draws one more often, per rank more often: per-rank monitors move with their symmetric ranks
    if pick(0, 1 if wide else 3) == 0:
        moves = [[f"M{pick(0, 2)}", f"ev{pick(0, 2)}", f"M{pick(0, 2)}"] for _ in range(pick(1, 4))]
        if pick(0, 1):
            moves[pick(0, len(moves) - 1)][2] = "REJECT"
        monitor = {"per": ("world", "rank", "rank")[pick(0, 2 if wide else 1)], "moves": moves,
                   "must_end": [f"M{s}" for s in range(3) if pick(0, 2) > 0] if pick(0, 1) else None}
    # no shared variables at all (drawn last, so the draws above are those of older descriptions): the
    # guards and effects on shared variables become none, and the roles (some of which do not say so)
    # are private whether they say so or not where no invariant or obligation reads them
    no_shared = (inv is None or inv["kind"] != "g") and pick(0, 3) == 0
    if no_shared:
        for r in roles.values():
            _unshare(pick, r)
    # a second thread that posts ops too (drawn last, so the draws above are those of older
    # descriptions): some of its local steps become collectives or point-to-point calls, which queue
    # behind the main thread's in posting order (spec/reduce.py: C1 for threads sharing a rank)
    aux_ops = two_threads and pick(0, 1) == 1
    if aux_ops:
        aux = roles[_key(sym_from, 1, 0) if sym else "r1"]
        groups0 = ["world"] + [f"sub{i}" for i, grp in enumerate(subgroups) if 0 in grp]
        peers0 = [r for r in range(1, n) if r not in symset]
        for t in aux["trans"]:
            if t["kind"] == "local" and pick(0, 2) > 0:
                _aux_op(pick, t, groups0, peers0)
        # sometimes a third thread on rank 0 (appended: the actor indices drawn above stay), posting too
        if pick(0, 2) == 0:
            idx = len(actors)
            actors.append((0, "aux2"))
            third = roles[f"r{idx}"] = _draw_role(pick, n, 0, "aux2", symset, subgroups)
            if no_shared:
                _unshare(pick, third)
            for t in third["trans"]:
                if t["kind"] == "local" and pick(0, 1) == 1:
                    _aux_op(pick, t, groups0, peers0)
    if threads:  # drawn after everything above, so those draws are the default mix's
        _more_threads(pick, n, actors, roles, symset, subgroups, no_shared)
    if detach:  # drawn after everything else, so the draws above are those of the default mix
        first = {}  # role -> the rank of its first actor, in actor order (not string-hash order)
        for idx, (rank, thread) in enumerate(actors):
            if thread == "main" or aux_ops or rank > 0:  # other threads of rank 0 post only where aux_ops
                first.setdefault(_key(sym_from, idx, rank) if sym else f"r{idx}", rank)
        for key, rank in first.items():
            _detach(pick, roles[key], [] if rank in symset else [x for x in range(n) if x != rank and x not in symset],
                    first=rank in symset)
    if recover:  # drawn after everything else, as detach
        for r in roles.values():
            for t in r["trans"]:
                if t["kind"] in ("coll", "p2p", "nb") and t.get("async") != "detach" and t["src"] + 1 < r["nstates"] \
                        and pick(0, 1):
                    t["on_error"] = pick(t["src"] + 1, r["nstates"] - 1)  # forward only: no loop re-posts a handle
    if rich:  # drawn after everything else, as detach
        for r in roles.values():
            for t in r["trans"]:
                if t["kind"] == "coll" and pick(0, 1):
                    # a broadcast from the world's rank 0 only: a sub-group's first rank may be a symmetric one
                    kinds = ("all_gather", "max") + (("broadcast",) if t["group"] == "world" else ())
                    t["op"] = kinds[pick(0, len(kinds) - 1)]
                elif t["kind"] == "nb" and pick(0, 1):
                    t["batch"] = True
    plant_rank = rooted and _rooted(pick, n, actors, roles, symset, subgroups, sym_from if sym else 0, no_shared)
    plant_read = ranked and _ranked(pick, n, roles, symset)
    if ranked and monitor is not None and pick(0, 1):  # the monitor sees only the events of some ranks
        cmp, k = ("ne", "ge", "eq", "lt")[pick(0, 3)], pick(0, n - 1)
        monitor["when"] = (cmp, k)
        lo, hi = (min(symset), max(symset)) if symset else (0, -1)
        plant_read = plant_read or bool(symset) and not (k not in symset if cmp in ("ne", "eq") else (k <= lo or k > hi))
    d = {
        "no_shared": no_shared, "aux_ops": aux_ops,
        "ranks": n, "actors": actors, "sym": sym, "sym_from": sym_from, "roles": roles, "subgroups": subgroups,
        # mpi: a rank that returned lingers (its partners hang).  No eager profile: a loop of eager sends
        # buffers without bound, and some users of the generator search without a state bound
        "backend": ("gloo", "nccl", "nccl-async", "mpi")[pick(0, 3)],
        "faults": faults, "max_faults": min(1, pick(0, 4)),
        "crash_ranks": _ranks(pick, n, symset), "hang_ranks": _ranks(pick, n, symset),
        "inv": inv, "plant_observed": pick(0, 7) == 0, "plant_asym": sym and inv is not None and pick(0, 3) == 0,
        "live": pick(0, 3) == 0 and not sym, "plant_rank": plant_rank, "plant_read": plant_read,
        "monitor": monitor,
    }
    if rich and d["faults"] and pick(0, 1):
        d["max_faults"] = 2
    if profiles:  # every combination of the fields a preset fixes
        d["backend"] = (f"gloo:p2p_match={('tag', 'peer-fifo')[pick(0, 1)]},"
                        f"gone_peer={('immediate', 'timeout', 'never')[pick(0, 2)]},"
                        f"finished_peer={('gone', 'alive')[pick(0, 1)]}")
        if pick(0, 2) == 0:
            # eager sends (each message here is 8 bytes): buffered messages switch the reductions off, so
            # only the parallel search is compared with the serial one; a loop of sends is cut by the bound
            d["backend"] += ",eager_below=16"
    return d


def _draw_role(pick, n, rank, thread, symset, subgroups) -> dict[str, Any]:
    """One role's description: its states, transitions and declarations."""
    in_orbit = rank in symset
    peers = [] if in_orbit else [r for r in range(n) if r != rank and r not in symset]
    groups = ["world"] + [f"sub{i}" for i, grp in enumerate(subgroups)
                          if rank in grp and (not in_orbit or symset <= set(grp))]
    nstates = pick(2, 4)
    trans = []
    for s in range(nstates - 1):  # a spine S0 -> S1 -> ... so every state is reachable
        trans.append(_draw_transition(pick, s, s + 1, nstates, peers, groups, thread, spine=True))
    for _ in range(pick(0, 3)):
        src = pick(0, nstates - 1)
        dst = pick(0, nstates)  # nstates means DONE
        trans.append(_draw_transition(pick, src, dst, nstates, peers, groups, thread))
    uses_shared = _uses_shared(trans)
    private = pick(0, 3) > 0 and not uses_shared
    plant_private = pick(0, 9) == 0 and uses_shared  # planted wrong: declared private, touches shared
    # footprints for a role that shares: undeclared, the role's ``shares``, or per transition;
    # honest, or planted wrong (one variable a transition touches left out)
    fp = ("none", "role", "trans", "trans")[pick(0, 3)] if uses_shared and not plant_private else "none"
    plant_fp = fp != "none" and pick(0, 5) == 0
    progress = ("none", "x", "negx")[pick(0, 2)] if fp != "none" or private else "none"
    return {"nstates": nstates, "trans": trans, "private": private or plant_private,
            "planted_private": plant_private, "hang_points": [s for s in range(nstates) if pick(0, 2) == 0],
            "footprint": fp, "planted_footprint": plant_fp, "plant_pick": pick(0, 7), "progress": progress}


def _unshare(pick, r: dict) -> None:
    """A role of a protocol without shared variables: its guards and effects on them become none,
    and it is private whether it says so or not."""
    for t in r["trans"]:
        if t["guard"][0] in ("g", "room", "nonempty"):
            t["guard"] = ("none",)
        if t["effect"][0] in ("g", "put", "take", "set"):
            t["effect"] = ("none",)
    r.update(private=pick(0, 1) == 1, planted_private=False, footprint="none", planted_footprint=False)


def _aux_op(pick, t: dict, groups: list, peers: list) -> None:
    """Turn the second thread's local step ``t`` into an op: a collective on a group of rank 0, or a
    point-to-point call to a rank outside the symmetric orbit, blocking or posted without blocking."""
    kind = "p2p" if peers and pick(0, 2) == 0 else "coll"
    t["kind"] = kind
    if t["effect"][0] in ("put", "take"):
        t["effect"] = ("none",)  # an op's effect runs at completion, when the guard's room or item may be gone
    if kind == "coll":
        t["group"] = groups[pick(0, len(groups) - 1)]
        t["op"] = ("barrier", "all_reduce")[pick(0, 1)]
        t["async"] = pick(0, 3) == 0
    else:
        t["peer"] = peers[pick(0, len(peers) - 1)]
        t["send"] = pick(0, 1) == 1
        t["tag"] = pick(0, 1)
        if pick(0, 3) == 0:
            t["kind"] = "nb"


def _more_threads(pick, n, actors, roles, symset, subgroups, no_shared) -> None:
    """A second thread (appended to ``actors``: the indices drawn before stay) on the first rank other
    than 0 outside the symmetric orbit, and on each later one by a coin; its local steps become ops, as
    on rank 0's second thread (``_aux_op``): they queue behind the rank's main thread's in posting order,
    and a failure of either ends the rank."""
    free = [r for r in range(1, n) if r not in symset]
    for k, r in enumerate(free):
        if k and not pick(0, 1):
            continue
        idx = len(actors)
        actors.append((r, "aux"))
        role = roles[f"r{idx}"] = _draw_role(pick, n, r, "aux", symset, subgroups)
        if no_shared:
            _unshare(pick, role)
        groups = ["world"] + [f"sub{i}" for i, grp in enumerate(subgroups) if r in grp]
        peers = [x for x in range(n) if x != r and x not in symset]
        for t in role["trans"]:
            if t["kind"] == "local" and pick(0, 2) > 0:
                _aux_op(pick, t, groups, peers)


ROOTED_KINDS = ("reduce", "gather", "scatter", "broadcast")
_BY_POSITION = wire._BY_POSITION  # kinds whose results go by group rank


def _rooted(pick, n, actors, roles, symset, subgroups, sym_from, no_shared) -> bool:
    """Half the collectives become a kind drawn from the rest of torch.distributed's: a rooted one with
    a root drawn among the group's members outside the symmetric orbit (a symmetric role may not name one
    of its own ranks), reduce_scatter and all_to_all (one chunk per member), monitored_barrier, or an
    all_gather with uneven sizes (each rank's drawn size, where a quarter of the calls expect one member's
    wrongly: a mismatch).  What a (group, kind) becomes is drawn once, so that calls which matched still
    match; an eighth of the calls draw on their own, so ranks also disagree on the kind or the root.
    A gather, all_gather or all_to_all may contribute the actor's ``x`` (``data``); a scatter's or
    all_to_all's chunks are alike for the symmetric members, or in a quarter of the calls one per member
    (``chunks``); and half the calls whose results go by group rank read one position of the result into
    ``x`` (``read``).  A quarter of the calls without an effect set the shared ``s`` to ``x`` at completion,
    where the members' afters run in group order, so the last member's ``x`` wins.  In a world with
    symmetric ranks, such a write from the symmetric role, a contribution of ``x`` from it and chunks that
    differ between symmetric members are planted wrong: they tell the symmetric ranks apart,
    which the checker refuses where a call shows it (spec/wire.py, ``_check_swaps``).  So is, on a
    quarter of those worlds, an op of a role outside the orbit addressed to a symmetric rank, with the
    symmetric role's spine calling rank 0 (``_plant_sym_peer``).  Returns whether it planted any."""
    members = {"world": tuple(range(n)), **{f"sub{i}": grp for i, grp in enumerate(subgroups)}}
    plant = False
    vsize = [pick(1, 2) for _ in range(n)]
    for r in symset:
        vsize[r] = vsize[sym_from]
    seen, conv = set(), {}
    for idx, (rank, _) in enumerate(actors):  # each role once, in actor order, on its first actor's rank
        key = _key(sym_from, idx, rank) if symset else f"r{idx}"
        if key in seen:
            continue
        seen.add(key)
        coins = []
        for t in roles[key]["trans"]:
            if t["kind"] != "coll":
                continue
            grp = members[t["group"]]
            was = (t["group"], t["op"])
            if was in conv and pick(0, 7):
                new = conv[was]
            else:  # the first call of a (group, kind) draws what it becomes; an eighth of the later ones too
                new = conv.setdefault(was, _convert(pick, grp, symset))
            if new is None:
                continue
            t["op"], t["size"] = new[0], len(grp)
            if new[1] is not None:
                t["root"] = new[1]
            if t["op"] == "all_gather_v":
                sizes = [vsize[x] for x in grp]
                if pick(0, 3) == 0:
                    k = pick(0, len(sizes) - 1)
                    sizes[k] = 3 - sizes[k]
                t["split"] = (vsize[rank], tuple(sizes))
            orbit = len(symset & set(grp)) > 1
            if t["op"] in ("gather", "all_gather", "all_to_all") and pick(0, 1):
                t["data"] = "x"
                plant |= orbit and key == "w"
                if key == "w" and t["src"] > 0:  # a coin on the way in, so the symmetric ranks' x may differ
                    coins.append({"kind": "local", "src": t["src"] - 1, "dst": t["src"], "guard": ("none",),
                                  "effect": ("x",), "timeout": False, "alt": False, "event": None})
            if t["op"] in ("scatter", "all_to_all"):
                distinct = pick(0, 3) == 0
                t["chunks"] = [m if distinct or x not in symset else 0 for m, x in enumerate(grp)]
                plant |= orbit and distinct
            if t["op"] in _BY_POSITION and pick(0, 1):
                t["read"] = pick(0, len(grp) - 1)
            if not no_shared and not roles[key]["private"] and t["effect"][0] == "none" and pick(0, 3) == 0:
                t["effect"] = ("set", SHARED[0])  # at completion, in group order: the last member's x wins
                plant |= orbit and key == "w"
        roles[key]["trans"] += coins
    if symset and pick(0, 3) == 0:
        plant |= _plant_sym_peer(pick, actors, roles, symset, sym_from)
    return plant


def _ranked(pick, n, roles, symset) -> bool:
    """Guards and effects that read the rank: ``("rank", cmp, k)`` compares ``c.rank`` with k, the effect
    ``("rankx", k)`` adds ``rank >= k`` to x.  Drawn on every role (the symmetric one included); returns
    whether one of the symmetric role's tells its ranks apart (k inside the orbit), which the checker must
    refuse where the search evaluates it, or which must change nothing."""
    lo, hi = (min(symset), max(symset)) if symset else (0, -1)
    apart = False
    for key in sorted(roles):
        for t in roles[key]["trans"]:
            if t["effect"][0] in ("put", "take"):
                continue  # their guards test the queue
            if pick(0, 2) == 0:
                cmp = ("ne", "ge", "eq", "lt")[pick(0, 3)]
                k = pick(0, n - 1) if pick(0, 1) else (0, lo)[pick(0, 1)]  # half of them at 0 or the orbit's start
                t["guard"] = ("rank", cmp, k)
                blind = k not in symset if cmp in ("ne", "eq") else (k <= lo or k > hi)
                apart = apart or (key == "w" and not blind)
            if t["kind"] == "local" and pick(0, 3) == 0:
                k = pick(0, n - 1) if pick(0, 1) else lo
                t["effect"] = ("rankx", k)
                apart = apart or (key == "w" and lo < k <= hi)
    return apart


def _convert(pick, grp, symset):
    """What a collective on ``grp`` becomes: None (half the time: it stays), or (kind, root or None)."""
    if not pick(0, 1):
        return None
    roots = [k for k, x in enumerate(grp) if x not in symset]
    kinds = ("reduce_scatter", "all_to_all", "monitored_barrier", "all_gather_v") + (ROOTED_KINDS if roots else ())
    kind = kinds[pick(0, len(kinds) - 1)]
    return kind, (roots[pick(0, len(roots) - 1)] if kind in ROOTED_KINDS else None)


def _plant_sym_peer(pick, actors, roles, symset, sym_from) -> bool:
    """Planted wrong: rank 0's main role addresses one symmetric rank (a send or recv, blocking or
    posted), and the symmetric role's first spine step becomes the matching call to rank 0, so that the
    symmetric ranks are told apart by who can complete it."""
    spine0 = [t for t in roles[_key(sym_from, 0, 0)]["trans"] if t["kind"] in ("local", "coll") and t.get("async") != "detach"]
    spine_w = [t for t in roles["w"]["trans"] if t["src"] == 0 and t["kind"] in ("local", "coll")
               and t.get("async") != "detach"]
    if not spine0 or not spine_w:
        return False
    send = pick(0, 1) == 1
    t0 = spine0[pick(0, len(spine0) - 1)]
    t0.update(kind=("p2p", "nb")[pick(0, 1)], peer=sorted(symset)[pick(0, len(symset) - 1)], send=send, tag=0)
    tw = spine_w[0]
    tw.update(kind=("p2p", "nb")[pick(0, 1)], peer=0, send=not send, tag=0)
    for t in (t0, tw):
        t.pop("async", None)
        if t["effect"][0] in ("put", "take"):
            t["effect"] = ("none",)
    return True

def _detach(pick, r: dict, peers: list, first: bool = False) -> None:
    """Beside some spine steps S<s> -> S<s+1> that an actor takes at most once, a pair of steps to the
    same state: an op posted and never waited for (fire and forget: the handle is dropped, the op still
    runs), a collective on the world or, towards one of ``peers``, an isend or an irecv, and a local step
    that does nothing.  Only where no step re-enters a state up to S<s> from itself or a later state, so
    no loop posts without bound.  Sometimes the last state is also left for DONE: a process that exits
    with its posted ops outstanding voids them.
    ``first`` (the symmetric ranks' role): always beside the first spine step, where the ranks start as
    twins, so that one may post and one not and both go on as twins told apart by the fabric alone."""
    targets = [(t["src"], d) for t in r["trans"] for d in ((t["dst"], t["dst"] + 1) if t["alt"] else (t["dst"],))]
    for s in range(r["nstates"] - 1):
        if any(d <= s and src >= d for src, d in targets):
            break  # a loop through a state up to S<s>: it and every later spine step may run again
        if (first and s == 0) or pick(0, 1):
            t = {"kind": "coll", "src": s, "dst": s + 1, "guard": ("none",), "effect": ("none",), "timeout": False,
                 "alt": False, "event": None, "group": "world", "op": ("barrier", "all_reduce")[pick(0, 1)],
                 "async": "detach"}
            if peers and pick(0, 1):
                t.update(kind="nb", peer=peers[pick(0, len(peers) - 1)], send=pick(0, 1) == 1, tag=pick(0, 1))
            r["trans"].append(t)
            r["trans"].append({"kind": "local", "src": s, "dst": s + 1, "guard": ("none",), "effect": ("none",),
                               "timeout": False, "alt": False, "event": None})
    if pick(0, 1):
        r["trans"].append({"kind": "local", "src": r["nstates"] - 1, "dst": r["nstates"], "guard": ("none",),
                           "effect": ("none",), "timeout": False, "alt": False, "event": None})


def _uses_shared(trans: list) -> bool:
    return any(t["guard"][0] in ("g", "room", "nonempty") or t["effect"][0] in ("g", "put", "take", "set") for t in trans)


def _ranks(pick, n, symset) -> list[int]:
    """A subset of the ranks; symmetric ranks all or none."""
    if symset:
        return [r for r in range(n) if r not in symset and pick(0, 1)] + (sorted(symset) if pick(0, 1) else [])
    return [r for r in range(n) if pick(0, 3) > 0]


def _wide_subgroups(pick, n, symset) -> list[tuple[int, ...]]:
    """1-2 sub-groups of a wide world, each of 2+ ranks and not the world; one holds all the
    symmetric ranks or none of them."""
    out = []
    for _ in range(pick(1, 2)):
        free = [r for r in range(n) if r not in symset]
        grp = {r for r in free if pick(0, 1)} | (symset if symset and pick(0, 1) else set())
        if 2 <= len(grp) < n and tuple(sorted(grp)) not in out:
            out.append(tuple(sorted(grp)))
    return out


def _key(sym_from: int, idx: int, rank: int) -> str:
    """The role key of actor ``idx`` on ``rank``: ``w`` for the symmetric ranks' one role."""
    return "w" if sym_from and rank >= sym_from else f"r{idx}"


def _draw_transition(pick, src, dst, nstates, peers, groups, thread, spine=False):
    """One transition; ``peers``: the ranks it may address point-to-point (never a symmetric rank),
    ``groups``: those it may run a collective on."""
    kinds = ["local", "local", "coll", "p2p", "fault", "quiet", "nb"]
    kind = kinds[pick(0, len(kinds) - 1)]
    if spine and kind == "fault":
        kind = "local"  # a fault ends in FAILED: the spine must reach the next state
    if kind in ("p2p", "nb") and (not peers or thread != "main"):
        kind = "coll"  # symmetric ranks are never addressed by rank; a second thread stays off p2p
    if kind == "coll" and thread != "main":
        kind = "local"
    t: dict[str, Any] = {"kind": kind, "src": src, "dst": dst, "guard": ("none",), "effect": ("none",),
                         "timeout": pick(0, 3) == 0, "alt": pick(0, 5) == 0 and dst != nstates,
                         "event": f"ev{pick(0, 3)}" if kind in ("local", "coll", "p2p", "nb") else None}
    g = pick(0, 7)
    if g in (1, 2):
        t["guard"] = ("x", pick(0, 2))
    elif g in (3, 4):
        t["guard"] = ("g", pick(0, 2), SHARED[pick(0, len(SHARED) - 1)])
    e = pick(0, 7)
    if e in (1, 2):
        t["effect"] = ("x",)
    elif e in (3, 4):
        t["effect"] = ("g", SHARED[pick(0, len(SHARED) - 1)])
    elif e == 5:  # a FIFO put, run only while the queue has room
        t["effect"], t["guard"] = ("put",), ("room", pick(1, 2))
    elif e == 6:  # a FIFO take, run only while the queue holds an item
        t["effect"], t["guard"] = ("take",), ("nonempty",)
    if kind in ("coll", "p2p", "nb") and t["effect"][0] in ("put", "take"):
        t["effect"] = ("none",)  # an op's effect runs at completion, when the guard's room or item may be gone
    if kind == "coll":
        t["group"] = groups[pick(0, len(groups) - 1)]
        t["op"] = ("barrier", "all_reduce")[pick(0, 1)]
        t["async"] = pick(0, 3) == 0  # posted with async_op=True and waited for in a state of its own
    elif kind in ("p2p", "nb"):  # nb: isend/irecv under a handle, then wait() in a state of its own
        t["peer"] = peers[pick(0, len(peers) - 1)]
        t["send"] = pick(0, 1) == 1
        t["tag"] = pick(0, 1)
    return t


def _state(i: int, nstates: int) -> str:
    return "DONE" if i >= nstates else f"S{i}"


def from_json(d: dict[str, Any]) -> dict[str, Any]:
    """A description read back from JSON (tests/protogen_regressions.jsonl): its tuples, which JSON
    turned into lists, made tuples again."""
    for r in d["roles"].values():
        for t in r["trans"]:
            t["guard"], t["effect"] = tuple(t["guard"]), tuple(t["effect"])
    d["actors"] = [tuple(a) for a in d["actors"]]
    d["subgroups"] = [tuple(g) for g in d["subgroups"]]
    return d


def build(d: dict[str, Any]) -> Protocol:
    groups = {"world": Group("world", tuple(range(d["ranks"])))}
    for i, grp in enumerate(d["subgroups"]):
        groups[f"sub{i}"] = Group(f"sub{i}", grp)
    built: dict[str, Role] = {}
    actor_defs = []
    inv = d["inv"]
    for idx, (rank, thread) in enumerate(d["actors"]):
        key = _key(d.get("sym_from", 1), idx, rank) if d["sym"] else f"r{idx}"
        if key not in built:
            built[key] = _role(key, d["roles"][key], d, inv, idx)
        actor_defs.append(ActorDef(rank, thread, built[key]))
    invariants = []
    observing = None
    if inv is not None:
        observing = _Observing(_invariant(inv, d))
        invariants.append(("INV", INVARIANT, observing))
    def obligation(world):
        a = next(world.actors(thread="main"))
        return a.state not in ("DONE", FAILED, "DEAD", "HUNG") and a.state != "S0"
    pending = obligation if d["live"] else None
    p = Protocol(
        "gen", groups, actor_defs, shared={} if d.get("no_shared") else {**{v: 0 for v in SHARED}, "f": Fifo()},
        backend=d["backend"], faults=frozenset(d["faults"]),
        max_faults=d["max_faults"], crash_ranks=tuple(d["crash_ranks"]), hang_ranks=tuple(d["hang_ranks"]),
        invariants=invariants, pending_fn=pending, monitors=_monitors(d),
        symmetric=tuple(i for i, (r, _) in enumerate(d["actors"]) if r >= d.get("sym_from", 1)) if d["sym"] else ())
    p.protogen_observations = observing.observations if observing is not None else None
    return p


class _Observing:
    """The invariant, keeping what each evaluation read (in order: actor position, attribute, value)
    with its result: its *observations*.  A property the checker accepts reads only what the
    declarations let it, so the reduced graph must yield every observation of the full one, whether
    or not the invariant ever fails.  (A memoised verdict skips the call, but only where the values
    read are those of an evaluation already kept.)"""

    def __init__(self, fn):
        self.fn, self.observations = fn, set()

    def __call__(self, world):
        log: list = []
        out = self.fn(_LogWorld(world, log))
        self.observations.add((tuple(log), out))
        return out


class _LogWorld:
    def __init__(self, world, log):
        self._w, self._log = world, log

    def actors(self, *a, **k):
        return [_LogActor(x, self._log, i) for i, x in enumerate(self._w.actors(*a, **k))]

    @property
    def shared(self):
        return _LogVars(self._w.shared, self._log, "shared")


class _LogActor:
    def __init__(self, actor, log, i):
        self._a, self._log, self._i = actor, log, i

    def __getattr__(self, name):
        v = getattr(self._a, name)
        if name == "vars":
            self._log.append((self._i, "vars", v is None))
            return None if v is None else _LogVars(v, self._log, self._i)
        self._log.append((self._i, name, v))
        return v


class _LogVars:
    def __init__(self, vs, log, who):
        self._v, self._log, self._who = vs, log, who

    def __getattr__(self, name):
        v = getattr(self._v, name)
        self._log.append((self._who, name, v))
        return v


def fifo_ends(d: dict[str, Any]) -> bool:
    """Whether one role's transitions declare a take from the FIFO and another's a put to it (each in
    its own footprint: the case of C0 for FIFO ends, where a take waits for another actor's put)."""
    def ends(effect):
        return {k for k, r in d["roles"].items() if r["footprint"] == "trans" and not d.get("no_shared")
                and any(t["effect"][0] == effect for t in r["trans"])}
    takers, putters = ends("take"), ends("put")
    return bool(takers and putters and (len(takers | putters) > 1))


def unobserved_reads(d: dict[str, Any]) -> bool:
    """Whether the invariant reads a local field of an actor the reduction may take alone, with the
    ``observed`` declarations planted wrong (left out): the case the read check must refuse."""
    inv = d["inv"]
    if not d["plant_observed"] or inv is None or inv["kind"] not in ("ctl", "x", "pending"):
        return False
    try:
        return inv["a"] in build(d)._por_actors
    except SpecError:
        return False


def by_position(d: dict[str, Any]) -> bool:
    """Whether the symmetric role contributes its ``x`` to a call whose results go by group rank (the
    case spec/wire.py's ``_check_swaps`` must refuse wherever the call keeps a result that differs with the
    symmetric ranks' arrangement)."""
    return bool(d["sym"]) and any(t.get("data") == "x" for t in d["roles"]["w"]["trans"])


def planted(d: dict[str, Any]) -> bool:
    """Whether the description plants a wrong declaration (the checker must refuse it, or the
    reduced and unreduced answers must agree)."""
    when = (d["inv"] or {}).get("when")
    return bool(d["plant_observed"] or d["plant_asym"] or (when and when["plant"]) or d.get("plant_rank") or d.get("plant_read")
                or any(r["planted_private"] or r.get("planted_footprint") for r in d["roles"].values()))


def _role(key: str, rd: dict, d: dict, inv, idx: int) -> Role:
    observed = ()
    when = {}
    if inv is not None and not d["plant_observed"]:
        observed = {"ctl": ("ctl",), "x": ("x",), "pending": ("ctl", "pending"), "g": ()}[inv["kind"]]
        if inv["kind"] == "g" and not rd["private"]:
            observed = (inv["var"],)  # the invariant reads a shared variable: every role that may write it
        if inv.get("when"):  # the control state only where x has the drawn value; x everywhere
            observed, when = ("x",), {"ctl": lambda v, k=inv["when"]["x"]: v.x == k}
    if d["live"] and idx == 0 and "ctl" not in observed:
        observed += ("ctl",)  # the liveness obligation reads the first actor's control state
        when = {}
    fp = rd.get("footprint", "none")
    fps = _footprints(rd) if fp != "none" else {}
    shares = None
    if fp == "role":  # the role's shares: plain reads and writes (a FIFO end used as a plain variable)
        shares = tuple(sorted(set().union(*(set().union(*f) for f in fps.values()))))
    progress = {"none": None, "x": lambda v: v.x, "negx": lambda v: -v.x}[rd.get("progress", "none")]
    r = Role(key, "S0", {"x": 0}, private=rd["private"], observed=observed, observed_when=when,
             hang_points=[_state(s, rd["nstates"]) for s in rd["hang_points"]], shares=shares, progress=progress)
    for k, t in enumerate(rd["trans"]):
        src, dst = _state(t["src"], rd["nstates"]), _state(t["dst"], rd["nstates"])
        fkw: dict[str, Any] = {}
        if fp == "trans":
            reads, writes, puts, takes = fps[k]
            fkw = {"reads": tuple(sorted(reads)), "writes": tuple(sorted(writes)),
                   "puts": tuple(sorted(puts)), "takes": tuple(sorted(takes))}
        dsts = (dst, _state(t["dst"] + 1, rd["nstates"])) if t["alt"] else (dst,)
        guard = _guard(t["guard"])
        do = _effect(t["effect"])
        name = f"t{k}"
        kw: dict[str, Any] = {}
        if t["alt"]:
            kw["choose"] = lambda c: (0, 1)
            alt_targets = dsts
            base = do
            def do(c, base=base, alt_targets=alt_targets):
                if base:
                    base(c)
                c.goto(alt_targets[c.choice])
        kw.update(fkw)
        ekw = {"event": t["event"]} if t.get("event") and d.get("monitor") else {}
        okw = {"on_error": _state(t["on_error"], rd["nstates"])} if "on_error" in t else {}
        if t["kind"] == "local":
            r.local(name, src, dsts, guard=guard, do=do, **kw, **ekw)
        elif t["kind"] == "quiet":
            r.local(name, src, dsts, guard=guard, do=do, quiescent=True, **kw)
        elif t["kind"] == "fault":
            r.local(name, src, FAILED, fault="boom", guard=guard, **fkw)
        elif t.get("async") == "detach":  # posted, never waited for
            r.op(name, src, dst, _post(t, f"h{k}"), guard=guard, **fkw, **ekw)
        elif t["kind"] == "nb" or t.get("async"):  # post without blocking, wait in W<k> (waited before any new post)
            after = _after(t)
            r.op(name, src, f"W{k}", _post(t, f"h{k}"), guard=guard, **fkw, **ekw)
            wkw = {"reads": fkw["writes"], "writes": fkw["writes"]} if fkw else {}  # the wait runs the effect
            r.op(f"{name}_wait", f"W{k}", dst, lambda c, h=f"h{k}": wait(h), after=after,
                 timeout=FAILED if t["timeout"] else None, timeout_kind="recovers" if t["timeout"] else None, **wkw, **okw)
        else:
            op = _op(t)
            after = _after(t)
            r.op(name, src, dst, op, guard=guard, after=after, timeout=FAILED if t["timeout"] else None,
                 timeout_kind="recovers" if t["timeout"] else None, **fkw, **ekw, **okw)
    return r


def _monitors(d) -> list:
    """The description's monitor, watching only events some transition declares (the world refuses
    others), with ``must_end`` kept to the monitor's own states; none when no move is left."""
    from lockstep.spec.monitor import Monitor, Reject

    md = d.get("monitor")
    if not md:
        return []
    declared = {t.get("event") for r in d["roles"].values() for t in r["trans"]}
    on = {}
    for src, ev, dst in md["moves"]:
        if ev in declared:
            on[(src, ev)] = Reject(f"{ev} in {src}") if dst == "REJECT" else dst
    if not on:
        return []
    states = {"M0"} | {s for s, _ in on} | {x for x in on.values() if isinstance(x, str)}
    must_end = [s for s in md["must_end"] if s in states] if md["must_end"] is not None else None
    when = _guard(("rank", *md["when"])) if md.get("when") else None  # (an Event has .rank, as a Ctx does)
    return [Monitor("mon", "MONITOR", "M0", on, per=md["per"], must_end=must_end, when=when)]


def _footprints(rd) -> dict[int, tuple[set, set]]:
    """Per transition, the shared variables it reads and writes (honest); a planted-wrong role loses
    one variable from one transition's footprint (the ``plant_pick``-th that touches any)."""
    out = {}
    for k, t in enumerate(rd["trans"]):
        reads, writes, puts, takes = set(), set(), set(), set()
        g, e = t["guard"][0], t["effect"][0] if t["kind"] != "fault" else "none"  # a fault runs no effect
        if g == "g":
            reads.add(_var(t["guard"], 2))
        if e in ("g", "set"):
            writes.add(_var(t["effect"], 1))
        if g == "room" or e == "put":
            puts.add("f")
        if g == "nonempty" or e == "take":
            takes.add("f")
        out[k] = (reads, writes, puts, takes)
    if rd.get("planted_footprint"):
        touching = [k for k, f in out.items() if any(f)]
        if touching:
            k = touching[rd["plant_pick"] % len(touching)]
            next(x for x in reversed(out[k]) if x).pop()
    return out


def _var(x, i) -> str:
    return x[i] if len(x) > i else "s"


def _guard(g):
    if g[0] == "x":
        return lambda c, v=g[1]: c.v.x <= v
    if g[0] == "g":
        return lambda c, v=g[1], f=_var(g, 2): getattr(c.g, f) != v
    if g[0] == "room":
        return lambda c, cap=g[1]: c.g.f.has_room(cap)
    if g[0] == "nonempty":
        return lambda c: c.g.f.nonempty()
    if g[0] == "rank":
        return {"ne": lambda c, k=g[2]: c.rank != k, "ge": lambda c, k=g[2]: c.rank >= k,
                "eq": lambda c, k=g[2]: c.rank == k, "lt": lambda c, k=g[2]: c.rank < k}[g[1]]
    return None


def _effect(e):
    if e[0] == "x":
        return lambda c: c.set(x=(c.v.x + 1) % 3)
    if e[0] == "g":
        return lambda c, f=_var(e, 1): c.gset(**{f: (getattr(c.g, f) + 1) % 3})
    if e[0] == "rankx":
        return lambda c, k=e[1]: c.set(x=(c.v.x + (c.rank >= k)) % 3)
    if e[0] == "set":  # the last writer wins: an order-dependent write
        return lambda c, f=_var(e, 1): c.gset(**{f: c.v.x})
    if e[0] == "put":
        return lambda c: c.gset(f=c.g.f.put(c.v.x))
    if e[0] == "take":
        def take(c):
            item, rest = c.g.f.take()
            c.gset(f=rest)
            c.set(x=item)
        return take
    return None


def _after(t):
    """An op's ``after``: the transition's effect, then, where the call reads its result (``read``), the
    result's entry at that group position (or the result itself, not a tuple) into ``x``."""
    eff, k = _effect(t["effect"]), t.get("read")
    if k is None:
        return (lambda c, data, eff=eff: eff(c)) if eff else None

    def after(c, data, eff=eff, k=k):
        if eff:
            eff(c)
        v = data[k] if isinstance(data, tuple) else data
        if isinstance(v, int):
            c.set(x=v % 3)
    return after


def _op(t):
    if t["kind"] == "coll":
        grp, kind, sig = t["group"], t["op"], ("int", 1)
        size, root = t.get("size", 0), t.get("root", 0)  # broadcast without a drawn root: from rank 0 (rich)
        chunks = tuple(t.get("chunks") or range(size))
        if t.get("data") == "x":  # the actor's x as its contribution
            make = {"gather": lambda c: gather(grp, root, sig, c.v.x), "all_gather": lambda c: all_gather(grp, sig, c.v.x),
                    "all_to_all": lambda c: all_to_all(grp, sig, tuple(c.v.x for _ in range(size)))}[kind]
            return make
        op = {"barrier": lambda: barrier(grp), "monitored_barrier": lambda: monitored_barrier(grp),
              "all_gather": lambda: all_gather(grp, sig, 1),
              "all_gather_v": lambda: all_gather(grp, sig, 1, t["split"][0], t["split"][1]),
              "broadcast": lambda: broadcast(grp, root, sig, 1), "reduce": lambda: reduce(grp, root, sig, 1),
              "gather": lambda: gather(grp, root, sig, 1), "scatter": lambda: scatter(grp, root, sig, chunks),
              "reduce_scatter": lambda: reduce_scatter(grp, sig, (1,) * size),
              "all_to_all": lambda: all_to_all(grp, sig, chunks),
              "max": lambda: all_reduce(grp, sig, 1, "max"), "all_reduce": lambda: all_reduce(grp, sig, 1)}[kind]()
        return lambda c, op=op: op  # an op is a value: built once
    peer, tag = t["peer"], t["tag"]
    if t["send"]:
        return lambda c: send("world", peer, ("int64", (1,)), None, tag)
    return lambda c: recv("world", peer, ("int64", (1,)), tag)


def _post(t, handle):
    if t["kind"] == "coll":
        op = _op(t)
        return lambda c: post(handle, op(c))
    peer, tag = t["peer"], t["tag"]
    if t.get("batch"):
        return lambda c: batch_isend_irecv(handle, [send("world", peer, ("int64", (1,)), None, tag),
                                                    recv("world", peer, ("int64", (1,)), tag)])
    if t["send"]:
        return lambda c: isend(handle, "world", peer, ("int64", (1,)), None, tag)
    return lambda c: irecv(handle, "world", peer, ("int64", (1,)), tag)


def _invariant(inv, d):
    a, b = inv["a"], inv["b"]
    sa, sb, val = f"S{inv['sa']}", f"S{inv['sb']}", inv["val"]
    kind = inv["kind"]
    asym = d["plant_asym"]
    sym_from = d.get("sym_from", 1)

    when = inv.get("when")

    def in_state_when(x, s):
        """Actor x is in control state s with x at the drawn value: honest, the state is read only
        there (``observed_when``); planted, the state is read and decides at any x (a property the
        declaration does not cover, which the checker must refuse: reading the state first but
        deciding only at the drawn x would be harmless whatever the checker did)."""
        if when["plant"]:
            return x.state == s and x.vars is not None
        return x.vars is not None and x.vars.x == when["x"] and x.state == s

    def fn(world):
        actors = list(world.actors())
        A, B = actors[a], actors[b]
        if asym and A.rank >= sym_from and A.state == sa:  # planted: singles out one symmetric rank
            return f"{A.label} in {sa}"
        if when:
            return (f"{A.label} in {sa} while {B.label} in {sb}, both at x={when['x']}"
                    if a != b and in_state_when(A, sa) and in_state_when(B, sb) else None)
        if kind == "ctl":
            return f"{A.label} in {sa} while {B.label} in {sb}" if A.state == sa and B.state == sb and a != b else None
        if kind == "x":
            v = A.vars
            return f"{A.label} x={val}" if v is not None and v.x == val and val == 2 else None
        if kind == "g":
            return f"{inv['var']}=2" if getattr(world.shared, inv["var"]) == 2 and val > 0 else None
        p = A.pending
        return f"{A.label} waits in {sa}" if p is not None and A.state == sa and sa == "S1" and val == 0 else None

    def sym_fn(world):
        ws = [x for x in world.actors() if x.rank >= sym_from]
        if when:
            return f"every worker in {sa} at x={when['x']}" if all(in_state_when(w, sa) for w in ws) else None
        if kind == "ctl":
            return "both workers in " + sa if all(w.state == sa for w in ws) else None
        if kind == "x":
            return "a worker at x=2" if any(w.vars is not None and w.vars.x == 2 for w in ws) and val == 2 else None
        if kind == "g":
            return f"{inv['var']}=2" if getattr(world.shared, inv["var"]) == 2 and val > 0 else None
        return "a worker waits in S1" if any(w.pending is not None and w.state == "S1" for w in ws) and val == 0 else None
    # a world with symmetric workers gets a property over the workers where no position matters
    return sym_fn if d["sym"] and not asym else fn


def compare(d: dict[str, Any], workers: bool = True, seen: dict | None = None) -> list[str]:
    """Disagreements between reduced, unreduced and parallel checks of one description.  ``seen``, where
    given, gets ``complete``: whether both searches finished within the bound (everything was compared)."""
    planted_wrong = planted(d)
    cap = BIG_MAX_STATES if d["ranks"] > 6 else MAX_STATES
    out = {}
    missed = None
    try:
        for key, red in (("reduced", True), ("unreduced", False)):
            model = build(d)
            res = check(model, Bounds(max_states=cap), liveness=d["live"], reduction=red)
            if model.concretize_missed:  # a counterexample printed as representatives, not as a run
                missed = f"{key}: a counterexample left as a path of orbit representatives ({res.verdict})"
            elif red and res.counterexample and (said := told_at_end(build(d), res)) is not None:
                missed = f"{key}: {said}"
            ex = explore(build(d), red, cap)
            out[key] = (verdict_class(res.verdict), ex[5], ex[5] is not None, res.verdict, ex[0], res, *ex[1:5])
    except SpecError as e:
        if planted_wrong:
            return []  # refused: what a planted-wrong declaration must get
        return [f"SpecError on an honest spec: {e}"]
    r, u = out["reduced"], out["unreduced"]
    if missed:
        return [missed]
    if seen is not None:
        seen["complete"] = r[4] is not None and u[4] is not None
    diffs = []
    if r[0] != u[0] and "BOUND_REACHED" not in (r[0], u[0]):
        diffs.append(f"verdict class: reduced {r[3]}, unreduced {u[3]}")
    if r[2] and u[2] and r[1] != u[1]:
        diffs.append(f"reachable violation classes: reduced {sorted(r[1])}, unreduced {sorted(u[1])}")
    if r[4] is not None and u[4] is not None and r[4] != u[4]:
        diffs.append(f"end states: {len(u[4] - r[4])} only unreduced, {len(r[4] - u[4])} only reduced")
    # Each property reads only what the declarations let it (or the spec is refused), so the reduced
    # graph must reach every view of the full one, every report of its invariant and everything the
    # invariant saw.  A symmetric world's reduced graph holds one arrangement of each orbit, where an
    # observation names positions: observations are compared where no actor is symmetric.  Reports are
    # compared everywhere: a property the symmetry check accepts says the same on every arrangement.
    if r[6] is not None and u[6] is not None and r[6] != u[6]:
        diffs.append(f"observed views: {len(u[6] - r[6])} only unreduced, {len(r[6] - u[6])} only reduced")
    if r[7] is not None and u[7] is not None and r[7] != u[7]:
        diffs.append(f"invariant reports: only unreduced {sorted(u[7] - r[7])[:2]}, only reduced {sorted(r[7] - u[7])[:2]}")
    if u[9]:  # the checker accepted the spec, so its properties must say the same on every arrangement
        diffs.append(f"an accepted invariant tells symmetric actors apart: {sorted(u[9], key=repr)[0]} "
                     f"(a state, then its symmetric actors sorted)")
    if not d["sym"] and r[8] is not None and u[8] is not None and r[8] != u[8]:
        diffs.append(f"invariant observations: {len(u[8] - r[8])} only unreduced, {len(r[8] - u[8])} only reduced, "
                     f"e.g. {sorted(u[8] - r[8], key=repr)[:1]}")
    if workers and not d["live"]:
        from lockstep.model.engine import CheckOptions, check as echeck

        try:
            p = echeck(build(d), CheckOptions(bounds=Bounds(max_states=cap), liveness=False, workers=2))
        except SpecError as e:
            return diffs + ([] if planted_wrong else [f"SpecError with workers=2 only: {e}"])
        if verdict_class(p.verdict) != r[0] and "BOUND_REACHED" not in (r[0], verdict_class(p.verdict)):
            diffs.append(f"verdict class: workers=2 {p.verdict}, reduced {r[3]}")
        elif p.verdict not in ("HOLDS", "BOUND_REACHED", "VACUOUS") and r[2] and p.verdict not in r[1]:
            diffs.append(f"workers=2 found {p.verdict}, not reachable in the reduced graph {sorted(r[1])}")
        if p.counterexample and (said := told_at_end(build(d), p)) is not None:
            diffs.append(f"workers=2: {said}")
        # unreduced with workers=2 (the workers keep the model's int keys): the serial search exactly
        pu = echeck(build(d), CheckOptions(bounds=Bounds(max_states=cap), liveness=False, reduction=False,
                                           workers=2))
        su = u[5]
        if (pu.verdict, pu.stats.states, pu.stats.transitions, pu.stats.depth, pu.counterexample) != \
                (su.verdict, su.stats.states, su.stats.transitions, su.stats.depth, su.counterexample):
            diffs.append(f"unreduced workers=2 {pu.verdict} {pu.stats.states} states {pu.stats.transitions} transitions, "
                         f"serial {su.verdict} {su.stats.states} states {su.stats.transitions} transitions")
    return diffs


def replays(model, cex) -> int | None:
    """Whether counterexample ``cex`` (check's described steps) is a run of ``model`` without any
    reduction: from the initial state, each step must be a successor whose description names the same
    rank, actor, transition, op and choice.  None when it is; else the first step (1-based) that is not."""
    return replay(model, cex)[0]


def replay(model, cex) -> tuple[int | None, Any]:
    """``replays``, and where the run ends: the last state, or the violation its last step gives."""
    from lockstep.model.features import configure

    configure(model, False, liveness=False)
    cur = next(iter(model.init_states()))
    keys = ("rank", "actor", "transition", "op", "choice")
    for k, step in enumerate(cex):
        for a, n in model.successors(cur):
            d = model.describe(cur, a, n)
            if all(d.get(x) == step.get(x) for x in keys):
                cur = n
                break
        else:
            return k + 1, None
    return None, cur


def told_at_end(model, res) -> str | None:
    """Where ``res`` (a violation with a counterexample) says something its own run's end does not: the
    violation of the last step, or the invariant on the last state, of the replayed run must carry
    ``res``'s message (it may name ranks, which the run must have where it says).  None when it does."""
    from lockstep.model.api import Violation

    at, end = replay(model, res.counterexample)
    if at is not None:
        return f"step {at} of the {res.verdict} counterexample is no step of the unreduced world"
    w = end if isinstance(end, Violation) else model.invariant(end)
    if w is not None and w.verdict == res.verdict and w.message != res.message:
        return f"the {res.verdict} message {res.message!r} is not what the run's end says: {w.message!r}"
    return None


def end_states(model, reduction: bool):
    """Every end state (no step, or stuck), as orbit representatives: the partial-order reduction
    keeps every one of them (not only their classes).  None when MAX_STATES cut the search."""
    return explore(model, reduction)[0]


def explore(model, reduction: bool, cap: int = MAX_STATES):
    """(end states, observed views, invariant reports, invariant observations, arrangements told apart,
    reachable violation classes) of the reachable graph, reduced or not; six Nones when ``cap`` states
    cut the search.  End states as orbit
    representatives; the views as ``observed_view`` gives them (None for a world it does not cover); the
    reports as the (verdict, message) pairs the invariants gave in the states reached; the observations
    as ``_Observing`` keeps them (None without an invariant).  Unreduced, in a world with symmetric
    actors: the reports that differ between a state without fabric entries and its symmetric actors
    sorted (the orbit's representative, which the reduced search evaluates in its place), which the
    symmetry check must have refused: the full graph holds every arrangement, so this tests the check
    where the comparison of reports cannot (the planted property may report the same message on the
    arrangements the reduced graph keeps).  The classes are ``crosscheck.reachable_classes``'s (what
    ``check --cross-check`` compares): the other five ride on its one pass over the graph."""
    configure(model, reduction, liveness=False)
    canon = (lambda s: _orbit_key(model, s)) if len(model.symmetric) > 1 else (lambda s: s)
    view = observed_view(model)
    ends, views, said, apart = set(), set(), set(), set()
    ms = getattr(model, "_monitor_set", None)
    sym = () if reduction or len(model.symmetric) < 2 or (ms is not None and ms.moves_with_symmetry) \
        else tuple(model.symmetric)

    def visit(s, v, succ):
        if view is not None:
            views.add(view(s))
        if v is not None:
            said.add((v.verdict, v.message))
        if sym and not s[3]:
            part = sorted((s[0][i] for i in sym), key=model._order_key)
            actors = list(s[0])
            for i, p in zip(sym, part):
                actors[i] = p
            if tuple(actors) != s[0]:
                w = model.invariant(type(s)(tuple(actors), *s[1:]))
                if (v and (v.verdict, v.message)) != (w and (w.verdict, w.message)):
                    apart.add(((v and v.message), (w and w.message)))
        if not succ or succ[0][0] is None:  # no step, or stuck (a stuck state still offers faults)
            ends.add(canon(s))

    classes, _, complete = reachable_classes(model, reduction, cap, visit=visit)
    if not complete:
        return None, None, None, None, None, None
    obs = getattr(model, "protogen_observations", None)
    return frozenset(ends), (frozenset(views) if view is not None else None), frozenset(said), \
        (frozenset(obs) if obs is not None else None), frozenset(apart), classes


def observed_view(model):
    """``state -> what properties may see of it``, as the reductions promise to keep it: of an actor
    the reduction may take alone, what its role observes (``observed``; a field ``observed_when`` as
    the condition's value and, where it holds, the field; nothing but its absence once its process
    is gone); of every other actor its whole local state; the shared variables that no such actor
    writes without observing them; a monitor's state.  The partial-order reduction keeps a run
    stutter-equivalent to each run of the full graph in this view, and the symmetry reduction one
    permutation of it, so the reduced and the full graph reach the same views (sorted over the
    symmetric actors): this compares every property the declarations allow at once, whether or not
    the spec states one.  None for a world whose per-rank monitors move with its symmetric ranks
    (their states would have to move with the views; the other comparisons still run)."""
    pa = model._por_actors
    ms = getattr(model, "_monitor_set", None)
    sym = tuple(model.symmetric) if len(model.symmetric) > 1 else ()
    if sym and ms is not None and ms.moves_with_symmetry:
        return None
    per_actor = []
    for i, a in enumerate(model.actors):
        role = a.role
        if i not in pa:
            per_actor.append(None)
            continue
        fields = role.V._fields
        plain = tuple(fields.index(f) for f in role.observed if f in fields)
        ctl, pend = "ctl" in role.observed, "pending" in role.observed
        when = tuple((fields.index(f) if f in fields else f, cond) for f, cond in role.observed_when.items())
        per_actor.append((plain, ctl, pend, when))
    shared = tuple(model.shared)
    kept = tuple(k for k, f in enumerate(shared)
                 if not any(f not in model.actors[i].role.visible
                            and any(f in w or f in pu or f in ta for _, w, pu, ta in model._fp_ctl[i].values())
                            for i in pa))

    def actor_view(spec, st):
        ctl, v, pend = st
        if spec is None or v is None:
            return st if spec is None else None
        plain, with_ctl, with_pend, when = spec
        out = [v[k] for k in plain]
        if with_ctl:
            out.append(ctl)
        if with_pend:
            out.append(pend)
        for f, cond in when:
            holds = bool(cond(v))
            out.append((holds, (v[f] if isinstance(f, int) else (ctl if f == "ctl" else pend)) if holds else None))
        return tuple(out)

    def view(s):
        actors = [actor_view(spec, st) for spec, st in zip(per_actor, s[0])]
        if sym:
            part = sorted((actors[i] for i in sym), key=repr)
            for i, p in zip(sym, part):
                actors[i] = p
        g = s[1]
        return tuple(actors), tuple(g[k] for k in kept), (s[4] if len(s) > 4 else None)
    return view


def _orbit_key(model, s):
    """One state per orbit under the symmetric actors' permutations, fabric entries included: the
    world's own representative leaves a state with fabric entries as it is (they name actors), so two
    images of one end state would otherwise count as two.  The symmetric actors are arranged by their
    state and the entries that name them (without the name): two of them alike in both are
    interchangeable, so the arrangement is one per orbit, found by one sort (trying every permutation,
    as this did, took minutes per state for an orbit of 10)."""
    if not s[3]:
        return model.canonical(s)
    sym, fab = list(model.symmetric), s[3]

    def part(i):
        return repr(s[0][i]), sorted(repr(e[:1] + e[2:]) for e in fab if e[0] == "op" and e[1] == i)
    where = {i: sym[k] for k, i in enumerate(sorted(sym, key=part))}  # actor i's state moves to where[i]
    actors = list(s[0])
    for i, j in where.items():
        actors[j] = s[0][i]
    moved = sorted((e[:1] + (where.get(e[1], e[1]),) + e[2:] if e[0] == "op" else e for e in fab), key=repr)
    return tuple(actors), s[1], s[2], tuple(moved)


def hypothesis_pick(data) -> Pick:
    """A ``pick`` drawing from hypothesis's ``st.data()``."""
    from hypothesis import strategies as st

    return lambda lo, hi: data.draw(st.integers(lo, hi))


def random_pick(rng) -> Pick:
    return lambda lo, hi: rng.randint(lo, hi)
