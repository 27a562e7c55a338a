"""``lockstep``: check, list, run, conform, render.

Exit codes: 0 the properties hold, 1 a violation, 2 bad usage or a spec error, 3 a bound was reached
first.  Subcommands that need heavy dependencies (torch for ``run``) import them only when invoked.
"""
from __future__ import annotations

import importlib
import sys

import click

from ..spec.loading import SpecLoadError, build_model
from ..spec.registry import BACKENDS, UsageError, load, pick_backend, resolve
from .params import complete_param, complete_spec, complete_variant, parse_params


def _load_failed(e: SpecLoadError):
    """A spec that cannot be loaded: one line on stderr, exit 2."""
    click.echo(f"lockstep: {e}", err=True)
    sys.exit(2)


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
@click.argument("specs", nargs=-1, shell_complete=complete_spec)
@click.option("--json", "as_json", is_flag=True, help="machine-readable catalogue")
def list_(specs, as_json):
    """Specs (SPECS, or every shipped and installed one), their parameters with defaults, and variants
    with one-line descriptions.  A spec is a name, PATH.py[:NAME] or package.module[:NAME]."""
    from ..spec.loading import spec_names
    from .report import dumps

    cat = []
    for name in specs or spec_names():
        try:
            info = load(name)
        except SpecLoadError as e:
            _load_failed(e)
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
@click.argument("spec", shell_complete=complete_spec)
@click.option("--variant", "-v", default=None, shell_complete=complete_variant,
              help="a planted-bug variant (see `lockstep list`)")
@click.option("-p", "params", multiple=True, metavar="NAME=VALUE", shell_complete=complete_param,
              help="spec parameter (repeatable)")
@click.option("--backend", default=None, shell_complete=lambda c, p, i: [b for b in BACKENDS if b.startswith(i)], help="backend profile: " + ", ".join(BACKENDS)
              + " (default: the variant's documented backend, else gloo)")
@click.option("--max-states", type=click.IntRange(min=1), default=None, help="stop with BOUND_REACHED after this many states")
@click.option("--max-depth", type=click.IntRange(min=0), default=None, help="stop with BOUND_REACHED beyond this depth")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None, help="seconds before BOUND_REACHED")
@click.option("--no-reduction", is_flag=True, help="explore without partial-order or symmetry reduction")
@click.option("--no-liveness", is_flag=True, help="skip the liveness (lasso) check")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes for the safety search (fork); liveness and the vectorized core stay single-process")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="the safety search on Ray actors (a spec with a liveness check needs --no-liveness): a local instance, or ADDRESS "
                   "`auto` / `ray://host:port`; --workers N actors (default: the CPUs); docs/scaling.md")
@click.option("--actor-memory", default=None, metavar="SIZE",
              help="with --ray: memory budget per actor (e.g. 2G); passing it ends the run with BOUND_REACHED")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (schema: docs/json.md)")
def check(spec, variant, params, backend, max_states, max_depth, timeout, no_reduction, no_liveness, workers, ray_address,
          actor_memory, as_json):
    """Explore SPEC exhaustively and print a verdict, with a counterexample on a violation.  SPEC is a
    shipped name (`lockstep list`), a spec file PATH.py[:NAME] or package.module[:NAME] defining
    SPEC = SpecInfo(...).

    Exit status: 0 holds, 1 violation, 2 usage or spec error, 3 bound reached first."""
    from ..model.api import SpecError
    from ..model.checker import Bounds
    from .report import dumps, exit_code, text, to_json

    try:
        info, p = resolve(spec, variant, parse_params(params), backend)
        backend = pick_backend(info, variant, backend)
        model = build_model(info, p, variant, backend)
    except SpecLoadError as e:
        _load_failed(e)
    except UsageError as e:
        raise click.UsageError(str(e)) from None
    except SpecError as e:
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    if actor_memory is not None and ray_address is None:
        raise click.UsageError("--actor-memory applies to --ray only")
    if ray_address is not None:
        result = _check_on_ray(spec, variant, params, backend, model, no_reduction, no_liveness,
                               Bounds(max_states, max_depth, timeout), workers, ray_address, actor_memory, as_json)
    else:
        result = _check_here(model, no_reduction, no_liveness, Bounds(max_states, max_depth, timeout), workers)
    if as_json:
        click.echo(dumps(to_json(spec, variant, p, backend, result, not no_reduction)))
    else:
        click.echo(text(spec, variant, p, backend, result, shortest_known=_no_reduction_applied(model, no_reduction)))
    sys.exit(exit_code(result.verdict))


def _check_on_ray(spec, variant, params, backend, model, no_reduction, no_liveness, bounds, workers, address, actor_memory,
                  as_json):
    """``check --ray``: safety only (a model with a liveness check needs --no-liveness: usage error)."""
    from ..model.api import SpecError
    from ..model.parallel import engine_for
    from . import ray_check

    if not no_liveness and engine_for(model, True, 2) == "serial":
        raise click.UsageError("--ray runs the safety search only: add --no-liveness (liveness needs the whole graph "
                               "in one process: run it without --ray)")
    budget = None
    if actor_memory is not None:
        try:
            budget = ray_check.parse_size_mb(actor_memory)
        except ValueError:
            raise click.UsageError(f"--actor-memory {actor_memory!r}: expected a size such as 512M or 2G") from None
    try:
        return ray_check.run(spec, variant, parse_params(params), backend, not no_reduction, bounds,
                             workers if workers > 1 else None, address, budget, quiet=as_json)
    except SpecError as e:
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)


def _check_here(model, no_reduction, no_liveness, bounds, workers):
    from ..model.api import SpecError
    from ..model.parallel import check as run_check, engine_for

    if workers > 1 and (engine := engine_for(model, not no_liveness, workers)) != "parallel":
        hint = "; add --no-liveness" if engine == "serial" and not no_liveness else ""
        click.echo(f"lockstep: --workers ignored: this check runs on the {engine} core{hint}", err=True)
    update, close = _progress()
    try:
        result = run_check(model, bounds, progress=update, liveness=not no_liveness,
                           reduction=not no_reduction, workers=workers)
    except SpecError as e:
        close()
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    close()
    return result


def _no_reduction_applied(model, no_reduction: bool) -> bool:
    """Whether breadth-first order makes the counterexample a shortest one: no partial-order or symmetry
    reduction took part (asked off, or the model offers none).  Unknown -> False (never claim it)."""
    if no_reduction:
        return True
    por, sym = getattr(model, "_por_on", None), getattr(model, "_sym_on", None)
    return por is False and sym is False


def main():
    cli(prog_name="lockstep")


if __name__ == "__main__":
    main()
