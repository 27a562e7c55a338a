"""The generic checker's fast paths against their plain counterparts: the memoised transition effects,
the compact kept graph and its SCC pass, and the user-written pipeline benchmark spec against the
hand-written pipeline model."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from lockstep.model.api import INVARIANT, SpecError
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
