"""A keyed model's ``int`` keys across the processes of a parallel search (model/features.py's
``key-fields``).

A keyed model packs a state into one int: little-endian fields of 32 bits, each the number the model
gave a value (an actor's state, the shared variables) in its order of first sight.  Every worker of a
parallel search numbers values in its own order, so one state has a different key in each worker.
``FieldKeys`` works on whole batches of keys at once, as a (keys x fields) matrix of uint32:

- ``owners``: the worker that owns each state, from the hashes of its fields' values (the same in every
  process forked from one parent: they share the hash seed), so an owner is a function of the state
  alone, whichever worker keyed it;
- ``news``/``learn``: the values a worker numbered since its last batch go to every other worker,
  which numbers them itself (each value crosses to each worker once);
- ``translate``: a batch's rows in this worker's numbers (one array lookup per field), as int keys.

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
    """One worker's view of the key layout of its model, for ``n`` workers.  The numbers the model
    had given when the workers forked (``shared``: the tables' lengths then) are the same in every
    worker; the others travel as ``news``."""

    def __init__(self, model, n: int, shared: list | None = None):
        self.tables = model.key_tables()
        self.number = model.key_number
        self.nf = len(self.tables)
        self.size = 4 * self.nf  # bytes per key
        self.numbered = [c for c, t in enumerate(self.tables) if t is not None]
        self.mult = [np.uint64(((_GOLDEN * (2 * c + 1)) & _MASK64) | 1) for c in range(self.nf)]
        self.hashes = [np.zeros(0, dtype=np.uint64) for _ in range(self.nf)]  # number -> hash(value)
        self.nhashed = [0] * self.nf
        if shared is None:
            shared = [0 if t is None else len(t) for t in self.tables]
        self.shipped = list(shared)  # per field: the numbers below are known to every other worker
        # per source worker and field: its number -> ours (the shared numbers are the same)
        self.tr = [[np.arange(b, dtype=np.uint32) for b in shared] for _ in range(n)]

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

    def news(self) -> list:
        """The values numbered since the last call, to go to every other worker: (field, first
        number, values) per field that has new ones.  Broadcasting them (a few thousand values over a
        whole search) costs less than finding, per destination and per batch, which of its numbers a
        destination lacks."""
        out = []
        for c in self.numbered:
            t = self.tables[c]
            lo = self.shipped[c]
            if len(t) > lo:
                out.append((c, lo, t[lo:]))
                self.shipped[c] = len(t)
        return out

    def learn(self, h: int, news: list) -> None:
        """Worker ``h``'s ``news``: its numbers for those values, translated into ours."""
        tr = self.tr[h]
        number = self.number
        for c, lo, vals in news:
            hi = lo + len(vals)
            t = tr[c] = _grown(tr[c], hi)
            t[lo:hi] = list(map(number, repeat(c), vals))

    def translate(self, parts: list) -> list:
        """The keys of the matrices in ``parts``, (source worker, matrix in its numbers) pairs, in
        this worker's numbers, in order: one lookup per field over all the rows at once (each
        source's table placed after the previous ones)."""
        parts = [(h, m) for h, m in parts if len(m)]
        if not parts:
            return []
        mat = np.concatenate([m for _, m in parts])  # a new array (the parts are read-only buffers)
        sizes = [len(m) for _, m in parts]
        for c in self.numbered:
            tabs = [self.tr[h][c] for h, _ in parts]
            if len(tabs) == 1:
                mat[:, c] = tabs[0][mat[:, c]]
                continue
            offs = np.zeros(len(tabs), dtype=np.int64)
            np.cumsum([len(t) for t in tabs[:-1]], out=offs[1:])
            mat[:, c] = np.concatenate(tabs)[mat[:, c] + np.repeat(offs, sizes)]
        return self.keys(mat)
