"""Partial-order reduction: one ample-set rule for every model (Clarke/Grumberg/Peled ch. 10; Peled's
ample sets; Holzmann's SPIN reduction), fed by hooks the model provides.

``ample(model, s, succs)`` returns the ample subset of a state's full successor list.  Steps are
grouped by the process that takes them (``por_actor``; ``None`` marks a step that is never reduced
alone: faults, fabric completions).  A process p qualifies in s, and its steps are then the ample
set, when the model confirms, for p's steps M in s:

- C0 complete (``por_complete``): M is every step p can take before p itself moves: no step of
  another process can enable a step of p;
- C1 independent (``por_independent``): every step of M commutes with every step another process
  (faults included) can take before p moves, and disables none of them — including steps that the
  model's own rules offer only in some global situations (the role worlds offer faults in every
  state while the budget lasts, stuck states included, and timeouts only where no other step is
  enabled, which no state before p moves is: see "Faults" below);
- C2 invisible (``por_visible`` false, no edge violation): no step of M changes anything a property
  reads (every invariant and liveness obligation declares what it reads; the model checks the
  declaration at run time) or carries an edge check;
- C3 no ignoring (``por_no_ignoring``): every cycle of the reduced graph passes a fully expanded
  state (a progress measure that M strictly increases, or a structural argument).

Why every verdict class survives: take any run of the full graph from s.  By C0 and C1, p's first
step on that run (it must come: p's steps stay enabled until p moves, and a run that ends or gets
stuck has no step of p left enabled) can be moved to the front without changing the states after
it, and it is one of M; runs where p never moves are matched by runs that take one step of M first
and then the same steps, which by C1 stay enabled and lead to states that differ only in p's
invisible part.  So every stuck state and every end state stays reachable; by C2 every state a
property rejects has a reached counterpart that the property rejects too (p's part is invisible),
and edge checks are never reduced; by C3 no step is postponed for ever around a cycle.  Liveness is
not claimed here: the checker proves liveness on a reduced graph only as the absence of any cycle
that keeps an obligation open, and otherwise checks lassos on the full graph.

Two hook providers exist: ``spec.reduce.Reductions`` (the role worlds) and ``FootprintHooks``
(hand-written models such as the pipeline: static footprints and a progress measure).

The role worlds, footprint case.  A role declares what each transition shares: ``private`` (nothing),
or per transition the shared variables its functions read and write (``reads=``/``writes=``, or the
role's ``shares=``; a write counts as a read; guards are read).  The Ctx refuses, while the
reduction is on, any access outside the declaration (SpecError naming role, transition and field).
Checked accesses suffice: a run of the full graph whose first undeclared access is step t consists,
before t, of steps that keep their declarations, so by the commutations below the reduced search
reaches a state that agrees with t's on everything t read up to that access, and evaluates it there.
For actor p at control state c, let R and W be what p's transitions at c (enabled or not) may read and
write, and let R', W' be what every other actor may still read and write (the footprints of every
transition reachable from its current control state; an undeclared role may touch every shared
variable).  p's steps qualify when
- C0: R ∩ W' = ∅: no other actor can change what p's guards read, so a disabled step of p stays
  disabled and an enabled one enabled until p moves;
- C1: W ∩ (R' ∪ W') = ∅ besides (FIFO ends below): a step of p and a step of another actor touch disjoint shared
  variables and disjoint actor states, so they commute and neither enables or disables the other
  through a shared variable.  What links actors otherwise is handled as for private roles: op posts
  (a thread sharing its rank takes no op step alone while another thread of the rank may still post
  one, below), faults (below), and a kill of p's rank (a crash or hang, or another thread of the rank failing),
  which erases p's state whichever came first, but not what p wrote, nor a finished (DONE) thread:
  while a kill can come, p's steps that write shared variables or end p are not taken alone;
- C2: a step is visible when it changes what its role declares ``observed``, shared variables
  included, and a property read of a shared variable that a reduced role may write but does not
  declare observed is refused.  A role may also observe a field f (a variable, the control state
  or the pending op) only where a condition on its own variables holds (``observed_when``): what
  properties see of actor p is then the projection proj(p) = (p's observed fields, cond(p), f if
  cond(p) else nothing), and a step is visible when it changes proj(p): the condition, or f where
  the condition holds before the step.  A property read of f where cond(p) is false is refused,
  so every property is a function of the projections (on the states it is evaluated on; the
  argument for checked accesses below carries over).  proj(p) depends on p's local state alone,
  which no other actor's step changes and which p's step changes the same way wherever C1 lets it
  commute, so a step found invisible in s is invisible in every state it is moved through;
- C3: c is left by no back edge of a depth-first search of the role's local transitions, or the role
  declares a ``progress`` measure that the step, taken alone, does not lower and, from a back-edge
  state, raises.  On a cycle of steps taken alone every actor that moves returns to its state; its
  steps close a cycle of its local transitions (op steps end only in fabric steps, never taken
  alone), which holds a back edge: a contradiction either way.
Threads sharing a rank.  A rank's ops are queued per group (and peer) in posting order: an op step
records how many of its rank's ops are still ahead of it in its queue (``PendingOp.pos``, counted over
every thread of the rank), so two threads of one rank that post on one queue do not commute, and the
queue an op uses is known only once its thread posts it.  So an op step of p (a post, blocking or
not, or a wait: any transition with ``op=``) is taken alone only when no other live thread of p's
rank may still post one: its control state reaches no transition with an op, or, while it waits on
an op it posted, no target of that transition does (both from the role's transition graph, closed
backwards).  Then every step another thread can take before p moves is a local step (which reads
no actor state but its own and the shared variables), the completion of an op posted earlier, a
failure or a kill.  A completion lowers the ``pos`` of the ops behind it in its queue, p's among them
when p has posted: p's post and the completion give one state in either order (p counts the
completed op or not, and is lowered or not, by one).  A failure (an op whose partner's process is gone)
takes the op out of its queue the same way, from whatever position it holds: the ops behind it move
up and the failed op keeps position 0, as a completed one does; so p's post and a failure commute too
(before this, a failed op stayed in the queue and the two orders left p's op at different positions:
states that behave alike but differ, which the differential's end-state comparison showed).  A
completion's enabledness reads the queue's ops at position 0, which p's post, landing behind them,
does not change; that p's post may enable another fabric step is no dependence.
One step of p does disable fabric steps: ending p's process while an op of its rank posted without
blocking is outstanding.  The op is void once the process is gone (wire.py, ``_drop_gone_posts``), so
another rank's later op can no longer complete with it: DONE before that rank's call and DONE after
the completion lead to different runs (a rank that posts a barrier and an all_reduce, never waits and
exits, against a rank that runs a barrier and then an all_gather: the mismatch is reachable only where
the barrier completes first, and the reduced search, taking rank 0 alone up to its exit, said HOLDS).
So while p's rank has a posted op outstanding, a step that ends p (DONE, or a control state with no
transitions) is not taken alone (``Reductions._voids_posts``).  Failures and kills are covered below.
Where two threads of a rank both still post, neither goes alone; the rank's threads may then go
together (``por_sets``): when every thread of the rank that has not ended has steps now (none is
blocked in an op or waiting on a guard), their steps together are the ample set if each thread
passes C0-C3 as above, with the other members' footprints left out of what "other actors may still
touch" and no posting-order condition.  Every step of the rank that can come before one of the set's
is then one of the set's (a thread with no step now is not waiting for anyone outside: it has
ended), so what remains outside is other ranks' steps, fabric completions, faults and kills, which
the members' C1 checks cover one by one exactly as for a process alone; dependences among the
members do not matter, since every member's steps are explored.  C3's argument is unchanged: every
step of the set leaves a state that is not a back-edge source, or raises its thread's measure.
Independence is per variable, with one refinement: FIFO ends.  A shared variable holding a ``Fifo``
may be declared, per transition, ``puts=`` (the step sees only ``has_room(capacity)`` and ``put``)
or ``takes=`` (only ``nonempty()``, ``head`` and ``take()``; the rest of the queue is not readable),
and a step that runs although it found its queue full (puts) or empty (takes) is refused: so a put
runs only while there is room and a take only while there is an item, and neither looks further.
A put of p and a take of another actor on one queue then commute (``(x+a)[1:] == x[1:]+a`` when x
is non-empty, which the enabled take guarantees) and neither disables the other: a take only adds
room, a put only adds an item behind the head.  A FIFO end conflicts with any other use of the
queue by another actor (a second putter or taker, a plain read or write).  C0 for FIFO ends: a put
waiting for room, or a take for an item, could be enabled by the opposite end, so when another actor
may use the opposite end, every transition of p at c on that end must be enabled.  This is the
head/tail split of the hand-written pipeline, and SPIN's exclusive send/receive channels.

Faults (role worlds).  While the run's fault budget lasts, a crash of rank r may strike in every state
where a thread of r has not ended or waits on an op, and a hang where every thread of r is at one of its
hang points or has ended.  Stuck states are no exception: a stuck state is reported as the violation it
is and the search ends at its depth, but it keeps its fault successors (a rank can crash in a hung job
too).  So which faults may strike reads the budget and r's control states, nothing else.  While a fault
can still strike, p's steps are taken alone only when none is a named fault (it would spend the budget),
c is not a hang point of p's rank (leaving it would disable the hang), and, while p's rank can be
killed, no step writes a shared variable or ends p (DONE, or a control state with no transitions).
Then, for a fault f that can strike before p moves: (i) f stays enabled after p's step, whose only
effect is on p's state and the variables of its footprint, neither of which f's enabledness reads,
except p's control state when f strikes p's own rank (a crash stays possible: p does not end; a hang
was not possible before p moved, p not being at a hang point); (ii) f of another rank writes that
rank's threads and the budget, which p's step neither reads nor writes, so the two commute and p's
step stays enabled (p's guards read no fault budget: no named fault at c); (iii) f of p's own rank
erases p's state whether p moved first or not, and p wrote nothing else (an op p posted without
blocking leaves the fabric with its process: wire.py, ``_drop_gone_posts``), so both orders end in
one state.  Timeouts (quiescent steps) are offered only where no other step is enabled, and p's step is
enabled in every state before p moves, so no timeout fires before it.  None of this asks that p still
have a step of its own after moving: a step of p that leads into a stuck state disables no fault.
"""
from __future__ import annotations

from typing import Any

from .api import Violation

HOOKS = ("por_actor", "por_groups", "por_complete", "por_visible", "por_independent", "por_no_ignoring")
FOOTPRINT_HOOKS = ("actor_of", "footprint", "footprints", "local_choices", "progress")


def supports(model) -> bool:
    return all(hasattr(model, h) for h in HOOKS) or all(hasattr(model, h) for h in FOOTPRINT_HOOKS)


def ample(model, s, succs: list, sets_only: bool = False) -> list:
    """The ample subset of ``succs`` (the model's full successor list of ``s``): one qualifying
    process's steps, or the steps of a set of processes the model proposes (``por_sets``: the
    threads of one rank) that qualify together, or all of ``succs`` when none qualifies.
    ``sets_only``: the caller already found that no single process qualifies."""
    if len(succs) <= 1:
        return succs
    h = model if hasattr(model, "por_actor") else _footprint_view(model)
    by_actor = h.por_groups(succs)
    if len(by_actor) == 1:
        return succs
    for p, moves in by_actor.items():
        if p is None or sets_only:
            continue
        if not h.por_complete(s, p, moves):  # C0
            continue
        if any(isinstance(n, Violation) or h.por_visible(s, a, n) for a, n in moves):  # C2
            continue
        if not h.por_independent(s, p, moves, succs):  # C1
            continue
        if not h.por_no_ignoring(s, p, moves):  # C3
            continue
        return moves
    sets = getattr(h, "por_sets", None)  # several processes together: the threads of one rank
    if sets is not None:
        for members in sets(s, by_actor):
            inside = frozenset(members)
            if all(h.por_complete(s, p, by_actor[p], inside)
                   and not any(isinstance(n, Violation) or h.por_visible(s, a, n) for a, n in by_actor[p])
                   and h.por_independent(s, p, by_actor[p], succs) and h.por_no_ignoring(s, p, by_actor[p])
                   for p in members):
                return [x for x in succs if x[0] is not None and h.por_actor(x[0]) in inside]
    return succs


def group_by_actor(h, succs) -> dict:
    """``succs`` grouped by ``h.por_actor`` in order of first appearance (the ``por_groups`` hook of a
    model with no faster way)."""
    by_actor: dict[Any, list] = {}
    for a, n in succs:
        by_actor.setdefault(h.por_actor(a), []).append((a, n))
    return by_actor


class FootprintHooks:
    """The rule's hooks derived from static footprints, for models that define:

    - ``actor_of(action)``: the process that takes the step;
    - ``footprint(action)``: the shared resources the step touches, chosen so that steps of
      different processes with disjoint footprints are independent; ``None`` marks a visible step;
    - ``footprints()``: per process, every resource any of its steps may ever touch (static);
    - ``local_choices(state, actor)``: how many steps the process has at its control state, enabled
      or not (C0 holds when all of them are enabled);
    - ``progress(state)``: an integer measure every reduced step must strictly increase (C3)."""

    def por_actor(self, action):
        return self.actor_of(action)

    def por_groups(self, succs) -> dict:
        return group_by_actor(self, succs)

    def por_complete(self, s, p, moves) -> bool:
        return len(moves) == self.local_choices(s, p)

    def por_visible(self, s, action, nxt) -> bool:
        return self.footprint(action) is None

    def por_independent(self, s, p, moves, succs) -> bool:
        others = _others(self.__dict__.get("_por_model", self)).get(p)
        return others is not None and all(self.footprint(a).isdisjoint(others) for a, _ in moves)

    def por_no_ignoring(self, s, p, moves) -> bool:
        base = self.progress(s)
        return all(self.progress(n) > base for _, n in moves)


class _FootprintView(FootprintHooks):
    def __init__(self, model):
        self._por_model = model

    def __getattr__(self, name):
        return getattr(self._por_model, name)


def _footprint_view(model):
    return _FootprintView(model)


def _others(model) -> dict[Any, frozenset]:
    """Per process, the union of every other process's static footprint (cached on the model)."""
    d = model.__dict__
    cache = d.get("_por_others")
    if cache is None:
        fps = model.footprints()
        cache = {p: frozenset().union(*(f for q, f in fps.items() if q != p)) for p in fps}
        d["_por_others"] = cache
    return cache


class Reduced:
    """A model with ample-set successors, for models that implement the hooks but not
    ``set_reduction``; every other method is the model's own."""

    def __init__(self, model):
        self.model = model
        self.name = f"{model.name}+por"

    @property
    def features(self) -> frozenset:
        from .features import KEY_FIELDS, KEYED, PACKED, REDUCTION, features_of

        # always reduced (keyed successors are the unreduced ones); the packed core is unreduced
        return features_of(self.model) - {KEYED, KEY_FIELDS, PACKED, REDUCTION}

    def __getattr__(self, name):
        if name in ("packed", "set_reduction", "keyed", "key_tables"):  # the packed core and keyed successors are unreduced
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
