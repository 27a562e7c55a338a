"""The TP family's adapter (spec ``tp``, TP v1.1): which trace events are which spec observables, the IDs
an observable must carry, the plan hint, and the spec parameters of a run.  See conformance/mapping.py
for the rules every family follows; this module holds everything that names TP's spec transitions."""
from __future__ import annotations

from ...tracefmt import schema as S
from ..mapping import GEN_PURPOSES, Adapter, Obs, _Builder, _ids, _next_event, kv_record_ids

# impl preflight step -> TP spec preflight step (fault raise@<step>)
TP_PREFLIGHT = {"validate": "validate", "serialize_meta": "pickle", "tensor_specs": "specs", "dtype_map": "dtype",
                "materialize": "dtype"}
# header action -> the leader's spec transition
HEADER_NAMES = {("tp", "tp_rank0"): {"INFER": "send_header", "NOOP": "heartbeat", "SHUTDOWN": "shutdown"}}

# spec transitions that must be matched by an observable, per role name
OBSERVED = {
    "leader": frozenset({
        "parity_handshake", "heartbeat", "shutdown", "preflight_ok", "send_header", "send_meta_size", "send_meta",
        "send_tensor", "generator_all_reduce", "call_count_check", "emit", "meta_pickle_fails", "tensor_dtype_fails",
        "adhoc_broadcast", "tripwire_fires", "phase_a@cut", "preflight_fail@validate", "preflight_fail@pickle", "preflight_fail@specs", "preflight_fail@dtype"}),
    "worker": frozenset({
        "parity_handshake", "recv_header", "recv_meta_size", "recv_meta", "recv_tensor", "generator_all_reduce",
        "call_count_check", "debug_digest", "adhoc_broadcast", "tripwire_fires"}),
    "stopper": frozenset({"broadcast_shutdown"}),
}
# manifest fault -> the spec faults that explain it
SPEC_FAULTS = {"om-01": "raise@pickle", "om-02": "raise@validate,raise@dtype", "om-03": "raise@validate",
               "om-10": "raise@validate", "om-04": "env-drift", "om-05": "env-drift", "c-01": "env-drift", "om-13": "crash",
               "om-06": "tripwire", "om-11": "tripwire", "om-12": "tripwire"}


class TPAdapter(Adapter):
    family = "tp"
    topologies = ("tp",)
    observed_table = OBSERVED
    spec_faults = SPEC_FAULTS
    # TP's Phase A choosing a hard cut is recorded (``hard_cut``): the choice (recompute, steps, hard_cut)
    # with a true hard_cut renames the step phase_a@cut
    ids_after = frozenset({"phase_a@cut"})

    def step_name(self, role: str, tname: str, choice) -> str:
        if role == "leader" and tname == "phase_a" and choice is not None and bool(choice[2]):
            return "phase_a@cut"
        return tname

    def bind_ids(self, role: str, tname: str, v, g) -> dict | None:
        """The spec's (chunk_index, cache_epoch) an observable of this transition must carry, or None
        (no check).  Local transitions are checked before they fire, ops after they complete."""
        if v is None or tname in ("heartbeat", "shutdown"):
            return None
        if tname in ("preflight_ok", "phase_a@cut"):  # the spec bumps cache_epoch at the commitment point, the impl in Phase A
            return {"chunk_index": v.chunk_index} if tname == "preflight_ok" else None
        if tname == "call_count_check":  # the chunk's place in the cache timeline, against the rank's cache_advance
            return {"chunk_index": v.chunk_index, "cache_epoch": v.cache_epoch, "kv_epoch": v.cache_epoch,
                    "kv_appended_at": v.start_frame}
        return {"chunk_index": v.chunk_index, "cache_epoch": v.cache_epoch}

    def plan_hint(self, role: str, tname: str, seq: list, cursor: int, v, mapped):
        """(recompute, steps, hard_cut) the leader's upcoming observables reveal, to try first."""
        if tname != "phase_a" or role != "leader":
            return None
        cut = cursor < len(seq) and "phase_a@cut" in seq[cursor].names
        rec = False
        steps = 0
        for o in seq[cursor:]:
            if "call_count_check" in o.names or "emit" in o.names or "preflight_fail@validate" in o.names:
                break
            if "generator_all_reduce" in o.names:
                if o.label.startswith("generator_call recompute"):
                    rec = True
                else:
                    steps += 1
        return (rec, steps, cut)

    def map_rank(self, b: _Builder, role: str):
        """A generator: one step per event of the rank (the map of a streamed trace is pulled as the
        replay needs it)."""
        return _map_tp(b, role)

    def params(self, manifest: dict, mapped, common: dict) -> tuple[str, dict]:
        cfg = manifest["config"]
        noops = mapped.noops((0, "main"))
        return "tp", {"ranks": manifest["world_size"], "chunks": common["chunks"], "steps": int(cfg.get("steps", 4)),
                      "reduces": 1, "heartbeats": max(1, noops), "hard_cuts": common["hard_cut"], "faults": common["faults"],
                      "max_faults": common["max_faults"]}


ADAPTER = TPAdapter()


def _map_tp(b: _Builder, role: str) -> None:
    lead = role == "tp_rank0"
    ev = b.events
    gen: Obs | None = None
    kv_ids: dict | None = None  # this Phase B's cache_advance (checked at its phase_b_end)
    for e in ev:
        yield
        k = e["ev"]
        if b.tripwire("main", e):
            gen = None
        if k == S.COMM_ENTER:
            p = e.get("purpose", "")
            if p in GEN_PURPOSES:
                gen = b.op_obs("main", "generator_all_reduce", e, fold_into=gen)
                kv_ids = None  # (a Phase B's calls: its own cache_advance comes after them)
                continue
            gen = None
            if p in ("parity_size", "load_ok", "plan", "input_digest") or p.startswith("digest") or p.startswith("fingerprint"):
                continue  # impl-only detail, checked by c10d matching
            if p == "parity":
                b.op_obs("main", "parity_handshake", e)
            elif p == "header":
                h = _next_event(ev, e["i"], (S.HEADER_SENT, S.HEADER_RECV))
                action = h["action"] if h else None
                if lead:
                    names = HEADER_NAMES[("tp", "tp_rank0")].get(action or "", "send_header|heartbeat|shutdown")
                else:
                    names = "recv_header"
                o = b.op_obs("main", names, e)
                o.action, o.ids = action, (_ids(h) if h and action == "INFER" else None)
            elif p == "meta_size":
                b.op_obs("main", "send_meta_size" if lead else "recv_meta_size", e)
            elif p == "meta":
                b.op_obs("main", "send_meta" if lead else "recv_meta", e)
            elif p.startswith("tensor:"):
                b.op_obs("main", "send_tensor" if lead else "recv_tensor", e)
            elif p == "adhoc":
                b.op_obs("main", "adhoc_broadcast", e)
            else:
                b.op_obs("main", f"<impl op {p}>", e)  # no spec counterpart: the replay reports it
        elif k == S.GENERATOR_CALL:
            if gen is not None:
                gen.ids = _ids(e)
                gen.lines.append(e["i"])
                gen.label = f"generator_call {e.get('kind')} #{e.get('call_index')}"
            gen = None
        elif k == S.HARD_CUT and lead:
            b.add("main", "phase_a@cut", e, ids={"cache_epoch": e["new_epoch"]})
        elif k == S.PREFLIGHT_OK and lead:
            b.add("main", "preflight_ok", e, ids=_ids(e))
        elif k == S.PREFLIGHT_FAIL and lead:
            if e.get("after_header"):
                b.add("main", "meta_pickle_fails|tensor_dtype_fails", e)
            else:
                b.add("main", f"preflight_fail@{TP_PREFLIGHT.get(e['step'], e['step'])}", e, ids=None)
        elif k == S.CACHE_ADVANCE:
            kv_ids = kv_record_ids(e, b.units)
        elif k == S.PHASE_B_END:
            b.add("main", "call_count_check", e, ids={**_ids(e), **(kv_ids or {})})
            kv_ids = None
        elif k == S.CHUNK_EMITTED:
            b.add("main", "emit", e, ids=_ids(e))
        elif k == S.RANK_EXIT:
            b.exit_obs("main", e)
