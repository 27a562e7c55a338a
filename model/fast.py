"""A vectorized breadth-first core for models that can pack their states into fixed-width integers.

The pure-Python checker (checker.py) handles one state at a time; this core expands a whole BFS
level at once with numpy.  A model opts in by defining ``packed()``, returning an object with:

- ``words``: how many uint64 words encode one state;
- ``slots``: A, the number of successor slots per state.  Slot order is the order in which the
  model's ``successors()`` yields its enabled transitions (so the k-th enabled slot of a state is
  the k-th pair ``successors()`` yields);
- ``encode(state) -> tuple[int, ...]`` and ``decode(words) -> state``: a bijection between the
  model's states and their packings (unused bits zero, so equal states pack equally);
- ``expand(rows)``: for an (N, words) uint64 array, ``(enabled, nxt, bad)`` with shapes (N, A),
  (N, A, words) and (N, A): which slots are enabled, the packed successor of each enabled slot,
  and which enabled slots are an edge ``Violation`` in ``successors()``;
- ``invariant_free`` (optional, default False): True when ``model.invariant`` never fails, so the
  core need not decode every new state to ask it.

The core only *finds* candidates; every verdict, message and counterexample step comes from the
model's own Python functions (``classify_end``, ``invariant``, ``successors``, ``describe``,
``waiting``) on decoded states, so the two paths cannot disagree on what a violation means.  New
states are numbered in the order the pure-Python BFS discovers them (parent order, then slot
order), which makes the counts, the depth, the chosen counterexample and the statistics identical
to ``checker.Explorer``; a test compares them.

Dedup: a state of one word is its own key.  Wider states are keyed by a 64-bit mix of their words
and every key match is verified against the stored words; on a true hash collision (odds about
n^2 / 2^65) ``check_packed`` returns None and the caller falls back to the exact Python path.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from .api import BOUND_REACHED, FAIL_FAST, HOLDS, Model, Violation
from .result import Bounds, Result, Stats, peak_rss_mb


class _Collision(Exception):
    pass


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


def _keys(rows: np.ndarray) -> np.ndarray:
    """One uint64 key per row: the word itself, or a splitmix64-style mix of several words."""
    if rows.shape[1] == 1:
        return rows[:, 0].copy()
    h = rows[:, 0].copy()
    with np.errstate(over="ignore"):
        for w in range(1, rows.shape[1]):
            x = rows[:, w] * _M1
            x ^= x >> np.uint64(31)
            x *= _M2
            x ^= x >> np.uint64(29)
            h ^= x
            h *= _M3
            h ^= h >> np.uint64(32)
    return h


class _Visited:
    """A set of uint64 keys as a few sorted runs of geometrically growing size (a tiny LSM tree),
    each key with the global index of its state."""

    def __init__(self):
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Global index of each (sorted, unique) key, or -1."""
        out = np.full(len(keys), -1, dtype=np.int64)
        for rk, ri in self.runs:
            pos = np.searchsorted(rk, keys)
            pos[pos == len(rk)] = 0
            hit = rk[pos] == keys
            out[hit] = ri[pos[hit]]
        return out

    def add(self, keys: np.ndarray, idx: np.ndarray):
        order = np.argsort(keys)  # keys are unique: no need for a stable sort
        self.runs.append((keys[order], idx[order]))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            self.runs[-2:] = [_merge(self.runs[-2], self.runs[-1])]


def _merge(a, b):
    """Merge two sorted runs of distinct keys in linear time (no sort)."""
    (ka, ia), (kb, ib) = a, b
    n = len(ka) + len(kb)
    if len(ka) < len(kb):
        (ka, ia), (kb, ib) = (kb, ib), (ka, ia)
    pb = np.arange(len(kb)) + np.searchsorted(ka, kb)  # the smaller run searched in the larger
    rest = np.ones(n, dtype=bool)
    rest[pb] = False
    pa = np.flatnonzero(rest)
    k = np.empty(n, dtype=ka.dtype)
    i = np.empty(n, dtype=ia.dtype)
    k[pa], k[pb] = ka, kb
    i[pa], i[pb] = ia, ib
    return k, i


def _first_occurrences(keys: np.ndarray):
    """(distinct keys sorted, index of each one's first occurrence, sort order, group of each
    sorted position) without a stable sort: the smallest index of each group is the first."""
    order = np.argsort(keys)
    sk = keys[order]
    boundary = np.empty(len(sk), dtype=bool)
    boundary[:1] = True
    np.not_equal(sk[1:], sk[:-1], out=boundary[1:])
    starts = np.flatnonzero(boundary)
    first = np.minimum.reduceat(order, starts) if len(sk) else order
    return sk[starts], first, order, boundary


class _Store:
    """All packed states in discovery order, with the parent and slot that first reached each."""

    def __init__(self, words: int):
        self.rows = np.zeros((1024, words), dtype=np.uint64)
        self.parent = np.zeros(1024, dtype=np.int64)
        self.slot = np.zeros(1024, dtype=np.int32)
        self.n = 0

    def extend(self, rows, parent, slot) -> np.ndarray:
        k = len(rows)
        need = self.n + k
        if need > len(self.rows):
            cap = max(need, 2 * len(self.rows))
            for name in ("rows", "parent", "slot"):
                old = getattr(self, name)
                new = np.zeros((cap,) + old.shape[1:], dtype=old.dtype)
                new[: self.n] = old[: self.n]
                setattr(self, name, new)
        self.rows[self.n:need] = rows
        self.parent[self.n:need] = parent
        self.slot[self.n:need] = slot
        idx = np.arange(self.n, need, dtype=np.int64)
        self.n = need
        return idx


def _nth_successor(model: Model, pk, state, row: np.ndarray, slot: int):
    """The (action, next) pair ``successors()`` yields for a packed slot."""
    enabled, _, _ = pk.expand(row.reshape(1, -1))
    k = int(enabled[0, :slot].sum())
    return list(model.successors(state))[k]


def _path(model: Model, pk, store: _Store, idx: int) -> list[tuple[Any, Any, Any]]:
    chain = []
    while idx >= 0:
        chain.append(idx)
        idx = int(store.parent[idx])
    chain.reverse()
    steps = []
    for p, c in zip(chain, chain[1:]):
        s = pk.decode(tuple(int(w) for w in store.rows[p]))
        a, n = _nth_successor(model, pk, s, store.rows[p], int(store.slot[c]))
        expect = pk.decode(tuple(int(w) for w in store.rows[c]))
        if n != expect:
            raise AssertionError(f"packed successor disagrees with successors() at {s!r} slot {int(store.slot[c])}")
        steps.append((s, a, n))
    return steps


def _describe(model: Model, steps) -> list[dict[str, Any]]:
    out = []
    for i, (s, a, n) in enumerate(steps, 1):
        d = dict(model.describe(s, a, n))
        d["step"] = i
        out.append(d)
    return out


def packed_of(model: Model):
    """The model's packed form, or None when it has none (or declines for these parameters)."""
    from .features import PACKED, features_of

    return model.packed() if PACKED in features_of(model) else None


def check_packed(model: Model, bounds: Bounds | None = None, progress: Callable[[Stats], None] | None = None):
    """Safety check with the vectorized core.  Returns a checker ``Result`` equal to what
    ``checker.check(model, bounds, liveness=False)`` returns, or None when this core does not
    apply (no packed form, a ``max_states`` bound, or a hash collision): then use the Python path."""
    b = bounds or Bounds()
    if b.max_states is not None:
        return None  # the Python path stops mid-level at exactly max_states; keep that behaviour there
    pk = packed_of(model)
    if pk is None:
        return None
    try:
        return _run(model, pk, b, progress)
    except _Collision:
        return None


def _run(model: Model, pk, b: Bounds, progress) -> Result:
    st = Stats()
    t0 = time.perf_counter()
    last = t0
    K, A = pk.words, pk.slots
    verify = K > 1
    invariant_free = getattr(pk, "invariant_free", False)
    store = _Store(K)
    visited = _Visited()

    def decode(i):
        return pk.decode(tuple(int(w) for w in store.rows[i]))

    def violation_result(v: Violation, steps) -> Result:
        return Result(v.verdict, v.message, st, _describe(model, steps), detail=dict(v.detail))

    # initial states, deduplicated in order
    init_rows, seen = [], set()
    for s in model.init_states():
        w = tuple(pk.encode(s))
        if w not in seen:
            seen.add(w)
            init_rows.append(w)
    rows = np.array(init_rows, dtype=np.uint64).reshape(-1, K)
    frontier = store.extend(rows, np.full(len(rows), -1), np.zeros(len(rows), dtype=np.int32))
    visited.add(_keys(rows), frontier)
    found: list[tuple[int, tuple, Any]] = []  # (length, order key, thunk -> Result)
    for i in frontier:
        v = model.invariant(decode(i))
        if v is not None:
            found.append((0, (int(i),), (v, int(i))))
    if found:
        st.states = store.n
        st.seconds = time.perf_counter() - t0
        st.peak_rss_mb = peak_rss_mb()
        v, i = found[0][2]
        return violation_result(v, [])

    depth = 0
    bound_hit = None
    end_found = None  # (frontier position, Result)
    while len(frontier) and not found and end_found is None:
        if b.max_depth is not None and depth >= b.max_depth:
            bound_hit = f"max-depth {b.max_depth}"
            break
        F = store.rows[frontier[0]:frontier[-1] + 1]  # a level is a contiguous range of indices
        enabled, nxt, bad = pk.expand(F)
        st.transitions += int(enabled.sum())

        # ends: the model classifies each (there are few)
        ends = np.flatnonzero(~enabled.any(axis=1))
        st.end_states += len(ends)
        for e in ends:
            gi = int(frontier[e])
            s = decode(gi)
            kind = model.classify_end(s)
            if kind == FAIL_FAST:
                st.fail_fast_ends += 1
            elif isinstance(kind, Violation) and end_found is None:
                r = violation_result(kind, _path(model, pk, store, gi))
                r.waiting = model.waiting(s)
                end_found = (int(e), r)

        # edge violations, identified by the model's own successors()
        bad &= enabled
        for flat in np.flatnonzero(bad.ravel())[:1]:  # the first in discovery order is the one reported
            e, a = divmod(int(flat), A)
            gi = int(frontier[e])
            s = decode(gi)
            act, v = _nth_successor(model, pk, s, store.rows[gi], a)
            if not isinstance(v, Violation):
                raise AssertionError(f"packed core flags slot {a} of {s!r} as a violation; successors() does not")
            found.append((depth + 1, (e, a), (v, _path(model, pk, store, gi) + [(s, act, v)])))

        # new states, in discovery order
        good = (enabled & ~bad).ravel()
        flat = np.flatnonzero(good)
        cand = nxt.reshape(-1, K)[flat]
        keys = _keys(cand)
        uk, first, order, boundary = _first_occurrences(keys)
        if verify and not np.array_equal(cand[order], cand[first[np.cumsum(boundary) - 1]]):
            raise _Collision()
        hit = visited.lookup(uk)
        old = hit >= 0
        if verify and old.any() and not np.array_equal(store.rows[hit[old]], cand[first[old]]):
            raise _Collision()
        firsts = np.sort(first[~old])
        parents = frontier[0] + flat[firsts] // A
        slots = (flat[firsts] % A).astype(np.int32)
        new_rows = cand[firsts]
        nf = store.extend(new_rows, parents, slots)
        visited.add(keys[firsts], nf)
        if not invariant_free:
            for k, gi in enumerate(nf):
                v = model.invariant(decode(int(gi)))
                if v is not None:
                    fl = int(flat[firsts[k]])
                    found.append((depth + 1, divmod(fl, A), (v, _path(model, pk, store, int(gi)))))
        frontier = nf
        if len(frontier):
            depth += 1
        now = time.perf_counter()
        st.states, st.depth, st.seconds = store.n, depth, now - t0
        if b.timeout is not None and st.seconds > b.timeout and len(frontier) and not found and end_found is None:
            bound_hit = f"timeout {b.timeout:g}s"
            break
        if progress and now - last > 0.25:
            last = now
            progress(st)

    st.states, st.depth, st.seconds = store.n, depth, time.perf_counter() - t0
    st.peak_rss_mb = peak_rss_mb()
    if end_found is not None:  # an end state at this level is shorter than any edge into the next
        return end_found[1]
    if found:
        found.sort(key=lambda x: (x[0], x[1]))
        v, steps = found[0][2]
        return violation_result(v, steps)
    if bound_hit:
        return Result(BOUND_REACHED, f"bound reached ({bound_hit}) before the state space was exhausted; "
                                     f"no violation in the {st.states:,} states explored", st, bound=bound_hit)
    return Result(HOLDS, "all properties hold within the bounds", st)
