"""``lockstep``: check, list, run, conform, render.

Exit codes: 0 the properties hold, 1 a violation, 2 bad usage or a spec error, 3 a bound was reached
first.  Subcommands that need heavy dependencies (torch for ``run``) import them only when invoked.
"""
from __future__ import annotations

import importlib
import sys

import click

from ..spec.registry import BACKENDS, UsageError, available, load, pick_backend, resolve
from .params import parse_params


class LazyGroup(click.Group):
    """Registers ``run``, ``render`` and ``conform`` from their own modules on first use."""

    lazy = {"run": "lockstep.cli.run", "render": "lockstep.cli.render", "conform": "lockstep.cli.conform"}

    def list_commands(self, ctx):
        names = set(super().list_commands(ctx))
        for name, mod in self.lazy.items():
            if importlib.util.find_spec(mod) is not None:
                names.add(name)
        return sorted(names)

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self.lazy and importlib.util.find_spec(self.lazy[name]) is not None:
            cmd = getattr(importlib.import_module(self.lazy[name]), name)
        return cmd


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lockstep")
def cli():
    """lockstep: can these ranks hang, strand each other, or silently diverge?"""


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable catalogue")
def list_(as_json):
    """Specs, their parameters with defaults, and variants with one-line descriptions."""
    from .report import dumps

    cat = []
    for name in available():
        info = load(name)
        cat.append({
            "spec": name, "description": info.description,
            "params": {k: {"default": p.default, "help": p.help} for k, p in info.params.items()},
            "variants": {k: {"description": v.description, "expected": list(v.expected)} for k, v in info.variants.items()},
            "hardened_expected": list(info.hardened_expected),
        })
    if as_json:
        click.echo(dumps(cat))
        return
    for s in cat:
        click.echo(f"{s['spec']}: {s['description']}")
        click.echo("  parameters:")
        for k, p in s["params"].items():
            click.echo(f"    {k}={p['default']}  {p['help']}")
        if s["variants"]:
            click.echo("  variants (planted bugs -> verdict classes):")
            for k, v in s["variants"].items():
                click.echo(f"    {k}: {v['description']} -> {' or '.join(v['expected'])}")
        click.echo("")


def _progress():
    """A progress line on a terminal (stderr), nothing otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, unit=" states", file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(st):
        bar.n = st.states
        bar.set_postfix_str(f"depth {st.depth}, {st.transitions:,} transitions", refresh=False)
        bar.refresh()

    return update, bar.close


@cli.command()
@click.argument("spec")
@click.option("--variant", "-v", default=None, help="a planted-bug variant (see `lockstep list`)")
@click.option("-p", "params", multiple=True, metavar="NAME=VALUE", help="spec parameter (repeatable)")
@click.option("--backend", default=None, help="backend profile: " + ", ".join(BACKENDS)
              + " (default: the variant's documented backend, else gloo)")
@click.option("--max-states", type=click.IntRange(min=1), default=None, help="stop with BOUND_REACHED after this many states")
@click.option("--max-depth", type=click.IntRange(min=0), default=None, help="stop with BOUND_REACHED beyond this depth")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="seconds before BOUND_REACHED")
@click.option("--no-reduction", is_flag=True, help="explore without partial-order or symmetry reduction")
@click.option("--no-liveness", is_flag=True, help="skip the liveness (lasso) check")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes for the safety search (fork); liveness and the vectorized core stay single-process")
@click.option("--cross-check", "cross", is_flag=True,
              help="run the check reduced and unreduced; exit 2 if verdict classes or reachable violation classes differ")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (schema: docs/json.md)")
def check(spec, variant, params, backend, max_states, max_depth, timeout, no_reduction, no_liveness, workers, cross, as_json):
    """Explore SPEC exhaustively and print a verdict, with the shortest counterexample on a violation.

    Exit status: 0 holds, 1 violation, 2 usage or spec error (or a failed --cross-check), 3 bound
    reached first, 4 vacuous (no violation, but a role never reached its commitment/emission)."""
    from ..model.api import SpecError
    from ..model.checker import Bounds
    from ..model.parallel import check as run_check, engine_for
    from .report import dumps, exit_code, text, to_json

    try:
        info, p = resolve(spec, variant, parse_params(params), backend)
        backend = pick_backend(info, variant, backend)
        model = info.build(p, variant, backend)
    except UsageError as e:
        raise click.UsageError(str(e)) from None
    except SpecError as e:  # a declaration the world refuses when it is built
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    if workers > 1 and (engine := engine_for(model, not no_liveness, workers)) != "parallel":
        hint = "; add --no-liveness" if engine == "serial" and not no_liveness else ""
        click.echo(f"lockstep: --workers ignored: this check runs on the {engine} core{hint}", err=True)
    if cross:
        _cross_check(spec, variant, p, backend, info, Bounds(max_states, max_depth, timeout), not no_liveness, as_json)
        return
    update, close = _progress()
    try:
        result = run_check(model, Bounds(max_states, max_depth, timeout), progress=update, liveness=not no_liveness,
                           reduction=not no_reduction, workers=workers)
    except SpecError as e:
        close()
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    close()
    if as_json:
        click.echo(dumps(to_json(spec, variant, p, backend, result, not no_reduction)))
    else:
        click.echo(text(spec, variant, p, backend, result))
    sys.exit(exit_code(result.verdict))


def _cross_check(spec, variant, p, backend, info, bounds, liveness, as_json):
    """``check --cross-check``: the reduced result is reported when both searches agree."""
    from ..model.api import SpecError
    from ..model.checker import check as run_check
    from ..model.crosscheck import cross_check
    from .report import dumps, exit_code, text, to_json

    try:
        rep = cross_check(lambda: info.build(p, variant, backend),
                          lambda m, red: run_check(m, bounds, liveness=liveness, reduction=red), bounds.max_states)
    except SpecError as e:
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    result = rep["reduced"]["result"]
    summary = {k: {f: v for f, v in rep[k].items() if f != "result"} for k in ("reduced", "unreduced")}
    summary.update(agree=rep["agree"], differences=rep["differences"])
    if as_json:
        out = to_json(spec, variant, p, backend, result, True)
        out["cross_check"] = summary
        click.echo(dumps(out))
    else:
        click.echo(text(spec, variant, p, backend, result))
        r, u = summary["reduced"], summary["unreduced"]
        click.echo("")
        cls = lambda x: ", ".join(x["reachable_violation_classes"]) or "none"  # noqa: E731
        click.echo(f"cross-check: reduced {r['verdict']} ({r['states']:,} states), unreduced {u['verdict']} ({u['states']:,} states); "
                   f"reachable violation classes and fail-fast ends: reduced {cls(r)}; unreduced {cls(u)}"
                   + ("" if rep["agree"] else "  DISAGREE"))
    if not rep["agree"]:
        click.echo(f"lockstep: cross-check failed: {'; '.join(rep['differences'])}", err=True)
        sys.exit(2)
    sys.exit(exit_code(result.verdict))


def main():
    cli(prog_name="lockstep")


if __name__ == "__main__":
    main()
