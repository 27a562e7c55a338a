import os

# forked torch worlds hang if the parent used OpenMP threads (docs/platform-facts.md): set before torch is imported
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# Fixtures that start real torch.distributed worlds (tests/impl/conftest.py, tests/conformance/conftest.py and
# module fixtures built on them): a test that uses one is a real-world test, marked `multirank` here so that no
# such test can be left unmarked.
REAL_WORLD_FIXTURES = {"world", "real_run", "fast_config", "fr_dumps"}

# Tests that start process trees of their own and hold them to deadlines (real worlds, torchrun, a Ray
# instance, signals sent to a running command): marked `serial`, they run one at a time.  .ci/run runs the
# other tests on two pytest-xdist workers and these afterwards, alone, so that no rank of a real world shares
# the machine's two cores with another test.
SERIAL_MODULES = {"tests/test_signals.py", "tests/test_testing_run.py", "tests/test_ray.py"}


# Tests over 5 s on an idle 2-core machine, in modules whose authors did not mark them (measured with
# LOCKSTEP_TEST_COST below, 2026-11-26: CPU seconds >= 3, or wall seconds >= 15 at load average ~12). Tests in
# tests/test_signals.py, tests/impl/test_compile.py and tests/impl/test_torchrun.py carry their own marks.
SLOW_TESTS = {
    "tests/conformance/test_mutation.py::test_kill_rate",
    "tests/test_pp.py::test_liveness_verdict_is_the_same_with_and_without_reduction[pp1-None]",
    "tests/test_pp.py::test_liveness_verdict_is_the_same_with_and_without_reduction[pp1-retry-forever]",
    "tests/test_pp.py::test_hardened_pp1_holds_with_every_fault[3]",
    "tests/test_pipeline.py::test_default_counts_exact_and_no_deadlock_python_path",
    "tests/test_specs.py::test_reductions_preserve_the_verdict_class[pp1:hardened]",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REAL_WORLD_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.multirank)
        if item.get_closest_marker("multirank") or item.nodeid.split("::")[0] in SERIAL_MODULES:
            item.add_marker(pytest.mark.serial)
        if item.nodeid in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


# LOCKSTEP_TEST_COST=PATH: append one JSON line per test with its wall seconds and the CPU seconds it used
# (this process and the children it reaped: forked ranks, subprocesses). CPU seconds barely change with the
# machine's load, wall seconds do: this is how the `slow` marks (> 5 s on an idle 2-core machine) are kept honest.
_COST = os.environ.get("LOCKSTEP_TEST_COST")


def _cpu() -> float:
    import resource
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _COST:
        yield
        return
    import json
    import time
    t0, c0 = time.perf_counter(), _cpu()
    yield
    outcome = "failed" if getattr(item, "_lockstep_failed", False) else "ok"
    with open(_COST, "a") as f:
        f.write(json.dumps({"test": item.nodeid, "wall_s": round(time.perf_counter() - t0, 2),
                            "cpu_s": round(_cpu() - c0, 2), "outcome": outcome,
                            "marks": sorted({m.name for m in item.iter_markers()} & {"slow", "multirank"})}) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    rep = (yield).get_result()
    if _COST and rep.failed:
        item._lockstep_failed = True


# LOCKSTEP_MUTANT=NAME: the whole run with one known bug planted in the reductions (tests/mutants.py),
# to see which tests catch it: `LOCKSTEP_MUTANT=c0-fifo python -m pytest tests/test_reduction_mutants.py` must fail.
_MUTANT = os.environ.get("LOCKSTEP_MUTANT")


def pytest_configure(config):
    if _MUTANT:
        import contextlib

        from mutants import MUTANTS, planted

        by_name = {m.name: m for m in MUTANTS}
        if _MUTANT not in by_name:
            raise pytest.UsageError(f"LOCKSTEP_MUTANT={_MUTANT!r}: not a mutant of tests/mutants.py ({', '.join(by_name)})")
        config._lockstep_mutant = contextlib.ExitStack()
        config._lockstep_mutant.enter_context(planted(by_name[_MUTANT]))


def pytest_unconfigure(config):
    stack = getattr(config, "_lockstep_mutant", None)
    if stack is not None:
        stack.close()
