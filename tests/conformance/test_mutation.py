"""Mutation adequacy: conform rejects mutated conforming traces (>= 500 mutants, kill rate reported)."""
import pytest

from lockstep.conformance import loader, mutate

pytestmark = [pytest.mark.multirank, pytest.mark.slow]  # real gloo worlds; ~40 s


def test_kill_rate(real_run, capsys):
    plan = [(real_run("tp", 2, chunks=2), 160), (real_run("pp0", 2, chunks=2), 100), (real_run("pp1", 3, chunks=2), 70),
            (real_run("pp1", 3, chunks=3, hard_cut_at=2), 70)]  # the hard_cut step and stale drains
    killed = total = 0
    survivors = []
    for path, n in plan:
        k, t, surv, per = mutate.kill_rate(loader.load(path), n=n, seed=7)
        killed += k
        total += t
        survivors += [(path, m.operator, m.rank, m.line, m.detail) for m in surv]
    rate = killed / total
    with capsys.disabled():
        print(f"\nmutation kill rate: {killed}/{total} = {rate:.3f}; survivors: {survivors}")
    assert total >= 390
    assert rate >= 0.98, survivors
