"""Fixtures for the real multi-rank tests: small worlds forked from this process under a hard
deadline (the launcher SIGKILLs hung ranks), and trace helpers."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: forked children + OpenMP hang otherwise

import pytest  # noqa: E402

from lockstep.conformance import schema as S  # noqa: E402

FAST = {"dist_timeout_s": 3.0, "heartbeat_s": 0.25, "watchdog_s": 6.0}


@pytest.fixture
def world(tmp_path):
    """world(topology, world_size, deadline=..., **config) -> RunSummary of a finished forked world."""
    from lockstep.impl.config import RunConfig
    from lockstep.impl.launch import launch_local

    n = [0]

    def _run(topology, world_size, deadline=40.0, fr_dir=None, **kw):
        n[0] += 1
        cfg = RunConfig(topology=topology, world=world_size).with_(**{**FAST, **kw})
        s = launch_local(cfg, tmp_path / f"run{n[0]}", deadline_s=deadline, fr_dir=fr_dir)
        assert not s.deadline_hit, f"deadline hit:\n{s.render()}"
        assert s.wall_s < deadline
        return s
    return _run


def collective_sequences(run: S.RunTrace) -> dict[str, dict[int, list[tuple]]]:
    """group -> rank -> [(seq, op, dtype, shape, src)] of collectives entered, in order."""
    out: dict[str, dict[int, list[tuple]]] = {}
    for r, tr in run.ranks.items():
        for e in tr.of(S.COMM_ENTER):
            if e.get("p2p"):
                continue
            out.setdefault(e["group"], {}).setdefault(r, []).append(
                (e["seq"], e["op"], e.get("dtype"), tuple(e.get("shape", ())), e.get("src")))
    return out


def assert_collectives_match(run: S.RunTrace) -> None:
    """Every member's k-th collective on a group has the same signature (a clean run's traces must
    be explainable by c10d matching), and the sequence numbers count 1, 2, 3 ... per group."""
    seqs = collective_sequences(run)
    for g, per_rank in seqs.items():
        members = run.manifest["groups"][g]
        lens = {r: len(per_rank.get(r, [])) for r in members}
        assert len(set(lens.values())) == 1, f"group {g}: members entered different numbers of collectives {lens}"
        ref = per_rank[members[0]]
        for r in members:
            assert per_rank[r] == ref, f"group {g}: rank {r} diverges from rank {members[0]}"
        nums = [x[0] for x in ref]
        assert nums == sorted(set(nums)), f"group {g}: sequence numbers not increasing {nums[:10]}..."
        # compiled collectives are recorded as ranges (seq_first..seq_last) on their generator call
        covered = set(nums)
        for e in run.ranks[members[0]].events:
            if "seq_first" in e and e.get("seq_first", 0) > 0 and (e["ev"] == S.STARTUP_STEP or e.get("compiled")):
                covered |= set(range(e["seq_first"], e["seq_last"] + 1))
        assert covered == set(range(1, max(covered) + 1)), f"group {g}: sequence numbers have gaps"
