"""Single-process tests of the pieces: preflight order, strict meta decoding, config rejection,
the KV ring, the planner's lifecycle bits, the fault/unsafe tables."""
import re

import pytest
import torch

from lockstep.impl import faults
from lockstep.impl.config import RunConfig, apply_params, check_config
from lockstep.impl.envelope import Message, decode_meta, preflight
from lockstep.impl.errors import Ids, PreflightError, ValidationFailure
from lockstep.impl.generator import Generator, KVRing
from lockstep.impl.stage0 import Planner
from lockstep.spec import contract as C

CPU = torch.device("cpu")


def _planned(k=0, **kw):
    p = Planner(RunConfig(**kw))
    msg = None
    for i in range(k + 1):
        msg = p.plan(i)
        if i < k:
            p.commit(msg)
            p.observe(msg.meta, msg.tensors["latents"])
    return msg


def _pf(msg):
    return preflight(msg, CPU, ids=msg.ids, rank=0, group="world")


def test_preflight_builds_sorted_specs_and_header():
    msg = _planned(2, recompute_every=2)
    prep = _pf(msg)
    keys = [(s.key, s.index) for s in prep.specs]
    assert keys == sorted(keys) and "context_frames" in [k for k, _ in keys]
    assert prep.header.tolist() == [msg.meta["call_id"], 2, 0, 0, int(C.Action.INFER)]
    meta, specs = decode_meta(bytes(prep.meta_bytes.numpy().tobytes()), "envelope", ids=msg.ids, rank=1, group="world")
    assert specs == prep.specs and meta["expected_generator_calls"] == msg.meta["num_denoise_steps"] + 1


@pytest.mark.parametrize("fault,step,field,needle", [
    ("om-01", "serialize_meta", "meta.debug_hook", "not plain data"),
    ("om-02", "validate", "latents", "unsupported dtype"),
    ("om-03", "validate", "expected_generator_calls", "(1 if do_kv_recompute else 0)"),
    ("om-10", "validate", "context_frames", "required for INFER with recompute"),
])
def test_preflight_failures_name_step_and_field(fault, step, field, needle):
    cfg = RunConfig(fault=fault, fault_at=1)
    msg = _planned(1)
    faults.mutate_envelope(cfg, msg, __import__("lockstep.conformance.schema", fromlist=["x"]).TraceWriter(None, 0))
    with pytest.raises(PreflightError) as ei:
        _pf(msg)
    e = ei.value
    assert (e.step, e.field) == (step, field) and needle in str(e)
    assert "call_id=1 chunk_index=1 cache_epoch=0" in str(e) and "rank 0 group world" in str(e)


def test_nested_tensor_in_meta_is_rejected():
    msg = _planned(0)
    msg.meta["extra"] = {"t": torch.ones(1)}
    with pytest.raises(PreflightError, match="meta.extra.t"):
        _pf(msg)


def test_decode_meta_is_strict_and_filters_unknown_fields():
    ids = Ids(0, 0, 0)
    with pytest.raises(ValidationFailure, match="canonical JSON"):
        decode_meta(b"\x80\x04pickle", "envelope", ids=ids, rank=1, group="world")
    with pytest.raises(ValidationFailure, match="unsupported dtype"):
        decode_meta(b'{"meta":{},"tensor_specs":[["x",0,"bool",[1]]]}', "envelope", ids=ids, rank=1, group="world")
    with pytest.raises(ValidationFailure, match="sorted"):
        decode_meta(b'{"meta":{},"tensor_specs":[["b",0,"int64",[1]],["a",0,"int64",[1]]]}', "envelope",
                    ids=ids, rank=1, group="world")
    meta, _ = decode_meta(b'{"meta":{"call_id":3,"stage1_ms":1.5},"tensor_specs":[]}', "envelope", ids=ids, rank=1,
                          group="world")
    assert meta == {"call_id": 3}  # an unknown field from a newer peer is dropped, not a crash


def test_tp_degree_not_dividing_heads_is_rejected_naming_both():
    with pytest.raises(ValueError, match=r"TP degree 3 does not divide the head count 4"):
        check_config(RunConfig(topology="tp", world=3))
    with pytest.raises(ValueError, match=r"TP degree 3 .* head count 4"):
        Generator(RunConfig().model, tp_rank=0, tp_size=3)


@pytest.mark.parametrize("topology,world", [("tp", w) for w in range(2, 17)] + [("pp1", w) for w in range(3, 18)])
def test_the_head_count_hint_gives_a_configuration_that_runs(topology, world):
    """The rejection names -p values; with them the same world is accepted (every TP degree to 16)."""
    cfg = RunConfig(topology=topology, world=world)
    try:
        check_config(cfg)
        return  # (the default head count already splits)
    except ValueError as e:
        hint = re.search(r"try (-p \S+(?: -p \S+)*)$", str(e))
    assert hint, "no -p hint in the error"
    params = dict(p.split("=") for p in hint.group(1).split(" ") if p != "-p")
    check_config(apply_params(cfg, params))


def test_params_and_unknown_names():
    cfg = apply_params(RunConfig(), {"chunks": "7", "depth": "3", "heads": "8", "timeout": "2.5"})
    assert (cfg.chunks, cfg.d_in, cfg.d_out, cfg.model.heads, cfg.dist_timeout_s) == (7, 3, 3, 8, 2.5)
    with pytest.raises(ValueError, match="valid parameters: .*chunks"):
        apply_params(RunConfig(), {"chunkz": "1"})
    with pytest.raises(ValueError, match="expected an integer"):
        apply_params(RunConfig(), {"chunks": "many"})


def test_fault_and_unsafe_tables_are_complete_and_checked():
    assert set(faults.OM_FAULTS) == {f"om-{i:02d}" for i in range(1, 14)}
    assert {"fm04-throw-after-header", "om07-leader-throws", "om09-no-epoch-fence"} <= set(faults.UNSAFE)
    with pytest.raises(ValueError, match="applies to topologies pp1"):
        faults.check_fault_config(RunConfig(topology="tp", fault="om-07"))
    with pytest.raises(ValueError, match="only changes what happens under --fault om-01"):
        faults.check_fault_config(RunConfig(topology="tp", unsafe="fm04-throw-after-header"))


def test_kv_ring_indices_and_eviction():
    r = KVRing(capacity=8, heads=1, head_dim=2, device=CPU)
    k = torch.ones(1, 4, 1, 2)
    _, _, past, ev = r.update(k, k, 0)
    assert (r.global_end, r.local_end, past, ev) == (4, 4, 0, 0)
    _, _, past, ev = r.update(2 * k, 2 * k, 4)
    assert (r.global_end, r.local_end, past, ev) == (8, 8, 4, 0)
    kc, _, past, ev = r.update(3 * k, 3 * k, 4)  # a second denoise step overwrites, no advance
    assert (r.global_end, r.local_end, past, ev) == (8, 8, 4, 0) and kc[0, 4, 0, 0] == 3
    kc, _, past, ev = r.update(4 * k, 4 * k, 8)  # overflow: roll out the oldest 4 tokens
    assert (r.global_end, r.local_end, past, ev) == (12, 8, 4, 4)
    assert kc[0, 0, 0, 0] == 3 and kc[0, 4, 0, 0] == 4
    with pytest.raises(RuntimeError, match="KV gap"):
        r.update(k, k, 20)


def test_planner_lifecycle_bits():
    p = Planner(RunConfig(recompute_every=2, prompt_every=3))
    bits = []
    for k in range(7):
        if k == 4:
            p.hard_cut()
        m = p.plan(k)
        bits.append((m.meta["init_cache"], m.meta["do_kv_recompute"], m.meta["reset_crossattn_cache"],
                     m.meta["cache_epoch"], m.meta["current_start_frame"]))
        p.commit(m)
        p.observe(m.meta, m.tensors["latents"])
    assert bits == [(True, False, False, 0, 0), (False, False, False, 0, 2), (False, True, False, 0, 4),
                    (False, False, True, 0, 6), (True, False, False, 1, 0), (False, False, False, 1, 2),
                    (False, True, True, 1, 4)]
