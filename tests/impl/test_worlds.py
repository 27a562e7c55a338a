"""Real gloo worlds: every topology runs clean, loses no chunk, records a valid trace whose
collectives match across ranks; sharded outputs equal the unsharded model's."""
import pytest
import torch

from lockstep.conformance import schema as S
from lockstep.impl.reference import reference_outputs
from lockstep.impl.stage0 import load_outputs

from helpers import assert_collectives_match

TOPOLOGIES = [("tp", 2), ("pp0", 2), ("pp1", 3)]


@pytest.mark.multirank
@pytest.mark.parametrize("topology,n", TOPOLOGIES + [("tp", 4), ("pp1", 5)])
def test_clean_run_loses_no_chunk(world, topology, n):
    s = world(topology, n, chunks=6, hard_cut_at=3)
    assert s.ok, s.render()
    assert all(r.how == "clean" for r in s.ranks)
    assert sorted(s.emitted + list(s.dropped)) == list(range(6)) and not s.lost
    assert set(s.dropped.values()) <= {"stale_epoch"}  # only in-flight work at the hard cut
    run = S.load_run(s.run_dir)
    assert run.manifest["schema"] == 1 and run.manifest["world_size"] == n
    assert_collectives_match(run)
    r0 = run.ranks[0]
    assert [e["new_epoch"] for e in r0.of(S.HARD_CUT)] == [1]
    calls = [e["call_id"] for e in r0.of(S.HEADER_SENT)]
    assert calls == sorted(set(calls))  # call_id strictly increasing over every action
    assert r0.of(S.HEADER_SENT)[-1]["action"] == "SHUTDOWN"
    for r in s.cfg.mesh_ranks:  # every mesh rank saw the same lifecycle
        resets = [(e["what"], e["cache_epoch"]) for e in run.ranks[r].of(S.CACHE_RESET)]
        assert resets == [(e["what"], e["cache_epoch"]) for e in run.ranks[s.cfg.mesh_ranks[0]].of(S.CACHE_RESET)]
        ends = run.ranks[r].of(S.PHASE_B_END)
        assert ends and all(e["expected"] == e["observed"] for e in ends)


@pytest.mark.multirank
@pytest.mark.parametrize("topology,n", TOPOLOGIES)
def test_sharded_equals_unsharded(world, topology, n):
    # 9 chunks, hard cut at 6, recompute every 3rd chunk of an epoch, ring of 4 frames (evicts at chunk 2)
    kw = dict(chunks=9, hard_cut_at=6, recompute_every=3, save_outputs=True, d_in=1, d_out=1)
    s = world(topology, n, **kw)
    assert s.ok, s.render()
    got = load_outputs(s.run_dir)
    ref = reference_outputs(s.cfg)
    assert len(got) >= 7
    for key, out in got.items():
        assert torch.allclose(out, ref[key], atol=1e-5, rtol=1e-4), (key, float((out - ref[key]).abs().max()))
    run = S.load_run(s.run_dir)
    mesh0 = run.ranks[s.cfg.mesh_ranks[0]]
    emitted = {(e["cache_epoch"], e["chunk_index"]) for e in run.ranks[0].of(S.CHUNK_EMITTED)}
    recomputed = {(e["cache_epoch"], e["chunk_index"]) for e in mesh0.of(S.GENERATOR_CALL) if e["kind"] == "recompute"}
    evicted = {(e["cache_epoch"], e["start_frame"]) for e in mesh0.of(S.CACHE_ADVANCE) if e["evicted"] > 0}
    assert recomputed & emitted, "no emitted chunk exercised the recompute"
    assert any(k[0] == 1 for k in emitted), "no emitted chunk after the hard cut"
    assert evicted, "the ring never evicted"


@pytest.mark.multirank
@pytest.mark.parametrize("topology,n", [("tp", 2), ("pp1", 3)])
def test_noop_heartbeats_keep_an_idle_mesh_alive(world, topology, n):
    """Rank0 idles 2.5x the PG timeout between chunks sending NOOPs (relayed by the PP1 leader)."""
    s = world(topology, n, chunks=2, idle_s=2.5, heartbeat_s=0.2, dist_timeout_s=1.0)
    assert s.ok, s.render()
    for r in range(1, n):
        noops = [e for e in S.load_run(s.run_dir).ranks[r].of(S.HEADER_RECV) if e["action"] == "NOOP"]
        assert len(noops) >= 5


@pytest.mark.multirank
def test_without_heartbeats_an_idle_mesh_fails_fast(world):
    """The same idle period without NOOPs: the receivers hit the PG timeout (crash, never a hang)."""
    s = world("pp1", 3, chunks=2, idle_s=2.5, heartbeat_s=0.0, dist_timeout_s=1.0)
    assert not s.clean
    assert s.ranks[1].how == "timeout" and "header" in s.ranks[1].message
    assert all(o.how in ("timeout", "exception") for o in s.ranks)


@pytest.mark.multirank
def test_overlap_bounds_hold(world):
    s = world("pp0", 2, chunks=6, d_in=2, d_out=2, decode_ms=30.0, mesh_ms=30.0)
    assert s.ok, s.render()
    r0 = S.load_run(s.run_dir).ranks[0]
    stats = [e for e in r0.of(S.MARK) if e["note"] == "overlap_stats"][0]
    assert 1 <= stats["max_inflight"] <= 2 and stats["max_ready"] <= 2
    assert all(e["inflight"] <= 2 and e["ready"] <= 2 for e in r0.of(S.CHUNK_EMITTED))


@pytest.mark.multirank
def test_receiver_watchdog_beats_a_long_pg_timeout(world):
    """PG timeout 30 s, watchdog 1 s, rank0 silent for 3 s: the receivers leave on their watchdog,
    logging their last header, long before the PG timeout.  Both arm at about the same moment; on a
    loaded machine one receiver's watchdog can fire first and its exit break the other's wait (gloo:
    the peer is gone) before that one's watchdog fires: it then leaves on that error, as promptly."""
    s = world("pp1", 3, chunks=2, idle_s=3.0, heartbeat_s=0.0, dist_timeout_s=30.0, watchdog_s=1.0, deadline=25)
    assert s.wall_s < 12, s.render()
    run = S.load_run(s.run_dir)
    fired = [r for r in (1, 2) if run.ranks[r].of(S.WATCHDOG_FIRED)]
    assert fired, s.render()
    for r in (1, 2):
        ex = run.ranks[r].exit
        if r in fired:
            assert ex["how"] == "timeout" and "watchdog" in ex["message"] and ex["last_header"]["action"] == "INFER"
        else:
            assert ex["how"] == "exception", ex
    assert s.ranks[0].how == "exception"  # rank0 finds its peer gone when it resumes
