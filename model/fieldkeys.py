"""A keyed model's ``int`` keys across the processes of a parallel search (model/features.py's
``key-fields``).

A keyed model packs a state into one int: little-endian fields of 32 bits, each the number the model
gave a value (an actor's state, the shared variables) in its order of first sight.  Every worker of a
parallel search numbers values in its own order, so one state has a different key in each worker.
``FieldKeys`` works on whole batches of keys at once, as a (keys x fields) matrix of uint32:

- ``owners``: the worker that owns each state, from the hashes of its fields' values (the same in every
  process forked from one parent: they share the hash seed), so an owner is a function of the state
  alone, whichever worker keyed it;
- ``origins``: a batch's rows in origin coordinates (each number paired with the worker that found its
  value, and that worker's number for it);
- ``news``/``learn``: the values a worker found since its last batch go to every other worker, which
  numbers them itself (each value crosses once from each worker that found it);
- ``translate``: rows in origin coordinates in this worker's numbers (one array lookup per field), as
  int keys.

Per key, only ``int.to_bytes`` on the way out and ``int.from_bytes`` on the way in run in Python; the
rest is numpy over the whole batch.
"""
from __future__ import annotations

from itertools import repeat

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15  # the multipliers that mix each field's hash into the owner (odd, distinct)
_MASK64 = (1 << 64) - 1


def _grown(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` zero-extended to at least ``size`` entries (capacity doubled: amortised growth)."""
    if len(a) >= size:
        return a
    out = np.zeros(max(size, 2 * len(a)), dtype=a.dtype)
    out[:len(a)] = a
    return out


class FieldKeys:
    """Worker ``me``'s view of the key layout of its model, for ``n`` workers.  The numbers the model
    had given when the workers forked (``shared``: the tables' lengths then) are the same in every
    worker; the others travel as ``news``.

    A number's *origin* is the worker that found its value and that worker's number for it: our own
    number for a value found here, the sender's for a value we learnt from its news.  Rows travel in
    origin coordinates (``origins``: a matrix of origin workers beside the numbers), so a value
    crosses once from each worker that found it to each other worker, and never again from a worker
    that only learnt it."""

    def __init__(self, model, n: int, me: int = 0, shared: list | None = None):
        self.tables = model.key_tables()
        self.number = model.key_number
        self.n, self.me = n, me
        self.nf = len(self.tables)
        self.size = 4 * self.nf  # bytes per key
        self.numbered = [c for c, t in enumerate(self.tables) if t is not None]
        self.mult = [np.uint64(((_GOLDEN * (2 * c + 1)) & _MASK64) | 1) for c in range(self.nf)]
        self.hashes = [np.zeros(0, dtype=np.uint64) for _ in range(self.nf)]  # number -> hash(value)
        self.nhashed = [0] * self.nf
        if shared is None:
            shared = [0 if t is None else len(t) for t in self.tables]
        self.shipped = list(shared)  # per field: the numbers below have gone out as news (or are shared)
        self.wdtype = np.uint8 if n <= 256 else np.uint16
        # per field: [origin worker, its number] -> ours.  Our own row is the identity, and the shared
        # numbers are the same in every row.
        self.tr = [np.tile(np.arange(b, dtype=np.uint32), (n, 1)) for b in shared]
        # per field and our number: its origin (worker, number); filled up to ``norigin``
        self.oworker = [np.full(b, me, dtype=self.wdtype) for b in shared]
        self.onumber = [np.arange(b, dtype=np.uint32) for b in shared]
        self.norigin = list(shared)

    def matrix(self, keys: list) -> np.ndarray:
        """The keys as a (len(keys) x fields) uint32 matrix."""
        buf = b"".join(map(int.to_bytes, keys, repeat(self.size), repeat("little")))
        return np.frombuffer(buf, dtype="<u4").reshape(len(keys), self.nf)

    def keys(self, mat: np.ndarray) -> list:
        """The rows of ``mat`` as int keys."""
        rows = np.ascontiguousarray(mat, dtype="<u4").view(np.dtype((np.void, self.size))).ravel()
        return list(map(int.from_bytes, rows.tolist(), repeat("little")))

    def _hashed(self, c: int, top: int) -> np.ndarray:
        """``hash`` of field c's values numbered below ``top``, as uint64."""
        h = self.hashes[c]
        done = self.nhashed[c]
        if done < top:
            h = self.hashes[c] = _grown(h, top)
            t = self.tables[c]
            h[done:top] = np.fromiter(map(hash, t[done:top]), dtype=np.int64, count=top - done).view(np.uint64)
            self.nhashed[c] = top
        return h

    def owners(self, mat: np.ndarray, n: int) -> np.ndarray:
        """The owner (0..n-1) of each row's state: its fields' value hashes, mixed."""
        acc = np.zeros(len(mat), dtype=np.uint64)
        if not len(mat):
            return acc.astype(np.intp)
        for c in range(self.nf):
            col = mat[:, c]
            if self.tables[c] is None:
                v = col.astype(np.uint64)
            else:
                v = self._hashed(c, int(col.max()) + 1)[col]
            acc += v * self.mult[c]
        return ((acc >> np.uint64(29)) % np.uint64(n)).astype(np.intp)

    def _origins(self, c: int, upto: int) -> tuple:
        """Field c's origin arrays, covering our numbers below ``upto`` (a number not learnt from
        another worker is ours: its origin is (me, itself))."""
        have = self.norigin[c]
        if have < upto:
            ow = self.oworker[c] = _grown(self.oworker[c], upto)
            on = self.onumber[c] = _grown(self.onumber[c], upto)
            ow[have:upto] = self.me
            on[have:upto] = np.arange(have, upto, dtype=np.uint32)
            self.norigin[c] = upto
        return self.oworker[c], self.onumber[c]

    def _table(self, c: int, upto: int) -> np.ndarray:
        """Field c's translation table, with room for numbers below ``upto`` (our row the identity)."""
        tr = self.tr[c]
        cap = tr.shape[1]
        if cap < upto:
            cap = max(upto, 2 * cap)
            tr = self.tr[c] = np.concatenate([tr, np.zeros((self.n, cap - tr.shape[1]), dtype=np.uint32)], axis=1)
            tr[self.me] = np.arange(cap, dtype=np.uint32)
        return tr

    def origins(self, mat: np.ndarray) -> tuple:
        """``mat`` (our numbers) in origin coordinates: (origin workers, origin numbers) matrices."""
        ow = np.zeros(mat.shape, dtype=self.wdtype)
        on = np.array(mat, dtype="<u4")
        for c in self.numbered:
            w, num = self._origins(c, len(self.tables[c]))
            col = mat[:, c]
            ow[:, c] = w[col]
            on[:, c] = num[col]
        return ow, on

    def news(self) -> list:
        """The values found here since the last call, for every other worker: (field, our numbers,
        the values) per field with new ones."""
        out = []
        for c in self.numbered:
            t = self.tables[c]
            lo, hi = self.shipped[c], len(t)
            if hi <= lo:
                continue
            self.shipped[c] = hi
            ow, _ = self._origins(c, hi)
            xs = np.flatnonzero(ow[lo:hi] == self.me) + lo
            if len(xs):
                out.append((c, xs.astype(np.uint32), [t[x] for x in xs.tolist()]))
        return out

    def learn(self, batches: list) -> None:
        """Other workers' ``news``, (worker, news) pairs: their numbers for the values they found,
        translated into ours (per field, all workers' values at once)."""
        per: dict = {}
        for h, news in batches:
            for c, xs, vals in news:
                per.setdefault(c, []).append((h, xs, vals))
        number = self.number
        for c, got in per.items():
            t = self.tables[c]
            before = len(t)
            hs = np.concatenate([np.full(len(xs), h, dtype=np.intp) for h, xs, _ in got])
            xs = np.concatenate([xs for _, xs, _ in got])
            vals = [v for _, _, vs in got for v in vs]
            ours = np.fromiter(map(number, repeat(c), vals), dtype=np.uint32, count=len(vals))
            self._table(c, int(xs.max()) + 1)[hs, xs] = ours
            fresh = ours >= before  # numbered now: their origin is the worker that sent them
            if fresh.any():
                ow, on = self._origins(c, len(t))
                ow[ours[fresh]] = hs[fresh]
                on[ours[fresh]] = xs[fresh]

    def translate(self, parts: list) -> list:
        """The keys of ``parts``, (origin workers, origin numbers) matrix pairs, in our numbers, in
        order: one lookup per field over all the rows at once."""
        parts = [p for p in parts if len(p[1])]
        if not parts:
            return []
        ow = np.concatenate([p[0] for p in parts])
        mat = np.concatenate([p[1] for p in parts])  # a new array (the parts are read-only buffers)
        for c in self.numbered:
            col = mat[:, c]
            tr = self._table(c, int(col.max()) + 1)
            mat[:, c] = tr[ow[:, c], col]
        return self.keys(mat)
