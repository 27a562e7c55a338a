"""Flight Recorder dumps: real gloo dumps from `lockstep run --flight-recorder` (pg_config rebuilt),
hand-built NCCL-format dumps for the fields gloo leaves empty, and the restricted unpickler."""
import json
import pickle
import sys

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
    for name, kw in {"clean": {"chunks": 1}, "om07": {"chunks": 3, "fault": "om-07", "unsafe": "om07-leader-throws"},
                     "om13": {"chunks": 3, "fault": "om-13"},
                     "result-throw": {"chunks": 3, "fault_at": 1, "unsafe": "result-throw-after-header"}}.items():
        base = tmp_path_factory.mktemp(f"fr-{name}")
        cfg = resolve_config(RunConfig(topology="pp1", world=3).with_(**{**FAST, **kw}))
        s = launch_local(cfg, base / "run", deadline_s=DEADLINE, fr_dir=base / "fr")
        assert not s.deadline_hit
        out[name] = base / "fr"
    return out


def _cli(*args):
    return CliRunner().invoke(conform, [str(a) for a in args])


@pytest.mark.multirank
@pytest.mark.slow  # starts the module's four real worlds (~15 s)
def test_real_clean_dumps_consistent(fr_dumps):
    r = _cli("--flight-recorder", fr_dumps["clean"], "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert set(rep["groups"]) == {"world", "mesh"}
    assert rep["groups"]["mesh"]["members"] == [1, 2]
    assert rep["groups"]["mesh"]["reached"]["1"] == rep["groups"]["mesh"]["reached"]["2"] > 0
    assert all(v.startswith("2.") for v in rep["versions"])


@pytest.mark.multirank
@pytest.mark.slow  # model-checks the pp1 variants once (~5-13 s)
def test_real_unsafe_om07_dumps_stranded(fr_dumps):
    r = _cli("--flight-recorder", fr_dumps["om07"])
    assert r.exit_code == 1
    assert "first mismatch" in r.output and "missing rank 1)" in r.output and "STRANDED" in r.output


@pytest.mark.multirank
def test_real_om07_dump_matches_exactly_its_spec_counterexample(fr_dumps):
    """The collective projection of the recorded hang (rank 2 entered a mesh broadcast inside an envelope,
    the leader never did) equals the end of exactly one pp1 counterexample: om07-leader-throws.  Variants
    whose worker waits in a header broadcast (om13, queue-no-drain) end differently."""
    rep = json.loads(_cli("--flight-recorder", fr_dumps["om07"], "--json").output)
    sc = rep["spec_check"]
    assert sc["spec"] == "pp1" and sc["world"] == 3
    assert sc["projection"] == [{"kind": "missing_ranks", "group": "mesh", "op": ["broadcast"], "present": [2],
                                 "missing": [1], "at": ["inside"], "sig": ["int64", [1]]}]
    assert [m["variant"] for m in sc["matches"]] == ["om07-leader-throws"]
    assert sc["matches"][0]["verdict"] == "STRANDED"


@pytest.mark.multirank
def test_clean_dump_has_nothing_to_explain(fr_dumps):
    rep = json.loads(_cli("--flight-recorder", fr_dumps["clean"], "--json").output)
    assert rep["spec_check"]["projection"] == [] and rep["spec_check"]["matches"] == []


@pytest.mark.multirank
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
    rep = flight.check_dir(tmp_path, allow_missing=True)  # rank 0 (not in the mesh) left no dump
    fm = rep["groups"]["mesh"]["first_mismatch"]
    assert fm["seq"] == 2 and fm["kind"] == expect
    assert rep["verdicts"][0]["verdict"] == "COLLECTIVE_MISMATCH"


def test_missing_rank_names_seq(tmp_path):
    (tmp_path / "rank1.pkl").write_bytes(pickle.dumps(_nccl_dump([_nccl_entry(1), _nccl_entry(2), _nccl_entry(3)])))
    (tmp_path / "rank2.pkl").write_bytes(pickle.dumps(_nccl_dump([_nccl_entry(1)])))
    rep = flight.check_dir(tmp_path, allow_missing=True)
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


# ------------------------------------------------------------------ issue-11 regressions
def _meta(entries, rank, world=3, run_id="run-a", **kw):
    d = _nccl_dump(entries, **kw)
    d["lockstep"] = {"run_id": run_id, "rank": rank, "world_size": world, "backend": "nccl"}
    d["rank"] = rank
    return d


def _put(tmp_path, rank, data, fmt="pkl"):
    p = tmp_path / (f"lockstep_fr_rank_{rank}" if fmt == "pkl" else f"lockstep_fr_rank_{rank}.json")
    p.write_bytes(pickle.dumps(data) if fmt == "pkl" else json.dumps(data).encode())


def _world_entry(seq):
    return _nccl_entry(seq, pg=("0", "default_pg"))


@pytest.mark.multirank
def test_real_dump_names_read_by_pytorch_analyzer(fr_dumps):
    """lockstep's dump names are <prefix><rank>: torch's own fr_trace infers the prefix and builds its DB."""
    fr_trace = pytest.importorskip("torch.distributed.flight_recorder.fr_trace")
    names = sorted(p.name for p in fr_dumps["clean"].iterdir())
    assert names == [f"lockstep_fr_rank_{r}" for r in range(3)]
    fr_trace.main([str(fr_dumps["clean"])])  # raises (ValueError/AssertionError) on names it cannot read


@pytest.mark.multirank
def test_real_dumps_carry_run_id_and_group_names(fr_dumps):
    dumps = [flight.load_dump(p) for p in sorted(fr_dumps["clean"].iterdir())]
    assert len({d["lockstep"]["run_id"] for d in dumps}) == 1 and dumps[0]["lockstep"]["run_id"]
    # new_group(..., group_desc=...): the dump's own pg descriptions name the groups, no rebuild needed
    descs = {e["process_group"][1] for d in dumps for e in d["entries"]}
    assert "mesh" in descs and "undefined" not in descs


def test_missing_dump_refused_naming_the_rank(tmp_path):
    for r in (1, 2):
        _put(tmp_path, r, _meta([_nccl_entry(1)], r))
    r = _cli("--flight-recorder", tmp_path)
    assert r.exit_code == 2 and "no dump of rank 0 " in r.output and r.output.count("\n") == 1, r.output
    r = _cli("--flight-recorder", tmp_path, "--allow-missing", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["missing_ranks"] == [0]


def test_dump_dir_given_as_a_trace_run_points_at_the_flight_recorder_option(tmp_path):
    """`lockstep conform DUMP_DIR` (the option forgotten) used to say only "manifest.json is missing"."""
    for r in (0, 1, 2):
        _put(tmp_path, r, _meta([_world_entry(1)], r))
    r = _cli(tmp_path)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert f"manifest.json is missing; {tmp_path} holds Flight Recorder dumps (" in r.output
    assert r.output.strip().endswith(f"lockstep conform --flight-recorder {tmp_path}"), r.output


def test_dumps_of_two_runs_refused(tmp_path):
    for r in (0, 1, 2):
        _put(tmp_path, r, _meta([_world_entry(1)], r, run_id="run-a" if r else "run-b"))
    r = _cli("--flight-recorder", tmp_path)
    assert r.exit_code == 2 and "different runs" in r.output, r.output


@pytest.mark.parametrize("ranks", ["[1, 7]", [1, -1]])
def test_pg_config_rank_outside_the_world_refused(tmp_path, ranks):
    """A group whose pg_config names a rank the world does not have: exit 2, one line naming the dump,
    the pg_config key and the rank (not a verdict about a group no rank could be in)."""
    for r in (0, 1, 2):
        d = _meta([_world_entry(1)], r)
        if r == 1:
            d["pg_config"]["1"]["ranks"] = ranks
        _put(tmp_path, r, d)
    r = _cli("--flight-recorder", tmp_path)
    bad = 7 if isinstance(ranks, str) else -1
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "lockstep_fr_rank_1: pg_config['1'] (group mesh) names rank " + str(bad) in r.output, r.output
    assert "outside the world of 3 ranks" in r.output, r.output
    if bad == 7:  # no world size anywhere: rank 7 makes a world of 8, and ranks 3-7 left no dump
        for r in (0, 1, 2):
            d = flight.load_dump(tmp_path / f"lockstep_fr_rank_{r}")
            del d["lockstep"]
            _put(tmp_path, r, d)
        r = _cli("--flight-recorder", tmp_path)
        assert r.exit_code == 2 and "no dump of ranks 3-7 (world of 8)" in r.output, r.output


def test_wrapped_ring_buffer_aligned_not_stranded(tmp_path):
    """Rank 1's ring buffer wrapped (it holds seq 50..60 only, record ids from 900); rank 2 holds 1..60:
    compared from seq 50, the dumps agree (lowest-seq alignment called this STRANDED)."""
    full = [_nccl_entry(s) for s in range(1, 61)]
    wrapped = [dict(_nccl_entry(s), record_id=900 + s) for s in range(50, 61)]
    _put(tmp_path, 0, _meta([], 0))
    _put(tmp_path, 1, _meta(wrapped, 1))
    _put(tmp_path, 2, _meta(full, 2))
    rep = flight.check_dir(tmp_path)
    assert rep["ok"] and rep["groups"]["mesh"]["compared_from"] == 50, rep["verdicts"]


def test_coalesced_ops_compared_not_overwritten(tmp_path):
    """Two entries of one collective seq (a coalesced op): the second differs in size on rank 2."""
    a = [_nccl_entry(1), _nccl_entry(1, sizes=((2, 2),))]
    b = [_nccl_entry(1), _nccl_entry(1, sizes=((3, 3),))]
    _put(tmp_path, 0, _meta([], 0))
    _put(tmp_path, 1, _meta(a, 1))
    _put(tmp_path, 2, _meta(b, 2))
    rep = flight.check_dir(tmp_path)
    assert rep["groups"]["mesh"]["first_mismatch"]["kind"] == "size" and not rep["ok"]


def test_nccl_state_pending_is_reported(tmp_path):
    """Every rank entered collective #2, rank 2's never completed (state started): where it is blocked."""
    _put(tmp_path, 0, _meta([], 0))
    _put(tmp_path, 1, _meta([_nccl_entry(1), _nccl_entry(2)], 1))
    _put(tmp_path, 2, _meta([_nccl_entry(1), dict(_nccl_entry(2), state="started")], 2))
    r = _cli("--flight-recorder", tmp_path, "--json")
    rep = json.loads(r.output)
    assert r.exit_code == 1 and rep["pending"]["2"]["state"] == "started" and rep["verdicts"][0]["verdict"] == "PENDING_OP"


def test_p2p_entries_read(tmp_path):
    p2p = dict(_nccl_entry(0, op="send"), is_p2p=True, p2p_seq_id=1, state="scheduled")
    _put(tmp_path, 0, _meta([p2p], 0))
    _put(tmp_path, 1, _meta([], 1))
    _put(tmp_path, 2, _meta([], 2))
    rep = flight.check_dir(tmp_path)
    assert rep["p2p"]["0"] == {"entries": 1, "last_p2p_seq": 1, "recorded_by": "torch"}
    assert rep["pending"]["0"]["p2p"] and not rep["ok"]


def test_empty_dumps_are_inconclusive(tmp_path):
    for r in (0, 1, 2):
        _put(tmp_path, r, _meta([], r))
    r = _cli("--flight-recorder", tmp_path)
    assert r.exit_code == 3 and "INCONCLUSIVE" in r.output and "CONSISTENT" not in r.output, r.output


def test_stuck_op_signature_picks_the_variant(tmp_path):
    """tp world 2: rank 1 entered a world broadcast of int64[1] (the meta size) that rank 0 never did:
    fm04-throw-after-header's end, not fm07's (a float32 broadcast)."""
    w = [_world_entry(1), dict(_world_entry(2), profiling_name="nccl:broadcast", input_sizes=[[1]], input_dtypes=["Long"])]
    d0 = _meta([_world_entry(1)], 0, world=2)
    d1 = _meta(w, 1, world=2)
    for d in (d0, d1):
        d["pg_config"] = {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1]"}}
    _put(tmp_path, 0, d0)
    _put(tmp_path, 1, d1)
    rep = json.loads(_cli("--flight-recorder", tmp_path, "--spec", "tp", "--json").output)
    assert [m["variant"] for m in rep["spec_check"]["matches"]] == ["fm04-throw-after-header"], rep["spec_check"]


def _deep(n):
    v = [1]
    for _ in range(n):
        v = [v]
    return v


@pytest.mark.parametrize("field,value", [("collective_seq_id", "one"), ("input_sizes", "not a list"), ("process_group", 42),
                                         ("input_dtypes", [1]), ("state", "exploded"), ("record_id", -3),
                                         # old: a traceback (an int of 5,000 digits has no str; nesting beyond
                                         # Python's stack has no repr)
                                         pytest.param("collective_seq_id", 10 ** 5000, id="collective_seq_id-huge"),
                                         pytest.param("input_sizes", _deep(5000), id="input_sizes-deep")])
@pytest.mark.parametrize("fmt", ["pkl", "json"])
def test_wrong_types_are_one_line_bad_input(tmp_path, field, value, fmt):
    if isinstance(value, int) and value > 1 << 63 or field == "input_sizes" and isinstance(value, list):
        if fmt == "json":
            pytest.skip("not JSON-encodable")
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(50_000)  # to pickle it (a hostile dump is made by other means)
        try:
            _put(tmp_path, 0, _meta([dict(_world_entry(1), **{field: value})], 0, world=1), fmt)
        finally:
            sys.setrecursionlimit(limit)
    else:
        _put(tmp_path, 0, _meta([dict(_world_entry(1), **{field: value})], 0, world=1), fmt)
    r = _cli("--flight-recorder", tmp_path)
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
    assert "entries[0]" in r.output and repr(field) in r.output and "lockstep_fr_rank_0" in r.output


def test_fr_dir_refused_when_not_empty(tmp_path):
    from lockstep.impl.launch import RunDirError, prepare_fr_dir
    (tmp_path / "lockstep_fr_rank_0").write_bytes(b"old run")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="--force"):
        prepare_fr_dir(tmp_path, force=False)
    prepare_fr_dir(tmp_path, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_size_mismatch_matches_only_signature_variants(tmp_path):
    """A size mismatch on world (same op kind on both ranks) is consistent with the variants whose calls
    differ in signature, not with those whose calls differ in kind (it used to match every one)."""
    b = lambda seq, sizes: dict(_world_entry(seq), profiling_name="nccl:broadcast", input_sizes=[list(sizes)], input_dtypes=["Long"])
    d0 = _meta([_world_entry(1), b(2, (5,))], 0, world=2)
    d1 = _meta([_world_entry(1), b(2, (1,))], 1, world=2)
    for d in (d0, d1):
        d["pg_config"] = {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1]"}}
    _put(tmp_path, 0, d0)
    _put(tmp_path, 1, d1)
    r = _cli("--flight-recorder", tmp_path, "--spec", "tp", "--json")
    assert r.exit_code == 1
    got = {m["variant"] for m in json.loads(r.output)["spec_check"]["matches"]}
    assert got and got <= {"fm08-adhoc-broadcast", "shutdown-race"}, got
    assert not got & {"fm01-plan-mismatch", "fm02-local-recompute", "fm03-conditional-collective"}
    text = _cli("--flight-recorder", tmp_path, "--spec", "tp").output
    assert ("is consistent with" in text) == (len(got) > 1) and ("is an instance of" in text) == (len(got) == 1)


@pytest.mark.multirank
@pytest.mark.slow
def test_real_wrapped_ring_buffer_is_consistent(tmp_path, fast_config):
    """A clean 60-chunk pp1 run: the mesh ranks' ring buffers wrap at 2,000 entries (their first record id
    is not 0).  Aligned as PyTorch's analyzer aligns them, the dumps are CONSISTENT (lowest-seq
    alignment called this run STRANDED)."""
    from lockstep.impl.config import RunConfig
    from lockstep.impl.launch import launch_local, resolve_config
    FAST, DEADLINE = fast_config
    cfg = resolve_config(RunConfig(topology="pp1", world=3).with_(**{**FAST, "dist_timeout_s": 20.0, "watchdog_s": 30.0}, chunks=60))
    s = launch_local(cfg, tmp_path / "run", deadline_s=120.0, fr_dir=tmp_path / "fr")
    assert s.ok, s.render()
    dumps = {p.name: flight.load_dump(p) for p in (tmp_path / "fr").iterdir()}
    assert min(e["record_id"] for e in dumps["lockstep_fr_rank_1"]["entries"]) > 0, "the buffer did not wrap"
    r = _cli("--flight-recorder", tmp_path / "fr", "--json")
    rep = json.loads(r.output)
    assert r.exit_code == 0 and rep["verdict"] == "CONSISTENT", rep["verdicts"]
    assert rep["groups"]["world"]["reached"]["1"] is None  # unknown, not 0


def test_nccl_dump_path_waits_for_completed_entries(tmp_path, monkeypatch):
    """On NCCL the dump goes through _dump_nccl_trace (its _dump_fr_trace is empty there) and waits for
    the watchdog to mark finished entries completed.  No GPU here: the c10d entry point is stubbed."""
    torch = pytest.importorskip("torch")
    from lockstep.impl.rank import dump_flight_recorder
    c10d = torch._C._distributed_c10d
    calls = []

    def fake_nccl_trace(include_collectives, include_stack_traces, only_active):
        calls.append((include_collectives, include_stack_traces, only_active))
        state = "started" if len(calls) < 3 else "completed"
        return pickle.dumps(_nccl_dump([dict(_world_entry(1), state=state)]))

    monkeypatch.setattr(c10d, "_dump_nccl_trace", fake_nccl_trace, raising=False)
    monkeypatch.setattr(c10d, "_dump_fr_trace", lambda *a: pickle.dumps(_nccl_dump([])))
    dump_flight_recorder(str(tmp_path), None, 0, run_id="r1", backend="nccl", world=1)
    d = flight.load_dump(tmp_path / "lockstep_fr_rank_0")
    assert len(calls) == 3 and calls[0] == (True, True, False)
    assert [e["state"] for e in d["entries"]] == ["completed"]
    assert d["lockstep"] == {"run_id": "r1", "rank": 0, "world_size": 1, "backend": "nccl"} and d["rank"] == 0


# ------------------------------------------------------------------ p2p pairing (hand-built NCCL dumps)
def _p2p(kind, record_id, p2p_seq, sizes=((4, 8),), dtypes=("Float",), state="completed"):
    """A p2p entry on the mesh group (global ranks [1, 2]: local 0 is rank 1, local 1 is rank 2)."""
    name = "send 0->1" if kind == "send" else "recv 1<-0"
    return dict(_nccl_entry(record_id, op=name, sizes=sizes, dtypes=dtypes), is_p2p=True, p2p_seq_id=p2p_seq,
                collective_seq_id=0, state=state)


def _p2p_world(tmp_path, sends, recvs):
    _put(tmp_path, 0, _meta([], 0))
    _put(tmp_path, 1, _meta(sends, 1))
    _put(tmp_path, 2, _meta(recvs, 2))
    r = _cli("--flight-recorder", tmp_path, "--json")
    return r, json.loads(r.output)


def test_p2p_sends_paired_with_the_peers_recvs(tmp_path):
    """Rank 1 sends twice to rank 2, rank 2 receives twice (its p2p seq numbers differ from the sender's:
    they count a rank's own p2p ops): paired in FIFO order, consistent."""
    r, rep = _p2p_world(tmp_path, [_p2p("send", 0, 1), _p2p("send", 1, 2)], [_p2p("recv", 0, 5), _p2p("recv", 1, 6)])
    assert r.exit_code == 0 and rep["verdict"] == "CONSISTENT", rep["verdicts"]
    assert rep["p2p_pairs"]["mesh 1->2"] == {"sends": 2, "recvs": 2, "paired": 2, "judged": True, "first_mismatch": None,
                                             "unmatched": None}


@pytest.mark.parametrize("field,bad,what", [("sizes", ((4, 9),), "size"), ("dtypes", ("BFloat16",), "dtype")])
def test_p2p_pair_that_differs_is_a_mismatch(tmp_path, field, bad, what):
    r, rep = _p2p_world(tmp_path, [_p2p("send", 0, 1), _p2p("send", 1, 2)],
                        [_p2p("recv", 0, 5), _p2p("recv", 1, 6, **{field: bad})])
    assert r.exit_code == 1 and rep["verdict"] == "MISMATCH"
    fm = rep["p2p_pairs"]["mesh 1->2"]["first_mismatch"]
    assert fm["pair"] == 2 and fm["differs_in"] == what and fm["send_p2p_seq"] == 2 and fm["recv_p2p_seq"] == 6
    v = [x for x in rep["verdicts"] if x["verdict"] == "P2P_MISMATCH"]
    assert len(v) == 1 and "send #2 of rank 1 to rank 2 on mesh (p2p seq 2)" in v[0]["message"]
    assert f"{what} differs" in v[0]["message"]


def test_p2p_send_without_a_recv_is_stranded(tmp_path):
    """Rank 1's second send was never received: the sender waits for a peer that moved on."""
    r, rep = _p2p_world(tmp_path, [_p2p("send", 0, 1), _p2p("send", 1, 2, state="started")], [_p2p("recv", 0, 5)])
    assert r.exit_code == 1
    un = rep["p2p_pairs"]["mesh 1->2"]["unmatched"]
    assert un == {"rank": 1, "op": "send", "p2p_seq": 2, "state": "started", "count": 1}
    v = [x for x in rep["verdicts"] if x["verdict"] == "STRANDED"]
    assert len(v) == 1 and "rank 1's send #2 to rank 2 on mesh" in v[0]["message"]
    text = _cli("--flight-recorder", tmp_path).output
    assert "p2p mesh 1->2: 2 sends, 1 recvs, 1 paired" in text and "MISMATCH" in text


def test_p2p_not_paired_across_a_wrapped_ring_buffer(tmp_path):
    """The sender's buffer lost its first entries (record ids from 7): the k-th ops no longer correspond,
    so the pair is reported as not judged rather than called stranded."""
    r, rep = _p2p_world(tmp_path, [_p2p("send", 7, 8)], [_p2p("recv", 0, 1), _p2p("recv", 1, 2)])
    x = rep["p2p_pairs"]["mesh 1->2"]
    assert not x["judged"] and x["unmatched"] is None and r.exit_code == 0, rep["verdicts"]


# ------------------------------------------------------------------ p2p verdicts vs the spec's variants
@pytest.mark.multirank
def test_real_gloo_dumps_carry_lockstep_p2p_entries(fr_dumps):
    """gloo's Flight Recorder records no p2p op: lockstep's dump adds the rank's p2p ops from its trace
    (beside torch's entries, which stay as torch wrote them); in a clean run every one completed and
    every send pairs with its peer's recv."""
    d0 = flight.load_dump(fr_dumps["clean"] / "lockstep_fr_rank_0")
    assert not any(e.get("is_p2p") for e in d0["entries"])
    p2p = d0["lockstep"]["p2p_entries"]
    assert p2p and {e["state"] for e in p2p} == {"completed"}
    assert p2p[0]["profiling_name"] == "gloo:send 0->1" and p2p[0]["purpose"] == "header"
    assert p2p[0]["input_sizes"] == [[5]] and p2p[0]["input_dtypes"] == ["Long"]
    assert [e["p2p_seq_id"] for e in p2p] == list(range(1, len(p2p) + 1))
    rep = json.loads(_cli("--flight-recorder", fr_dumps["clean"], "--json").output)
    pairs = rep["p2p_pairs"]
    assert set(pairs) == {"world 0->1", "world 1->0"}
    assert all(x["judged"] and x["sends"] == x["recvs"] == x["paired"] > 0 and not x["unmatched"] for x in pairs.values())
    assert rep["p2p"]["0"]["recorded_by"] == "lockstep" and rep["p2p_stuck"] == []


@pytest.mark.multirank
def test_real_unsafe_om07_has_no_stuck_p2p_op(fr_dumps):
    """The om07 leader sends its error result before it exits: no p2p op is left, so the p2p variants
    (om13-no-watchdog, result-throw-after-header, ...) stay out of the match."""
    rep = json.loads(_cli("--flight-recorder", fr_dumps["om07"], "--json").output)
    assert rep["p2p_stuck"] == [] and all(x["judged"] and not x["unmatched"] for x in rep["p2p_pairs"].values())
    assert [m["variant"] for m in rep["spec_check"]["matches"]] == ["om07-leader-throws"]


@pytest.mark.multirank
@pytest.mark.slow  # model-checks the pp1 variants (~5-13 s, shared with the om07 test)
def test_real_leader_stuck_in_header_recv_matches_the_p2p_variants(fr_dumps):
    """OM-13: rank 0 goes away (SIGKILL, so no dump: --allow-missing) while the leader waits for the
    next envelope header.  The leader's dump holds that recv, never completed: the stuck op is a recv
    from stage0 of a header (int64[5]) -- the end of om13-no-watchdog and of queue-no-drain, and not
    of second-transport-caller (the leader waits in the meta) or result-throw-after-header (rank 0
    waits for the latents)."""
    r = _cli("--flight-recorder", fr_dumps["om13"], "--allow-missing", "--json")
    assert r.exit_code == 1, r.output
    rep = json.loads(r.output)
    proj = rep["spec_check"]["projection"]
    assert len(proj) == 1 and proj[0]["kind"] == "p2p"
    p = proj[0]
    assert (p["group"], p["op"], p["rank"], p["peer"], p["roles"], p["part"], p["sig"], p["state"]) == \
        ("world", "recv", 1, 0, ["leader", "stage0"], "envelope header", ["int64", [5]], "started")
    assert p["tag"] == 1 and p["why"] == "never completed"
    got = {m["variant"] for m in rep["spec_check"]["matches"]}
    assert got == {"om13-no-watchdog", "queue-no-drain"}, got
    text = _cli("--flight-recorder", fr_dumps["om13"], "--allow-missing").output
    assert "this hang is consistent with om13-no-watchdog" in text and "is an instance of" not in text
    assert "rank 1 stuck in recv from rank 0 on world" in text


def _pp1_dump(rank, p2p):
    d = _meta(p2p, rank)
    d["pg_config"] = {"0": {"name": "0", "desc": "default_pg", "ranks": "[0, 1, 2]"},
                      "1": {"name": "1", "desc": "mesh", "ranks": "[1, 2]"}}
    return d


def _wp2p(name, record_id, p2p_seq, sizes, dtype, state="completed"):
    """A p2p entry on the world group (global ranks = group ranks), as NCCL records it (no tag)."""
    return dict(_nccl_entry(record_id, op=name, sizes=(sizes,), dtypes=(dtype,), pg=("0", "default_pg")),
                is_p2p=True, p2p_seq_id=p2p_seq, collective_seq_id=0, state=state)


def _result_throw_world(tmp_path, latents_dtype="BFloat16"):
    """NCCL dumps of result-throw-after-header's end: the leader sent its result header and died; rank 0
    received the header and waits for the latents."""
    r0 = [_wp2p("send 0->1", 0, 1, (5,), "Long"), _wp2p("recv 0<-1", 1, 2, (5,), "Long"),
          _wp2p("recv 0<-1", 2, 3, (1, 4, 16), latents_dtype, state="started")]
    r1 = [_wp2p("recv 1<-0", 0, 1, (5,), "Long"), _wp2p("send 1->0", 1, 2, (5,), "Long")]
    _put(tmp_path, 0, _pp1_dump(0, r0))
    _put(tmp_path, 1, _pp1_dump(1, r1))
    _put(tmp_path, 2, _pp1_dump(2, []))
    return _cli("--flight-recorder", tmp_path, "--spec", "pp1", "--json")


def test_stranded_latents_receiver_is_an_instance_of_result_throw_after_header(tmp_path):
    r = _result_throw_world(tmp_path)
    assert r.exit_code == 1, r.output
    rep = json.loads(r.output)
    (p,) = rep["spec_check"]["projection"]
    assert (p["rank"], p["peer"], p["op"], p["part"], p["sig"], p["why"]) == (0, 1, "recv", "result inside",
                                                                             ["bfloat16", [1, 4, 16]], "no partner")
    assert [m["variant"] for m in rep["spec_check"]["matches"]] == ["result-throw-after-header"]
    text = _cli("--flight-recorder", tmp_path, "--spec", "pp1").output
    assert "this hang is an instance of result-throw-after-header" in text


def test_stuck_p2p_dtype_is_compared(tmp_path):
    """The same end with float32 latents: the spec's latents are bfloat16, so no variant ends this way."""
    rep = json.loads(_result_throw_world(tmp_path, latents_dtype="Float").output)
    assert rep["spec_check"]["projection"][0]["sig"] == ["float32", [1, 4, 16]]
    assert rep["spec_check"]["matches"] == []


def test_leader_stuck_in_meta_recv_is_second_transport_caller(tmp_path):
    """The leader got the envelope header and waits for its meta (the meta size, int64[1]) from rank 0,
    which is wedged: second-transport-caller's end, not the header-recv variants'."""
    r0 = [_wp2p("send 0->1", 0, 1, (5,), "Long")]
    r1 = [_wp2p("recv 1<-0", 0, 1, (5,), "Long"), _wp2p("recv 1<-0", 1, 2, (1,), "Long", state="started")]
    _put(tmp_path, 0, _pp1_dump(0, r0))
    _put(tmp_path, 1, _pp1_dump(1, r1))
    _put(tmp_path, 2, _pp1_dump(2, []))
    rep = json.loads(_cli("--flight-recorder", tmp_path, "--spec", "pp1", "--json").output)
    assert rep["spec_check"]["projection"][0]["part"] == "envelope inside"
    assert [m["variant"] for m in rep["spec_check"]["matches"]] == ["second-transport-caller"]


@pytest.mark.parametrize("value,msg", [("nope", "field 'lockstep.p2p_entries': expected a list"),
                                       ([{"collective_seq_id": 0, "profiling_name": "gloo:send 0->1",
                                          "process_group": ["world", "world"], "is_p2p": True, "tag": "x"}],
                                        "lockstep.p2p_entries[0]: field 'tag'")])
def test_bad_lockstep_p2p_entries_are_one_line(tmp_path, value, msg):
    d = _meta([_world_entry(1)], 0, world=1)
    d["lockstep"]["p2p_entries"] = value
    _put(tmp_path, 0, d)
    r = _cli("--flight-recorder", tmp_path)
    assert r.exit_code == 2 and r.output.count("\n") == 1 and msg in r.output, r.output


@pytest.mark.multirank
@pytest.mark.slow  # model-checks the pp1 variants (shared with the om07 test)
def test_real_unsafe_result_throw_is_an_instance_of_its_variant(fr_dumps):
    """``--unsafe result-throw-after-header`` on gloo: the leader sends the result header of chunk 1 and
    fails the request; rank 0 got the header and waits in the rest of the result (the meta size, the
    wire's first op after a header).  Its worker waits at the next mesh header for the leader (idle
    between messages, not a variant's end).  Rank 0's posted isend of the next envelope is not where it
    is blocked (an isend's state says nothing until it is waited on).  The stuck p2p op is the end of
    result-throw-after-header only."""
    r = _cli("--flight-recorder", fr_dumps["result-throw"], "--json")
    assert r.exit_code == 1, r.output
    rep = json.loads(r.output)
    (p,) = [x for x in rep["spec_check"]["projection"] if x["kind"] == "p2p"]
    assert (p["rank"], p["peer"], p["op"], p["roles"], p["part"], p["wire"], p["sig"]) == \
        (0, 1, "recv", ["stage0", "leader"], "result inside", "meta", ["int64", [1]])
    assert [m["variant"] for m in rep["spec_check"]["matches"]] == ["result-throw-after-header"]
    text = _cli("--flight-recorder", fr_dumps["result-throw"]).output
    assert "this hang is an instance of result-throw-after-header" in text
    assert "rank 0 stuck in recv from rank 1 on world" in text and "meta_size" in text


@pytest.mark.multirank
@pytest.mark.slow  # a pp0 world (~5 s) and the pp0 variants model-checked
def test_real_pp0_result_throw_is_inferred_pp0_and_matched(tmp_path, fast_config):
    """pp0 has no mesh: the dumps alone are told from tp by their p2p ops (tp has none), and the
    manifest beside them names the topology outright."""
    from lockstep.impl.config import RunConfig
    from lockstep.impl.launch import launch_local, resolve_config
    FAST, DEADLINE = fast_config
    cfg = resolve_config(RunConfig(topology="pp0", world=2).with_(**FAST, chunks=3, fault_at=1,
                                                                   unsafe="result-throw-after-header"))
    s = launch_local(cfg, tmp_path / "run", deadline_s=DEADLINE, fr_dir=tmp_path / "fr")
    assert s.ok, s.render()
    rep = json.loads(_cli("--flight-recorder", tmp_path / "fr", "--json").output)  # no manifest beside: inferred
    assert rep["topology"] is None and rep["spec_check"]["spec"] == "pp0"
    assert [m["variant"] for m in rep["spec_check"]["matches"]] == ["result-throw-after-header"]
    (tmp_path / "fr" / "manifest.json").write_text((tmp_path / "run" / "manifest.json").read_text())
    rep = json.loads(_cli("--flight-recorder", tmp_path / "fr", "--json").output)
    assert rep["topology"] == "pp0" and rep["spec_check"]["spec"] == "pp0"
