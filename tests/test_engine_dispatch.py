"""model/engine.py (one dispatcher over CheckOptions) and model/features.py (declared model features)."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import subprocess
import sys
import textwrap

import pytest

from lockstep.model import features as F
from lockstep.model.api import HOLDS, VACUOUS, SpecError
from lockstep.model.checker import check as legacy_check
from lockstep.model.engine import CheckOptions, OptionsError, check, plan
from lockstep.model.result import Bounds
from lockstep.spec.fabric import Group, barrier
from lockstep.spec.machine import ActorDef, Protocol, Role
from lockstep.spec.registry import pick_backend, resolve

fork = pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")


def build(spec, variant=None, **raw):
    info, params = resolve(spec, variant, {k: str(v) for k, v in raw.items()})
    return info.build(params, variant, pick_backend(info, variant, None))


def summary(r):
    st = r.stats
    return (r.verdict, r.message, r.bound, st.states, st.transitions, st.depth, st.end_states, st.fail_fast_ends,
            r.counterexample, r.waiting, r.cycle_start)


class Plain:
    """A hand-written model with no optional feature and no declaration."""

    name = "plain"

    def init_states(self):
        return [0]

    def successors(self, s):
        return [("inc", s + 1)] if s < 3 else []

    def invariant(self, s):
        return None

    def classify_end(self, s):
        return None

    def describe(self, s, a, n):
        return {"from": s, "to": n}

    def waiting(self, s):
        return []


class ClaimsLiveness(Plain):
    """Declares liveness but has no pending(): the check must refuse it before searching."""

    name = "claims-liveness"
    features = frozenset({"liveness"})
    searched = False

    def actor_of(self, a):
        return "p"

    def successors(self, s):
        type(self).searched = True
        return super().successors(s)


# -- features -------------------------------------------------------------------------------------
def test_worlds_declare_their_features():
    tp = build("tp", ranks=2, chunks=1)
    assert F.features_of(tp) == {F.REDUCTION, F.LIVENESS_MODE, F.SYMMETRY, F.COVERAGE, F.KEYED, F.KEY_FIELDS} | (
        {F.LIVENESS} if tp.pending_fn is not None else set())
    assert F.features_of(build("pipeline")) == {F.REDUCTION, F.PACKED}


def test_world_declares_liveness_only_with_an_obligation():
    with_obligation = [m for m in (build("pp1"), build("tp")) if m.pending_fn is not None]
    assert with_obligation, "a shipped spec with a liveness obligation"
    assert all(F.LIVENESS in F.features_of(m) for m in with_obligation)
    lead = Role("leader", "A", {})
    lead.op("b", "A", "DONE", lambda c: barrier("world"))
    w = Protocol("nolive", {"world": Group("world", (0,))}, [ActorDef(0, "main", lead)])
    assert F.LIVENESS not in F.features_of(w)


def test_undeclared_models_get_the_features_they_have_methods_for():
    assert F.features_of(Plain()) == frozenset()

    class Live(Plain):
        def pending(self, s):
            return False

        def actor_of(self, a):
            return "p"

        def set_reduction(self, on):
            self.on = on

    assert F.features_of(Live()) == {F.LIVENESS, F.REDUCTION}
    assert F.reducing(Live()) is None  # it offers no reducing(): unknown, so no shortest-path claim


def test_declared_feature_without_its_method_fails_before_the_search():
    ClaimsLiveness.searched = False
    with pytest.raises(SpecError, match=r"claims-liveness features.*declares 'liveness' but has no pending"):
        check(ClaimsLiveness())
    assert not ClaimsLiveness.searched


def test_unknown_or_malformed_feature_declarations_are_spec_errors():
    class Typo(Plain):
        features = frozenset({"livenes"})

    class Str(Plain):
        features = "liveness"

    with pytest.raises(SpecError, match="unknown feature 'livenes'"):
        check(Typo())
    with pytest.raises(SpecError, match="features must be a frozenset"):
        check(Str())


def test_cli_reports_a_bad_declaration_in_one_line(tmp_path):
    spec = tmp_path / "bad_features_spec.py"
    spec.write_text(textwrap.dedent("""
        from lockstep.spec.registry import SpecInfo

        class M:
            name = "m"
            features = frozenset({"packed"})
            def init_states(self): return [0]
            def successors(self, s): return []
            def invariant(self, s): return None
            def classify_end(self, s): return None
            def describe(self, s, a, n): return {}
            def waiting(self, s): return []

        SPEC = SpecInfo(name="m", description="declares packed without packed()", params={},
                        build=lambda params, variant, backend: M(), variants={})
    """))
    p = subprocess.run([sys.executable, "-m", "lockstep", "check", str(spec)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert "declares 'packed' but has no packed" in p.stderr


# -- the dispatcher -------------------------------------------------------------------------------
def test_options_are_a_frozen_value():
    o = CheckOptions(reduction=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.reduction = True
    assert o.replace(workers=4) == CheckOptions(reduction=False, workers=4) and o.workers == 1


def test_plan_picks_the_search():
    tp = build("tp", ranks=2, chunks=1)
    live = F.LIVENESS in F.features_of(tp)
    assert plan(tp, CheckOptions()) == ("liveness" if live else "serial")
    assert plan(tp, CheckOptions(liveness=False)) == "serial"
    assert plan(tp, CheckOptions(liveness=False, workers=3)) == ("parallel" if "fork" in mp.get_all_start_methods() else "serial")
    assert plan(build("pipeline"), CheckOptions(workers=3)) == "vectorized"
    assert plan(tp, CheckOptions(liveness=False, ray="local")) == "ray"
    assert plan(Plain(), CheckOptions()) == "serial"


def test_options_that_cannot_go_together():
    with pytest.raises(OptionsError, match="Ray search only"):
        check(Plain(), CheckOptions(actor_memory_mb=100))
    with pytest.raises(OptionsError, match="cannot run on Ray"):
        check(Plain(), CheckOptions(cross_check=True, ray="local"))
    with pytest.raises(OptionsError, match="picklable factory"):
        check(Plain(), CheckOptions(liveness=False, ray="local"))
    with pytest.raises(OptionsError, match="at least 1"):
        check(Plain(), CheckOptions(workers=0))


@pytest.mark.parametrize("spec,variant,raw,reduction,liveness", [
    ("tp", None, {"ranks": 2, "chunks": 1}, True, True),
    ("tp", None, {"ranks": 2, "chunks": 1}, False, True),
    ("tp", "fm04-throw-after-header", {}, True, True),
    ("tp", "fm03-conditional-collective", {"ranks": 3}, True, False),
    ("pp1", None, {"chunks": 2}, True, True),
    ("pipeline", None, {"stages": 3, "microbatches": 2, "capacity": 1}, False, True),
    ("pipeline", None, {"stages": 3, "microbatches": 2, "capacity": 1}, True, True),
])
def test_engine_and_the_legacy_entry_point_agree(spec, variant, raw, reduction, liveness):
    new = check(build(spec, variant, **raw), CheckOptions(reduction=reduction, liveness=liveness))
    old = legacy_check(build(spec, variant, **raw), reduction=reduction, liveness=liveness)
    assert summary(new) == summary(old) and new.detail == old.detail
    if not reduction:
        assert new.reduced is False


@pytest.mark.parametrize("spec,variant,raw,reduction", [
    ("tp", None, {"ranks": 2, "chunks": 1}, True),
    ("tp", "fm04-throw-after-header", {}, False),
    ("tp", "fm03-conditional-collective", {"ranks": 3}, True),
    ("pp1", None, {"chunks": 2}, False),
])
def test_safety_plan_is_the_explorer_on_the_configured_model(spec, variant, raw, reduction):
    """The engine adds nothing to the search itself: its safety answer is the Explorer's on a model
    configured by hand (coverage aside, which only the engine judges)."""
    from lockstep.model.checker import Explorer

    new = check(build(spec, variant, **raw), CheckOptions(reduction=reduction, liveness=False))
    direct = Explorer(F.configure(build(spec, variant, **raw), reduction, liveness=False)).run()
    assert summary(new)[1:] == summary(direct)[1:]
    assert new.verdict == direct.verdict or (direct.verdict == HOLDS and new.verdict == VACUOUS)


def test_reduced_flag_says_whether_a_reduced_graph_was_searched():
    assert check(build("tp", "fm03-conditional-collective", ranks=3), CheckOptions(liveness=False)).reduced is True
    assert check(build("tp", "fm03-conditional-collective", ranks=3), CheckOptions(reduction=False)).reduced is False
    assert check(Plain()).reduced is None


def _never_commits():
    lead = Role("leader", "START", {"k": 0})
    lead.local("plan", "START", "READY")
    lead.op("send_header", "READY", "DONE", lambda c: barrier("world"), guard=lambda c: c.v.k > 0, commit=True)
    lead.local("give_up", "READY", "DONE", guard=lambda c: c.v.k == 0)
    return Protocol("vacuous", {"world": Group("world", (0,))}, [ActorDef(0, "main", lead)])


@fork
def test_parallel_search_judges_coverage_like_the_serial_one():
    """The workers' coverage comes back to the parent: a vacuous proof is VACUOUS with --workers too
    (it used to be HOLDS there)."""
    serial = check(_never_commits(), CheckOptions(liveness=False))
    par = check(_never_commits(), CheckOptions(liveness=False, workers=2))
    assert serial.verdict == par.verdict == VACUOUS
    assert serial.detail["coverage"] == par.detail["coverage"]
    tp_serial = check(build("tp", ranks=2, chunks=1), CheckOptions(liveness=False))
    tp_par = check(build("tp", ranks=2, chunks=1), CheckOptions(liveness=False, workers=2))
    assert tp_serial.verdict == tp_par.verdict == HOLDS
    assert tp_serial.detail["coverage"] == tp_par.detail["coverage"]


def test_cross_check_on_one_model_equals_cross_check_on_fresh_builds():
    opts = CheckOptions(cross_check=True, bounds=Bounds(max_states=50_000))
    reused = check(build("tp", "fm04-throw-after-header"), opts)
    fresh = check(build("tp", "fm04-throw-after-header"), opts, build=lambda: build("tp", "fm04-throw-after-header"))
    assert reused.cross_check == fresh.cross_check and reused.cross_check["agree"]
    assert summary(reused) == summary(fresh)
