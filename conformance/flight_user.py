"""Flight Recorder dumps against a user's own spec: which of its planted-bug variants a recorded hang
is an instance of, and whether its hardened protocol can end that way at all.

``flight_spec`` does this for lockstep's own topologies (tp, pp0, pp1), comparing by their roles and
message parts.  A user spec has neither, so this compares what every spec has: the collective
projection of how the run ended.  Per process group, named by its member ranks (a dump's group and a
spec's ``Group`` are the same group when they hold the same ranks): the op kind of the first collective
some members entered and the others never did, which ranks entered it and which never did; or, for a
mismatch, the op kinds that met.  The graph of every variant of the spec, at the parameters given
(``-p``, the spec's defaults otherwise; they must give the dumps' world size), is searched for an end
with the dumps' projection: a stuck state whose blocked ranks (``model.waiting``) are the dumps', or a
collective mismatch on the same group.  A variant that can end that way explains the hang (not only
its shortest counterexample's end: a planted bug that lets any rank stop early ends in many ways).

Ranks are compared as they are, except the spec's symmetric ranks (``Protocol(symmetric=...)``): the
checker prints one counterexample for every permutation of them, so there only how many of them
entered, and how many never did, is compared (within a group that holds all of them or none).

The hardened protocol is searched the same way: where none of its ends has the dumps' projection, the
recorded run did not follow it.  Point-to-point ops are not compared (a user spec's p2p ends
have no roles or message parts to compare by): a dump stuck only in p2p ops gets no match.
"""
from __future__ import annotations

from ..spec.loading import build_model
from ..spec.registry import SpecInfo, pick_backend, resolve

MAX_STATES = 500_000  # per variant: its reachable ends are searched for the dumps'

BLOCKING = ("broadcast", "all_reduce", "all_gather", "barrier", "monitored_barrier", "reduce", "gather", "scatter",
            "reduce_scatter", "all_to_all")


def _dump_shapes(rep: dict) -> list[tuple]:
    """("missing", members, op kinds, present, missing) or ("mismatch", members, op kinds, "type" |
    "signature") per group whose collectives stopped matching."""
    out = []
    for g, info in rep["groups"].items():
        fm = info.get("first_mismatch")
        if not fm:
            continue
        members = frozenset(info["members"])
        if fm["kind"] == "missing_ranks":
            out.append(("missing", members, frozenset({fm["op"]}), frozenset(fm["present"]), frozenset(fm["missing"])))
        elif fm["kind"] == "type":
            out.append(("mismatch", members, frozenset(str(v).split(":")[-1].split()[0] for v in fm["ranks"].values()),
                        "type"))
        else:  # the same op kind with another dtype, size, root or reduce op
            out.append(("mismatch", members, frozenset({fm["op"]}), "signature"))
    return out


def _blocked_shapes(waiting: list, groups: dict) -> list[tuple]:
    """The projection of a stuck state from who waits on whom there (``model.waiting``): one shape per
    group some rank is blocked in a collective of."""
    by_group: dict = {}
    for w in waiting or []:
        if w.get("op") and w["op"].split()[0] in BLOCKING and w.get("group") in groups:
            by_group.setdefault(w["group"], []).append(w)
    return [("missing", groups[g], frozenset(w["op"].split()[0] for w in ws), frozenset(w["rank"] for w in ws),
             frozenset(r for w in ws for r in w["waits_for"])) for g, ws in by_group.items()]


def _mismatch_shape(detail: dict, groups: dict) -> tuple | None:
    if detail.get("group") not in groups:
        return None
    kinds = frozenset(c.split()[0] for c in detail.get("calls", {}).values())
    return ("mismatch", groups[detail["group"]], kinds, "type" if len(kinds) > 1 else "signature")


class _AllFound(Exception):
    pass


def ends_like(model, groups: dict, shapes: list, sym: frozenset, max_states: int) -> tuple[bool, int, bool]:
    """(whether the spec can end as ``shapes`` say, every group of them in one end, states explored,
    whether the search finished): its ends are its stuck states (whose blocked ranks ``model.waiting``
    gives) and its collective mismatches, on the reduced graph: the partial-order reduction keeps every end state,
    the symmetry reduction one of each orbit (compared up to the symmetric ranks' identities,
    ``_up_to_symmetry``).  The search stops at the first such end; invariants are not evaluated (only
    the ends matter)."""
    from ..model.api import COLLECTIVE_MISMATCH, Violation
    from ..model.crosscheck import reachable_classes

    seen = [0]

    def meet(end: list) -> None:  # one end's shapes: it must show every group the dumps do, as they do
        if end and all(any(_same(d, e, sym) for e in end) for d in shapes):
            raise _AllFound

    def visit(s, v, succ):
        seen[0] += 1
        if not succ or succ[0][0] is None:  # no step, or stuck (a stuck state still offers faults)
            meet(_blocked_shapes(model.waiting(s), groups))
        for _, n in succ:
            if isinstance(n, Violation) and n.verdict == COLLECTIVE_MISMATCH:
                meet([x for x in [_mismatch_shape(n.detail, groups)] if x is not None])

    try:
        _, states, complete = reachable_classes(model, True, max_states, visit=visit, invariants=False)
    except _AllFound:
        return True, seen[0], False
    return False, states, complete


def _up_to_symmetry(shape: tuple, sym: frozenset) -> tuple:
    """``shape`` with the symmetric ranks' identities forgotten (their count kept), where its group
    holds every symmetric rank or none (a permutation of them maps the group to itself)."""
    if shape[0] != "missing" or not sym or not (sym <= shape[1] or not sym & shape[1]):
        return shape
    present, missing = shape[3], shape[4]
    return shape[:3] + ((present - sym, len(present & sym)), (missing - sym, len(missing & sym)))


def _same(dump: tuple, spec: tuple, sym: frozenset) -> bool:
    if dump[:2] != spec[:2]:
        return False
    if dump[0] == "mismatch":  # calls of different kinds met, or calls of one kind that differ otherwise
        return dump[3] == spec[3] and dump[2] <= spec[2]
    return dump[2] <= spec[2] and _up_to_symmetry(dump, sym)[3:] == _up_to_symmetry(spec, sym)[3:]


def _jsonable(shape: tuple, names: dict) -> dict:
    group = names.get(shape[1], ",".join(map(str, sorted(shape[1]))))
    if shape[0] == "missing":
        return {"kind": "missing_ranks", "group": group, "op": sorted(shape[2]), "present": sorted(shape[3]),
                "missing": sorted(shape[4])}
    return {"kind": "mismatch", "group": group, "ops": sorted(shape[2]), "differs_in": shape[3]}


def match(rep: dict, info: SpecInfo, raw_params: dict[str, str], max_states: int = MAX_STATES) -> dict:
    """The dumps' collective projection against every variant of ``info`` (and its hardened protocol)
    at ``raw_params``.  Raises loader.BadInput (exit 2) when the spec's world at those parameters is not
    the dumps'."""
    _, params = resolve(info, None, raw_params)
    model = build_model(info, params, None, pick_backend(info, None, None))
    ranks = sorted({a.rank for a in model.actors})
    world = rep.get("world", len(rep["ranks"]))
    if len(ranks) != world:
        from .loader import BadInput

        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        raise BadInput(f"not checkable: the spec {info.name} at {shown or 'its defaults'} has {len(ranks)} ranks, the "
                       f"dumps come from a world of {world}: give -p NAME=VALUE so that they agree", field="-p")
    groups = {name: frozenset(g.ranks) for name, g in model.groups.items()}
    names = {members: name for name, members in groups.items()}
    by_rank: dict = {}
    symmetric = set(model.symmetric)
    for i, a in enumerate(model.actors):
        by_rank.setdefault(a.rank, []).append(i in symmetric)
    sym = frozenset(r for r, flags in by_rank.items() if all(flags) and len(model.symmetric) > 1)
    shapes = _dump_shapes(rep)
    out = {"spec": info.name, "world": world, "params": params, "projection": [_jsonable(s, names) for s in shapes],
           "matches": [], "symmetric_ranks": sorted(sym)}
    unknown = [s for s in shapes if s[1] not in names]
    if unknown:
        out["error"] = (f"the dumps' group of ranks {sorted(unknown[0][1])} is no group of the spec "
                        f"(its groups: {', '.join(f'{n} {sorted(m)}' for n, m in groups.items())})")
        return out
    if not shapes:
        return out

    def explains(variant, built=None) -> dict:
        if built is None:
            _, vp = resolve(info, variant, raw_params)
            built = build_model(info, vp, variant, pick_backend(info, variant, None))
        found, states, complete = ends_like(built, groups, shapes, sym, max_states)
        return {"ends_this_way": found, "states": states, "complete": complete}

    h = explains(None, model)  # the hardened protocol: the model built above
    out["hardened"] = h
    for variant in info.variants:
        x = explains(variant)
        if x["ends_this_way"]:
            v = info.variants[variant]
            out["matches"].append({"variant": variant, "verdict": "/".join(v.expected), "message": v.description})
        elif not x["complete"]:
            out.setdefault("bound_reached", []).append(variant)
    return out


def render(m: dict) -> list[str]:
    from ..spec.fabric import ranks_text

    at = ", ".join(f"{k}={v}" for k, v in m.get("params", {}).items()) or "its defaults"
    sym = f"; symmetric {ranks_text(m['symmetric_ranks'])} compared by count" if m.get("symmetric_ranks") else ""
    lines = [f"  against spec {m['spec']} at {at} (world {m['world']}): "
             + ("no failure to explain" if not m["projection"] else
                f"{len(m['matches'])} planted bug(s) can end this way (the collective projection{sym})")]
    if m.get("error"):
        lines.append(f"    {m['error']}")
        return lines
    how = "is an instance of" if len(m["matches"]) == 1 else "is consistent with"
    for x in m["matches"]:
        lines.append(f"    this hang {how} {x['variant']}: {x['verdict']} ({x['message']})")
    if m["projection"] and not m["matches"]:
        lines.append("    no variant of the spec ends this way: a failure the spec's planted bugs do not explain")
    for v in m.get("bound_reached", []):
        lines.append(f"    variant {v}: no such end within the {MAX_STATES:,} states searched (a bound, not a proof)")
    h = m.get("hardened")
    if h is not None and h["ends_this_way"]:
        lines.append(f"    the hardened {m['spec']} can end this way too")
    elif h is not None and h["complete"]:
        lines.append(f"    the hardened {m['spec']} never ends this way (none of its {h['states']:,} states): "
                     f"the run did not follow it")
    elif h is not None:
        lines.append(f"    the hardened {m['spec']} did not end this way in the {h['states']:,} states searched "
                     f"(a bound, not a proof)")
    return lines
