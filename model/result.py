"""What a check returns: its bounds, its statistics and its result.

These types sit in their own module, below every engine (checker, parallel, ray_search, fast,
liveness, engine), so that the engines import them and not each other.  ``model.checker`` re-exports
them: ``from lockstep.model.checker import Bounds, Result`` keeps working.
"""
from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Bounds:
    """Where a search stops early (each None: no limit); reaching one ends with BOUND_REACHED."""

    max_states: int | None = None
    max_depth: int | None = None
    timeout: float | None = None


@dataclass
class Stats:
    states: int = 0
    transitions: int = 0
    depth: int = 0
    seconds: float = 0.0
    end_states: int = 0
    fail_fast_ends: int = 0
    peak_rss_mb: float = 0.0

    @property
    def states_per_second(self) -> float:
        return self.states / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Result:
    verdict: str
    message: str
    stats: Stats
    counterexample: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    cycle_start: int | None = None  # for LIVENESS lassos: index in counterexample where the cycle begins
    bound: str | None = None
    detail: dict = field(default_factory=dict)
    # set by model.engine.check: whether a reduced graph was searched (False: a counterexample is a
    # shortest one; None: unknown), and the --cross-check summary (docs/json.md's "cross_check")
    reduced: bool | None = None
    cross_check: dict | None = None


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


__all__ = ["Bounds", "Stats", "Result", "peak_rss_mb"]
