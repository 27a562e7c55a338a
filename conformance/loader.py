"""Loading a run directory for conformance: schema.py's strict loader, plus the checks conform needs
before it can trust a trace (a known topology, rank files that belong to this run).

Every problem is a ``BadInput`` (exit 2) whose message names the file, the 1-based line and the field,
as schema.TraceSchemaError does.  A truncated last line of a rank that crashed is not a problem: it
ends that rank's trace (``RankTrace.truncated``) and the report says so.
"""
from __future__ import annotations

import contextlib
import gc
import json
import re
from pathlib import Path

from ..tracefmt import schema as S

TOPOLOGIES = ("tp", "pp0", "pp1")


@contextlib.contextmanager
def no_cyclic_gc():
    """Pause the cyclic garbage collector (restoring its state after): loading a trace and replaying it
    create millions of acyclic dicts and tuples, and the collector's passes over them made a 300k-event
    check 2.4x slower (PyTorch's own Flight Recorder analyzer does the same)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class BadInput(ValueError):
    """Input conform cannot check (exit 2).  ``path``/``line``/``field`` locate it when known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.path, self.line, self.field = path, line, field

    def to_dict(self) -> dict:
        return {"error": str(self), "path": self.path, "line": self.line, "field": self.field}


def load(path: str | Path) -> S.RunTrace:
    """Load a whole run into memory (every event held; ``lockstep conform`` streams the files instead:
    ``open_run``).  Checks as ``open_run`` and the streamed scan do, in the same order."""
    d = _run_dir(path)
    try:
        with no_cyclic_gc():
            run = S.load_run(d)
    except S.TraceSchemaError as e:
        raise BadInput(str(e), e.path, e.line, e.field) from None
    except RecursionError:
        raise BadInput(f"{d}: a trace file nests JSON too deeply", str(d)) from None
    except OSError as e:
        raise BadInput(f"{e.filename or d}: cannot read ({e.strerror or e})", str(e.filename or d)) from None
    err = run_level_problem(d, run.manifest)
    if err is not None:
        raise err
    for r, tr in run.ranks.items():
        if tr.events:
            rank_event_checks(run.manifest, tr.path, 0, tr.events[0])
        for k, e in enumerate(tr.events[1:], 2):
            _check_ids(tr.path, k, e)
    run.summary = _load_summary(d)
    return run


def _run_dir(path) -> Path:
    d = Path(path)
    if not d.exists():
        raise BadInput(f"{d}: no such trace directory", str(d))
    if not d.is_dir():
        raise BadInput(f"{d}: not a directory (expected a run directory with manifest.json and rank*.jsonl)", str(d))
    return d


_FLIGHT_NAME = re.compile(r"rank_?\d+(\.pkl|\.pickle|\.json)?$")


def _flight_dumps(d: Path) -> list[str]:
    """Names of files in ``d`` that look like per-rank Flight Recorder dumps (``lockstep_fr_rank_0``,
    ``nccl_trace_rank_3``, ``rank1.pkl``): a directory given as a trace run that is a dump directory."""
    try:
        return sorted(p.name for p in d.iterdir() if p.is_file() and _FLIGHT_NAME.search(p.name))
    except OSError:
        return []


def read_manifest(d: Path) -> dict:
    """The run's manifest, schema-checked (its problems come before any rank file's)."""
    mp = d / S.MANIFEST_NAME
    if not mp.exists():
        hint = (f"; {d} holds Flight Recorder dumps ({', '.join(_flight_dumps(d)[:2])}, ...): "
                f"lockstep conform --flight-recorder {d}") if _flight_dumps(d) else ""
        raise BadInput(f"{mp}: manifest.json is missing{hint}", str(mp))
    try:
        m = json.loads(mp.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BadInput(f"{mp}: not UTF-8 text ({e.reason} at byte {e.start})", str(mp)) from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{mp}:{e.lineno}: not valid JSON ({e.msg})", str(mp), e.lineno) from None
    except RecursionError:
        raise BadInput(f"{d}: a trace file nests JSON too deeply", str(d)) from None
    except OSError as e:
        raise BadInput(f"{e.filename or mp}: cannot read ({e.strerror or e})", str(e.filename or mp)) from None
    try:
        S.validate_manifest(m, str(mp))
    except S.TraceSchemaError as e:
        raise BadInput(str(e), e.path, e.line, e.field) from None
    return m


def run_level_problem(d: Path, m: dict) -> BadInput | None:
    """The manifest-level problems found once every rank file is known to be schema-valid: a topology
    conform does not know, fields out of range, a stray rank file."""
    mp = str(d / S.MANIFEST_NAME)
    try:
        if m["topology"] not in TOPOLOGIES:
            raise BadInput(f"{mp}: field 'topology': {m['topology']!r} is not one of {', '.join(TOPOLOGIES)}", mp, None, "topology")
        _check_manifest(m, mp)
        run_id = m.get("run_id")
        if run_id is not None and not isinstance(run_id, str):
            raise BadInput(f"{mp}: field 'run_id': expected a string, got {type(run_id).__name__}", mp, None, "run_id")
        stray = sorted(p.name for p in d.iterdir() if _RANK_FILE.fullmatch(p.name) and int(_RANK_FILE.fullmatch(p.name).group(1)) >= m["world_size"])
        if stray:
            raise BadInput(f"{d / stray[0]}: a rank file the manifest does not promise (world_size {m['world_size']}; "
                           f"stray: {', '.join(stray)})", str(d / stray[0]), None, "world_size")
    except BadInput as e:
        return e
    return None


def rank_event_checks(m: dict, path: str, k: int, e: dict) -> None:
    """The loader's checks of a rank file's k-th event (0-based) beyond the schema: the first one is a
    rank_start of this run, in this world; every ``ids`` and ``shape`` is plain data of its type."""
    if k == 0:
        first = e
        if first["ev"] != S.RANK_START:
            raise BadInput(f"{path}:1: field 'ev': the first event of a rank must be {S.RANK_START}, got {first['ev']!r}",
                           path, 1, "ev")
        dig = first.get("config_digest")
        if dig is not None and dig != m["config_digest"]:
            raise BadInput(f"{path}:1: field 'config_digest': {dig!r} differs from the manifest's {m['config_digest']!r} "
                           f"(a rank file from another run?)", path, 1, "config_digest")
        run_id = m.get("run_id")
        rid = first.get("run_id")
        if run_id is not None and rid != run_id:
            raise BadInput(f"{path}:1: field 'run_id': {rid!r} differs from the manifest's {run_id!r} "
                           f"(a rank file from another run: runs are never mixed)", path, 1, "run_id")
        w = first.get("world")
        if w is not None and w != m["world_size"]:
            raise BadInput(f"{path}:1: field 'world': this rank ran in a world of {w!r}, the manifest says "
                           f"world_size {m['world_size']}", path, 1, "world")
    _check_ids(path, k + 1, e)


def open_run(path: str | Path):
    """A run directory to stream: ``(source, deferred, checks)`` for ``stream.scan`` -- the source (its
    manifest read and schema-checked now), a manifest-level problem to raise once the rank files' schema
    errors (which come first) are ruled out, and the per-event loader checks."""
    from .stream import DirSource
    d = _run_dir(path)
    m = read_manifest(d)
    src = DirSource(str(d), m)
    deferred = run_level_problem(d, m)

    def checks(r, p, k, e):
        rank_event_checks(m, p, k, e)

    return src, deferred, checks


def finish_open(src) -> None:
    """After the scan: the launcher's summary.json, when there is one."""
    src.summary = _load_summary(Path(src.path))


def _check_manifest(m: dict, mp: str) -> None:
    """The manifest fields conform reads beyond schema v1's required ones, with their types and ranges."""
    def bad(field, msg):
        raise BadInput(f"{mp}: field {field!r}: {msg}", mp, None, field)

    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    w = m["world_size"]
    if not 1 <= w <= 4096:
        bad("world_size", f"expected 1..4096 ranks, got {w}")
    if m["backend"] not in ("gloo", "nccl"):
        bad("backend", f"{m['backend']!r} is not one of gloo, nccl")
    for f in ("fault", "unsafe", "launcher"):
        if m.get(f) is not None and not isinstance(m[f], str):
            bad(f, f"expected a string, got {type(m[f]).__name__}")
    roles = m["roles"]
    for k, v in roles.items():
        if not isinstance(v, str) or not k.isdigit() or int(k) >= w:
            bad(f"roles.{k}", f"expected a rank < {w} mapped to a role name, got {str(v)[:40]!r}")
    cfg = m["config"]
    for f, lo, hi in (("chunks", 0, 10**7), ("steps", 1, 10**4), ("d_in", 0, 10**4), ("d_out", 0, 10**4),
                      ("hard_cut_at", -1, 10**7)):
        if f in cfg and not (is_int(cfg[f]) and lo <= cfg[f] <= hi):
            bad(f"config.{f}", f"expected an int in {lo}..{hi}, got {str(cfg[f])[:40]!r}")
    for f in ("fault", "unsafe", "topology", "backend"):
        if cfg.get(f) is not None and not isinstance(cfg[f], str):
            bad(f"config.{f}", f"expected a string, got {type(cfg[f]).__name__}")
    if "model" in cfg and not isinstance(cfg["model"], dict):
        bad("config.model", f"expected an object, got {type(cfg['model']).__name__}")
    if m.get("mesh_ranks") is not None and not (isinstance(m["mesh_ranks"], list) and all(is_int(x) for x in m["mesh_ranks"])):
        bad("mesh_ranks", "expected a list of ranks")


_RANK_FILE = re.compile(r"rank(\d+)\.jsonl")


def _check_ids(path: str, line: int, e: dict) -> None:
    """``ids`` (a comm op's envelope ids) and ``groups``: plain data of the documented types, or bad input."""
    ids = e.get("ids")
    if ids is not None and (not isinstance(ids, list) or len(ids) != 3
                            or not all(isinstance(x, int) and not isinstance(x, bool) for x in ids)):
        raise BadInput(f"{path}:{line}: field 'ids': expected [call_id, chunk_index, cache_epoch] (3 ints), got {ids!r}"[:300],
                       path, line, "ids")
    for f in ("dtype",):
        if f in e and e[f] is not None and not isinstance(e[f], str):
            raise BadInput(f"{path}:{line}: field {f!r}: expected a string, got {type(e[f]).__name__}", path, line, f)
    if "shape" in e and e["shape"] is not None:
        sh = e["shape"]
        if not isinstance(sh, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in sh):
            raise BadInput(f"{path}:{line}: field 'shape': expected a list of ints, got {sh!r}"[:300], path, line, "shape")
    for f in ("src", "dst"):
        if f in e and (not isinstance(e[f], int) or isinstance(e[f], bool)):
            raise BadInput(f"{path}:{line}: field {f!r}: expected int, got {type(e[f]).__name__}", path, line, f)


def _load_summary(d: Path) -> dict:
    p = d / "summary.json"
    if not p.exists():
        return {}
    try:
        s = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInput(f"{p}: not valid JSON ({e})", str(p)) from None
    if not isinstance(s, dict):
        raise BadInput(f"{p}: expected a JSON object, got {type(s).__name__}", str(p))
    if "interrupted" in s and not isinstance(s["interrupted"], bool):
        raise BadInput(f"{p}: field 'interrupted': expected true/false, got {s['interrupted']!r}", str(p), None, "interrupted")
    return s


def load_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}:{e.lineno}: not valid JSON ({e.msg})", str(path), e.lineno) from None
