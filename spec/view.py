"""A typed, read-only view of one world state, for properties (invariants, liveness obligations).

A property is a function ``fn(world: WorldView) -> message | None``.  It reads actors by rank and
thread (``world.actor(1).state``, ``.vars.cache_epoch``, ``.pending``), iterates them
(``world.actors(role="worker")``) and reads shared variables by name (``world.shared.stop``).

The view can *record* what a property read, as (actor index, field) pairs where the field is
``ctl``, ``pending`` or a variable name.  The partial-order reduction only treats as visible what a
role declares in ``observed``; with recording on, the world checks after every evaluation that a
property read nothing else of a reduced actor, and refuses the spec (SpecError) when it did.

The record is complete, so the world can also memoise a property on the values it read: besides the
actor fields it holds ``(i, ALIVE)`` (whether actor i still has variables), ``(SHARED, name)`` for a
shared variable, ``(WORLD, "faults_used")`` and ``(WORLD, RAW)`` when the property took the raw
state tuple (nothing it reads through that can be tracked, so such an evaluation is not memoised).
"""
from __future__ import annotations

from typing import Any, Iterator

ALIVE = ":alive"  # field of a record entry: whether the actor still has variables
SHARED = -2  # actor index of a record entry for a shared variable
WORLD = -1  # actor index of a record entry for the world itself (faults used, raw access)
RAW = ":raw"


class RecordedVars:
    """A role's variables; every attribute read is recorded."""

    __slots__ = ("_v", "_rec", "_i")

    def __init__(self, v, rec, i):
        self._v, self._rec, self._i = v, rec, i

    def __getattr__(self, name):
        if name.startswith("_") and name not in self._v._fields:
            self._all()  # _replace, _fields, ...: the whole tuple
        else:
            self._rec.add((self._i, name))
        return getattr(self._v, name)

    def _all(self):
        for f in self._v._fields:
            self._rec.add((self._i, f))
        return self._v

    def _asdict(self) -> dict:
        return self._all()._asdict()

    def __eq__(self, other):
        return self._all() == (other._all() if isinstance(other, RecordedVars) else other)

    def __hash__(self):
        return hash(self._all())

    def __iter__(self):
        return iter(self._all())

    def __len__(self):
        return len(self._all())

    def __getitem__(self, k):
        return self._all()[k]

    def __repr__(self):
        return repr(self._all())


class ActorView:
    """One actor in one state: ``state`` (control state), ``vars`` (None once the process is gone),
    ``pending`` (the PendingOp it waits on, or None), plus its static placement."""

    __slots__ = ("_world", "_i", "_st", "_rec")

    def __init__(self, world, i: int, st, rec):
        self._world, self._i, self._st, self._rec = world, i, st, rec

    @property
    def index(self) -> int:
        return self._i

    @property
    def rank(self) -> int:
        return self._world.actors[self._i].rank

    @property
    def thread(self) -> str:
        return self._world.actors[self._i].thread

    @property
    def role(self) -> str:
        return self._world.actors[self._i].role.name

    @property
    def label(self) -> str:
        return self._world.actors[self._i].label

    @property
    def state(self) -> str:
        if self._rec is not None:
            self._rec.add((self._i, "ctl"))
        return self._st[0]

    @property
    def pending(self):
        if self._rec is not None:
            self._rec.add((self._i, "pending"))
        return self._st[2]

    @property
    def alive(self) -> bool:
        """Whether the process still has its variables (not failed, crashed or wedged).  Recorded as
        ``ALIVE``, which the reduction does not count as a read: a step that ends a process is always
        visible to it."""
        if self._rec is not None:
            self._rec.add((self._i, ALIVE))
        return self._st[1] is not None

    @property
    def vars(self):
        v = self._st[1]
        if self._rec is None:
            return v
        self._rec.add((self._i, ALIVE))
        if v is None:
            return v
        return RecordedVars(v, self._rec, self._i)


class WorldView:
    """The read-only view a property takes; ``state`` and ``world`` are there for code that needs
    the raw tuple (nothing it reads through them is recorded)."""

    __slots__ = ("world", "_state", "_rec")

    def __init__(self, world, state, record: set | None = None):
        self.world, self._state, self._rec = world, state, record

    @property
    def state(self):
        if self._rec is not None:
            self._rec.add((WORLD, RAW))
        return self._state

    @property
    def shared(self) -> Any:
        g = self._state[1]
        if self._rec is None or not hasattr(g, "_fields"):
            return g
        return RecordedVars(g, self._rec, SHARED)  # the world checks which reduced roles may write them

    @property
    def faults_used(self) -> int:
        if self._rec is not None:
            self._rec.add((WORLD, "faults_used"))
        return self._state[2]

    def monitor(self, name: str, rank: int | None = None) -> str | None:
        """The state of the world's monitor ``name`` (spec/monitor.py) here: a world monitor's, or
        ``rank``'s instance of a per-rank monitor (None once that rank's process is gone).  Not
        recorded as a field: a monitor moves only on steps the partial-order reduction treats as visible;
        recorded as a raw read, so the property memo never reuses a result that read one."""
        ms = getattr(self.world, "_monitor_set", None)
        if self._rec is not None:
            # not memoisable by value (the property memo keys on recorded fields): read as the raw state
            self._rec.add((WORLD, RAW))
        if ms is None or len(self._state) < 5:
            raise KeyError(f"no monitor {name!r}: the world declares none")
        return ms.state_of(self._state, name, rank)

    def actor(self, rank: int, thread: str = "main") -> ActorView:
        for i in self.world.actors_of_rank[rank]:
            if self.world.actors[i].thread == thread:
                return ActorView(self.world, i, self._state[0][i], self._rec)
        raise KeyError(f"no actor rank{rank}.{thread}")

    def actors(self, role: str | tuple[str, ...] | None = None, thread: str | None = None) -> Iterator[ActorView]:
        """The actors in ``Protocol.actors`` order, optionally of one role (or a tuple of roles) and
        one thread name."""
        roles = (role,) if isinstance(role, str) else role
        st, rec, world = self._state[0], self._rec, self.world
        for i, a in enumerate(world.actors):
            if (roles is None or a.role.name in roles) and (thread is None or a.thread == thread):
                yield ActorView(world, i, st[i], rec)
