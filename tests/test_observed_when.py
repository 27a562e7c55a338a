"""``observed_when``: a role field that properties read only where a condition on the actor's own
variables holds (the KV cache only between envelopes).  The partial-order reduction treats a step as
visible when it changes the condition, or the field where the condition holds; the world refuses a
property that reads the field elsewhere.  Planted both ways: a property that breaks the declaration
is refused, and a reduction that ignored the field would miss a reachable violation."""
from __future__ import annotations

import pytest

from lockstep.model.api import FRANKEN, HOLDS, INVARIANT, SpecError
from lockstep.model.checker import Bounds, check
from lockstep.model.crosscheck import reachable_classes
from lockstep.spec.fabric import Group, barrier
from lockstep.spec.machine import ActorDef, Protocol, Role
from lockstep.spec.registry import resolve


def _phases(n: int = 2, invariants=(), when=None, observed=("busy", "done"), drift: bool = False):
    """``n`` private workers, each: START -take-> WORK (busy) -a-> -b-> -c-> IDLE (not busy, the
    phase done, val advanced by 3 in three steps), then a barrier.  ``drift``: worker 1 bumps ``val`` once more
    while idle, outside any phase (a planted divergence)."""
    w = Role("worker", "START", {"busy": False, "done": 0, "val": 0, "drifted": False}, private=True, observed=observed,
             observed_when={"val": lambda v: not v.busy} if when is None else when)
    w.local("take", "START", "WORK", do=lambda c: c.set(busy=True))
    w.local("a", "WORK", "A", do=lambda c: c.set(val=c.v.val + 1))
    w.local("b", "A", "B", do=lambda c: c.set(val=c.v.val + 1))
    w.local("c", "B", "IDLE", do=lambda c: c.set(val=c.v.val + 1, busy=False, done=1))
    if drift:
        w.local("drift", "IDLE", "IDLE", guard=lambda c: c.rank == 1 and not c.v.drifted,
                do=lambda c: c.set(val=c.v.val + 1, drifted=True))
    w.op("sync", "IDLE", "DONE", lambda c: barrier("world"))
    return Protocol("phases", {"world": Group("world", tuple(range(n)))},
                    [ActorDef(r, "main", w) for r in range(n)], invariants=list(invariants))


def _agree(world):
    """Workers that finished the phase hold the same value (the FRANKEN shape: compare only idle
    ranks, at the same count)."""
    vals = {a.rank: a.vars.val for a in world.actors() if a.alive and not a.vars.busy and a.vars.done}
    return None if len(set(vals.values())) <= 1 else f"idle workers disagree: {vals}"


def test_steps_inside_a_phase_are_invisible_and_the_answer_is_the_unreduced_one():
    inv = [("AGREE", FRANKEN, _agree)]
    for drift, verdict in ((False, HOLDS), (True, FRANKEN)):
        red = check(_phases(4, inv, drift=drift), reduction=True)
        full = check(_phases(4, inv, drift=drift), reduction=False)
        assert red.verdict == full.verdict == verdict, (red.message, full.message)
        assert reachable_classes(_phases(4, inv, drift=drift), True)[0] == reachable_classes(_phases(4, inv, drift=drift), False)[0]
    # the same property with val observed everywhere: every phase step is visible
    plain = check(_phases(4, inv, when={}, observed=("busy", "done", "val")), reduction=True)
    when = check(_phases(4, inv), reduction=True)
    assert when.verdict == plain.verdict == HOLDS and when.stats.states < plain.stats.states


def test_a_property_reading_the_field_where_the_condition_fails_is_refused():
    """Planted: the property compares every worker's value, busy or not.  Without the check the
    reduction would hide the phase steps it reads (a made-up verdict); with it: a SpecError naming
    the field, the actor and the role."""
    def everyone(world):
        vals = {a.vars.val for a in world.actors() if a.alive}
        return None if len(vals) <= 1 else "values differ"
    with pytest.raises(SpecError, match=r"reads 'val' of rank\d \(role worker\).*observed_when condition for 'val' is false"):
        check(_phases(2, [("ALL", INVARIANT, everyone)]), reduction=True)
    assert check(_phases(2, [("ALL", INVARIANT, everyone)]), reduction=False).verdict == INVARIANT  # unreduced: no claim


def test_a_step_changing_the_field_where_the_condition_holds_stays_visible(monkeypatch):
    """The field test has teeth: two workers move through transient control states while idle; the
    property asks for both in the middle one.  A reduction that looked only at whether the condition
    changes would take each worker's steps alone and never meet the state (a wrong HOLDS)."""
    from lockstep.spec.reduce import Reductions

    w = Role("worker", "START", {"busy": False}, private=True, observed=("busy",),
             observed_when={"ctl": lambda v: not v.busy})
    w.local("a", "START", "MID")
    w.local("b", "MID", "END")
    w.op("sync", "END", "DONE", lambda c: barrier("world"))

    def both_mid(world):
        return "both in MID" if all(not a.vars.busy and a.state == "MID" for a in world.actors() if a.alive) else None
    build = lambda: Protocol("mid", {"world": Group("world", (0, 1, 2))}, [ActorDef(r, "main", w) for r in range(3)],
                             invariants=[("MID", INVARIANT, both_mid)])
    assert check(build(), reduction=True).verdict == check(build(), reduction=False).verdict == INVARIANT

    def condition_only(self, role):  # the bug: a step is visible only when the condition changes
        conds = list(role.observed_when.values())
        return lambda st, nst: any(bool(c(st[1])) != bool(c(nst[1])) for c in conds)
    monkeypatch.setattr(Reductions, "_when_visible", condition_only)
    assert check(build(), reduction=True).verdict == HOLDS  # what the field test prevents


@pytest.mark.parametrize("kwargs, needle", [
    ({"observed_when": {"vall": lambda v: True}}, "observed_when names 'vall'"),
    ({"observed": ("val",), "observed_when": {"val": lambda v: True}}, "'val' is in both observed= and observed_when="),
    ({"observed_when": {"val": "not busy"}}, r"observed_when\['val'\] is 'not busy', not a function"),
])
def test_bad_declarations_are_refused_when_the_role_is_built(kwargs, needle):
    with pytest.raises(SpecError, match=needle):
        Role("worker", "START", {"busy": False, "val": 0}, private=True, **kwargs)


def test_a_condition_that_raises_is_a_spec_error_naming_it():
    inv = [("AGREE", FRANKEN, _agree)]
    with pytest.raises(SpecError, match="worker observed_when"):
        check(_phases(2, inv, when={"val": lambda v: v.missing}), reduction=True)


def test_kv_at_sixteen_ranks_is_linear_in_the_mesh():
    """The shipped kv spec declares its cache observed between envelopes only: its lifecycle steps
    inside an envelope are invisible, so the reduced graph grows linearly with the mesh (mesh 8:
    410,178 states before, 9,158 now; mesh 16: 4.37M before)."""
    sizes = {}
    for mesh in (4, 8, 16):
        info, params = resolve("kv", None, {"mesh": str(mesh)})
        res = check(info.build(params, None, "gloo"), Bounds(max_states=100_000))
        assert res.verdict == HOLDS, res.message
        sizes[mesh] = res.stats.states
    assert sizes[16] < 25_000 and sizes[16] < 2.5 * sizes[8] < 6.25 * sizes[4], sizes


@pytest.mark.slow
@pytest.mark.parametrize("variant", [None, "om10-missing-override", "reset-drift", "start-frame-drift"])
def test_kv_reduced_and_unreduced_reach_the_same_classes_at_three_ranks(variant):
    info, params = resolve("kv", variant, {"mesh": "3"})
    red = reachable_classes(info.build(params, variant, "gloo"), True)
    full = reachable_classes(info.build(params, variant, "gloo"), False)
    assert red[0] == full[0] and red[2] and full[2]


@pytest.mark.parametrize("ranks", [4, 6])
def test_tp_compares_ranks_between_chunks_only_and_still_finds_a_drift(ranks):
    """tp's workers observe cache_epoch and start_frame between chunks only (from their advance to
    their next header): the steps inside a chunk are invisible.  A planted drift (a worker advances
    its start frame by two after a hard cut) is found reduced at 4 and 6 ranks, as unreduced."""
    from dataclasses import replace

    from lockstep.spec.specs import tp

    def build(drift: bool):
        params = {k: p.default for k, p in tp.SPEC.params.items()}
        params["ranks"] = ranks
        w = tp.build(params, None, "gloo")
        if drift:
            W = next(a.role for a in w.actors if a.role.name == "worker")
            k = next(i for i, t in enumerate(W.transitions) if t.name == "advance")
            W.transitions[k] = replace(W.transitions[k], do=lambda c: c.set(
                start_frame=c.v.start_frame + (2 if c.v.plan[2] else 1), between=True))
        return w
    assert check(build(True), liveness=False).verdict == FRANKEN
    assert check(build(False), liveness=False).verdict == HOLDS


def test_the_random_differential_catches_a_reduction_that_ignores_the_field(monkeypatch):
    """The generated differential has teeth for ``observed_when`` too: a random protocol it drew
    (bench/bench_differential.py --observed-when --specs 400 --seed 2006, the 100th) whose invariant
    is violated only in a state the field-blind reduction skips.  Honest reduction: no disagreement;
    field-blind: the reduced search misses INVARIANT."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import protogen

    from lockstep.spec.reduce import Reductions

    d = protogen.from_json(json.loads((Path(__file__).resolve().parent / "protogen_observed_when_teeth.json").read_text()))
    assert d["inv"]["when"] and not d["inv"]["when"]["plant"]  # (another declaration is planted wrong, harmlessly)
    assert protogen.compare(d, workers=False) == []

    def condition_only(self, role):
        conds = list(role.observed_when.values())
        return lambda st, nst: any(bool(c(st[1])) != bool(c(nst[1])) for c in conds)
    monkeypatch.setattr(Reductions, "_when_visible", condition_only)
    assert any("INVARIANT" in x for x in protogen.compare(d, workers=False))


def test_the_loss_scaler_example_at_eight_ranks():
    """examples/loss_scaler_spec.py, a user's file: HOLDS at 8 ranks, and its ``observed_when`` is what
    keeps the state count down (the same role observing its scaler everywhere explores over 6x more)."""
    from pathlib import Path

    from lockstep.spec.loading import load_spec

    info = load_spec(str(Path(__file__).resolve().parent.parent / "examples" / "loss_scaler_spec.py"))
    params = {k: p.default for k, p in info.params.items()} | {"ranks": 8}
    when = check(info.build(params, None, "gloo"), liveness=False)
    plain_model = info.build(params, None, "gloo")
    role = plain_model.actors[0].role
    role.observed, role.observed_when = role.observed + tuple(role.observed_when), {}
    role.visible = frozenset(role.observed)
    plain = check(plain_model, liveness=False)
    assert when.verdict == plain.verdict == HOLDS
    assert 6 * when.stats.states < plain.stats.states, (when.stats.states, plain.stats.states)


@pytest.mark.parametrize("variant", ["om10-missing-override", "reset-drift", "start-frame-drift"])
def test_pp1_compares_settled_caches_and_still_finds_every_divergence(variant):
    """pp1's mesh ranks observe their cache once it has settled for the chunk (from the chunk's first
    generator all_reduce to the next header): the apply and the count check are invisible.  Each
    planted divergence is still found at 4 mesh ranks."""
    info, params = resolve("pp1", variant, {"mesh": "4"})
    assert check(info.build(params, variant, "gloo"), liveness=False).verdict == FRANKEN


def test_pp1_at_six_mesh_ranks_explores_fewer_states():
    """The hardened pp1 holds at 6 mesh ranks with fewer states than when every apply was visible
    (157,413 states)."""
    info, params = resolve("pp1", None, {"mesh": "6"})
    res = check(info.build(params, None, "gloo"), liveness=False)
    assert res.verdict == HOLDS and res.stats.states < 0.8 * 157_413, res.stats.states
