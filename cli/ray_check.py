"""``lockstep check ... --ray [ADDRESS]``: the CLI side of model/ray_search.py.

``SpecFactory`` is the picklable recipe every Ray actor builds its model from (a spec reference,
variant, raw parameters, backend; reduction on/off for direct ``check_ray`` callers — the engine
configures the model itself); ``run`` hands the check to ``model.engine.check``; the rest is the terminal progress line and the
per-partition report (stderr, text mode only)."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

import click


@dataclass(frozen=True)
class SpecFactory:
    """Build a spec's model for the safety search, the same way in the driver and in every actor.
    ``spec`` is a shipped name, a spec file or a module (the file must exist on every Ray node)."""

    spec: str
    variant: str | None = None
    params: dict = field(default_factory=dict)  # NAME -> raw string, as on the command line
    backend: str | None = None
    reduction: bool = True

    def __call__(self):
        from ..spec.loading import build_model
        from ..spec.registry import pick_backend, resolve

        from ..model.features import configure

        info, p = resolve(self.spec, self.variant, dict(self.params), self.backend)
        model = build_model(info, p, self.variant, pick_backend(info, self.variant, self.backend))
        return configure(model, self.reduction, liveness=False)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size_mb(text: str) -> float:
    """``512M``, ``2G``, ``1.5GB``, ``800`` (MB) -> megabytes; ValueError otherwise."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError(text)
    val, unit = float(m.group(1)), m.group(2).lower()
    mb = val * {"": 1, "k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    if mb <= 0:
        raise ValueError(text)
    return mb


def progress():
    """(actor_progress callback, close) for a terminal; (None, no-op) otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, unit=" states", file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(st, actors):
        bar.n = st.states
        bar.set_postfix_str(progress_line(st, actors), refresh=False)
        bar.refresh()

    return update, bar.close


def progress_line(st, actors) -> str:
    """``depth 12, 3,400 transitions, frontier 610; [0] 1,200 st/s 140 MB [1] ...``: ``actors`` are the
    actors' last (transitions, states owned, frontier, RSS MB, seconds) reports (empty before the first)."""
    head = f"depth {st.depth}, {st.transitions:,} transitions"
    if not actors:
        return head
    frontier = sum(a[2] for a in actors)
    per = " ".join(f"[{k}] {a[1] / a[4] if a[4] > 0 else 0:,.0f} st/s {a[3]:,.0f} MB" for k, a in enumerate(actors))
    return f"{head}, frontier {frontier:,}; {per}"


def report_partitions() -> None:
    """One line per partition on stderr: where it ran, its states and its peak memory."""
    from ..model.ray_search import LAST_RUN

    parts = LAST_RUN.get("partitions") or []
    nodes = sorted({p["node"] for p in parts})
    click.echo(f"ray: {len(parts)} partitions on {len(nodes)} node(s)", err=True)
    for p in parts:
        click.echo(f"  partition {p['actor']}: node {p['node'][:12]} ({p['host']}, pid {p['pid']}), "
                   f"{p['states']:,} states, peak RSS {p['peak_rss_mb']:,.0f} MB, "
                   + (f"CPU {p['cpu_s']:.1f} s" if p["cpu_s"] is not None else "CPU not reported (stopped)"), err=True)


def run(spec, variant, raw_params: dict, backend, model, options, quiet: bool):
    """The check of ``model`` (built from the same spec in this process) on Ray (``options``: an
    engine.CheckOptions with ``ray`` set); a Result.  One-line errors
    (exit 2) for a missing Ray or an unreachable cluster."""
    from ..model.engine import check
    from ..model.ray_search import RayUnavailable

    update, close = progress()
    factory = SpecFactory(spec, variant, dict(raw_params), backend, options.reduction)
    try:
        result = check(model, options.replace(actor_progress=update), build=factory)
    except RayUnavailable as e:
        close()
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    finally:
        close()
    if not quiet:
        report_partitions()
    return result
