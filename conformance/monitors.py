"""Trace-level property monitors: the checker's verdict classes, evaluated on what a run recorded.

Used to say which counterexample class a run is an instance of when the replay against the spec
variant cannot (the impl's unsafe build may place its bug a few ops from where the variant does):
- STALE_EMIT: rank0 emits a chunk whose cache_epoch is not the current one (``stale``/``current_epoch``);
- CALL_COUNT: an emitted chunk's observed generator calls differ from the plan;
- STRANDED: a rank's last comm op never completed, or failed by timeout, while a partner that never
  posted the matching op was still alive (exited later, or never exited);
- DEADLOCK: every rank that did not exit is blocked in a comm op whose partners are all blocked too.
"""
from __future__ import annotations

from ..tracefmt import schema as S


def _last_comm(tr: S.RankTrace):
    enter = None
    exit_ = None
    for e in tr.events:
        if e["ev"] == S.COMM_ENTER:
            enter, exit_ = e, None
        elif e["ev"] == S.COMM_EXIT and enter is not None and e["seq"] == enter["seq"] and e["op"] == enter["op"]:
            exit_ = e
    return enter, exit_


def _life(ex, enter) -> str:
    if ex is None:
        return "never exited"
    return f"alive until it exited {ex['how']} {ex['t'] - enter['t']:.1f}s later"


def _coll_count(tr: S.RankTrace, group: str) -> int:
    return sum(1 for e in tr.events if e["ev"] == S.COMM_ENTER and e["group"] == group and not e.get("p2p"))


def monitor(run: S.RunTrace) -> list[dict]:
    out = []
    for r, tr in sorted(run.ranks.items()):
        for e in tr.events:
            if e["ev"] == S.CHUNK_EMITTED:
                cur = e.get("current_epoch")
                if e.get("stale") or (isinstance(cur, int) and cur != e["cache_epoch"]):
                    out.append({"verdict": "STALE_EMIT", "rank": r, "line": e["i"] + 1,
                                "message": f"rank {r} emits chunk {e['chunk_index']} (call_id {e['call_id']}) from cache_epoch "
                                           f"{e['cache_epoch']} while the current epoch is {cur}"})
                obs, exp = e.get("observed_generator_calls"), e.get("expected_generator_calls")
                if isinstance(obs, int) and isinstance(exp, int) and obs != exp:
                    out.append({"verdict": "CALL_COUNT", "rank": r, "line": e["i"] + 1,
                                "message": f"rank {r} emits chunk {e['chunk_index']} with {obs} generator calls, planned {exp}"})
    groups = run.manifest["groups"]
    blocked = {}
    for r, tr in sorted(run.ranks.items()):
        enter, exit_ = _last_comm(tr)
        if enter is None:
            continue
        timed_out = exit_ is not None and not exit_["ok"] and "imed out" in str(exit_.get("error", ""))
        if exit_ is None or timed_out:
            blocked[r] = (enter, exit_)
    for r, (enter, exit_) in blocked.items():
        g = enter["group"]
        members = groups.get(g, [])
        if enter.get("p2p"):
            peer_local = enter.get("dst", enter.get("src", -1))
            partners = [members[peer_local]] if 0 <= peer_local < len(members) else []
            missing = partners  # the peer never posted the match (else the op would have completed)
        else:
            k = _coll_count(run.ranks[r], g)
            missing = [m for m in members if m != r and _coll_count(run.ranks[m], g) < k]
        alive = []
        for m in missing:
            ex = run.ranks[m].exit
            if ex is None or ex["t"] >= enter["t"]:
                alive.append((m, ex))
        if missing and alive and all(m not in blocked for m, _ in alive):
            who = ", ".join(f"rank {m} ({_life(ex, enter)})" for m, ex in alive)
            how = "timed out" if exit_ is not None else "never completed"
            out.append({"verdict": "STRANDED", "rank": r, "line": enter["i"] + 1,
                        "message": f"rank {r} is stranded in {enter['op']} {enter.get('purpose', '')} on {g} (seq {enter['seq']}): "
                                   f"it {how}, waiting on {who} that never posted the matching op"})
    live_blocked = [r for r in blocked]
    if len(live_blocked) >= 2 and not any(o["verdict"] == "STRANDED" for o in out):
        ranks_left = [r for r, tr in run.ranks.items() if tr.exit is None or tr.exit["how"] in ("timeout", "killed")]
        if set(ranks_left) <= set(live_blocked):
            out.append({"verdict": "DEADLOCK", "rank": live_blocked[0], "line": blocked[live_blocked[0]][0]["i"] + 1,
                        "message": "every rank that did not exit is blocked in a comm op: " + "; ".join(
                            f"rank {r} in {blocked[r][0]['op']} {blocked[r][0].get('purpose', '')} on {blocked[r][0]['group']}"
                            for r in live_blocked)})
    return out
