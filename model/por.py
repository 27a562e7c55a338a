"""Partial-order reduction: explore one process's step where the order of independent steps does
not matter (ample sets, Clarke/Grumberg/Peled ch. 10; Holzmann's SPIN reduction).

``ample(model, state, succs)`` picks the ample subset of a state's successors for a model that
implements the hooks below; a model calls it from ``successors`` while its reduction is on (the
checker's ``set_reduction`` hook), and ``reduce(model)`` wraps any other hooked model.

- ``actor_of(action)``: the process that takes the step;
- ``footprint(action)``: the shared resources the step touches, as a frozenset, chosen so that two
  steps of different processes with disjoint footprints are independent (whenever both are
  enabled they commute and neither disables the other); ``None`` marks a *visible* step (one that
  may change what ``invariant`` reads or that carries an edge check), never reduced alone;
- ``footprints()``: per process, every resource any of its steps may ever touch (static);
- ``local_choices(state, actor)``: how many steps the process has at its current control state,
  enabled or not;
- ``progress(state)``: an integer measure.

A process p qualifies in state s when all of p's steps there are enabled (``local_choices``), none
is visible or an edge violation, their footprints are disjoint from every resource any other
process may ever touch, and each strictly increases ``progress``.  Its steps are then the ample
set.  Why that preserves every verdict class this checker reports:
- C0/C1: until p moves, only other processes move, and each of their steps is independent of p's,
  so p's steps stay enabled and commute past them; every deadlock and every end state of the full
  graph stays reachable (ends are classified on the same states);
- C2: ample steps are invisible, so invariants and edge checks see the same behaviours up to
  stuttering, and visible steps are only taken from full expansions;
- C3 (no ignoring): a reduced expansion strictly increases ``progress``, so every cycle of the
  reduced graph passes through a fully expanded state.
Liveness (``pending``) is not preserved by this wrapper: ``reduce`` returns a model that defines
``pending`` unchanged, so lasso checking always runs on the full graph.
"""
from __future__ import annotations

from typing import Any

from .api import Violation

HOOKS = ("actor_of", "footprint", "footprints", "local_choices", "progress")


def supports(model) -> bool:
    return all(hasattr(model, h) for h in HOOKS)


def ample(model, s, succs: list) -> list:
    """The ample subset of ``succs`` (the model's full successor list of ``s``): one qualifying
    process's steps, or all of ``succs`` when no process qualifies."""
    if len(succs) <= 1:
        return succs
    by_actor: dict[Any, list] = {}
    for a, n in succs:
        by_actor.setdefault(model.actor_of(a), []).append((a, n))
    if len(by_actor) == 1:
        return succs
    others = _others(model)
    progress = None
    for actor, moves in by_actor.items():
        if actor not in others or len(moves) != model.local_choices(s, actor):
            continue
        ok = True
        for a, n in moves:
            fp = None if isinstance(n, Violation) else model.footprint(a)
            if fp is None or not fp.isdisjoint(others[actor]):
                ok = False
                break
            if progress is None:
                progress = model.progress(s)
            if model.progress(n) <= progress:
                ok = False
                break
        if ok:
            return moves
    return succs


def _others(model) -> dict[Any, frozenset]:
    """Per process, the union of every other process's static footprint (cached on the model)."""
    cache = model.__dict__.get("_por_others")
    if cache is None:
        fps = model.footprints()
        cache = {p: frozenset().union(*(f for q, f in fps.items() if q != p)) for p in fps}
        model.__dict__["_por_others"] = cache
    return cache


class Reduced:
    """A model with ample-set successors, for models that implement the hooks but not
    ``set_reduction``; every other method is the model's own."""

    def __init__(self, model):
        self.model = model
        self.name = f"{model.name}+por"

    def __getattr__(self, name):
        if name in ("packed", "set_reduction"):  # the packed core is the unreduced path
            raise AttributeError(name)
        return getattr(self.model, name)

    def init_states(self):
        return self.model.init_states()

    def invariant(self, s):
        return self.model.invariant(s)

    def classify_end(self, s):
        return self.model.classify_end(s)

    def describe(self, s, a, n):
        return self.model.describe(s, a, n)

    def waiting(self, s):
        return self.model.waiting(s)

    def successors(self, s):
        return ample(self.model, s, list(self.model.successors(s)))


def reduce(model):
    """The reduced model when ``model`` implements the hooks and no liveness is asked of it, else
    ``model`` itself."""
    if not supports(model) or hasattr(model, "pending"):
        return model
    return Reduced(model)
