"""The interface every checkable model implements (in the spirit of TLA+'s Init/Next and
Stateright's ``Model``).  The checker knows nothing of collectives: it sees opaque, hashable
states and actions.

A model provides:
- ``init_states()``: the initial states;
- ``successors(state)``: ``(action, next)`` pairs; ``next`` may be a ``Violation`` when the step
  itself is the error (a mismatched collective, an op on the wrong group);
- ``invariant(state)``: a ``Violation`` when a state property fails, else None;
- ``classify_end(state)``: for a state without successors, ``None`` for a clean end,
  ``FAIL_FAST`` for an end where some rank failed fast, or a ``Violation`` (DEADLOCK, STRANDED ...);
- ``describe(state, action, next)``: a human/JSON step record, only called for counterexamples;
- ``waiting(state)``: who waits on whom in a stuck state, for the final line of a counterexample.

Everything else is optional and declared in the model's ``features`` (model/features.py): reductions,
liveness (``pending(state)``: a committed obligation is open; ``actor_of(action)``: the process that
takes a step, for weak fairness), a packed form, symmetry, coverage.  ``isinstance(x, Model)`` tells a
model from a factory of models.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Protocol, runtime_checkable

State = Hashable
Action = Hashable

# The verdict vocabulary shared by checker, conformance and reports (README.md, "Verdicts").
HOLDS = "HOLDS"
DEADLOCK = "DEADLOCK"
STRANDED = "STRANDED"
COLLECTIVE_MISMATCH = "COLLECTIVE_MISMATCH"
WRONG_GROUP = "WRONG_GROUP"
FRANKEN = "FRANKEN"
STALE_EMIT = "STALE_EMIT"
CALL_COUNT = "CALL_COUNT"
LIVENESS = "LIVENESS"
INVARIANT = "INVARIANT"
BOUND_REACHED = "BOUND_REACHED"
VACUOUS = "VACUOUS"  # no violation, but a role never reached its commitment/emission: nothing was proved
FAIL_FAST = "FAIL_FAST"

VIOLATIONS = (DEADLOCK, STRANDED, COLLECTIVE_MISMATCH, WRONG_GROUP, FRANKEN, STALE_EMIT, CALL_COUNT, LIVENESS, INVARIANT)


@dataclass(frozen=True)
class Violation:
    """A property failure.  ``verdict`` is one of VIOLATIONS; ``message`` is one line for people;
    ``detail`` is JSON-able extra context."""

    verdict: str
    message: str
    detail: dict = field(default_factory=dict, hash=False, compare=False)


@runtime_checkable
class Model(Protocol):
    name: str

    def init_states(self) -> Iterable[State]: ...

    def successors(self, state: State) -> Iterable[tuple[Action, "State | Violation"]]: ...

    def invariant(self, state: State) -> Violation | None: ...

    def classify_end(self, state: State) -> "Violation | str | None": ...

    def describe(self, state: State, action: Action, nxt: "State | Violation") -> dict[str, Any]: ...

    def waiting(self, state: State) -> list[dict[str, Any]]: ...


class SpecError(Exception):
    """A spec raised inside one of its own functions: reported as a spec error (exit 2), never as
    a verdict.  ``where`` names the role and transition."""

    def __init__(self, where: str, cause: BaseException):
        super().__init__(f"spec error in {where}: {type(cause).__name__}: {cause}")
        self.where = where
        self.cause = cause
