"""Results for people (text) and for machines (the stable ``--json`` schema, docs/json.md)."""
from __future__ import annotations

import json
from typing import Any

from ..model.api import BOUND_REACHED, HOLDS, VACUOUS
from ..spec.fabric import rank_runs, ranks_text

JSON_SCHEMA_VERSION = 1
INTERRUPTED = "INTERRUPTED"  # a signal ended the check: not a verdict about the spec
EXIT = {HOLDS: 0, BOUND_REACHED: 3, VACUOUS: 4, INTERRUPTED: 130}


def exit_code(verdict: str) -> int:
    return EXIT.get(verdict, 1)


def interrupted_result(stats, seconds: float, signame: str):
    """The result of a check a signal ended: the statistics last reported (about 4 times a second)
    and no verdict about the spec."""
    from ..model.checker import Result, Stats, peak_rss_mb

    st = Stats(**{k: getattr(stats, k) for k in Stats.__dataclass_fields__}) if stats is not None else Stats()
    st.seconds = max(st.seconds, seconds)
    st.peak_rss_mb = max(st.peak_rss_mb, peak_rss_mb())
    return Result(INTERRUPTED, f"interrupted by {signame} after {seconds:.1f} s; the statistics are those "
                               f"reached so far, nothing is proved", st, bound=None)


def to_json(spec: str, variant: str | None, params: dict, backend: str, result, reduction: bool,
            expected: tuple | None = None, notes: tuple | list = ()) -> dict[str, Any]:
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
        # a monitor's rejection (spec/monitor.py): {monitor, rank, actor, event, transition, monitor_state}
        "monitor": ({k: v for k, v in result.detail.items() if k != "coverage"} if "monitor" in result.detail else None),
        # the verdicts the spec documents for this variant (or for its hardened protocol), and whether this is one
        "expected": list(expected) if expected is not None else None,
        "as_expected": as_expected(expected, result.verdict),
        # the note: and hint: lines the text output prints after the verdict
        "notes": list(notes),
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


def search_order(result, shortest_known: bool) -> str:
    """How the counterexample was found: a lasso, the shortest one, or breadth-first under reductions
    (partial-order and symmetry reduction may skip the interleavings of a shorter path)."""
    if result.cycle_start is not None:
        return "lasso"
    if shortest_known:
        return "shortest"
    return "breadth-first under reduction; --no-reduction for the shortest"


def _choice(ch) -> str:
    """A nondeterministic choice as the step took it (``choose=``): values, not a cut-off repr."""
    if ch is None:
        return ""
    if isinstance(ch, dict):
        return " ".join(f"{k}={_choice(v)}" for k, v in ch.items())
    if isinstance(ch, (list, tuple)):
        return "(" + ",".join(_choice(x) for x in ch) + ")"
    return str(ch)


_P2P = ("send ", "recv ")
_FIFO = "p2p on this backend completes in posting order per rank and group"


def _p2p_queues(waiting: list, cex: list) -> dict:
    """(rank, group) -> the waiting p2p ops of that rank on that group, in the order the counterexample
    posted them (its ``issued`` steps)."""
    posted = {s.get("actor"): k for k, s in enumerate(cex) if s.get("issued")}
    q: dict = {}
    for w in waiting:
        if str(w.get("op") or "").startswith(_P2P):
            q.setdefault((w["rank"], w.get("group")), []).append(w)
    for ws in q.values():
        ws.sort(key=lambda w: posted.get(w.get("actor"), -1))
    return q


def _queued(w: dict, queues: dict) -> str:
    """Why a p2p op waits although its matching op is posted: an earlier p2p op in its own queue, or in
    the peer's queue ahead of the matching op (nccl's per-rank, per-group order)."""
    mine = queues.get((w["rank"], w.get("group")), [])
    pos = next((i for i, o in enumerate(mine) if o is w), None)
    if pos is None:
        return "(matching peer)"
    if pos > 0:
        return f"its turn: blocked behind rank {w['rank']}'s earlier {mine[pos - 1]['op']} in the same queue ({_FIFO})"
    heads = [f"rank {r}: {ws[0]['op']}" for (r, g), ws in queues.items() if g == w.get("group") and r != w["rank"] and len(ws) > 1]
    if heads:
        return f"its matching op, posted but queued behind the peer's earlier op ({'; '.join(heads)}; {_FIFO})"
    return "(matching peer)"


def as_expected(expected: tuple | None, verdict: str) -> bool | None:
    """Whether ``verdict`` is one the spec documents (a variant's ``expected``, or the hardened protocol's
    ``hardened_expected``); None where nothing was decided (a bound, an interruption) or nothing is documented."""
    if expected is None or verdict in (BOUND_REACHED, INTERRUPTED):
        return None
    return verdict in expected


def expectation(variant: str, expected: tuple, verdict: str) -> str:
    """The line under a variant's verdict: whether the check found what the planted bug is documented to give."""
    doc = " or ".join(expected)
    ok = as_expected(expected, verdict)
    if ok is None:
        return f"documented: variant {variant} gives {doc}; this search stopped before it decided"
    if ok:
        return f"as documented: variant {variant} gives {doc}"
    return (f"not as documented: variant {variant} is documented to give {doc}, and this check gave {verdict} "
            f"(at these parameters, backend and bounds)")


def text(spec: str, variant: str | None, params: dict, backend: str, result, shortest_known: bool = False,
         expected: tuple | None = None) -> str:
    """``shortest_known``: the search ran without any reduction, so breadth-first order makes the
    counterexample a shortest one (the caller knows whether reductions applied).  ``expected``: the
    verdicts the spec documents for ``variant`` (a line under the verdict says whether this is one)."""
    st = result.stats
    lines = []
    ptxt = " ".join(f"{k}={v}" for k, v in params.items())
    lines.append(f"lockstep check {spec}{' --variant ' + variant if variant else ''}  {f'[{ptxt}] ' if ptxt else ''}"
                 f"backend={backend}")
    lines.append(f"verdict: {result.verdict}  {result.message}")
    if variant and expected is not None:
        lines.append(expectation(variant, expected, result.verdict))
    lines.append(f"explored {st.states:,} states, {st.transitions:,} transitions, depth {st.depth}, "
                 f"{st.seconds:.2f} s ({st.states_per_second:,.0f} states/s), peak RSS {st.peak_rss_mb:.0f} MB"
                 + (f"; {st.fail_fast_ends:,} fail-fast end states (crash beats hang)" if st.fail_fast_ends else ""))
    cex = result.counterexample
    if cex:
        kind = search_order(result, shortest_known)
        lines.append("")
        lines.append(f"counterexample ({len(cex)} step{'' if len(cex) == 1 else 's'}, {kind}):")
        rows = [("#", "rank", "actor/role", "transition", "choice", "op", "ids", "changed")]
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
            rank = s.get("rank")
            rows.append((f"{mark}{s['step']}", rank_runs(rank) if isinstance(rank, list) else _fmt(rank), who, tr, _choice(s.get("choice")), s.get("op") or "",
                         _fmt(s.get("ids")), _fmt(changed)))
        # rank lists (as runs: 0-15) and choices are never cut; wide free-text
        # columns are, with the full text in --json
        widths = [min(max(len(r[i]) for r in rows), w) for i, w in enumerate((6, 10_000, 14, 40, 10_000, 60, 40, 80))]
        if all(not r[4] for r in rows[1:]):  # no step chose anything: drop the empty column
            rows = [r[:4] + r[5:] for r in rows]
            widths = widths[:4] + widths[5:]
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
        queues = _p2p_queues(result.waiting, cex or [])
        same: dict = {}  # ranks that wait alike (a 16-rank mesh stranded in one broadcast), on one line
        for w in result.waiting:
            if "waits_on" in w:  # the pipeline spec's processes (source, stage i, sink) wait on queues
                who = ", ".join(f"{'stage ' if str(t).isdigit() else ''}{t} ({s})" for t, s in w["partner_status"].items())
                same.setdefault(f"{w['actor']} in {w['state']}: {w['op']}  -> waits for {who}", [])
                continue
            if w.get("op"):
                who = ", ".join(f"rank {r} ({s})" for r, s in w.get("partner_status", {}).items()) or _queued(w, queues)
                text = f"{w['role']} in {w['state']}: {w['op']}  -> waits for {who}"
            else:
                text = f"{w['role']} in {w['state']}: {w.get('condition', '')}"
            same.setdefault(text, []).append(w["rank"])
        for text, ranks in same.items():
            lines.append(f"  {ranks_text(ranks)} {text}" if ranks else f"  {text}")
    return "\n".join(lines)
