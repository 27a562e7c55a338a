"""Cross-checking the reductions: the same check with and without them must agree.

``reachable_classes(model)`` explores the whole graph the model offers (every state, past states
that fail an invariant; a step that is itself a violation ends there) and returns every violation
class it can reach (DEADLOCK, STRANDED, COLLECTIVE_MISMATCH, FRANKEN ...) plus FAIL_FAST when an
end where some rank failed fast is reachable (not a violation, but a reduction must keep it).  ``verdict_class`` maps a
verdict to HOLDS, VIOLATION, VACUOUS or BOUND_REACHED: the reduced and unreduced searches may stop
at different first violations (a reduced graph keeps every violation reachable, not every
shortest path), so it is the class that must agree, plus the set of reachable violation classes.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from .api import BOUND_REACHED, FAIL_FAST, HOLDS, VACUOUS, Violation
from .features import configure


def verdict_class(verdict: str) -> str:
    return verdict if verdict in (HOLDS, BOUND_REACHED, VACUOUS) else "VIOLATION"


def reachable_classes(model, reduction: bool, max_states: int | None = None,
                      visit: Callable[[object, object, list], None] | None = None,
                      invariants: bool = True) -> tuple[frozenset, int, bool]:
    """(violation classes reachable, states explored, complete) on the reduced or full graph.
    ``complete`` is False when ``max_states`` stopped the search first.  ``visit(state, what its
    invariant said (a Violation or None), its successors [(action, next state or Violation)])`` is
    called on every state explored, in breadth-first order (the differential's other comparisons
    ride on this one pass over the graph).  ``invariants=False``: the states' invariants are not
    evaluated (their classes are left out; ``visit`` gets None), for a caller that wants the graph's
    ends alone."""
    configure(model, reduction, liveness=False)
    seen = set()
    q = deque()
    for s in model.init_states():
        if s not in seen:
            seen.add(s)
            q.append(s)
    classes: set = set()
    while q:
        s = q.popleft()
        v = model.invariant(s) if invariants else None
        if v is not None:
            classes.add(v.verdict)
        succ = list(model.successors(s))
        if visit is not None:
            visit(s, v, succ)
        for a, n in succ:
            if isinstance(n, Violation):
                classes.add(n.verdict)
                continue
            if n not in seen:
                if max_states is not None and len(seen) >= max_states:
                    return frozenset(classes), len(seen), False
                seen.add(n)
                q.append(n)
        if not succ:
            end = model.classify_end(s)
            if isinstance(end, Violation):
                classes.add(end.verdict)
            elif end == FAIL_FAST:  # an end where a rank failed fast: a reduction must keep those too
                classes.add(FAIL_FAST)
    return frozenset(classes), len(seen), True


def cross_check(build: Callable[[], object], check: Callable, max_states: int | None = None) -> dict:
    """Run ``check(model, reduction)`` reduced and unreduced on fresh models from ``build`` and
    compare verdict classes and reachable violation classes.  Returns a JSON-able report with
    ``agree`` and, when they differ, ``differences`` (one line each)."""
    out: dict = {}
    for key, red in (("reduced", True), ("unreduced", False)):
        res = check(build(), red)
        classes, states, complete = reachable_classes(build(), red, max_states)
        out[key] = {"verdict": res.verdict, "verdict_class": verdict_class(res.verdict), "states": res.stats.states,
                    "reachable_violation_classes": sorted(classes), "graph_states": states, "complete": complete,
                    "result": res}
    r, u = out["reduced"], out["unreduced"]
    diffs = []
    if r["verdict_class"] != u["verdict_class"]:
        diffs.append(f"verdict class {r['verdict_class']} ({r['verdict']}) reduced vs {u['verdict_class']} ({u['verdict']}) unreduced")
    if r["complete"] and u["complete"] and r["reachable_violation_classes"] != u["reachable_violation_classes"]:
        only_u = sorted(set(u["reachable_violation_classes"]) - set(r["reachable_violation_classes"]))
        only_r = sorted(set(r["reachable_violation_classes"]) - set(u["reachable_violation_classes"]))
        diffs.append("reachable violation classes differ: "
                     + "; ".join(x for x in (f"only unreduced: {', '.join(only_u)}" if only_u else "",
                                             f"only reduced: {', '.join(only_r)}" if only_r else "") if x))
    out["agree"] = not diffs
    out["differences"] = diffs
    return out
