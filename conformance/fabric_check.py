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

from collections import deque

from ..tracefmt import schema as S

SIG_FIELDS = ("op", "src", "dtype", "shape", "reduce_op")


def _mm(kind: str, rank: int, line: int, field: str, message: str, **kw) -> dict:
    return {"kind": kind, "rank": rank, "line": line + 1, "field": field, "message": message, **kw}


class RankFacts:
    """What a pass over one rank's events found out by its end (the streamed checks need it there)."""

    __slots__ = ("rank", "exit", "truncated", "count", "pending", "path")

    def __init__(self, rank: int, path: str = ""):
        self.rank, self.exit, self.truncated, self.count, self.path = rank, None, False, 0, path
        self.pending: set = set()   # comm_enter indices without a comm_exit


def check(run: S.RunTrace) -> list[dict]:
    """Every c10d-level mismatch of an in-memory run (conform streams the files: conformance/stream.py
    runs the same checks over them)."""
    from .stream import MemSource, scan_fabric
    return scan_fabric(MemSource(run))


def _is_p2p(e: dict) -> bool:
    return bool(e.get("p2p")) or e["op"] in ("send", "recv", "isend", "irecv")


def pre_co(r: int, groups: dict, shared: dict):
    """Per rank, as its comm_enter events stream by (a coroutine: send them, then None): comm ops on an
    unknown group, with a peer outside it, or on a group the rank is not a member of."""
    out: list[dict] = []
    while True:
        e = yield
        if e is None:
            return out
        k = e["ev"]
        if k == S.COMM_ENTER:
            if _is_p2p(e):
                g = groups.get(e["group"])
                if g is None:
                    out.append(_mm("group", r, e["i"], "group", f"p2p on unknown group {e['group']!r}"))
                elif e["op"] in ("send", "isend"):
                    peer = e.get("dst", -1)
                    if not 0 <= peer < len(g):
                        out.append(_mm("peer", r, e["i"], "dst", f"dst={peer} is not a group-local rank of {e['group']}"))
                else:
                    peer = e.get("src", -1)
                    if not 0 <= peer < len(g):
                        out.append(_mm("peer", r, e["i"], "src", f"src={peer} is not a group-local rank of {e['group']}"))
            else:
                if e["group"] not in groups:
                    out.append(_mm("group", r, e["i"], "group", f"collective on unknown group {e['group']!r}"))
                elif r not in groups[e["group"]]:
                    out.append(_mm("group", r, e["i"], "group", f"rank {r} is not a member of {e['group']}"))
        # (a compiled seq range, ``seq_first`` on any other event, sets shared["compiled"]: stream.scan)


class _Op:
    """A comm op waiting to be matched, with the header record written after it."""
    __slots__ = ("e", "header")

    def __init__(self, e):
        self.e, self.header = e, None


class Matcher:
    """c10d matching over the ranks' events as they stream by, in any interleaving that keeps each
    rank's order (conform merges the rank files by timestamp): the k-th collective of a group is
    compared once every member has recorded it (with the header record after it), the k-th message of
    a (group, src, dst) pair once both sides have; what is matched is forgotten, so only the ops still
    waiting for a partner are held.  ``finish()`` compares what is left (ranks that ended early are
    compared on their prefix) and returns the mismatches in the order of a rank-by-rank pass."""

    def __init__(self, groups: dict, ranks):
        self.groups = groups
        self.last: dict[int, _Op | None] = {r: None for r in ranks}   # the rank's latest op, until its next
        self.coll: dict[str, dict[int, deque]] = {}
        self.ready: dict[str, int] = {}      # members with an op waiting, per group
        self.k: dict[str, int] = {}          # collectives matched per group
        self.broken: set = set()             # groups with a mismatch: c10d pairs nothing reliably after it
        self.count: dict[tuple, int] = {}    # (group, rank) -> collectives seen (seq check)
        self.seq_bad: dict[tuple, dict] = {}  # (group, rank) -> the first seq mismatch
        self.first: dict[str, tuple] = {}    # group -> the (rank, line) of its first collective
        self.sends: dict[tuple, deque] = {}
        self.recvs: dict[tuple, deque] = {}
        self.pk: dict[tuple, int] = {}       # messages paired per (group, src, dst)
        self.p2p_done: set = set()
        self.coll_out: list = []             # (sort key, mismatch)
        self.p2p_out: list = []

    def feed(self, r: int, e: dict) -> None:
        k = e["ev"]
        if k == S.COMM_ENTER:
            self._seal(r)
            op = _Op(e)
            groups = self.groups
            if _is_p2p(e):
                g = groups.get(e["group"])
                if g is None:
                    return
                if e["op"] in ("send", "isend"):
                    peer = e.get("dst", -1)
                    if not 0 <= peer < len(g):
                        return
                    key = (e["group"], r, g[peer])
                else:
                    peer = e.get("src", -1)
                    if not 0 <= peer < len(g):
                        return
                    key = (e["group"], g[peer], r)
                self.last[r] = (op, "p2p", key)
            else:
                g = e["group"]
                if g not in groups or r not in groups[g]:
                    self.last[r] = None
                    return
                n = self.count.get((g, r), 0) + 1
                self.count[(g, r)] = n
                if e["seq"] != n and (g, r) not in self.seq_bad:
                    self.seq_bad[(g, r)] = _mm("seq", r, e["i"], "seq", f"{e['op']} on {g} has seq {e['seq']}, expected {n} "
                                                                       f"(the {n}-th collective of rank {r} on {g})")
                if g not in self.first or (r, e["i"]) < self.first[g]:
                    self.first[g] = (r, e["i"])
                self.last[r] = (op, "coll", g)
        elif k in (S.HEADER_SENT, S.HEADER_RECV):
            cur = self.last.get(r)
            if cur is not None:
                cur[0].header = e

    def _seal(self, r: int) -> None:
        """The rank's previous op has its header record (or none): it joins its group's queue."""
        cur = self.last.get(r)
        if cur is None:
            return
        self.last[r] = None
        op, kind, key = cur
        if kind == "coll":
            if key in self.broken:
                return
            q = self.coll.setdefault(key, {}).setdefault(r, deque())
            q.append(op)
            if len(q) == 1:
                n = self.ready[key] = self.ready.get(key, 0) + 1
                if n == len(self.groups[key]):
                    self._match_coll(key, final=False)
        else:
            if key in self.p2p_done:
                return
            if op.e["op"] in ("send", "isend"):
                self.sends.setdefault(key, deque()).append(op)
            else:
                self.recvs.setdefault(key, deque()).append(op)
            self._match_p2p(key)

    def _match_coll(self, g: str, final: bool) -> None:
        members = self.groups[g]
        q = self.coll.get(g, {})
        while g not in self.broken:
            if final:
                if not any(q.get(r) for r in members):
                    return
            elif self.ready.get(g, 0) < len(members):
                return
            k = self.k.get(g, 0)
            self.k[g] = k + 1
            calls = {}
            for r in members:
                qr = q.get(r)
                if qr:
                    calls[r] = qr.popleft()
                    if not qr:
                        self.ready[g] -= 1
            ref_r = min(calls)
            ref = calls[ref_r].e
            bad = None
            for r, op in calls.items():
                e = op.e
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
                self.coll_out.append(((g, 1, k, 0), _mm("collective", r, e["i"], f, f"collective #{k + 1} on {g}: rank {r} "
                                                    f"{e['op']} {f}={b!r}, rank {ref_r} (line {ref['i'] + 1}) {ref['op']} {f}={a!r}",
                                                    group=g, index=k + 1)))
                self.broken.add(g)
                self.coll.pop(g, None)
                return
            if ref.get("purpose") == "header" and len(calls) > 1:
                hs = {r: op.header for r, op in calls.items()}
                root = ref.get("src")
                sender = members[root] if isinstance(root, int) and 0 <= root < len(members) else None
                hsend = hs.get(sender)
                if hsend is not None:
                    for j, (r, h) in enumerate(hs.items()):
                        if h is None or r == sender:
                            continue
                        diff = [f for f in ("action", "call_id", "chunk_index", "cache_epoch") if h.get(f) != hsend.get(f)]
                        if diff:
                            self.coll_out.append(((g, 1, k, 1 + j), _mm(
                                "header", r, h["i"], diff[0], f"header #{k + 1} on {g}: rank {r} received "
                                f"{diff[0]}={h.get(diff[0])!r}, rank {sender} sent {hsend.get(diff[0])!r} "
                                f"(line {hsend['i'] + 1})", group=g)))

    def _match_p2p(self, key: tuple) -> None:
        ss, rr = self.sends.get(key), self.recvs.get(key)
        g, s, d = key
        while ss and rr and key not in self.p2p_done:
            k = self.pk.get(key, 0)
            self.pk[key] = k + 1
            sa, rb = ss.popleft(), rr.popleft()
            a, b = sa.e, rb.e
            for f in ("tag", "dtype", "shape"):
                x, y = a.get(f), b.get(f)
                if f == "shape":
                    x, y = tuple(x or ()), tuple(y or ())
                if x != y:
                    self.p2p_out.append(((key, k), _mm("p2p", d, b["i"], f, f"message #{k + 1} {s}->{d} on {g}: recv {f}={y!r}, "
                                                                   f"send (rank {s} line {a['i'] + 1}) {f}={x!r}", group=g)))
                    self.p2p_done.add(key)
                    self.sends.pop(key, None)
                    self.recvs.pop(key, None)
                    return
            if a.get("purpose") == "header":
                ha, hb = sa.header, rb.header
                if ha is not None and hb is not None:
                    diff = [f for f in ("action", "call_id", "chunk_index", "cache_epoch") if ha.get(f) != hb.get(f)]
                    if diff:
                        self.p2p_out.append(((key, k), _mm("header", d, hb["i"], diff[0], f"header message #{k + 1} {s}->{d}: "
                                                       f"received {diff[0]}={hb.get(diff[0])!r}, sent {ha.get(diff[0])!r} "
                                                       f"(rank {s} line {ha['i'] + 1})")))

    def finish(self, compiled: bool) -> list[dict]:
        for r in list(self.last):
            self._seal(r)
        for g in list(self.coll):
            self._match_coll(g, final=True)
        out = []
        order = {g: n for n, g in enumerate(sorted(self.first, key=lambda g: self.first[g]))}
        items = []
        if not compiled:
            for (g, r), m in self.seq_bad.items():
                if g in order:
                    items.append(((order[g], 0, self.groups[g].index(r), 0), m))
        items += [((order.get(key[0], len(order)),) + key[1:], m) for key, m in self.coll_out]
        out += [m for _, m in sorted(items, key=lambda x: x[0])]
        out += [m for _, m in sorted(self.p2p_out, key=lambda x: x[0])]
        return out


def drains_co(r: int):
    """rank0's D_out is FIFO: each result_accepted / result_dropped names the oldest received result
    (result_recv) not yet drained, with the same call_id, chunk_index and cache_epoch.  A coroutine:
    send the rank's events, then None."""
    out: list[dict] = []
    q: deque = deque()
    while True:
        e = yield
        if e is None:
            return out
        if e["ev"] == S.RESULT_RECV:
            q.append(e)
        elif e["ev"] in (S.RESULT_ACCEPTED, S.RESULT_DROPPED):
            if not q:
                out.append(_mm("drain", r, e["i"], "ev", f"{e['ev']} drains a result no result_recv received"))
                continue
            got = q.popleft()
            for f in ("call_id", "chunk_index", "cache_epoch"):
                if f in e and f in got and e[f] != got[f]:
                    out.append(_mm("drain", r, e["i"], f, f"{e['ev']} carries {f}={e[f]}, the result it drains "
                                                          f"(line {got['i'] + 1}) carries {got[f]}"))


_COMMS_EVENTS = frozenset({S.HEADER_SENT, S.RESULT_RECV})


def well_formed_co(r: int, facts: RankFacts, role: str):
    """Per-rank ordering rules of the recorder: a blocking op's exit follows its enter before the next
    op of the thread; protocol events are written between ops; header/result events follow their op;
    generator calls are counted into phase_b_end; every accepted result is emitted.  A coroutine: send
    the rank's events, then None (``facts`` filled by then)."""
    out = []
    two_threads = role == "stage0"
    open_blocking: dict[tuple, dict] = {}
    open_any: dict[tuple, dict] = {}
    last_enter = None
    gen_calls = 0
    accepted = []
    need_header = None
    purpose_of: dict[tuple, list] = {}
    done_recv = got = sent = result_sent = 0
    while True:
        e = yield
        if e is None:
            break
        k = e["ev"]
        # the counts of result headers and result records (checked at the end)
        if k == S.COMM_ENTER:
            purpose_of.setdefault((e.get("op"), e.get("group"), e.get("seq")), []).append(e.get("purpose"))
            if e.get("purpose") == "result_header" and e["op"] in ("send", "isend"):
                sent += 1
        elif k == S.COMM_EXIT:
            pk = (e.get("op"), e.get("group"), e.get("seq"))
            if purpose_of.get(pk):
                if purpose_of[pk].pop(0) == "result_header" and e["op"] in ("recv", "irecv") and e["ok"]:
                    done_recv += 1
                if not purpose_of[pk]:
                    del purpose_of[pk]
        elif k == S.RESULT_RECV:
            got += 1
        elif k == S.RESULT_SENT:
            result_sent += 1
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
    clean = facts.exit is not None and facts.exit["how"] == "clean"
    if clean and open_any:
        o = next(iter(open_any.values()))
        out.append(_mm("order", r, o["i"], "ev", f"the rank exited clean but {o['op']} {o.get('purpose', '')} never exited"))
    if clean and two_threads and accepted:
        out.append(_mm("count", r, accepted[0]["i"], "ev", "a result_accepted was never emitted"))
    if facts.exit is None and not facts.truncated:
        out.append(_mm("order", r, facts.count - 1, "ev", "the rank's trace ends without rank_exit (and its last line "
                                                           "is intact): lines lost?"))
    if done_recv != got:
        out.append(_mm("count", r, facts.count - 1, "ev", f"{done_recv} result headers received but {got} result_recv events"))
    # every completed result header carries its result event
    if sent != result_sent:
        out.append(_mm("count", r, facts.count - 1, "ev", f"{sent} result headers sent but {result_sent} result_sent events"))
    return out


BEHAVIOURAL_EVENTS = frozenset({S.HEADER_SENT, S.HEADER_RECV, S.PREFLIGHT_OK, S.PREFLIGHT_FAIL, S.GENERATOR_CALL,
                                S.PHASE_B_END, S.RESULT_SENT, S.RESULT_RECV, S.RESULT_ACCEPTED, S.RESULT_DROPPED,
                                S.CHUNK_EMITTED, S.HARD_CUT})


class IdsState:
    """What the identifier check carries from rank to rank (one entry per chunk and per call_id)."""

    def __init__(self):
        self.out: list[dict] = []
        self.by_chunk: dict[int, tuple] = {}
        self.by_call: dict[int, tuple] = {}


def ids_co(r: int, st: IdsState):
    """A chunk_index is always carried with the same call_id and cache_epoch (and vice versa), across
    the ranks taken in order; a sender's header call_ids strictly increase.  A coroutine over rank r's
    events (the ranks one after the other, in order), then None."""
    out, by_chunk, by_call = st.out, st.by_chunk, st.by_call
    last_call: dict[str, int] = {}
    while True:
        e = yield
        if e is None:
            return
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
