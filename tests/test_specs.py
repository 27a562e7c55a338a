"""Every variant of every spec in `lockstep list` yields its documented verdict class, and every hardened
spec proves its properties (safety and liveness) within its default bounds."""
import pytest

from lockstep.model.api import FAIL_FAST, HOLDS, LIVENESS, STALE_EMIT
from lockstep.model.checker import check
from lockstep.spec.registry import available, load, pick_backend, resolve


def run(spec, variant=None, backend=None, **raw):
    info, params = resolve(spec, variant, {k: str(v) for k, v in raw.items()})
    backend = pick_backend(info, variant, backend)
    return check(info.build(params, variant, backend))


CASES = [(s, v) for s in available() for v in load(s).variants]


@pytest.mark.parametrize("spec, variant", CASES, ids=[f"{s}:{v}" for s, v in CASES])
def test_every_variant_yields_its_documented_class(spec, variant):
    info = load(spec)
    r = run(spec, variant)
    assert r.verdict in info.variants[variant].expected, f"{spec} {variant}: {r.verdict}: {r.message}"
    assert r.counterexample or r.verdict in ("DEADLOCK",), "a violation comes with a counterexample"


@pytest.mark.parametrize("spec", [s for s in available() if s != "pp1"])
def test_hardened_spec_holds(spec):
    r = run(spec)
    assert r.verdict in load(spec).hardened_expected, r.message


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
