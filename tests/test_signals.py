"""Interrupting lockstep: SIGTERM/SIGINT/SIGKILL to a real `lockstep run` (forked gloo ranks) and to
`lockstep check --workers 2` leave no process behind; an interrupted run still writes its summary and
a `rank_exit` per rank; an interrupted check prints its statistics so far and exits 130.

Each command is started in a session of its own, so every process it starts, whatever process
group it moves to, is found by session id and killed in the cleanup if the test fails."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import alive, kill_session, session_members, wait_until
from lockstep.conformance import schema as S
from lockstep.model.procs import peak_rss_mb_of

def _default_sigint():
    # a test runner started in the background (`cmd &` in a script) passes SIGINT on as ignored, and
    # Python keeps an ignored SIGINT ignored: the command under test gets the terminal's default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lockstep", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=_default_sigint)


def _rank_pids(run_dir, world):
    pids = {}
    for r in range(world):
        p = run_dir / S.rank_file_name(r)
        if not p.exists():
            return None
        for line in p.read_text().splitlines():
            if '"rank_start"' in line:
                pids[r] = json.loads(line)["pid"]
    return pids if len(pids) == world else None


def _emitting(run_dir):
    p = run_dir / S.rank_file_name(0)
    return p.exists() and '"chunk_emitted"' in p.read_text()


@pytest.mark.multirank
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL], ids=lambda s: s.name)
def test_interrupted_run_leaves_no_rank(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = _start(["run", "--topology", "tp", "-p", "chunks=20000", "--trace-dir", str(run_dir)])
    try:
        assert wait_until(lambda: _emitting(run_dir), 90), "the run never emitted a chunk"
        ranks = _rank_pids(run_dir, 2)
        assert ranks and all(alive(p) for p in ranks.values())
        proc.send_signal(sig)
        # every rank ends within the launcher's grace period (3 s) plus scheduling slack on a loaded machine
        assert wait_until(lambda: not any(alive(p) for p in ranks.values()), 15), "ranks outlived the interrupt"
        out, err = proc.communicate(timeout=60)
        gone = wait_until(lambda: not session_members(proc.pid), 5)
        assert gone, f"processes left behind: {session_members(proc.pid)}"
        assert not any(alive(p) for p in ranks.values())
        if sig == signal.SIGKILL:  # the launcher died outright; its ranks die with it
            return
        assert proc.returncode == 130, (out, err)
        assert f"INTERRUPTED by {sig.name}" in out
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["interrupted"] is True and summary["signal"] == sig.name and summary["ok"] is False
        run = S.load_run(run_dir)
        for r in range(2):
            last = run.ranks[r].events[-1]
            assert last["ev"] == S.RANK_EXIT and last["how"] == "interrupted", last
        assert len(summary["emitted"]) + len(summary["dropped"]) + len(summary["lost"]) == 20000
    finally:
        kill_session(proc.pid)
        proc.kill()
        proc.wait()


CHECK = ["check", "pp1", "-p", "mesh=8", "--no-liveness"]


@pytest.mark.slow
def test_sigterm_to_check_workers_leaves_no_worker(tmp_path):
    proc = _start([*CHECK, "--workers", "2", "--json"])
    try:
        assert wait_until(lambda: len(session_members(proc.pid)) >= 3, 60), "the workers never started"
        workers = [p for p in session_members(proc.pid) if p != proc.pid]
        time.sleep(1.5)  # let the search run a little
        workers_peak = sum(peak_rss_mb_of(p) for p in workers)  # (a peak only grows)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert wait_until(lambda: not session_members(proc.pid), 5), session_members(proc.pid)
        assert not any(alive(p) for p in workers)
        res = json.loads(out)
        assert res["verdict"] == "INTERRUPTED" and "SIGTERM" in res["message"]
        assert res["states"] > 0 and res["seconds"] > 0
        # the peak RSS counts the killed workers' too (read before they were killed), not the coordinator's alone
        assert workers_peak > 0 and res["peak_rss_mb"] >= workers_peak, (res["peak_rss_mb"], workers_peak)
    finally:
        kill_session(proc.pid)
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigint_to_check_prints_partial_statistics(tmp_path):
    proc = _start(CHECK)
    try:
        time.sleep(3.0)  # model built, the search under way
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (out, err)
        assert "verdict: INTERRUPTED" in out and "Traceback" not in err and "Aborted" not in err
        explored = [ln for ln in out.splitlines() if ln.startswith("explored ")]
        assert explored and int(explored[0].split()[1].replace(",", "")) > 0, out
    finally:
        kill_session(proc.pid)
        proc.kill()
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("as_json", [False, True])
def test_sigterm_to_a_cross_check_prints_partial_statistics(tmp_path, as_json):
    """Old: `check --cross-check` installed no handler, so SIGTERM ended it at once with exit 143 and
    nothing printed (`timeout 300 lockstep check ... --cross-check` left an empty file).  Now: exit 130
    with the statistics so far, as a plain check."""
    proc = _start(["check", "pp1", "-p", "mesh=4", "--no-liveness", "--cross-check"] + (["--json"] if as_json else []))
    try:
        time.sleep(4.0)  # the reduced search is done, the unreduced one under way
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (out, err)
        if as_json:
            res = json.loads(out)
            assert res["verdict"] == "INTERRUPTED" and res["states"] > 0
        else:
            assert "verdict: INTERRUPTED" in out and "nothing was compared" in out, out
        assert wait_until(lambda: not session_members(proc.pid), 5), session_members(proc.pid)
    finally:
        kill_session(proc.pid)
        proc.kill()
        proc.wait()


@pytest.mark.multirank
@pytest.mark.slow
def test_flight_recorder_dumps_of_an_interrupted_run_are_inconclusive(tmp_path):
    """Dumps written as an interrupted run ended hold the ops it was stopped in.  Old: `conform
    --flight-recorder` read those as a hang or a mismatch (exit 1), or as CONSISTENT (exit 0).  Now
    each dump says the rank was interrupted, and the summary beside says the run was: INCONCLUSIVE (3),
    with the dump folder on its own too."""
    import shutil

    run_dir = tmp_path / "run"
    proc = _start(["run", "--topology", "tp", "-p", "chunks=20000", "--trace-dir", str(run_dir),
                   "--flight-recorder", str(run_dir / "fr")])
    try:
        assert wait_until(lambda: _emitting(run_dir), 90), "the run never emitted a chunk"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert proc.returncode == 130
        alone = shutil.copytree(run_dir / "fr", tmp_path / "fr-alone")  # no summary.json beside it
        for d, why in ((run_dir / "fr", "ranks 0,1 dumped"), (alone, "ranks 0,1 dumped")):
            p = subprocess.run([sys.executable, "-m", "lockstep", "conform", "--flight-recorder", str(d)],
                               capture_output=True, text=True, timeout=120)
            assert p.returncode == 3, (p.stdout, p.stderr)
            assert f"INCONCLUSIVE: the run was interrupted ({why})" in p.stdout, p.stdout
    finally:
        kill_session(proc.pid)


def test_a_parallel_check_removes_the_scratch_of_a_killed_one():
    """SIGKILL gives a `--workers` check no chance to remove its scratch folder in /dev/shm.  Old:
    it stayed (2.8 MB for a small search) until reboot.  Now the folders are named after their
    search's process, and the next parallel search removes those whose process is gone."""
    from lockstep.model import parallel

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import tempfile
    where = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
    stale = os.path.join(where, f"lockstep-par-{dead.pid}-killed")
    os.makedirs(stale)
    with open(os.path.join(stale, "rows"), "wb") as f:
        f.write(b"x" * 1000)
    mine = parallel._shm_dir()  # the next search's
    try:
        assert not os.path.exists(stale) and os.path.isdir(mine)
    finally:
        import shutil
        shutil.rmtree(mine, ignore_errors=True)
