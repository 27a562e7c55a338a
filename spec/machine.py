"""Roles as explicit state machines over the fabric, and the world that runs them (a ``Model``).

A **role** is a control state plus immutable local variables (a namedtuple) and named transitions
with guards.  A transition is local, or issues one op to the fabric and blocks until the fabric
completes it.  The role's transition list is the diagram: rendering needs no second description.

A **world** (``Protocol``) places actors (a rank's thread running a role) on ranks, declares the
process groups and shared variables (per-world, e.g. the rank0 queues), and implements the checker's
``Model`` interface:

- actor steps: a local transition, or issuing an op (the actor then waits in its source state);
- fabric steps: a collective completes when every member's next call on the group is posted
  (signatures compared), a send completes with its matching recv;
- failure steps (backend profile): an op whose partner's process is gone fails, and the actor goes to
  the transition's ``on_error`` state;
- quiescent steps: watchdogs and timed waits (``timeout=`` on an op, ``quiescent=True`` on a local
  transition) fire only when no other step can happen — time passes only when nothing else can —
  and only after a fault was injected: deadlines are the designed recovery from faults, so a
  fault-free run that can only continue through a timeout is stuck;
- fault steps, enabled by configuration and at most ``max_faults`` per run: named fault transitions
  (a throw at a named point), ``crash`` (the process dies, anywhere) and ``hang`` (the process wedges,
  alive, at a message boundary its role declares in ``hang_points``).

A state where no step but a fault can happen and some actor is still waiting is stuck: STRANDED when
a waiter's partner is gone, wedged or idle for good, DEADLOCK when every partner is itself waiting.
Faults never rescue a stuck state: it is reported as the violation it is, and the search ends at its
depth.  The faults that may still strike there are offered as its successors all the same (a rank can
crash in a hung job too); so a step that leads into a stuck state never disables a fault, which the
partial-order reduction relies on (reduce.py, ``por_independent``).  An end where every process
finished or failed is clean or FAIL_FAST (crash beats hang).

The implementation is split by job: lang.py (the spec language: Role, Transition, Ctx, ActorDef),
state.py (typed world states), world.py (Protocol: the semantics), reduce.py (partial-order and
symmetry reduction), explain.py (describe, waiting).  This module re-exports them.
"""
from __future__ import annotations

from .lang import BUILTIN_TERMINAL, DEAD, DONE, EXITED, FAILED, HUNG, ActorDef, Ctx, Fifo, Role, Transition, parse_faults
from .state import ActorState, PendingOp, WorldState
from .world import Protocol

__all__ = ["BUILTIN_TERMINAL", "DEAD", "DONE", "EXITED", "FAILED", "HUNG", "ActorDef", "ActorState", "Ctx", "Fifo", "PendingOp",
           "Protocol", "Role", "Transition", "WorldState", "parse_faults"]
