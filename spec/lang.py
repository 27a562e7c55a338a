"""The spec language: what an author writes.  A **role** is a control state plus immutable local
variables (a namedtuple) and named transitions with guards; a transition is local, or issues one op
to the fabric and blocks until the fabric completes it.  ``Ctx`` is what a transition function sees;
``ActorDef`` places a role on a rank's thread.  The role's transition list is the diagram: rendering
needs no second description.
"""
from __future__ import annotations

from collections import namedtuple
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Sequence

from ..model.api import SpecError, Violation

DONE, FAILED, DEAD, HUNG = "DONE", "FAILED", "DEAD", "HUNG"
BUILTIN_TERMINAL = frozenset({DONE, FAILED, DEAD, HUNG})
EXITED = frozenset({DONE, FAILED, DEAD})


@dataclass(frozen=True)
class Transition:
    name: str
    src: str
    dst: tuple[str, ...]
    guard: Callable | None = None
    choose: Callable | None = None
    do: Callable | None = None
    op: Callable | None = None
    after: Callable | None = None
    check: Callable | None = None
    fault: str | None = None
    commit: bool = False
    phase: str | None = None
    on_error: str = FAILED
    timeout: str | None = None
    quiescent: bool = False
    event: str | None = None
    doc: str = ""
    timeout_kind: str | None = None  # "recovers" | "hangs": what an op's timeout= means (fabric docs)
    timeout_s: float | None = None   # the op timeout's duration; over a minute it hangs unless declared
    emit: bool = False  # an emission (a result delivered): with ``commit``, what a run exists to do
    why: str = ""  # the guard in words ("queue not full"): shown wherever the guard is shown

    @property
    def essential(self) -> bool:
        """A commitment or emission: a HOLDS where one never fired is vacuous."""
        return self.commit or self.emit

    @property
    def guard_label(self) -> str | None:
        """The guard as a reader says it: ``why=``, else a named guard function's name with
        underscores as spaces; None for no guard or an anonymous lambda (guard_text reads its source)."""
        if self.why:
            return self.why
        if self.guard is None:
            return None
        name = getattr(self.guard, "__name__", None)
        if not name or name == "<lambda>":
            return None
        return name.strip("_").replace("_", " ")

    @property
    def targets(self) -> tuple[str, ...]:
        extra = tuple(x for x in (self.on_error if self.op else None, self.timeout) if x)
        return tuple(dict.fromkeys(self.dst + extra))


class Role:
    """One machine per role (P-language style): states named by what the role waits for."""

    def __init__(self, name: str, init: str, vars: dict[str, Any], ids: Sequence[str] = ("call_id", "chunk_index", "cache_epoch"),
                 doc: str = "", hang_points: Sequence[str] = (), private: bool = False, observed: Sequence[str] = ()):
        self.name = name
        self.init = init
        self.V = namedtuple(f"{name.replace('-', '_')}_vars", list(vars))
        self.init_vars = self.V(**vars)
        self.ids = tuple(i for i in ids if i in vars)
        self.transitions: list[Transition] = []
        self.by_src: dict[str, list[int]] = {}
        self.doc = doc
        # message boundaries where the process may wedge (the ``hang`` fault): never inside a message
        self.hang_points = frozenset(hang_points)
        # partial-order reduction: a private role never reads or writes shared variables, and its
        # ``observed`` variables are the ones properties read (a step changing them is visible)
        self.private = private
        self.observed = tuple(observed)
        bad = [o for o in self.observed if o not in vars and o not in CONTROL_FIELDS]
        if bad:
            raise SpecError(f"role {name}", ValueError(
                f"observed names {', '.join(map(repr, bad))} are not variables of the role; valid: "
                f"{', '.join(list(vars) + list(CONTROL_FIELDS))}"))
        clash = [f for f in CONTROL_FIELDS if f in vars]
        if clash:
            raise SpecError(f"role {name}", ValueError(f"variable names {', '.join(clash)} are reserved (control state, pending op)"))
        # what a property may read of this role's actors without making their steps visible
        self.visible = frozenset(self.observed)
        self._cursor: int | None = None  # where local/op insert inside an insert_after/insert_before block

    def _add(self, t: Transition) -> Transition:
        if self._cursor is None:
            self.by_src.setdefault(t.src, []).append(len(self.transitions))
            self.transitions.append(t)
        else:
            self.transitions.insert(self._cursor, t)
            self._cursor += 1
            self._reindex()
        return t

    def _reindex(self) -> None:
        self.by_src = {}
        for k, t in enumerate(self.transitions):
            self.by_src.setdefault(t.src, []).append(k)

    # -- editing the built role: what a planted-bug patch does (spec/patch.py) --------------------
    # A transition is named by its name, or by (name, src) where the same name leaves several states.
    # Order is kept: it decides the order successors are explored in, hence counterexamples.
    def _lookup(self, key) -> int | None:
        name, src = key if isinstance(key, tuple) else (key, None)
        hits = [k for k, t in enumerate(self.transitions) if t.name == name and (src is None or t.src == src)]
        if len(hits) > 1:
            raise SpecError(f"role {self.name}", LookupError(
                f"transition name {name!r} leaves several states ({', '.join(self.transitions[k].src for k in hits)}); "
                f"name one as ({name!r}, SRC)"))
        return hits[0] if hits else None

    def index(self, key) -> int:
        """The position of transition ``key`` (a name, or ``(name, src)``) in the role's order."""
        k = self._lookup(key)
        if k is None:
            names = ", ".join(dict.fromkeys(t.name for t in self.transitions)) or "(none)"
            raise SpecError(f"role {self.name}", LookupError(f"no transition {key!r}; transitions: {names}"))
        return k

    def __contains__(self, key) -> bool:
        return self._lookup(key) is not None

    def transition(self, key) -> Transition:
        return self.transitions[self.index(key)]

    def replace(self, key, **changes) -> Transition:
        """Change fields of transition ``key`` in place (``dst`` may be one state name).  A new
        ``guard`` without a new ``why`` drops the old ``why``: it described the old guard."""
        k = self.index(key)
        bad = sorted(set(changes) - {f.name for f in fields(Transition)})
        if bad:
            raise SpecError(f"role {self.name}", TypeError(
                f"{key!r}: no transition field {', '.join(bad)}; fields: {', '.join(f.name for f in fields(Transition))}"))
        if isinstance(changes.get("dst"), str):
            changes["dst"] = (changes["dst"],)
        if "guard" in changes and "why" not in changes:
            changes["why"] = ""  # the old words described the old guard
        t = replace(self.transitions[k], **changes)
        stale = [f for f in ("after", "timeout", "timeout_kind", "timeout_s") if t.op is None and getattr(t, f) is not None]
        if stale:  # a local transition would silently ignore them
            raise SpecError(f"role {self.name}", ValueError(
                f"{key!r} is local (op=None) but keeps op-only fields {', '.join(stale)}; clear them "
                f"({', '.join(f'{f}=None' for f in stale)})"))
        self.transitions[k] = t
        self._reindex()
        return t

    def remove(self, *keys) -> None:
        """Drop transitions (each a name or ``(name, src)``); every name must exist."""
        drop = {self.index(key) for key in keys}
        self.transitions = [t for k, t in enumerate(self.transitions) if k not in drop]
        self._reindex()

    @contextmanager
    def insert_after(self, key):
        """``with role.insert_after("send_header"): role.local(...)``: the transitions added in the
        block go right after ``key``, in the order they are added."""
        with self._inserting(self.index(key) + 1):
            yield self

    @contextmanager
    def insert_before(self, key):
        with self._inserting(self.index(key)):
            yield self

    @contextmanager
    def _inserting(self, at: int):
        if self._cursor is not None:
            raise SpecError(f"role {self.name}", RuntimeError("insert_after/insert_before blocks do not nest"))
        self._cursor = at
        try:
            yield
        finally:
            self._cursor = None

    def add(self, t: Transition) -> Transition:
        """Add a built Transition (at the end, or at the insertion point of an insert block)."""
        return self._add(t)

    def local(self, name: str, src: str, dst: str | Sequence[str], **kw) -> Transition:
        return self._add(Transition(name, src, (dst,) if isinstance(dst, str) else tuple(dst), **kw))

    def op(self, name: str, src: str, dst: str | Sequence[str], op: Callable, **kw) -> Transition:
        return self._add(Transition(name, src, (dst,) if isinstance(dst, str) else tuple(dst), op=op, **kw))

    def states(self) -> list[str]:
        seen = dict.fromkeys([self.init])
        for t in self.transitions:
            seen.setdefault(t.src)
            for d in t.targets:
                seen.setdefault(d)
        return list(seen)

    def terminal_states(self) -> set[str]:
        return {s for s in self.states() if s not in self.by_src}


# a role's actor state beyond its variables that a property may read (``observed``): the control
# state and the pending op (state.ActorState's field names)
CONTROL_FIELDS = ("ctl", "pending")
PRIVATE, SYMMETRIC = 1, 2  # Ctx flags: the declarations the world enforces while a step runs


class Ctx:
    """What a transition function sees: ``v`` (its role's variables), ``g`` (shared variables),
    ``p`` (parameters), ``rank``; it writes with ``set``/``gset``, picks a destination with ``goto``
    and may flag a property failure with ``violate`` (observer checks, not behaviour).

    Declarations are enforced here: a ``private`` role's step that touches ``g`` and a symmetric
    actor's step that reads ``rank`` raise a SpecError naming the role and transition."""

    __slots__ = ("v", "_g", "p", "_rank", "choice", "dst", "violation", "world", "actor", "scratch", "flags", "trans")

    def __init__(self, v, g, p, rank, dst, world, actor, choice=None, flags=0, trans=None):
        self.v, self._g, self.p, self._rank, self.dst, self.world, self.actor, self.choice = v, g, p, rank, dst, world, actor, choice
        self.violation = None
        self.scratch = None  # what a step hands to its observer check; never part of the state
        self.flags, self.trans = flags, trans

    def _refuse(self, what: str):
        role = self.world.actors[self.actor].role.name
        raise SpecError(f"{role}.{self.trans or '?'}", PermissionError(what))

    @property
    def g(self):
        if self.flags & PRIVATE:
            self._refuse("a private role reads or writes shared variables (declare it private=False)")
        return self._g

    @g.setter
    def g(self, value):
        if self.flags & PRIVATE:
            self._refuse("a private role reads or writes shared variables (declare it private=False)")
        self._g = value

    @property
    def rank(self):
        if self.flags & SYMMETRIC:
            self._refuse("a symmetric actor reads its rank (symmetric actors must be interchangeable; "
                         "drop it from Protocol(symmetric=...))")
        return self._rank

    def set(self, **kw) -> None:
        self.v = self.v._replace(**kw)

    def gset(self, **kw) -> None:
        self.g = self.g._replace(**kw)

    def goto(self, state: str) -> None:
        self.dst = state

    def violate(self, verdict: str, message: str, **detail) -> None:
        if self.violation is None:
            self.violation = Violation(verdict, message, detail)

    def local_rank(self, group: str) -> int:
        return self.world.groups[group].local(self.rank)


@dataclass(frozen=True)
class ActorDef:
    rank: int
    thread: str
    role: Role

    @property
    def label(self) -> str:
        return f"rank{self.rank}" + ("" if self.thread == "main" else f".{self.thread}")



def parse_faults(raw: str, known: Sequence[str]) -> frozenset:
    """``all``, ``none`` or a comma list of fault names; unknown names are a usage error."""
    from .registry import UsageError

    if raw in ("all", "*"):
        return frozenset(known)
    if raw in ("none", ""):
        return frozenset()
    names = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise UsageError(f"unknown fault(s) {', '.join(bad)}; valid faults: all, none, {', '.join(known)}")
    return frozenset(names)
