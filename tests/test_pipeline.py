"""The ``pipeline`` benchmark spec: exact state-graph counts, verdicts of its planted bugs, the
vectorized core (model/fast.py) against the Python explorer, and partial-order reduction
(model/por.py) against the full graph."""
from __future__ import annotations

import dataclasses
import random
from collections import deque

import pytest

from lockstep.model.api import DEADLOCK, HOLDS, INVARIANT, STRANDED, Violation
from lockstep.model.checker import Bounds, Explorer, check
from lockstep.model.fast import check_packed
from lockstep.model.por import Reduced, reduce
from lockstep.spec.registry import UsageError, resolve
from lockstep.spec.specs.pipeline import SPEC, PipelineModel


def build(variant=None, **raw):
    info, params = resolve("pipeline", variant, {k: str(v) for k, v in raw.items()})
    return info.build(params, variant, "gloo")


def brute_force(stages, microbatches, capacity):
    """An independent enumeration of the guarded-command model (spec/specs/pipeline.py): every role a program
    counter, queues as lists, depth-first, no shared code with the spec.  Returns (states,
    transitions, dead ends that are not the all-finished state)."""
    S, M, C = stages, microbatches, capacity

    def key(g):
        return (g["src"], g["snk"], tuple(map(tuple, g["st"])), tuple(map(tuple, g["q"])))

    init = {"src": 0, "snk": 0, "st": [["ready", 0, None] for _ in range(S)], "q": [[] for _ in range(S + 1)]}
    seen = {key(init): init}
    todo = [init]
    transitions = bad_ends = 0
    while todo:
        g = todo.pop()
        moves = []
        if g["src"] < M and len(g["q"][0]) < C:
            moves.append(lambda h: (h["q"][0].append(h["src"]), h.__setitem__("src", h["src"] + 1)))
        for i in range(S):
            step, n, held = g["st"][i]
            if step == "ready" and n < M:
                moves.append(lambda h, i=i: h["st"][i].__setitem__(0, "receive"))
            elif step == "receive" and g["q"][i]:
                moves.append(lambda h, i=i: h["st"][i].__setitem__(slice(0, 3, 2), ["compute", h["q"][i].pop(0)]))
            elif step == "compute":
                moves.append(lambda h, i=i: h["st"][i].__setitem__(0, "send"))
            elif step == "send" and len(g["q"][i + 1]) < C:
                moves.append(lambda h, i=i: (h["q"][i + 1].append(h["st"][i][2]),
                                             h["st"][i].__setitem__(slice(0, 3, 2), ["count", None])))
            elif step == "count":
                moves.append(lambda h, i=i: h["st"][i].__setitem__(slice(0, 2), ["ready", h["st"][i][1] + 1]))
        if g["q"][S]:
            def take(h):
                assert h["q"][S].pop(0) == h["snk"], "out of order"
                h["snk"] += 1
            moves.append(take)
        transitions += len(moves)
        if not moves and not (g["src"] == M and g["snk"] == M and all(s[:2] == ["ready", M] for s in g["st"])):
            bad_ends += 1
        for mv in moves:
            h = {"src": g["src"], "snk": g["snk"], "st": [list(s) for s in g["st"]], "q": [list(q) for q in g["q"]]}
            mv(h)
            k = key(h)
            if k not in seen:
                seen[k] = h
                todo.append(h)
    return len(seen), transitions, bad_ends


def stats_of(res):
    d = dataclasses.asdict(res.stats)
    d.pop("seconds")
    d.pop("peak_rss_mb")
    return d


# -- the reference numbers (SPIN, Rumur, TLC) ----------------------------------------------------------

def test_default_counts_exact_and_no_deadlock_python_path():
    res = Explorer(build()).run()  # the pure-Python explorer, even once check() prefers the packed core
    assert res.verdict == HOLDS
    assert (res.stats.states, res.stats.transitions) == (646_157, 3_441_072)
    assert res.stats.end_states == 1  # only the all-finished state, which is a valid end


def test_default_counts_exact_packed_path():
    res = check_packed(build())
    assert res is not None and res.verdict == HOLDS
    assert (res.stats.states, res.stats.transitions, res.stats.end_states) == (646_157, 3_441_072, 1)


@pytest.mark.parametrize("stages,microbatches,capacity", [(1, 1, 1), (2, 2, 1), (2, 3, 2), (3, 2, 2), (3, 3, 1)])
def test_small_counts_match_brute_force(stages, microbatches, capacity):
    states, transitions, bad_ends = brute_force(stages, microbatches, capacity)
    res = check(build(stages=stages, microbatches=microbatches, capacity=capacity), liveness=False, reduction=False)
    assert (res.stats.states, res.stats.transitions) == (states, transitions)
    assert bad_ends == 0 and res.verdict == HOLDS


# -- planted bugs ------------------------------------------------------------------------------------

def test_variants_yield_documented_verdicts():
    assert set(SPEC.variants) == {"lifo-queue", "stage-skips-send", "capacity-zero"}
    for name, var in SPEC.variants.items():
        res = check(build(name), liveness=False, reduction=False)
        assert res.verdict in var.expected, (name, res.verdict, res.message)


def test_lifo_counterexample_ends_in_out_of_order_take():
    res = check(build("lifo-queue", stages=2, microbatches=2, capacity=2), liveness=False, reduction=False)
    assert res.verdict == INVARIANT
    last = res.counterexample[-1]
    assert last["rank"] == "sink" and last["transition"] == "take"
    assert res.detail["received"] != res.detail["expected"]
    for i, step in enumerate(res.counterexample, 1):
        assert step["step"] == i
        assert set(step) >= {"step", "rank", "role", "transition", "op", "group", "ids", "changed"}
        assert step["group"] is None and step["ids"] == {}


def test_stranded_names_the_finished_partner():
    res = check(build("stage-skips-send", stages=3, microbatches=2, capacity=1), liveness=False, reduction=False)
    assert res.verdict == STRANDED
    w = {x["rank"]: x for x in res.waiting}
    assert w[1]["partner"] == 0 and w[1]["partner_finished"]
    assert "stage 0 has finished" in res.message


def test_capacity_zero_is_a_circular_wait():
    res = check(build("capacity-zero", stages=2, microbatches=1), liveness=False, reduction=False)
    assert res.verdict == DEADLOCK
    assert {x["rank"] for x in res.waiting} == {"source", 0, 1, "sink"}


def test_hardened_small_configs_hold():
    for s, m, c in [(1, 3, 1), (4, 2, 3), (2, 0, 1)]:
        assert check(build(stages=s, microbatches=m, capacity=c), liveness=False, reduction=False).verdict == HOLDS


def test_bad_parameters_are_usage_errors():
    with pytest.raises(UsageError):
        build(stages=0)
    with pytest.raises(UsageError):
        resolve("pipeline", None, {"capacity": "two"})


def test_describe_reports_only_what_changed():
    m = build(stages=1, microbatches=1, capacity=1)
    s = m.init_states()[0]
    (a, n), = [x for x in m.successors(s) if x[0] == ("source", "put")]
    d = m.describe(s, a, n)
    assert d["rank"] == "source" and d["op"] == "put microbatch 0 into q0"
    assert d["changed"] == {"source.put": "0 -> 1", "q0": "[] -> [0]"}


# -- the vectorized core is the Python explorer, faster ----------------------------------------------

@pytest.mark.parametrize("variant,raw,bounds", [
    (None, dict(stages=3, microbatches=3, capacity=2), None),
    (None, dict(stages=3, microbatches=3, capacity=2), Bounds(max_depth=9)),
    ("lifo-queue", {}, None),
    ("lifo-queue", dict(stages=3, microbatches=3, capacity=3), None),
    ("stage-skips-send", dict(stages=4, microbatches=3, capacity=1), None),
    ("capacity-zero", {}, None),
    (None, dict(stages=9, microbatches=1, capacity=1), None),  # two words per state
])
def test_packed_core_equals_python_explorer(variant, raw, bounds):
    m = build(variant, **raw)
    a, b = check(m, bounds, liveness=False, reduction=False), check_packed(m, bounds)
    assert b is not None
    assert (a.verdict, a.message, a.bound) == (b.verdict, b.message, b.bound)
    assert stats_of(a) == stats_of(b)
    assert a.counterexample == b.counterexample and a.waiting == b.waiting and a.detail == b.detail


def test_packed_expand_matches_successors_on_random_states():
    rng = random.Random(7)
    for variant in (None, "lifo-queue", "stage-skips-send"):
        m = build(variant, stages=3, microbatches=3, capacity=2)
        pk = m.packed()
        s = m.init_states()[0]
        import numpy as np

        for _ in range(400):
            succ = list(m.successors(s))
            assert pk.decode(pk.encode(s)) == s
            en, nxt, bad = pk.expand(np.array([pk.encode(s)], dtype=np.uint64))
            slots = np.flatnonzero(en[0])
            assert len(slots) == len(succ)
            for k, (a, n) in zip(slots, succ):
                assert bool(bad[0, k]) == isinstance(n, Violation)
                if not isinstance(n, Violation):
                    assert pk.decode(tuple(int(w) for w in nxt[0, k])) == n
            states = [n for _, n in succ if not isinstance(n, Violation)]
            s = rng.choice(states) if states else m.init_states()[0]


# -- partial-order reduction ------------------------------------------------------------------------

def test_reduction_keeps_every_verdict_and_shrinks_the_graph():
    for variant in (None, *SPEC.variants):
        m = build(variant)
        full = check_packed(m)
        red = check(m, liveness=False)  # reduction is the checker's default
        assert red.verdict == full.verdict, variant
        assert red.stats.states < full.stats.states
    red = check(build(), liveness=False, reduction=True)
    assert red.stats.end_states == 1 and red.stats.states < 1000
    assert check(reduce(build()), liveness=False, reduction=False).stats.states == red.stats.states  # the wrapper


def test_reduction_preserves_end_states_on_small_graphs():
    """Every reachable end state of the full graph (deadlocks included) is reachable reduced."""
    def ends(model):
        seen, todo, out = set(model.init_states()), deque(model.init_states()), set()
        while todo:
            s = todo.popleft()
            succ = [n for _, n in model.successors(s) if not isinstance(n, Violation)]
            if not list(model.successors(s)):
                out.add(s)
            for n in succ:
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        return out, len(seen)

    for variant, raw in [(None, dict(stages=3, microbatches=2, capacity=1)),
                         ("stage-skips-send", dict(stages=3, microbatches=2, capacity=2)),
                         ("capacity-zero", dict(stages=2, microbatches=2))]:
        m = build(variant, **raw)
        (full_ends, n_full), (red_ends, n_red) = ends(m), ends(Reduced(m))
        assert full_ends == red_ends and n_red < n_full


def test_reduce_leaves_models_without_hooks_alone():
    class Bare:
        name = "bare"

    bare = Bare()
    assert reduce(bare) is bare
    assert isinstance(reduce(PipelineModel(2, 2, 1)), Reduced)
