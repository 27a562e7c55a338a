"""``lockstep.testing``: protocol checks inside a user's own test suite.

    from lockstep.testing import assert_holds, assert_violation

    def test_exchange_is_deadlock_free():
        assert_holds("specs/pp_exchange_spec.py", microbatches=3)

    def test_send_first_is_caught():
        assert_violation("specs/pp_exchange_spec.py", variant="send-first", verdicts=("DEADLOCK",))

``spec`` is a SpecInfo, a module defining ``SPEC``, a spec file path (str or Path, optionally
``PATH.py:NAME``), ``package.module[:NAME]`` or a shipped spec name.  Parameters are keyword arguments
with Python values (``ranks=3``, ``hard_cuts=False``) or the strings ``-p`` takes.  A failed assertion
raises ``ProtocolCheckFailed`` (an AssertionError) whose message is the counterexample exactly as
``lockstep check`` prints it.

For recorded runs (the conformance side): ``run_world(topology, ...)`` runs a real world (gloo with
forked ranks, or NCCL under torchrun where torch sees one GPU per rank) under a hard deadline and
returns its trace directory; ``assert_conforms(trace_dir)`` and
``assert_instance_of(trace_dir, variant)`` check it.  The pytest plugin (``lockstep.pytest_plugin``)
offers ``run_world`` as the ``lockstep_run`` fixture.
"""
from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec.registry import SpecInfo, UsageError, pick_backend, resolve

__all__ = ["Result", "ProtocolCheckFailed", "check", "assert_holds", "assert_violation", "check_configuration", "load",
           "run_world", "conform", "assert_conforms", "assert_instance_of", "NotEnoughGPUs", "NotCheckable",
           "pick_run_backend"]


class ProtocolCheckFailed(AssertionError):
    """A protocol assertion failed; ``result`` is the check's Result (or the conformance report)."""

    def __init__(self, message: str, result=None):
        super().__init__(message)
        self.result = result


@dataclass
class Result:
    """One check, as plain attributes.  ``counterexample`` and ``waiting`` are the step and wait
    records of ``lockstep check --json`` (docs/json.md)."""

    spec: str
    variant: str | None
    params: dict
    backend: str
    reduction: bool
    verdict: str
    message: str
    states: int
    transitions: int
    depth: int
    seconds: float
    counterexample: list = field(default_factory=list)
    waiting: list = field(default_factory=list)
    cycle_start: int | None = None
    expected: tuple = ()          # the documented verdict classes of this configuration
    shortest: bool = False        # the counterexample is a shortest one (no reduction applied)
    cross_checked: str | None = None  # the unreduced verdict, when cross-checked
    notes: list = field(default_factory=list)  # the note: and hint: lines ``lockstep check`` prints after the verdict
    raw: Any = field(default=None, repr=False)  # the checker's own result object

    @property
    def holds(self) -> bool:
        return self.verdict == "HOLDS"

    @property
    def as_expected(self) -> bool:
        return self.verdict in self.expected

    def text(self) -> str:
        """The report ``lockstep check`` prints for this configuration."""
        from .cli.report import text

        return text(self.spec, self.variant, self.params, self.backend, self.raw, shortest_known=self.shortest)

    def to_json(self) -> dict:
        """The object ``lockstep check --json`` prints."""
        from .cli.report import to_json

        return to_json(self.spec, self.variant, self.params, self.backend, self.raw, self.reduction, self.expected,
                       self.notes)


def load(spec) -> tuple[SpecInfo, str]:
    """(SpecInfo, the label reports use) for any accepted form of ``spec``."""
    from .spec.loading import load_spec

    if isinstance(spec, SpecInfo):
        return spec, spec.name
    if isinstance(spec, types.ModuleType):
        info = getattr(spec, "SPEC", None)
        if not isinstance(info, SpecInfo):
            raise UsageError(f"module {spec.__name__} has no SPEC = SpecInfo(...)")
        return info, info.name
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise UsageError(f"expected a SpecInfo, a module, a spec file path or a spec name; got {type(spec).__name__}")
    return load_spec(spec), spec


def _raw(params: dict) -> dict[str, str]:
    out = {}
    for k, v in params.items():
        out[k] = ("true" if v else "false") if isinstance(v, bool) else str(v)
    return out


def check(spec, variant: str | None = None, *, backend: str | None = None, reduction: bool = True,
          liveness: bool = True, cross_check: bool = False, max_states: int | None = None,
          max_depth: int | None = None, timeout: float | None = None, workers: int = 1, **params) -> Result:
    """Check one configuration of ``spec`` and return its Result (never raises on a violation).

    ``cross_check=True`` also explores without reductions (safety only) and raises
    ProtocolCheckFailed if the two verdict classes differ.  Bad input raises UsageError; a spec that
    raises while building or exploring raises model.api.SpecError naming the role and transition."""
    from .model.engine import CheckOptions, check as run_check
    from .model.result import Bounds
    from .spec.loading import build_model

    info, label = load(spec)
    info, p = resolve(info, variant, _raw(params), backend)
    backend = pick_backend(info, variant, backend)
    model = build_model(info, p, variant, backend)
    options = CheckOptions(bounds=Bounds(max_states, max_depth, timeout), reduction=reduction, liveness=liveness,
                           workers=workers)
    raw = run_check(model, options)
    from .spec.notes import check_notes

    st = raw.stats
    res = Result(spec=label, variant=variant, params=p, backend=backend, reduction=reduction, verdict=raw.verdict,
                 message=raw.message, states=st.states, transitions=st.transitions, depth=st.depth,
                 seconds=st.seconds, counterexample=list(raw.counterexample), waiting=list(raw.waiting or []),
                 cycle_start=raw.cycle_start,
                 expected=tuple(info.variants[variant].expected if variant else info.hardened_expected),
                 shortest=raw.reduced is False, raw=raw,
                 notes=check_notes(model, raw, reduction))
    if cross_check:
        full = run_check(build_model(info, p, variant, backend), options.replace(liveness=False, reduction=False))
        res.cross_checked = full.verdict
        mine = raw.verdict if raw.verdict != "LIVENESS" else None  # the unreduced run checks safety only
        if mine is not None and full.verdict != mine and "BOUND_REACHED" not in (full.verdict, mine):
            raise ProtocolCheckFailed(f"{label}{' --variant ' + variant if variant else ''}: reductions changed the verdict: "
                                      f"{mine} with reductions, {full.verdict} without ({full.message})\n\n" + res.text(),
                                      res)
    return res


def assert_holds(spec, *, backend: str | None = None, reduction: bool = True, cross_check: bool = False,
                 **params) -> Result:
    """The hardened spec proves its properties (its documented hardened verdicts: HOLDS)."""
    r = check(spec, None, backend=backend, reduction=reduction, cross_check=cross_check, **params)
    if not r.as_expected:
        raise ProtocolCheckFailed(f"expected {' or '.join(r.expected)}, got {r.verdict}\n\n{r.text()}", r)
    return r


def assert_violation(spec, variant: str | None = None, verdicts: tuple | list | str = (), *, backend: str | None = None,
                     reduction: bool = True, cross_check: bool = False, **params) -> Result:
    """The configuration is caught: its verdict is one of ``verdicts`` (default: the variant's
    documented classes; without a variant, any violation) and it comes with a counterexample."""
    from .model.api import VIOLATIONS

    r = check(spec, variant, backend=backend, reduction=reduction, cross_check=cross_check, **params)
    want = (verdicts,) if isinstance(verdicts, str) else tuple(verdicts)
    if not want:
        want = r.expected if variant is not None else VIOLATIONS
    if r.verdict not in want:
        raise ProtocolCheckFailed(f"expected {' or '.join(want)}, got {r.verdict}: {r.message}\n\n{r.text()}", r)
    return r


def check_configuration(spec, variant: str | None = None, *, reduction: bool = True, cross_check: bool = False,
                        **params) -> Result:
    """The one definition of "this configuration behaves as documented", used by the pytest plugin and by
    lockstep's own tests: the hardened spec yields one of its hardened classes (HOLDS), a variant one of
    its documented classes, and a violation other than DEADLOCK comes with a counterexample."""
    r = check(spec, variant, reduction=reduction, cross_check=cross_check, **params)
    what = f"variant {variant}" if variant else "the hardened spec"
    if not r.as_expected:
        raise ProtocolCheckFailed(f"{what}: expected {' or '.join(r.expected)}, got {r.verdict}\n\n{r.text()}", r)
    if variant and r.verdict not in ("HOLDS", "DEADLOCK", "BOUND_REACHED") and not r.counterexample:
        raise ProtocolCheckFailed(f"{what}: {r.verdict} without a counterexample\n\n{r.text()}", r)
    return r


# -- recorded runs --------------------------------------------------------------------------------
DEFAULT_WORLD = {"tp": 2, "pp0": 2, "pp1": 3}
FAST = {"dist_timeout_s": 2.0, "heartbeat_s": 0.25, "watchdog_s": 4.0}
# NCCL creates its communicators in the first collectives (seconds on a cold GPU): a 2 s PG timeout
# would fail a healthy world there
FAST_NCCL = {"dist_timeout_s": 20.0, "heartbeat_s": 0.25, "watchdog_s": 25.0}


BACKENDS = ("auto", "gloo", "nccl")
LAUNCHERS = ("auto", "fork", "torchrun")


def gpus() -> int:
    """CUDA devices torch sees here (0 without torch's CUDA build)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pick_run_backend(backend: str, world: int) -> str:
    """``auto``: nccl when torch sees at least ``world`` GPUs (one per rank), else gloo.  ``nccl``
    without enough GPUs raises NotEnoughGPUs (a UsageError) naming both counts."""
    if backend not in BACKENDS:
        raise UsageError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    have = gpus() if backend != "gloo" else 0
    if backend == "auto":
        return "nccl" if have >= world else "gloo"
    if backend == "nccl" and have < world:
        raise NotEnoughGPUs(f"backend='nccl' needs one GPU per rank: a world of {world} needs {world}, "
                            f"this machine has {have}")
    return backend


class NotEnoughGPUs(UsageError):
    """An NCCL world was asked for on a machine without one GPU per rank."""


def run_world(topology: str, trace_dir, *, fault: str | None = None, unsafe: str | None = None, deadline_s: float = 60.0,
              backend: str = "auto", launcher: str = "auto", flight_recorder: bool = False, **params) -> Path:
    """Run a real ``topology`` world into ``trace_dir`` under a hard deadline (hung ranks are killed)
    and return the directory.  ``params`` are ``lockstep run -p`` parameters (``world=3``,
    ``chunks=2``); unless given, short PG/watchdog timeouts keep a faulted run brief.

    ``backend``: ``auto`` (nccl when torch sees one GPU per rank, else gloo), ``gloo`` or ``nccl``
    (NotEnoughGPUs, a UsageError, without one GPU per rank).  ``launcher``: ``fork`` (ranks forked from
    this process; gloo only), ``torchrun`` (``python -m torch.distributed.run --nproc-per-node=WORLD
    -m lockstep.cli.run ...``, one process per rank, any backend) or ``auto`` (torchrun for nccl, fork
    for gloo).  Both launchers kill every rank at the deadline.  ``flight_recorder=True`` dumps each
    rank's Flight Recorder into ``trace_dir/fr`` (``lockstep conform --flight-recorder``).

    Raises ProtocolCheckFailed if the deadline was hit."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch: forked ranks + OpenMP hang otherwise
    from .impl.config import RunConfig, apply_params
    from .impl.launch import RunDirError, launch_local, launch_torchrun

    if launcher not in LAUNCHERS:
        raise UsageError(f"launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    w = params.get("world", DEFAULT_WORLD.get(topology, 2))
    try:
        world = int(w)
    except (TypeError, ValueError):
        raise UsageError(f"world={w!r}: expected an integer") from None
    backend = pick_run_backend(backend, world)
    fast = FAST_NCCL if backend == "nccl" else FAST
    raw = {k: str(v) for k, v in {**fast, "world": world, **params}.items()}
    if launcher == "auto":
        launcher = "torchrun" if backend == "nccl" else "fork"
    if launcher == "fork" and backend == "nccl":
        raise UsageError("launcher='fork' forks its ranks from this process: gloo only (NCCL worlds run under torchrun)")
    try:
        cfg = apply_params(RunConfig(topology=topology, backend=backend, fault=fault or "", unsafe=unsafe or ""), raw)
    except ValueError as e:
        raise UsageError(str(e)) from None
    fr_dir = str(Path(trace_dir) / "fr") if flight_recorder else None
    try:
        if launcher == "torchrun":
            summary = launch_torchrun(cfg, trace_dir, force=True, deadline_s=deadline_s, fr_dir=fr_dir, params=raw)
        else:
            summary = launch_local(cfg, trace_dir, force=True, deadline_s=deadline_s, fr_dir=fr_dir)
    except RunDirError as e:
        raise ProtocolCheckFailed(f"{topology} world ({backend}, {launcher}): {e}") from None
    if summary.deadline_hit:
        raise ProtocolCheckFailed(f"{topology} world ({backend}, {launcher}) hit its {deadline_s:g} s deadline; "
                                  f"ranks were killed:\n{summary.render()}", summary)
    return Path(trace_dir)


def __getattr__(name):
    if name == "NotCheckable":  # conform's "not checkable: ..." (imported lazily: no conformance import at load)
        from .conformance.check import NotCheckable

        return NotCheckable
    raise AttributeError(name)


def conform(trace_dir, spec: str = "auto", check_variant: bool = True):
    """The conformance report of a recorded run (what ``lockstep conform`` prints)."""
    from .conformance import loader
    from .conformance.check import conform_run
    from .spec.loading import spec_for_conformance

    from .spec import registry

    run = loader.load(os.fspath(trace_dir))
    saved = dict(registry.OVERRIDES)
    try:  # a user spec stands in for the shipped one of its name only for this call
        return conform_run(run, spec=spec_for_conformance(spec), check_variant=check_variant)
    finally:
        registry.OVERRIDES.clear()
        registry.OVERRIDES.update(saved)


def _render(rep) -> str:
    from .conformance.report import render

    return render(rep)


def assert_conforms(trace_dir, spec: str = "auto"):
    """Every rank's recorded run is a behaviour of the spec (CONFORMS).  A run the spec cannot model
    (e.g. a tp world of 1, the only NCCL world one GPU allows) raises NotCheckable (a ValueError)."""
    rep = conform(trace_dir, spec)
    if not rep.conforms:
        raise ProtocolCheckFailed(f"{trace_dir} does not conform to {rep.spec}\n\n{_render(rep)}", rep)
    return rep


def assert_instance_of(trace_dir, variant: str, spec: str = "auto"):
    """An ``--unsafe`` run is an instance of ``variant``'s counterexample class: the run is rejected
    by the hardened spec and matched by the variant (the report's ``instance``)."""
    rep = conform(trace_dir, spec)
    u = rep.unsafe or {}
    if u.get("variant") != variant or not u.get("instance"):
        got = f"variant {u.get('variant')!r}, instance {u.get('instance')}" if u else "not an --unsafe run"
        raise ProtocolCheckFailed(f"{trace_dir} is not an instance of {variant} ({got}): {u.get('message', '')}\n\n"
                                  f"{_render(rep)}", rep)
    return rep
