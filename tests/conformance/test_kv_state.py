"""The KV-cache state a recorded run's mesh ranks report is checked against the spec's lifecycle: a rank
whose cache diverged (a Franken rank) does not conform, at its own Phase B, naming the field."""
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from lockstep.cli.conform import conform


def _cli(*args):
    return CliRunner().invoke(conform, [str(a) for a in args])


def _with_rank_cache_advance(src: str, dst: Path, rank: int, nth: int, change) -> None:
    """A copy of run ``src`` whose rank's ``nth`` cache_advance record is changed by ``change``."""
    shutil.copytree(src, dst)
    f = dst / f"rank{rank}.jsonl"
    lines = f.read_text().splitlines()
    seen = 0
    for k, ln in enumerate(lines):
        e = json.loads(ln)
        if e["ev"] == "cache_advance":
            seen += 1
            if seen == nth:
                change(e)
                lines[k] = json.dumps(e, separators=(",", ":"))
                break
    else:
        raise AssertionError(f"rank {rank} has fewer than {nth} cache_advance records")
    f.write_text("\n".join(lines) + "\n")


@pytest.mark.multirank
def test_a_mesh_rank_whose_cache_diverged_does_not_conform(real_run, tmp_path):
    path = real_run("pp1", 3, chunks=4, hard_cut_at=2)
    assert _cli(path).exit_code == 0  # the run as recorded conforms

    def derived_own_start(e):  # appended one chunk further on, as a rank deriving its own start frame would
        fpc = e["next_start_frame"] - e["start_frame"]
        tokens = e["end_index_global"] // e["next_start_frame"] * fpc
        e.update(start_frame=e["start_frame"] + fpc, next_start_frame=e["next_start_frame"] + fpc,
                 end_index_global=e["end_index_global"] + tokens)

    _with_rank_cache_advance(path, tmp_path / "franken", 2, 2, derived_own_start)
    r = _cli(tmp_path / "franken")
    assert r.exit_code == 1 and "DOES NOT CONFORM" in r.output, r.output
    assert "call_count_check: ids: kv_appended_at trace=2 spec=1, kv_start_frame trace=3 spec=2, kv_global_end trace=3 spec=2" \
        in r.output, r.output

    # the streamed check (long traces) reads the same records the same way
    from lockstep.conformance.check import conform_dir
    assert [conform_dir(d, stream=True).verdict for d in (path, tmp_path / "franken")] == ["CONFORMS", "DOES_NOT_CONFORM"]

    _with_rank_cache_advance(path, tmp_path / "epoch", 1, 1, lambda e: e.update(cache_epoch=e["cache_epoch"] + 1))
    r = _cli(tmp_path / "epoch")
    assert r.exit_code == 1 and "kv_epoch trace=1 spec=0" in r.output, r.output


@pytest.mark.multirank
def test_a_clean_run_with_another_cache_geometry_conforms(real_run):
    """A ring of 6 latent frames with a recompute chunk: the impl's position inside the ring follows its
    recompute (16 tokens after 3 chunks, then 24, then 16), which the spec does not model; the timeline
    positions it checks still agree, and the clean run conforms."""
    path = real_run("pp1", 3, chunks=5, **{"model.cache_frames": 6})
    r = _cli(path, "--json")
    out = json.loads(r.output)
    assert r.exit_code == 0 and out["verdict"] == "CONFORMS", out["replay"]["unexplained"][:2]
    recs = [json.loads(ln) for ln in (Path(path) / "rank2.jsonl").read_text().splitlines() if '"cache_advance"' in ln]
    assert [e["end_index_global"] for e in recs] == [8, 16, 24, 32, 40]
    assert [e["end_index_local"] for e in recs] == [8, 16, 16, 24, 16]


@pytest.mark.multirank
def test_a_tp_rank_that_missed_the_hard_cut_does_not_conform(real_run, tmp_path):
    """TP: the spec tracks each rank's start frame (the chunk it appends at) and cache epoch; a worker
    whose first chunk after the hard cut is appended where the old epoch left off does not conform."""
    path = real_run("tp", 2, chunks=4, hard_cut_at=2)
    assert _cli(path).exit_code == 0

    def missed_cut(e):
        fpc = e["next_start_frame"] - e["start_frame"]
        e.update(start_frame=e["start_frame"] + 2 * fpc, next_start_frame=e["next_start_frame"] + 2 * fpc)

    _with_rank_cache_advance(path, tmp_path / "missed", 1, 3, missed_cut)
    r = _cli(tmp_path / "missed")
    assert r.exit_code == 1 and "call_count_check: ids: kv_appended_at trace=2 spec=0" in r.output, r.output
