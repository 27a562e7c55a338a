"""Fixtures for the real multi-rank tests: small worlds forked from this process under a hard
deadline (the launcher SIGKILLs hung ranks), and trace helpers."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: forked children + OpenMP hang otherwise

import pytest  # noqa: E402


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
