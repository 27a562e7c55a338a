"""Real gloo worlds for the conformance tests: forked from this process (the impl engineer's
launcher, impl/launch.py) with short PG timeouts and a hard deadline per world.  Each scenario runs
once per session and is shared by the tests that read it."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: forked children + OpenMP hang otherwise

import pytest  # noqa: E402

FAST = {"dist_timeout_s": 2.0, "heartbeat_s": 0.25, "watchdog_s": 4.0}
DEADLINE = 40.0


@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    """real_run(topology, world, **config) -> path of a finished run directory (cached per session)."""
    from lockstep.impl.config import RunConfig
    from lockstep.impl.launch import launch_local, resolve_config

    cache: dict = {}
    base = tmp_path_factory.mktemp("conform-runs")

    def _run(topology: str, world: int, **kw):
        key = (topology, world, tuple(sorted(kw.items())))
        if key not in cache:
            d = base / f"run{len(cache)}"
            cfg = resolve_config(RunConfig(topology=topology, world=world).with_(**{**FAST, **kw}))
            s = launch_local(cfg, d, deadline_s=DEADLINE)
            assert not s.deadline_hit, f"deadline hit:\n{s.render()}"
            cache[key] = str(d)
        return cache[key]
    return _run


@pytest.fixture(scope="session")
def fast_config():
    """(config overrides, deadline seconds) for worlds a test starts itself."""
    return dict(FAST), DEADLINE
