"""Flight Recorder dumps against a user's own spec: whether its hardened protocol can run the recorded
collectives and end as the run did, and which of its planted-bug variants a recorded hang (or a clean
run the hardened protocol does not follow) is a run of.

``flight_spec`` does this for lockstep's own topologies (tp, pp0, pp1), comparing by their roles and
message parts.  A user spec has neither, so this compares what every spec has: the collectives.
Process groups are matched by name and members (a dump's group and a spec's ``Group`` are the same
group when they have the same name and ranks, else when one spec group has the dump group's ranks).

How the run ended is its collective projection, per process group: the op kind of the first
collective some members entered and the others never did, which ranks entered it and which never
did; or, for a mismatch, the op kinds that met.  A spec ends that way in a stuck state whose blocked
ranks (``model.waiting``) are the dumps', or in a collective mismatch on the same group.  Ranks are
compared as they are, except the spec's symmetric ranks (``Protocol(symmetric=...)``): the checker
explores one arrangement of them, so there only how many of them entered, and how many never did, is
compared (within a group that holds all of them or none).

Where every ring buffer holds the run from its start, ``flight_follow`` searches each variant (and
the hardened protocol) for a run that makes the recorded collectives, group by group in order, and
then ends as the run did (a clean run: ends, or anywhere with ``mid_run``).  Where a buffer wrapped,
only the end is compared: every variant's graph, at the parameters given (``-p``, the spec's
defaults otherwise; they must give the dumps' world size), is searched for an end with the dumps'
projection (``ends_like``), not only its shortest counterexample's end: a planted bug that lets any
rank stop early ends in many ways.  Point-to-point ops are not compared (a user spec's p2p ends have
no roles or message parts to compare by): a dump stuck only in p2p ops gets no match.
"""
from __future__ import annotations

from ..spec.loading import build_model
from ..spec.registry import SpecInfo, pick_backend, resolve
from .flight_follow import follow, spec_kind

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
            out.append(("missing", members, frozenset({spec_kind(fm["op"])}), frozenset(fm["present"]), frozenset(fm["missing"])))
        elif fm["kind"] == "type":
            out.append(("mismatch", members, frozenset(spec_kind(str(v).split(":")[-1].split()[0]) for v in fm["ranks"].values()),
                        "type"))
        else:  # the same op kind with another dtype, size, root or reduce op
            out.append(("mismatch", members, frozenset({spec_kind(fm["op"])}), "signature"))
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


def _end_check(model, groups: dict, shapes: list, sym: frozenset):
    """``end_ok(state, succ)`` for flight_follow: whether a stuck state (its blocked ranks) or a
    collective mismatch (``succ`` = [(step, the Violation)]) ends as ``shapes`` say, every group of
    them in that one end."""
    def meets(end: list) -> bool:
        return bool(end) and all(any(_same(d, e, sym) for e in end) for d in shapes)

    def end_ok(s, succ) -> bool:
        if succ and succ[0][0] is not None:
            n = succ[0][1]
            return meets([x for x in [_mismatch_shape(n.detail, groups)] if x is not None])
        return meets(_blocked_shapes(model.waiting(s), groups))
    return end_ok


NAME_YOUR_GROUPS = "name the run's groups as the spec does (new_group(ranks, group_desc=NAME))"


def spec_groups(info: SpecInfo, raw_params: dict[str, str]) -> dict[str, frozenset]:
    """The groups (name -> ranks) of ``info``'s hardened protocol at ``raw_params``."""
    _, params = resolve(info, None, raw_params)
    model = build_model(info, params, None, pick_backend(info, None, None))
    return {name: frozenset(g.ranks) for name, g in model.groups.items()}


def _spec_groups(seqs: dict, groups: dict) -> tuple[dict, str | None]:
    """(dump group -> spec group, an error): by name where the dump's group has a spec group's name
    and members, else by members where one spec group has them."""
    out = {}
    for g, x in seqs.items():
        members = frozenset(x["members"])
        if groups.get(g) == members:
            out[g] = g
            continue
        same = [n for n, m in groups.items() if m == members]
        if len(same) != 1:
            what = (f"no group of the spec has its ranks {sorted(members)} (gloo's dumps name a group's members "
                    f"only by the dumps that hold its collectives: {NAME_YOUR_GROUPS})" if not same else
                    f"the spec's groups {', '.join(same)} all have its ranks: {NAME_YOUR_GROUPS}")
            return out, f"the run's group {g} ran {len(x['ops'])} collective(s); {what}"
        out[g] = same[0]
    return out, None


def match(rep: dict, info: SpecInfo, raw_params: dict[str, str], max_states: int = MAX_STATES,
          sequences: dict | None = None, mid_run: bool = False, gloo: bool = False) -> dict:
    """The dumps against every variant of ``info`` (and its hardened protocol) at ``raw_params``.
    With ``sequences`` (flight.collective_sequences, no ring buffer wrapped): which of them can run
    the recorded collectives and end as the run did (flight_follow); otherwise which can end as the
    dumps' collective projection says.  Raises loader.BadInput (exit 2) when the spec's world at
    those parameters is not the dumps'."""
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
    plan = None
    if sequences is not None:
        wrapped = sorted(g for g, x in sequences.items() if x["wrapped"])
        if wrapped:
            out["followed"] = {"skipped": f"a ring buffer lost the first collectives of {', '.join(wrapped)}: the run "
                                          f"is not followed from its start, only its end compared"}
        else:
            to_spec, err = _spec_groups(sequences, groups)
            if err:
                out["error"] = err
                if set(sequences) - set(to_spec) & set(rep.get("guessed_groups", [])):
                    out["unknown_members"] = True  # not a group the spec lacks: one whose members the dumps hide
                return out
            plan = {g: [] for g in groups}
            for g, x in sequences.items():
                plan[to_spec[g]] = [spec_kind(op) for op in x["ops"]]
            out["followed"] = {"collectives": {g: len(ops) for g, ops in plan.items() if ops}, "mid_run": mid_run}
    if not shapes and plan is None:
        return out

    def built(variant):
        if variant is None:
            return model  # the hardened protocol: the model built above
        _, vp = resolve(info, variant, raw_params)
        return build_model(info, vp, variant, pick_backend(info, variant, None))

    def explains(variant) -> dict:
        m = built(variant)
        if plan is None:
            found, states, complete = ends_like(m, groups, shapes, sym, max_states)
            return {"ends_this_way": found, "states": states, "complete": complete}
        x = follow(m, plan, _end_check(m, groups, shapes, sym) if shapes else None, mid_run, gloo, max_states)
        if shapes:
            x["ends_this_way"] = x["follows"]
        return x

    h = explains(None)
    out["hardened"] = h
    if not shapes and h["follows"]:
        return out
    found = out["matches"] if shapes else out.setdefault("followed_by", [])  # a failure explained, or a clean run
    for variant in info.variants:
        x = explains(variant)
        if x.get("follows", x.get("ends_this_way")):
            v = info.variants[variant]
            found.append({"variant": variant, "verdict": "/".join(v.expected), "message": v.description})
        elif not x["complete"]:
            out.setdefault("bound_reached", []).append(variant)
    return out


def _left_at(x: dict, clean: bool) -> list[str]:
    """Where a search that did not follow the run got furthest (flight_follow's ``left_at``)."""
    at = x.get("left_at")
    if at is None:
        return []
    offered = ", ".join(at["offered"]) or "no collective"
    if not at["end"]:
        return [f"    it runs {x['done']} recorded collective(s), then not collective #{at['index'] + 1} on {at['group']} "
                f"({at['op']}): it offers {offered} there"]
    line = f"    it runs all {x['done']} recorded collective(s), then does not end as the run did"
    if clean:
        line += (f": it still runs {offered}" if at["offered"] else ": a rank still waits or moves") + \
            " (dumps taken before the run ended? --mid-run follows them as a prefix)"
    return [line]


def render(m: dict) -> list[str]:
    from ..spec.fabric import ranks_text

    at = ", ".join(f"{k}={v}" for k, v in m.get("params", {}).items()) or "its defaults"
    sym = f"; symmetric {ranks_text(m['symmetric_ranks'])} compared by count" if m.get("symmetric_ranks") else ""
    head = f"  against spec {m['spec']} at {at} (world {m['world']}): "
    if m.get("error"):
        return [head + "not compared", f"    {m['error']}"]
    fol = m.get("followed") or {}
    h = m.get("hardened")
    if not m["projection"]:
        if h is None:
            return [head + "no failure to explain" + (f" ({fol['skipped']})" if fol.get("skipped") else "")]
        n = sum(fol["collectives"].values())
        how = "as a prefix (--mid-run)" if fol.get("mid_run") else "and its end"
        if h["follows"]:
            return [head + f"the run follows the hardened {m['spec']}: its {n} collective(s) {how}"]
        if not h["complete"]:
            return [head + f"the hardened {m['spec']} did not follow the run in the {h['states']:,} states searched "
                           f"(a bound, not a proof)"]
        lines = [head + f"the run does not follow the hardened {m['spec']} ({n} collective(s) {how}; none of its "
                        f"{h['states']:,} states)"] + _left_at(h, True)
        for x in m.get("followed_by", []):
            lines.append(f"    it follows {x['variant']} instead, a planted bug: {x['verdict']} ({x['message']})")
        return lines
    what = ("run the recorded collectives and end this way" if "collectives" in fol else
            f"can end this way (the collective projection{sym})")
    lines = [head + f"{len(m['matches'])} planted bug(s) {what}"]
    if fol.get("skipped"):
        lines.append(f"    {fol['skipped']}")
    how = "is an instance of" if len(m["matches"]) == 1 else "is consistent with"
    for x in m["matches"]:
        lines.append(f"    this hang {how} {x['variant']}: {x['verdict']} ({x['message']})")
    if not m["matches"]:
        lines.append("    no variant of the spec " + ("runs them and ends this way" if "collectives" in fol else "ends this way")
                     + ": a failure the spec's planted bugs do not explain")
    for v in m.get("bound_reached", []):
        lines.append(f"    variant {v}: no such run within the {MAX_STATES:,} states searched (a bound, not a proof)")
    if h is not None and h["ends_this_way"]:
        lines.append(f"    the hardened {m['spec']} can end this way too")
    elif h is not None and h["complete"]:
        lines.append(f"    the hardened {m['spec']} never {'runs them and ' if 'collectives' in fol else ''}ends this way "
                     f"(none of its {h['states']:,} states): the run did not follow it")
        lines.extend(_left_at(h, False) if "collectives" in fol and h.get("left_at", {}).get("end") is False else [])
    elif h is not None:
        lines.append(f"    the hardened {m['spec']} did not end this way in the {h['states']:,} states searched "
                     f"(a bound, not a proof)")
    return lines
