"""`lockstep run` (the click command in cli/run.py): a real run, usage errors with exit code 2,
the trace-dir refusal, JSON output and the Flight Recorder dump."""
import json

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
    (["--topology", "tp", "-p", "world=3"], "TP degree 3 does not divide the head count 4"),
    (["--topology", "tp", "-p", "nope=1"], "unknown parameter 'nope'"),
    (["--topology", "tp", "-p", "chunks"], "expected NAME=VALUE"),
    (["--topology", "tp", "--fault", "om-07"], "applies to topologies pp1"),
    (["--topology", "pp0", "-p", "world=3"], "world must be 2"),
    (["--topology", "tp", "--unsafe", "om09-no-epoch-fence"], "applies to topologies pp0, pp1"),
    (["--topology", "tp", "--backend", "nccl"], "nccl"),
    (["--topology", "tp", "--fault", "om-99"], "om-99"),
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
