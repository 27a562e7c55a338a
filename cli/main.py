"""``lockstep``: check, list, run, conform, render.

Exit codes: 0 the properties hold, 1 a violation, 2 bad usage or a spec error, 3 a bound was reached
first, 130 interrupted (SIGINT/SIGTERM/SIGHUP; ``check`` prints the statistics so far).  Subcommands
that need heavy dependencies (torch for ``run``) import them only when invoked.
"""
from __future__ import annotations

import importlib
import os
import sys
import time

import click

from ..spec.loading import SpecLoadError, build_model
from ..spec.registry import BACKENDS, UsageError, load, pick_backend, resolve
from ..spec.notes import check_notes
from .params import Seconds, complete_param, complete_spec, complete_variant, parse_params


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

    def invoke(self, ctx):
        """Any file-system error that reaches here is still one line naming the path, exit 2."""
        try:
            return super().invoke(ctx)
        except OSError as e:
            if isinstance(e, BrokenPipeError):
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"lockstep: {where}{e.strerror or e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("lockstep: interrupted", err=True)
            ctx.exit(130)

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


def _progress(seen: dict):
    """A progress line on a terminal (stderr), nothing otherwise; ``seen["stats"]`` always holds the
    latest statistics the checker reported (about 4 times a second), for an interrupted check."""
    def remember(st):
        seen["stats"] = st

    if not sys.stderr.isatty():
        return remember, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None, unit=" states", file=sys.stderr, dynamic_ncols=True, leave=False)

    def update(st):
        remember(st)
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
@click.option("--timeout", type=Seconds(), default=None, help="seconds before BOUND_REACHED")
@click.option("--no-reduction", is_flag=True, help="explore without partial-order or symmetry reduction")
@click.option("--no-liveness", is_flag=True, help="skip the liveness (lasso) check")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes for the safety search (fork); liveness and the vectorized core stay single-process")
@click.option("--cross-check", "cross", is_flag=True,
              help="run the check reduced and unreduced; exit 2 if verdict classes or reachable violation classes differ")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="the safety search on Ray actors (a spec with a liveness check needs --no-liveness): a local instance, or ADDRESS "
                   "`auto` / `ray://host:port`; --workers N actors (default: the CPUs); docs/scaling.md")
@click.option("--actor-memory", default=None, metavar="SIZE",
              help="with --ray: memory budget per actor (e.g. 2G); passing it ends the run with BOUND_REACHED")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (schema: docs/json.md)")
def check(spec, variant, params, backend, max_states, max_depth, timeout, no_reduction, no_liveness, workers, cross,
          ray_address, actor_memory, as_json):
    """Explore SPEC exhaustively and print a verdict, with a counterexample on a violation.  SPEC is a
    shipped name (`lockstep list`), a spec file PATH.py[:NAME] or package.module[:NAME] defining
    SPEC = SpecInfo(...).

    \b
    Exit status: 0 holds, 1 violation, 2 usage or spec error (or a failed --cross-check), 3 bound
    reached first, 4 vacuous (no violation, but a role never reached its commitment/emission),
    130 interrupted (SIGINT/SIGTERM/SIGHUP; the statistics so far are printed, verdict INTERRUPTED)."""
    from ..model.api import SpecError
    from ..model.engine import CheckOptions
    from ..model.result import Bounds
    from .report import dumps, exit_code, text, to_json

    if as_json:  # what a spec prints (a debugging print in a guard, say) must not corrupt the JSON on stdout
        _JSON_OUT[0], sys.stdout = sys.stdout, sys.stderr
    try:
        info, p = resolve(spec, variant, parse_params(params), backend)
        backend = pick_backend(info, variant, backend)
        model = build_model(info, p, variant, backend)
    except SpecLoadError as e:
        _load_failed(e)
    except UsageError as e:
        raise click.UsageError(str(e)) from None
    except SpecError as e:  # a declaration the world refuses when it is built
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    if actor_memory is not None and ray_address is None:
        raise click.UsageError("--actor-memory applies to --ray only")
    if ray_address is None and workers > (most := max(16, 4 * (os.cpu_count() or 1))):
        raise click.UsageError(f"--workers {workers}: this machine has {os.cpu_count()} CPUs; more than {most} worker "
                               f"processes only add processes (--ray spreads a search over other machines)")
    if cross and ray_address is not None:
        raise click.UsageError("--cross-check runs both searches in this process: drop --ray")
    budget = None
    if actor_memory is not None:
        from . import ray_check

        try:
            budget = ray_check.parse_size_mb(actor_memory)
        except ValueError:
            raise click.UsageError(f"--actor-memory {actor_memory!r}: expected a size such as 512M or 2G") from None
    options = CheckOptions(bounds=Bounds(max_states, max_depth, timeout), reduction=not no_reduction,
                           liveness=not no_liveness, workers=workers, ray=ray_address, actor_memory_mb=budget,
                           cross_check=cross)
    if cross:
        _cross_check(spec, variant, p, backend, info, model, options, as_json)
        return
    if ray_address is not None:
        result, code = _check_on_ray(spec, variant, params, backend, model, options, as_json)
    else:
        result, code = _check_here(model, options)
    expected = documented(info, variant)
    notes = check_notes(model, result, not no_reduction)
    if as_json:
        click.echo(dumps(to_json(spec, variant, p, backend, result, not no_reduction, expected, notes)), file=_JSON_OUT[0])
    else:
        click.echo(text(spec, variant, p, backend, result, shortest_known=result.reduced is False, expected=expected))
        for line in notes:
            click.echo(line)
    sys.exit(exit_code(result.verdict) if code is None else code)


def documented(info, variant) -> tuple:
    """The verdicts the spec documents: the variant's planted bug, or its hardened protocol's."""
    return tuple(info.variants[variant].expected) if variant else tuple(info.hardened_expected)


def _spec_error(e) -> None:
    click.echo(f"lockstep: {e}", err=True)
    sys.exit(2)


def _check_on_ray(spec, variant, params, backend, model, options, as_json):
    """``check --ray``: safety only (a model with a liveness check needs --no-liveness: usage error)."""
    from ..model.api import SpecError
    from ..model.engine import wants_liveness
    from . import ray_check

    try:
        if wants_liveness(model, options):
            raise click.UsageError("--ray runs the safety search only: add --no-liveness (liveness needs the whole graph "
                                   "in one process: run it without --ray)")
    except SpecError as e:  # the model's declared features do not match its methods
        _spec_error(e)
    t0 = time.perf_counter()
    try:
        return ray_check.run(spec, variant, parse_params(params), backend, model, options, quiet=as_json), None
    except SpecError as e:
        _spec_error(e)
    except KeyboardInterrupt as e:  # the Ray session is shut down on the way out (model/ray_search.py)
        from .interrupt import EXIT_INTERRUPTED
        from .report import interrupted_result
        return interrupted_result(None, time.perf_counter() - t0, str(e) or "SIGINT"), EXIT_INTERRUPTED


def _check_here(model, options):
    from ..model.api import SpecError
    from ..model.engine import check as run_check, plan
    from .interrupt import EXIT_INTERRUPTED, signals_as_interrupt
    from .report import interrupted_result

    try:
        if options.workers > 1 and (engine := plan(model, options)) != "parallel":
            hint = "; add --no-liveness" if engine == "liveness" else ""
            core = "serial" if engine == "liveness" else engine
            click.echo(f"lockstep: --workers ignored: this check runs on the {core} core{hint}", err=True)
    except SpecError as e:
        _spec_error(e)
    seen: dict = {}
    update, close = _progress(seen)
    t0 = time.perf_counter()
    try:
        with signals_as_interrupt():
            result = run_check(model, options.replace(progress=update))
    except SpecError as e:
        close()
        _spec_error(e)
    except KeyboardInterrupt as e:
        close()
        return interrupted_result(seen.get("stats"), time.perf_counter() - t0, str(e) or "SIGINT"), EXIT_INTERRUPTED
    close()
    return result, None


def _cross_check(spec, variant, p, backend, info, model, options, as_json):
    """``check --cross-check``: the reduced result is reported when both searches agree."""
    from ..model.api import SpecError
    from ..model.engine import check as run_check
    from .interrupt import EXIT_INTERRUPTED, signals_as_interrupt
    from .report import dumps, exit_code, interrupted_result, text, to_json

    expected = documented(info, variant)
    seen: dict = {}
    update, close = _progress(seen)
    t0 = time.perf_counter()
    try:
        with signals_as_interrupt():  # Ctrl-C, SIGTERM, SIGHUP: the statistics so far, exit 130, as for check
            result = run_check(model, options.replace(progress=update), build=lambda: build_model(info, p, variant, backend))
    except SpecError as e:
        close()
        _spec_error(e)
    except KeyboardInterrupt as e:
        close()
        result = interrupted_result(seen.get("stats"), time.perf_counter() - t0, str(e) or "SIGINT")
        if as_json:
            click.echo(dumps(to_json(spec, variant, p, backend, result, True, expected)), file=_JSON_OUT[0])
        else:
            click.echo(text(spec, variant, p, backend, result, expected=expected))
            click.echo("cross-check: interrupted before both searches ended; nothing was compared")
        sys.exit(EXIT_INTERRUPTED)
    close()
    summary = result.cross_check
    if as_json:
        out = to_json(spec, variant, p, backend, result, True, expected)
        out["cross_check"] = summary
        click.echo(dumps(out), file=_JSON_OUT[0])
    else:
        click.echo(text(spec, variant, p, backend, result, expected=expected))
        r, u = summary["reduced"], summary["unreduced"]
        click.echo("")
        cls = lambda x: ", ".join(x["reachable_violation_classes"]) or "none"  # noqa: E731
        click.echo(f"cross-check: reduced {r['verdict']} ({r['states']:,} states), unreduced {u['verdict']} ({u['states']:,} states); "
                   f"reachable violation classes and fail-fast ends: reduced {cls(r)}; unreduced {cls(u)}"
                   + ("" if summary["agree"] else "  DISAGREE"))
    if not summary["agree"]:
        click.echo(f"lockstep: cross-check failed: {'; '.join(summary['differences'])}", err=True)
        sys.exit(2)
    sys.exit(exit_code(result.verdict))


_JSON_OUT: list = [None]  # the standard output --json writes to (check --json sends what specs print to stderr)


def main():
    try:
        cli(prog_name="lockstep")
    except Exception as e:  # noqa: BLE001 - never a traceback that exits 1, which check means as "a violation"
        _unexpected(e)


def _unexpected(e: BaseException) -> None:
    """An exception no command turned into a message: a spec mistake lockstep does not check yet
    (blamed on the innermost line of the user's code it passed through), or a bug in lockstep (the
    traceback, to report).  Exit 2 either way: 1 would read as a verdict."""
    import traceback

    from ..model.api import SpecError

    if isinstance(e, SpecError):  # raised where no command expected one (conform --spec FILE, say)
        click.echo(f"lockstep: {e}", err=True)
        sys.exit(2)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the lockstep package
    libs = {os.path.dirname(os.__file__), sys.prefix, sys.base_prefix}
    frames = traceback.extract_tb(e.__traceback__)
    mine = [f for f in frames if not os.path.abspath(f.filename).startswith(here)
            and not any(os.path.abspath(f.filename).startswith(x) for x in libs) and not f.filename.startswith("<")]
    what = f"{type(e).__name__}: {e}"
    if mine:
        f = mine[-1]
        click.echo(f"lockstep: spec error at {f.filename}:{f.lineno} (in {f.name}): {what}", err=True)
    else:
        traceback.print_exception(e, file=sys.stderr)
        click.echo(f"lockstep: unexpected error ({what}): a spec mistake lockstep does not check yet, or a bug in "
                   f"lockstep; the traceback above says where", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
