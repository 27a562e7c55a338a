"""torch.compile of the generator with functional collectives: C-01 (compile on one rank only ->
parity fails before the first chunk), C-03 (rank-only graph break -> compile-health gather fails
after warmup), compiled outputs equal the unsharded eager model, and one inductor run with a
persistent cache directory."""
import os

import pytest
import torch

from lockstep.conformance import schema as S
from lockstep.impl.reference import reference_outputs
from lockstep.impl.stage0 import load_outputs

from helpers import assert_collectives_match


# The two slow tests below run pp1 at 3 ranks only: its mesh is a 2-rank TP group running the same
# sharded generator as tp at 2 ranks, behind a rank 0 (tp at 2 ranks compiles in test_c01 below).
@pytest.mark.slow
@pytest.mark.multirank
@pytest.mark.parametrize("topology,n", [("pp1", 3)])
def test_compiled_aot_eager_matches_unsharded(world, topology, n):
    s = world(topology, n, chunks=3, compile="aot_eager", save_outputs=True, d_in=1, d_out=1, deadline=60)
    assert s.ok, s.render()
    ref = reference_outputs(s.cfg)
    for key, out in load_outputs(s.run_dir).items():
        assert torch.allclose(out, ref[key], atol=1e-5, rtol=1e-4)
    run = S.load_run(s.run_dir)
    assert_collectives_match(run)  # compiled collectives keep the per-group sequence numbers aligned
    mesh0 = run.ranks[s.cfg.mesh_ranks[0]]
    health = [e for e in mesh0.of(S.STARTUP_STEP) if e["name"] == "compile_health"][0]
    assert health["graph_breaks"] == 0 and health["graphs"] >= 1
    assert all(e.get("compiled") for e in mesh0.of(S.GENERATOR_CALL))
    # warm-up outside the timed protocol covers every KV context length (chunk 0, 1, ... ring full), so no
    # shape is first compiled while rank 0 waits for a result under the PG timeout (flaky under load before)
    mc = s.cfg.model
    warm = [e for e in mesh0.of(S.STARTUP_STEP) if e["name"] == "warmup"][0]
    assert warm["calls"] == mc.cache_frames // mc.frames_per_chunk + 1


@pytest.mark.multirank
@pytest.mark.parametrize("topology,n", [("tp", 2), ("pp1", 3)])
def test_c01_compile_on_one_rank_fails_parity(world, topology, n):
    s = world(topology, n, chunks=2, compile="aot_eager", fault="c-01", deadline=30)
    assert s.ok, s.render()
    assert all("compile" in o.message for o in s.ranks) and s.emitted == []


@pytest.mark.slow
@pytest.mark.multirank
@pytest.mark.parametrize("topology,n", [("pp1", 3)])
def test_c03_rank_only_graph_break_crashes_early(world, topology, n):
    # C-03 makes one rank compile more graphs than the others during the warm-up (one per KV context length),
    # so its peers wait in the warm-up's collectives for that rank's extra compile time, many times 3 s on a
    # loaded machine: the PG timeout must outlast that skew for the compile-health gather to be reached.
    s = world(topology, n, chunks=2, compile="aot_eager", fault="c-03", deadline=90, dist_timeout_s=20.0)
    assert s.ok, s.render()
    assert s.emitted == []
    run = S.load_run(s.run_dir)
    assert not any(run.ranks[r].of(S.HEADER_SENT) for r in run.ranks)  # crashed before the first chunk


@pytest.mark.slow
@pytest.mark.multirank
def test_inductor_with_persistent_cache(world, monkeypatch):
    cache = os.environ.get("LOCKSTEP_INDUCTOR_CACHE", os.path.expanduser("~/.cache/lockstep/inductor"))
    os.makedirs(cache, exist_ok=True)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", cache)
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")
    s = world("tp", 2, chunks=1, steps=1, compile="inductor", save_outputs=True, deadline=150, dist_timeout_s=30.0,
              **{"model.blocks": 1})
    assert s.ok, s.render()
    ref = reference_outputs(s.cfg)
    for key, out in load_outputs(s.run_dir).items():
        assert torch.allclose(out, ref[key], atol=1e-4, rtol=1e-3)
