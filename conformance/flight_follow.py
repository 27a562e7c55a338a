"""A recorded run's collectives followed on a user's spec: can the spec run the collectives the Flight
Recorder dumps show, in their order, and end as the run ended?

What the dumps say of a run is, per process group, the sequence of collectives its members entered
(c10d numbers them per group, ``collective_seq_id``): ``flight.collective_sequences`` keeps those every
member entered, up to the first that some never entered or entered with another op.  A spec says the
same of each of its runs: every time the fabric matches a group's calls (``collective_step``), that
group's next collective happens.  The search is over pairs (spec state, how many of each group's
recorded collectives the spec has run); a step that matches a group's calls must be the group's next
recorded op, compared by kind (``spec_kind``); every other step (actor steps, point-to-point, faults)
is free.  A pair is accepted when every recorded collective has run and

- the dumps show no failure: the spec has ended there (``ended``: nothing can happen any more but a
  fault; no rank can take a step and none is stuck waiting) -- or anywhere after them, with
  ``mid_run`` (dumps taken while the run went on);
- the dumps show a failure: the spec ends as the dumps do (``end_ok``: flight_user's shapes, a stuck
  state whose blocked ranks are the dumps', or a collective mismatch on the dumps' group).

Where no pair is accepted the search reports the furthest it got: the group and recorded collective
the spec could not run next, and what it offered there instead.

The search walks the spec's reduced graph (partial-order and symmetry reductions on, as the checker),
which is sound for this question:
- Partial-order reduction: an ample set holds the steps of one actor only; a fabric matching or a
  fault is never in one (model/por.py).  Take any run of the full graph.  The reduction argument
  (C0-C3) builds a run of the reduced graph from it by moving an ample actor's steps earlier past
  steps they commute with, and by adding ample actors' steps that stay enabled to the end: both
  change only where actor steps stand, so the two runs match the same groups' calls in the same
  order and run the same recorded collectives.  A run that ends stuck, or ended (no actor step
  enabled), gets no added step (it would still be enabled at that end), so the reduced run reaches
  that very end.
- Symmetry reduction: a spec's symmetric ranks are in every group or in none (the spec is refused
  otherwise), collective kinds name no rank, and end shapes are compared up to the symmetric ranks
  (flight_user): a state and its permutations are accepted alike, so their representative suffices.
"""
from __future__ import annotations

from ..model.api import COLLECTIVE_MISMATCH, Violation
from ..model.features import configure

MAX_STATES = 500_000  # (state, progress) pairs per spec variant

# Flight Recorder's op names (profiling_name without its backend) -> the spec's op kinds.  NCCL names an
# op by the c10d call that issued it; gloo records reduce_scatter as all_reduce entries (the tensor form
# as one, the list form as one per tensor: not followed) and monitored_barrier as no entry at all.
PROFILED = {
    "all_reduce": "all_reduce", "allreduce": "all_reduce", "allreduce_coalesced": "all_reduce",
    "all_reduce_coalesced": "all_reduce",
    "barrier": "barrier", "all_reduce_barrier": "barrier",
    "broadcast": "broadcast", "_broadcast_oop": "broadcast",
    "reduce": "reduce", "_reduce_oop": "reduce",
    "all_gather": "all_gather", "_allgather_base": "all_gather", "_all_gather_base": "all_gather",
    "all_gather_into_tensor": "all_gather", "all_gather_into_tensor_coalesced": "all_gather",
    "all_gather_coalesced": "all_gather", "allgather_coalesced": "all_gather", "ALLGATHER_coalesced": "all_gather",
    "reduce_scatter": "reduce_scatter", "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter_tensor": "reduce_scatter", "reduce_scatter_tensor_coalesced": "reduce_scatter",
    "REDUCE_SCATTER_coalesced": "reduce_scatter",
    "all_to_all": "all_to_all", "alltoall": "all_to_all", "alltoall_base": "all_to_all",
    "all_to_all_single": "all_to_all",
    "gather": "gather", "scatter": "scatter",
}
UNRECORDED = frozenset({"monitored_barrier"})  # spec ops Flight Recorder keeps no entry of


def spec_kind(op) -> str:
    """The spec op kind a recorded op (or a coalesced tuple of ops of one kind) is."""
    if isinstance(op, tuple):
        kinds = {spec_kind(x) for x in op}
        return kinds.pop() if len(kinds) == 1 else "+".join(sorted(kinds))
    return PROFILED.get(op, op)


def _same_kind(recorded: str, spec: str, gloo: bool) -> bool:
    return recorded == spec or (gloo and spec == "reduce_scatter" and recorded == "all_reduce")


def follow(model, plan: dict[str, list], end_ok=None, mid_run: bool = False, gloo: bool = False,
           max_states: int = MAX_STATES, reduction: bool = True) -> dict:
    """Whether ``model`` can run ``plan`` (spec group -> the spec op kinds of its recorded collectives,
    in order) and then end as the run did: ``end_ok(state, succ)`` for a failed run (True where it
    ends as the dumps do), else ended (or anywhere, ``mid_run``).  Returns ``{"follows", "states",
    "complete", "done", "left_at"?}``: ``done`` is how many recorded collectives the furthest pair had
    run; ``left_at`` (not followed) is ``{"group", "index", "op", "offered", "end"}``: the group whose
    ``index``-th recorded op (0-based) the spec could not run next and what collectives it offered
    there instead (``end``: every recorded one had run, the run's end is what it could not reach).
    ``reduction=False``: on the full graph (the differential, tests/followgen.py)."""
    configure(model, reduction, liveness=False)
    names = list(plan)
    index = {g: i for i, g in enumerate(names)}
    seqs = [plan[g] for g in names]
    lengths = tuple(len(s) for s in seqs)
    total = sum(lengths)
    seen: set = set()
    stack = []
    for s in model.init_states():
        node = (s, (0,) * len(names))
        if node not in seen:
            seen.add(node)
            stack.append(node)
    best = [-1, set(), None]  # the furthest progress, the (group, kind) offered and refused there, a pair's counts there

    def frontier(progress: int, cur: tuple, offered) -> None:
        if progress > best[0]:
            best[0], best[1], best[2] = progress, set(), cur
        if progress == best[0]:
            best[1].update(offered)

    def accepted() -> dict:
        return {"follows": True, "states": len(seen), "complete": True, "done": total}

    complete = True
    while stack:
        s, cur = stack.pop()
        succ = list(model.successors(s))
        done = cur == lengths
        if done and _accepts(model, s, succ, end_ok, mid_run):
            return accepted()
        progress = sum(cur)
        kids, advancing, offered = [], [], []
        for a, n in succ:
            if a is None:
                continue
            step = model.collective_step(s, a)
            if step is not None and isinstance(n, Violation):  # the calls met and mismatch: an end
                if done and end_ok is not None and n.verdict == COLLECTIVE_MISMATCH and end_ok(s, [(a, n)]):
                    return accepted()
                offered.append(step)
                continue
            if step is None or step[1] in UNRECORDED:
                if not isinstance(n, Violation):
                    kids.append((n, cur))
                continue
            g, kind = step
            i = index.get(g)
            if i is not None and cur[i] < lengths[i] and _same_kind(seqs[i][cur[i]], kind, gloo):
                advancing.append((n, cur[:i] + (cur[i] + 1,) + cur[i + 1:]))
            else:
                offered.append((g, kind))
        frontier(progress, cur, offered)
        for node in kids + advancing:  # the advancing ones are popped first: the search follows the run
            if node not in seen:
                if len(seen) >= max_states:
                    complete = False
                    stack.clear()
                    break
                seen.add(node)
                stack.append(node)
    out = {"follows": False, "states": len(seen), "complete": complete, "done": max(best[0], 0)}
    if best[2] is not None:
        cur = best[2]
        left = [i for i in range(len(names)) if cur[i] < lengths[i]]
        on = {g for g, _ in best[1]}  # a group where the spec offered another collective comes first
        i = min(left, key=lambda i: names[i] not in on) if left else None
        out["left_at"] = {"group": None if i is None else names[i], "index": None if i is None else cur[i],
                          "op": None if i is None else seqs[i][cur[i]], "end": i is None,
                          "offered": sorted(f"{k} on {g}" for g, k in best[1])}
    return out


def _accepts(model, s, succ, end_ok, mid_run: bool) -> bool:
    if end_ok is not None:
        return (not succ or succ[0][0] is None) and end_ok(s, succ)
    return mid_run or ended(model, s, succ)


def ended(model, s, succ) -> bool:
    """Nothing can happen any more but a fault: no rank can take a step, and none is stuck waiting."""
    return all(model.rank_fault(a) for a, _ in succ)
