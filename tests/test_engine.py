"""The generic checker's fast paths against their plain counterparts: the memoised transition effects,
the compact kept graph and its SCC pass, and the user-written pipeline benchmark spec against the
hand-written pipeline model."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from lockstep.model.api import INVARIANT, SpecError, Violation
from lockstep.model.checker import Explorer, check
from lockstep.model.liveness import _scc_labels
from lockstep.spec.loading import build_model, load_spec
from lockstep.spec.machine import DONE, ActorDef, Protocol, Role
from lockstep.spec.specs.pipeline import PipelineModel

USER_PIPELINE = Path(__file__).resolve().parent.parent / "bench" / "user_pipeline_spec.py"


@pytest.mark.parametrize("stages,microbatches,capacity", [(2, 2, 1), (3, 2, 2), (2, 3, 2)])
def test_user_pipeline_matches_the_hand_written_model(stages, microbatches, capacity):
    info = load_spec(str(USER_PIPELINE))
    params = {"stages": stages, "microbatches": microbatches, "capacity": capacity}
    user = check(build_model(info, params, None, "gloo"), liveness=False, reduction=False)
    hand = Explorer(PipelineModel(stages, microbatches, capacity)).run()
    assert user.verdict == hand.verdict == "HOLDS"
    assert (user.stats.states, user.stats.transitions) == (hand.stats.states, hand.stats.transitions)


def _world(check_fn=None, do_fn=None):
    r = Role("r", "A", {"x": 0})
    r.local("step", "A", ("A", DONE), choose=lambda c: (1, 2), do=do_fn or (lambda c: c.set(x=c.v.x + c.choice) if c.v.x < 3
                                                                            else c.goto(DONE)),
            check=check_fn)
    return Protocol("memo", groups={}, actors=[ActorDef(0, "main", r), ActorDef(1, "main", r)])


def test_memoised_effects_keep_violations_and_counts():
    def chk(c):
        if c.v.x == 4:
            c.violate(INVARIANT, "x reached 4")
    res = check(_world(chk), liveness=False, reduction=False)
    assert res.verdict == INVARIANT and "x reached 4" in res.message
    # the shortest run to x == 4 on one actor: 2 + 2
    assert len(res.counterexample) == 2
    w = _world()
    res = check(w, liveness=False, reduction=False)
    assert res.verdict == "HOLDS"
    # every distinct (actor, transition, vars) input was evaluated once
    assert 0 < len(w._memo) <= 2 * 6


def test_an_error_in_a_later_choice_is_raised_where_it_was():
    def do(c):
        if c.choice == 2:
            raise KeyError("boom")
        c.goto(DONE)
    with pytest.raises(SpecError, match=r"r\.step \(do\).*boom"):
        check(_world(do_fn=do), liveness=False, reduction=False)


def test_a_role_changed_after_the_world_was_built_is_explored_as_it_is_now():
    from dataclasses import replace

    w = _world()
    check(w, liveness=False, reduction=False)
    role = w.actors[0].role
    role.transitions[0] = replace(role.transitions[0], check=lambda c: c.violate(INVARIANT, "planted"))
    assert check(w, liveness=False, reduction=False).verdict == INVARIANT


def test_scc_labels_agree_with_networkx():
    import networkx as nx

    rng = random.Random(5)
    for _ in range(30):
        n = rng.randint(1, 40)
        m = rng.randint(0, 3 * n)
        src = [rng.randrange(n) for _ in range(m)]
        dst = [rng.randrange(n) for _ in range(m)]
        labels = _scc_labels(n, src, dst)
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        g.add_edges_from(zip(src, dst))
        want = {frozenset(c) for c in nx.strongly_connected_components(g)}
        got: dict = {}
        for u, lab in enumerate(labels):
            got.setdefault(lab, set()).add(u)
        assert {frozenset(c) for c in got.values()} == want


def test_kept_graph_is_compact_and_complete():
    info = load_spec("tp")
    params = {k: p.default for k, p in info.params.items()}
    params["ranks"] = 2
    model = build_model(info, params, None, "gloo")
    model.set_reduction(False)
    model.set_liveness(True)
    ex = Explorer(model, keep_graph=True)
    assert ex.run().verdict == "HOLDS"
    assert len(ex.edge_src) == len(ex.edge_dst) == len(ex.edge_actor) == ex.stats.transitions
    assert len(ex.enabled_id) == ex.stats.states and len(ex.enabled_sets) < ex.stats.states
    depth = ex.depths()
    for u in range(0, ex.stats.states, 97):
        assert depth[u] == len(ex.path_to(u))
    # every kept edge leads to a successor of its source
    edges = ex.edges
    for k in range(0, len(edges), 101):
        i, j, _ = edges[k]
        assert any(n == ex.states[j] for _, n in model.successors(ex.states[i]))


# -- the memoised successor function against the reference path (every step through _fire) ------------

def _model(name, **params):
    info = load_spec(str(USER_PIPELINE) if name == "user" else name)
    full = {k: p.default for k, p in info.params.items()}
    full.update(params)
    return build_model(info, full, None, "gloo")


def _reference_local_steps(model):
    """_local_steps as the reference path: every transition a _SLOW record, run by _fire."""
    from lockstep.spec import world

    def local_steps(i, st, g, no_faults_left):
        return (), tuple((world._SLOW, tidx, t, None, 0) for tidx, t in model._steps[i].get(st[0], ())
                         if not (t.fault is not None and no_faults_left))
    return local_steps


@pytest.mark.parametrize("name,params,reduction", [
    ("user", {"stages": 2, "microbatches": 2, "capacity": 1}, False),
    ("tp", {"ranks": 2}, False),
    ("tp", {"ranks": 2}, True),
    pytest.param("pp1", {"mesh": 2}, True, marks=pytest.mark.slow),
    ("pp0", {}, False),
])
def test_memoised_successors_equal_the_reference_on_every_state(name, params, reduction):
    model = _model(name, **params)
    model.set_reduction(reduction)
    ex = Explorer(model, keep_graph=False)
    res = ex.run()
    assert res.stats.states > 50
    fast_fired = set(model.fired)
    ref = _model(name, **params)
    ref.set_reduction(reduction)
    list(ref.init_states())
    ref._local_steps = _reference_local_steps(ref)
    ref_ex = Explorer(ref, keep_graph=False)
    ref_res = ref_ex.run()
    assert (ref_res.verdict, ref_res.message, ref_res.stats.states, ref_res.stats.transitions) == \
        (res.verdict, res.message, res.stats.states, res.stats.transitions)
    assert ref_res.counterexample == res.counterexample
    assert ref.fired == fast_fired
    for k in range(0, len(ex.states), 7):
        s = ex.states[k]
        assert list(model.successors(s)) == list(ref.successors(s))


@pytest.mark.slow
def test_memoised_properties_and_canonical_forms_equal_direct_evaluation():
    from lockstep.spec.reduce import Reductions

    model = _model("pp1", mesh=3)
    ex = Explorer(model)
    assert ex.run().verdict == "HOLDS"
    fn = model._props[0][2]
    assert model._prop_memo[fn].shapes  # the invariant was memoised
    for k in range(0, len(ex.states), 11):
        s = ex.states[k]
        for name, _verdict, fn, viewed in model._props:
            assert model._property(name, fn, s) == fn(model, s, None)
        assert model.pending(s) == bool(model._pending_view[0](model, s, None))
        assert model.canonical(s) == Reductions.canonical(model, s)
        assert model.successors(s) == Reductions.successors(model, s)  # the inlined memo hit
        for a, n in model.raw_successors(s):  # the compiled visibility test against the plain one
            if model.por_actor(a) is not None and not isinstance(n, Violation):
                assert model.por_visible(s, a, n) == model._por_visible(s, a, n)


def test_property_memo_tells_apart_states_that_differ_in_what_it_read():
    r = Role("r", "A", {"x": 0, "y": 0}, private=True)
    r.local("inc", "A", ("A", DONE), do=lambda c: c.set(x=c.v.x + 1) if c.v.x < 3 else c.goto(DONE))
    r.local("bump", "A", "A", guard=lambda c: c.v.y < 2, do=lambda c: c.set(y=c.v.y + 1))
    calls = []

    def inv(world):
        calls.append(1)
        a = world.actor(0)
        if a.vars is None:
            return None
        # reads y only when x is 2: two shapes of reads
        return f"x=2 and y={a.vars.y}" if a.vars.x == 2 and a.vars.y == 2 else None
    w = Protocol("memo-props", groups={}, actors=[ActorDef(0, "main", r)], invariants=[("XY", INVARIANT, inv)])
    res = check(w, liveness=False, reduction=False)
    assert res.verdict == INVARIANT and res.message == "XY: x=2 and y=2"
    assert len(res.counterexample) == 4  # two bumps and two increments, in some order
    # memoised: fewer evaluations than states (x, y) reached, plus the re-evaluated violation
    assert len(calls) < res.stats.states + 1


def test_property_memo_index_finds_every_shape_as_the_common_reads_shrink():
    """The memo indexes its shapes by the values at the fields every shape reads; adding a shape that
    reads fewer fields re-indexes the others, and every stored entry is still found."""
    from lockstep.spec.state import ActorState, WorldState
    from lockstep.spec.world import _MISS, _PropertyMemo
    from lockstep.spec.view import ALIVE

    V = Role("v", "A", {"x": 0, "y": 0}).V

    def st(*xs):  # actor k alive with x=xs[k] (y=k), or gone when xs[k] is None
        return WorldState(tuple(ActorState("A", None if x is None else V(x, k), None) for k, x in enumerate(xs)), (), 0, ())

    def reads(s):  # what a property "x of every alive actor, y of actor 0 when x0 == 1" reads
        rec = {(k, ALIVE) for k in range(len(s[0]))}
        for k, a in enumerate(s[0]):
            if a[1] is not None:
                rec.add((k, "x"))
                if k == 0 and a[1].x == 1:
                    rec.add((0, "y"))
        return rec
    memo = _PropertyMemo()
    states = [st(1, 2, 3), st(2, 2, 3), st(None, 2, 3), st(1, None, None), st(5, 6, None), st(None, None, None)]
    for n, s in enumerate(states):
        assert memo.lookup(s) is _MISS
        memo.store(reads(s), s, f"r{n}")
        for m, t in enumerate(states[:n + 1]):
            assert memo.lookup(t) == f"r{m}"
    assert len(memo.shapes) == 6  # every state read a different set of fields
    assert memo.lookup(st(1, 2, 4)) is _MISS and memo.lookup(st(None, 2, 4)) is _MISS
    other_y = WorldState((ActorState("A", V(2, 9), None),) + st(2, 2, 3)[0][1:], (), 0, ())
    assert memo.lookup(other_y) == "r1"  # y of actor 0 is not read when x0 != 1


def test_liveness_lasso_on_the_numpy_graph_matches_networkx_components():
    import networkx as nx

    from lockstep.model import liveness

    model = _model("pp0")
    info = load_spec("pp0")
    full = {k: p.default for k, p in info.params.items()}
    full.update(info.variants["retry-forever"].params)
    model = build_model(info, full, "retry-forever", info.variants["retry-forever"].backend or "gloo")
    res = check(model, liveness=True, reduction=True)
    assert res.verdict == "LIVENESS" and res.cycle_start is not None
    # the same lasso with networkx computing the components
    orig = liveness._scc_labels

    def nx_labels(n, src, dst):
        g = nx.DiGraph()
        g.add_nodes_from(range(n))
        g.add_edges_from(zip(src.tolist(), dst.tolist()))
        comps = sorted((sorted(c) for c in nx.strongly_connected_components(g)), key=lambda c: c[0])
        out = [0] * n
        for lab, comp in enumerate(comps):
            for u in comp:
                out[u] = lab
        return out
    liveness._scc_labels = nx_labels
    try:
        model2 = build_model(info, full, "retry-forever", info.variants["retry-forever"].backend or "gloo")
        res2 = check(model2, liveness=True, reduction=True)
    finally:
        liveness._scc_labels = orig
    assert (res2.verdict, res2.message, res2.cycle_start, len(res2.counterexample)) == \
        (res.verdict, res.message, res.cycle_start, len(res.counterexample))


# -- integer-keyed searches (model/features.py's ``keyed``) against the state-keyed search ---------------

KEYED_CASES = [
    ("user", {"stages": 2, "microbatches": 2, "capacity": 1}, None, False),
    ("user", {"stages": 3, "microbatches": 4, "capacity": 1}, "source-skips", False),
    ("pp0", {}, None, False),
    ("pp0", {}, "pp0-local-recompute", False),
    ("kv", {}, None, False),
    ("kv", {}, "reset-drift", False),
    pytest.param("pp1", {"mesh": 2}, None, True, marks=pytest.mark.slow),
]


def _variant_model(name, params, variant):
    info = load_spec(str(USER_PIPELINE) if name == "user" else name)
    full = {k: p.default for k, p in info.params.items()}
    if variant is not None:
        full.update(info.variants[variant].params)
    full.update(params)
    return build_model(info, full, variant, "gloo")


@pytest.mark.parametrize("name,params,variant,liveness", KEYED_CASES)
def test_keyed_search_equals_the_state_keyed_search(name, params, variant, liveness):
    """The same unreduced graph explored with integer keys and with the states themselves as keys:
    same verdict, counts, counterexample, states in the same order, same kept graph."""
    runs = []
    for keyed in (True, False):
        model = _variant_model(name, params, variant)
        model.set_reduction(False)
        model.set_liveness(liveness)
        if not keyed:
            model.keyed = lambda: False
        assert model.keyed() is keyed
        ex = Explorer(model, keep_graph=liveness)
        runs.append((ex, ex.run()))
    (kex, kres), (sex, sres) = runs
    assert kres.stats.states > 50
    assert (kres.verdict, kres.message, kres.stats.states, kres.stats.transitions, kres.stats.end_states) == \
        (sres.verdict, sres.message, sres.stats.states, sres.stats.transitions, sres.stats.end_states)
    assert kres.counterexample == sres.counterexample
    assert type(kex.states).__name__ == "KeyedStates" and isinstance(sex.states, list)
    assert list(kex.states) == sex.states
    assert (list(kex.edge_src), list(kex.edge_dst), list(kex.edge_actor)) == \
        (list(sex.edge_src), list(sex.edge_dst), list(sex.edge_actor))
    assert kex.model.fired == sex.model.fired  # coverage


@pytest.mark.parametrize("name,params,variant,liveness", KEYED_CASES[:5])
def test_keyed_successors_are_the_raw_successors_as_keys(name, params, variant, liveness):
    """On every explored state: keys and states convert both ways, and keyed_successors gives the raw
    successors in the same order, some as their keys."""
    model = _variant_model(name, params, variant)
    model.set_reduction(False)
    ex = Explorer(model)
    ex.run()
    as_keys = 0
    for k in ex.states.keys:
        s = model.state_of(k)
        assert model.state_key(s) == k and model.state_of(model.state_key(s)) == s
        raw = list(model.raw_successors(s))
        keyed = list(model.keyed_successors(s, k))
        assert [a for a, _ in keyed] == [a for a, _ in raw]
        for (_, n), (_, r) in zip(keyed, raw):
            if type(n) is int:
                as_keys += 1
                assert model.state_of(n) == r and model.state_key(r) == n
            else:
                assert n == r
    assert as_keys > 0


def test_reduced_and_monitored_searches_are_not_keyed():
    """Ample sets, orbit representatives and monitors read whole states: those searches keep states."""
    user = _model("user", stages=2, microbatches=2, capacity=1)
    user.set_reduction(True)
    assert not user.keyed()
    user.set_reduction(False)
    assert user.keyed()
    ex = Explorer(user)
    assert ex.run().verdict == "HOLDS" and type(ex.states).__name__ == "KeyedStates"
    pp0 = _model("pp0")
    pp0.set_reduction(True)
    assert not pp0.keyed()
    pp0.set_reduction(False)
    assert pp0.keyed()
    tp = _model("tp", ranks=2)  # declares a monitor
    tp.set_reduction(False)
    assert not tp.keyed()
    ex = Explorer(tp)
    assert ex.run().verdict == "HOLDS" and isinstance(ex.states, list)


def test_keyed_search_equals_the_state_keyed_search_on_random_protocols():
    """Random protocols (tests/protogen.py: ops, faults, timeouts, FIFO queues, liveness), unreduced,
    keyed and not: same verdicts, counts and counterexamples."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import protogen

    rng = random.Random(7)
    compared = 0
    for _ in range(60):
        d = protogen.describe(protogen.random_pick(rng))
        out = []
        for keyed in (True, False):
            model = protogen.build(d)
            if not keyed:
                model.keyed = lambda: False
            try:
                res = check(model, liveness=True, reduction=False)
            except SpecError as e:
                out.append(("spec error", str(e)))
                continue
            out.append((res.verdict, res.message, res.stats.states, res.stats.transitions, res.counterexample))
        assert out[0] == out[1], d
        compared += out[0][0] != "spec error"
    assert compared > 30


def _gone_wait_disagreements(model, states) -> tuple[int, list]:
    """On each state with a gone rank: every posted op's ``_waits_on_gone`` against its definition,
    the op's missing partners (``_partners_of``) meeting the gone ranks."""
    checked, bad = 0, []
    for s in states:
        actors, fab = s[0], s[3]
        gone = model._gone_ranks(actors)
        if not gone:
            continue
        for ep in model._endpoints(actors, fab):
            by_definition = not gone.isdisjoint(model._partners_of(actors, fab, ep[1], ep[2]))
            checked += 1
            if model._waits_on_gone(actors, fab, gone, ep) != by_definition:
                bad.append((s, ep))
    return checked, bad


def test_waits_on_gone_agrees_with_the_partners_on_every_state():
    """raw_successors decides which posted ops fail on a gone partner from the op's group alone
    (``_waits_on_gone``: a gone rank posts nothing).  On every state of unreduced searches of shipped
    variants with a crash, and of random protocols (non-blocking posts, eager sends, faults), it agrees
    with the definition."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import protogen

    from lockstep.model.result import Bounds

    models = [_variant_model("pp1", {"mesh": 2}, "om07-leader-throws"), _variant_model("tp", {"ranks": 3}, "fm04-throw-after-header")]
    rng = random.Random(11)
    for k in range(60):
        d = protogen.describe(protogen.random_pick(rng))
        if k % 2:  # eager sends (no generated profile has them: a loop of them is unbounded): an op that waits for nobody
            d["backend"] = "gloo:eager_below=64"
        models.append(protogen.build(d))
    checked = 0
    for model in models:
        model.set_reduction(False)
        model.keyed = lambda: False
        ex = Explorer(model, Bounds(max_states=5000))
        try:
            ex.run()
        except SpecError:
            continue
        n, bad = _gone_wait_disagreements(model, ex.states)
        assert not bad, bad[:3]
        checked += n
    assert checked > 1000


# -- shortcuts of the reduced search: twins' steps left out, the ample set found first ------------
def _search_with(model, twins: bool, first: bool, liveness: bool):
    model._twin_steps, model._ample_shortcut = twins, first
    model.fired.clear()
    res = check(model, liveness=liveness, reduction=True)
    return res, set(model.fired)


SHORTCUT_CASES = [
    pytest.param("pp1", {"mesh": 3}, None, marks=pytest.mark.slow),
    ("pp1", {"mesh": 3}, "om09-no-epoch-fence"),
    pytest.param("pp1", {"mesh": 3}, "retry-forever", marks=pytest.mark.slow),
    ("pp0", {}, "pp0-local-recompute"),
    ("tp", {"ranks": 3}, None),
    ("tp", {"ranks": 3}, "fm04-throw-after-header"),
    ("tp", {"ranks": 4}, "shutdown-race"),
    ("user", {"stages": 3, "microbatches": 4, "capacity": 1}, "source-skips"),
]


@pytest.mark.parametrize("name,params,variant", SHORTCUT_CASES)
def test_reduced_search_shortcuts_change_no_reached_state(name, params, variant):
    """The ample set found before the other actors' successors are built is the one the rule takes
    from the full list (everything equal: counts, counterexample, coverage); leaving out the steps of
    a symmetric actor equal to an earlier one reaches the same states in the same order (same
    verdict, states, counterexample), over fewer edges."""
    runs = {}
    for twins, first in ((False, False), (False, True), (True, True)):
        runs[twins, first] = _search_with(_variant_model(name, params, variant), twins, first, liveness=True)
    (ref, ref_fired), (fst, fst_fired), (both, both_fired) = runs[False, False], runs[False, True], runs[True, True]
    assert ref.stats.states > 50
    assert (fst.verdict, fst.message, fst.stats.states, fst.stats.transitions, fst.stats.end_states, fst.counterexample) == \
        (ref.verdict, ref.message, ref.stats.states, ref.stats.transitions, ref.stats.end_states, ref.counterexample)
    assert fst_fired == ref_fired
    assert (both.verdict, both.message, both.stats.states, both.stats.end_states, both.counterexample) == \
        (ref.verdict, ref.message, ref.stats.states, ref.stats.end_states, ref.counterexample)
    assert both.stats.transitions <= ref.stats.transitions
    model = _variant_model(name, params, variant)
    if len(model.symmetric) > 1 and ref.reduced and ref.verdict == "HOLDS":  # (a lasso comes from the full graph)
        assert both.stats.transitions < ref.stats.transitions  # the twins' steps were left out
    roles = {a.role.name: {k for k in range(len(a.role.transitions))} for a in model.actors}
    by_role = lambda fired: {(model.actors[i].role.name, t) for i, t in fired}  # noqa: E731
    assert by_role(both_fired) == by_role(ref_fired) and roles  # coverage per role is unchanged


def test_reduced_search_shortcuts_on_random_protocols():
    """Random protocols (tests/protogen.py; a third of the three-rank ones declare two symmetric
    workers), reduced with liveness: the shortcuts on and off give the same verdicts, state counts and
    counterexamples; the ample shortcut alone changes nothing at all.  One exception (docs/engine.md):
    where symmetric workers post ops without blocking, a later twin's post leads to a state with
    fabric entries, which the world keeps as it is instead of merging it into its orbit's
    representative; leaving the twin's steps out then skips that symmetric image: the same verdict
    and message, fewer states."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import protogen

    rng = random.Random(11)
    compared = fewer = 0
    for _ in range(300):
        d = protogen.describe(protogen.random_pick(rng))
        out = []
        for twins, first in ((False, False), (False, True), (True, True)):
            model = protogen.build(d)
            try:
                res, fired = _search_with(model, twins, first, liveness=True)
            except SpecError as e:
                out.append(("spec error", str(e)))
                continue
            out.append((res.verdict, res.message, res.stats.states, res.counterexample, res.stats.transitions, fired))
        assert out[1] == out[0], d
        sym_posts = d["sym"] and any(t.get("async") for t in d["roles"].get("w", {"trans": []})["trans"])
        if sym_posts and out[0][0] != "spec error":
            assert out[2][:2] == out[0][:2] and out[2][2] <= out[0][2], d
        else:
            assert out[2][:4] == out[0][:4], d
        if out[0][0] != "spec error":
            compared += 1
            assert out[2][4] <= out[0][4], d
            fewer += out[2][4] < out[0][4]
    assert compared > 150 and fewer > 10
