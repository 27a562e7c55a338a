"""The abstraction map: recorded trace events -> spec observables, one table per topology.

The implementation is finer-grained than the specs.  This module is the one place that says how a
trace event corresponds to a spec step, so a spec change needs at most an edit here.  It produces,
per spec actor (a rank's thread), a sequence of ``Obs``: each names the spec transitions that may
explain it, and carries what the replay checks against the spec (the op's kind, group, group-local
peer and, where the spec is concrete, dtype/shape; the IDs after the step; the op's outcome).

Rules (every topology):
- a comm op maps by (role, purpose) to the spec transition that issues the corresponding op, or to
  ``skip`` for impl-only detail (size pre-exchanges, the impl's extra plan/startup collectives).
  Skipped ops are still checked by c10d matching (fabric_check.py), never silently ignored.
- ``fold``: several consecutive impl ops that the spec issues as one op (the tensors of one envelope
  in PP, the all_reduces of one generator call, the denoise calls of one Phase B in PP whose spec
  models one denoise step) become one observable; its outcome is failed if any part failed.
- protocol events map to spec local transitions (preflight, validation, result acceptance, the
  call-count check, emit); header/result events annotate the op before them (IDs and action are
  checked when the op completes).
- faults: ``preflight_fail`` -> the spec's raise@<step> fault transition; ``validation_fail`` on the
  leader -> reject@leader; a pre-Phase-B runtime tripwire -> ``tripwire_fires`` (TRIPWIRE_KINDS, TRIPWIRE_EXC); a rank_exit ``killed`` -> ``crash``; a failed op -> the spec's peer-error
  ("e") or timeout ("x") step; ``rank_exit`` -> the actor's terminal state (clean -> DONE, exception or
  timeout -> FAILED, or a role's own terminal state such as SERVER_IDLE).
- an ``isend`` may take effect any time between its post and its wait (its comm_exit): the replay
  may defer it up to there (rank0's comms thread keeps up to D_in envelopes on the wire).
Spec transitions not listed in ``OBSERVED`` for their role are unobserved: the replay takes them as
needed (Phase A's plan choice, queue moves, the spec's new_group and startup barrier ops).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import schema as S

GEN_PURPOSES = frozenset({"qnorm", "knorm", "attn_out", "xattn_out", "ffn_out"})

# spec transitions that must be matched by an observable, per (topology, role name)
OBSERVED: dict[tuple[str, str], frozenset] = {
    ("tp", "leader"): frozenset({
        "parity_handshake", "heartbeat", "shutdown", "preflight_ok", "send_header", "send_meta_size", "send_meta",
        "send_tensor", "generator_all_reduce", "call_count_check", "emit", "meta_pickle_fails", "tensor_dtype_fails",
        "adhoc_broadcast", "tripwire_fires", "phase_a@cut", "preflight_fail@validate", "preflight_fail@pickle", "preflight_fail@specs", "preflight_fail@dtype"}),
    ("tp", "worker"): frozenset({
        "parity_handshake", "recv_header", "recv_meta_size", "recv_meta", "recv_tensor", "generator_all_reduce",
        "call_count_check", "debug_digest", "adhoc_broadcast", "tripwire_fires"}),
    ("tp", "stopper"): frozenset({"broadcast_shutdown"}),
    ("pp", "stage0"): frozenset({
        "parity_handshake", "all_reduce_load_ok", "preflight_fail", "preflight_rejects", "preflight_ok_enqueue", "hard_cut",
        "drain_result", "send_shutdown"}),
    ("pp", "comms"): frozenset({
        "keepalive", "send_header", "send_meta", "send_tensors", "recv_result_header", "recv_latents"}),
    ("pp", "leader"): frozenset({
        "parity_handshake", "all_reduce_load_ok", "recv_header", "recv_meta", "recv_tensors", "validate_ok",
        "validation_fails", "validation_rejects", "watchdog_error", "relay_noop", "relay_shutdown", "broadcast_error",
        "reject_reply", "mesh_header", "mesh_meta", "mesh_tensors", "generator_all_reduce", "generator_call",
        "call_count_check", "result_preflight_fails", "result_preflight_ok", "send_result_header", "send_latents",
        "tripwire_fires"}),
    ("pp", "worker"): frozenset({
        "parity_handshake", "all_reduce_load_ok", "recv_mesh_header", "recv_mesh_meta", "recv_mesh_tensors",
        "generator_all_reduce", "call_count_check", "tripwire_fires"}),
}
# PP0's Stage 1 records no envelope-validation event (it has no mesh to broadcast to)
OBSERVED[("pp0", "leader")] = OBSERVED[("pp", "leader")] - {"validate_ok"}


# records a rank may not write at all in some configurations (e.g. the unsafe fm04 build preflights
# after the header and writes no preflight_ok): when a rank's trace has none of them, the spec
# transition is unobserved for that rank; one missing among several present is still a mismatch
OPTIONAL_RECORDS = frozenset({"preflight_ok", "validate_ok", "result_preflight_ok", "phase_a@cut", "hard_cut"})

# a free transition whose choice is observed: TP's Phase A choosing a hard cut is recorded (``hard_cut``);
# (family, role, transition) -> predicate on the choice; a true predicate renames the step <name>@cut.
# (PP's hard cut is its own spec transition ``hard_cut`` on rank0's main thread, observed directly.)
CHOICE_OBSERVED = {
    ("tp", "leader", "phase_a"): lambda ch: bool(ch[2]),
}
# local steps whose recorded IDs are the ones *after* the step (a hard cut records the new epoch)
IDS_AFTER = frozenset({"phase_a@cut", "hard_cut"})


def observed_for(topology: str, role: str, produced: set | None = None) -> frozenset:
    fam = "tp" if topology == "tp" else "pp"
    base = OBSERVED.get((topology, role), OBSERVED.get((fam, role), frozenset()))
    if produced is not None:
        base = base - (OPTIONAL_RECORDS - produced)
    return base


# runtime tripwires that fire on a mesh rank before its first Phase-B collective: the spec fault
# ``tripwire`` (transition ``tripwire_fires``).  ``tripwire`` records of these kinds, and exits raising
# one of TRIPWIRE_EXC (om-06's in-block broadcast guard, om-08's group check, which write no
# ``tripwire`` record: the observable is anchored at the rank's ``fault_injected``).
TRIPWIRE_KINDS = frozenset({"input_digest", "fingerprint", "plan"})
TRIPWIRE_EXC = frozenset({"ForbiddenOpError", "WrongGroupError"})

# events that show a rank met an error before it exited raising (see _Builder.exit_obs)
ERROR_SIGNS = frozenset({S.VALIDATION_FAIL, S.PREFLIGHT_FAIL, S.TRIPWIRE, S.WATCHDOG_FIRED, S.FAULT_INJECTED, S.PARITY_FAIL,
                         S.REQUEST_FAILED})

# impl preflight step -> TP spec preflight step (fault raise@<step>)
TP_PREFLIGHT = {"validate": "validate", "serialize_meta": "pickle", "tensor_specs": "specs", "dtype_map": "dtype",
                "materialize": "dtype"}

# manifest fault -> the spec faults that explain it (the spec is built with exactly these enabled)
SPEC_FAULTS: dict[str, dict[str, str]] = {
    "tp": {"om-01": "raise@pickle", "om-02": "raise@validate,raise@dtype", "om-03": "raise@validate",
           "om-10": "raise@validate", "om-04": "env-drift", "om-05": "env-drift", "c-01": "env-drift", "om-13": "crash",
           "om-06": "tripwire", "om-11": "tripwire", "om-12": "tripwire"},
    "pp": {"om-01": "raise@preflight", "om-02": "raise@preflight", "om-03": "raise@preflight", "om-10": "raise@preflight",
           "om-07": "reject@leader", "om-13": "crash", "om-09": "none",
           "om-04": "env-drift", "om-05": "env-drift", "c-01": "env-drift",
           "om-06": "tripwire", "om-08": "tripwire", "om-11": "tripwire", "om-12": "tripwire"},
}
# (topology, fault) -> why the impl's run of it does not conform to the spec (a known disagreement the
# replay finds on its own; the note makes the report say why, the replay's first unexplained event says where)
KNOWN_NONCONFORMING: dict[tuple[str, str], str] = {}
# --unsafe switch -> spec variant (the spec and the checker's counterexample class)
UNSAFE_VARIANT = {"fm04-throw-after-header": "fm04-throw-after-header", "om07-leader-throws": "om07-leader-throws",
                  "om09-no-epoch-fence": "om09-no-epoch-fence"}

HEADER_NAMES = {
    ("tp", "tp_rank0"): {"INFER": "send_header", "NOOP": "heartbeat", "SHUTDOWN": "shutdown"},
    ("pp", "stage0"): {"INFER": "send_header", "NOOP": "keepalive", "SHUTDOWN": "send_shutdown"},
    ("pp", "leader-mesh"): {"INFER": "mesh_header", "NOOP": "relay_noop", "SHUTDOWN": "relay_shutdown",
                            "ERROR": "watchdog_error|broadcast_error"},
}


@dataclass
class Obs:
    """One spec observable of one actor."""
    names: frozenset            # spec transition names that may explain it
    rank: int
    thread: str
    lines: list                 # trace event indices (0-based) it explains; lines[0] is the anchor
    t: float
    kind: str = "step"          # step | exit | crash
    op: dict | None = None      # kind, group, peer (group-local), dtype, shape  (for op transitions)
    outcome: str = "ok"         # ok | failed | pending (no exit recorded)
    ids: dict | None = None     # IDs checked after the step (or after the op completes)
    action: str | None = None   # header action carried by the op
    how: str | None = None      # rank_exit how
    defer_until: int | None = None  # isend: trace index of its wait; may take effect until then
    label: str = ""
    effect: str | None = None   # drain_result: accepted | dropped (the spec must decide the same)
    ok: bool | None = None      # result header: the ok flag it carried

    @property
    def line(self) -> int:
        return self.lines[0]


@dataclass
class Mapped:
    topology: str
    family: str                              # tp | pp
    per_actor: dict[tuple[int, str], list[Obs]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # (chunk_index, cache_epoch) of every chunk some rank ran a recompute call for: PP's plan hint
    recompute_chunks: frozenset = frozenset()

    def produced(self, key) -> set:
        return {n for o in self.per_actor.get(key, []) for n in o.names}


def _ids(e: dict) -> dict:
    return {k: e[k] for k in ("call_id", "chunk_index", "cache_epoch") if k in e}


def _exits(events: list[dict]) -> dict[int, dict]:
    """comm_enter index -> its comm_exit event (matched by op, group, seq in FIFO order)."""
    open_: dict[tuple, list[int]] = {}
    out: dict[int, dict] = {}
    for e in events:
        if e["ev"] == S.COMM_ENTER:
            open_.setdefault((e["op"], e["group"], e["seq"]), []).append(e["i"])
        elif e["ev"] == S.COMM_EXIT:
            q = open_.get((e["op"], e["group"], e["seq"]))
            if q:
                out[q.pop(0)] = e
    return out


def _peer(e: dict) -> int:
    if e["op"] in ("send", "isend"):
        return e.get("dst", -1)
    if e["op"] in ("recv", "irecv", "broadcast"):
        return e.get("src", -1)
    return -1


def _spec_kind(op: str) -> str:
    return {"isend": "send", "irecv": "recv"}.get(op, op)


def _next_event(events: list[dict], i: int, kinds: tuple, stop_at_comm: bool = True) -> dict | None:
    """The first event of ``kinds`` after index i, before the next comm_enter (the op's annotation)."""
    for e in events[i + 1:]:
        if e["ev"] in kinds:
            return e
        if stop_at_comm and e["ev"] == S.COMM_ENTER:
            return None
    return None


class _Builder:
    def __init__(self, family: str, rank: int, events: list[dict], truncated: bool):
        self.family, self.rank, self.events = family, rank, events
        self.exits = _exits(events)
        self.out: dict[str, list[Obs]] = {}
        self.truncated = truncated
        self.trip_anchor = _tripwire_anchor(events)

    def tripwire(self, thread: str, e: dict) -> bool:
        """Add the ``tripwire_fires`` observable if ``e`` is this rank's runtime-tripwire point."""
        if e["i"] != self.trip_anchor:
            return False
        label = (f"tripwire {e.get('kind')}" if e["ev"] == S.TRIPWIRE else
                 f"{e['ev']} {e.get('fault', e.get('exc_type', ''))} (runtime tripwire: the rank raises before Phase B)")
        self.add(thread, "tripwire_fires", e, label=label)
        return True

    def add(self, thread: str, names, e: dict, **kw) -> Obs:
        if isinstance(names, str):
            names = frozenset(names.split("|"))
        o = Obs(names=frozenset(names), rank=self.rank, thread=thread, lines=[e["i"]], t=e["t"], **kw)
        if not o.label:
            o.label = e["ev"] + (f" {e.get('op')} {e.get('purpose', '')}" if e["ev"] == S.COMM_ENTER else "")
        self.out.setdefault(thread, []).append(o)
        return o

    def op_obs(self, thread: str, names, e: dict, fold_into: Obs | None = None) -> Obs:
        ex = self.exits.get(e["i"])
        outcome = "pending" if ex is None else ("ok" if ex["ok"] else "failed")
        if fold_into is not None:
            fold_into.lines.append(e["i"])
            if ex is not None:
                fold_into.lines.append(ex["i"])
            if fold_into.outcome == "ok" or outcome == "failed":
                fold_into.outcome = outcome if fold_into.outcome != "failed" else "failed"
            if e["op"] == "isend" and ex is not None:
                fold_into.defer_until = max(fold_into.defer_until or 0, ex["i"])
            # a folded op must stay on the same group and peer as its first part
            if fold_into.op and (fold_into.op["group"] != e["group"] or fold_into.op["peer"] != _peer(e)
                                 or fold_into.op["kind"] != _spec_kind(e["op"])):
                fold_into.op["mixed"] = f"line {e['i'] + 1}: {e['op']} group={e['group']} peer={_peer(e)}"
            return fold_into
        op = {"kind": _spec_kind(e["op"]), "group": e["group"], "peer": _peer(e), "dtype": e.get("dtype"),
              "shape": tuple(e.get("shape") or ()), "purpose": e.get("purpose")}
        o = self.add(thread, names, e, op=op, outcome=outcome)
        if ex is not None:
            o.lines.append(ex["i"])
            if e["op"] == "isend":
                o.defer_until = ex["i"]
        return o

    def exit_obs(self, thread: str, e: dict) -> None:
        if e["how"] == "interrupted":
            return  # a signal ended the run: the trace is a prefix, nothing for the spec to explain here
        if e["how"] == "killed":
            self.add(thread, frozenset({"crash"}), e, kind="crash", how="killed")
        else:
            o = self.add(thread, frozenset({"exit"}), e, kind="exit", how=e["how"])
            # an exception exit where the spec's actor is DONE is the impl raising on an ERROR action:
            # only when the rank saw one (an ERROR header, a failed op, a rejection or a tripwire)
            o.ok = any(x["ev"] in ERROR_SIGNS or (x["ev"] in (S.HEADER_RECV, S.HEADER_SENT) and x.get("action") == "ERROR")
                       or (x["ev"] == S.COMM_EXIT and not x["ok"]) for x in self.events[:e["i"]])


def _tripwire_anchor(events: list[dict]) -> int | None:
    """Trace index of the rank's runtime tripwire (mapped to the spec's ``tripwire_fires``), or None:
    the first ``tripwire`` record of a pre-Phase-B kind, else, for a rank that exits raising one of
    TRIPWIRE_EXC (no record of its own), its last ``fault_injected`` before the exit (or the exit)."""
    for e in events:
        if e["ev"] == S.TRIPWIRE and e.get("kind") in TRIPWIRE_KINDS:
            return e["i"]
    last = events[-1] if events else None
    if last is None or last["ev"] != S.RANK_EXIT or last.get("exc_type") not in TRIPWIRE_EXC:
        return None
    for e in reversed(events):
        if e["ev"] == S.FAULT_INJECTED:
            return e["i"]
    return last["i"]


def map_run(run: S.RunTrace) -> Mapped:
    topo = run.manifest["topology"]
    family = "tp" if topo == "tp" else "pp"
    m = Mapped(topology=topo, family=family)
    m.recompute_chunks = frozenset((e["chunk_index"], e["cache_epoch"]) for tr in run.ranks.values() for e in tr.events
                                   if e["ev"] == S.GENERATOR_CALL and e.get("kind") == "recompute")
    for r, tr in sorted(run.ranks.items()):
        role = run.manifest["roles"].get(str(r), "")
        b = _Builder(family, r, tr.events, tr.truncated)
        if family == "tp":
            _map_tp(b, role)
        else:
            _map_pp(b, role)
        for thread, obs in b.out.items():
            m.per_actor[(r, thread)] = obs
    return m


# ----------------------------------------------------------------------------------- TP v1.1
def _map_tp(b: _Builder, role: str) -> None:
    lead = role == "tp_rank0"
    ev = b.events
    gen: Obs | None = None
    for e in ev:
        k = e["ev"]
        if b.tripwire("main", e):
            gen = None
        if k == S.COMM_ENTER:
            p = e.get("purpose", "")
            if p in GEN_PURPOSES:
                gen = b.op_obs("main", "generator_all_reduce", e, fold_into=gen)
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
        elif k == S.PHASE_B_END:
            b.add("main", "call_count_check", e, ids=_ids(e))
        elif k == S.CHUNK_EMITTED:
            b.add("main", "emit", e, ids=_ids(e))
        elif k == S.RANK_EXIT:
            b.exit_obs("main", e)


# ----------------------------------------------------------------------------------- PP0 / PP1
def _map_pp(b: _Builder, role: str) -> None:
    ev = b.events
    r0 = role == "stage0"
    leader = role in ("mesh_leader", "stage1")
    startup = True
    fold: Obs | None = None      # tensors of one message
    gen: Obs | None = None       # generator calls of one Phase B (denoise calls fold into one)
    gen_kind = None
    for e in ev:
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
            parts = _gen_parts(ev, e)
            if gen is not None and kind == "denoise" and gen_kind == "denoise":
                gen.lines.append(e["i"])
                if gen.op is not None:
                    for c in parts:
                        b.op_obs("main", gen.names, c, fold_into=gen)
                continue
            if parts:
                gen = b.op_obs("main", "generator_all_reduce", parts[0])
                for c in parts[1:]:
                    b.op_obs("main", "generator_all_reduce", c, fold_into=gen)
                gen.lines.append(e["i"])
            else:  # PP0: Stage 1 runs the generator locally (no collectives)
                gen = b.add("main", "generator_call", e)
            gen.ids, gen_kind = {x: e[x] for x in ("chunk_index", "cache_epoch")}, kind
            gen.label = f"generator_call {kind}"
        elif k == S.PHASE_B_END:
            gen = None
            b.add("main", "call_count_check", e, ids={x: e[x] for x in ("chunk_index", "cache_epoch")})
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


def _gen_parts(ev: list[dict], gcall: dict) -> list[dict]:
    """The generator collectives recorded just before a generator_call event (back to the previous
    non-generator event)."""
    parts = []
    for e in reversed(ev[:gcall["i"]]):
        if e["ev"] in (S.COMM_EXIT, S.MARK):
            continue  # a free-form annotation does not end the call's collectives
        if e["ev"] == S.COMM_ENTER and e.get("purpose") in GEN_PURPOSES:
            parts.append(e)
            continue
        break
    return list(reversed(parts))


def spec_params(manifest: dict, mapped: Mapped) -> tuple[str, str | None, dict[str, Any]]:
    """(spec name, variant, params) for a run, from its manifest."""
    cfg = manifest["config"]
    topo = manifest["topology"]
    fault = manifest.get("fault") or cfg.get("fault") or ""
    unsafe = manifest.get("unsafe") or cfg.get("unsafe") or ""
    variant = UNSAFE_VARIANT.get(unsafe) if unsafe else None
    fam = "tp" if topo == "tp" else "pp"
    faults = SPEC_FAULTS[fam].get(fault, "none") if fault else "none"
    if fault and fault not in SPEC_FAULTS[fam]:
        mapped.notes.append(f"fault {fault} has no counterpart in the {topo} spec: replaying with no spec fault enabled")
    if fault and (topo, fault) in KNOWN_NONCONFORMING:
        mapped.notes.append(KNOWN_NONCONFORMING[(topo, fault)])
    # a tripwire fires on every mesh rank that sees the mismatch: one spec fault step each
    trips = sum(1 for obs in mapped.per_actor.values() for o in obs if "tripwire_fires" in o.names)
    max_faults = max(1, trips) if "tripwire" in faults else 1
    chunks = int(cfg.get("chunks", 2))
    hard_cut = int(cfg.get("hard_cut_at", -1)) >= 0
    if topo == "tp":
        noops = sum(1 for obs in mapped.per_actor.get((0, "main"), []) if obs.action == "NOOP")
        params = {"ranks": manifest["world_size"], "chunks": chunks, "steps": int(cfg.get("steps", 4)), "reduces": 1,
                  "heartbeats": max(1, noops), "hard_cuts": hard_cut, "faults": faults, "max_faults": max_faults}
        return "tp", variant, params
    noops = sum(1 for obs in mapped.per_actor.get((0, "comms"), []) if obs.action == "NOOP")
    params = {"chunks": chunks, "depth": int(cfg.get("d_in", 2)), "hard_cuts": 1 if hard_cut else 0,
              "recompute": "R0a", "keepalives": max(1, noops), "patience": 1, "ring": 2, "faults": faults, "max_faults": max_faults}
    if topo == "pp1":
        params["mesh"] = manifest["world_size"] - 1
    return topo, variant, params


def plan_hint(family: str, role: str, tname: str, seq: list, cursor: int):
    """The Phase A choice the actor's upcoming observables reveal, to try first (the replay still
    checks it against the spec; a wrong hint only costs search).  TP: (recompute, steps, hard_cut);
    PP: none (its choice is only the recompute flag; the hard cut is its own observed transition)."""
    if tname != "phase_a":
        return None
    cut = cursor < len(seq) and "phase_a@cut" in seq[cursor].names
    rec = False
    steps = 0
    if family == "tp" and role == "leader":
        for o in seq[cursor:]:
            if "call_count_check" in o.names or "emit" in o.names or "preflight_fail@validate" in o.names:
                break
            if "generator_all_reduce" in o.names:
                if o.label.startswith("generator_call recompute"):
                    rec = True
                else:
                    steps += 1
        return (rec, steps, cut)
    if family == "pp" and role == "stage0":
        return None
    return None
