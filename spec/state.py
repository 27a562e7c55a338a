"""Typed world states.  They are tuples in a fixed field order (readers that index them keep
working, and a typed state equals and hashes like the plain tuple with the same fields):

- ``WorldState(actors, shared, faults_used, fabric)``: one ``ActorState`` per actor (in
  ``Protocol.actors`` order), the shared variables (a namedtuple, or ``()``), the faults injected so
  far, and the fabric's own entries (``()`` while there are none): messages buffered by eager sends,
  ``("msg", group, src rank, dst rank, tag, sig, data)``, and ops posted without blocking,
  ``("op", actor, handle, k, op, pos, done, result)`` (docs/fabric.md);
- ``MonitoredState(actors, shared, faults_used, fabric, monitors)``: the state of a world that
  declares monitors (spec/monitor.py): the same four fields, then one entry per monitor instance (its
  state name, or None once a per-rank instance's rank is gone).  Code that reads ``state[:4]`` or
  ``state.actors`` reads both alike;
- ``ActorState(ctl, vars, pending)``: control state, the role's variables (None once the process is
  gone), the op it waits on (None when it is not blocked);
- ``PendingOp(tidx, op, pos)``: the index of the issuing transition in its role, the ``fabric.Op``,
  and how many earlier ops of the same queue (group, collective or p2p) the rank still waits on.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .fabric import Op


class PendingOp(NamedTuple):
    tidx: int
    op: Op
    pos: int


class ActorState(NamedTuple):
    ctl: str
    vars: Any
    pending: PendingOp | None


class WorldState(NamedTuple):
    actors: tuple
    shared: Any
    faults_used: int
    fabric: tuple = ()


class MonitoredState(NamedTuple):
    actors: tuple
    shared: Any
    faults_used: int
    fabric: tuple
    monitors: tuple
