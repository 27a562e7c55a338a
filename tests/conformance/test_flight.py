"""Flight Recorder dumps: real gloo dumps from `lockstep run --flight-recorder` (pg_config rebuilt),
hand-built NCCL-format dumps for the fields gloo leaves empty, and the restricted unpickler."""
import json
import pickle

import pytest
from click.testing import CliRunner

from lockstep.cli.conform import conform
from lockstep.conformance import flight, loader


@pytest.fixture(scope="module")
def fr_dumps(tmp_path_factory, fast_config):
    from lockstep.impl.config import RunConfig
    from lockstep.impl.launch import launch_local, resolve_config

    FAST, DEADLINE = fast_config
    out = {}
    for name, kw in {"clean": {"chunks": 1}, "om07": {"chunks": 3, "fault": "om-07", "unsafe": "om07-leader-throws"}}.items():
        base = tmp_path_factory.mktemp(f"fr-{name}")
        cfg = resolve_config(RunConfig(topology="pp1", world=3).with_(**{**FAST, **kw}))
        s = launch_local(cfg, base / "run", deadline_s=DEADLINE, fr_dir=base / "fr")
        assert not s.deadline_hit
        out[name] = base / "fr"
    return out


def _cli(*args):
    return CliRunner().invoke(conform, [str(a) for a in args])


def test_real_clean_dumps_consistent(fr_dumps):
    r = _cli("--flight-recorder", fr_dumps["clean"], "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert set(rep["groups"]) == {"world", "mesh"}
    assert rep["groups"]["mesh"]["members"] == [1, 2]
    assert rep["groups"]["mesh"]["reached"]["1"] == rep["groups"]["mesh"]["reached"]["2"] > 0
    assert all(v.startswith("2.") for v in rep["versions"])


def test_real_unsafe_om07_dumps_stranded(fr_dumps):
    r = _cli("--flight-recorder", fr_dumps["om07"])
    assert r.exit_code == 1
    assert "first mismatch" in r.output and "missing ranks [1]" in r.output and "STRANDED" in r.output


def test_real_om07_dump_matches_exactly_its_spec_counterexample(fr_dumps):
    """The collective projection of the recorded hang (rank 2 entered a mesh broadcast inside an envelope,
    the leader never did) equals the end of exactly one pp1 counterexample: om07-leader-throws.  Variants
    whose worker waits in a header broadcast (om13, queue-no-drain) end differently."""
    rep = json.loads(_cli("--flight-recorder", fr_dumps["om07"], "--json").output)
    sc = rep["spec_check"]
    assert sc["spec"] == "pp1" and sc["world"] == 3
    assert sc["projection"] == [{"kind": "missing_ranks", "group": "mesh", "op": ["broadcast"], "present": [2],
                                 "missing": [1], "at": ["inside"]}]
    assert [m["variant"] for m in sc["matches"]] == ["om07-leader-throws"]
    assert sc["matches"][0]["verdict"] == "STRANDED"


def test_clean_dump_has_nothing_to_explain(fr_dumps):
    rep = json.loads(_cli("--flight-recorder", fr_dumps["clean"], "--json").output)
    assert rep["spec_check"]["projection"] == [] and rep["spec_check"]["matches"] == []


def test_gloo_empty_pg_config_rebuilt(fr_dumps, tmp_path):
    # a gloo dump as torch writes it without lockstep's rebuild: empty ranks; the manifest beside it fills them
    d = tmp_path / "fr"
    d.mkdir()
    for p in fr_dumps["clean"].iterdir():
        dd = flight.load_dump(p)
        for cfg in dd["pg_config"].values():
            cfg["ranks"] = "[]"
        (d / p.name).write_bytes(pickle.dumps(dd))
    (tmp_path / "manifest.json").write_text(json.dumps({"groups": {"world": [0, 1, 2], "mesh": [1, 2]}}))
    rep = flight.check_dir(d)
    assert rep["groups"]["mesh"]["members"] == [1, 2] and rep["groups"]["world"]["members"] == [0, 1, 2]


def _nccl_entry(seq, op="all_reduce", sizes=((4, 8),), dtypes=("Float",), pg=("1", "mesh")):
    return {"record_id": seq, "pg_id": int(pg[0]), "process_group": list(pg), "collective_seq_id": seq, "p2p_seq_id": 0,
            "op_id": seq, "is_p2p": False, "profiling_name": f"nccl:{op}", "input_sizes": [list(s) for s in sizes],
            "output_sizes": [list(s) for s in sizes], "input_dtypes": list(dtypes), "output_dtypes": list(dtypes),
            "state": "completed", "retired": True, "time_created_ns": 1, "time_discovered_started_ns": 2,
            "time_discovered_completed_ns": 3, "duration_ms": 0.1, "timeout_ms": 600000, "frames": [], "thread_id": "1",
            "thread_name": "x"}


def _nccl_dump(entries, version="2.4"):
    return {"version": version, "comm_lib_version": "2.21.5", "pg_config": {"1": {"name": "1", "desc": "mesh", "ranks": "[1, 2]"}},
            "pg_status": {}, "entries": entries}


@pytest.mark.parametrize("fmt", ["pkl", "json"])
@pytest.mark.parametrize("kind,bad,expect", [
    ("size", _nccl_entry(2, sizes=((4, 9),)), "size"),
    ("dtype", _nccl_entry(2, dtypes=("BFloat16",)), "dtype"),
    ("type", _nccl_entry(2, op="broadcast"), "type"),
])
def test_hand_built_nccl_mismatch(tmp_path, fmt, kind, bad, expect):
    good = [_nccl_entry(1), _nccl_entry(2)]
    for r, entries in ((1, good), (2, [_nccl_entry(1), bad])):
        data = _nccl_dump(entries)
        p = tmp_path / f"rank{r}.{fmt}"
        p.write_bytes(pickle.dumps(data) if fmt == "pkl" else json.dumps(data).encode())
    rep = flight.check_dir(tmp_path)
    fm = rep["groups"]["mesh"]["first_mismatch"]
    assert fm["seq"] == 2 and fm["kind"] == expect
    assert rep["verdicts"][0]["verdict"] == "COLLECTIVE_MISMATCH"


def test_missing_rank_names_seq(tmp_path):
    (tmp_path / "rank1.pkl").write_bytes(pickle.dumps(_nccl_dump([_nccl_entry(1), _nccl_entry(2), _nccl_entry(3)])))
    (tmp_path / "rank2.pkl").write_bytes(pickle.dumps(_nccl_dump([_nccl_entry(1)])))
    rep = flight.check_dir(tmp_path)
    g = rep["groups"]["mesh"]
    assert g["reached"] == {"1": 3, "2": 1} and g["first_mismatch"]["missing"] == [2] and g["first_mismatch"]["seq"] == 2


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_restricted_unpickler_refuses_globals(tmp_path):
    (tmp_path / "rank0.pkl").write_bytes(pickle.dumps({"version": "2.4", "entries": [], "x": _Evil()}))
    r = _cli("--flight-recorder", tmp_path)
    assert r.exit_code == 2 and "not allowed" in r.output and "pwned" not in r.output


def test_unknown_version_refused(tmp_path):
    (tmp_path / "rank0.json").write_text(json.dumps(_nccl_dump([], version="3.0")))
    with pytest.raises(loader.BadInput, match="version"):
        flight.check_dir(tmp_path)
