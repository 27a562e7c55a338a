"""c10d matching of the raw comm ops of a run, spec-independent (the fabric's semantics applied to
what the ranks recorded, including impl-only ops the abstraction map skips):

- collectives: per group, every member's k-th collective has the same op, group-local root, dtype,
  shape and reduce op, and ``seq`` k (compiled ranges ``seq_first..seq_last`` are accounted for);
  a rank whose trace ends early (crash, kill, truncation) is compared on its prefix;
- p2p: per (group, src, dst), sends and receives pair in FIFO order with the same tag, dtype, shape;
- headers: the IDs and action a receiver recorded equal the sender's for the matched op;
- identifiers: across all ranks, a chunk_index is always carried with the same call_id and
  cache_epoch; a sender's header call_ids strictly increase.
Returns a list of mismatches, each naming rank, file line and field.
"""
from __future__ import annotations

from ..tracefmt import schema as S

SIG_FIELDS = ("op", "src", "dtype", "shape", "reduce_op")


def _mm(kind: str, rank: int, line: int, field: str, message: str, **kw) -> dict:
    return {"kind": kind, "rank": rank, "line": line + 1, "field": field, "message": message, **kw}


def check(run: S.RunTrace) -> list[dict]:
    out: list[dict] = []
    groups = run.manifest["groups"]
    coll: dict[str, dict[int, list[dict]]] = {}
    sends: dict[tuple, list[dict]] = {}
    recvs: dict[tuple, list[dict]] = {}
    header_ev: dict[tuple, dict] = {}   # (rank, comm line) -> the header event right after it
    compiled = False
    for r, tr in run.ranks.items():
        evs = tr.events
        last_comm = None
        for e in evs:
            k = e["ev"]
            if k == S.COMM_ENTER:
                last_comm = e
                if e.get("p2p") or e["op"] in ("send", "recv", "isend", "irecv"):
                    g = groups.get(e["group"])
                    if g is None:
                        out.append(_mm("group", r, e["i"], "group", f"p2p on unknown group {e['group']!r}"))
                        continue
                    me = r
                    if e["op"] in ("send", "isend"):
                        peer = e.get("dst", -1)
                        if not 0 <= peer < len(g):
                            out.append(_mm("peer", r, e["i"], "dst", f"dst={peer} is not a group-local rank of {e['group']}"))
                            continue
                        sends.setdefault((e["group"], me, g[peer]), []).append(e)
                    else:
                        peer = e.get("src", -1)
                        if not 0 <= peer < len(g):
                            out.append(_mm("peer", r, e["i"], "src", f"src={peer} is not a group-local rank of {e['group']}"))
                            continue
                        recvs.setdefault((e["group"], g[peer], me), []).append(e)
                else:
                    if e["group"] not in groups:
                        out.append(_mm("group", r, e["i"], "group", f"collective on unknown group {e['group']!r}"))
                        continue
                    if r not in groups[e["group"]]:
                        out.append(_mm("group", r, e["i"], "group", f"rank {r} is not a member of {e['group']}"))
                        continue
                    coll.setdefault(e["group"], {}).setdefault(r, []).append(e)
            elif k in (S.HEADER_SENT, S.HEADER_RECV) and last_comm is not None:
                header_ev[(r, last_comm["i"])] = e
            elif "seq_first" in e:
                compiled = True
    # collectives
    for g, per_rank in coll.items():
        members = groups[g]
        seqs = {r: per_rank.get(r, []) for r in members}
        n = max((len(v) for v in seqs.values()), default=0)
        for r, lst in seqs.items():
            if compiled:
                break
            for k, e in enumerate(lst):
                if e["seq"] != k + 1:
                    out.append(_mm("seq", r, e["i"], "seq", f"{e['op']} on {g} has seq {e['seq']}, expected {k + 1} "
                                                            f"(the {k + 1}-th collective of rank {r} on {g})"))
                    break
        for k in range(n):
            calls = {r: lst[k] for r, lst in seqs.items() if k < len(lst)}
            ref_r = min(calls)
            ref = calls[ref_r]
            bad = None
            for r, e in calls.items():
                for f in SIG_FIELDS:
                    a, b = ref.get(f), e.get(f)
                    if f == "src" and ref["op"] != "broadcast":
                        continue
                    if f == "shape":
                        a, b = tuple(a or ()), tuple(b or ())
                    if a != b:
                        bad = (r, e, f, a, b)
                        break
                if bad:
                    break
            if bad:
                r, e, f, a, b = bad
                out.append(_mm("collective", r, e["i"], f, f"collective #{k + 1} on {g}: rank {r} {e['op']} {f}={b!r}, rank "
                                                           f"{ref_r} (line {ref['i'] + 1}) {ref['op']} {f}={a!r}",
                               group=g, index=k + 1))
                break  # c10d pairs nothing reliably after the first mismatch on a group
            if ref.get("purpose") == "header" and len(calls) > 1:
                hs = {r: header_ev.get((r, e["i"])) for r, e in calls.items()}
                root = ref.get("src")
                sender = members[root] if isinstance(root, int) and 0 <= root < len(members) else None
                hsend = hs.get(sender)
                if hsend is not None:
                    for r, h in hs.items():
                        if h is None or r == sender:
                            continue
                        diff = [f for f in ("action", "call_id", "chunk_index", "cache_epoch") if h.get(f) != hsend.get(f)]
                        if diff:
                            out.append(_mm("header", r, h["i"], diff[0], f"header #{k + 1} on {g}: rank {r} received "
                                           f"{diff[0]}={h.get(diff[0])!r}, rank {sender} sent {hsend.get(diff[0])!r} "
                                           f"(line {hsend['i'] + 1})", group=g))
    # p2p
    for key in sorted(set(sends) | set(recvs)):
        g, s, d = key
        ss, rr = sends.get(key, []), recvs.get(key, [])
        for k in range(min(len(ss), len(rr))):
            a, b = ss[k], rr[k]
            for f in ("tag", "dtype", "shape"):
                x, y = a.get(f), b.get(f)
                if f == "shape":
                    x, y = tuple(x or ()), tuple(y or ())
                if x != y:
                    out.append(_mm("p2p", d, b["i"], f, f"message #{k + 1} {s}->{d} on {g}: recv {f}={y!r}, send (rank {s} line "
                                                       f"{a['i'] + 1}) {f}={x!r}", group=g))
                    break
            else:
                if a.get("purpose") == "header":
                    ha, hb = header_ev.get((s, a["i"])), header_ev.get((d, b["i"]))
                    if ha is not None and hb is not None:
                        diff = [f for f in ("action", "call_id", "chunk_index", "cache_epoch") if ha.get(f) != hb.get(f)]
                        if diff:
                            out.append(_mm("header", d, hb["i"], diff[0], f"header message #{k + 1} {s}->{d}: received "
                                           f"{diff[0]}={hb.get(diff[0])!r}, sent {ha.get(diff[0])!r} (rank {s} line {ha['i'] + 1})"))
                continue
            break
    out.extend(_ids(run))
    for r, tr in sorted(run.ranks.items()):
        out.extend(_well_formed(r, tr, run.manifest["roles"].get(str(r), "")))
        out.extend(_drains(r, tr))
    return out


def _drains(r: int, tr) -> list[dict]:
    """rank0's D_out is FIFO: each result_accepted / result_dropped names the oldest received result
    (result_recv) not yet drained, with the same call_id, chunk_index and cache_epoch."""
    out: list[dict] = []
    q: list[dict] = []
    for e in tr.events:
        if e["ev"] == S.RESULT_RECV:
            q.append(e)
        elif e["ev"] in (S.RESULT_ACCEPTED, S.RESULT_DROPPED):
            if not q:
                out.append(_mm("drain", r, e["i"], "ev", f"{e['ev']} drains a result no result_recv received"))
                continue
            got = q.pop(0)
            for f in ("call_id", "chunk_index", "cache_epoch"):
                if f in e and f in got and e[f] != got[f]:
                    out.append(_mm("drain", r, e["i"], f, f"{e['ev']} carries {f}={e[f]}, the result it drains "
                                                          f"(line {got['i'] + 1}) carries {got[f]}"))
    return out


_COMMS_EVENTS = frozenset({S.HEADER_SENT, S.RESULT_RECV})


def _well_formed(r: int, tr: S.RankTrace, role: str) -> list[dict]:
    """Per-rank ordering rules of the recorder: a blocking op's exit follows its enter before the next
    op of the thread; protocol events are written between ops; header/result events follow their op;
    generator calls are counted into phase_b_end; every accepted result is emitted."""
    out = []
    two_threads = role == "stage0"
    open_blocking: dict[tuple, dict] = {}
    open_any: dict[tuple, dict] = {}
    last_enter = None
    gen_calls = 0
    accepted = []
    need_header = None
    clean = tr.exit is not None and tr.exit["how"] == "clean"
    for e in tr.events:
        k = e["ev"]
        if k == S.COMM_ENTER:
            key = (e["op"], e["group"], e["seq"])
            blocking = e["op"] not in ("isend", "irecv")
            if need_header is not None:
                out.append(_mm("order", r, need_header["i"], "ev", f"header op {need_header['op']} has no header_sent/"
                                                                  f"header_recv record before the next op"))
                return out
            if blocking and open_blocking:
                o = next(iter(open_blocking.values()))
                out.append(_mm("order", r, e["i"], "ev", f"{e['op']} {e.get('purpose', '')} entered while {o['op']} "
                                                        f"{o.get('purpose', '')} (line {o['i'] + 1}) has not exited"))
                return out
            open_any[key] = e
            if e.get("purpose") == "header":
                need_header = e
            if blocking:
                open_blocking[key] = e
            last_enter = e
        elif k == S.COMM_EXIT:
            key = (e["op"], e["group"], e["seq"])
            if key not in open_any:
                out.append(_mm("order", r, e["i"], "seq", f"comm_exit of {e['op']} seq {e['seq']} on {e['group']} without "
                                                         f"a preceding comm_enter"))
                return out
            del open_any[key]
            open_blocking.pop(key, None)
            if not e["ok"] and need_header is not None and need_header["seq"] == e["seq"]:
                need_header = None  # a failed header op has no header record
        elif k in BEHAVIOURAL_EVENTS:
            if open_blocking and (not two_threads or k in _COMMS_EVENTS):
                o = next(iter(open_blocking.values()))
                out.append(_mm("order", r, e["i"], "ev", f"{k} written while {o['op']} {o.get('purpose', '')} (line "
                                                        f"{o['i'] + 1}) is still in flight"))
                return out
            if k in (S.HEADER_SENT, S.HEADER_RECV):
                if last_enter is None or last_enter.get("purpose") != "header" or need_header is None:
                    out.append(_mm("order", r, e["i"], "ev", f"{k} does not follow a header op"))
                    return out
                need_header = None
            if k == S.GENERATOR_CALL:
                if e.get("call_index") != gen_calls:
                    out.append(_mm("count", r, e["i"], "call_index", f"generator call_index {e.get('call_index')}, "
                                                                    f"expected {gen_calls}"))
                    return out
                gen_calls += 1
            elif k == S.PHASE_B_END:
                if e["observed"] != gen_calls:
                    out.append(_mm("count", r, e["i"], "observed", f"phase_b_end observed={e['observed']} but {gen_calls} "
                                                                  f"generator_call events were recorded"))
                    return out
                gen_calls = 0
            elif k == S.RESULT_ACCEPTED:
                accepted.append(e)
            elif k == S.CHUNK_EMITTED and two_threads:
                if not accepted or accepted[0]["chunk_index"] != e["chunk_index"]:
                    out.append(_mm("count", r, e["i"], "chunk_index", f"chunk_emitted {e['chunk_index']} without a "
                                                                     f"matching result_accepted"))
                    return out
                accepted.pop(0)
    if clean and open_any:
        o = next(iter(open_any.values()))
        out.append(_mm("order", r, o["i"], "ev", f"the rank exited clean but {o['op']} {o.get('purpose', '')} never exited"))
    if clean and two_threads and accepted:
        out.append(_mm("count", r, accepted[0]["i"], "ev", "a result_accepted was never emitted"))
    if tr.exit is None and not tr.truncated:
        out.append(_mm("order", r, len(tr.events) - 1, "ev", "the rank's trace ends without rank_exit (and its last line "
                                                             "is intact): lines lost?"))
    purpose_of: dict[tuple, list] = {}
    done_recv = 0
    for e in tr.events:
        key = (e.get("op"), e.get("group"), e.get("seq"))
        if e["ev"] == S.COMM_ENTER:
            purpose_of.setdefault(key, []).append(e.get("purpose"))
        elif e["ev"] == S.COMM_EXIT and purpose_of.get(key):
            p = purpose_of[key].pop(0)
            if p == "result_header" and e["op"] in ("recv", "irecv") and e["ok"]:
                done_recv += 1
    got = sum(1 for e in tr.events if e["ev"] == S.RESULT_RECV)
    if done_recv != got:
        out.append(_mm("count", r, len(tr.events) - 1, "ev", f"{done_recv} result headers received but {got} result_recv events"))
    # every completed result header carries its result event
    sent = sum(1 for e in tr.events if e["ev"] == S.COMM_ENTER and e.get("purpose") == "result_header" and e["op"] in ("send", "isend"))
    if sent != sum(1 for e in tr.events if e["ev"] == S.RESULT_SENT):
        out.append(_mm("count", r, len(tr.events) - 1, "ev", f"{sent} result headers sent but "
                                                             f"{sum(1 for e in tr.events if e['ev'] == S.RESULT_SENT)} result_sent events"))
    return out


BEHAVIOURAL_EVENTS = frozenset({S.HEADER_SENT, S.HEADER_RECV, S.PREFLIGHT_OK, S.PREFLIGHT_FAIL, S.GENERATOR_CALL,
                                S.PHASE_B_END, S.RESULT_SENT, S.RESULT_RECV, S.RESULT_ACCEPTED, S.RESULT_DROPPED,
                                S.CHUNK_EMITTED, S.HARD_CUT})


def _ids(run: S.RunTrace) -> list[dict]:
    out = []
    by_chunk: dict[int, tuple] = {}
    by_call: dict[int, tuple] = {}
    for r, tr in sorted(run.ranks.items()):
        last_call: dict[str, int] = {}
        for e in tr.events:
            k = e["ev"]
            if k == S.HEADER_SENT:
                g = e["group"]
                if g in last_call and e["call_id"] <= last_call[g]:
                    out.append(_mm("ids", r, e["i"], "call_id", f"header call_id {e['call_id']} on {g} does not increase "
                                                              f"(previous {last_call[g]})"))
                last_call[g] = e["call_id"]
            if k in (S.RESULT_DROPPED, S.CHUNK_DROPPED) or "chunk_index" not in e or "call_id" not in e:
                continue
            if k in (S.HEADER_SENT, S.HEADER_RECV) and e.get("action") != "INFER":
                continue
            c = e["chunk_index"]
            if not isinstance(c, int) or c < 0:
                continue
            val = (e["call_id"], e.get("cache_epoch"))
            back = by_call.get(e["call_id"]) if k != S.PREFLIGHT_FAIL else (c, r, e["i"])  # a dropped chunk's call_id is reused
            if back is None:
                by_call[e["call_id"]] = (c, r, e["i"])
            elif back[0] != c:
                out.append(_mm("ids", r, e["i"], "chunk_index", f"{k} carries call_id {e['call_id']} with chunk_index {c}, "
                                                                f"but rank {back[1]} line {back[2] + 1} carries it with {back[0]}"))
            seen = by_chunk.get(c)
            if seen is None:
                by_chunk[c] = (val, r, e["i"])
            elif seen[0] != val:
                f = "call_id" if seen[0][0] != val[0] else "cache_epoch"
                out.append(_mm("ids", r, e["i"], f, f"{k} carries chunk_index {c} with (call_id, cache_epoch)={val}, but rank "
                                                    f"{seen[1]} line {seen[2] + 1} carries it with {seen[0]}"))
    return out
