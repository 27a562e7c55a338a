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
_SKIP = {"ev", "rank", "i", "t"} | set(IDS)


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
        return {k: e[k] for k in IDS if k in e}

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
