"""`lockstep run` (the click command in cli/run.py): a real run, usage errors with exit code 2,
the trace-dir refusal, JSON output and the Flight Recorder dump."""
import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lockstep.cli.run import run
from lockstep.conformance.flight import load_dump
from lockstep.conformance import schema as S


def _invoke(*args):
    return CliRunner().invoke(run, list(args), catch_exceptions=False)


@pytest.mark.multirank
def test_run_pp1_clean_with_summary(tmp_path):
    d = tmp_path / "t"
    r = _invoke("--topology", "pp1", "-p", "chunks=5", "-p", "hard_cut_at=3", "-p", "timeout=3", "--trace-dir", str(d))
    assert r.exit_code == 0, r.output
    assert "chunks emitted:" in r.output and "rank 2 (mesh_worker): clean" in r.output
    run_ = S.load_run(d)
    assert run_.manifest["groups"] == {"world": [0, 1, 2], "mesh": [1, 2]}


@pytest.mark.multirank
def test_run_fault_json_and_refuses_nonempty_dir(tmp_path):
    d = tmp_path / "t"
    r = _invoke("--topology", "tp", "--fault", "om-03", "-p", "chunks=3", "-p", "timeout=3", "--json", "--trace-dir", str(d))
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["ok"] and out["dropped"]["1"].startswith("preflight_fail:validate:expected_generator_calls")
    (d / "notes.txt").write_text("mine")
    r = _invoke("--topology", "tp", "--trace-dir", str(d))
    assert r.exit_code == 2 and "not empty" in r.output and "--force" in r.output
    r = _invoke("--topology", "tp", "-p", "chunks=2", "-p", "timeout=3", "--force", "--trace-dir", str(d))
    assert r.exit_code == 0, r.output
    assert (d / "notes.txt").read_text() == "mine"  # --force replaces only lockstep's own files


@pytest.mark.parametrize("args,needle", [
    (["--topology", "tp", "-p", "world=3"], "TP degree 3 does not divide the head count 4 (topology tp, world 3); "
                                            "try -p heads=6 -p dim=48"),
    (["--topology", "pp1", "-p", "world=9"], "TP degree 8 does not divide the head count 4 (topology pp1, world 9); "
                                             "try -p heads=8\n"),
    (["--topology", "tp", "-p", "nope=1"], "unknown parameter 'nope'"),
    (["--topology", "tp", "-p", "chunks"], "expected NAME=VALUE"),
    (["--topology", "tp", "--fault", "om-07"], "applies to topologies pp1"),
    (["--topology", "pp0", "-p", "world=3"], "world must be 2"),
    (["--topology", "tp", "--unsafe", "om09-no-epoch-fence"], "applies to topologies pp0, pp1"),
    (["--topology", "tp", "--backend", "nccl"], "nccl"),
    (["--topology", "tp", "--fault", "om-99"], "om-99"),
    # sizes that would fork a process per rank, or allocate the weights, until the machine runs out of memory
    (["--topology", "tp", "-p", "world=100000"], "world 100000 is above 64"),
    (["--topology", "tp", "-p", "dim=100000", "-p", "heads=4"], "GiB of weights per rank"),
    (["--topology", "tp", "-p", "fault_rank=7"], "fault_rank 7 is not a rank of this world (0..1"),
    (["--topology", "tp", "-p", "chunks=3", "-p", "hard_cut_at=99"], "hard_cut_at 99 is not a chunk of this run"),
    (["--topology", "tp", "-p", "timeout=nan"], "expected a finite number"),
    (["--topology", "tp", "--deadline", "nan"], "not a finite number of seconds"),
    (["--topology", "tp", "-p", "chunks=2", "-p", "chunks=3"], "-p chunks given twice"),
])
def test_usage_errors_exit_2(tmp_path, args, needle):
    r = _invoke(*args, "--trace-dir", str(tmp_path / "t"))
    assert r.exit_code == 2, r.output
    assert needle in r.output


@pytest.mark.multirank
def test_flight_recorder_dump(tmp_path):
    fr = tmp_path / "fr"
    r = _invoke("--topology", "pp1", "-p", "chunks=2", "-p", "timeout=3", "--flight-recorder", str(fr),
                "--trace-dir", str(tmp_path / "t"))
    assert r.exit_code == 0, r.output
    for rank in range(3):
        dump = load_dump(fr / f"lockstep_fr_rank_{rank}")  # the <prefix><rank> name torch's fr_trace reads
        descs = {v["desc"]: v["ranks"] for v in dump["pg_config"].values()}
        assert descs.get("world") == "[0, 1, 2]"
        if rank > 0:
            assert descs.get("mesh") == "[1, 2]"
            assert dump["entries"], "the mesh ranks ran collectives"


@pytest.mark.multirank
def test_flight_recorder_inside_the_trace_dir(tmp_path):
    """`--trace-dir D --flight-recorder D/fr` on a fresh D.  Old: the dump folder was made first, and
    then D was refused as "exists and is not empty" (exit 2), leaving D/fr behind."""
    d = tmp_path / "t"
    r = _invoke("--topology", "tp", "-p", "chunks=1", "--trace-dir", str(d), "--flight-recorder", str(d / "fr"))
    assert r.exit_code == 0, r.output
    assert (d / "rank0.jsonl").is_file() and len(list((d / "fr").iterdir())) == 2


@pytest.mark.parametrize("which", ["fr", "trace"])
def test_a_refused_run_leaves_no_folder_behind(tmp_path, which):
    """A non-empty folder of the user's refuses the run; the other folder, which did not exist, is not
    made.  Old: `--trace-dir new --flight-recorder busy` left an empty `new` behind."""
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine").write_text("x")
    new = tmp_path / "new"
    args = ["--trace-dir", str(new), "--flight-recorder", str(busy)] if which == "fr" else \
        ["--trace-dir", str(busy), "--flight-recorder", str(new)]
    r = _invoke("--topology", "tp", *args)
    assert r.exit_code == 2 and "exists and is not empty" in r.output, r.output
    assert not new.exists() and (busy / "mine").read_text() == "x"


def _a_file(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("not a directory")
    return f


@pytest.mark.parametrize("opt,where,needle", [
    ("--trace-dir", "under-file", "which is a file"),
    ("--trace-dir", "/proc", "cannot write there"),
    ("--trace-dir", "unwritable", "cannot write there (permission denied)"),
    ("--flight-recorder", "under-file", "which is a file"),
    ("--flight-recorder", "/proc", "cannot write there"),
])
def test_unusable_paths_one_line_exit_2(tmp_path, opt, where, needle):
    """Checked before any rank starts: exit 2 and one line naming the option and the path."""
    if where == "unwritable":
        if os.geteuid() == 0:
            pytest.skip("root writes anywhere")
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        path = ro / "t"
    else:
        path = _a_file(tmp_path) / "t" if where == "under-file" else f"/proc/lockstep-{os.getpid()}/t"
    paths = {"--trace-dir": str(tmp_path / "ok"), opt: str(path)}
    r = CliRunner().invoke(run, ["--topology", "tp", *[x for kv in paths.items() for x in kv]])
    assert r.exit_code == 2, r.output
    assert isinstance(r.exception, SystemExit)  # a usage error, not an escaped OSError
    err = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and opt in err[0] and str(path) in err[0] and needle in err[0], r.output
    assert not (tmp_path / "ok" / "manifest.json").exists()  # nothing started


def test_negative_deadline_is_refused(tmp_path):
    r = _invoke("--topology", "tp", "--deadline", "-1", "--trace-dir", str(tmp_path / "t"))
    assert r.exit_code == 2 and "--deadline" in r.output and "x>0" in r.output


def test_without_torch_one_line_with_the_install_command(tmp_path):
    """A machine without torch: no ModuleNotFoundError, the exact install commands (exit 2)."""
    code = ("import sys; sys.modules['torch'] = None\n"
            "from lockstep.cli.main import main\n"
            f"sys.argv = ['lockstep', 'run', '--topology', 'tp', '--trace-dir', {str(tmp_path / 't')!r}]\n"
            "main()")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert "pip install 'lockstep[impl]'" in p.stderr
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in p.stderr
    assert not (tmp_path / "t").exists()


def test_run_help_states_exit_codes():
    out = CliRunner().invoke(run, ["--help"]).output
    assert "Exit status: 0" in out and "130 interrupted" in out


def test_long_run_summary_lists_chunks_as_ranges():
    """A killed 2,000-chunk run: chunk lists are ranges and drops are grouped by reason, not 2,000 lines."""
    from lockstep.impl.config import RunConfig
    from lockstep.impl.launch import RankOutcome, RunSummary, ranges

    assert ranges([]) == "" and ranges([3]) == "3" and ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"
    cfg = RunConfig(topology="tp", world=2).with_(chunks=2000)
    s = RunSummary("d", cfg, [RankOutcome(0, "tp_rank0", "interrupted", "SIGTERM received")], list(range(60)),
                   {k: "aborted: Interrupted" for k in range(61, 1990)}, [60, *range(1990, 2000)], 9.9,
                   interrupted="SIGTERM")
    text = s.render()
    assert len(text.splitlines()) < 15, text
    assert "chunks emitted: 60/2000 0-59" in text
    assert "chunks 61-1989: aborted: Interrupted" in text
    assert "11 [60, 1990-1999]" in text and "INTERRUPTED by SIGTERM" in text
    assert s.to_dict()["interrupted"] is True and not s.ok
