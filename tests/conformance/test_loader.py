"""Trace schema v1 as conform loads it: bad input names file, line and field and exits 2; a truncated
last line of a crashed rank ends that rank's trace."""
import json
import shutil

import pytest
from click.testing import CliRunner

from lockstep.cli.conform import conform
from lockstep.conformance import loader


@pytest.fixture(scope="module")
def clean_tp(real_run):
    return real_run("tp", 2, chunks=2)


def _copy(src, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(src, d)
    return d


def _cli(*args):
    return CliRunner().invoke(conform, [str(a) for a in args])


@pytest.mark.multirank
def test_malformed_middle_line_names_file_line(clean_tp, tmp_path):
    d = _copy(clean_tp, tmp_path)
    p = d / "rank1.jsonl"
    lines = p.read_text().splitlines(keepends=True)
    lines[4] = lines[4][:20] + "\n"
    p.write_text("".join(lines))
    with pytest.raises(loader.BadInput) as e:
        loader.load(d)
    assert e.value.path.endswith("rank1.jsonl") and e.value.line == 5
    r = _cli(d)
    assert r.exit_code == 2 and "rank1.jsonl:5" in r.output


@pytest.mark.multirank
def test_missing_field_named(clean_tp, tmp_path):
    d = _copy(clean_tp, tmp_path)
    p = d / "rank0.jsonl"
    lines = p.read_text().splitlines()
    rec = json.loads(lines[2])
    assert rec["ev"] == "comm_enter"
    del rec["group"]
    lines[2] = json.dumps(rec)
    p.write_text("\n".join(lines) + "\n")
    r = _cli(d, "--json")
    assert r.exit_code == 2
    out = json.loads(r.output)
    assert out["verdict"] == "BAD_INPUT" and out["line"] == 3 and out["field"] == "group" and out["path"].endswith("rank0.jsonl")


@pytest.mark.multirank
def test_unknown_version_rejected(clean_tp, tmp_path):
    d = _copy(clean_tp, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["schema"] = 2
    (d / "manifest.json").write_text(json.dumps(m))
    r = _cli(d)
    assert r.exit_code == 2 and "manifest.json" in r.output and "'schema'" in r.output and "version 2" in r.output


@pytest.mark.multirank
def test_missing_rank_rejected(clean_tp, tmp_path):
    d = _copy(clean_tp, tmp_path)
    (d / "rank1.jsonl").unlink()
    r = _cli(d)
    assert r.exit_code == 2 and "rank1.jsonl" in r.output and "missing" in r.output


@pytest.mark.multirank
def test_rank_file_from_another_run(clean_tp, tmp_path):
    d = _copy(clean_tp, tmp_path)
    m = json.loads((d / "manifest.json").read_text())
    m["config_digest"] = "0000"
    (d / "manifest.json").write_text(json.dumps(m))
    r = _cli(d)
    assert r.exit_code == 2 and "config_digest" in r.output


@pytest.mark.multirank
def test_truncated_last_line_ends_the_rank(real_run, tmp_path):
    # a rank killed mid-write: cut the last line of a real killed run and check the trace still loads
    src = real_run("tp", 2, chunks=3, fault="om-13", fault_at=1, idle_s=0.5)
    d = _copy(src, tmp_path)
    p = d / "rank0.jsonl"
    data = p.read_bytes()
    p.write_bytes(data + b'{"ev":"comm_enter","rank":0,"i":')  # torn, no newline
    run = loader.load(d)
    assert run.ranks[0].truncated
    r = _cli(d)
    assert r.exit_code in (0, 1) and "cut off" in r.output


def test_not_a_directory(tmp_path):
    r = _cli(tmp_path / "nope")
    assert r.exit_code == 2 and "no such trace directory" in r.output
