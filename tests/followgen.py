"""The differential of conformance/flight_follow.py: random runs of random protocols (tests/protogen.py),
walked on the full graph, must be followed on the reduced graph, and every plan (a run's own, or one
changed) gets the same answer reduced and unreduced.

A run's record is what Flight Recorder dumps hold: per group, the kinds of the collectives whose calls
the fabric matched, in order; and how the run ended: stuck (its blocked ranks, as flight_user compares
them), a collective mismatch, finished (no step left), or cut short (followed as a prefix, ``mid_run``).
"""
from __future__ import annotations

import random

from lockstep.conformance import flight_follow, flight_user
from lockstep.model.api import COLLECTIVE_MISMATCH, Violation
from lockstep.model.features import configure

import protogen

WALK = 60  # steps at most: longer runs are cut and followed as a prefix


def walk(model, rng: random.Random):
    """One random run of the full graph: (plan, end shapes or None, mid_run)."""
    configure(model, False, liveness=False)
    groups = {name: frozenset(g.ranks) for name, g in model.groups.items()}
    plan: dict = {g: [] for g in groups}
    s = rng.choice(list(model.init_states()))
    for _ in range(WALK):
        succ = list(model.successors(s))
        if not succ:
            return plan, None, False
        if succ[0][0] is None:  # stuck: the ranks blocked in collectives are its shape
            shapes = flight_user._blocked_shapes(model.waiting(s), groups)
            return plan, shapes, not shapes
        steps = [(a, n) for a, n in succ if not isinstance(n, Violation)]
        clash = [(a, n) for a, n in succ if isinstance(n, Violation) and n.verdict == COLLECTIVE_MISMATCH]
        if clash and (not steps or rng.random() < 0.3):
            a, n = rng.choice(clash)
            shape = flight_user._mismatch_shape(n.detail, groups)
            if shape is not None:
                return plan, [shape], False
        if not steps:
            return plan, None, True
        matched = [(a, n) for a, n in steps if model.collective_step(s, a) is not None]
        a, n = rng.choice(matched if matched and rng.random() < 0.7 else steps)  # towards runs with collectives
        step = model.collective_step(s, a)
        if step is not None and step[1] not in flight_follow.UNRECORDED:
            plan[step[0]].append(step[1])
        s = n
    return plan, None, True


def changed(plan: dict, rng: random.Random) -> dict | None:
    """``plan`` with one recorded collective changed, dropped or added; None where it has none to change."""
    full = [g for g, ops in plan.items() if ops]
    if not full:
        return None
    g = rng.choice(full)
    ops = list(plan[g])
    k = rng.randrange(len(ops))
    how = rng.randrange(3)
    if how == 0:
        ops[k] = rng.choice([x for x in ("all_reduce", "broadcast", "barrier", "all_gather") if x != ops[k]])
    elif how == 1:
        del ops[k]
    else:
        ops.insert(k, ops[k])
    return {**plan, g: ops}


def disagreements(d: dict, rng: random.Random, runs: int = 3, cap: int = 20_000,
                  tally: dict | None = None) -> tuple[list[str], int]:
    """(what went wrong, plans compared) for description ``d``: each walked run followed on the reduced
    graph, and each plan answered alike reduced and unreduced (where both searches finished).
    ``tally``, where given, counts the plans compared by (which, followed, how the run ended)."""
    out, compared = [], 0
    model = protogen.build(d)
    sym = frozenset(model.actors[i].rank for i in model.symmetric) if len(model.symmetric) > 1 else frozenset()
    groups = {name: frozenset(g.ranks) for name, g in model.groups.items()}
    for _ in range(runs):
        plan, shapes, mid = walk(protogen.build(d), rng)
        for which, p in (("run", plan), ("changed", changed(plan, rng))):
            if p is None:
                continue
            answers = []
            for red in (True, False):
                m = protogen.build(d)
                end_ok = flight_user._end_check(m, groups, shapes, sym) if shapes else None
                answers.append(flight_follow.follow(m, p, end_ok, mid, max_states=cap, reduction=red))
            r, u = answers
            if which == "run" and r["complete"] and not r["follows"]:
                out.append(f"a run of the full graph not followed reduced: {p} end {shapes} mid_run={mid} {r}")
            if r["complete"] and u["complete"]:
                compared += 1
                if tally is not None:
                    key = (which, u["follows"], "stuck" if shapes and shapes[0][0] == "missing" else
                           "mismatch" if shapes else "prefix" if mid else "ended", sum(map(len, p.values())) > 0)
                    tally[key] = tally.get(key, 0) + 1
                if r["follows"] != u["follows"]:
                    out.append(f"{which} plan {p} end {shapes} mid_run={mid}: reduced {r['follows']}, unreduced {u['follows']}")
    return out, compared



def observations(model, reduction: bool, cap: int = 20_000, longest: int = 6):
    """Everything a dump could show of the runs of ``model`` that make at most ``longest`` collectives:
    per run prefix its plan (per group the kinds, in order), and per run end that plan with how it ended
    (ended, or the end's shapes up to the symmetric ranks).  None when ``cap`` pairs cut the search.  The
    reduced graph must show exactly what the full one shows (flight_follow's soundness argument)."""
    configure(model, reduction, liveness=False)
    groups = {name: frozenset(g.ranks) for name, g in model.groups.items()}
    names = sorted(groups)
    sym = frozenset(model.actors[i].rank for i in model.symmetric) if len(model.symmetric) > 1 else frozenset()

    def shown(shapes):
        return frozenset(flight_user._up_to_symmetry(s, sym) for s in shapes)

    seen, out = set(), set()
    stack = [(s, tuple(() for _ in names)) for s in model.init_states()]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        if len(seen) >= cap:
            return None
        seen.add(node)
        s, plan = node
        out.add(("prefix", plan))
        succ = list(model.successors(s))
        if flight_follow.ended(model, s, succ):
            out.add(("ended", plan))
        elif succ[0][0] is None:
            out.add(("stuck", plan, shown(flight_user._blocked_shapes(model.waiting(s), groups))))
        for a, n in succ:
            if a is None:
                continue
            step = model.collective_step(s, a)
            if isinstance(n, Violation):
                if step is not None and n.verdict == COLLECTIVE_MISMATCH:
                    shape = flight_user._mismatch_shape(n.detail, groups)
                    out.add(("mismatch", plan, shown([shape] if shape else [])))
                continue
            if step is not None and step[1] not in flight_follow.UNRECORDED:
                if sum(map(len, plan)) >= longest:
                    continue
                i = names.index(step[0])
                stack.append((n, plan[:i] + (plan[i] + (step[1],),) + plan[i + 1:]))
            else:
                stack.append((n, plan))
    return frozenset(out)
