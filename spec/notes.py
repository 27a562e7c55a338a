"""The note: and hint: lines a check prints after its verdict (``lockstep check``, its ``--json``
``notes``, ``lockstep.testing.Result.notes``): where a HOLDS rests on the symmetry check's detector
rather than a proof, and which declarations (``symmetric=``, ``observed_when=``) a large search could
use."""
from __future__ import annotations

from .fabric import ranks_text

HINT_STATES = 20_000  # a search this large may be worth a declaration


def check_notes(model, result, reduction: bool) -> list[str]:
    """Every note and hint line after ``result`` of ``model``'s check (none without reductions)."""
    return symmetry_hints(model, result) + observed_when_hints(model, result) if reduction else []


def symmetry_hints(model, result) -> list[str]:
    """Note lines after a HOLDS whose symmetry check was only a detector for some property, and hint
    lines after a large search: actors that ``symmetric=`` could name and does not."""
    out = []
    detected = getattr(model, "sym_detected", None) or {}
    if detected and result.verdict in ("HOLDS", "VACUOUS"):
        ranks = ranks_text(sorted(model.actors[i].rank for i in model.symmetric))
        unproved = getattr(model, "sym_unproved", None) or {}
        for what, read in sorted(detected.items()):
            where = f"on {unproved[what]:,} of the {result.stats.states:,} states" if unproved.get(what) else "on some states"
            out.append(f"note: {what} read {read} {where}, where the symmetry check tried a swap, a rotation and the "
                       f"reversal of {ranks} (too many arrangements to try each; elsewhere it tried every one): this HOLDS "
                       f"assumes it treats those ranks alike (--cross-check proves it at this size, by a search of every "
                       f"arrangement: its cost grows factorially with the ranks)")
    find = getattr(model, "symmetry_candidates", None)
    if find is None or result.stats.states < HINT_STATES:
        return out
    for ix in find():
        a = model.actors[ix[0]]
        consecutive = list(ix) == list(range(ix[0], ix[-1] + 1))
        decl = f"tuple(range({ix[0]}, {ix[-1] + 1}))" if consecutive and len(ix) > 3 else repr(tuple(ix))
        out.append(f"hint: {ranks_text(sorted(model.actors[i].rank for i in ix))} run role {a.role.name} alike and are not declared "
                   f"symmetric; if nothing depends on which is which, Protocol(symmetric={decl}) explores each "
                   f"permutation of them once (the checker refuses the declaration where something does)")
    return out


def observed_when_hints(model, result) -> list[str]:
    """Hint lines after a large search: observed variables that the properties read only where a
    boolean observed variable of the role had one value (``gated_fields``), which ``observed_when=``
    could declare."""
    find = getattr(model, "gated_fields", None)
    if find is None or result.stats.states < HINT_STATES:
        return []
    by_gate: dict = {}
    for role, f, flag, value in find():
        by_gate.setdefault((role, flag, value), []).append(f)
    out = []
    for (role, flag, value), fields in sorted(by_gate.items()):
        cond = f"v.{flag}" if value else f"not v.{flag}"
        decl = ", ".join(f"{f!r}: lambda v: {cond}" for f in fields)
        out.append(f"hint: the properties read {', '.join(fields)} of role {role} only where {flag} is {value}; "
                   f"Role({role!r}, ..., observed_when={{{decl}}}) in place of observed= for "
                   f"{'them' if len(fields) > 1 else 'it'} makes the steps that change {'them' if len(fields) > 1 else 'it'} "
                   f"elsewhere invisible (the checker refuses the declaration where a property reads one elsewhere)")
    return out
