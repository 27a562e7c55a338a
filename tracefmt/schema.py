"""Trace schema v1: the event vocabulary, a writer that flushes every event, a strict loader.

A run directory holds ``manifest.json`` (``"schema": 1``, world size, groups with their global
ranks, backend, topology, config digest, versions) and one ``rank{N}.jsonl`` per rank.  Every line
is one JSON object with the common fields ``ev`` (an event kind below), ``rank``, ``i`` (the
line's index in its file, from 0) and ``t`` (wall-clock seconds, float; the ranks of a local run
share a clock).  The per-kind fields are listed in ``EVENT_FIELDS``; extra fields are allowed and
ignored by the loader, so adding a field is not a schema change, renaming or removing one is.

The writer flushes each line as it is written, so a rank that crashes or is SIGKILLed leaves a
readable prefix; the loader accepts a truncated (unparseable, newline-less) last line and reports
it as ``truncated``.  Everything else that is wrong is a ``TraceSchemaError`` naming file, line and
field.  Pure Python; no torch.
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def rank_file_name(rank: int) -> str:
    return f"rank{rank}.jsonl"


# ---- event kinds (stable names; the conformance checker maps them onto spec transitions) ----
RANK_START = "rank_start"            # role, mesh_rank, pid, groups this rank belongs to
RANK_EXIT = "rank_exit"              # how: clean | exception | killed | timeout | interrupted (a signal)
COMM_ENTER = "comm_enter"            # a communication op is issued
COMM_EXIT = "comm_exit"              # it completed (ok) or raised (ok=false, error)
HEADER_SENT = "header_sent"          # control header sent (commitment point for INFER)
HEADER_RECV = "header_recv"
PREFLIGHT_OK = "preflight_ok"
PREFLIGHT_FAIL = "preflight_fail"    # step: validate | serialize_meta | tensor_specs | dtype_map | materialize
VALIDATION_FAIL = "validation_fail"  # a receiver rejected what it got (leader, worker, stage1, rank0)
PARITY_OK = "parity_ok"
PARITY_FAIL = "parity_fail"
TRIPWIRE = "tripwire"                # a runtime tripwire fired (digest, fingerprint, call count, ids, compile health)
GENERATOR_CALL = "generator_call"    # one generator forward (recompute or denoise step)
PHASE_B_END = "phase_b_end"          # expected vs observed generator calls
RESULT_SENT = "result_sent"
RESULT_RECV = "result_recv"
RESULT_ACCEPTED = "result_accepted"
RESULT_DROPPED = "result_dropped"    # reason: stale_epoch | duplicate | ahead_of_expectation | ...
CHUNK_EMITTED = "chunk_emitted"
CHUNK_DROPPED = "chunk_dropped"      # every planned chunk that is not emitted, with its reason
REQUEST_FAILED = "request_failed"    # a server role failed a request after a commitment point (unsafe)
HARD_CUT = "hard_cut"
CACHE_RESET = "cache_reset"          # what: kv | crossattn
CACHE_RECOMPUTE = "cache_recompute"
CACHE_ADVANCE = "cache_advance"
FAULT_INJECTED = "fault_injected"
WATCHDOG_FIRED = "watchdog_fired"
STARTUP_STEP = "startup_step"        # name: parity | warmup | compile_health | fingerprint_baseline | ready
MARK = "mark"                        # free-form annotation (bench, launcher notes)

COMMON_FIELDS: dict[str, type | tuple] = {"ev": str, "rank": int, "i": int, "t": (int, float)}

_IDS = {"call_id": int, "chunk_index": int, "cache_epoch": int}

EVENT_FIELDS: dict[str, dict[str, type | tuple]] = {
    RANK_START: {"role": str, "pid": int},
    RANK_EXIT: {"how": str, "message": str},
    COMM_ENTER: {"op": str, "group": str, "seq": int, "purpose": str},
    COMM_EXIT: {"op": str, "group": str, "seq": int, "ok": bool},
    HEADER_SENT: {"action": str, "group": str, **_IDS},
    HEADER_RECV: {"action": str, "group": str, **_IDS},
    PREFLIGHT_OK: {"what": str, **_IDS},
    PREFLIGHT_FAIL: {"what": str, "step": str, "field": str, "message": str, **_IDS},
    VALIDATION_FAIL: {"where": str, "field": str, "message": str},
    PARITY_OK: {"digest": str},
    PARITY_FAIL: {"diff": list},
    TRIPWIRE: {"kind": str, "message": str},
    GENERATOR_CALL: {"kind": str, "call_index": int, **_IDS},
    PHASE_B_END: {"expected": int, "observed": int, **_IDS},
    RESULT_SENT: {"ok": bool, **_IDS},
    RESULT_RECV: {"ok": bool, **_IDS},
    RESULT_ACCEPTED: {**_IDS},
    RESULT_DROPPED: {"reason": str, **_IDS},
    CHUNK_EMITTED: {**_IDS},
    CHUNK_DROPPED: {"chunk_index": int, "reason": str},
    REQUEST_FAILED: {"message": str, **_IDS},
    HARD_CUT: {"old_epoch": int, "new_epoch": int, "drained": int},
    CACHE_RESET: {"what": str, "cache_epoch": int},
    CACHE_RECOMPUTE: {"cache_epoch": int, "start_frame": int, "end_index_global": int, "end_index_local": int},
    CACHE_ADVANCE: {"cache_epoch": int, "start_frame": int, "end_index_global": int, "end_index_local": int, "evicted": int},
    FAULT_INJECTED: {"fault": str, "detail": str},
    WATCHDOG_FIRED: {"idle_s": (int, float)},
    STARTUP_STEP: {"name": str},
    MARK: {"note": str},
}
EVENT_KINDS = frozenset(EVENT_FIELDS)

EXIT_HOWS = ("clean", "exception", "killed", "timeout", "interrupted")
COMM_OPS = ("broadcast", "send", "recv", "isend", "irecv", "all_reduce", "all_gather", "barrier")
ACTIONS = ("NOOP", "INFER", "SHUTDOWN", "ERROR")

_ENUMS: dict[tuple[str, str], tuple] = {
    (RANK_EXIT, "how"): EXIT_HOWS,
    (COMM_ENTER, "op"): COMM_OPS,
    (COMM_EXIT, "op"): COMM_OPS,
    (HEADER_SENT, "action"): ACTIONS,
    (HEADER_RECV, "action"): ACTIONS,
    (CACHE_RESET, "what"): ("kv", "crossattn"),
}

MANIFEST_FIELDS: dict[str, type | tuple] = {
    "schema": int, "world_size": int, "topology": str, "backend": str,
    "groups": dict, "roles": dict, "config": dict, "config_digest": str, "versions": dict,
}


class TraceSchemaError(ValueError):
    """A trace does not match schema v1; names the file, line (1-based) and field."""

    def __init__(self, path: str | os.PathLike, line: int | None, field_name: str | None, message: str):
        where = f"{path}" + (f":{line}" if line is not None else "") + (f": field {field_name!r}" if field_name else "")
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.field = str(path), line, field_name


def canonical_json(obj: Any) -> str:
    """Sorted keys, stable separators: the encoding digests are computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


class TraceWriter:
    """Append-only per-rank JSONL writer.  Thread-safe; each event is flushed as written."""

    def __init__(self, path: str | os.PathLike | None, rank: int):
        self.rank = rank
        self.path = str(path) if path is not None else None
        self._f = open(path, "a", encoding="utf-8") if path is not None else None
        self._lock = threading.Lock()
        self._i = 0
        self._deferring = False  # the main thread is writing a line: interrupt() keeps its exception
        self._deferred: BaseException | None = None
        self.enabled = True  # the bench toggles recording per chunk; nothing else should

    def emit(self, ev: str, **fields: Any) -> None:
        if ev not in EVENT_KINDS:
            raise ValueError(f"unknown trace event kind {ev!r}")
        if self._f is None or not self.enabled:
            return
        main = threading.get_ident() == threading.main_thread().ident
        with self._lock:
            rec = {"ev": ev, "rank": self.rank, "i": self._i, "t": round(time.time(), 6)}
            rec.update(fields)
            line = json.dumps(rec, separators=(",", ":"), default=_json_default)
            # A rank's interrupt handler raises in the main thread between any two bytecodes, whichever
            # thread the kernel delivered the signal to.  Raised between the write and the count, the
            # next line (the rank's interrupted exit) would repeat this one's index.  So while the main
            # thread writes, :meth:`interrupt` keeps the exception and it is raised here, once the line
            # is written and counted.
            self._deferring = main
            try:
                self._f.write(line + "\n")
                self._f.flush()
                self._i += 1
            finally:
                self._deferring = False
                exc, self._deferred = self._deferred, None
                if exc is not None:
                    raise exc

    def interrupt(self, exc: BaseException) -> None:
        """Raise *exc* from a signal handler (which Python runs in the main thread): now, or, when the
        main thread is in the middle of writing a line, as soon as that line is written and counted."""
        if self._deferring:
            self._deferred = exc
            return
        raise exc

    def force(self, ev: str, **fields: Any) -> None:
        """Write even when recording is toggled off (exits and faults must never be lost)."""
        was, self.enabled = self.enabled, True
        try:
            self.emit(ev, **fields)
        finally:
            self.enabled = was

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None


def _json_default(o: Any):
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    return str(o)


def append_event(path: str | os.PathLike, rank: int, ev: str, **fields: Any) -> None:
    """Append one event to a rank file written by someone else (the launcher records a rank that
    was SIGKILLed).  A torn last line (the rank died mid-write) is cut off and kept, verbatim, in
    the appended event's ``torn_tail`` field, so the file stays strictly loadable."""
    p = Path(path)
    data = p.read_bytes() if p.exists() else b""
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        fields["torn_tail"] = data[cut:].decode("utf-8", errors="replace")
        with open(p, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    rec = {"ev": ev, "rank": rank, "i": data.count(b"\n"), "t": round(time.time(), 6), **fields}
    with open(p, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, separators=(",", ":")) + "\n")


# ---------------------------------- loader ----------------------------------

@dataclass
class RankTrace:
    rank: int
    path: str
    events: list[dict]
    truncated: bool = False  # the last line was cut off (a crashed rank) and was skipped

    def of(self, *kinds: str) -> list[dict]:
        return [e for e in self.events if e["ev"] in kinds]

    @property
    def exit(self) -> dict | None:
        ex = self.of(RANK_EXIT)
        return ex[-1] if ex else None


@dataclass
class RunTrace:
    path: str
    manifest: dict
    ranks: dict[int, RankTrace] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)  # the launcher's summary.json, when there is one


def _check_type(path, line, name, value, typ) -> None:
    if typ is int or typ == (int,):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float or typ == (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, typ)
    if not ok:
        want = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise TraceSchemaError(path, line, name, f"expected {want}, got {type(value).__name__} {value!r}")


def _exact_types(typ) -> tuple:
    """The JSON value types that satisfy ``typ`` (a fast exact-type test; bool is never an int here)."""
    if typ is int or typ == (int,):
        return (int,)
    if typ is float or typ == (int, float):
        return (int, float)
    return (typ,) if isinstance(typ, type) else tuple(typ)


_COMMON_FAST = tuple((name, _exact_types(typ), typ) for name, typ in COMMON_FIELDS.items())
_EVENT_FAST = {ev: tuple((name, _exact_types(typ), typ, _ENUMS.get((ev, name))) for name, typ in fields.items())
               for ev, fields in EVENT_FIELDS.items()}


def validate_event(rec: Any, path: str = "<event>", line: int | None = None) -> None:
    if type(rec) is not dict:
        raise TraceSchemaError(path, line, None, f"an event must be a JSON object, got {type(rec).__name__}")
    for name, ok_types, typ in _COMMON_FAST:
        if name not in rec:
            raise TraceSchemaError(path, line, name, "required field is missing")
        if type(rec[name]) not in ok_types:
            _check_type(path, line, name, rec[name], typ)
    if not -1e15 < rec["t"] < 1e15:  # (JSON readers take NaN and Infinity; a time must be a number)
        raise TraceSchemaError(path, line, "t", f"expected a time in seconds, got {rec['t']!r}")
    ev = rec["ev"]
    fields = _EVENT_FAST.get(ev)
    if fields is None:
        raise TraceSchemaError(path, line, "ev", f"unknown event kind {ev!r}")
    for name, ok_types, typ, allowed in fields:
        if name not in rec:
            raise TraceSchemaError(path, line, name, f"required for {ev} but missing")
        v = rec[name]
        if type(v) not in ok_types:
            _check_type(path, line, name, v, typ)
        if allowed is not None and v not in allowed:
            raise TraceSchemaError(path, line, name, f"{v!r} is not one of {', '.join(allowed)}")


class _Compactor:
    """Shares equal values between a file's events, in place: short strings (event kinds, ops, groups,
    purposes, dtypes: a handful of distinct values repeated on every line) and short lists of ints or
    strings (ids, shapes).  The JSON decoder makes a new object for every value; shared, a long trace
    takes about half the memory (long traces hold millions of events).  Loaded events are read-only:
    code that edits one copies it first (``dict(e)``, a new list)."""

    __slots__ = ("strs", "lists")

    def __init__(self):
        self.strs: dict[str, str] = {}
        self.lists: dict[tuple, list] = {}

    def __call__(self, rec: dict) -> None:
        strs, lists = self.strs, self.lists
        for k, v in rec.items():
            tv = type(v)
            if tv is str:
                if len(v) <= 64:
                    rec[k] = strs.setdefault(v, v)
            elif tv is list and len(v) <= 8:
                try:  # keyed by the element types too: [1, true] is not [1, 1]
                    rec[k] = lists.setdefault((tuple(map(type, v)), *v), v)
                except TypeError:  # unhashable elements (nested lists): left as they are
                    pass


_BLOCK = 8192  # lines parsed at once: the text of a long trace is never held twice
_READ = 1 << 22  # bytes read from a rank file at once


class StreamInfo:
    """What a stream of one rank file found out by its end: ``truncated`` (the last line was cut
    off), ``count`` (events read) and ``last`` (the last event)."""

    __slots__ = ("path", "truncated", "count", "last")

    def __init__(self, path: str):
        self.path, self.truncated, self.count, self.last = path, False, 0, None


MAX_LINE_BYTES = 64 << 20  # one event line; the longest real ones (a manifest-sized event) are kilobytes


def iter_rank_events(path: str | os.PathLike, rank: int | None = None, info: StreamInfo | None = None,
                     validate: bool = True, compact: "_Compactor | None" = None, small: bool = False) -> Iterator[dict]:
    """Stream one rank file: its events, validated, in order, holding one block of lines at a time.

    The same strictness (and the same errors) as loading the whole file: only the last line may be
    broken, and only if it has no trailing newline (the rank died while writing it: ``info.truncated``);
    a file that is not UTF-8 is refused naming the line of its first bad byte, whatever else is
    wrong before it (the rest of the file is read for that before any other error is raised).
    ``validate=False`` skips the per-event schema checks (a file streamed again after a validating pass);
    ``small`` reads and parses in small pieces (many ranks' streams open at once)."""
    read_size, block_lines = (_READ // 16, _BLOCK // 16) if small else (_READ, _BLOCK)
    p = Path(path)
    if info is None:
        info = StreamInfo(str(p))
    with open(p, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # /dev/zero, a pipe: no end to wait for
            raise TraceSchemaError(p, None, None, "not a regular file (a device or a pipe); expected a rank trace")
        offset = 0      # bytes before ``pending``
        lineno = 0      # lines before ``pending``
        pending = b""
        expect = 0
        while True:
            data = f.read(read_size)
            if data:
                pending += data
                cut = pending.rfind(b"\n")
                if cut < 0:
                    if len(pending) > MAX_LINE_BYTES:
                        raise TraceSchemaError(p, lineno + 1, None, f"a line of more than {MAX_LINE_BYTES >> 20} MiB "
                                                                    "(no event is that long; is this a trace?)")
                    continue
                chunk, pending = pending[:cut + 1], pending[cut + 1:]
                last_chunk = False
            else:
                chunk, pending = pending, b""
                last_chunk = True
                if not chunk:
                    break
            try:
                text = chunk.decode("utf-8", errors="strict")
            except UnicodeDecodeError as e:
                raise _utf8_error(p, chunk, e, offset, lineno) from None
            lines = text.split("\n")
            del text
            ends_clean = not last_chunk  # every chunk but an unterminated tail ends with a newline
            if ends_clean:
                lines.pop()
            try:
                for start in range(0, len(lines), block_lines):
                    block = lines[start:start + block_lines]
                    # fast path: a block of lines as one JSON array (one decoder pass, its keys shared
                    # strings); any problem falls back to line by line, which names the line
                    try:
                        fast = json.loads("[" + ",".join(block) + "]")
                        if len(fast) != len(block):
                            fast = None
                    except (ValueError, RecursionError):  # (JSONDecodeError is a ValueError; so is a huge int)
                        fast = None
                    for k, text_ in enumerate(block):
                        n = lineno + start + k + 1
                        try:
                            rec = fast[k] if fast is not None else json.loads(text_)
                        except json.JSONDecodeError as e:
                            if last_chunk and start + k == len(lines) - 1:
                                info.truncated = True
                                break
                            raise TraceSchemaError(p, n, None, f"not valid JSON ({e.msg} at column {e.colno})") from None
                        except (ValueError, RecursionError) as e:  # an integer of thousands of digits, nesting beyond Python's stack
                            raise TraceSchemaError(p, n, None, f"not readable JSON ({str(e).split(';')[0][:120]})") from None
                        if validate:
                            validate_event(rec, str(p), n)
                            if rank is not None and rec["rank"] != rank:
                                raise TraceSchemaError(p, n, "rank", f"{rec['rank']} in the file of rank {rank}")
                            if rec["i"] != expect:
                                raise TraceSchemaError(p, n, "i", f"{rec['i']}, expected {expect} (lines lost or reordered)")
                        expect += 1
                        if compact is not None:
                            compact(rec)
                        yield rec
                    if expect:
                        info.count, info.last = expect, rec
                    fast = block = None
            except TraceSchemaError:
                # a whole-file read decodes the text before parsing it: a bad byte anywhere in the file
                # is the error it reports, so the rest of the file is checked for one first
                bad = _utf8_error_after(p, f, pending, offset + len(chunk), lineno + len(lines))
                if bad is not None:
                    raise bad from None
                raise
            offset += len(chunk)
            lineno += len(lines)
            if last_chunk:
                break


def _utf8_error(p: Path, chunk: bytes, e: UnicodeDecodeError, offset: int, lineno: int) -> TraceSchemaError:
    line = lineno + chunk[:e.start].count(b"\n") + 1
    return TraceSchemaError(p, line, None, f"not UTF-8 text ({e.reason} at byte {offset + e.start}): not a trace file")


def _utf8_error_after(p: Path, f, pending: bytes, offset: int, lineno: int) -> TraceSchemaError | None:
    """The first bad UTF-8 byte of the file from ``offset`` on (``pending`` read already), or None."""
    import codecs
    dec = codecs.getincrementaldecoder("utf-8")("strict")
    seen = b""
    data = pending
    while True:
        try:
            dec.decode(data, final=not data)
        except UnicodeDecodeError as e:
            # the incremental decoder's positions are within this piece: locate it from the start
            whole = seen + data
            try:
                whole.decode("utf-8")
            except UnicodeDecodeError as e2:
                return _utf8_error(p, whole, e2, offset, lineno)
            return _utf8_error(p, whole, e, offset, lineno)
        if not data:
            return None
        # keep what may still hold an unfinished character; count the lines of what is done
        cut = data.rfind(b"\n")
        if cut >= 0:
            done, seen = seen + data[:cut + 1], data[cut + 1:]
            offset += len(done)
            lineno += done.count(b"\n")
        else:
            seen += data
        data = f.read(_READ)


def load_rank_trace(path: str | os.PathLike, rank: int | None = None) -> RankTrace:
    """Strictly load one rank file (``iter_rank_events`` into a list, equal values shared).  Only the
    last line may be broken, and only if it has no trailing newline (the rank died while writing it)."""
    p = Path(path)
    info = StreamInfo(str(p))
    events = list(iter_rank_events(p, rank, info, compact=_Compactor()))
    if rank is None:
        rank = events[0]["rank"] if events else -1
    return RankTrace(rank=rank, path=str(p), events=events, truncated=info.truncated)


def validate_manifest(m: Any, path: str = MANIFEST_NAME) -> None:
    if not isinstance(m, dict):
        raise TraceSchemaError(path, None, None, "the manifest must be a JSON object")
    for name, typ in MANIFEST_FIELDS.items():
        if name not in m:
            raise TraceSchemaError(path, None, name, "required field is missing")
        _check_type(path, None, name, m[name], typ)
    if m["schema"] != SCHEMA_VERSION:
        raise TraceSchemaError(path, None, "schema", f"version {m['schema']} is not supported (this reader knows {SCHEMA_VERSION})")
    ts = m["versions"].get("trace_schema", SCHEMA_VERSION)
    if ts != SCHEMA_VERSION:
        raise TraceSchemaError(path, None, "versions.trace_schema", f"version {ts!r} is not supported (this reader knows "
                                                                    f"{SCHEMA_VERSION})")
    if m["world_size"] < 1:
        raise TraceSchemaError(path, None, "world_size", f"expected a world of 1 rank or more, got {m['world_size']}")
    for g, ranks in m["groups"].items():
        if not isinstance(ranks, list) or not all(isinstance(r, int) and 0 <= r < m["world_size"] for r in ranks):
            raise TraceSchemaError(path, None, f"groups.{g}", f"expected a list of global ranks < {m['world_size']}, got {ranks!r}")


def load_run(path: str | os.PathLike) -> RunTrace:
    """Load a run directory: the manifest and every rank file it promises."""
    d = Path(path)
    mp = d / MANIFEST_NAME
    if not mp.exists():
        raise TraceSchemaError(mp, None, None, "manifest.json is missing")
    try:
        m = json.loads(mp.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise TraceSchemaError(mp, None, None, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise TraceSchemaError(mp, e.lineno, None, f"not valid JSON ({e.msg})") from None
    validate_manifest(m, str(mp))
    run = RunTrace(path=str(d), manifest=m)
    for r in range(m["world_size"]):
        rp = d / rank_file_name(r)
        if not rp.exists():
            raise TraceSchemaError(rp, None, None, f"the manifest promises {m['world_size']} ranks but this file is missing")
        run.ranks[r] = load_rank_trace(rp, r)
    return run


def iter_events(run: RunTrace, kinds: Iterable[str] | None = None):
    ks = set(kinds) if kinds is not None else None
    for r in sorted(run.ranks):
        for e in run.ranks[r].events:
            if ks is None or e["ev"] in ks:
                yield e
