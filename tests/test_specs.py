"""Reductions never change what a shipped spec or variant yields.  That every variant yields its
documented class and every hardened spec holds is defined once, in the testing API
(``lockstep.testing.check_configuration``), and run over every shipped configuration by
tests/test_specs_plugin.py."""
import pytest

from lockstep.model.checker import check
from lockstep.spec.registry import available, load, pick_backend, resolve


CASES = [(s, v) for s in available() for v in load(s).variants]


ALL = [(s, None) for s in available()] + CASES


@pytest.mark.parametrize("spec, variant", ALL, ids=[f"{s}:{v or 'hardened'}" for s, v in ALL])
def test_reductions_preserve_the_verdict_class(spec, variant):
    """Symmetry, partial-order reduction and the packed core change the cost, never the verdict."""
    info, params = resolve(spec, variant, {})
    backend = pick_backend(info, variant, None)
    reduced = check(info.build(params, variant, backend), liveness=False, reduction=True)
    full = check(info.build(params, variant, backend), liveness=False, reduction=False)
    assert reduced.verdict == full.verdict, f"{reduced.message} vs {full.message}"
    if full.verdict == "HOLDS":  # a violation may sit deeper in the reduced graph; a proof never costs more
        assert reduced.stats.states <= full.stats.states


CROSS = [(s, v) for s, v in ALL if s != "pipeline"]  # the pipeline's full graph (646k states) is bench material


@pytest.mark.slow
@pytest.mark.parametrize("spec, variant", CROSS, ids=[f"{s}:{v or 'hardened'}" for s, v in CROSS])
def test_reductions_keep_every_reachable_violation_class(spec, variant):
    """Not only the first verdict: every violation class (and fail-fast end) reachable in the full graph
    is reachable in the reduced one, and no other (what `check --cross-check` compares)."""
    from lockstep.model.crosscheck import reachable_classes

    info, params = resolve(spec, variant, {})
    backend = pick_backend(info, variant, None)
    red = reachable_classes(info.build(params, variant, backend), True)[0]
    full = reachable_classes(info.build(params, variant, backend), False)[0]
    assert red == full


def test_shipped_invariants_read_the_world_view_not_raw_tuples():
    """Properties of the shipped specs take a WorldView (what they read is recorded and checked against
    the roles' ``observed`` declarations); none indexes raw state tuples."""
    import inspect
    import re

    from lockstep.spec.view import WorldView

    for name in available():
        mod = inspect.getmodule(load(name).build)
        src = inspect.getsource(mod)
        assert not re.search(r"state\[\d\]|\bst\[\d\]|actors\[\d\]\[", src), name
        info, params = resolve(name, None, {})
        model = info.build(params, None, pick_backend(info, None, None))
        for inv in getattr(model, "invariants", ()):
            params_of = list(inspect.signature(inv[2]).parameters.values())
            assert len(params_of) == 1 and params_of[0].annotation in (WorldView, "WorldView"), (name, inv[0])


def test_cross_check_cli_agrees_on_kv():
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "lockstep", "check", "kv", "-p", "chunks=2", "--cross-check", "--json"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["cross_check"]["agree"] and d["cross_check"]["reduced"]["verdict"] == "HOLDS"
    assert d["cross_check"]["reduced"]["states"] < d["cross_check"]["unreduced"]["states"]
