"""Optional model features, declared instead of guessed.

Every model implements ``model.api.Model``.  What it offers beyond that, it declares in a
``features`` attribute: a frozenset of the names below.  Each name stands for a small
``typing.Protocol`` (the methods the engine will call), and ``features_of(model)`` checks at the start
of every check that a model has the methods of each feature it declares: a model that declares
``liveness`` but has no ``pending`` is one clear error (``SpecError``, exit 2 in the CLI) before any
search, not an AttributeError deep inside one.

========================  =========================================================================
feature                   what the model provides, and what the engine does with it
========================  =========================================================================
``reduction``             ``set_reduction(on)``: partial-order/symmetry reduction on or off (the
                          engine passes ``CheckOptions.reduction``); ``reducing()``: whether the next
                          search explores a reduced graph (False: counterexamples are shortest)
``liveness``              ``pending(state)``: a committed obligation is open; ``actor_of(action)``:
                          the process taking a step (weak fairness).  Lassos are searched for
``liveness-mode``         ``set_liveness(on)``: the model switches its graph for a liveness search
                          (reductions that break fairness off)
``packed``                ``packed()``: a packed form for the vectorized core (model/fast.py), or
                          None when it declines for this configuration
``symmetry``              ``concretize(steps)``: turn a path of orbit representatives into a run
``coverage``              ``fired`` (a set the successor function fills), ``coverage()`` and
                          ``vacuous_roles(coverage)``: a HOLDS over runs where a role never reaches
                          its commitment becomes VACUOUS
``keyed``                 ``keyed()``: whether this search may key states by numbers;
                          ``state_key(state)``, ``state_of(key)`` and ``keyed_successors(state, key)``
                          (successors as states or as keys).  The serial explorer then keeps keys
                          (small integers per actor state) instead of nested state tuples
``key-fields``            ``key_tables()``, ``key_number(field, value)``, ``key_parent``: an ``int`` key is packed
                          fields of 32 bits, each a number given to a value in order of first sight.
                          The parallel search (model/parallel.py) routes and ships such keys between
                          processes that number values differently
========================  =========================================================================

A model without a ``features`` attribute (a quick hand-written model, a test double) gets the
features whose methods it has: ``infer_features``.  Declaring is better: the declaration is checked,
and it can leave out a feature the model has methods for but does not offer in this configuration
(the role worlds declare ``liveness`` only when the spec gives a liveness obligation).
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

from .api import SpecError

REDUCTION = "reduction"
LIVENESS = "liveness"
LIVENESS_MODE = "liveness-mode"
PACKED = "packed"
SYMMETRY = "symmetry"
COVERAGE = "coverage"
KEY_FIELDS = "key-fields"
KEYED = "keyed"


@runtime_checkable
class Reducible(Protocol):
    def set_reduction(self, on: bool) -> None: ...


class ReducibleWithStatus(Reducible, Protocol):
    """What a model declaring ``reduction`` provides (an undeclared model with only ``set_reduction``
    is still reduced on request; whether its graph was reduced is then unknown)."""

    def reducing(self) -> bool: ...


@runtime_checkable
class LivenessChecked(Protocol):
    def pending(self, state: Any) -> bool: ...

    def actor_of(self, action: Any) -> Any: ...


@runtime_checkable
class LivenessMode(Protocol):
    def set_liveness(self, on: bool) -> None: ...


@runtime_checkable
class Packable(Protocol):
    def packed(self) -> Any: ...


@runtime_checkable
class Symmetric(Protocol):
    def concretize(self, steps: list) -> list: ...


@runtime_checkable
class CoverageReporting(Protocol):
    fired: set

    def coverage(self) -> dict: ...

    def vacuous_roles(self, coverage: dict) -> list: ...


@runtime_checkable
class Keyed(Protocol):
    """States keyed by numbers.  ``state_key(state)`` is a hashable key with ``state_key(a) ==
    state_key(b)`` exactly when ``a == b``, and ``state_of(state_key(s)) == s``;
    ``keyed_successors(state, state_key(state))`` yields what ``successors(state)`` yields, in the same
    order, except that a successor may come as its key when that key is an ``int`` (a state is never
    an int).  Only used while ``keyed()`` is true."""

    def keyed(self) -> bool: ...

    def state_key(self, state: Any) -> Any: ...

    def state_of(self, key: Any) -> Any: ...

    def keyed_successors(self, state: Any, key: Any) -> Any: ...


@runtime_checkable
class KeyFields(Protocol):
    """How an ``int`` key of a keyed model is made: ``len(key_tables())`` little-endian fields of 32 bits
    (lowest first).  ``key_tables()[f]`` is the list of the values field f has numbered so far (number
    -> value; the list grows in place as values are numbered), or None for a field whose number is its
    value.  ``key_number(f, value)`` numbers a value for field f (the number it already has, or the next
    one), so a key made in another process translates field by field into this one's numbers.
    ``key_parent(state, key)``: the ``state_key`` calls that follow key successors of ``state`` (a hint:
    they may reuse what they share with it; any state still gets its own key)."""

    def key_tables(self) -> list: ...

    def key_number(self, field: int, value: Any) -> int: ...

    def key_parent(self, state: Any, key: Any) -> None: ...


PROTOCOLS: dict[str, type] = {
    REDUCTION: Reducible,
    LIVENESS: LivenessChecked,
    LIVENESS_MODE: LivenessMode,
    PACKED: Packable,
    SYMMETRY: Symmetric,
    COVERAGE: CoverageReporting,
    KEYED: Keyed,
    KEY_FIELDS: KeyFields,
}
KNOWN = frozenset(PROTOCOLS)
_DECLARED = {REDUCTION: ReducibleWithStatus}  # where a declaration asks for more than inference does

# the members of each protocol, for error messages (a runtime_checkable isinstance says only yes/no)
_MEMBERS: dict[str, tuple[str, ...]] = {
    REDUCTION: ("set_reduction", "reducing"),
    LIVENESS: ("pending", "actor_of"),
    LIVENESS_MODE: ("set_liveness",),
    PACKED: ("packed",),
    SYMMETRY: ("concretize",),
    COVERAGE: ("fired", "coverage", "vacuous_roles"),
    KEYED: ("keyed", "state_key", "state_of", "keyed_successors"),
    KEY_FIELDS: ("key_tables", "key_number", "key_parent"),
}


def infer_features(model) -> frozenset:
    """The features an undeclared model has the methods for."""
    return frozenset(f for f, proto in PROTOCOLS.items() if isinstance(model, proto))


def features_of(model) -> frozenset:
    """The model's features: its declaration, checked (``SpecError`` naming the model, the feature and
    the missing method), or, undeclared, ``infer_features``."""
    declared = getattr(model, "features", None)
    if declared is None:
        return infer_features(model)
    name = getattr(model, "name", type(model).__name__)
    where = f"{name} features"
    if isinstance(declared, str) or not isinstance(declared, Iterable):
        raise SpecError(where, TypeError(f"features must be a frozenset of {', '.join(sorted(KNOWN))}; "
                                         f"got {type(declared).__name__}"))
    declared = frozenset(declared)
    unknown = sorted(str(f) for f in declared - KNOWN)
    if unknown:
        raise SpecError(where, ValueError(f"unknown feature {', '.join(map(repr, unknown))} "
                                          f"(known: {', '.join(sorted(KNOWN))})"))
    for f in sorted(declared):
        missing = [m for m in _MEMBERS[f] if not _has(model, m)]
        if missing:
            raise SpecError(where, TypeError(f"declares {f!r} but has no {', '.join(missing)} "
                                             f"(the {_DECLARED.get(f, PROTOCOLS[f]).__name__} protocol in model/features.py)"))
    return declared


def _has(model, member: str) -> bool:
    try:
        val = getattr(model, member)
    except AttributeError:
        return False
    return member == "fired" or callable(val)


def reducing(model, features: frozenset | None = None) -> bool | None:
    """Whether the model's next search explores a reduced graph: its ``reducing()`` when it offers
    ``reduction``; None (unknown) for a model without it, or undeclared without ``reducing``."""
    if REDUCTION not in (features if features is not None else features_of(model)):
        return None
    fn = getattr(model, "reducing", None)
    return bool(fn()) if callable(fn) else None


def configure(model, reduction: bool, liveness: bool = False, features: frozenset | None = None):
    """Set the model up for one search: reduction on or off, liveness mode on or off (each only where
    the model offers it).  Returns the model."""
    f = features if features is not None else features_of(model)
    if REDUCTION in f:
        model.set_reduction(reduction)
    if LIVENESS_MODE in f:
        model.set_liveness(liveness)
    return model


def has(model, feature: str) -> bool:
    """Whether ``model`` offers ``feature`` (declared and checked, or inferred)."""
    return feature in features_of(model)


__all__ = ["REDUCTION", "LIVENESS", "LIVENESS_MODE", "PACKED", "SYMMETRY", "COVERAGE", "KEYED", "KNOWN", "PROTOCOLS",
           "Reducible", "ReducibleWithStatus", "LivenessChecked", "LivenessMode", "Packable", "Symmetric", "CoverageReporting",
           "Keyed",
           "features_of", "infer_features", "reducing", "configure", "has"]
