"""The PP family's adapter (specs ``pp0`` and ``pp1``): which trace events are which spec observables, the
IDs an observable must carry, the plan hint, and the spec parameters of a run.  See
conformance/mapping.py for the rules every family follows; this module holds everything that names
PP's spec transitions."""
from __future__ import annotations

from ...tracefmt import schema as S
from ..mapping import GEN_PURPOSES, Adapter, Obs, _Builder, _next_event, kv_record_ids, kv_units

# header action -> the sender's spec transition (rank 0's comms thread; the mesh leader's broadcast)
HEADER_NAMES = {
    ("pp", "stage0"): {"INFER": "send_header", "NOOP": "keepalive", "SHUTDOWN": "send_shutdown"},
    ("pp", "leader-mesh"): {"INFER": "mesh_header", "NOOP": "relay_noop", "SHUTDOWN": "relay_shutdown",
                            "ERROR": "watchdog_error|broadcast_error"},
}

OBSERVED = {
    "stage0": frozenset({
        "parity_handshake", "all_reduce_load_ok", "preflight_fail", "preflight_rejects", "preflight_ok_enqueue", "hard_cut",
        "drain_result", "send_shutdown"}),
    "comms": frozenset({
        "keepalive", "send_header", "send_meta", "send_tensors", "recv_result_header", "recv_latents"}),
    "leader": frozenset({
        "parity_handshake", "all_reduce_load_ok", "recv_header", "recv_meta", "recv_tensors", "validate_ok",
        "validation_fails", "validation_rejects", "watchdog_error", "relay_noop", "relay_shutdown", "broadcast_error",
        "reject_reply", "mesh_header", "mesh_meta", "mesh_tensors", "generator_all_reduce", "generator_call",
        "call_count_check", "result_preflight_fails", "result_preflight_ok", "send_result_header", "send_latents",
        "tripwire_fires"}),
    "worker": frozenset({
        "parity_handshake", "all_reduce_load_ok", "recv_mesh_header", "recv_mesh_meta", "recv_mesh_tensors",
        "generator_all_reduce", "call_count_check", "tripwire_fires"}),
}
# PP0's Stage 1 records no envelope-validation event (it has no mesh to broadcast to)
OBSERVED_PP0_LEADER = OBSERVED["leader"] - {"validate_ok"}
SPEC_FAULTS = {"om-01": "raise@preflight", "om-02": "raise@preflight", "om-03": "raise@preflight", "om-10": "raise@preflight",
               "om-07": "reject@leader", "om-13": "crash", "om-09": "none",
               "om-04": "env-drift", "om-05": "env-drift", "c-01": "env-drift",
               "om-06": "tripwire", "om-08": "tripwire", "om-11": "tripwire", "om-12": "tripwire"}


class PPAdapter(Adapter):
    family = "pp"
    topologies = ("pp0", "pp1")
    observed_table = OBSERVED
    spec_faults = SPEC_FAULTS
    ids_after = frozenset({"hard_cut"})  # a hard cut records the new epoch

    def observed(self, topology: str, role: str, produced: set | None = None) -> frozenset:
        if topology == "pp0" and role == "leader":
            base = OBSERVED_PP0_LEADER
            return self._optional(base, produced)
        return super().observed(topology, role, produced)

    def bind_ids(self, role: str, tname: str, v, g) -> dict | None:
        """The spec's (chunk_index, cache_epoch) an observable of this transition must carry, or None."""
        if v is None:
            return None
        if role == "stage0":
            if tname == "hard_cut":
                return {"cache_epoch": v.cache_epoch}
            if tname == "drain_result":
                if not g.d_out:
                    return None
                res = g.d_out[0]
                return {"chunk_index": res.chunk_index, "cache_epoch": res.cache_epoch}
            if tname == "preflight_ok_enqueue" and v.env is not None:
                return {"chunk_index": v.env.chunk_index, "cache_epoch": v.env.cache_epoch}
            return None
        if role == "comms":
            if v.env is None:
                return None
            return {"chunk_index": v.env.chunk_index, "cache_epoch": v.env.cache_epoch}
        if role == "worker" and tname == "recv_mesh_header":
            return None
        if tname == "call_count_check" and getattr(v, "kv", None) is not None:
            # the KV lifecycle state this rank's Phase B left (apply_lifecycle), against its cache_advance:
            # the epoch and the positions in the chunk timeline, what mesh ranks must agree on.  (Not the
            # position inside the ring: the impl's recompute re-encodes its context frames there, which the
            # spec abstracts to the identity of the call's inputs)
            kv = v.kv
            return {"chunk_index": v.chunk_index, "cache_epoch": v.cache_epoch, "kv_epoch": kv.cache_epoch,
                    "kv_appended_at": kv.start_frame - 1, "kv_start_frame": kv.start_frame, "kv_global_end": kv.global_end}
        return {"chunk_index": v.chunk_index, "cache_epoch": v.cache_epoch}

    def plan_hint(self, role: str, tname: str, seq: list, cursor: int, v, mapped):
        """PP's plan choice is the recompute flag: true for a chunk some rank ran a recompute call for
        (the hard cut is its own observed transition)."""
        if role != "stage0" or tname != "phase_a" or v is None:
            return None
        return (getattr(v, "next_chunk", None), getattr(v, "cache_epoch", None)) in mapped.recompute_chunks

    def map_rank(self, b: _Builder, role: str):
        """A generator: one step per event of the rank (the map of a streamed trace is pulled as the
        replay needs it)."""
        return _map_pp(b, role)

    def params(self, manifest: dict, mapped, common: dict) -> tuple[str, dict]:
        cfg = manifest["config"]
        topo = manifest["topology"]
        noops = mapped.noops((0, "comms"))
        params = {"chunks": common["chunks"], "depth": int(cfg.get("d_in", 2)), "hard_cuts": 1 if common["hard_cut"] else 0,
                  "recompute": "R0a", "keepalives": max(1, noops), "patience": 1, "ring": 2, "faults": common["faults"],
                  "max_faults": common["max_faults"]}
        if topo == "pp1":
            params["mesh"] = manifest["world_size"] - 1
        return topo, params


ADAPTER = PPAdapter()


def _map_pp(b: _Builder, role: str) -> None:
    ev = b.events
    r0 = role == "stage0"
    leader = role in ("mesh_leader", "stage1")
    startup = True
    fold: Obs | None = None      # tensors of one message
    gen: Obs | None = None       # generator calls of one Phase B (denoise calls fold into one)
    gen_kind = None
    kv_ids: dict | None = None   # this Phase B's cache_advance, in the spec's units (checked at phase_b_end)
    for e in ev:
        yield
        k = e["ev"]
        if b.tripwire("main", e):
            fold = gen = None
        if k == S.COMM_ENTER:
            p = e.get("purpose", "")
            if p in GEN_PURPOSES:
                continue  # attributed to the generator_call event that follows
            thread = "main" if (not r0 or startup) else "comms"
            if p in ("parity_size", "plan", "input_digest") or p.startswith("digest") or p.startswith("fingerprint"):
                fold = None
                continue
            if p == "parity":
                b.op_obs("main", "parity_handshake", e)
            elif p == "load_ok":
                b.op_obs("main", "all_reduce_load_ok", e)
                startup = False
            elif p == "header":
                fold = None
                h = _next_event(ev, e["i"], (S.HEADER_SENT, S.HEADER_RECV))
                action = h["action"] if h else None
                if r0:
                    names = HEADER_NAMES[("pp", "stage0")].get(action or "", "send_header|keepalive|send_shutdown")
                    thread = "main" if action == "SHUTDOWN" else "comms"
                elif leader and e["op"] == "broadcast":
                    names = HEADER_NAMES[("pp", "leader-mesh")].get(action or "", "mesh_header|relay_noop|relay_shutdown")
                elif leader:
                    names = "recv_header"
                else:
                    names = "recv_mesh_header"
                o = b.op_obs(thread, names, e)
                o.action = action
                if h is not None and action == "INFER":
                    o.ids = {x: h[x] for x in ("chunk_index", "cache_epoch")}
            elif p == "result_header":
                fold = None
                if r0:
                    o = b.op_obs(thread, "recv_result_header", e)
                    rr = _next_event(ev, e["i"], (S.RESULT_RECV,), stop_at_comm=False)
                    o.ok = rr["ok"] if rr is not None else None
                else:
                    rs = _next_event(ev, e["i"], (S.RESULT_SENT,), stop_at_comm=False)
                    names = "send_result_header" if (rs is None or rs["ok"]) else "reject_reply|result_preflight_fails"
                    o = b.op_obs(thread, names, e)
                    o.ok = rs["ok"] if rs is not None else None
                if o.ok is False:
                    fold = o  # an ok=False result's meta (the error message) is part of the spec's one result message
            elif p in ("meta_size", "meta") or p.startswith("tensor:"):
                payload_of_result = (r0 and e["op"] in ("recv", "irecv")) or (leader and e["op"] in ("send", "isend"))
                if payload_of_result and fold is not None and fold.ok is False:
                    b.op_obs(thread, fold.names, e, fold_into=fold)
                    continue
                if payload_of_result:
                    # meta_size, meta and latents_out of a result: the spec's one latents message
                    name = "recv_latents" if r0 else "send_latents"
                    if fold is not None and name in fold.names:
                        b.op_obs(thread, name, e, fold_into=fold)
                    else:
                        fold = b.op_obs(thread, name, e)
                    continue
                bcast = e["op"] == "broadcast"
                if p in ("meta_size", "meta"):
                    # the size pre-exchange and the meta bytes are the spec's one meta message (a rank
                    # stranded in the size exchange is stranded in the spec's meta op)
                    name = ("mesh_meta" if leader else "recv_mesh_meta") if bcast else ("send_meta" if r0 else "recv_meta")
                    if p == "meta" and fold is not None and name in fold.names and fold.op and fold.op["purpose"] == "meta_size":
                        b.op_obs(thread, name, e, fold_into=fold)
                    else:
                        fold = b.op_obs(thread, name, e)
                    if p == "meta":
                        fold = None
                    continue
                name = ("mesh_tensors" if leader else "recv_mesh_tensors") if bcast else ("send_tensors" if r0 else "recv_tensors")
                if fold is not None and name in fold.names:
                    b.op_obs(thread, name, e, fold_into=fold)
                else:
                    fold = b.op_obs(thread, name, e)
            else:
                fold = None
                b.op_obs(thread, f"<impl op {p}>", e)
        elif k == S.GENERATOR_CALL:
            fold = None
            kind = e.get("kind")
            parts = b.gen_parts()
            if gen is not None and kind == "denoise" and gen_kind == "denoise":
                gen.lines.append(e["i"])
                if gen.op is not None:
                    for c in parts:
                        b.op_obs("main", gen.names, c, fold_into=gen)
                continue
            kv_ids = None  # (a new Phase B: its own cache_advance comes after its calls)
            if parts:
                gen = b.op_obs("main", "generator_all_reduce", parts[0])
                for c in parts[1:]:
                    b.op_obs("main", "generator_all_reduce", c, fold_into=gen)
                gen.lines.append(e["i"])
            else:  # PP0: Stage 1 runs the generator locally (no collectives)
                gen = b.add("main", "generator_call", e)
            gen.ids, gen_kind = {x: e[x] for x in ("chunk_index", "cache_epoch")}, kind
            gen.label = f"generator_call {kind}"
        elif k == S.CACHE_ADVANCE and not r0:
            kv_ids = kv_record_ids(e, b.units)
        elif k == S.PHASE_B_END:
            gen = None
            b.add("main", "call_count_check", e, ids={**{x: e[x] for x in ("chunk_index", "cache_epoch")}, **(kv_ids or {})})
            kv_ids = None
        elif k == S.PREFLIGHT_OK:
            gen = None
            what = e.get("what")
            if r0 and what == "envelope":
                b.add("main", "preflight_ok_enqueue", e, ids={x: e[x] for x in ("chunk_index", "cache_epoch")})
            elif leader and what == "mesh_envelope":
                b.add("main", "validate_ok", e)
            elif leader and what == "result":
                b.add("main", "result_preflight_ok", e)
        elif k == S.HARD_CUT and r0:
            b.add("main", "hard_cut", e, ids={"cache_epoch": e["new_epoch"]})
        elif k == S.PREFLIGHT_FAIL and r0:
            b.add("main", "preflight_fail|preflight_rejects", e)
        elif k == S.VALIDATION_FAIL and leader:
            b.add("main", "validation_fails|validation_rejects", e)
        elif k in (S.RESULT_ACCEPTED, S.RESULT_DROPPED) and r0:
            o = b.add("main", "drain_result", e, ids={x: e[x] for x in ("chunk_index", "cache_epoch")})
            o.effect = "accepted" if k == S.RESULT_ACCEPTED else "dropped"
        elif k == S.RANK_EXIT:
            b.exit_obs("main", e)
