"""Every OM scenario ends within its deadline with its documented fast-fail signature (never a
hang), and each --unsafe switch reproduces what the checker predicts for its variant."""
import pytest

from lockstep.conformance import schema as S
from lockstep.impl.faults import FAULTS, OM_FAULTS

WORLD = {"tp": 2, "pp0": 2, "pp1": 3}


def _run(world, fault, topology=None, **kw):
    topology = topology or FAULTS[fault].default_topology
    if fault == "om-09":
        kw.setdefault("fault_at", 2)
        kw.setdefault("hard_cut_at", kw["fault_at"])
    return world(topology, WORLD[topology], chunks=4, fault=fault, deadline=30, **kw)


@pytest.mark.multirank
@pytest.mark.parametrize("fault", OM_FAULTS)
def test_om_fault_signature(world, fault):
    s = _run(world, fault)
    assert s.ok, s.render()
    assert s.wall_s < 3 * s.cfg.dist_timeout_s + 5  # fast fail: nothing waits out a long timeout
    run = S.load_run(s.run_dir)  # traces of crashed ranks still load strictly
    assert any(e["fault"] == fault for r in run.ranks.values() for e in r.of(S.FAULT_INJECTED)) or fault in ("om-04", "om-05")


@pytest.mark.multirank
@pytest.mark.parametrize("fault,topology", [("om-01", "pp1"), ("om-02", "pp0"), ("om-06", "pp1"), ("om-07", "pp1"),
                                            ("om-11", "pp1"), ("om-12", "pp1"), ("om-13", "tp"), ("om-09", "pp1")])
def test_om_fault_on_other_topologies(world, fault, topology):
    s = _run(world, fault, topology)
    assert s.ok, s.render()


@pytest.mark.multirank
def test_unsafe_fm04_throw_after_header_strands_workers(world):
    s = world("tp", 2, chunks=3, fault="om-01", unsafe="fm04-throw-after-header", dist_timeout_s=2.0, deadline=30)
    assert s.ok, s.render()
    run = S.load_run(s.run_dir)
    w = run.ranks[1]
    last = w.of(S.COMM_ENTER)[-1]
    assert (last["op"], last["purpose"]) == ("broadcast", "meta_size")
    assert w.exit["how"] == "timeout" and run.ranks[0].exit["how"] == "exception"
    # rank0 stayed alive past the workers' timeout and sent nothing after the header
    r0 = run.ranks[0]
    assert r0.exit["t"] > w.exit["t"]
    hdr = [e for e in r0.of(S.HEADER_SENT) if e["chunk_index"] == 1][0]
    assert not [e for e in r0.of(S.COMM_ENTER) if e["i"] > hdr["i"]]


@pytest.mark.multirank
def test_unsafe_om07_leader_throws_strands_non_leaders(world):
    s = world("pp1", 3, chunks=3, fault="om-07", unsafe="om07-leader-throws", dist_timeout_s=2.0, deadline=30)
    assert s.ok, s.render()
    assert [o.how for o in s.ranks] == ["exception", "exception", "timeout"]


@pytest.mark.multirank
@pytest.mark.parametrize("topology", ["pp0", "pp1"])
def test_unsafe_om09_no_epoch_fence_emits_stale(world, topology):
    s = world(topology, WORLD[topology], chunks=4, fault="om-09", fault_at=2, hard_cut_at=2,
              unsafe="om09-no-epoch-fence", deadline=30)
    assert s.ok, s.render()
    stale = {(e["chunk_index"], e["cache_epoch"], e["current_epoch"]) for e in s.stale_emitted}
    assert (1, 0, 1) in stale and all(ep == 0 and cur == 1 for _, ep, cur in stale)  # every in-flight chunk leaks
