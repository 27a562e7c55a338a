"""TP v1.1: every planted bug yields its documented class; the hardened protocol holds."""
import pytest

from lockstep.model.api import FAIL_FAST, HOLDS, STRANDED
from lockstep.model.checker import check
from lockstep.spec.registry import resolve


def run(variant=None, backend="gloo", **raw):
    info, params = resolve("tp", variant, {k: str(v) for k, v in raw.items()}, backend)
    return check(info.build(params, variant, backend))


TP = resolve("tp", None, {})[0]


@pytest.mark.parametrize("variant", sorted(TP.variants))
def test_variant_yields_its_documented_class(variant):
    r = run(variant)
    assert r.verdict in TP.variants[variant].expected, r.message
    assert r.counterexample, "a violation comes with a counterexample"
    for s in r.counterexample:
        assert {"step", "rank", "role", "transition", "op", "group", "ids"} <= set(s)


@pytest.mark.parametrize("ranks", [2, 3])
def test_hardened_tp_holds_with_all_faults(ranks):
    r = run(ranks=ranks, chunks=2, faults="all")
    assert r.verdict == HOLDS, r.message
    assert r.stats.fail_fast_ends > 0, "injected faults end some runs, as fast failures"


def test_hardened_tp_holds_on_nccl_with_async_error_handling():
    assert run(backend="nccl-async").verdict == HOLDS


def test_nccl_without_async_error_handling_strands_on_a_dead_peer():
    # honest profile difference: a crashed rank is never detected, so its peers block for ever
    r = run(backend="nccl", faults="crash")
    assert r.verdict == STRANDED
    assert any(s.get("fault") == "crash" for s in r.counterexample)
    assert run(backend="gloo", faults="crash").verdict == HOLDS


def test_fm04_counterexample_is_minimal():
    """Derived by hand for ranks=2, chunks=1, no heartbeats, only the pickle fault:
    rank0 issues the parity all_gather (1); rank1 loads its env (2) and issues its all_gather (3); the
    all_gather completes (4); rank0 plans (5), passes preflight (6), issues the header (7); rank1 posts
    its header receive (8); the header completes (9); rank0's pickle raises after the header (10); rank1
    posts the meta-size receive (11); the stop-request thread fires (12) -- until it has, the state is
    not stuck.  No step can be dropped: each is the only way to enable the next."""
    r = run("fm04-throw-after-header", chunks=1, heartbeats=0, faults="raise@pickle")
    assert r.verdict == STRANDED
    assert len(r.counterexample) == 12
    assert r.waiting[0]["rank"] == 1 and r.waiting[0]["partner_status"] == {"0": "idle"}
    assert [s["transition"] for s in r.counterexample if s["rank"] == 0 and s["role"] == "leader"][-1] == "meta_pickle_fails"


def test_faults_can_be_narrowed():
    assert run(faults="none").stats.fail_fast_ends == 0
    assert run("fm04-throw-after-header", faults="crash").verdict == HOLDS  # the bug needs its own fault
