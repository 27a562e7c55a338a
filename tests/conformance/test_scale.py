"""Conformance at deployment scale: the replay's partial-order reduction keeps a 9-rank pp1 run's cost
flat, a budget ends in INCONCLUSIVE (never DOES NOT CONFORM), and worlds the spec cannot model are
"not checkable" (exit 2), not a traceback."""
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockstep.cli.conform import conform
from lockstep.conformance import check, loader


def _cli(*args):
    return CliRunner().invoke(conform, [str(a) for a in args])


@pytest.mark.multirank
@pytest.mark.slow
def test_pp1_nine_ranks_hard_cut_conforms(real_run):
    """A real 9-rank pp1 world (mesh of 8, heads=8) with a hard cut: it conforms, quickly (the replay
    used to exhaust its budget here and call the clean run non-conforming)."""
    # PG timeouts long enough that 9 ranks on a loaded 2-core machine do not time out (a run that does
    # is not clean, and conform rightly rejects it against the fault-free spec)
    path = real_run("pp1", 9, **{"model.heads": 8}, chunks=12, hard_cut_at=6, dist_timeout_s=30.0, watchdog_s=45.0,
                    heartbeat_s=1.0)
    summary = json.loads((Path(path) / "summary.json").read_text())
    assert summary["ok"] and all(x["how"] == "clean" for x in summary["ranks"]), summary["problems"]
    t0 = time.perf_counter()
    r = _cli(path, "--json")
    took = time.perf_counter() - t0
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["verdict"] == "CONFORMS", out["replay"]["unexplained"][:2]
    assert out["params"]["mesh"] == 8 and out["params"]["hard_cuts"] == 1
    assert took < 5.0, took


@pytest.mark.multirank
@pytest.mark.slow
def test_tp_eight_ranks_hard_cut_conforms(real_run):
    """A real 8-rank tp world (heads=8) with a hard cut and heartbeats conforms against the spec whose
    workers observe their cache fields between chunks only (``observed_when``)."""
    path = real_run("tp", 8, **{"model.heads": 8}, chunks=6, hard_cut_at=3, dist_timeout_s=30.0, watchdog_s=45.0,
                    heartbeat_s=1.0)
    summary = json.loads((Path(path) / "summary.json").read_text())
    assert summary["ok"] and all(x["how"] == "clean" for x in summary["ranks"]), summary["problems"]
    r = _cli(path, "--json")
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["verdict"] == "CONFORMS", out["replay"]["unexplained"][:2]
    assert out["params"]["ranks"] == 8 and out["replay"]["explained"] == out["replay"]["observables"]


@pytest.mark.multirank
def test_budget_is_inconclusive_not_a_verdict(real_run):
    path = real_run("pp1", 3, chunks=3, hard_cut_at=2)
    r = _cli(path, "--budget", "20", "--json")
    out = json.loads(r.output)
    assert r.exit_code == 3 and out["verdict"] == "INCONCLUSIVE", r.output
    assert out["replay"]["budget_exhausted"] and 0 <= out["replay"]["explained"] < out["replay"]["observables"]
    text = _cli(path, "--budget", "20").output
    assert "INCONCLUSIVE: the search budget ended the replay" in text and "DOES NOT CONFORM" not in text


@pytest.mark.multirank
@pytest.mark.parametrize("topology,world", [("tp", 1), ("pp1", 2)])
def test_worlds_the_spec_cannot_model_are_not_checkable(real_run, topology, world):
    path = real_run(topology, world, chunks=2)
    r = _cli(path)
    assert r.exit_code == 2 and r.exception is None or isinstance(r.exception, SystemExit)
    assert r.output.count("\n") == 1 and "not checkable:" in r.output, r.output


@pytest.mark.multirank
def test_replay_uses_the_manifest_backend(real_run, monkeypatch):
    """The hardened replay is built on the manifest's backend profile, not always gloo."""
    run = loader.load(real_run("tp", 2, chunks=1))
    seen = []
    real = check.build_model

    def spy(spec, variant, params, backend="gloo"):
        seen.append(backend)
        return real(spec, variant, params, backend)

    monkeypatch.setattr(check, "build_model", spy)
    run.manifest["backend"] = "nccl"
    check.conform_run(run, check_variant=False)
    assert seen == ["nccl"]


def test_unexplained_events_that_say_the_same_are_one_entry():
    """16 ranks, 14 of them waiting in one broadcast behind the rank whose event the spec refused: the
    report lists the refusal and one entry for the 14 (ranks as runs), not 15 entries."""
    from types import SimpleNamespace

    from lockstep.conformance.report import _unexplained

    def u(rank, line, event, reasons=(), actor=None):
        return SimpleNamespace(rank=rank, actor=actor or f"rank{rank}", line=line, event=event, expected=["recv_mesh_meta"],
                               waiting_op="broadcast group=mesh", spec_state="WAIT_HEADER", ids={"call_id": 2},
                               enabled=[], guards=[], reasons=list(reasons))
    entries = [u(0, 73, "comm_enter recv meta_size", actor="rank0.comms")] + \
        [u(r, 218, "comm_enter broadcast meta_size") for r in range(2, 16) if r != 7] + \
        [u(7, 214, "phase_b_end", ["line 214: call_count_check: ids: kv_appended_at trace=2 spec=1"])]
    lines = _unexplained(entries)
    heads = [ln for ln in lines if not ln.startswith("      ")]
    assert heads == ["  rank 0 (rank0.comms) line 73: comm_enter recv meta_size",
                     "  ranks 2-6,8-15 line 218: comm_enter broadcast meta_size",
                     "  rank 7 (rank7) line 214: phase_b_end"]
    assert lines[-1] == "      refused: line 214: call_count_check: ids: kv_appended_at trace=2 spec=1"
    # two comms threads alike are named as such
    two = _unexplained([u(r, 9, "x", actor=f"rank{r}.comms") for r in (3, 4)])
    assert two[0] == "  ranks 3,4 (comms threads) line 9: x"
