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
from typing import Any, Callable, Mapping, Sequence

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
    # footprint (partial-order reduction): the shared variables the transition's functions (guard,
    # choose, do, op, check, after) read and write; None: the role's ``shares`` (writes imply reads)
    reads: tuple[str, ...] | None = None
    writes: tuple[str, ...] | None = None
    # FIFO ends (shared variables holding a ``Fifo``): the transition only appends to these (``put``,
    # after testing ``has_room``) or only takes their head (``take``/``head``, after ``nonempty``)
    puts: tuple[str, ...] | None = None
    takes: tuple[str, ...] | None = None

    def __post_init__(self):
        # a value where a function of c belongs (choose=[0, 1], guard=True) would fail only when the step
        # first runs, as "'list' object is not callable": say what was meant where the role is built
        for f in _FUNCTIONS:
            x = getattr(self, f)
            if x is not None and not callable(x):
                shape = _FUNCTIONS[f]
                raise TypeError(f"transition {self.name!r}: {f}= takes a function, {shape}, and got "
                                f"{type(x).__name__} {x!r:.60}; write {f}=lambda c: ...")

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


_FUNCTIONS = {"guard": "c -> bool", "choose": "c -> the values to choose among (c.choice in do= and op=)",
              "do": "c -> None (c.set, c.gset, c.goto)", "op": "c -> the op (broadcast(...), send(...), post(...))",
              "after": "(c, data) -> None", "check": "c -> None (c.violate)"}


class Role:
    """One machine per role (P-language style): states named by what the role waits for."""

    def __init__(self, name: str, init: str, vars: dict[str, Any], ids: Sequence[str] = ("call_id", "chunk_index", "cache_epoch"),
                 doc: str = "", hang_points: Sequence[str] = (), private: bool = False, observed: Sequence[str] = (),
                 shares: Sequence[str] | None = None, progress: Callable | None = None,
                 observed_when: Mapping[str, Callable] | None = None):
        self.name = name
        self.init = init
        self.V = namedtuple(f"{name.replace('-', '_')}_vars", list(vars))
        self.init_vars = self.V(**vars)
        for k, x in vars.items():
            try:
                hash(x)
            except TypeError:
                raise SpecError(f"role {name}", TypeError(
                    f"variable {k} starts as {x!r:.60} (a {type(x).__name__}), which cannot be hashed (states are); "
                    f"use a tuple, a frozenset or a frozen dataclass")) from None
        self.ids = tuple(i for i in ids if i in vars)
        self.transitions: list[Transition] = []
        self.by_src: dict[str, list[int]] = {}
        self.doc = doc
        # message boundaries where the process may wedge (the ``hang`` fault): never inside a message
        self.hang_points = frozenset(hang_points)
        # partial-order reduction: a private role never reads or writes shared variables, and its
        # ``observed`` variables are the ones properties read (a step changing them is visible)
        self.private = private
        # footprints: the shared variables every transition of the role may read and write, unless
        # the transition declares its own ``reads=``/``writes=``; None (and no transition declaring
        # one) leaves the role undeclared: it may touch any shared variable and is never reduced
        self.shares = None if shares is None else tuple(shares)
        if private and self.shares:
            raise SpecError(f"role {name}", ValueError("a private role shares no variables: drop shares=... or private=True"))
        # C3 of the partial-order reduction: fn(vars) -> a number that no step of the role lowers and
        # that every step closing a loop of its local transitions raises (e.g. a loop counter); the
        # reduction checks both on every step it takes alone, so loop states become reducible too
        self.progress = progress
        self.observed = tuple(observed)
        # a role that may share variables may also name shared variables (checked by the world)
        bad = [o for o in self.observed if o not in vars and o not in CONTROL_FIELDS and private]
        if bad:
            raise SpecError(f"role {name}", ValueError(
                f"observed names {', '.join(map(repr, bad))} are not variables of the role; valid: "
                f"{', '.join(list(vars) + list(CONTROL_FIELDS))}"))
        # fields properties read only where a condition on the actor's own variables holds (``kv``
        # only between envelopes: {"kv": lambda v: not v.busy}); a step is visible when it changes
        # the condition, or the field while the condition holds (spec/reduce.py)
        self.observed_when = dict(observed_when or {})
        for f, cond in self.observed_when.items():
            if f not in vars and f not in CONTROL_FIELDS:
                raise SpecError(f"role {name}", ValueError(
                    f"observed_when names {f!r}, which is not a variable of the role (a shared variable is observed "
                    f"unconditionally, with observed=...); valid: {', '.join(list(vars) + list(CONTROL_FIELDS))}"))
            if f in self.observed:
                raise SpecError(f"role {name}", ValueError(
                    f"{f!r} is in both observed= and observed_when=: name it in one (observed= observes it everywhere)"))
            if not callable(cond):
                raise SpecError(f"role {name}", TypeError(
                    f"observed_when[{f!r}] is {cond!r:.60}, not a function of the role's variables (e.g. lambda v: not v.busy)"))
        clash = [f for f in CONTROL_FIELDS if f in vars]
        if clash:
            raise SpecError(f"role {name}", ValueError(f"variable names {', '.join(clash)} are reserved (control state, pending op)"))
        # what a property may read of this role's actors without making their steps visible
        self.visible = frozenset(self.observed) | frozenset(self.observed_when)
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
        """Drop transitions (each a name or ``(name, src)``); every name must exist.  A hang point
        whose state goes with them goes too (the world refuses hang points that name no state)."""
        drop = {self.index(key) for key in keys}
        before = set(self.states())
        self.transitions = [t for k, t in enumerate(self.transitions) if k not in drop]
        self._reindex()
        self.hang_points = self.hang_points - (before - set(self.states()))

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
PRIVATE, SYMMETRIC, FOOTPRINT = 1, 2, 4  # Ctx flags: the declarations the world enforces while a step runs


class Ctx:
    """What a transition function sees: ``v`` (its role's variables), ``g`` (shared variables),
    ``p`` (parameters), ``rank``; it writes with ``set``/``gset``, picks a destination with ``goto``
    and may flag a property failure with ``violate`` (observer checks, not behaviour).

    Declarations are enforced here: a ``private`` role's step that touches ``g``, a step that reads or
    writes a shared variable outside its footprint (``reads=``/``writes=``/``shares=``, checked while
    the partial-order reduction is on) raise a SpecError naming the role and transition; a symmetric
    actor's step that reads ``rank`` is noted (``rank_read``), and the world refuses it where its
    outcome differs at another symmetric rank."""

    __slots__ = ("v", "_g", "p", "_rank", "choice", "dst", "violation", "world", "actor", "scratch", "flags", "trans", "_qneg",
                 "rank_read")

    def __init__(self, v, g, p, rank, dst, world, actor, choice=None, flags=0, trans=None):
        self.v, self._g, self.p, self._rank, self.dst, self.world, self.actor, self.choice = v, g, p, rank, dst, world, actor, choice
        self.violation = None
        self.rank_read = False  # a symmetric actor's step read its rank: the world checks it is the same at every symmetric rank
        self.scratch = None  # what a step hands to its observer check; never part of the state
        self.flags, self.trans = flags, trans
        self._qneg = None  # a FIFO end found full or empty while the step ran (checked by queue_check)

    def _refuse(self, what: str):
        role = self.world.actors[self.actor].role.name
        raise SpecError(f"{role}.{self.trans or '?'}", PermissionError(what))

    def _why_private(self) -> str:
        if not self.world.shared:
            return "a step reads or writes shared variables, but the protocol declares none (Protocol(shared={...}))"
        return "a private role reads or writes shared variables (declare it private=False)"

    @property
    def g(self):
        fl = self.flags
        if fl & PRIVATE:
            self._refuse(self._why_private())
        if fl & FOOTPRINT:
            return _Footprinted(self._g, self)
        return self._g

    @g.setter
    def g(self, value):
        fl = self.flags
        if fl & PRIVATE:
            self._refuse(self._why_private())
        if fl & FOOTPRINT:
            if isinstance(value, _Footprinted):
                value = value._g
            old = self._g
            _, writes, puts, takes = self.footprint()
            conv = {}
            for f in old._fields:
                b = getattr(value, f)
                if isinstance(b, _Append) and f in puts:
                    conv[f] = getattr(old, f).put(b.item)
                elif b is _DROP_HEAD and f in takes:
                    conv[f] = Fifo(getattr(old, f)[1:])
            if conv:
                value = value._replace(**conv)
            for f in old._fields:
                a, b = getattr(old, f), getattr(value, f)
                if f in writes or a == b:
                    continue
                if f in puts and isinstance(b, Fifo) and len(b) > len(a) and b[:len(a)] == a:
                    continue
                if f in takes and isinstance(b, Fifo) and len(b) < len(a) and b == a[len(a) - len(b):]:
                    continue
                self._outside("writes", f)
        self._g = value

    def queue_check(self) -> None:
        """A step declaring ``puts``/``takes`` that runs although it found its queue full/empty."""
        how, field = self._qneg
        self._refuse(f"runs although it found FIFO {field!r} {how}: a transition declaring "
                     f"{'puts' if how == 'full' else 'takes'}=({field!r},) must run only while the queue "
                     f"{'has room' if how == 'full' else 'is non-empty'} (test it in the guard) and must not look at it otherwise")

    def footprint(self) -> tuple[frozenset, frozenset, frozenset, frozenset]:
        """(may read, may write, puts, takes) of the running transition: the shared variables it declares."""
        return self.world._footprints[self.actor][self.trans]

    def _outside(self, how: str, field: str):
        reads, writes, puts, takes = self.footprint()
        ends = (f", puts {_names(puts)}" if puts else "") + (f", takes {_names(takes)}" if takes else "")
        self._refuse(f"{how} shared variable {field!r} outside its declared footprint (reads {_names(reads)}, "
                     f"writes {_names(writes)}{ends}); add it to reads=/writes= of the transition or shares= of the role")

    @property
    def rank(self):
        if self.flags & SYMMETRIC:
            # allowed where it tells the symmetric ranks nothing (``rank != 0`` on ranks 1-7): the world
            # runs the step again at every other symmetric rank and refuses it where anything differs
            self.rank_read = True
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


class _Footprinted:
    """The shared variables as a step with a declared footprint sees them: reading a field outside
    the footprint raises (a guard's reads count); ``_replace`` and ``_fields`` pass through, and the
    Ctx checks on assignment that only declared fields changed."""

    __slots__ = ("_g", "_c")

    def __init__(self, g, c):
        self._g, self._c = g, c

    def __getattr__(self, name):
        g = self._g
        if name in g._fields:
            reads, _, puts, takes = self._c.footprint()
            if name in reads:
                return getattr(g, name)
            if name in puts:
                return _PutEnd(getattr(g, name), self._c, name)
            if name in takes:
                return _TakeEnd(getattr(g, name), self._c, name)
            self._c._outside("reads", name)
        if name in ("_replace", "_fields"):
            return getattr(g, name)
        self._c._outside("reads", "*")  # _asdict, iteration and the like read every field
        return getattr(g, name)

    def __iter__(self):
        self._c._outside("reads", "*")

    def __getitem__(self, k):
        self._c._outside("reads", "*")


class Fifo(tuple):
    """A FIFO queue held in a shared variable: an immutable tuple, head first.  A transition that
    declares ``puts=("q",)`` sees only ``q.has_room(capacity)`` and ``q.put(item)``; one that
    declares ``takes=("q",)`` sees only ``q.nonempty()``, ``q.head`` and ``q.take()`` (head, rest).
    With one putter and one taker, a put and a take commute and neither disables the other: the
    partial-order reduction treats the two ends as independent (the SPIN idea of exclusive send
    and receive channels)."""

    __slots__ = ()

    def put(self, item) -> "Fifo":
        return Fifo(tuple.__add__(self, (item,)))

    def take(self) -> tuple:
        return self[0], Fifo(self[1:])

    @property
    def head(self):
        return self[0]

    def nonempty(self) -> bool:
        return len(self) > 0

    def has_room(self, capacity: int) -> bool:
        return len(self) < capacity


class _QueueEnd:
    __slots__ = ("_q", "_c", "_f")

    def __init__(self, q, c, f):
        if not isinstance(q, Fifo):
            c._refuse(f"declares {self._what}=({f!r},) but {f!r} holds a {type(q).__name__}, not a Fifo")
        self._q, self._c, self._f = q, c, f

    def __getattr__(self, name):
        self._c._refuse(f"uses {name!r} of FIFO {self._f!r}, which it declares in {self._what}=: "
                        f"only {', '.join(self._allowed)} are allowed there")

    def __len__(self):
        self._c._refuse(f"takes len() of FIFO {self._f!r}, which it declares in {self._what}=: only {', '.join(self._allowed)} are allowed there")

    def __bool__(self):
        self._c._refuse(f"tests FIFO {self._f!r}, which it declares in {self._what}=, for truth: only {', '.join(self._allowed)} are allowed there")

    def _saw(self, how: str) -> None:
        if self._c._qneg is None:
            self._c._qneg = (how, self._f)


class _PutEnd(_QueueEnd):
    __slots__ = ()
    _what, _allowed = "puts", ("has_room(capacity)", "put(item)")

    def has_room(self, capacity):
        ok = self._q.has_room(capacity)
        if not ok:
            self._saw("full")
        return ok

    def put(self, item):
        return _Append(item)  # what the queue becomes is worked out on assignment: it is not for reading


class _TakeEnd(_QueueEnd):
    __slots__ = ()
    _what, _allowed = "takes", ("nonempty()", "head", "take()")

    def nonempty(self):
        ok = self._q.nonempty()
        if not ok:
            self._saw("empty")
        return ok

    @property
    def head(self):
        if not self._q:
            self._saw("empty")
            self._c.queue_check()
        return self._q[0]

    def take(self):
        if not self._q:
            self._saw("empty")
            self._c.queue_check()
        return self._q[0], _DROP_HEAD  # the rest is worked out on assignment: it is not for reading


class _Append:
    """``q.put(item)`` as a step that declares ``puts`` sees it: assign it to ``q`` (``gset``)."""

    __slots__ = ("item",)

    def __init__(self, item):
        self.item = item


class _DropHead:
    """The rest of ``q.take()`` as a step that declares ``takes`` sees it: assign it to ``q``."""

    __slots__ = ()


_DROP_HEAD = _DropHead()


def _names(fs) -> str:
    return "(" + ", ".join(sorted(fs)) + ")" if fs else "nothing"


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
    from .registry import UsageError, did_you_mean

    if raw in ("all", "*"):
        return frozenset(known)
    if raw in ("none", ""):
        return frozenset()
    names = [x.strip() for x in raw.split(",") if x.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise UsageError(f"unknown fault(s) {', '.join(bad)}{did_you_mean(bad[0], known)}; valid faults: all, none, "
                         f"{', '.join(known)}")
    return frozenset(names)
