"""The one entry point of a check: ``check(model, CheckOptions(...)) -> Result``.

Every caller — the CLI (``lockstep check``, ``--ray``, ``--cross-check``), ``lockstep.testing``, the
pytest plugin, conformance and the diagrams — states how to check in one frozen ``CheckOptions``
value; this module configures the model from it (through the model's declared features,
model/features.py) and picks the search:

==============  ==============================================================================
``plan``        when
==============  ==============================================================================
``ray``         ``options.ray`` is set (safety only; the model is built in every actor)
``liveness``    liveness is asked and the model offers it: the whole graph in this process, lassos
                under weak fairness (first tried on the reduced graph, see ``_liveness_on_reduced``)
``vectorized``  safety, and the model has a packed form (model/fast.py)
``parallel``    safety, ``workers > 1`` and the fork start method exists (model/parallel.py)
``serial``      otherwise (model/checker.py's ``Explorer``)
==============  ==============================================================================

``options.cross_check`` runs the check reduced and unreduced and attaches the comparison to the
result (``Result.cross_check``).  Each engine gives the same verdict, counts and counterexample as
the serial one on the same graph (tests/test_parallel.py, tests/test_ray.py, tests/test_engine_dispatch.py).
"""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .api import HOLDS, VACUOUS
from .checker import Explorer
from .features import COVERAGE, LIVENESS, LIVENESS_MODE, PACKED, configure, features_of, reducing
from .result import Bounds, Result, Stats, peak_rss_mb

PLANS = ("ray", "liveness", "vectorized", "parallel", "serial")


@dataclass(frozen=True)
class CheckOptions:
    """How to check.  ``reduction``: partial-order and symmetry reduction (when the model offers them);
    ``liveness``: the lasso search (when the model has liveness obligations); ``workers``: processes
    for the safety search; ``ray``: None, ``"local"``, ``"auto"`` or ``"ray://host:port"`` (the safety
    search on Ray actors, ``workers`` of them, default the CPUs); ``actor_memory_mb``: with ``ray``, a
    memory budget per actor; ``cross_check``: also check unreduced and compare.  ``progress(stats)``
    is called about 4 times a second; ``actor_progress(stats, actors)`` with ``ray``."""

    bounds: Bounds = field(default_factory=Bounds)
    reduction: bool = True
    liveness: bool = True
    workers: int = 1
    ray: str | None = None
    actor_memory_mb: float | None = None
    cross_check: bool = False
    progress: Callable[[Stats], None] | None = field(default=None, compare=False, repr=False)
    actor_progress: Callable[[Stats, list], None] | None = field(default=None, compare=False, repr=False)

    def replace(self, **changes) -> "CheckOptions":
        return dataclasses.replace(self, **changes)


class OptionsError(ValueError):
    """Options that cannot be honoured together (the CLI turns it into a usage error, exit 2)."""


def fork_available() -> bool:
    return "fork" in mp.get_all_start_methods()


def wants_liveness(model, options: CheckOptions, features: frozenset | None = None) -> bool:
    return options.liveness and LIVENESS in (features if features is not None else features_of(model))


def plan(model, options: CheckOptions, features: frozenset | None = None) -> str:
    """Which search ``check(model, options)`` runs (one of PLANS).  Liveness needs the whole graph in
    one process and a packable model is faster on the vectorized core, so both stay single-process
    whatever ``workers`` says."""
    f = features if features is not None else features_of(model)
    if options.ray is not None:
        return "ray"
    if wants_liveness(model, options, f):
        return "liveness"
    if PACKED in f:
        return "vectorized"
    if options.workers <= 1 or not fork_available():
        return "serial"
    return "parallel"


@dataclass(frozen=True)
class Configured:
    """A picklable model factory that configures what ``build`` returns for the safety search (what
    each Ray actor builds its partition's model with)."""

    build: Callable[[], Any]
    reduction: bool = True

    def __call__(self):
        return configure(self.build(), self.reduction, liveness=False)


def check(model, options: CheckOptions | None = None, *, build: Callable[[], Any] | None = None) -> Result:
    """Check ``model`` as ``options`` say.  ``build`` is a zero-argument factory of fresh, equal models:
    needed (and picklable) for ``ray``; used by ``cross_check`` for its extra searches (without it the
    same model object is reconfigured and searched again).  Raises ``SpecError`` for a spec failure or
    a model whose declared features do not match its methods, ``OptionsError`` for options that cannot
    go together."""
    options = options or CheckOptions()
    f = features_of(model)  # a declared feature without its methods fails here, before any search
    if options.workers < 1:
        raise OptionsError(f"workers must be at least 1 (got {options.workers})")
    if options.actor_memory_mb is not None and options.ray is None:
        raise OptionsError("an actor memory budget applies to the Ray search only")
    if options.cross_check:
        if options.ray is not None:
            raise OptionsError("the cross-check runs both searches in this process: it cannot run on Ray")
        return _cross_check(model, options, build, f)
    which = plan(model, options, f)
    if which == "ray" and wants_liveness(model, options, f):
        raise OptionsError("the Ray search checks safety only: turn liveness off (liveness needs the whole graph "
                           "in one process)")
    if COVERAGE in f:
        model.fired.clear()
    if which == "ray":
        res = _ray(model, options, build)
    else:
        res = _search(model, options, f, which)
    res = judge_coverage(model, res, f)
    res.reduced = reducing(model, f) if options.reduction else False
    return res


def _search(model, options: CheckOptions, f: frozenset, which: str) -> Result:
    b, progress = options.bounds, options.progress
    if which == "liveness":
        configure(model, options.reduction, liveness=False, features=f)
        if options.reduction and LIVENESS_MODE in f:
            proved = _liveness_on_reduced(model, b, progress)
            if proved is not None:
                return proved
        configure(model, options.reduction, liveness=True, features=f)
        return _liveness_full(model, b, progress)
    configure(model, options.reduction, liveness=False, features=f)
    if which == "vectorized":
        try:
            from .fast import check_packed  # the vectorized core; numpy is imported only here
        except ImportError:
            check_packed = None
        if check_packed is not None:
            res = check_packed(model, b, progress)
            if res is not None:
                return res
        return Explorer(model, b, progress).run()
    if which == "parallel":
        from .parallel import check_parallel

        return check_parallel(model, b, options.workers, progress)
    return Explorer(model, b, progress).run()


def _liveness_full(model, bounds, progress) -> Result:
    from .liveness import find_lasso

    ex = Explorer(model, bounds, progress, keep_graph=True)
    res = ex.run()
    if res.verdict != HOLDS:
        return res
    t0 = time.perf_counter()
    lasso = find_lasso(ex)
    ex.stats.seconds += time.perf_counter() - t0
    ex.stats.peak_rss_mb = peak_rss_mb()
    return lasso if lasso is not None else res


def _liveness_on_reduced(model, bounds, progress) -> Result | None:
    """Try to prove liveness on the partial-order-reduced graph.  Ample steps never change what
    ``pending`` reads and every reduced cycle passes a full expansion, so every infinite run of the full
    graph has a stuttering-equivalent run here: when the reduced graph has no cycle through pending
    states and no clean end with an obligation open, no run of the full graph can keep an obligation
    open for ever, fair or not.  Safety verdicts found here are final (as with liveness off).  When a
    pending cycle exists here, its fairness cannot be judged on reduced successor sets: return None and
    let the caller decide on the full graph."""
    from .liveness import find_lasso

    ex = Explorer(model, bounds, progress, keep_graph=True)
    res = ex.run()
    if res.verdict != HOLDS:
        return res
    t0 = time.perf_counter()
    lasso = find_lasso(ex, fair=False)
    ex.stats.seconds += time.perf_counter() - t0
    ex.stats.peak_rss_mb = peak_rss_mb()
    if lasso is None:
        res.message = "all properties hold within the bounds (liveness proved on the reduced graph: no cycle keeps an obligation open)"
        return res
    return None


def _ray(model, options: CheckOptions, build) -> Result:
    from .ray_search import check_ray

    if build is None:
        raise OptionsError("the Ray search builds the model in every actor: pass build=, a picklable factory")
    configure(model, options.reduction, liveness=False)  # as every actor's copy
    return check_ray(Configured(build, options.reduction), options.bounds, model=model,
                     workers=options.workers if options.workers > 1 else None,
                     address=None if options.ray == "local" else options.ray,
                     progress=options.progress, memory_budget_mb=options.actor_memory_mb,
                     actor_progress=options.actor_progress)


def judge_coverage(model, res: Result, features: frozenset | None = None) -> Result:
    """On a HOLDS of a model that reports coverage (which transitions fired): attach it, and turn
    the verdict into VACUOUS when a role never reached any of its commitment/emission transitions
    (a proof over runs that never do what the protocol is for proves nothing)."""
    f = features if features is not None else features_of(model)
    if res.verdict != HOLDS or COVERAGE not in f or not model.fired:
        return res
    cov = model.coverage()
    res.detail = {**res.detail, "coverage": cov}
    bad = model.vacuous_roles(cov)
    if bad:
        what = "; ".join(f"{r} never fired {', '.join(cov[r]['essential'])}" for r in bad)
        res.verdict = VACUOUS
        res.message = f"no violation, but the proof is vacuous: {what}"
    return res


def _cross_check(model, options: CheckOptions, build, f) -> Result:
    from .crosscheck import cross_check

    made = [model]

    def fresh():
        if build is not None:
            return build()
        return made[0]

    inner = options.replace(cross_check=False)
    rep = cross_check(fresh, lambda m, red: check(m, inner.replace(reduction=red), build=build),
                      options.bounds.max_states)
    result = rep["reduced"]["result"]
    summary = {k: {x: v for x, v in rep[k].items() if x != "result"} for k in ("reduced", "unreduced")}
    summary.update(agree=rep["agree"], differences=rep["differences"])
    result.cross_check = summary
    return result


__all__ = ["CheckOptions", "OptionsError", "PLANS", "check", "plan", "configure", "Configured", "judge_coverage",
           "wants_liveness", "fork_available"]
