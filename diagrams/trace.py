"""Recorded runs (trace schema v1, conformance/schema.py) as swimlanes.

A run's per-rank events are merged into one sequence of neutral steps (the same dict shape as a
checker counterexample step), ordered by the shared wall clock, then by rank and line:
- ``comm_enter`` is an issued op on its rank;
- the ``comm_exit`` events of one collective call (same group, same per-group ``seq``, every member
  of the group) become one completion bar across the members, placed at the last member's exit;
  a failed exit (``ok: false``) is an error step on its rank; p2p exits stay on their rank (schema v1
  records no peer, so no arrow is drawn for them);
- ``fault_injected`` is a fault, ``rank_exit`` other than clean an error, every other event a local
  step labelled with the event kind and its fields, carrying call_id/chunk_index/cache_epoch.
Ops entered and never exited are the blocked ops at the end, waiting on the members of their group
that never entered the same ``seq``.
"""
from __future__ import annotations

from typing import Any

from .swimlane import Swimlane

COLLECTIVE_OPS = frozenset({"broadcast", "all_reduce", "all_gather", "barrier", "monitored_barrier"})
IDS = ("call_id", "chunk_index", "cache_epoch")
_SKIP = {"ev", "rank", "i", "t", "ids"} | set(IDS)


def load(trace_dir):
    """The schema's loader; raises ImportError when conformance/schema.py is not there."""
    from ..conformance.schema import load_run

    return load_run(trace_dir)


def _fields(e: dict) -> str:
    return " ".join(f"{k}={e[k]}" for k in sorted(e) if k not in _SKIP and e[k] not in (None, ""))


def run_to_steps(run) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[int, int], int]]:
    """(steps, waiting, index of each (rank, line) event in steps)."""
    m = run.manifest
    groups = {g: list(r) for g, r in m.get("groups", {}).items()}
    roles = {str(k): v for k, v in (m.get("roles") or {}).items()}
    events = sorted((e for rt in run.ranks.values() for e in rt.events), key=lambda e: (e["t"], e["rank"], e["i"]))
    exits: dict[tuple[str, int], list[dict]] = {}
    entered: dict[tuple[int, str, int], dict] = {}
    for e in events:
        if e["ev"] == "comm_exit" and e.get("ok") and e["op"] in COLLECTIVE_OPS:
            exits.setdefault((e["group"], e["seq"]), []).append(e)
    steps: list[dict[str, Any]] = []
    where: dict[tuple[int, int], int] = {}
    done_bars: set[tuple[str, int]] = set()
    open_ops: dict[tuple[int, str, int], dict] = {}

    def role(r):
        return roles.get(str(r))

    def ids(e):
        out = {k: e[k] for k in IDS if k in e}
        lst = e.get("ids")  # comm events: [call_id, chunk_index, cache_epoch] of the message worked on
        if not out and isinstance(lst, list) and len(lst) == len(IDS) and any(isinstance(x, int) and x >= 0 for x in lst):
            out = dict(zip(IDS, lst))
        return out

    for e in events:
        r, ev = e["rank"], e["ev"]
        base = {"rank": r, "role": role(r), "actor": f"rank{r}", "group": e.get("group"), "ids": ids(e),
                "trace": f"rank{r}.jsonl:{e['i'] + 1}"}
        if ev == "comm_enter":
            step = dict(base, transition=e.get("purpose") or "comm", op=f"{e['op']} group={e['group']} seq={e['seq']}",
                        issued=True)
            open_ops[(r, e["group"], e["seq"])] = e
            entered[(r, e["group"], e["seq"])] = e
        elif ev == "comm_exit":
            key = (e["group"], e["seq"])
            open_ops.pop((r, e["group"], e["seq"]), None)
            members = groups.get(e["group"], [])
            got = exits.get(key, [])
            if e.get("ok") and e["op"] in COLLECTIVE_OPS and members and len({x["rank"] for x in got}) == len(members):
                if e is not got[-1]:
                    where[(r, e["i"])] = -1  # folded into the bar drawn at the last member's exit
                    continue
                done_bars.add(key)
                step = {"rank": sorted({x["rank"] for x in got}), "role": "fabric", "actor": None,
                        "transition": f"{e['op']} completes", "op": f"{e['op']} group={e['group']} seq={e['seq']}",
                        "group": e["group"], "ids": {}, "completes": {f"rank{x['rank']}": e["op"] for x in got},
                        "trace": ", ".join(f"rank{x['rank']}.jsonl:{x['i'] + 1}" for x in got)}
                for x in got:
                    where[(x["rank"], x["i"])] = len(steps)
            elif e.get("ok"):
                step = dict(base, transition=f"{e['op']} completes", op=f"{e['op']} group={e['group']} seq={e['seq']}",
                            kind="local", completes={f"rank{r}": e["op"]})
            else:
                step = dict(base, transition=f"{e['op']} fails: {e.get('error', '')}".strip(),
                            op=f"{e['op']} group={e['group']} seq={e['seq']}", kind="error")
        elif ev == "fault_injected":
            step = dict(base, transition="injected fault", op=_fields(e), fault=e.get("fault"))
        elif ev == "rank_exit":
            how = e.get("how")
            step = dict(base, transition=f"exit ({how})", op=e.get("message") or None, dst=how, exits=True,
                        kind="local" if how == "clean" else "error")
        else:
            step = dict(base, transition=ev, op=_fields(e) or None)
            if ev == "header_sent" and e.get("action") == "INFER":
                step["commit"] = True
        step["step"] = len(steps) + 1
        if (r, e["i"]) not in where:
            where[(r, e["i"])] = len(steps)
        steps.append(step)
    for s in steps:
        if s.get("kind") == "local" and s.get("completes"):
            s["issued"] = False

    exit_how = {rt.rank: (rt.exit or {}).get("how") for rt in run.ranks.values()}
    waiting = []
    for (r, g, seq), e in sorted(open_ops.items()):
        members = groups.get(g, [])
        missing = [x for x in members if x != r and (x, g, seq) not in entered]
        status = {str(x): (f"exited ({exit_how[x]})" if exit_how.get(x) else "no exit recorded") for x in missing}
        waiting.append({"rank": r, "role": role(r), "actor": f"rank{r}", "state": e.get("purpose") or "comm",
                        "op": f"{e['op']} group={g} seq={seq}", "group": g, "waits_for": missing, "partner_status": status})
    return steps, waiting, where


def trace_swimlane(run, title: str, highlight: tuple[int, int, str] | None = None) -> Swimlane:
    """``highlight``: (rank, line index i, note) of the first event conformance cannot explain."""
    steps, waiting, where = run_to_steps(run)
    hl = None
    if highlight is not None:
        r, i, note = highlight
        k = where.get((r, i))
        if k is None:  # an event the swimlane does not draw: mark the rank's last drawn event before it
            k = max((v for (rr, ii), v in where.items() if rr == r and ii <= i), default=None)
        if k is not None and k >= 0:
            hl = {"index": k, "note": f"rank {r} event {i}: {note}"}
    ws = run.manifest.get("world_size", len(run.ranks))
    return Swimlane(steps=steps, title=title, waiting=waiting, highlight=hl, lanes=list(range(ws)),
                    verdict="TRACE", message=f"{ws} ranks, {sum(len(rt.events) for rt in run.ranks.values())} events, "
                                             f"backend {run.manifest.get('backend')}, topology {run.manifest.get('topology')}")


def first_nonconforming(run):
    """(rank, i, note) of the first event the conformance checker rejects, or None (conforms, or no
    checker available: the second element of the pair says which)."""
    try:
        from ..conformance import check as conform_check  # type: ignore[attr-defined]
    except ImportError:
        return None, "the conformance checker (lockstep.conformance.check) is not available yet: no event highlighted"
    fn = getattr(conform_check, "first_unexplained", None)
    if fn is None:
        return None, "lockstep.conformance.check has no first_unexplained(run): no event highlighted"
    try:
        hit = fn(run)
    except Exception as e:  # noqa: BLE001 - a trace conformance cannot check: draw it without a highlight
        return None, f"the conformance checker could not check this trace ({e}): no event highlighted"
    if hit is None:
        return None, "conformance accepts this trace"
    return (hit["rank"], hit["i"], hit.get("message", "not explained by the spec")), "conformance rejects this trace"


# -- long runs: fold uneventful stretches -------------------------------------------------------------
FOLD_MIN_STEPS = 60   # shorter runs are drawn in full
FOLD_MIN_RUN = 12     # a stretch is folded only when at least this long
CONTEXT = 4           # steps kept drawn either side of an eventful step
DIVERGENCE_CONTEXT = 12


def eventful(s: dict) -> bool:
    from .swimlane import kind_of

    return (kind_of(s) in ("fault", "error", "mismatch", "note") or bool(s.get("commit")) or bool(s.get("exits"))
            or bool(s.get("violation")))


def fold_plan(steps: list[dict], highlight: int | None = None, keep: set[int] | None = None) -> list[tuple[int, int, str]]:
    """(first, last, label) stretches of uneventful steps to draw as one band each: long runs only,
    never within a few steps of a fault, an error, a commitment point, an exit or the first
    divergence (which keeps a wider margin, so the chunks around it stay expanded)."""
    n = len(steps)
    if n < FOLD_MIN_STEPS:
        return []
    shown = [False] * n
    marks = [i for i, s in enumerate(steps) if eventful(s)] + sorted(keep or ())
    for i in marks:
        for k in range(max(0, i - CONTEXT), min(n, i + CONTEXT + 1)):
            shown[k] = True
    if highlight is not None and 0 <= highlight < n:
        for k in range(max(0, highlight - DIVERGENCE_CONTEXT), min(n, highlight + DIVERGENCE_CONTEXT + 1)):
            shown[k] = True
        chunk = (steps[highlight].get("ids") or {}).get("chunk_index")
        if chunk not in (None, -1):  # the chunk the divergence is in stays expanded
            for k, s in enumerate(steps):
                if (s.get("ids") or {}).get("chunk_index") == chunk:
                    shown[k] = True
    for k in list(range(min(3, n))) + list(range(max(0, n - 3), n)):
        shown[k] = True
    out, i = [], 0
    while i < n:
        if shown[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and not shown[j + 1]:
            j += 1
        if j - i + 1 >= FOLD_MIN_RUN:
            out.append((i, j, fold_label(steps[i:j + 1])))
        i = j + 1
    return out


def fold_label(part: list[dict]) -> str:
    from collections import Counter

    names = Counter(str(s.get("transition")) for s in part)
    chunks = sorted({(s.get("ids") or {}).get("chunk_index") for s in part} - {None, -1})
    common = ", ".join(f"{t} ×{c}" for t, c in names.most_common(4))
    where = f" (chunk{'s' if len(chunks) > 1 else ''} {', '.join(map(str, chunks))})" if chunks else ""
    return f"{len(part)} uneventful steps{where}: {common}{', …' if len(names) > 4 else ''}"


# -- the page of a recorded run --------------------------------------------------------------------------
def _unsafe(run) -> tuple[str, str, tuple]:
    """(switch, spec variant, its documented verdicts) of an --unsafe run, or ('', '', ())."""
    m = run.manifest
    switch = m.get("unsafe") or (m.get("config") or {}).get("unsafe") or ""
    if not switch:
        return "", "", ()
    try:
        from ..conformance.mapping import UNSAFE_VARIANT
        from ..spec.registry import load as load_spec

        variant = UNSAFE_VARIANT.get(switch, "")
        spec = str(m.get("topology") or "")
        info = load_spec(spec)
        return switch, variant, tuple(info.variants[variant].expected) if variant in info.variants else ()
    except Exception:  # noqa: BLE001 - an unknown topology or variant: say what is known
        return switch, "", ()


def verdict_text(run, hit, why: str) -> tuple[str, str]:
    """(one line for the terminal, its class: ok | expected | bad | info) for a recorded run."""
    switch, variant, expected = _unsafe(run)
    if hit is None:
        return why, ("ok" if why == "conformance accepts this trace" else "info")
    r, i, msg = hit
    ev = run.ranks[r].events[i]["ev"] if r in run.ranks and 0 <= i < len(run.ranks[r].events) else "?"
    line = f"conformance rejects this trace: the first event the hardened spec does not explain is rank {r} line {i + 1} ({ev}): {msg}"
    if switch:
        doc = f", documented verdict {' or '.join(expected)}" if expected else ""
        line += (f". This run was recorded with --unsafe {switch}, which removes a guard (spec variant {variant or '?'}{doc}):"
                 " the hardened spec rejecting it is the expected outcome of an unsafe run")
        return line, "expected"
    return line, "bad"


def render_trace(run, name: str) -> tuple[dict[str, bytes], str]:
    """A recorded run as files ({relative path: bytes}: index.html, swimlane.svg, waitfor.svg when
    something is left blocked) and the one-line verdict for the terminal."""
    from . import report as R
    from . import waitfor as WF
    from .dot import run_dot, source_of
    from .swimlane import render as render_swimlane

    hit, why = first_nonconforming(run)
    line, cls = verdict_text(run, hit, why)
    sw = trace_swimlane(run, f"recorded run {name}", hit)
    hl = sw.highlight["index"] if sw.highlight else None
    keep = {k for k, s in enumerate(sw.steps) if s.get("issued") and any(
        w.get("op") == s.get("op") and w.get("rank") == s.get("rank") for w in sw.waiting)}
    sw.folds = fold_plan(sw.steps, hl, keep)
    exits = {rt.rank: (rt.exit or {}).get("how") for rt in run.ranks.values()}
    sw.lane_status = {r: ("finished (clean exit)" if how == "clean" else f"exited ({how})" if how else "no exit recorded")
                      for r, how in exits.items()}
    files: dict[str, bytes] = {}
    wf = WF.from_trace(sw.waiting) if sw.waiting else None
    sw.waitfor = wf
    svg = render_swimlane(sw)
    files["swimlane.svg"] = svg.encode()
    body = [R.h(1, f"lockstep render — recorded run {name}"), R.p(sw.message, "small")]
    box = {"ok": "ok", "expected": "expected", "bad": "bad", "info": "info"}[cls]
    links = []
    if hl is not None:
        links.append(R.link("#divergence", f"→ jump to the first non-conforming event (step {sw.steps[hl].get('step')})"))
    errs = [k for k, s in enumerate(sw.steps) if s.get("kind") == "error" or s.get("fault") or k == hl]
    if errs:
        what = "the error or fault" if len(errs) == 1 else f"the {len(errs)} errors and faults"
        links.append(R.link("#errors", f"→ {what} in full"))
    if wf is not None:
        links.append(R.link("#waitfor", "→ who waits on whom at the end"))
    body.append(f'<div class="summary {box}"><p>{R.escape(line)}</p><p>{" · ".join(links)}</p></div>')
    if sw.folds:
        body.append(R.p(f"{len(sw.steps)} steps; {sum(b - a + 1 for a, b, _ in sw.folds)} uneventful steps are folded into "
                        f"{len(sw.folds)} grey band(s) in the swimlane (every step is in the table at the end). Hover a step "
                        "for everything it recorded.", "small"))
    body.append(R.inline_svg(svg))
    if errs:
        body.append(R.h(2, "Errors, faults and the first divergence, in full", "errors"))
        rows = [[R.link(f"#step-{sw.steps[k].get('step')}", str(sw.steps[k].get("step"))), sw.steps[k].get("rank"),
                 sw.steps[k].get("trace", ""), sw.steps[k].get("transition"),
                 (sw.steps[k].get("op") or "") + (f" — first non-conforming: {sw.highlight.get('note')}" if k == hl else "")]
                for k in errs]
        body.append(R.table(["step", "rank", "where", "what", "detail"], rows, mono_cols=(2, 4), raw_cols=(0,)))
    if wf is not None:
        src = source_of(WF.figure(wf, f"recorded run {name}: ops entered and never exited"))
        files["waitfor.gv"] = src.encode()
        files["waitfor.svg"] = run_dot(src, "svg")
        body += [R.h(2, "Who waits on whom at the end", "waitfor"), R.image("waitfor.svg", "wait-for graph"),
                 R.waiting_table(sw.waiting)]
    body += [R.h(2, "Every step", "steps"), R.steps_table(sw.steps, highlight=hl)]
    files["index.html"] = R.page(f"lockstep render — {name}", body)
    return files, line
