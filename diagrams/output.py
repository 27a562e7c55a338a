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
    m = out / MANIFEST
    if not m.is_file():
        return set()
    try:
        return set(json.loads(m.read_text()).get("files", []))
    except (ValueError, AttributeError):
        return set()


def write_tree(out: Path, files: dict[str, bytes], extra: dict | None = None) -> list[Path]:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; expected a directory (new or one a previous render wrote)")
    before = previous_files(out) if out.is_dir() else set()
    clashes = [rel for rel in sorted(files) if (out / rel).exists() and rel not in before]
    if clashes:
        shown = ", ".join(clashes[:5]) + (" …" if len(clashes) > 5 else "")
        raise OutputError(f"--out {out} already holds files lockstep render did not write ({shown}); refusing to "
                          f"overwrite them: choose an empty or new directory")
    for rel in sorted(before - set(files)):
        p = out / rel
        if p.is_file() and ".." not in Path(rel).parts:
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
