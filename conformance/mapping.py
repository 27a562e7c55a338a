"""The abstraction map: recorded trace events -> spec observables.

The implementation is finer-grained than the specs.  This module holds the rules every protocol
family follows and the shared machinery (``Obs``, the per-rank builder, ``map_run``, ``spec_params``);
each family's adapter (conformance/adapters/tp.py, pp.py) holds its tables and the code that names its
spec transitions, so a spec change needs an edit in its adapter only.  The map produces,
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
- a ``rank_exit`` of kind ``interrupted`` ends the rank's observables (the run is a prefix).
Spec transitions not in the adapter's ``observed`` set for their role are unobserved: the replay takes them as
needed (Phase A's plan choice, queue moves, the spec's new_group and startup barrier ops).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..tracefmt import schema as S

GEN_PURPOSES = frozenset({"qnorm", "knorm", "attn_out", "xattn_out", "ffn_out"})

# records a rank may not write at all in some configurations (e.g. the unsafe fm04 build preflights
# after the header and writes no preflight_ok): when a rank's trace has none of them, the spec
# transition is unobserved for that rank; one missing among several present is still a mismatch
OPTIONAL_RECORDS = frozenset({"preflight_ok", "validate_ok", "result_preflight_ok", "phase_a@cut", "hard_cut"})

# runtime tripwires that fire on a mesh rank before its first Phase-B collective: the spec fault
# ``tripwire`` (transition ``tripwire_fires``).  ``tripwire`` records of these kinds, and exits raising
# one of TRIPWIRE_EXC (om-06's in-block broadcast guard, om-08's group check, which write no
# ``tripwire`` record: the observable is anchored at the rank's ``fault_injected``).
TRIPWIRE_KINDS = frozenset({"input_digest", "fingerprint", "plan"})
TRIPWIRE_EXC = frozenset({"ForbiddenOpError", "WrongGroupError"})

# events that show a rank met an error before it exited raising (see _Builder.exit_obs)
ERROR_SIGNS = frozenset({S.VALIDATION_FAIL, S.PREFLIGHT_FAIL, S.TRIPWIRE, S.WATCHDOG_FIRED, S.FAULT_INJECTED, S.PARITY_FAIL,
                         S.REQUEST_FAILED})

# (topology, fault) -> why the impl's run of it does not conform to the spec (a known disagreement the
# replay finds on its own; the note makes the report say why, the replay's first unexplained event says where)
KNOWN_NONCONFORMING: dict[tuple[str, str], str] = {}
# --unsafe switch -> spec variant (the spec and the checker's counterexample class)
UNSAFE_VARIANT = {"fm04-throw-after-header": "fm04-throw-after-header", "om07-leader-throws": "om07-leader-throws",
                  "om09-no-epoch-fence": "om09-no-epoch-fence", "result-throw-after-header": "result-throw-after-header"}

@dataclass(slots=True)
class Obs:
    """One spec observable of one actor (slotted: a long trace has hundreds of thousands)."""
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


class ActorFacts:
    """What the map produced for one actor, counted as the observables were made (a streamed trace
    does not keep them): how many, the transition names they name (OPTIONAL_RECORDS), how many carry a
    NOOP header, how many are runtime tripwires, and the first one (an actor the spec lacks is reported
    at it)."""

    __slots__ = ("count", "names", "noops", "trips", "first")

    def __init__(self):
        self.count, self.names, self.noops, self.trips, self.first = 0, set(), 0, 0, None

    def add(self, o: "Obs") -> None:
        if self.first is None:
            self.first = o
        self.count += 1
        self.names |= o.names
        if o.action == "NOOP":
            self.noops += 1
        if "tripwire_fires" in o.names:
            self.trips += 1


@dataclass
class Mapped:
    topology: str
    family: str                              # tp | pp
    # per actor its observables: a list (map_run) or a stream.LazyObs (a streamed trace)
    per_actor: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # (chunk_index, cache_epoch) of every chunk some rank ran a recompute call for: PP's plan hint
    recompute_chunks: frozenset = frozenset()
    facts: dict = field(default_factory=dict)  # actor -> ActorFacts
    rank_maps: dict = field(default_factory=dict)  # a streamed run: rank -> stream.RankMap

    def produced(self, key) -> set:
        f = self.facts.get(key)
        return set(f.names) if f is not None else set()

    def noops(self, key) -> int:
        f = self.facts.get(key)
        return f.noops if f is not None else 0

    def trips(self) -> int:
        return sum(f.trips for f in self.facts.values())


def _ids(e: dict) -> dict:
    return {k: e[k] for k in ("call_id", "chunk_index", "cache_epoch") if k in e}


def _peer(e: dict) -> int:
    if e["op"] in ("send", "isend"):
        return e.get("dst", -1)
    if e["op"] in ("recv", "irecv", "broadcast"):
        return e.get("src", -1)
    return -1


def _spec_kind(op: str) -> str:
    return {"isend": "send", "irecv": "recv"}.get(op, op)


class EventWindow:
    """One rank's events as the map reads them: in order, from a list or a stream of the rank file,
    holding only what is still needed -- the events from the one being mapped to the furthest one a
    look-ahead read (an op's exit, the header record after it).  What the map needs from behind is kept
    as it goes: the generator collectives right before the current event (``gen_run``) and whether an
    error sign was seen (``saw_error``).  ``pending`` (the comm_enter indices a first pass found without
    a comm_exit) stops the look-ahead for an exit that never comes; ``tap`` sees every event once, as it
    is read."""

    __slots__ = ("_it", "buf", "base", "done", "exits", "_open", "pending", "gen_run", "saw_error", "tap", "pos", "whole")

    def __init__(self, events, pending=None, tap=None):
        self._it = iter(events)
        self.buf: list = []
        self.base = 0               # index of buf[0]
        self.done = False
        self.exits: dict[int, dict] = {}   # comm_enter index -> its comm_exit (FIFO per op, group, seq)
        self._open: dict[tuple, list] = {}
        self.pending = pending
        self.gen_run: list = []
        self.saw_error = False
        self.tap = tap
        self.pos = 0
        self.whole = False

    @classmethod
    def of_list(cls, events: list) -> "EventWindow":
        """A rank's events held in memory: read in place (nothing copied or forgotten), exits matched at once."""
        w = cls(())
        for e in events:
            w._match(e)
        w.buf = events
        w.done = w.whole = True
        return w

    def _match(self, e: dict) -> None:
        k = e["ev"]
        if k == S.COMM_ENTER:
            self._open.setdefault((e["op"], e["group"], e["seq"]), []).append(e["i"])
        elif k == S.COMM_EXIT:
            key = (e["op"], e["group"], e["seq"])
            q = self._open.get(key)
            if q:
                self.exits[q.pop(0)] = e
                if not q:
                    del self._open[key]

    def _pull(self) -> bool:
        if self.done:
            return False
        e = next(self._it, None)
        if e is None:
            self.done = True
            return False
        if self.tap is not None:
            self.tap(e)
        self._match(e)
        self.buf.append(e)
        return True

    def get(self, j: int) -> dict | None:
        """Event j (reading ahead as needed), or None past the end."""
        if self.whole:
            return self.buf[j] if j < len(self.buf) else None
        while j >= self.base + len(self.buf):
            if not self._pull():
                return None
        return self.buf[j - self.base]

    def exit_of(self, i: int) -> dict | None:
        """The comm_exit of the comm_enter at index i, or None (never exited)."""
        ex = self.exits.pop(i, None)
        if ex is not None:
            return ex
        if self.pending is not None and i in self.pending:
            return None
        while not self.done:
            self._pull()
            ex = self.exits.pop(i, None)
            if ex is not None:
                return ex
        return None

    def __iter__(self):
        if self.whole:
            yield from self._iter_whole()
            return
        j = self.base
        while True:
            e = self.get(j)
            if e is None:
                return
            self.pos = j
            yield e
            # what the map may still ask about the past: the generator collectives right before an event,
            # and whether an error sign came before it
            k = e["ev"]
            if k == S.COMM_ENTER and e.get("purpose") in GEN_PURPOSES:
                self.gen_run.append(e)
            elif k != S.COMM_EXIT and k != S.MARK:
                if self.gen_run:
                    self.gen_run = []
            if not self.saw_error and (k in ERROR_SIGNS or (k in (S.HEADER_SENT, S.HEADER_RECV) and e.get("action") == "ERROR")
                                       or (k == S.COMM_EXIT and not e["ok"])):
                self.saw_error = True
            j += 1
            if j - self.base >= 4096 and not self.whole:
                # forget what is behind: exits of ops the map skipped included (none is asked for again)
                keep = self.gen_run[0]["i"] if self.gen_run else j
                del self.buf[:j - self.base]
                self.base = j
                for x in [x for x in self.exits if x < keep]:
                    del self.exits[x]


def _iter_whole_impl(self):
    """EventWindow.__iter__ over events held in memory (the same tracking, no reading ahead)."""
    gen_purposes, errs = GEN_PURPOSES, ERROR_SIGNS
    enter, exit_, mark, headers = S.COMM_ENTER, S.COMM_EXIT, S.MARK, (S.HEADER_SENT, S.HEADER_RECV)
    for j, e in enumerate(self.buf):
        self.pos = j
        yield e
        k = e["ev"]
        if k == enter and e.get("purpose") in gen_purposes:
            self.gen_run.append(e)
        elif k != exit_ and k != mark:
            if self.gen_run:
                self.gen_run = []
        if not self.saw_error and (k in errs or (k in headers and e.get("action") == "ERROR")
                                   or (k == exit_ and not e["ok"])):
            self.saw_error = True


EventWindow._iter_whole = _iter_whole_impl


def _next_event(events: EventWindow, i: int, kinds: tuple, stop_at_comm: bool = True) -> dict | None:
    """The first event of ``kinds`` after index i, before the next comm_enter (the op's annotation)."""
    j = i + 1
    while True:
        e = events.get(j)
        if e is None:
            return None
        if e["ev"] in kinds:
            return e
        if stop_at_comm and e["ev"] == S.COMM_ENTER:
            return None
        j += 1


def kv_units(manifest: dict) -> tuple[int, int] | None:
    """(latent frames per chunk, tokens per frame) of a run, from its manifest's model config: what turns
    the impl's frame and token positions into the specs' chunks (None where the manifest lacks them)."""
    m = (manifest.get("config") or {}).get("model")
    try:
        units = (int(m["frames_per_chunk"]), int(m["tokens_per_frame"]))
    except (KeyError, TypeError, ValueError):
        return None
    return units if min(units) > 0 else None


def kv_record_ids(e: dict, units: tuple[int, int] | None) -> dict | None:
    """A ``cache_advance`` record as the spec's KV state after the chunk, for the IDs check of the
    rank's ``call_count_check`` (None without ``units``): its cache epoch, the chunk position it appended
    at, its start frame and global end index after the chunk.  The specs count chunks where the impl
    counts latent frames (start frames) and tokens (the global end index).  A position that is not a
    whole number of chunks stays as it is, and cannot match.  Each family's ``bind_ids`` names the ones
    its spec models (the replay compares those only)."""
    if units is None:
        return None
    fpc, tpf = units

    def chunks(x, unit):
        return x // unit if isinstance(x, int) and x % unit == 0 else x
    return {"kv_epoch": e.get("cache_epoch"), "kv_appended_at": chunks(e.get("start_frame"), fpc),
            "kv_start_frame": chunks(e.get("next_start_frame"), fpc),
            "kv_global_end": chunks(e.get("end_index_global"), fpc * tpf)}


class _Builder:
    def __init__(self, family: str, rank: int, events: EventWindow, truncated: bool, trip_anchor: int | None = None,
                 sink=None, anchor_known: bool = False, units: tuple[int, int] | None = None):
        self.family, self.rank, self.events = family, rank, events
        self.units = units  # kv_units: the KV-cache records are checked where it is known
        self.out: dict[str, list[Obs]] = {}
        self.truncated = truncated
        # the rank's runtime-tripwire point (_tripwire_anchor): given when it is not a tripwire record
        # (then a first pass found it), else the first tripwire record of a pre-Phase-B kind
        self.trip_anchor = trip_anchor
        # ``anchor_known``: the anchor was found over the whole rank, so None means the rank has none
        self._trip_taken = anchor_known and trip_anchor is None
        self.sink = sink  # called with (thread, obs) for every observable made

    def tripwire(self, thread: str, e: dict) -> bool:
        """Add the ``tripwire_fires`` observable if ``e`` is this rank's runtime-tripwire point."""
        if self._trip_taken:
            return False
        if self.trip_anchor is not None:
            if e["i"] != self.trip_anchor:
                return False
        elif self._trip_taken or e["ev"] != S.TRIPWIRE or e.get("kind") not in TRIPWIRE_KINDS:
            return False
        self._trip_taken = True
        label = (f"tripwire {e.get('kind')}" if e["ev"] == S.TRIPWIRE else
                 f"{e['ev']} {e.get('fault', e.get('exc_type', ''))} (runtime tripwire: the rank raises before Phase B)")
        self.add(thread, "tripwire_fires", e, label=label)
        return True

    def gen_parts(self) -> list[dict]:
        """The generator collectives recorded just before the current event (back to the previous
        non-generator event; comm_exits and free-form marks do not end them)."""
        return list(self.events.gen_run)

    def add(self, thread: str, names, e: dict, **kw) -> Obs:
        o = Obs(names=_names(names), rank=self.rank, thread=thread, lines=[e["i"]], t=e["t"], **kw)
        if not o.label:
            o.label = e["ev"] + (f" {e.get('op')} {e.get('purpose', '')}" if e["ev"] == S.COMM_ENTER else "")
        self.out.setdefault(thread, []).append(o)
        if self.sink is not None:
            self.sink(thread, o)
        return o

    def op_obs(self, thread: str, names, e: dict, fold_into: Obs | None = None) -> Obs:
        ex = self.events.exit_of(e["i"])
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
            o.ok = self.events.saw_error


_NAMES: dict = {}


def _names(names) -> frozenset:
    """The frozenset of transition names, shared between the observables that name the same ones."""
    key = names if isinstance(names, (str, frozenset)) else frozenset(names)
    got = _NAMES.get(key)
    if got is None:
        got = frozenset(key.split("|")) if isinstance(key, str) else key
        if len(_NAMES) < 4096:
            _NAMES[key] = got
    return got


class TripwireAnchor:
    """Follows a rank's events to find its late tripwire anchor (see _tripwire_anchor): a rank without
    a tripwire record that exits raising one of TRIPWIRE_EXC is anchored at its last
    ``fault_injected`` (or the exit), which is only known at the end."""

    __slots__ = ("record", "fault", "last")

    def __init__(self):
        self.record, self.fault, self.last = False, None, None

    def feed(self, e: dict) -> None:
        k = e["ev"]
        if k == S.TRIPWIRE and e.get("kind") in TRIPWIRE_KINDS:
            self.record = True
        elif k == S.FAULT_INJECTED:
            self.fault = e["i"]
        self.last = e

    def late(self) -> int | None:
        last = self.last
        if self.record or last is None or last["ev"] != S.RANK_EXIT or last.get("exc_type") not in TRIPWIRE_EXC:
            return None
        return self.fault if self.fault is not None else last["i"]


def _tripwire_anchor(events: list[dict]) -> int | None:
    """Trace index of the rank's runtime tripwire (mapped to the spec's ``tripwire_fires``), or None:
    the first ``tripwire`` record of a pre-Phase-B kind, else, for a rank that exits raising one of
    TRIPWIRE_EXC (no record of its own), its last ``fault_injected`` before the exit (or the exit)."""
    for e in events:
        if e["ev"] == S.TRIPWIRE and e.get("kind") in TRIPWIRE_KINDS:
            return e["i"]
    a = TripwireAnchor()
    for e in events:
        a.feed(e)
    return a.late()


def map_rank_events(adapter, family: str, rank: int, role: str, events: EventWindow, truncated: bool,
                    trip_anchor: int | None = None, sink=None, anchor_known: bool = False,
                    units: tuple[int, int] | None = None):
    """A generator mapping one rank's events (one step per event); its builder's ``out`` fills as it goes."""
    b = _Builder(family, rank, events, truncated, trip_anchor, sink, anchor_known, units)
    return b, adapter.map_rank(b, role)


def map_run(run: S.RunTrace) -> Mapped:
    """The whole map of an in-memory run (every observable held: for a long trace conform streams the
    files instead, conformance/stream.py)."""
    topo = run.manifest["topology"]
    family = "tp" if topo == "tp" else "pp"
    m = Mapped(topology=topo, family=family)
    m.recompute_chunks = frozenset((e["chunk_index"], e["cache_epoch"]) for tr in run.ranks.values() for e in tr.events
                                   if e["ev"] == S.GENERATOR_CALL and e.get("kind") == "recompute")
    ad = adapter_for(topo)
    for r, tr in sorted(run.ranks.items()):
        role = run.manifest["roles"].get(str(r), "")
        anchor = _tripwire_anchor(tr.events)
        b, steps = map_rank_events(ad, family, r, role, EventWindow.of_list(tr.events), tr.truncated, anchor,
                                   anchor_known=True, units=kv_units(run.manifest))
        for _ in steps:
            pass
        for thread, obs in b.out.items():
            m.per_actor[(r, thread)] = obs
            f = m.facts[(r, thread)] = ActorFacts()
            for o in obs:
                f.add(o)
    return m


def spec_params(manifest: dict, mapped: Mapped) -> tuple[str, str | None, dict[str, Any]]:
    """(spec name, variant, params) for a run, from its manifest (the family's adapter gives the params)."""
    cfg = manifest["config"]
    topo = manifest["topology"]
    ad = adapter_for(topo)
    fault = manifest.get("fault") or cfg.get("fault") or ""
    unsafe = manifest.get("unsafe") or cfg.get("unsafe") or ""
    variant = UNSAFE_VARIANT.get(unsafe) if unsafe else None
    faults = ad.spec_faults.get(fault, "none") if fault else "none"
    if fault and fault not in ad.spec_faults:
        mapped.notes.append(f"fault {fault} has no counterpart in the {topo} spec: replaying with no spec fault enabled")
    if fault and (topo, fault) in KNOWN_NONCONFORMING:
        mapped.notes.append(KNOWN_NONCONFORMING[(topo, fault)])
    # a tripwire fires on every mesh rank that sees the mismatch: one spec fault step each
    trips = mapped.trips()
    max_faults = max(1, trips) if "tripwire" in faults else 1
    common = {"chunks": int(cfg.get("chunks", 2)), "hard_cut": int(cfg.get("hard_cut_at", -1)) >= 0, "faults": faults,
              "max_faults": max_faults}
    spec, params = ad.params(manifest, mapped, common)
    return spec, variant, params


def adapter_for(topology: str):
    from .adapters import for_topology
    return for_topology(topology)


class Adapter:
    """What a protocol family's adapter provides (conformance/adapters/<family>.py)."""
    family = ""
    topologies: tuple = ()
    observed_table: dict = {}     # role name -> spec transitions an observable must match
    spec_faults: dict = {}        # manifest fault -> the spec faults that explain it
    ids_after: frozenset = frozenset()  # local steps whose recorded IDs are the ones after the step

    @staticmethod
    def _optional(base: frozenset, produced: set | None) -> frozenset:
        return base - (OPTIONAL_RECORDS - produced) if produced is not None else base

    def observed(self, topology: str, role: str, produced: set | None = None) -> frozenset:
        return self._optional(self.observed_table.get(role, frozenset()), produced)

    def step_name(self, role: str, tname: str, choice) -> str:
        """The observable name of a step: a free transition whose choice is recorded gets its own name."""
        return tname

    def bind_ids(self, role: str, tname: str, v, g) -> dict | None:
        return None

    def plan_hint(self, role: str, tname: str, seq: list, cursor: int, v, mapped):
        return None

    def map_rank(self, b: "_Builder", role: str) -> None:
        raise NotImplementedError

    def params(self, manifest: dict, mapped, common: dict) -> tuple[str, dict]:
        raise NotImplementedError


def observed_for(topology: str, role: str, produced: set | None = None) -> frozenset:
    return adapter_for(topology).observed(topology, role, produced)
