"""``lockstep conform``: check recorded traces of a real run against the spec.

Exit codes (docs/conformance.md):
  0  CONFORMS: the spec explains every recorded event (Flight Recorder: the dumps are CONSISTENT)
  1  DOES NOT CONFORM: the first event the spec cannot explain is named (Flight Recorder: MISMATCH, or
     DOES_NOT_CONFORM: a clean run's collectives a user spec does not follow)
  2  bad input, or a run the spec cannot model ("not checkable: ..."); one line naming file, line, field
  3  INCONCLUSIVE: a search budget ended the replay (how far it got is printed), the run was
     interrupted (its recorded prefix was checked), the Flight Recorder dumps hold no entries, or a
     user spec's search reached its bound before it followed them
  4  CONFORMS TO VARIANT: an ``--unsafe`` run the hardened spec rejects behaves exactly as its spec
     variant predicts (the planted bug's counterexample class)
``--json`` prints the stable schema documented in docs/conformance.md.
"""
from __future__ import annotations

import json
import sys

import click

from ..model.api import SpecError
from .params import Seconds


def _spec_ref(v):  # one resolver for every command (spec/loading.py)
    from lockstep.spec.loading import spec_for_conformance
    from lockstep.spec.registry import UsageError
    try:
        return spec_for_conformance(v)
    except UsageError as e:
        raise click.BadParameter(str(e), param_hint="--spec") from None


def _user_spec(ref: str, params: tuple):
    """(SpecInfo, raw parameters) where ``--spec`` names a user spec that is none of lockstep's own
    topologies (its Flight Recorder dumps are compared by conformance/flight_user.py); else None."""
    from lockstep.spec.loading import CONFORM_TOPOLOGIES, load_spec
    from lockstep.spec.registry import SPEC_MODULES, UsageError, resolve

    from .params import parse_params

    if ref in (None, "auto") or ref in SPEC_MODULES:
        return None
    try:
        info = load_spec(ref)
    except UsageError as e:
        raise click.BadParameter(str(e), param_hint="--spec") from None
    if info.name in CONFORM_TOPOLOGIES:
        return None
    raw = parse_params(params)
    try:
        resolve(info, None, raw)  # an unknown parameter or a bad value: a usage error before any dump is read
    except UsageError as e:
        raise click.UsageError(str(e)) from None
    return info, raw


def _complete(ctx, param, incomplete):
    from lockstep.cli.params import complete_spec
    return [c for c in complete_spec(ctx, param, incomplete) if c.value in ("tp", "pp0", "pp1") or c.type != "plain"
            or c.value.endswith(".py")]


def _bad_input(e, as_json: bool) -> None:
    e.args = (" ".join(str(e).split()),)  # one line, whatever the message quotes
    if as_json:
        click.echo(json.dumps({"schema": 1, "verdict": "BAD_INPUT", **e.to_dict()}, indent=1, sort_keys=True))
    else:
        click.echo(f"lockstep conform: {'' if str(e).startswith('not checkable') else 'bad input: '}{e}", err=True)
    sys.exit(2)


def _refuse_mixed(trace_dir, fr_dir, **opts) -> None:
    """A usage error (exit 2) for a mix of the two checks: a trace replay (TRACE_DIR) and a Flight Recorder
    check (--flight-recorder) are separate commands, and an option of one is never silently ignored by
    the other."""
    if trace_dir is not None and fr_dir is not None:
        raise click.UsageError("give TRACE_DIR or --flight-recorder DUMP_DIR, not both: they are two checks "
                               "(run `lockstep conform` once for each)")
    replay_only = {"no_checker": "--no-checker", "budget": "--budget", "time_limit": "--time-limit"}
    if fr_dir is not None:
        given = [flag for name, flag in replay_only.items() if opts[name] not in (None, False)]
        if given:
            raise click.UsageError(f"{', '.join(given)} applies to a TRACE_DIR replay, not to --flight-recorder")
    elif opts["allow_missing"]:
        raise click.UsageError("--allow-missing applies to --flight-recorder DUMP_DIR only")


@click.command("conform", context_settings={"help_option_names": ["-h", "--help"]},
               epilog="Exit codes: 0 conforms (dumps consistent), 1 does not conform (dumps mismatch, or a user spec that "
                      "does not follow a clean run), 2 bad input or not checkable, 3 inconclusive (budget, interrupted "
                      "run, empty dumps, a user spec's search bound), 4 an --unsafe run that conforms to its spec variant.")
@click.argument("trace_dir", required=False, type=click.Path())
@click.option("--spec", "spec", default="auto", show_default=True, shell_complete=_complete,
              help="the spec to check against (auto: the manifest's topology; tp, pp0, pp1, or a user spec PATH.py[:NAME] / module[:NAME] whose SpecInfo.name is one of them; with --flight-recorder, any user spec)")
@click.option("-p", "params", multiple=True, metavar="NAME=VALUE",
              help="with --flight-recorder and a user spec: a parameter of that spec (repeatable); the spec's world must be the dumps'")
@click.option("--flight-recorder", "fr_dir", type=click.Path(), default=None,
              help="check Flight Recorder dumps (pickle or JSON, versions 2.x) in this directory instead")
@click.option("--allow-missing", is_flag=True, help="with --flight-recorder: check the dumps there although some ranks left none")
@click.option("--mid-run", is_flag=True,
              help="with --flight-recorder and a user spec: the dumps were taken while the run went on (its collectives need only be a prefix of a spec run)")
@click.option("--no-checker", is_flag=True, help="for --unsafe runs: do not run the model checker on the variant")
@click.option("--budget", type=click.IntRange(min=1), default=None,
              help="search-node budget of the replay (default: proportional to the trace); reaching it is INCONCLUSIVE")
@click.option("--time-limit", type=Seconds(), default=None,
              help="seconds the replay may search; reaching it is INCONCLUSIVE")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output (docs/conformance.md)")
def conform(trace_dir, spec, params, fr_dir, allow_missing, mid_run, no_checker, budget, time_limit, as_json):
    """Replay TRACE_DIR (manifest.json + rank*.jsonl from `lockstep run`) against the spec: CONFORMS,
    or per rank the first event the spec cannot explain, the spec state there and what was enabled.
    With --flight-recorder DUMP_DIR: check the dumps against c10d matching, and name the spec's
    planted bug a recorded hang is an instance of; with a user spec, also whether the spec can run
    the recorded collectives and end as the run did."""
    from lockstep.conformance import loader
    from lockstep.conformance.report import render

    _refuse_mixed(trace_dir, fr_dir, allow_missing=allow_missing, no_checker=no_checker, budget=budget,
                  time_limit=time_limit)
    user = _user_spec(spec, params) if fr_dir is not None else None
    if user is None:
        for given, flag in ((params, "-p"), (mid_run, "--mid-run")):
            if given:
                raise click.UsageError(f"{flag} applies to --flight-recorder with a user spec (a spec of lockstep's own "
                                       "topologies takes its parameters from the run)")
        spec = _spec_ref(spec)
    try:
        if fr_dir is not None:
            from lockstep.conformance import flight
            rep = flight.check_dir(fr_dir, spec=spec if user is None else "auto", allow_missing=allow_missing, user=user,
                                   mid_run=mid_run)
            click.echo(json.dumps(rep, indent=1, sort_keys=True, default=str) if as_json else flight.render(rep))
            sys.exit(3 if rep["verdict"] == "INCONCLUSIVE" else (0 if rep["ok"] else 1))
        if trace_dir is None:
            raise click.UsageError("give TRACE_DIR or --flight-recorder DUMP_DIR")
        from lockstep.conformance.check import conform_dir
        rep = conform_dir(trace_dir, spec=spec, check_variant=not no_checker, budget=budget, seconds=time_limit)
    except loader.BadInput as e:
        _bad_input(e, as_json)
    except SpecError as e:  # the spec (--spec FILE) is at fault, not the trace
        click.echo(f"lockstep conform: {e}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=1, sort_keys=True, default=str))
    else:
        click.echo(render(rep))
    sys.exit(rep.exit_code)
