"""PP0/PP1, the KV lifecycle and the overlap queues: the properties the specs promise, one by one."""
import pytest

from lockstep.model.api import HOLDS, LIVENESS, STALE_EMIT, STRANDED
from lockstep.model.checker import check
from lockstep.spec.registry import pick_backend, resolve


def run(spec, variant=None, backend=None, **raw):
    info, params = resolve(spec, variant, {k: str(v) for k, v in raw.items()})
    return check(info.build(params, variant, pick_backend(info, variant, backend)))


@pytest.mark.parametrize("mesh", [2, 3])
def test_hardened_pp1_holds_with_every_fault(mesh):
    r = run("pp1", mesh=mesh, chunks=3, hard_cuts=1, depth=2, faults="all")
    assert r.verdict == HOLDS, r.message
    assert r.stats.fail_fast_ends > 0  # faults end runs as fast failures, never as hangs


def test_hardened_pp0_holds_for_every_depth():
    for depth in (1, 2, 3):
        assert run("pp0", depth=depth).verdict == HOLDS


@pytest.mark.parametrize("mode", ["R1", "R0a", "R0"])
def test_recompute_modes_hold(mode):
    assert run("pp1", recompute=mode, chunks=2).verdict == HOLDS


@pytest.mark.parametrize("variant, fault", [("om07-leader-throws", "reject@leader"),
                                            ("result-throw-after-header", "raise@result")])
def test_nccl_variants_have_a_hardened_twin_that_fails_fast(variant, fault):
    """The planted bug strands its peer on NCCL; the hardened protocol, same backend, same fault, does not."""
    assert run("pp1", variant).verdict == STRANDED
    r = run("pp1", backend="nccl", faults=fault)
    assert r.verdict == HOLDS and r.stats.fail_fast_ends > 0


def test_stale_result_is_dropped_never_emitted():
    r = run("pp1", "om09-no-epoch-fence")
    assert r.verdict == STALE_EMIT
    assert any(s.get("transition") == "hard_cut" and s.get("changed", {}).get("cuts") == 1 for s in r.counterexample)


def test_liveness_counterexample_is_a_lasso():
    r = run("pp1", "retry-forever")
    assert r.verdict == LIVENESS
    assert r.cycle_start is not None and 0 < r.cycle_start < len(r.counterexample)
    cycle = r.counterexample[r.cycle_start:]
    assert all(s["in_cycle"] for s in cycle) and not any(s["in_cycle"] for s in r.counterexample[:r.cycle_start])
    assert {s["transition"] for s in cycle} >= {"poll_again"}
    assert any(s.get("fault") == "hang" for s in r.counterexample[:r.cycle_start])
    # safety alone holds for this variant: its only violation is liveness
    info, params = resolve("pp1", "retry-forever", {})
    assert check(info.build(params, "retry-forever", "gloo"), liveness=False).verdict == HOLDS


def test_queue_depth_is_validated():
    from lockstep.spec.registry import UsageError
    with pytest.raises(UsageError, match="depth=4"):
        run("pp1", depth=4)
    with pytest.raises(UsageError, match="mesh=1"):
        run("pp1", mesh=1)


def test_kv_lifecycle_functions_agree_with_the_role():
    """The embedded lifecycle (kv.apply) and the kv role's step-by-step events give the same state."""
    from lockstep.spec.specs import kv as K
    env = K.Env(call_id=1, cache_epoch=0, start_frame=0, init_cache=True, reset_xattn=False, bias=0, recompute=False, context=None)
    a = K.apply(K.KV(), env, rank=1, ring=2)
    b = K.advance(K.hard_cut(K.KV(), env), env, 2)._replace(inputs=(1, None), applied=1)
    assert a == b and a.phase == K.STEADY_EARLY
    env2 = env._replace(call_id=2, start_frame=1, init_cache=False, recompute=True, context="rank0")
    c = K.apply(a, env2, rank=1, ring=2)
    assert c.phase == K.STEADY_FULL and c.inputs == (2, ("rank0", 2)) and c.local_end == 2
    env3 = env2._replace(call_id=3, start_frame=2, recompute=False, context=None)
    d = K.apply(c, env3, rank=1, ring=2)
    assert d.global_end == 3 and d.local_end == 2  # evict/roll: the ring keeps the newest 2 frames
    assert K.franken_check({1: d, 2: d}) is None
    assert "start_frame" in K.franken_check({1: d, 2: d._replace(start_frame=9)})


@pytest.mark.parametrize("spec, variant", [("pp0", None), ("pp1", None), ("pp0", "retry-forever"), ("pp1", "retry-forever")])
def test_liveness_verdict_is_the_same_with_and_without_reduction(spec, variant):
    """Liveness is proved on the reduced graph when it has no pending cycle; otherwise decided on the full graph."""
    info, params = resolve(spec, variant, {})
    reduced = check(info.build(params, variant, "gloo"), reduction=True)
    full = check(info.build(params, variant, "gloo"), reduction=False)
    assert reduced.verdict == full.verdict
    if full.verdict == HOLDS:
        assert "reduced graph" in reduced.message and reduced.stats.states <= full.stats.states
