"""The search on Ray actors (model/ray_search.py) answers exactly as the serial Explorer: verdict,
counts, depth, end-state counts and the same counterexample, on every shipped spec and variant, on a
local Ray instance with 2 CPUs started once for this module."""
import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from lockstep.cli.ray_check import SpecFactory, parse_size_mb
from lockstep.model.api import BOUND_REACHED, HOLDS
from lockstep.model.checker import Bounds, Explorer
from lockstep.model.ray_search import stable_hash
from lockstep.spec.registry import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# small parameters: every check is a few dozen BFS levels at most
SMALL = {
    "tp": {"ranks": "2", "chunks": "1"},
    "pp0": {"chunks": "1"},
    "pp1": {"chunks": "1"},
    "kv": {"chunks": "1"},
    "pipeline": {"stages": "3", "microbatches": "2", "capacity": "1"},
}
CASES = [(spec, None) for spec in SMALL] + [(spec, v) for spec in SMALL for v in load(spec).variants]
EXAMPLES = [os.path.join(ROOT, "examples", f) for f in ("hello_spec.py", "pp_exchange_spec.py")]


def summary(r):
    st = r.stats
    return (r.verdict, r.message, r.bound, st.states, st.transitions, st.depth, st.end_states, st.fail_fast_ends)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def same_as_serial(make, bounds=None, workers=2):
    from lockstep.model.ray_search import check_ray

    serial = Explorer(make(), bounds).run()
    dist = check_ray(make, bounds, workers=workers)
    assert summary(dist) == summary(serial)
    assert dist.counterexample == serial.counterexample
    assert dist.waiting == serial.waiting
    assert dist.detail == serial.detail
    return dist


def test_stable_hash_is_the_same_in_another_process():
    # Python's own hash() is salted per process (and hash(None) is an address before 3.12): the
    # partition of a state must not depend on the process that computes it
    make = SpecFactory("tp", params={"ranks": "2", "chunks": "1"})
    model = make()
    states = list(model.init_states())
    for _, nx in model.successors(states[0]):
        states.append(nx)
    here = [stable_hash(s) for s in states]
    code = textwrap.dedent("""
        from lockstep.cli.ray_check import SpecFactory
        from lockstep.model.ray_search import stable_hash
        m = SpecFactory("tp", params={"ranks": "2", "chunks": "1"})()
        ss = list(m.init_states())
        ss += [nx for _, nx in m.successors(ss[0])]
        print([stable_hash(s) for s in ss])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONHASHSEED": "random"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == here
    assert stable_hash((1, None, "a")) == stable_hash((True, None, "a")) == stable_hash((1.0, None, "a"))
    assert stable_hash(frozenset({"x", "y", "z"})) == stable_hash(frozenset(["z", "y", "x"]))
    assert len({stable_hash((i, "k")) % 2 for i in range(50)}) == 2


def test_progress_line_shows_frontier_and_each_actor():
    from lockstep.cli.ray_check import progress_line
    from lockstep.model.checker import Stats

    st = Stats(states=5000, transitions=12000, depth=7)
    assert progress_line(st, []) == "depth 7, 12,000 transitions"
    line = progress_line(st, [(100, 2500, 300, 140.0, 2.0), (90, 2400, 290, 150.0, 2.0)])
    assert line == "depth 7, 12,000 transitions, frontier 590; [0] 1,250 st/s 140 MB [1] 1,200 st/s 150 MB"


def test_size_parsing():
    assert parse_size_mb("512M") == 512 and parse_size_mb("2G") == 2048 and parse_size_mb("1.5gb") == 1536
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(ValueError):
            parse_size_mb(bad)


@pytest.mark.slow
@pytest.mark.parametrize("spec,variant", CASES, ids=[f"{s}-{v or 'hardened'}" for s, v in CASES])
def test_same_as_serial_on_every_spec_and_variant(ray_local, spec, variant):
    same_as_serial(SpecFactory(spec, variant, SMALL[spec]))


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_same_as_serial_on_example_spec_files(ray_local, path):
    same_as_serial(SpecFactory(path))


@pytest.mark.slow
def test_unreduced_and_three_actors(ray_local):
    r = same_as_serial(SpecFactory("tp", "fm04-throw-after-header", SMALL["tp"], reduction=False), workers=3)
    assert r.counterexample and r.waiting


@pytest.mark.slow
def test_state_bound_cuts_inside_a_level_as_serial(ray_local):
    r = same_as_serial(SpecFactory("tp", "fm02-local-recompute"), Bounds(max_states=1000))
    assert r.verdict == BOUND_REACHED and r.bound == "max-states 1000"


@pytest.mark.slow
def test_memory_budget_ends_with_bound_reached_naming_it(ray_local):
    from lockstep.model.ray_search import LAST_RUN, check_ray

    r = check_ray(SpecFactory("tp", params=SMALL["tp"]), workers=2, memory_budget_mb=1)
    assert r.verdict == BOUND_REACHED and r.bound == "memory budget 1 MB per actor"
    assert "actor" in r.message and r.stats.states > 0
    assert [p["actor"] for p in LAST_RUN["partitions"]] == [0, 1]


@pytest.mark.slow
def test_partitions_reported_with_memory_and_progress(ray_local):
    from lockstep.model.ray_search import LAST_RUN, check_ray

    seen = []
    r = check_ray(SpecFactory("pp1", params={"chunks": "2"}), workers=2,
                  actor_progress=lambda st, actors: seen.append((st.states, len(actors))))
    assert r.verdict == HOLDS and seen and seen[-1][0] <= r.stats.states
    parts = LAST_RUN["partitions"]
    assert sum(p["states"] for p in parts) == r.stats.states
    assert all(p["states"] > 0 and p["peak_rss_mb"] > 0 for p in parts)


@pytest.mark.slow
def test_cli_check_ray_json_matches_serial(ray_local):
    from click.testing import CliRunner

    from lockstep.cli.main import cli

    args = ["check", "tp", "-v", "fm04-throw-after-header", "-p", "chunks=1", "--no-liveness", "--json"]
    serial = CliRunner().invoke(cli, args)
    dist = CliRunner().invoke(cli, args + ["--ray", "--workers", "2"])
    assert serial.exit_code == dist.exit_code == 1
    a, b = json.loads(serial.stdout), json.loads(dist.stdout)
    for d in (a, b):
        for k in ("seconds", "states_per_second", "peak_rss_mb"):
            d.pop(k)
    assert a == b


@pytest.mark.slow
def test_cli_check_ray_carries_the_symmetry_note(ray_local, tmp_path):
    """A HOLDS the actors' symmetry check could only test (an aggregate over 9 symmetric workers) says so
    on Ray as it does serially: the actors send home what their copies of the model noted, and the
    counts add up to the serial search's.  Old: the driver's model never explored, so ``check --ray``
    printed that HOLDS with no note at all."""
    from click.testing import CliRunner

    from helpers import ONLY_RANK_2
    from lockstep.cli.main import cli

    f = tmp_path / "only2_spec.py"
    f.write_text(ONLY_RANK_2.replace("missed == [2]", "missed == [3, 4, 5, 6]").replace("Param(5,", "Param(9,"))
    args = ["check", str(f), "--no-liveness", "--json"]
    serial = json.loads(CliRunner().invoke(cli, args).stdout)
    dist = json.loads(CliRunner().invoke(cli, args + ["--ray", "--workers", "2"]).stdout)
    assert serial["verdict"] == dist["verdict"] == "HOLDS"
    assert len(serial["notes"]) == 1 and serial["notes"][0].startswith("note: only2 invariant only-rank-2 read every ")
    # the same line; the count may differ (each actor gives aggregates up at its own first state with
    # too many arrangements, and proves the classes it met before), never beyond the states there are
    count = re.compile(r" on (\d+) of the 110 states, ")
    assert [count.sub(" on N of the 110 states, ", n) for n in dist["notes"]] == \
        [count.sub(" on N of the 110 states, ", n) for n in serial["notes"]]
    assert 0 < int(count.search(dist["notes"][0]).group(1)) <= 110


def run_cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "lockstep", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_ray_with_liveness_is_a_usage_error():
    # pp1 has a liveness check (tp has none: --ray needs no --no-liveness there)
    r = run_cli("check", "pp1", "-p", "chunks=1", "--ray")
    assert r.returncode == 2 and "--no-liveness" in r.stderr and "Traceback" not in r.stderr


def test_without_ray_installed_one_line_naming_the_install_command(tmp_path):
    (tmp_path / "ray.py").write_text("raise ImportError('No module named ray')\n")
    r = run_cli("check", "tp", "-p", "chunks=1", "--no-liveness", "--ray",
                env={"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'lockstep[ray]'" in lines[0]


def test_actor_memory_needs_ray_and_a_size():
    r = run_cli("check", "tp", "-p", "chunks=1", "--actor-memory", "1G")
    assert r.returncode == 2 and "--ray" in r.stderr
    r = run_cli("check", "tp", "-p", "chunks=1", "--no-liveness", "--ray", "--actor-memory", "lots")
    assert r.returncode == 2 and "512M" in r.stderr and "Traceback" not in r.stderr


def _session_procs(sid: int) -> dict:
    """pid -> command line of every live (non-zombie) process in session ``sid``."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if int(rest[3]) != sid or rest[0] == "Z":
                continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                out[int(d)] = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            pass
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_sigterm_shuts_the_local_instance_down():
    pytest.importorskip("ray")
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-m", "lockstep", "check", "pp1", "-p", "mesh=3", "--no-reduction",
                          "--no-liveness", "--ray", "--workers", "2"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 150
        while time.time() < deadline and p.poll() is None:
            if sum("PartitionActor" in c for c in _session_procs(p.pid).values()) >= 2:
                break
            time.sleep(0.5)
        assert p.poll() is None, "the check ended before its actors were seen"
        assert len(_session_procs(p.pid)) > 3  # driver, gcs, raylet, actors, ...
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        deadline = time.time() + 30
        while _session_procs(p.pid) and time.time() < deadline:
            time.sleep(0.5)
        assert _session_procs(p.pid) == {}
        assert "Traceback" not in p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
        for pid in _session_procs(p.pid):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


class Boom:
    """A model whose successor function raises a SpecError at state 5."""

    name = "boom"

    def init_states(self):
        return [0]

    def successors(self, s):
        from lockstep.model.api import SpecError

        if s == 5:
            raise SpecError("boom.step", ValueError("no"))
        return [("inc", s + 1), ("inc2", s + 2)]

    def invariant(self, s):
        return None

    def classify_end(self, s):
        return None


@pytest.mark.slow
def test_spec_errors_in_an_actor_reach_the_caller(ray_local):
    from ray import cloudpickle

    from lockstep.model.api import SpecError
    from lockstep.model.ray_search import check_ray

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this test module
    try:
        with pytest.raises(SpecError, match="boom.step"):
            check_ray(Boom, workers=2)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.mark.slow
def test_a_new_ray_session_does_not_reuse_or_kill_by_stale_actor_ids(ray_local):
    # actors kept from one session must neither be reused nor killed by id in the next one (actor ids
    # repeat between clusters): a fresh session after a shutdown checks as usual
    import logging

    same_as_serial(SpecFactory("kv", None, SMALL["kv"]))
    ray_local.shutdown()
    ray_local.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    same_as_serial(SpecFactory("kv", "reset-drift", SMALL["kv"]))


TESTS = os.path.dirname(os.path.abspath(__file__))
GENERATED_SPEC = """import sys
sys.path.insert(0, {tests!r})
import protogen
from lockstep.spec.registry import SpecInfo

D = {d!r}
SPEC = SpecInfo(name="gen{seed}", description="a generated protocol", params={{}},
                build=lambda params, variant, backend: protogen.build(D), variants={{}})
"""


@pytest.mark.slow
def test_same_as_serial_on_generated_specs(ray_local, tmp_path):
    """The random protocol generator's honest specs (safety only), each as a spec file every actor
    loads: verdict, counts and counterexample identical to the serial search."""
    import random

    import protogen

    checked = 0
    for seed in range(1000):
        d = protogen.describe(protogen.random_pick(random.Random(seed)))
        if d["live"] or protogen.planted(d):
            continue
        f = tmp_path / f"gen{seed}_spec.py"
        f.write_text(GENERATED_SPEC.format(tests=TESTS, d=d, seed=seed))
        same_as_serial(SpecFactory(str(f)))
        checked += 1
        if checked == 25:
            break
    assert checked == 25
