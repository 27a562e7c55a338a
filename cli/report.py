"""Results for people (text) and for machines (the stable ``--json`` schema, docs/json.md)."""
from __future__ import annotations

import json
from typing import Any

from ..model.api import BOUND_REACHED, HOLDS, VACUOUS

JSON_SCHEMA_VERSION = 1
EXIT = {HOLDS: 0, BOUND_REACHED: 3, VACUOUS: 4}


def exit_code(verdict: str) -> int:
    return EXIT.get(verdict, 1)


def to_json(spec: str, variant: str | None, params: dict, backend: str, result, reduction: bool) -> dict[str, Any]:
    st = result.stats
    steps = []
    for s in result.counterexample:
        d = {k: s.get(k) for k in ("step", "rank", "role", "transition", "op", "group", "ids")}
        extra = {k: v for k, v in s.items() if k not in d}
        d.update(extra)
        steps.append(d)
    return {
        "schema": JSON_SCHEMA_VERSION,
        "spec": spec,
        "variant": variant,
        "params": params,
        "backend": backend,
        "reduction": reduction,
        "verdict": result.verdict,
        "message": result.message,
        "bound": result.bound,
        "states": st.states,
        "transitions": st.transitions,
        "depth": st.depth,
        "seconds": round(st.seconds, 4),
        "states_per_second": round(st.states_per_second, 1),
        "peak_rss_mb": round(st.peak_rss_mb, 1),
        "end_states": st.end_states,
        "fail_fast_ends": st.fail_fast_ends,
        "counterexample": steps,
        "cycle_start": result.cycle_start,
        "waiting": result.waiting,
        "coverage": result.detail.get("coverage"),
    }


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


def _fmt(x) -> str:
    if x is None:
        return ""
    if isinstance(x, list):
        return ",".join(map(str, x))
    if isinstance(x, dict):
        return " ".join(f"{k}={_fmt(v)}" for k, v in x.items())
    return str(x)


def text(spec: str, variant: str | None, params: dict, backend: str, result) -> str:
    st = result.stats
    lines = []
    ptxt = " ".join(f"{k}={v}" for k, v in params.items())
    lines.append(f"lockstep check {spec}{' --variant ' + variant if variant else ''}  [{ptxt}] backend={backend}")
    lines.append(f"verdict: {result.verdict}  {result.message}")
    lines.append(f"explored {st.states:,} states, {st.transitions:,} transitions, depth {st.depth}, "
                 f"{st.seconds:.2f} s ({st.states_per_second:,.0f} states/s), peak RSS {st.peak_rss_mb:.0f} MB"
                 + (f"; {st.fail_fast_ends:,} fail-fast end states (crash beats hang)" if st.fail_fast_ends else ""))
    cex = result.counterexample
    if cex:
        kind = "lasso" if result.cycle_start is not None else "shortest"
        lines.append("")
        lines.append(f"counterexample ({len(cex)} steps, {kind}):")
        rows = [("#", "rank", "actor/role", "transition", "op", "ids", "changed")]
        for s in cex:
            who = s.get("actor") or s.get("role") or ""
            if s.get("role") == "fabric":
                who = "fabric"
            tr = s.get("transition") or ""
            if s.get("commit"):
                tr += " [commit]"
            if s.get("fault"):
                tr += " [fault]"
            changed = s.get("changed") or {}
            if s.get("shared"):
                changed = {**changed, "shared": s["shared"]}
            mark = "@" if s.get("in_cycle") else " "
            rows.append((f"{mark}{s['step']}", _fmt(s.get("rank")), who, tr, s.get("op") or "", _fmt(s.get("ids")),
                         _fmt(changed)))
        widths = [min(max(len(r[i]) for r in rows), w) for i, w in enumerate((5, 7, 14, 40, 60, 40, 80))]
        for r in rows:
            lines.append("  " + "  ".join(c[:w].ljust(w) for c, w in zip(r, widths)).rstrip())
        if result.cycle_start is not None:
            lines.append(f"  (steps marked @ form the cycle that repeats for ever, from step {result.cycle_start + 1})")
    cov = result.detail.get("coverage") if isinstance(result.detail, dict) else None
    if cov:
        lines.append("")
        lines.append("coverage (transitions of each role that fired in the explored graph):")
        for role, c in cov.items():
            never = f"; never fired: {', '.join(c['never_fired'])}" if c["never_fired"] else ""
            lines.append(f"  {role}: {c['fired']}/{c['transitions']}{never}")
    if result.waiting:
        lines.append("")
        lines.append("who waits on whom:")
        for w in result.waiting:
            if w.get("op"):
                who = ", ".join(f"rank {r} ({s})" for r, s in w.get("partner_status", {}).items()) or "(matching peer)"
                lines.append(f"  rank {w['rank']} {w['role']} in {w['state']}: {w['op']}  -> waits for {who}")
            else:
                lines.append(f"  rank {w['rank']} {w['role']} in {w['state']}: {w.get('condition', '')}")
    return "\n".join(lines)
