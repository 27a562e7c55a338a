"""conform on real gloo runs of `lockstep run`'s implementation: clean runs of every topology and the
fault runs the specs model conform; --unsafe runs are rejected and matched to the checker's class."""
import json

import pytest
from click.testing import CliRunner

from lockstep.cli.conform import conform
from lockstep.conformance import check, loader

pytestmark = pytest.mark.multirank  # real gloo worlds


def _conform(path, *extra):
    r = CliRunner().invoke(conform, [str(path), "--json", *extra])
    assert r.exit_code in (0, 1, 4), r.output
    return r.exit_code, json.loads(r.output)


@pytest.mark.parametrize("topology,world", [("tp", 2), ("tp", 4), ("pp0", 2), ("pp1", 3)])
def test_clean_runs_conform(real_run, topology, world):
    code, out = _conform(real_run(topology, world, chunks=2 if world > 3 else 3))
    assert code == 0 and out["verdict"] == "CONFORMS", json.dumps(out["replay"]["unexplained"], indent=1)
    assert out["replay"]["explained"] == out["replay"]["observables"] > 20
    assert out["fabric_mismatches"] == []


def test_clean_tp_hard_cut_conforms(real_run):
    code, out = _conform(real_run("tp", 2, chunks=3, hard_cut_at=2))
    assert code == 0, json.dumps(out["replay"]["unexplained"], indent=1)


@pytest.mark.parametrize("topology,world,fault,kw", [
    ("tp", 2, "om-01", {}), ("tp", 2, "om-03", {}), ("tp", 2, "om-04", {"fault_rank": 1}),
    ("tp", 2, "om-13", {"idle_s": 0.5}),
    ("pp0", 2, "om-02", {}), ("pp0", 2, "om-13", {"idle_s": 0.5}),
    ("pp1", 3, "om-07", {}), ("pp1", 3, "om-10", {}), ("pp1", 3, "om-13", {"idle_s": 0.5}),
    # runtime tripwires before Phase B: the spec fault `tripwire` (crash-only on every rank)
    ("tp", 2, "om-06", {}), ("tp", 2, "om-11", {}), ("tp", 2, "om-12", {}),
])
def test_fault_runs_conform_to_spec_with_fault(real_run, topology, world, fault, kw):
    code, out = _conform(real_run(topology, world, chunks=3, fault=fault, **kw))
    assert code == 0, json.dumps(out["replay"]["unexplained"], indent=1)
    assert out["params"]["faults"] != "none"


def test_pp1_om13_leader_relays_error(real_run):
    """rank0 killed: the leader's header receive fails, it broadcasts ERROR on mesh_pg (the spec's
    WATCHDOG -> watchdog_error) and exits."""
    path = real_run("pp1", 3, chunks=3, fault="om-13", idle_s=0.5)
    run = loader.load(path)
    assert any(e["ev"] == "header_sent" and e.get("action") == "ERROR" for e in run.ranks[1].events)
    code, out = _conform(path)
    assert code == 0 and out["params"]["faults"] == "crash"


@pytest.mark.parametrize("topology,world,kw", [
    ("pp0", 2, {"hard_cut_at": 2}), ("pp1", 3, {"hard_cut_at": 2}), ("pp0", 2, {"fault": "om-09"}),
])
def test_pp_hard_cut_conforms(real_run, topology, world, kw):
    """The spec's hard_cut step (flush, bump, needs_init), the stale results drained, then the init_cache
    envelope: the impl's order."""
    path = real_run(topology, world, chunks=3, **kw)
    code, out = _conform(path)
    assert code == 0, json.dumps(out["replay"]["unexplained"], indent=1)
    run = loader.load(path)
    assert any(e["ev"] == "hard_cut" for e in run.ranks[0].events)


@pytest.mark.parametrize("fault", ["om-08", "om-11"])
def test_pp1_tripwire_runs_conform(real_run, fault):
    """On PP1 a runtime tripwire is crash-only on the workers; the leader reports it to rank0 as an ok=False
    result (rank0 is waiting for this chunk's result) and exits - never a mesh broadcast after the mesh
    commitment point."""
    code, out = _conform(real_run("pp1", 3, chunks=3, fault=fault))
    assert code == 0, json.dumps(out["replay"]["unexplained"], indent=1)
    assert out["params"]["faults"] == "tripwire" and out["fabric_mismatches"] == []


@pytest.mark.parametrize("topology,world", [("pp0", 2), ("pp1", 3)])
def test_pp_parity_failure_conforms(real_run, topology, world):
    """OM-04: a per-rank knob differs; the startup parity handshake fails on every rank before the first chunk."""
    code, out = _conform(real_run(topology, world, chunks=2, fault="om-04", fault_rank=1))
    assert code == 0, json.dumps(out["replay"]["unexplained"], indent=1)
    assert out["params"]["faults"] == "env-drift"


def test_unsafe_fm04_is_stranded_instance(real_run):
    path = real_run("tp", 2, chunks=3, fault="om-01", unsafe="fm04-throw-after-header")
    code, out = _conform(path)
    assert code == 4 and out["verdict"] == "CONFORMS_TO_VARIANT"
    u = out["unsafe"]
    assert u["checker"]["verdict"] == "STRANDED" and u["instance"]
    assert "this run is an instance of fm04-throw-after-header: STRANDED" in u["message"]
    first = {x["rank"]: x for x in out["replay"]["unexplained"]}
    assert first[0]["event"] == "preflight_fail" and first[0]["spec_state"] == "META_SIZE"
    r = CliRunner().invoke(conform, [path, "--no-checker"])
    assert "this run is an instance of fm04-throw-after-header: STRANDED" in r.output


def test_unsafe_om09_is_stale_emit_instance(real_run):
    code, out = _conform(real_run("pp0", 2, chunks=3, fault="om-09", unsafe="om09-no-epoch-fence"))
    assert code == 4 and out["verdict"] == "CONFORMS_TO_VARIANT"
    u = out["unsafe"]
    assert u["instance"] and u["checker"]["verdict"] == "STALE_EMIT" and "STALE_EMIT" in u["message"]
    assert u["class_source"] == "replay"  # the variant replay reaches the violation itself


def test_unsafe_om07_is_stranded_instance(real_run):
    code, out = _conform(real_run("pp1", 3, chunks=3, fault="om-07", unsafe="om07-leader-throws"))
    assert code == 4
    u = out["unsafe"]
    assert u["instance"] and "STRANDED" in u["message"]
    # the variant (mesh_header -> VALIDATE -> reject_reply) replayed on its documented backend (nccl, no PG
    # timeout) is stuck exactly where the gloo run's workers only time out
    assert u["class_source"] == "replay" and u["variant_backend"] == "nccl", u["message"]
    # the hardened spec refuses the leader's mesh header before validation
    lead = [x for x in out["replay"]["unexplained"] if x["rank"] == 1]
    assert lead and "mesh_header" in lead[0]["expected"] and lead[0]["spec_state"] == "VALIDATE"


def test_report_names_state_enabled_and_guard(real_run, tmp_path):
    """Drop rank0's second chunk_emitted from a TP run: the report shows the rank, the line, the spec
    state, what was enabled and the false guard."""
    run = loader.load(real_run("tp", 2, chunks=2))
    evs = run.ranks[0].events
    k = [i for i, e in enumerate(evs) if e["ev"] == "header_sent"][1]
    evs = [dict(e) for e in evs[:k - 1]] + [dict(e) for e in evs[k + 1:]]  # drop the 2nd header op (enter+exit)
    for i, e in enumerate(evs):
        e["i"] = i
    from lockstep.conformance.mutate import _with_rank
    rep = check.conform_run(_with_rank(run, 0, evs), check_variant=False)
    assert not rep.conforms
    u = {x.rank: x for x in rep.replay.unexplained}
    assert 0 in u and u[0].spec_state and u[0].enabled is not None


def test_first_unexplained_and_render_highlight(real_run, tmp_path):
    """check.first_unexplained (the hook of `lockstep render --trace`): None for a conforming run; for a
    non-conforming one the rank/event the swimlane highlights."""
    from lockstep.cli.render import render as render_cmd
    assert check.first_unexplained(loader.load(real_run("tp", 2, chunks=3, fault="om-11"))) is None
    # an unsafe run (meta serialized after the header): the hardened spec rejects rank0's late failure
    path = real_run("tp", 2, chunks=3, fault="om-01", unsafe="fm04-throw-after-header")
    hit = check.first_unexplained(loader.load(path))
    assert hit is not None and hit["rank"] == 0 and hit["message"]
    ev = loader.load(path).ranks[0].events[hit["i"]]
    assert ev["ev"] in hit["message"] or ev.get("purpose", "") in hit["message"]
    out = tmp_path / "r"
    r = CliRunner().invoke(render_cmd, ["--trace", path, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "conformance rejects this trace" in r.output
    svg = (out / "swimlane.svg").read_text()
    assert 'class="highlight"' in svg
