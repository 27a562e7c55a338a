"""The run fixture on NCCL, as a GPU team's CI job uses it (run by bench/gpu_nccl_check.sh on a machine with
one GPU: an NCCL world of 1, launched through torchrun).

    python -m pytest bench/gpu_fixture_test.py -q                      # NCCL (needs one GPU)
    LOCKSTEP_FIXTURE_BACKEND=gloo python -m pytest bench/gpu_fixture_test.py -q   # the same path on CPU

Not part of lockstep's test suite (tests/ is): on a machine without a GPU, backend="nccl" skips.
"""
import json
import os

from lockstep import testing as T
from lockstep.conformance import flight
from lockstep.conformance import schema as S
from lockstep.pytest_plugin import lockstep_run  # noqa: F401 - the fixture, whether or not the plugin is installed

BACKEND = os.environ.get("LOCKSTEP_FIXTURE_BACKEND", "nccl")


def test_fixture_runs_a_world_of_one_through_torchrun(lockstep_run):
    trace = lockstep_run("tp", world=1, chunks=3, backend=BACKEND, launcher="torchrun", flight_recorder=True,
                         deadline_s=240)
    run = S.load_run(trace)
    assert run.manifest["backend"] == BACKEND and run.manifest["launcher"] == "torchrun"
    summary = json.loads((trace / "summary.json").read_text())
    assert summary["ok"] and [r["how"] for r in summary["ranks"]] == ["clean"], summary
    assert len(run.ranks[0].of(S.CHUNK_EMITTED)) == 3
    enters = run.ranks[0].of(S.COMM_ENTER)
    exits = [e for e in run.ranks[0].of(S.COMM_EXIT) if e["ok"]]
    assert enters and len(enters) == len(exits)  # every op recorded completed (on NCCL: after the stream synced)
    # the JSONL trace: CONFORMS, or "not checkable" (the tp spec models 2 ranks and more)
    try:
        assert T.assert_conforms(trace).conforms
    except T.NotCheckable as e:
        assert "not checkable" in str(e) and "world of 1" in str(e), e
    # the Flight Recorder dump: entries, all completed on NCCL, consistent, and of this run
    rep = flight.check_dir(trace / "fr")
    assert rep["verdict"] == "CONSISTENT", flight.render(rep)
    dump = flight.load_dump(trace / "fr" / "lockstep_fr_rank_0")
    assert dump["entries"] and dump["lockstep"]["run_id"] == run.manifest["run_id"]
    if BACKEND == "nccl":
        assert {e["state"] for e in dump["entries"]} == {"completed"}, {e["state"] for e in dump["entries"]}
    print(f"\n{BACKEND} world of 1 through the fixture: {summary['wall_s']} s, {len(enters)} comm ops, "
          f"{len(dump['entries'])} Flight Recorder entries")
