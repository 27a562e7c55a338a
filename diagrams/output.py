"""Writing a rendered tree into a user's directory without clobbering anything of theirs.

Everything is rendered in memory first (relative path -> bytes).  A manifest
(``.lockstep-render.json``) lists the files a previous render wrote; a file that exists and is not
in it belongs to the user, and the render is refused before anything is written.  Files a previous
render wrote that this one no longer produces are removed, so a regenerated tree (the gallery) has
no stale leftovers.
"""
from __future__ import annotations

import json
from pathlib import Path

MANIFEST = ".lockstep-render.json"


class OutputError(ValueError):
    """The output directory cannot be used (it is a file, or holds files that are not ours)."""


def manifest_bytes(files: dict[str, bytes], extra: dict | None = None) -> bytes:
    doc = {"generator": "lockstep render", **(extra or {}), "files": sorted(files)}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def previous_files(out: Path) -> set[str]:
    """The files the manifest in ``out`` says a previous render wrote.  Only relative paths inside
    ``out`` are accepted: a manifest is a file in the user's directory, and what it lists is removed
    when the next render no longer produces it, so a manifest that names anything else (an absolute
    path, a ``..``, a string instead of a list) is refused, not trusted."""
    m = out / MANIFEST
    if not m.is_file():
        return set()
    bad = f"--out {out}: {m.name} is not a manifest lockstep render wrote"
    try:
        doc = json.loads(m.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise OutputError(f"{bad} ({e}); remove it, or choose another directory") from e
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise OutputError(f"{bad} (field files: expected a list of paths); remove it, or choose another directory")
    root = out.resolve()
    for f in files:
        p = Path(f)
        if not f or p.is_absolute() or ".." in p.parts or f.startswith("~") or root not in (out / p).resolve().parents:
            raise OutputError(f"{bad} (field files: {f!r} is not a path inside the directory); remove it, or choose "
                              f"another directory")
    return set(files)


def write_tree(out: Path, files: dict[str, bytes], extra: dict | None = None) -> list[Path]:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; expected a directory (new or one a previous render wrote)")
    before = previous_files(out) if out.is_dir() else set()
    # a file of the user's where the render would write, or where it needs a directory
    clashes = [rel for rel in sorted(files) if (out / rel).exists() and rel not in before]
    clashes += sorted({str(q.relative_to(out)) for rel in files for q in (out / rel).parents
                       if out in q.parents and q.exists() and not q.is_dir()})
    if clashes:
        shown = ", ".join(clashes[:5]) + (" …" if len(clashes) > 5 else "")
        raise OutputError(f"--out {out} already holds files lockstep render did not write ({shown}); refusing to "
                          f"overwrite them: choose an empty or new directory")
    for rel in sorted(before - set(files)):
        p = out / rel
        if p.is_file():
            p.unlink()
            _prune(out, p.parent)
    written = []
    for rel in sorted(files):
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(files[rel])
        written.append(p)
    (out / MANIFEST).write_bytes(manifest_bytes(files, extra))
    return written


def _prune(root: Path, d: Path) -> None:
    """Remove directories a previous render created and left empty."""
    root = root.resolve()
    d = d.resolve()
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
