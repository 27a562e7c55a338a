"""Loading a run directory for conformance: schema.py's strict loader, plus the checks conform needs
before it can trust a trace (a known topology, rank files that belong to this run).

Every problem is a ``BadInput`` (exit 2) whose message names the file, the 1-based line and the field,
as schema.TraceSchemaError does.  A truncated last line of a rank that crashed is not a problem: it
ends that rank's trace (``RankTrace.truncated``) and the report says so.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import schema as S

TOPOLOGIES = ("tp", "pp0", "pp1")


class BadInput(ValueError):
    """Input conform cannot check (exit 2).  ``path``/``line``/``field`` locate it when known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.path, self.line, self.field = path, line, field

    def to_dict(self) -> dict:
        return {"error": str(self), "path": self.path, "line": self.line, "field": self.field}


def load(path: str | Path) -> S.RunTrace:
    d = Path(path)
    if not d.exists():
        raise BadInput(f"{d}: no such trace directory", str(d))
    if not d.is_dir():
        raise BadInput(f"{d}: not a directory (expected a run directory with manifest.json and rank*.jsonl)", str(d))
    try:
        run = S.load_run(d)
    except S.TraceSchemaError as e:
        raise BadInput(str(e), e.path, e.line, e.field) from None
    except UnicodeDecodeError as e:
        raise BadInput(f"{d}: a trace file is not UTF-8 ({e.reason} at byte {e.start})", str(d)) from None
    m = run.manifest
    mp = str(d / S.MANIFEST_NAME)
    if m["topology"] not in TOPOLOGIES:
        raise BadInput(f"{mp}: field 'topology': {m['topology']!r} is not one of {', '.join(TOPOLOGIES)}", mp, None, "topology")
    for r, tr in run.ranks.items():
        if not tr.events:
            continue
        first = tr.events[0]
        if first["ev"] != S.RANK_START:
            raise BadInput(f"{tr.path}:1: field 'ev': the first event of a rank must be {S.RANK_START}, got {first['ev']!r}",
                           tr.path, 1, "ev")
        dig = first.get("config_digest")
        if dig is not None and dig != m["config_digest"]:
            raise BadInput(f"{tr.path}:1: field 'config_digest': {dig!r} differs from the manifest's {m['config_digest']!r} "
                           f"(a rank file from another run?)", tr.path, 1, "config_digest")
    return run


def load_json(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}:{e.lineno}: not valid JSON ({e.msg})", str(path), e.lineno) from None
