"""Output paths the user names (``run --trace-dir``, ``run --flight-recorder``, ``render --out``),
checked before any work starts: a path under a file, in a filesystem that cannot hold files
(/proc, /sys) or in a directory this user cannot write ends the command with one line naming the
option and the path (exit 2), never a traceback after the work is done."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import click


def _why(e: OSError) -> str:
    return {errno.ENOTDIR: "a component of the path is a file, not a directory",
            errno.EACCES: "permission denied", errno.EPERM: "permission denied",
            errno.EROFS: "read-only file system", errno.ENOENT: "it cannot be created there",
            errno.ENOSPC: "no space left on the device",
            errno.EEXIST: "it exists and is not a directory"}.get(e.errno, e.strerror or str(e))


def writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Create ``path`` (with its parents) if needed and prove a file can be written in it; raise a
    one-line ``click.UsageError`` naming ``option`` otherwise.  Nothing already there is touched."""
    p = Path(path)
    for parent in [p, *p.parents]:
        if parent.exists():
            if not parent.is_dir():
                where = "is a file" if parent == p else f"is under {parent}, which is a file"
                raise click.UsageError(f"{option} {p}: {where}; expected a directory")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p, prefix=".lockstep-probe-"):
            pass
    except OSError as e:
        raise click.UsageError(f"{option} {p}: cannot write there ({_why(e)})") from None
    return p
