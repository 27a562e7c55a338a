"""Conformance over streams of the rank files: memory that does not grow with the trace.

A run is read twice, each time as one stream per rank holding a bounded window of events:
1. ``scan``, the ranks one after the other: the schema and loader checks (the same errors, in the
   same order, as loading every file at once), the per-rank and rank-by-rank run-level checks
   (recorder ordering, D_out drains, identifiers, payloads, chunks, message ids) as running state,
   and the abstraction map run once to count what it makes per actor (the spec's parameters and the
   replay's budget need those counts before the replay starts; the observables are not kept);
2. the replay, which pulls each actor's observables from its rank's map (``LazyObs``) as the search
   reaches them, and lets go of those its window has left behind (replay.WINDOW);
3. c10d matching (fabric_check.Matcher) is fed every event the replay's maps read, then
   (``finish_fabric``) the rest of the files merged by timestamp: a collective is compared, and
   forgotten, once every member has reached it, so only the ops still waiting for a partner are held.

The same code runs over an in-memory run (``MemSource``: its event lists) and over a run directory
(``DirSource``: the files), so both give the same verdicts and messages.
"""
from __future__ import annotations

import heapq
from pathlib import Path

from ..tracefmt import schema as S
from . import fabric_check, loader, mapping, payload

# observables a thread's map must have made past one before it is handed to the replay: the map still
# folds parts into the observable it made last (a message's tensors, a call's collectives), never this far back
LAG = 64


class Source:
    """A run's manifest and a way to read each rank's events in order, as often as needed."""
    path: str
    manifest: dict
    summary: dict

    @property
    def world(self) -> int:
        return self.manifest["world_size"]

    def ranks(self) -> list[int]:
        return list(range(self.world))

    def events(self, r: int, validate: bool = False, info: S.StreamInfo | None = None):
        raise NotImplementedError

    def rank_path(self, r: int) -> str:
        return str(Path(self.path) / S.rank_file_name(r))


class MemSource(Source):
    """An in-memory run (loaded, or built by a test): its events are taken as they are."""

    def __init__(self, run: S.RunTrace):
        self.run, self.path, self.manifest, self.summary = run, run.path, run.manifest, run.summary

    def ranks(self) -> list[int]:
        return sorted(self.run.ranks)

    def events(self, r: int, validate: bool = False, info: S.StreamInfo | None = None):
        tr = self.run.ranks[r]
        if info is not None:
            info.truncated, info.count = tr.truncated, len(tr.events)
            info.last = tr.events[-1] if tr.events else None
        return iter(tr.events)

    def rank_path(self, r: int) -> str:
        return self.run.ranks[r].path


class DirSource(Source):
    """A run directory read as streams of its rank files (``loader.open_run`` checks the manifest)."""

    def __init__(self, path: str, manifest: dict):
        self.path, self.manifest, self.summary = path, manifest, {}

    def events(self, r: int, validate: bool = False, info: S.StreamInfo | None = None):
        # a validating pass reads one rank at a time, in large pieces; the others hold every rank's
        # stream open at once, in small ones
        return S.iter_rank_events(self.rank_path(r), r, info, validate=validate, small=not validate)


class Scan:
    """What the first pass found: run-level mismatches in report order, per-rank facts, the map's counts."""

    def __init__(self):
        self.pre: list = []          # c10d: comm ops on unknown groups / peers (rank by rank)
        self.ids: list = []
        self.per_rank: list = []     # recorder order and drains, rank by rank
        self.payload: list = []
        self.chunks: list = []       # rank 0's chunk accounting
        self.compiled = False
        self.facts: dict[int, fabric_check.RankFacts] = {}
        self.anchors: dict[int, int] = {}     # rank -> a late tripwire anchor (mapping.TripwireAnchor)
        self.mapped: mapping.Mapped | None = None

    @property
    def truncated(self) -> list[int]:
        return [r for r, f in sorted(self.facts.items()) if f.truncated]


class _Stop(Exception):
    """A loader check failed: the rest of the files are only read for schema errors (which come first)."""


class Fan:
    """Coroutines fed the same events (each a check written as ``while (e := (yield)) is not None``),
    each only the event kinds it reads (None: all); one that returns early keeps its result."""

    def __init__(self, cos: list):
        self.cos = [co for co, _ in cos]
        self.kinds = [k for _, k in cos]
        self.results: list = [None] * len(cos)
        self.dead = [False] * len(cos)
        self.routes: dict = {}
        for co in self.cos:
            next(co)

    def send(self, e) -> None:
        k = e["ev"]
        route = self.routes.get(k)
        if route is None:
            route = self.routes[k] = [j for j, ks in enumerate(self.kinds) if not self.dead[j] and (ks is None or k in ks)]
        for j in route:
            try:
                self.cos[j].send(e)
            except StopIteration as s:
                self.results[j] = s.value
                self.dead[j] = True
                self.routes = {}

    def finish(self) -> list:
        for j, co in enumerate(self.cos):
            if not self.dead[j]:
                try:
                    co.send(None)
                except StopIteration as s:
                    self.results[j] = s.value
        return [x if x is not None else [] for x in self.results]


_HEADERS = frozenset({S.HEADER_SENT, S.HEADER_RECV})
_WELL_FORMED = frozenset({S.COMM_ENTER, S.COMM_EXIT, S.RESULT_RECV, S.RESULT_SENT}) | fabric_check.BEHAVIOURAL_EVENTS


def scan(src: Source, validate: bool, deferred: loader.BadInput | None = None, first_checks=None) -> Scan:
    """Pass 1 (see the module docstring).  ``validate``: check the schema while reading (a directory);
    ``deferred``: a manifest-level problem found before reading, raised after the files' schema errors
    (as loading everything first would); ``first_checks(rank, path, k, event)``: the loader's per-event
    checks (raise loader.BadInput)."""
    m = src.manifest
    topo = m.get("topology")
    sc = Scan()
    family = "tp" if topo == "tp" else "pp"
    ad = mapping.adapter_for(topo) if deferred is None else None
    mapped = sc.mapped = mapping.Mapped(topology=topo, family=family)
    groups = m["groups"]
    shared = {"compiled": False}
    ids_state = fabric_check.IdsState()
    pay = payload.Shared(m)
    pay_ids: list = []
    recompute: set = set()
    failed: loader.BadInput | None = None
    # a run in memory is mapped whole, once (its observables are held anyway); a streamed one is mapped
    # here only to count, and again, lazily, for the replay
    eager = mapping.map_run(src.run) if isinstance(src, MemSource) and ad is not None else None
    if eager is not None:
        sc.mapped = mapped = eager
    for r in src.ranks():
        path = src.rank_path(r)
        if validate and not Path(path).exists():
            raise loader.BadInput(f"{path}: the manifest promises {src.world} ranks but this file is missing", path)
        info = S.StreamInfo(path)
        facts = sc.facts[r] = fabric_check.RankFacts(r, path)
        it = src.events(r, validate=validate, info=info)
        try:
            if failed is not None or ad is None:
                for _ in it:
                    pass
                continue
            role = m["roles"].get(str(r), "")
            # each check with the event kinds it reads (the identifier check: filtered in ``tap``)
            cos = [(fabric_check.pre_co(r, groups, shared), (S.COMM_ENTER,)), (fabric_check.ids_co(r, ids_state), ()),
                   (fabric_check.well_formed_co(r, facts, role), _WELL_FORMED),
                   (fabric_check.drains_co(r), (S.RESULT_RECV, S.RESULT_ACCEPTED, S.RESULT_DROPPED)),
                   (payload.payloads_co(r, pay), (S.COMM_ENTER,)), (payload.ids_co(r, pay_ids), (S.COMM_ENTER,) + tuple(_HEADERS))]
            if r == 0:
                cos.append((payload.chunks_co(m, facts), (S.CHUNK_EMITTED, S.CHUNK_DROPPED)))
            fan = Fan(cos)
            ids_co = fan.cos[1]
            seen_comm = False
            anchor = mapping.TripwireAnchor()
            opened: dict[tuple, list] = {}
            k = 0

            def tap(e, path=path, anchor=anchor, opened=opened, facts=facts, fan=fan, ids_co=ids_co):
                nonlocal k, seen_comm
                if first_checks is not None:
                    first_checks(r, path, k, e)
                k += 1
                fan.send(e)
                ev = e["ev"]
                if (ev == S.HEADER_SENT or ("chunk_index" in e and "call_id" in e)) and not fan.dead[1]:
                    ids_co.send(e)  # (never returns early)
                # a compiled seq range on any event but a comm op and the header record after one
                if "seq_first" in e and ev != S.COMM_ENTER and not (ev in _HEADERS and seen_comm):
                    shared["compiled"] = True
                anchor.feed(e)
                if ev == S.COMM_ENTER:
                    seen_comm = True
                    opened.setdefault((e["op"], e["group"], e["seq"]), []).append(e["i"])
                elif ev == S.COMM_EXIT:
                    q = opened.get((e["op"], e["group"], e["seq"]))
                    if q:
                        q.pop(0)
                        if not q:
                            del opened[(e["op"], e["group"], e["seq"])]
                elif ev == S.RANK_EXIT:
                    facts.exit = e
                elif ev == S.GENERATOR_CALL and e.get("kind") == "recompute":
                    recompute.add((e["chunk_index"], e["cache_epoch"]))

            counts: dict[str, mapping.ActorFacts] = {}
            if eager is None:
                _map_counts(ad, family, r, role, it, tap, counts, None, facts, mapping.kv_units(src.manifest))
            else:
                # held in memory and mapped already: the checks only
                send = fan.send
                for e in it:
                    send(e)
                    ev = e["ev"]
                    if ev == S.HEADER_SENT or ("chunk_index" in e and "call_id" in e):
                        ids_co.send(e)
                    if "seq_first" in e and ev != S.COMM_ENTER and not (ev in _HEADERS and seen_comm):
                        shared["compiled"] = True
                    if ev == S.COMM_ENTER:
                        seen_comm = True
                    elif ev == S.RANK_EXIT:
                        facts.exit = e
            facts.truncated, facts.count = info.truncated, info.count
            facts.pending = {i for q in opened.values() for i in q}
            late = anchor.late()
            if eager is not None:
                pass  # the whole-run map made the observables already
            elif late is not None:
                # the rank's tripwire point is only known at its end: map it again knowing it
                sc.anchors[r] = late
                counts = {}
                _map_counts(ad, family, r, role, src.events(r), None, counts, late, facts, mapping.kv_units(src.manifest))
            for thread, f in counts.items():
                mapped.facts[(r, thread)] = f
            res = fan.finish()
            sc.pre += res[0]
            sc.per_rank += res[2] + res[3]
            if r == 0:
                sc.chunks = res[6]
        except loader.BadInput as e:
            failed = e
            for _ in it:
                pass
        except S.TraceSchemaError as e:
            raise loader.BadInput(str(e), e.path, e.line, e.field) from None
        except RecursionError:
            raise loader.BadInput(f"{src.path}: a trace file nests JSON too deeply", str(src.path)) from None
        except OSError as e:
            raise loader.BadInput(f"{e.filename or path}: cannot read ({e.strerror or e})", str(e.filename or path)) from None
    if deferred is not None:
        raise deferred
    if failed is not None:
        raise failed
    sc.compiled = shared["compiled"]
    sc.ids = ids_state.out
    sc.payload = pay.out + sc.chunks + pay_ids
    if eager is None:
        mapped.recompute_chunks = frozenset(recompute)
    return sc


def _map_counts(ad, family, r, role, events, tap, counts: dict, anchor, facts, units=None) -> None:
    """Run rank r's map over its events, counting what it makes per thread (observables dropped)."""
    def sink(thread, o):
        q = b.out[thread]
        if len(q) > 2 * LAG:
            f = counts.setdefault(thread, mapping.ActorFacts())
            for x in q[:LAG]:
                f.add(x)
            del q[:LAG]
    win = mapping.EventWindow(events, None, tap)
    b, steps = mapping.map_rank_events(ad, family, r, role, win, facts.truncated, anchor, sink, units=units)
    for _ in steps:
        pass
    for thread, q in b.out.items():
        f = counts.setdefault(thread, mapping.ActorFacts())
        for x in q:
            f.add(x)


def scan_fabric(src: Source, sc: Scan | None = None) -> list[dict]:
    """c10d mismatches of a run, in the order of a rank-by-rank pass: the scan's per-event group/peer
    problems, the collective and p2p matching over the ranks merged by timestamp, the identifiers,
    then per rank the recorder's ordering and drains."""
    if sc is None:
        sc = scan(src, validate=False)
    m = src.manifest
    matcher = fabric_check.Matcher(m["groups"], src.ranks())
    def stream(r):
        for e in src.events(r):
            yield e["t"], r, e

    feed = matcher.feed
    if isinstance(src, MemSource):
        # held anyway: rank by rank (the matching takes the ranks' events in any interleaving)
        for r in src.ranks():
            for e in src.events(r):
                feed(r, e)
    else:
        # merged by timestamp: the ranks advance together, so only ops waiting for a partner are held
        for _, r, e in heapq.merge(*[stream(r) for r in src.ranks()], key=lambda x: (x[0], x[1])):
            feed(r, e)
    return sc.pre + matcher.finish(sc.compiled) + sc.ids + sc.per_rank


class RankMap:
    """One rank's map, run as far as its actors' observables are asked for."""

    def __init__(self, ad, family, r, role, events, facts, anchor, keep: set, tap=None, sink=None, units=None):
        win = self.window = mapping.EventWindow(events, facts.pending, tap)
        self.b, self.steps = mapping.map_rank_events(ad, family, r, role, win, facts.truncated, anchor,
                                                     sink=(lambda th, o, r=r: sink(r, th, o)) if sink else None,
                                                     units=units)
        self.done = False
        self.base: dict[str, int] = {}
        self.keep = keep   # threads whose observables the replay reads (others: the first one only)

    def step(self) -> None:
        try:
            for _ in range(256):
                next(self.steps)
        except StopIteration:
            self.done = True
        for th, q in self.b.out.items():
            if th not in self.keep and len(q) > 1:
                del q[1:]

    def queue(self, th: str) -> list:
        return self.b.out.setdefault(th, [])


class LazyObs:
    """An actor's observables, made by its rank's map as the replay reaches them.  Indexing is by the
    observable's position in the actor's whole sequence; ``release_below(k)`` lets go of those before k
    (the replay's window has left them behind)."""

    def __init__(self, rm: RankMap, thread: str, n: int):
        self.rm, self.thread, self.n = rm, thread, n
        rm.base.setdefault(thread, 0)

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __getitem__(self, k):
        if isinstance(k, slice):
            if k.step is not None or k.stop is not None:
                raise TypeError("LazyObs slices are seq[start:] only")
            return (self[j] for j in range(k.start or 0, self.n))
        if k < 0:
            k += self.n
        if not 0 <= k < self.n:
            raise IndexError(k)
        rm = self.rm
        q = rm.queue(self.thread)
        base = rm.base[self.thread]
        while k + LAG >= base + len(q) and not rm.done:
            rm.step()
            q = rm.queue(self.thread)
        if k < base:
            raise IndexError(f"observable {k} of {self.thread} was released")
        return q[k - base]

    def __iter__(self):
        # every observable from the first: only while none was released (the replay reads by index)
        if self.rm.base.get(self.thread, 0):
            raise RuntimeError(f"the observables of {self.thread} before {self.rm.base[self.thread]} were released: "
                               f"read a streamed actor by index as the replay does, or hook lazy_mapped's sink")
        return (self[j] for j in range(self.n))

    def release_below(self, k: int) -> None:
        rm = self.rm
        q = rm.queue(self.thread)
        base = rm.base[self.thread]
        drop = min(k - base, len(q))
        if drop > 64:
            del q[:drop]
            rm.base[self.thread] = base + drop


def lazy_mapped(src: Source, sc: Scan, actors, matcher: fabric_check.Matcher | None = None,
                sink=None) -> mapping.Mapped:
    """The scan's Mapped with, per actor, its observables as a LazyObs (one map per rank).  With a
    ``matcher``, every event the maps read is also fed to the c10d matching (``finish_fabric`` feeds
    the rest): the replay's pass is also the matching's, one read of the files fewer.  ``sink(rank,
    thread, obs)`` is called with every observable as its rank's map makes it (in order per rank; the
    map may still fold later parts into the one it made last): the hook for checks over the mapped
    stream that should not hold it."""
    m = src.manifest
    mapped = sc.mapped
    if isinstance(src, MemSource):
        return mapped  # the whole-run map's lists
    ad = mapping.adapter_for(mapped.topology)
    keep_of: dict[int, set] = {}
    for a in actors:
        keep_of.setdefault(a.rank, set()).add(a.thread)
    maps: dict[int, RankMap] = {}
    for r in src.ranks():
        tap = _feeder(matcher.feed, r) if matcher is not None else None
        maps[r] = RankMap(ad, mapped.family, r, m["roles"].get(str(r), ""), src.events(r), sc.facts[r],
                          sc.anchors.get(r), keep_of.get(r, set()), tap, sink, mapping.kv_units(m))
    for (r, th), f in sorted(mapped.facts.items()):
        if th in keep_of.get(r, set()):
            mapped.per_actor[(r, th)] = LazyObs(maps[r], th, f.count)
        else:
            mapped.per_actor[(r, th)] = [f.first] if f.first is not None else []
    mapped.rank_maps = maps
    return mapped


def mapped_observables(mapped: mapping.Mapped):
    """``(rank, thread, observable)`` of a whole-run map's lists."""
    for (r, th), obs in mapped.per_actor.items():
        for o in obs:
            yield r, th, o


def observables(src: Source, sc: Scan):
    """``(rank, thread, observable)`` for every actor, rank by rank, each rank's in the order its map
    makes them.  A run in memory reads the scan's lists; a streamed one is read again, rank by rank,
    holding only the map's window (the map may still fold later parts into an actor's last observable,
    so that one is handed on only when the next comes or the rank ends)."""
    mapped = sc.mapped
    if isinstance(src, MemSource):
        yield from mapped_observables(mapped)
        return
    m = src.manifest
    ad = mapping.adapter_for(mapped.topology)
    for r in src.ranks():
        threads = {th for (rr, th) in mapped.facts if rr == r}
        rm = RankMap(ad, mapped.family, r, m["roles"].get(str(r), ""), src.events(r), sc.facts[r],
                     sc.anchors.get(r), threads, units=mapping.kv_units(m))
        while True:
            rm.step()
            for th, q in rm.b.out.items():
                n = len(q) if rm.done else len(q) - 1
                if n > 0:
                    for o in q[:n]:
                        yield r, th, o
                    del q[:n]
            if rm.done:
                break


def _feeder(feed, r: int):
    def tap(e):
        feed(r, e)
    return tap


def finish_fabric(src: Source, sc: Scan, matcher: fabric_check.Matcher, mapped: mapping.Mapped) -> list[dict]:
    """After the replay: the events its maps did not read, merged by timestamp, to the matching; then
    every c10d mismatch in the order of a rank-by-rank pass (as ``scan_fabric``)."""
    def rest(r, win):
        for e in win._it:   # past what the window read (and fed): straight from the file
            yield e["t"], r, e

    maps = mapped.rank_maps
    feed = matcher.feed
    for _, r, e in heapq.merge(*[rest(r, rm.window) for r, rm in maps.items()], key=lambda x: (x[0], x[1])):
        feed(r, e)
    return sc.pre + matcher.finish(sc.compiled) + sc.ids + sc.per_rank
