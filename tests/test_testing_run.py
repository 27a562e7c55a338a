"""The run fixture's backends and launchers: ``auto`` picks gloo on a machine without one GPU per rank,
``nccl`` there is a clear NotEnoughGPUs (the fixture skips), and the torchrun launch path -- the one NCCL
worlds take -- runs a real gloo world that conforms, and kills a hung world at its deadline.  On a GPU
machine the only difference left is the backend string (bench/gpu_nccl_check.sh runs it on NCCL)."""
import json
import os
import time

import pytest

from lockstep import testing as T
from lockstep.conformance import schema as S
from lockstep.pytest_plugin import lockstep_run  # noqa: F401 - the plugin's fixture, also where it is not installed

pytest_plugins = ["pytester"]


def test_auto_picks_gloo_without_one_gpu_per_rank(monkeypatch):
    monkeypatch.setattr(T, "gpus", lambda: 0)
    assert T.pick_run_backend("auto", 1) == "gloo"
    monkeypatch.setattr(T, "gpus", lambda: 2)
    assert T.pick_run_backend("auto", 2) == "nccl"
    assert T.pick_run_backend("auto", 3) == "gloo"  # 3 ranks, 2 GPUs: not one per rank
    assert T.pick_run_backend("gloo", 2) == "gloo"


def test_auto_is_gloo_on_this_machine():
    """What this (CPU) machine has; on a GPU machine the answer follows torch.cuda."""
    want = "nccl" if T.gpus() >= 2 else "gloo"
    assert T.pick_run_backend("auto", 2) == want


def test_nccl_without_enough_gpus_is_a_usage_error_naming_both_counts(monkeypatch, tmp_path):
    monkeypatch.setattr(T, "gpus", lambda: 1)
    with pytest.raises(T.NotEnoughGPUs, match=r"a world of 2 needs 2, this machine has 1"):
        T.run_world("tp", tmp_path / "t", backend="nccl", world=2)
    assert not (tmp_path / "t").exists()  # refused before anything started
    with pytest.raises(T.UsageError, match="expected one of auto, gloo, nccl"):
        T.run_world("tp", tmp_path / "t", backend="mpi")
    with pytest.raises(T.UsageError, match="gloo only"):
        monkeypatch.setattr(T, "gpus", lambda: 2)
        T.run_world("tp", tmp_path / "t", backend="nccl", launcher="fork", world=2)


NCCL_TEST = '''
from lockstep.pytest_plugin import lockstep_run

def test_needs_gpus(lockstep_run):
    lockstep_run("tp", world=2, backend="nccl")
    raise AssertionError("no world should have started")
'''


def test_fixture_skips_an_nccl_world_without_gpus(pytester, monkeypatch):
    """The fixture SKIPS (the machine cannot run what the test asks for), naming both counts."""
    monkeypatch.setattr(T, "gpus", lambda: 0)
    pytester.makepyfile(test_nccl=NCCL_TEST)
    r = pytester.runpytest("-p", "no:lockstep", "-rs", "-q")
    r.assert_outcomes(skipped=1)
    r.stdout.fnmatch_lines(["*lockstep_run: backend='nccl' needs one GPU per rank: a world of 2 needs 2, this machine has 0*"])


@pytest.mark.multirank
@pytest.mark.slow  # torchrun + 2 ranks (~6 s)
def test_torchrun_world_through_the_fixture_conforms(lockstep_run):
    """The NCCL launch path, on gloo: torchrun, one process per rank, env:// rendezvous."""
    trace = lockstep_run("tp", world=2, chunks=2, backend="gloo", launcher="torchrun")
    run = S.load_run(trace)
    assert run.manifest["launcher"] == "torchrun" and run.manifest["backend"] == "gloo"
    summary = json.loads((trace / "summary.json").read_text())
    assert [r["how"] for r in summary["ranks"]] == ["clean", "clean"] and summary["ok"]
    assert [r["exit_code"] for r in summary["ranks"]] == [0, 0]
    assert "rank 0 ended clean" in (trace / "logs" / "torchrun.log").read_text()
    assert T.assert_conforms(trace).conforms


@pytest.mark.multirank
@pytest.mark.slow  # torchrun + 2 ranks, faulted (~8 s)
def test_torchrun_unsafe_world_is_an_instance_of_its_variant(lockstep_run):
    trace = lockstep_run("tp", world=2, chunks=3, fault="om-01", unsafe="fm04-throw-after-header", backend="gloo",
                         launcher="torchrun")
    T.assert_instance_of(trace, "fm04-throw-after-header")


def _processes_naming(text: str) -> list[int]:
    """Live processes whose command line mentions ``text`` (the torchrun agent and its ranks name the
    trace dir)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{p}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmd and state not in ("Z", "X"):
            out.append(int(p))
    return out


@pytest.mark.multirank
@pytest.mark.slow  # torchrun's start and the ranks' torch import take a few seconds
def test_sigterm_to_the_caller_kills_the_torchrun_world(tmp_path):
    """torchrun's workers run in sessions of their own: a SIGTERM to the process that called run_world
    (a CI job cancelled, ``timeout``) must not leave them running.  The caller kills the world, then
    dies by the SIGTERM as it would have."""
    import signal
    import subprocess
    import sys

    d = tmp_path / "term"
    code = ("from lockstep import testing as T; "
            f"T.run_world('tp', {str(d)!r}, fault='om-01', unsafe='fm04-throw-after-header', backend='gloo', "
            "launcher='torchrun', deadline_s=120, world=2, chunks=3, dist_timeout_s=120, watchdog_s=120)")
    p = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        t0 = time.monotonic()
        while len(_processes_naming(str(d))) < 3 and time.monotonic() - t0 < 60:  # the agent and two ranks
            time.sleep(0.2)
        assert len(_processes_naming(str(d))) >= 3, "the torchrun world never started"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == -signal.SIGTERM
        time.sleep(0.5)
        assert _processes_naming(str(d)) == [], "processes of the world outlived the SIGTERM"
    finally:
        if p.poll() is None:
            p.kill()
        for pid in _processes_naming(str(d)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.multirank
@pytest.mark.slow  # the world hangs until its 16 s deadline
def test_hung_torchrun_world_is_killed_at_the_deadline(tmp_path):
    """fm04's stranded worker waits in the meta broadcast for the PG timeout (120 s here) and rank 0
    holds as long: the launcher kills torchrun's agent and both workers (each in its own session) at
    16 s (torchrun's start and the ranks' torch import take ~5 s idle, more on a loaded machine),
    records their ``killed`` exits, and run_world fails naming the deadline.  No process of the world
    is left."""
    d = tmp_path / "hung"
    t0 = time.monotonic()
    with pytest.raises(T.ProtocolCheckFailed, match="deadline") as ei:
        T.run_world("tp", d, fault="om-01", unsafe="fm04-throw-after-header", backend="gloo", launcher="torchrun",
                    deadline_s=16, world=2, chunks=3, dist_timeout_s=120, watchdog_s=120)
    assert time.monotonic() - t0 < 31, "the world outlived its deadline"
    time.sleep(0.2)
    assert _processes_naming(str(d)) == [], "processes of the world are still running"
    if ei.value.result is None:  # so loaded a machine that the ranks never got as far as their traces
        assert "never started their trace" in ei.value.args[0] and "deadline hit" in ei.value.args[0]
        return
    assert ei.value.result.deadline_hit and "hit its 16 s deadline" in ei.value.args[0]
    run = S.load_run(d)
    for r in (0, 1):
        assert run.ranks[r].exit["how"] == "killed" and run.ranks[r].exit["by"] == "launcher"
    assert "DEADLINE HIT" in ei.value.args[0]
    assert os.path.exists(d / "summary.json")


@pytest.mark.multirank
@pytest.mark.slow  # torchrun + 3 ranks (~10-20 s)
def test_lockstep_run_cli_starts_torchrun_itself(tmp_path):
    """``lockstep run --launcher torchrun`` (the default for --backend nccl) starts the torchrun world
    from one command, under the same deadline, and prints the same summary (here on gloo)."""
    import subprocess
    import sys

    d = tmp_path / "t"
    p = subprocess.run([sys.executable, "-m", "lockstep", "run", "--topology", "pp1", "--launcher", "torchrun",
                        "-p", "chunks=2", "-p", "timeout=20", "--trace-dir", str(d), "--flight-recorder", str(tmp_path / "fr"),
                        "--json", "--deadline", "120"],
                       capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = json.loads(p.stdout)
    assert out["ok"] and [r["how"] for r in out["ranks"]] == ["clean"] * 3 and out["emitted"] == [0, 1]
    assert S.load_run(d).manifest["launcher"] == "torchrun"
    assert sorted(x.name for x in (tmp_path / "fr").iterdir()) == [f"lockstep_fr_rank_{r}" for r in range(3)]


def test_lockstep_run_cli_nccl_refusals(tmp_path):
    """Without one GPU per rank, --backend nccl is a one-line usage error (exit 2), whatever the launcher."""
    from click.testing import CliRunner

    from lockstep.cli.run import run

    for extra in ([], ["--launcher", "fork"], ["--launcher", "torchrun"]):
        r = CliRunner().invoke(run, ["--topology", "tp", "--backend", "nccl", "--trace-dir", str(tmp_path / "t"), *extra])
        if T.gpus() >= 2:
            pytest.skip("this machine has GPUs")
        assert r.exit_code == 2 and "needs one GPU per rank" in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "t").exists()


@pytest.mark.multirank
@pytest.mark.slow  # 3 forked ranks + the pp1 variants model-checked (~10 s)
def test_unsafe_p2p_run_is_its_variant_on_the_trace_and_on_the_flight_recorder(lockstep_run):
    """One --unsafe run whose planted bug strands a p2p receiver: the JSONL trace is an instance of
    result-throw-after-header, and so is the Flight Recorder dump beside it."""
    from lockstep.conformance import flight

    trace = lockstep_run("pp1", chunks=3, fault_at=1, unsafe="result-throw-after-header", flight_recorder=True)
    assert json.loads((trace / "summary.json").read_text())["ok"]  # the switch's documented signature
    T.assert_instance_of(trace, "result-throw-after-header")
    rep = flight.check_dir(trace / "fr")
    assert [m["variant"] for m in rep["spec_check"]["matches"]] == ["result-throw-after-header"], flight.render(rep)


def test_torchrun_ranks_import_the_same_lockstep(tmp_path):
    """The ranks torchrun starts get a PYTHONPATH under which a fresh interpreter imports the lockstep
    this process imported (a checkout on sys.path, not another copy installed elsewhere)."""
    import subprocess
    import sys

    import lockstep
    from lockstep.impl.launch import _same_lockstep_path

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = _same_lockstep_path("")
    p = subprocess.run([sys.executable, "-c", "import lockstep, os; print(os.path.abspath(lockstep.__path__[0]))"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == os.path.abspath(list(lockstep.__path__)[0])
    assert _same_lockstep_path(env["PYTHONPATH"]) == env["PYTHONPATH"]  # not added twice
