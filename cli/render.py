"""``lockstep render``: state diagrams, swimlanes and an HTML report for design review.

Three forms:
  lockstep render SPEC [--variant V] [-p NAME=VALUE ...] [--backend B] --out DIR
  lockstep render --trace TRACE_DIR --out DIR
  lockstep render --gallery [--check]

Exit status: 0 rendered (or, with --check, the gallery is up to date), 1 the gallery is stale
(--check), 2 bad usage, a spec error, or an unusable --out.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..spec import loading as L
from ..spec.registry import BACKENDS, UsageError
from .params import complete_param, complete_spec, complete_variant, parse_params


def _out_dir(out: Path | None, what: str) -> Path:
    if out is None:
        raise click.UsageError(f"{what} needs --out DIR (a new directory, or one a previous render wrote)")
    check_out(out)
    return out


class _OutDir(click.Path):
    """A directory path; an empty one (an unset shell variable, say) is a mistake, not the current directory."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("expected a directory, got an empty string", param, ctx)
        return super().convert(value, param, ctx)


def check_out(out: Path) -> None:
    """Refuse an --out that cannot hold a render, before any work is done: one line, exit 2."""
    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file; expected a directory (new, or one a previous render wrote)")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        _fail(f"--out {out}: {probe} is a file, so no directory can be made under it")
    resolved = str(out.resolve())
    if resolved == "/proc" or resolved.startswith(("/proc/", "/sys/", "/dev/")) or resolved in ("/sys", "/dev"):
        _fail(f"--out {out}: {resolved} is in a kernel file system (/proc, /sys, /dev), not a place for a render; "
              "choose another directory")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        _fail(f"--out {out}: {probe} is not writable (permission denied); choose another directory")
    if out.is_dir():
        from ..diagrams.output import OutputError, previous_files

        try:
            previous_files(out)
        except OutputError as e:
            _fail(str(e))


def _fail(msg: str) -> None:
    click.echo(f"lockstep render: {msg}", err=True)
    sys.exit(2)


def _write(out: Path, files: dict, extra: dict | None = None) -> None:
    from ..diagrams.output import OutputError, write_tree

    try:
        write_tree(out, files, extra)
    except OutputError as e:
        raise click.UsageError(str(e)) from None
    except OSError as e:
        _fail(f"--out {out}: cannot write there ({e.strerror or e}{': ' + e.filename if e.filename else ''})")


@click.command()
@click.argument("spec", required=False, shell_complete=complete_spec)
@click.option("--variant", "-v", default=None, shell_complete=complete_variant, help="a planted-bug variant (see `lockstep list`)")
@click.option("-p", "params", multiple=True, metavar="NAME=VALUE", shell_complete=complete_param, help="spec parameter (repeatable)")
@click.option("--backend", default=None, help="backend profile: " + ", ".join(BACKENDS)
              + " (default: the variant's documented backend, else gloo; the same rule as `lockstep check`)")
@click.option("--out", "-o", "out", type=_OutDir(path_type=Path), default=None,
              help="output directory (created; files of yours in it are never overwritten)")
@click.option("--max-states", type=click.IntRange(min=1), default=None,
              help="state bound for the check and the state-space exploration [default: 100000]")
@click.option("--png", is_flag=True, help="also write a PNG beside every graphviz SVG")
@click.option("--trace", "trace", type=click.Path(path_type=Path), default=None,
              help="render a recorded run (trace schema v1 directory) as a swimlane instead of a spec")
@click.option("--gallery", is_flag=True, help="regenerate the committed gallery (diagrams/gallery/) deterministically")
@click.option("--check", "check_only", is_flag=True, help="with --gallery: only report whether the committed gallery is up to date")
def render(spec, variant, params, backend, out, max_states, png, trace, gallery, check_only):
    """Render SPEC's role state diagrams, KV-cache lifecycle, reachable state space and (for a
    violating variant) who waits on whom at the end and the counterexample swimlane, with an
    index.html linking them; or a recorded run (--trace); or the committed gallery (--gallery).

    \b
    Exit status:
      0  rendered (with --gallery --check: the gallery is up to date)
      1  --gallery --check: the gallery is stale (regenerate with `lockstep render --gallery`)
      2  bad usage (unknown spec/variant/parameter/backend), a spec error, a bad trace directory,
         or an unusable --out (a file, under a file, not writable, /proc), one line, nothing written
    """
    modes = [m for m, on in (("SPEC", spec is not None), ("--trace", trace is not None), ("--gallery", gallery)) if on]
    if len(modes) != 1:
        raise click.UsageError("expected exactly one of SPEC, --trace TRACE_DIR or --gallery"
                               + (f" (got {', '.join(modes)})" if modes else ""))
    if check_only and not gallery:
        raise click.UsageError("--check only applies to --gallery")
    if gallery:
        _gallery(out, check_only)
    elif trace is not None:
        _trace(trace, _out_dir(out, "--trace"))
    else:
        _spec(spec, variant, params, backend, _out_dir(out, "render SPEC"), max_states, png)


def _spec(spec, variant, params, backend, out, max_states, png):
    from ..diagrams.build import DEFAULT_MAX_STATES, render_spec
    from ..diagrams.dot import DotMissing
    from ..model.api import SpecError

    try:
        r = render_spec(spec, variant, parse_params(params), backend, max_states or DEFAULT_MAX_STATES, png=png)
    except L.SpecLoadError as e:  # a spec that cannot be loaded: one line, as for check
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    except UsageError as e:
        raise click.UsageError(str(e)) from None
    except (SpecError, DotMissing) as e:
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    _write(out, r.files)
    click.echo(f"{r.verdict}: {r.message}")
    for n in r.notes:
        click.echo(f"note: {n}")
    click.echo(f"wrote {len(r.files)} files ({r.diagrams} diagrams) to {out}; open {out / 'index.html'}")


def _trace(trace_dir: Path, out: Path):
    from ..diagrams.trace import load, render_trace

    if not trace_dir.is_dir():
        raise click.UsageError(f"--trace {trace_dir}: expected a run directory holding manifest.json and rank<N>.jsonl")
    try:
        run = load(trace_dir)
    except ImportError:
        click.echo("lockstep: render --trace is not available yet: the trace loader (lockstep.conformance.schema) "
                   "is missing", err=True)
        sys.exit(2)
    except ValueError as e:  # TraceSchemaError names file, line and field
        raise click.UsageError(f"--trace {trace_dir}: {e}") from None
    files, line = render_trace(run, trace_dir.name)
    _write(out, files)
    click.echo(line)
    click.echo(f"wrote {len(files)} files to {out}; open {out / 'index.html'}")


def _gallery(out, check_only):
    from ..diagrams.gallery import GALLERY_DIR, stale, write_gallery

    target = out or GALLERY_DIR
    if check_only:
        problems = stale(target)
        if problems:
            click.echo(f"the gallery at {target} is out of date ({len(problems)} differences); "
                       "regenerate with `lockstep render --gallery`:")
            for p in problems[:20]:
                click.echo(f"  {p}")
            sys.exit(1)
        click.echo(f"the gallery at {target} is up to date")
        return
    check_out(target)
    from ..diagrams.output import OutputError

    try:
        written = write_gallery(target)
    except OutputError as e:
        raise click.UsageError(str(e)) from None
    except OSError as e:
        _fail(f"--out {target}: cannot write there ({e.strerror or e}{': ' + e.filename if e.filename else ''})")
    click.echo(f"wrote the gallery ({len(written)} files) to {target}; open {target / 'index.html'}")
