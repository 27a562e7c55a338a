"""Multi-core safety exploration: hash-partitioned, level-synchronized BFS over forked processes.

``check_parallel(model_factory, bounds, workers)`` gives the same answer as
``checker.Explorer(model, bounds).run()`` — verdict, state count, transition count, depth, end-state
counts and even the same counterexample (not only one of the same length) — using ``workers``
processes.  Safety only: liveness needs the whole edge list in one place (``checker.check``).

How
---
The parent builds the model once and forks the workers, which inherit it (and the hash seed, so
``hash`` agrees in every process).  Worker k owns the states with ``hash(state) % N == k`` (with
numbered keys, ``_route_hash(state) % N == k``: for a world state, its class plus the sum of its
fields' hashes, computed from the key; with the model's int keys, ``fieldkeys.FieldKeys.owners``:
the values' hashes mixed field by field).  Per BFS level:

1. *expand*: each worker expands its share of the frontier, in global frontier order, and routes
   every successor to its owner (states it owns itself stay in memory; the others are pickled, one
   batch per destination, into a file under /dev/shm).  Edge violations, stuck states and end
   states are classified where they are expanded, as in ``Explorer``.  The invariants of the
   frontier's states are checked here too, each state's just before it is expanded (where work
   stealing spreads them with the rest: ``_Worker._check_first``), filed so that they come first in
   serial order;
2. *merge*: each owner reads its batches and dedups against its visited set.  A state reached by
   several parents in the level keeps the first one in serial order.  Where the level ends the
   search (a violation found in it) the owner checks its new states' invariants here, and where
   a bound or a timeout stops the search before the next expansion, a round of its own does
   (``check_invariants``): no state is counted without its invariants checked;
3. the parent puts the level's new states in the order the serial explorer would have discovered
   them: serial BFS numbers a new state by (position of its first parent in the frontier, index of
   the successor), so every routed successor carries that key and the parent sorts the keys.

Because the serial frontier order is reproduced exactly, ``Bounds.max_states`` stops at the same
state as the serial explorer (the parent finds the frontier position where the serial loop would
have crossed the bound, and counts states, transitions and candidates up to it), and the serial
tie-break between same-length violations — the first found in queue order — is the same too.  The
counterexample path is rebuilt by walking parent links across partitions and described by the
model in the parent (``Explorer.describe_path``), so it is byte-for-byte the serial one.
``timeout`` is checked by the workers while they expand (a level cut short counts only what the
earlier levels found); timeouts are not deterministic in the serial explorer either.

Which transport: a model whose keys are ints (model/features.py's ``keyed`` and ``key-fields``: the
role worlds without monitors, reduced or not) gets ``_KeyedWorker``s whatever the number of
workers.  They keep the model's own int keys, expand with ``keyed_successors`` when the search is
unreduced (the serial explorer's path: a successor usually comes as its key), and ship a level's
successors as one file per worker: uint32 matrices of numbers in *origin coordinates* (each number
paired with the worker that found its value), read by every owner with a few ``pread``s and
translated into its own numbers by one array lookup per field; each value crosses once from each
worker that found it.  A successor carries only its serial-order key; the parent's global id is
computed for the whole batch, and the coordinator rebuilds a counterexample step's action from the
parent state and the successor index.  Where the workers do not outnumber the cores, keyed workers also
share each level's frontier (``STEAL``): every worker publishes its own, worker k expands the k-th of n
consecutive ranges of the level's serial order a chunk at a time, and one with nothing left takes
chunks from the back of the others' ranges (``_ranges``); near a range's end a claim is half of what is
left, so the workers reach the level's barrier close together.  States next to each other in serial order
are mostly siblings with successors in common, which one worker's first deduplication then merges
before they travel: on ``pp1`` mesh 4 at 8 workers, 1.74 million rows cross instead of 3.67 million.
Whoever expands a state, its successors keep the serial-order keys its owner would have given them,
so the search stays the serial one.  Otherwise (states with monitors, non-world models):

From ``NUMBERED_FROM`` (4) workers on, states are stored, deduplicated and sent as keys
(``_Numbering``): a world state becomes a short tuple of numbers, one per actor state and per other
field, numbered by equality in each worker. A successor keeps its parent's numbers for the fields it
shares with it (the very same objects), so a step that changes one actor numbers one value; the
visited set hashes tuples of small integers instead of walking whole states; a batch carries keys
plus each value once per destination, and the receiver translates keys into its own numbers by list
indexing. With fewer workers most successors stay with their worker and keying costs more than it
saves: states are kept as they are and sent in the ``_Encoder`` encoding (each value once per
destination, then its number). Flat states (the pipeline's) and the Ray partitions
(model/ray_search.py) keep the states themselves. Batches are pickle protocol 5. Role variables are
namedtuple classes made at runtime (they cannot be pickled by reference), so every namedtuple class
alive when the workers fork is registered under its ``id()`` — the same in every forked process —
and pickled as (class id, fields). A model whose states contain other unpicklable objects is not
supported (error).

Costs (bench/bench_parallel.py, docs/scaling.md): one keyed worker alone spends 0.90-0.99x
(unreduced) to 1.00-1.03x (reduced: every successor keyed) the serial CPU; 8 keyed workers on a
16-core machine spend 1.7x (pp1 mesh=4 unreduced) to 2.0x (pp1 mesh=8 reduced) of it in all, most
of the growth the
machine's own (8 concurrent Python processes ran 1.5x slower each there), the rest sending,
receiving and the slowest worker at each level barrier.  A spec whose successor function is as
cheap as a pickle round trip (pipeline) gains nothing: use the vectorized core.

Requires the ``fork`` start method (Linux, macOS); elsewhere, and for ``workers <= 1``, this is
the serial explorer.
"""
from __future__ import annotations

import copyreg
import gc
import warnings
import io
import multiprocessing as mp
import os
import re
import pickle
import resource
import shutil
import signal
import tempfile
import time
import traceback
from multiprocessing.connection import wait as _wait_conns
from itertools import repeat
from typing import Any, Callable

import numpy as np

from .api import BOUND_REACHED, FAIL_FAST, HOLDS, Model, SpecError, Violation
from . import procs, safepickle
from .checker import Explorer
from .features import COVERAGE, KEY_FIELDS, KEYED, features_of
from .fieldkeys import FieldKeys
from .result import Bounds, Result, Stats, peak_rss_mb

# a routed successor's key: (global frontier position of its parent) << _SH | (successor index)
_SH = 24
_MASK = (1 << _SH) - 1
_END = _MASK  # the successor index of an end-state candidate (after every real successor)

# candidate kinds
_EDGE, _STUCK, _ENDV, _INV = 0, 1, 2, 3

# ---------------------------------------------------------------------------------------------
# pickling of runtime namedtuple classes
# ---------------------------------------------------------------------------------------------
_REG: dict[int, type] = {}

# diagnostics of the last parallel run in this process: per-worker CPU seconds, peak RSS and phase times
LAST_RUN: dict[str, Any] = {}


def _register_namedtuples() -> None:
    """Every namedtuple class alive now, by id (stable across fork)."""
    _REG.clear()
    _DISPATCH.clear()
    _DISPATCH.update(copyreg.dispatch_table)
    with warnings.catch_warnings():  # touching some library objects (e.g. torch's deprecated aliases) warns
        warnings.simplefilter("ignore")
        for o in gc.get_objects():
            if isinstance(o, type) and issubclass(o, tuple) and "_fields" in o.__dict__:
                _REG[id(o)] = o


def _mk(cid, vals):
    return tuple.__new__(_REG[cid], vals)


def _reduce_nt(o):
    return _mk, (id(type(o)), tuple(o))


_REBUILDERS = {(__name__, "_mk"): _mk}  # the one function a batch may call (model/safepickle.py)


class _Dispatch(dict):
    """A pickler dispatch table that learns the namedtuple classes on first sight."""

    def __missing__(self, t):
        if id(t) in _REG and _REG[id(t)] is t:
            self[t] = _reduce_nt
            return _reduce_nt
        raise KeyError(t)


_DISPATCH = _Dispatch(copyreg.dispatch_table)


def _dump(obj, f) -> None:
    p = pickle.Pickler(f, 5)
    p.dispatch_table = _DISPATCH
    p.dump(obj)


def _dumps(obj) -> bytes:
    f = io.BytesIO()
    _dump(obj, f)
    return f.getvalue()


def _loads(b: bytes):
    return safepickle.loads(b, _REBUILDERS)


_cpu = time.process_time
# Garbage collection in the workers.  "level" (default): automatic collection off, one collection of
# the young generations per BFS level (so cyclic garbage a model makes is still freed), then
# everything alive is frozen: the stored states, all alive until the worker exits, are never scanned
# again.  "freeze": automatic collection on, freeze per level.  "on": Python's defaults (but never
# while a batch is pickled or unpickled).  "off": no collection at all (cycles leak).  Collections
# over the unshared, freshly unpickled states cost pp1 workers ~30% CPU with the defaults.
GC_MODE = "level"
# How forked workers store and send states: "compact" (structured states: from NUMBERED_FROM workers on,
# ``_Numbering`` keys; below, the states themselves, sent in the ``_Encoder`` encoding) or "pickle" (the
# states as they are, pickled as they are; the earliest transport, kept for bench/bench_parallel.py)
TRANSPORT = "compact"
# Keys pay from this many workers on: the share of successors that cross to another worker, (N-1)/N,
# is then large enough for cheaper sending and dedup to outweigh numbering every successor (measured
# on pp1, bench/bench_parallel.py: 2 workers 10-16% more CPU with keys, 4 workers 3-8% less, 8 workers
# 12-18% less).  Below it the ``_Encoder`` stays: sending states through ``_Numbering`` keys while storing
# them as they are was measured at 2 workers and costs 9-22% more CPU than the encoder (every sent state
# keyed from scratch, every received one rebuilt).
NUMBERED_FROM = 4
# A search whose states have int keys (the world specs without monitors, reduced or not) keeps the
# model's own keys in the workers (``_KeyedWorker``) whatever the number of workers, in the compact
# transport (False: the numbered or encoded transports, as before; tests compare all three).
KEYED_WORKERS = True
# Sharing a level's frontier (keyed workers, from depth 1 on; ``_KeyedWorker._own_ranges``), where the
# workers do not outnumber the usable cores: "auto" is "ranges" (every worker publishes its whole
# frontier, and worker k expands the k-th of n consecutive ranges of the level's serial order, then
# takes chunks from the back of the others' ranges: ``_ranges``); "halves" (the earlier sharing: a worker
# with a frontier of at least 4 chunks publishes its back half, expands the front half, then the
# published part a chunk at a time; one that has nothing of its own left takes a share of what is left
# from the back of the others'); "off" (each worker expands its own frontier); "force" (tests: "halves"
# with every frontier published whole, each worker expanding the next worker's chunks, one at a time,
# before anything else; also where the workers outnumber the cores).
STEAL = "auto"
_RANGES = {"auto": True, "ranges": True, "halves": False, "force": False, "off": False}  # serial ranges or own shares
STEAL_CHUNK = 16  # frontier states per claim
RANGE_CHUNK = 128  # frontier states per claim with STEAL = "ranges" (each reads every owner's file)
_CLAIM = 5  # shared int64 per worker: level, next own position, end of what is left, published from, to


CPU_QUOTA_FILE = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "QUOTA PERIOD" (microseconds) or "max PERIOD"


def _usable_cores() -> int:
    """The CPUs this process may run on, and no more than its cgroup's CPU quota (a container's
    ``--cpus``) allows, rounded up."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (macOS)
        n = os.cpu_count() or 1
    try:
        with open(CPU_QUOTA_FILE) as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):  # no cgroup v2 file, or one this does not read
        pass
    return n


def _shm_dir() -> str:
    """A scratch folder for the workers' files, named after this process; the folders of earlier
    searches that were killed outright (SIGKILL: nothing of theirs ran to remove them) go first."""
    prefix = f"lockstep-par-{os.getpid()}-"
    for d in ("/dev/shm", tempfile.gettempdir()):
        if os.path.isdir(d) and os.access(d, os.W_OK):
            _sweep(d)
            if d == "/dev/shm":
                return tempfile.mkdtemp(prefix=prefix, dir=d)
    return tempfile.mkdtemp(prefix=prefix)


def _sweep(d: str) -> None:
    """Remove ``lockstep-par-<pid>-*`` folders in ``d`` whose process no longer exists."""
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(r"lockstep-par-(\d+)-\w+", name)
        if m is None or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(d, name), ignore_errors=True)
        except OSError:  # alive (another user's): not ours to remove
            pass


# ---------------------------------------------------------------------------------------------
# worker
# ---------------------------------------------------------------------------------------------
class _Worker:
    def __init__(self, model, k: int, n: int, tmp: str, init: list, conn, counters, numbered: bool = False):
        self.model, self.k, self.n, self.tmp, self.conn, self.counters = model, k, n, tmp, conn, counters
        # numbered (forked workers, structured states): states are stored, deduplicated and sent as
        # ``_Numbering`` keys (tuples of small numbers); else (the Ray partitions, flat states) as they are
        self.numbering = _Numbering(n) if numbered else None
        self.visited: dict[Any, int] = {}
        self.keys: list = []  # local index -> the state's key (the state itself when not numbered)
        self.parent: list[int] = []  # global id (local index * n + owner) or -1
        self.via: list = []
        self.frontier: list[int] = []
        self.franks: list[int] = []
        self.fresh: list | None = []  # the initial states, as objects (later levels build theirs in ``expand``)
        # whether the frontier's invariants are still to check: the merge that found its states left
        # them to the level's expansion, where work stealing spreads them (``merge``, ``expand``)
        self.inv_due = False
        for rank, s in init:
            key = self._initial_key(s)
            self.visited[key] = len(self.keys)
            self.frontier.append(len(self.keys))
            self.franks.append(rank)
            self.keys.append(key)
            self.fresh.append(s)
            self.parent.append(-1)
            self.via.append(None)
        self.out: dict | None = None  # this level's successors, until they are shipped (``_filer``)
        self.outs: list = []
        self.encoders: list | None = None  # per destination (states sent as they are, compact transport)
        self.decoders: list | None = None  # per source
        self.cands: dict[tuple, tuple] = {}
        self.level_start = 0
        self.newkeys: list[int] = []
        # CPU seconds per phase, states sent and kept, and per level the CPU of the expand and of the
        # merge phase (each phase ends at a barrier: the slowest worker sets the pace)
        self.timing = {"expand": 0.0, "dump": 0.0, "load": 0.0, "dedup": 0.0, "invariant": 0.0, "sent": 0, "kept": 0,
                       "level_expand": [], "level_merge": []}

    def _initial_key(self, s):
        """An initial state's key in this worker."""
        return s if self.numbering is None else self.numbering.key(s)

    @property
    def states(self) -> list:
        """Every state this worker owns, in local index order (rebuilt from the keys when numbered)."""
        return [self.state(i) for i in range(len(self.keys))]

    def state(self, i: int):
        """The state with local index ``i``."""
        key = self.keys[i]
        return key if self.numbering is None else self.numbering.state(key)

    def serve(self) -> None:
        conn = self.conn
        while True:
            msg = _loads(conn.recv_bytes())
            cmd = msg[0]
            try:
                if cmd == "expand":
                    reply = self.expand(*msg[1:])
                elif cmd == "merge":
                    reply = self.merge(*msg[1:])
                elif cmd == "inv":
                    reply = self.check_invariants(*msg[1:])
                elif cmd == "cand":
                    reply = self.cands[msg[1]]
                elif cmd == "node":
                    reply = self.node(msg[1])
                elif cmd == "stop":
                    ru = resource.getrusage(resource.RUSAGE_SELF)
                    self.timing.update(user=ru.ru_utime, sys=ru.ru_stime, minflt=ru.ru_minflt)  # system time: page faults, mostly
                    self.timing.update(symmetry_report(self.model))
                    conn.send_bytes(_dumps(("ok", (ru.ru_maxrss / 1024.0, ru.ru_utime + ru.ru_stime, self.timing,
                                                   self.fired()))))
                    return
                else:
                    raise ValueError(f"unknown command {cmd!r}")
            except BaseException as e:  # noqa: BLE001 - reported to the parent, which re-raises
                conn.send_bytes(_dumps(("error", _error_payload(e))))
                continue
            conn.send_bytes(_dumps(("ok", reply)))

    def node(self, i: int) -> tuple:
        """(state, parent's global id, action) of the state with local index ``i``."""
        return self.state(i), self.parent[i], self.via[i]

    def fired(self):
        """The transitions this worker's model saw fire (coverage), or None when the model reports none."""
        return set(self.model.fired) if COVERAGE in features_of(self.model) else None

    def expand(self, depth: int, ranks, deadline: float | None):
        """Expand this worker's share of the frontier in the global (serial) order ``ranks`` gives its
        states, classify end states and violations where they are found, and ship every successor
        to its owner (``_filer`` and ``_ship``, which the keyed workers override).  When the merge
        left the frontier's invariants to this phase, each state's invariant is checked first
        (``_check_first``)."""
        k = self.k
        fresh = self.fresh  # the initial states at depth 0; a later level builds each where it expands it
        self.fresh = None
        if ranks is not None:  # the global order of the states this worker added last level
            order = np.argsort(ranks, kind="stable")
            self.frontier = (order + self.level_start).tolist()
            self.franks = ranks[order].tolist()
            fresh = None
        classify_end = self.model.classify_end
        frontier, franks = self.frontier, self.franks
        nf = len(frontier)
        trans = np.zeros(nf, dtype=np.int64)
        ends = np.zeros(nf, dtype=np.int8)  # 0 no end, 1 clean end, 2 fail-fast end, 3 violation
        cands: dict[tuple, tuple] = {}
        check = self._check_first(depth, cands)
        file = self._filer(depth, cands)
        counters = self.counters
        done_trans = 0
        t0 = _cpu()
        timed_out = False
        pos = -1
        for lo, hi in self._own_ranges(depth, nf):
            # the states of a range are built (and their invariants checked) together: a batch keeps
            # the decoding tables and the invariant's code in the caches, which one state at a time
            # between two expansions does not (about 1.7 us a state on pp1 mesh 4)
            states = fresh[lo:hi] if fresh is not None else self._states(frontier[lo:hi])
            if check is not None and not check(states, franks[lo:hi], frontier[lo:hi]):
                continue
            for pos in range(lo, hi):
                s = states[pos - lo]
                r = franks[pos]
                i = frontier[pos]
                j = file(s, i, r)
                trans[pos] = j
                done_trans += j
                if j == 0:
                    ends[pos] = _end_kind(classify_end(s), cands, depth, r, i * self.n + k)
                if pos & 255 == 255:
                    counters[k] = done_trans
                    if deadline is not None and time.perf_counter() > deadline:
                        timed_out = True
                        break
            if timed_out:
                break
        done = pos + 1  # the states expanded here are a prefix: others may have taken the rest (``_steal``)
        trans, ends = trans[:done], ends[:done]
        del fresh
        counters[k] = done_trans
        ranks_done = np.asarray(franks[:done], dtype=np.int64)
        if not timed_out:
            timed_out, stolen = self._steal(depth, deadline, cands, done_trans, check)
            if stolen is not None:
                ranks_done, trans, ends = (np.concatenate(x) for x in zip((ranks_done, trans, ends), stolen))
        self.cands = cands
        tm = self.timing
        t1 = _cpu()
        if not timed_out:  # (a level cut short ships nothing: the search ends there)
            gc.disable()  # the batches are acyclic: collecting while they are built is pure cost
            self._ship(depth)
            if GC_MODE not in ("off", "level"):
                gc.enable()
        tm["expand"] += t1 - t0
        tm["dump"] += _cpu() - t1
        tm["level_expand"].append(_cpu() - t0)
        return timed_out, ranks_done, trans, ends, list(cands)

    def _check_first(self, depth: int, cands: dict):
        """None when the frontier's invariants were checked at the last merge; else a function that
        checks the invariants of some frontier states (the states, their serial ranks, and their
        owner's local indexes, or their global ids when ``gids``) and says whether to expand them:
        not once a violation was found at this level, since the search ends with it (the parent
        merges nothing more).  A violation found here goes into ``cands`` under (depth, -1, rank):
        before every stuck state and violating end state of this level (their keys have a rank >= 0
        there) and every edge violation (depth + 1), and among themselves in serial discovery order
        (the ranks are that order), as the serial search, which checks each state where it finds
        it, reports them."""
        if not self.inv_due:
            return None
        self.inv_due = False
        invariant, n, k = self.model.invariant, self.n, self.k
        hit = []

        def check(states: list, ranks: list, ids: list, gids: bool = False) -> bool:
            for x, v in enumerate(map(invariant, states)):
                if v is not None:
                    cands[(depth, -1, ranks[x])] = (_INV, ids[x] if gids else ids[x] * n + k, None, v)
                    hit.append(x)
            return not hit
        return check

    def _own_ranges(self, depth: int, nf: int):
        """The ranges of positions of this worker's frontier it expands itself, in order (all of
        them; a keyed worker may leave a suffix to the others, or all of it, each worker then
        expanding a serial range of the level: ``_KeyedWorker._own_ranges``)."""
        return ((0, nf),)

    def _steal(self, depth: int, deadline, cands: dict, done_trans: int, check) -> tuple:
        """Expand states of other workers' frontiers after this worker's own (checking each state's
        invariant first with ``check`` where it is not None): (timed out, None or the stolen
        states' (ranks, successor counts, end kinds)).  Only keyed workers steal."""
        return False, None

    def _filer(self, depth: int, cands: dict):
        """A function that files the successors of one frontier state (state, local index, global
        rank) for shipping, and its violations in ``cands``, and returns how many successors it has.
        This level's successors gather in ``self.out``: key -> (serial-order key, parent's global id,
        action), the first occurrence (the smallest serial-order key) only."""
        k, n = self.k, self.n
        successors = self.model.successors
        key_from = self.numbering.key_from if self.numbering is not None else None
        keys = self.keys
        out = self.out = {}

        def file(s, i, r):
            kb = r << _SH
            gid = i * n + k
            j = 0
            for a, nx in successors(s):
                if isinstance(nx, Violation):
                    if a is None:
                        cands[(depth, r, j)] = (_STUCK, gid, None, nx)
                    else:
                        cands[(depth + 1, r, j)] = (_EDGE, gid, a, nx)
                else:
                    if key_from is not None:
                        nx = key_from(nx, s, keys[i])
                    out.setdefault(nx, (kb | j, gid, a))  # the merge drops states already visited
                j += 1
            return j
        return file

    def _ship(self, depth: int) -> None:
        """Route this level's successors to their owners and send the others theirs."""
        outs = self.outs = self._route(self.out)
        self.out = None
        self.timing["kept"] += len(outs[self.k][0])
        self._send(depth, outs)

    def merge(self, depth: int, check: bool = True):
        """Deduplicate this level's successors for this worker (its own and the other workers') against
        its visited set, a state reached by several parents keeping the first in serial order; check
        the invariants of the new states (``check``; else the next expansion checks them, where work
        stealing spreads them: ``_check_first``); return their serial-order keys and the violations
        found."""
        visited, keys, parent, via = self.visited, self.keys, self.parent, self.via
        start = self.level_start = len(keys)
        newkeys: list[int] = []

        def take(items, okeys, pgids, vias):
            for nx, key, pgid, a in zip(items, okeys, pgids, vias):
                new = len(keys)
                idx = visited.setdefault(nx, new)
                if idx == new:
                    keys.append(nx)
                    parent.append(pgid)
                    via.append(a)
                    newkeys.append(key)
                elif idx >= start and key < newkeys[idx - start]:
                    newkeys[idx - start] = key
                    parent[idx] = pgid
                    via[idx] = a

        tm = self.timing
        t_start = _cpu()
        batches = self._incoming(depth)
        t0 = _cpu()
        tm["load"] += t0 - t_start
        for batch in batches:
            tm["rows"] = tm.get("rows", 0) + len(batch[0])
            take(*batch)
        t1 = _cpu()
        tm["dedup"] += t1 - t0
        self.newkeys = newkeys
        # (due on every worker alike, new states or not: a worker with none of its own may steal others')
        self.inv_due = True
        inv = self.check_invariants(depth) if check else []
        if GC_MODE == "freeze":
            gc.freeze()  # the visited set lives until the worker exits: never scan it again
        elif GC_MODE == "level":
            gc.collect(1)  # cyclic garbage of this level (there is rarely any); the survivors go to
            gc.freeze()    # the permanent generation: the visited set lives until the worker exits
        tm["invariant"] += _cpu() - t1
        tm["level_merge"].append(_cpu() - t_start)
        return np.asarray(newkeys, dtype=np.int64), inv

    def _states(self, idx: list) -> list:
        """The states with local indexes ``idx``."""
        keys = self.keys
        ks = [keys[i] for i in idx]
        return ks if self.numbering is None else list(map(self.numbering.state, ks))

    def check_invariants(self, depth: int, cut: int | None = None) -> list:
        """Check the invariants of the states the merge at ``depth`` added (those a parent of rank at
        most ``cut`` found, where the search stops at a max-states bound): the violations' keys,
        (depth + 1, parent's rank, successor index), as a serial search would have found them.  For
        a level the search ends with (a bound, a timeout, a violation) and at the merge itself."""
        k, n, start, newkeys = self.k, self.n, self.level_start, self.newkeys
        inv = []
        for off, v in enumerate(map(self.model.invariant, self._states(range(start, start + len(newkeys))))):
            key = newkeys[off]
            if v is not None and (cut is None or key >> _SH <= cut):
                c = (depth + 1, key >> _SH, key & _MASK)
                self.cands[c] = (_INV, (start + off) * n + k, None, v)
                inv.append(c)
        self.inv_due = False
        return inv

    def _incoming(self, depth: int) -> list:
        """This level's successors for this worker, per source (its own first): (keys, serial-order
        keys, parents' global ids, actions)."""
        k = self.k
        batches = [(self.outs[k][0], *_columns(self.outs[k][1]))]
        self.outs = []
        for h in range(self.n):
            if h != k:
                items, metas = self._receive(depth, h)
                batches.append((items, *_columns(metas)))
        return batches

    # -- transport (the Ray partitions, model/ray_search.py, override these three) ------------
    def _route(self, out: dict) -> list[tuple[list, list]]:
        """Split this level's successors by owner (``_route_hash(state) % n`` for keys, else
        ``hash(state) % n``: forked workers share the hash seed) into (keys, metas) lists per owner, in
        ``out``'s order."""
        n = self.n
        outs = [([], []) for _ in range(n)]
        where = self.numbering.route if self.numbering is not None else hash
        for nx, meta in out.items():
            sl, ml = outs[where(nx) % n]
            sl.append(nx)
            ml.append(meta)
        return outs

    def _send(self, depth: int, outs: list) -> None:
        """Ship ``outs[h]`` (h != k) to worker h: one batch per destination, a file under the run's tmp
        dir (numbered keys with the values h has not had from us yet, or the states as they are)."""
        k, tm = self.k, self.timing
        for h in range(self.n):
            if h != k:
                items, metas = outs[h]
                if self.numbering is not None:
                    batch = self.numbering.batch(h, items, metas)
                elif TRANSPORT == "compact":
                    if self.encoders is None:
                        self.encoders = [_Encoder() for _ in range(self.n)]
                    batch = self.encoders[h].batch(items, metas)
                else:
                    batch = ("raw", items, metas)
                with open(os.path.join(self.tmp, f"{depth}.{k}.{h}"), "wb") as f:
                    _dump(batch, f)
                tm["sent"] += len(items)
                outs[h] = None

    def _receive(self, depth: int, h: int):
        """The batch worker h sent this worker at ``depth``: (keys in this worker's numbering, metas)."""
        path = os.path.join(self.tmp, f"{depth}.{h}.{self.k}")
        gc.disable()
        # batches written by a sibling worker of this search into the 0700 directory the parent
        # created (mkdtemp): our own states, never a user's file
        with open(path, "rb") as f:
            batch = safepickle.load(f, _REBUILDERS)
        if batch[0] == "raw":
            out = batch[1], batch[2]
        elif batch[0] == "enc":
            if self.decoders is None:
                self.decoders = [_Decoder() for _ in range(self.n)]
            out = self.decoders[h].unbatch(batch)
        else:
            out = self.numbering.unbatch(h, batch)
        if GC_MODE not in ("off", "level"):
            gc.enable()
        os.unlink(path)
        return out


def _end_kind(kind, cands: dict, depth: int, r: int, gid: int) -> int:
    """What ``classify_end`` said of a state without successors, for a worker's reply: 1 a clean
    end, 2 a fail-fast end, 3 a violation (filed in ``cands`` under the state's global id ``gid``)."""
    if kind == FAIL_FAST:
        return 2
    if isinstance(kind, Violation):
        cands[(depth, r, _END)] = (_ENDV, gid, None, kind)
        return 3
    return 1


class _NthSuccessor(int):
    """The action of a state found by a keyed worker: the index of the successor of its parent that
    reached it (the coordinator asks its own model for that successor's action)."""


class _KeyedWorker(_Worker):
    """A worker of a search whose states have int keys (model/features.py's ``keyed`` and
    ``key-fields``: the role worlds without monitors, reduced or not).  States are stored,
    deduplicated and sent as the model's keys; unreduced, a worker expands with the model's
    ``keyed_successors``, as the serial explorer does, so a successor usually comes as its key
    already (reduced, successors are states, keyed after ``key_parent``).

    A level's successors leave the worker as one file (``_send_keys``): uint32 matrices of their keys
    in origin coordinates (``fieldkeys.FieldKeys``: the owner comes from the values' hashes, the
    receiver translates the numbers into its own), in owner order.  A successor carries only its
    serial-order key (parent's frontier position, successor index); the parent's global id is
    computed from it for the whole batch, and no action travels: the state keeps the successor
    index, and the coordinator rebuilds the action of a counterexample's step from the parent state
    (``_Coordinator._path_to``).  A successor that is its own key (a state with fabric entries) is
    routed by ``hash`` and travels as it is."""

    def __init__(self, model, k: int, n: int, tmp: str, init: list, conn, counters, steal: tuple | None = None):
        self.fk = FieldKeys(model, n, k)  # (made before this worker numbers anything: see ``shared``)
        self.by_keys = model.keyed()  # expand with keyed_successors (else successors, keyed one by one)
        self.mine = self.level = self.objs = None
        self.claims, self.claim_lock = steal if steal is not None else (None, None)
        self.stolen: list = []  # this level's stolen chunks: (serial ranks, global ids)
        self.level_sizes: list | None = None  # STEAL = "ranges": every worker's published frontier size
        super().__init__(model, k, n, tmp, init, conn, counters)

    def _initial_key(self, s):
        return self.model.state_key(s)

    def state(self, i: int):
        return self.model.state_of(self.keys[i])

    def node(self, i: int) -> tuple:
        v = self.via[i]
        return self.state(i), self.parent[i], None if v is None else _NthSuccessor(v & _MASK)

    def _states(self, idx: list) -> list:
        keys = self.keys
        return list(map(self.model.state_of, [keys[i] for i in idx]))

    def _filer(self, depth: int, cands: dict, chunk: tuple | None = None):
        """``_Worker._filer`` on keys: ``self.out`` maps int keys to their serial-order key, and
        ``self.objs`` the successors that are their own keys.  With ``chunk`` (keys, parents' global
        ids, out, objs): a chunk of another worker's frontier (``_steal``), indexed by position in
        the chunk, whose successors gather in the chunk's own two dicts."""
        k, n = self.k, self.n
        model = self.model
        key_of, successors, plain, key_parent = model.state_key, model.keyed_successors, model.successors, model.key_parent
        by_keys = self.by_keys
        if chunk is None:
            keys, gids = self.keys, None
            out = self.out = {}
            objs = self.objs = {}
        else:
            keys, gids, out, objs = chunk

        def file(s, i, r):
            kb = r << _SH
            if by_keys:
                succs = successors(s, keys[i])
            else:  # a reduced search: the successors are states, keyed here by what they change
                succs = plain(s)
                key_parent(s, keys[i])
            j = 0
            for a, nx in succs:
                if type(nx) is int:
                    out.setdefault(nx, kb | j)
                elif isinstance(nx, Violation):
                    gid = i * n + k if gids is None else gids[i]
                    if a is None:
                        cands[(depth, r, j)] = (_STUCK, gid, None, nx)
                    else:
                        cands[(depth + 1, r, j)] = (_EDGE, gid, a, nx)
                else:
                    nx = key_of(nx)
                    (out if type(nx) is int else objs).setdefault(nx, kb | j)
                j += 1
            return j
        return file

    # -- work stealing within a level ------------------------------------------------------------
    # From depth 1 on, a worker with a frontier of at least 4 chunks publishes its back half (in serial
    # order) in a file, ``s{depth}.{k}``: the states' keys in origin coordinates, their serial ranks and
    # their global ids.  Five shared int64 per worker (``self.claims``), under one lock, say what is
    # left of it: the level, the next position the owner takes (it expands the front half, then the
    # published part a chunk at a time), the end of what is left (a thief takes from the back: a share
    # of what is left, at least a chunk) and the published range.  A worker that has expanded what it
    # could of its own frontier takes from the worker with the most left, until no published frontier
    # of this level has any.  Every worker knows every value of a frontier state by then (each value
    # found at the last level went to every worker as news), so a thief translates the keys into its
    # own numbers.  Whoever expands a state, its successors carry the same serial-order key, and its
    # violations and end kind the owner's global id: the search is the serial one whichever worker
    # expands what.
    def _own_ranges(self, depth: int, nf: int):
        claims = self.claims
        if claims is None or depth == 0 or STEAL == "off":
            return ((0, nf),)
        old = os.path.join(self.tmp, f"s{depth - 1}.{self.k}")  # every thief is done with it
        if os.path.exists(old):
            os.unlink(old)
        if _RANGES[STEAL]:  # publish it all; each worker expands one serial range of the level (``_ranges``)
            if not self._publish(depth, 0, nf):  # none, or states that are their own keys (size -1)
                with self.claim_lock:
                    self.claims[_CLAIM * self.k:_CLAIM * (self.k + 1)] = [depth, 0, 0, 0, -1 if nf else 0]
            claims, n = self.claims, self.n
            while True:  # (under the lock: an offer writes its five slots under it, level first)
                with self.claim_lock:
                    if all(claims[_CLAIM * v] == depth for v in range(n)):
                        sizes = [int(claims[_CLAIM * v + 4]) for v in range(n)]
                        break
                time.sleep(0)
            if min(sizes) < 0:  # a frontier that cannot travel as numbers: each expands its own this level
                self.level_sizes = None
                return ((0, nf),)
            self.level_sizes = sizes
            return ()
        force = STEAL == "force"
        first = 0 if force else nf // 2
        if (force or nf - first >= 2 * STEAL_CHUNK) and self._publish(depth, first, nf):
            return () if force else self._claimed(first)
        if force:  # nothing published: the neighbour waiting for this level's frontier finds it empty
            self._offer(depth, 0, 0)
        return ((0, nf),)

    def _offer(self, depth: int, first: int, nf: int) -> None:
        c = _CLAIM * self.k
        with self.claim_lock:
            self.claims[c:c + _CLAIM] = [depth, first, nf, first, nf]

    def _publish(self, depth: int, first: int, nf: int) -> bool:
        """Offer positions ``first``..``nf`` of this level's frontier to the other workers (False
        when one of those states is its own key, which does not travel as numbers)."""
        k, n, fk = self.k, self.n, self.fk
        keys = self.keys
        idx = self.frontier[first:]
        ks = [keys[i] for i in idx]
        if not ks or any(type(x) is not int for x in ks):
            return False
        ow, on = fk.origins(fk.matrix(ks))
        ranks = np.asarray(self.franks[first:], dtype=np.int64)
        gids = np.asarray(idx, dtype=np.int64) * n + k
        fd = os.open(os.path.join(self.tmp, f"s{depth}.{k}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.writev(fd, [on.tobytes(), ow.tobytes(), ranks.tobytes(), gids.tobytes()])
        finally:
            os.close(fd)
        self._offer(depth, first, nf)
        return True

    def _claimed(self, first: int):
        """This worker's own positions: those it did not publish, then its published chunks from the
        front, as long as no thief has taken them."""
        yield 0, first
        while True:
            lo, hi = self._front(STEAL_CHUNK)
            if lo >= hi:
                return
            yield lo, hi

    def _front(self, chunk: int, guided: bool = False) -> tuple[int, int]:
        """The next ``chunk`` positions at the front of what is left of this worker's own (lo, hi):
        empty once a thief has taken the rest.  ``guided``: fewer (half of what is left, at least
        ``STEAL_CHUNK``) near the end, so that the level's last claims are short."""
        claims, c = self.claims, _CLAIM * self.k
        with self.claim_lock:
            lo = claims[c + 1]
            if guided:
                chunk = min(chunk, max(STEAL_CHUNK, (claims[c + 2] - lo) // 2))
            hi = min(lo + chunk, claims[c + 2])
            claims[c + 1] = max(lo, hi)
        return lo, hi

    def _claim(self, depth: int):
        """Positions from the back of a published frontier of this level, the one with the most left
        (this worker's own last; in "force" mode the first other with any, a chunk at a time): (owner,
        first position, end, frontier size), or None."""
        claims, k = self.claims, self.k
        with self.claim_lock:
            best, left = -1, 0
            for v in (*range(k + 1, self.n), *range(k + 1)):
                c = _CLAIM * v
                if claims[c] == depth and claims[c + 2] - claims[c + 1] > left:
                    best, left = v, claims[c + 2] - claims[c + 1]
                    if v != k and STEAL == "force":
                        break
            if best < 0:
                return None
            c = _CLAIM * best
            hi = claims[c + 2]
            # a share of what is left, down to one chunk (each take costs a read and a translation)
            size = STEAL_CHUNK if STEAL == "force" else max(STEAL_CHUNK, left // (2 * self.n))
            lo = claims[c + 2] = max(claims[c + 1], hi - size)
            return best, lo, hi, claims[c + 3], claims[c + 4]

    def _ranges(self, depth: int, sizes: list):
        """STEAL = "ranges": once every worker has published its whole frontier, worker k expands the
        k-th of n consecutive ranges of the level's serial ranks (the serial search's neighbourhoods:
        states next to each other in serial order share successors, which the level's first
        deduplication then merges before they travel), a chunk at a time from its front; then it takes
        chunks from the back of the range with the most left, as work stealing does.  Its cursor is
        (next rank, end rank) in its claims, marked ready by -1 in the "published from" slot."""
        k, n, claims, lock = self.k, self.n, self.claims, self.claim_lock
        total = sum(sizes)
        c = _CLAIM * k
        lo, hi = k * total // n, (k + 1) * total // n
        chunk = max(STEAL_CHUNK, min(RANGE_CHUNK, (hi - lo) // 4))  # (a small level: still a few claims)
        with lock:
            claims[c + 1:c + 4] = [lo, hi, -1]
        files: dict = {}  # owner -> its published frontier (``_published``), read once a level
        while True:
            lo, hi = self._front(chunk, guided=True)
            if lo >= hi:
                break
            yield self._read_ranks(depth, sizes, files, lo, hi)
        while True:
            with lock:
                best, left = -1, 0
                for v in (*range(k + 1, n), *range(k)):
                    cv = _CLAIM * v
                    if claims[cv] == depth and claims[cv + 3] == -1 and claims[cv + 2] - claims[cv + 1] > left:
                        best, left = v, claims[cv + 2] - claims[cv + 1]
                if best < 0:
                    return
                cv = _CLAIM * best
                hi = claims[cv + 2]
                # a share of what is left while there is much; near the end, half of it, at least a small
                # chunk (the level's last claims are short, so the workers finish it close together)
                take = max(left // (2 * n), min(chunk, max(STEAL_CHUNK, left // 2)))
                lo = claims[cv + 2] = max(claims[cv + 1], hi - take)
            yield self._read_ranks(depth, sizes, files, lo, hi)

    def _read_ranks(self, depth: int, sizes: list, files: dict, lo: int, hi: int) -> tuple:
        """The frontier states of serial ranks lo..hi, read from every owner's published frontier
        (``files``: owner -> its file's (origin numbers, origin workers, serial ranks, global ids),
        read whole on first use: one read a level, not three per chunk): (keys in this worker's
        numbers, serial ranks, global ids), in serial order."""
        fk = self.fk
        parts = []
        for v, nf in enumerate(sizes):
            if not nf:
                continue
            got = files.get(v)
            if got is None:
                got = files[v] = self._published(depth, v, nf)
            on, ow, rv, gids = got
            a, b = (int(x) for x in np.searchsorted(rv, [lo, hi]))
            if a < b:
                parts.append((ow[a:b], on[a:b], rv[a:b], gids[a:b]))
        rk = np.concatenate([p[2] for p in parts])
        order = np.argsort(rk, kind="stable")
        keys = fk.translate([(p[0], p[1]) for p in parts])
        return [keys[i] for i in order.tolist()], rk[order], np.concatenate([p[3] for p in parts])[order]

    def _published(self, depth: int, v: int, nf: int) -> tuple:
        """Worker v's whole published frontier of this level (``_publish``, ``nf`` states): (origin
        numbers, origin workers, serial ranks, global ids), views of one read."""
        fk = self.fk
        sz, wz = fk.size, fk.nf * np.dtype(fk.wdtype).itemsize
        want = nf * (sz + wz + 16)
        fd = os.open(os.path.join(self.tmp, f"s{depth}.{v}"), os.O_RDONLY)
        try:
            buf = os.pread(fd, want, 0)
        finally:
            os.close(fd)
        if len(buf) != want:
            raise RuntimeError(f"worker {v}'s frontier file of level {depth}: {len(buf)} bytes, expected {want}")
        on = np.frombuffer(buf, dtype="<u4", count=nf * fk.nf).reshape(nf, fk.nf)
        ow = np.frombuffer(buf, dtype=fk.wdtype, count=nf * fk.nf, offset=nf * sz).reshape(nf, fk.nf)
        rv = np.frombuffer(buf, dtype=np.int64, count=nf, offset=nf * (sz + wz))
        gids = np.frombuffer(buf, dtype=np.int64, count=nf, offset=nf * (sz + wz + 8))
        return on, ow, rv, gids

    def _read_chunk(self, depth: int, v: int, lo: int, hi: int, first: int, nf: int) -> tuple:
        """Positions lo..hi of worker v's frontier, published from position ``first`` to ``nf``:
        (keys in this worker's numbers, serial ranks, global ids)."""
        fk = self.fk
        fd = os.open(os.path.join(self.tmp, f"s{depth}.{v}"), os.O_RDONLY)
        try:
            m, total, lo = hi - lo, nf - first, lo - first
            sz, wz = fk.size, fk.nf * np.dtype(fk.wdtype).itemsize
            on = np.frombuffer(os.pread(fd, m * sz, lo * sz), dtype="<u4").reshape(m, fk.nf)
            base = total * sz
            ow = np.frombuffer(os.pread(fd, m * wz, base + lo * wz), dtype=fk.wdtype).reshape(m, fk.nf)
            base += total * wz
            ranks = np.frombuffer(os.pread(fd, 8 * m, base + 8 * lo), dtype=np.int64)
            gids = np.frombuffer(os.pread(fd, 8 * m, base + 8 * total + 8 * lo), dtype=np.int64)
        finally:
            os.close(fd)
        return fk.translate([(ow, on)]), ranks, gids

    def _steal(self, depth: int, deadline, cands: dict, done_trans: int, check) -> tuple:
        self.stolen = []
        if self.claims is None or depth == 0 or STEAL == "off":
            return False, None
        k, n = self.k, self.n
        state_of, classify_end = self.model.state_of, self.model.classify_end
        out, objs = self.out, self.objs
        got = []
        if STEAL == "force":  # the next worker's frontier first: wait until it has published it
            while self.claims[_CLAIM * ((k + 1) % n)] != depth:
                time.sleep(0)
        if _RANGES[STEAL] and self.level_sizes is None:
            return False, None
        chunks = self._ranges(depth, self.level_sizes) if _RANGES[STEAL] else iter(lambda: self._claim(depth), None)
        for chunk in chunks:
            keys, ranks, gids = chunk if _RANGES[STEAL] else self._read_chunk(depth, *chunk)
            rl, gl = ranks.tolist(), gids.tolist()
            cout: dict = {}
            cobjs: dict = {}
            file = self._filer(depth, cands, (keys, gl, cout, cobjs))
            m = len(keys)
            trans = np.zeros(m, dtype=np.int64)
            ends = np.zeros(m, dtype=np.int8)
            states = list(map(state_of, keys))
            if check is None or check(states, rl, gl, gids=True):
                for p in range(m):
                    s = states[p]
                    j = trans[p] = file(s, p, rl[p])
                    if j == 0:
                        ends[p] = _end_kind(classify_end(s), cands, depth, rl[p], gl[p])
            for into, part in ((out, cout), (objs, cobjs)):  # the smallest serial-order key wins
                for key, sk in part.items():
                    old = into.get(key)
                    if old is None or sk < old:
                        into[key] = sk
            done_trans += int(trans.sum())
            self.counters[k] = done_trans
            got.append((ranks, trans, ends))
            self.stolen.append((ranks, gids))
            if _RANGES[STEAL]:
                self.timing["foreign"] = self.timing.get("foreign", 0) + int((gids % n != k).sum())
            elif chunk[0] != k:
                self.timing["foreign"] = self.timing.get("foreign", 0) + m  # states another worker owns
            if deadline is not None and time.perf_counter() > deadline:
                return True, None
        if not got:
            return False, None
        return False, tuple(np.concatenate(x) for x in zip(*got))

    def _ship(self, depth: int) -> None:
        n = self.n
        franks = np.asarray(self.franks, dtype=np.int64)
        gids = np.asarray(self.frontier, dtype=np.int64) * n + self.k
        if self.stolen:  # the parents of successors of stolen states too, in serial order
            franks = np.concatenate([franks] + [r for r, _ in self.stolen])
            gids = np.concatenate([gids] + [g for _, g in self.stolen])
            order = np.argsort(franks, kind="stable")
            franks, gids = franks[order], gids[order]
            self.stolen = []
        self._route_keys(self.out, self.objs, franks, gids)
        self.out = self.objs = None
        self._send_keys(depth)

    def _route_keys(self, out: dict, objs: dict, franks: np.ndarray, gids: np.ndarray) -> None:
        """Sort this level's successors by owner: ``self.mine`` (what this worker owns: keys, their
        serial-order keys, their parents' global ids, then the same for object keys) and
        ``self.level`` (every successor's key matrix, serial-order keys and parents' ids, in owner
        order, the row bounds of each owner, and the object keys per owner)."""
        n, k, fk = self.n, self.k, self.fk

        def parents(okeys: np.ndarray) -> np.ndarray:
            return gids[np.searchsorted(franks, okeys >> _SH)]

        ks = list(out)
        oks = np.fromiter(out.values(), dtype=np.int64, count=len(ks))
        mat = fk.matrix(ks)
        owner = fk.owners(mat, n)
        order = np.argsort(owner, kind="stable")
        bounds = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=n), out=bounds[1:])
        mine = order[bounds[k]:bounds[k + 1]]
        oks, pg = oks[order], parents(oks)[order]
        per: list = [([], []) for _ in range(n)]  # object keys per owner: (keys, serial-order keys)
        for nx, ok in objs.items():
            o = per[hash(nx) % n]
            o[0].append(nx)
            o[1].append(ok)
        objs_by = [(o[0], o[1], parents(np.asarray(o[1], dtype=np.int64)).tolist()) if o[0] else None for o in per]
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        self.mine = ([ks[x] for x in mine.tolist()], oks[lo:hi], pg[lo:hi], objs_by[k])
        objs_by[k] = None
        self.level = (mat[order], oks, pg, bounds, objs_by)
        tm = self.timing
        tm["kept"] += hi - lo + (len(self.mine[3][0]) if self.mine[3] else 0)
        tm["objects"] = tm.get("objects", 0) + len(objs)

    # One file per worker and level holds what it sends every other worker: a header of n + 2 int64
    # (the row bounds per owner, then the size of the trailing pickle), the keys in origin
    # coordinates (``FieldKeys.origins``: the numbers, then the origin workers), the serial-order
    # keys and the parents' ids of every row (in owner order: each receiver reads its rows with four
    # preads), then, when there is any, a pickle of (news, object keys per owner).
    def _send_keys(self, depth: int) -> None:
        k, n, fk = self.k, self.n, self.fk
        mat, oks, pg, bounds, objs_by = self.level
        self.level = None
        ow, on = fk.origins(mat)
        news = fk.news()
        extra = _dumps((news, objs_by)) if news or any(objs_by) else b""
        header = np.append(bounds, np.int64(len(extra)))
        path = os.path.join(self.tmp, f"{depth}.{k}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.writev(fd, [header.tobytes(), on.tobytes(), ow.tobytes(), oks.tobytes(), pg.tobytes(), extra])
        finally:
            os.close(fd)
        old = os.path.join(self.tmp, f"{depth - 1}.{k}")  # last level's: every worker has read it
        if depth and os.path.exists(old):
            os.unlink(old)
        self.timing["sent"] += int(bounds[n] - (bounds[k + 1] - bounds[k])) + sum(len(o[0]) for o in objs_by if o)

    def _receive_keys(self, depth: int, h: int) -> tuple:
        """What worker ``h`` sent this worker at ``depth``: ((origin workers, origin numbers) of the
        keys, serial-order keys, parents' ids, object keys and theirs or None, (h, h's news) or
        None)."""
        n, k, fk = self.n, self.k, self.fk
        fd = os.open(os.path.join(self.tmp, f"{depth}.{h}"), os.O_RDONLY)
        try:
            hb = 8 * (n + 2)
            header = np.frombuffer(os.pread(fd, hb, 0), dtype=np.int64)
            total, lo, hi, nextra = int(header[n]), int(header[k]), int(header[k + 1]), int(header[n + 1])
            m, nf, sz, wz = hi - lo, fk.nf, fk.size, fk.nf * np.dtype(fk.wdtype).itemsize
            on = np.frombuffer(os.pread(fd, m * sz, hb + lo * sz), dtype="<u4").reshape(m, nf)
            base = hb + total * sz
            ow = np.frombuffer(os.pread(fd, m * wz, base + lo * wz), dtype=fk.wdtype).reshape(m, nf)
            base += total * wz
            oks = np.frombuffer(os.pread(fd, 8 * m, base + 8 * lo), dtype=np.int64)
            pg = np.frombuffer(os.pread(fd, 8 * m, base + 8 * total + 8 * lo), dtype=np.int64)
            objs = news = None
            if nextra:
                gc.disable()
                # written by a sibling worker of this search into the 0700 directory the parent made
                news, objs_by = _loads(os.pread(fd, nextra, base + 16 * total))
                if GC_MODE not in ("off", "level"):
                    gc.enable()
                objs = objs_by[k]
        finally:
            os.close(fd)
        return (ow, on), oks, pg, objs, (h, news) if nextra else None

    def _incoming(self, depth: int) -> list:
        k = self.k
        items, oks, pg, objs = self.mine
        self.mine = None
        got = [self._receive_keys(depth, h) for h in range(self.n) if h != k]
        self.fk.learn([g[4] for g in got if g[4]])  # (before any key is translated)
        items = items + self.fk.translate([g[0] for g in got])
        oks = np.concatenate([oks] + [g[1] for g in got]).tolist()
        pg = np.concatenate([pg] + [g[2] for g in got]).tolist()
        # a state keeps its serial-order key where the others keep their action (``node``)
        return [(items, oks, pg, oks)] + [(*o, o[1]) for o in [objs] + [g[3] for g in got] if o]


def _columns(metas: list) -> tuple:
    """(serial-order keys, parents' ids, actions) of a batch's (key, parent id, action) metas."""
    return tuple(zip(*metas)) if metas else ((), (), ())


def _numbered(t) -> bool:
    """Whether states of type ``t`` are numbered field by field: plain tuples and namedtuples."""
    return t is tuple or _REG.get(id(t)) is t


def structured(s) -> bool:
    """Whether numbering pays for states like ``s``: some field holds tuples (a world state: actor
    states, shared variables).  A flat state (integers, tuples of integers: the pipeline) is hashed,
    stored and pickled faster as it is than numbered value by value."""
    return isinstance(s, tuple) and any(
        isinstance(f, tuple) and (type(f) is not tuple or any(isinstance(e, tuple) for e in f)) for f in s)


def _route_hash(s) -> int:
    """The number a state's owner is chosen by (``% n``), the same in every forked process: for a
    tuple or namedtuple, its class id plus the sum of its fields' hashes (of a plain tuple field: its
    elements' hashes), which ``_Numbering.route`` computes from a key without touching the state."""
    t = type(s)
    if not _numbered(t):
        return hash(s)
    acc = id(t) if t is not tuple else 0
    for f in s:
        acc += sum(map(hash, f)) if type(f) is tuple else hash(f)
    return acc


class _Numbering:
    """One forked worker's numbers for the values its states are made of.

    A state (a tuple or namedtuple) is keyed by a tuple: its class id (0 for a plain tuple), then per
    field the number of its value, or for a plain tuple field (a world state's actor states, its
    fabric entries) the tuple of its elements' numbers.  Values are numbered by equality, exactly as
    the visited set tells states apart, so equal states have equal keys and ``state(key)`` gives back
    a state equal to the one keyed.  A state of another type is keyed ``(-1, state)``.

    What this saves: the visited set and the dedup of a level hash short tuples of small numbers
    instead of whole states (a tuple's hash is not cached: every hash of a state walks it); a field
    a successor shares with its parent (the very same object: the usual case) keeps the parent's
    numbers (``key_from``), and a value met again as the object that was numbered (states are
    rebuilt from the kept values) is found by its ``id`` without hashing it (a kept value stays
    alive, so its id cannot be reused; keeping other equal objects alive as well was measured and
    gains nothing); the owner of a state (``route``) comes from the values' hashes, kept beside
    them; and a batch carries keys plus each value once per destination (``batch``), which
    the receiver numbers once (``unbatch``) and then translates every key of the batch into its own
    numbers by list indexing.  States are rebuilt from the kept values, so the states a worker
    expands share their actor states (less memory, and the model's memo tables meet the same objects
    again)."""

    def __init__(self, n: int):
        self.num: dict = {}  # value -> number
        self.vals: list = []  # number -> the value kept for it (the object states are rebuilt from)
        self.hashes: list[int] = []  # number -> hash(value)
        self.byid: dict[int, int] = {}  # id(kept value) -> number (kept values stay alive: ids stay theirs)
        self.known = [bytearray() for _ in range(n)]  # per destination: 1 where it has had that value
        self.tr: list[list[int]] = [[] for _ in range(n)]  # per source: its number -> ours

    def number(self, v) -> int:
        n = self.byid.get(id(v))
        if n is None:
            n = self.num.get(v)
            if n is None:
                n = self.num[v] = len(self.vals)
                self.vals.append(v)
                self.hashes.append(hash(v))
                self.byid[id(v)] = n
        return n

    def key(self, s) -> tuple:
        t = type(s)
        if not _numbered(t):
            return (-1, s)
        return (id(t) if t is not tuple else 0, *map(self._field, s))

    def _field(self, f):
        """A field's part of a key: the number of its value, or for a plain tuple its elements'."""
        get = self.byid.get
        if type(f) is tuple:
            ns = tuple(map(get, map(id, f), repeat(-1)))
            if -1 in ns:
                number = self.number
                ns = tuple([number(e) if x < 0 else x for x, e in zip(ns, f)])
            return ns
        x = get(id(f))
        return self.number(f) if x is None else x

    def route(self, key: tuple) -> int:
        """``_route_hash`` of the state keyed ``key``."""
        if key[0] < 0:
            return hash(key[1])
        hg = self.hashes.__getitem__
        acc = key[0]
        for x in key[1:]:
            acc += hg(x) if type(x) is int else sum(map(hg, x))
        return acc

    def key_from(self, s, p, pkey: tuple) -> tuple:
        """``key(s)`` for a successor ``s`` of the state ``p`` keyed ``pkey``: a field that is the very
        object it was in ``p`` keeps ``p``'s numbers for it (the usual case: a step changes one or two
        fields), the others are numbered."""
        if type(s) is not type(p) or pkey[0] < 0 or len(s) != len(p):
            return self.key(s)
        out = None
        i = 0
        for f, pf in zip(s, p):
            i += 1
            if f is not pf:
                if out is None:
                    out = list(pkey)
                out[i] = self._field(f)
        return pkey if out is None else tuple(out)

    def state(self, key: tuple):
        if key[0] < 0:
            return key[1]
        vals = self.vals
        get = vals.__getitem__
        cid = key[0]
        return tuple.__new__(_REG[cid] if cid else tuple,
                             [vals[x] if type(x) is int else tuple(map(get, x)) for x in key[1:]])

    def _flat(self, key):
        for x in key[1:]:
            if type(x) is int:
                yield x
            else:
                yield from x

    def batch(self, h: int, keys: list, metas: list):
        """The batch for destination ``h``: ("num", defs, keys, parent keys, parent ids, actions), where
        defs is a flat list of (number, value) pairs for the values ``h`` has not had from us, and the
        actions are numbers too (or travel as they are, ("num-raw", ...), when one is unhashable)."""
        kn = self.known[h]
        vals = self.vals
        acts = [m[2] for m in metas]
        tag = "num"
        try:
            acts = [self.number(a) for a in acts]
        except TypeError:
            tag = "num-raw"
        if len(kn) < len(vals):
            kn.extend(bytes(len(vals) - len(kn)))
        defs: list = []
        have = kn.__getitem__

        def ship(nums):
            for x in nums:
                if not kn[x]:
                    kn[x] = 1
                    defs.append(x)
                    defs.append(vals[x])

        for key in keys:
            if key[0] >= 0:
                for x in key[1:]:
                    if not (have(x) if type(x) is int else all(map(have, x))):
                        ship(self._flat(key))
                        break
        if tag == "num" and not all(map(have, acts)):
            ship(acts)
        return (tag, defs, keys, [m[0] for m in metas], [m[1] for m in metas], acts)

    def unbatch(self, h: int, batch):
        tag, defs, keys, pkeys, gids, acts = batch
        tr = self.tr[h]
        number = self.number
        for i in range(0, len(defs), 2):
            x = defs[i]
            if x >= len(tr):
                tr.extend([-1] * (x + 1 - len(tr)))
            tr[x] = number(defs[i + 1])
        g = tr.__getitem__
        keys = [key if key[0] < 0 else
                (key[0], *[g(x) if type(x) is int else tuple(map(g, x)) for x in key[1:]]) for key in keys]
        if tag == "num":
            vals = self.vals
            acts = [vals[tr[a]] for a in acts]
        return keys, list(zip(pkeys, gids, acts))


class _Encoder:
    """The compact form of the states one worker sends another (one encoder per destination, alive for
    the whole search, mirrored by a ``_Decoder`` at the destination).

    A state is a tuple (usually a namedtuple) whose fields are either values or plain tuples of
    values (a world state: the tuple of actor states, the shared variables, ...).  Each such value is
    sent once, the first time it crosses to that destination, and afterwards as its number in the
    order of first sending; a state becomes (class id, number or tuple of numbers per field) — plain
    ints and tuples of ints, which pickle without a Python call per object and come out about 2.5x
    smaller.  Actions are numbered the same way.  The receiver rebuilds states from its table, so
    states that crossed a process boundary share their actor states again (less memory, and the
    model's memo tables compare them by identity).  Values are numbered by equality, exactly as the
    visited set tells states apart.  A state that is not a tuple, or a batch with an unhashable
    action, travels pickled as it is, and so do flat states (``structured``)."""

    def __init__(self):
        self.ids: dict = {}
        self.sent = 0  # values already shipped (the destination's table length)
        self.new: list = []
        self.worth: bool | None = None  # decided on the first state: see ``structured``

    def batch(self, items: list, metas: list):
        if self.worth is None and items:
            self.worth = structured(items[0])
        if not self.worth:
            return ("raw", items, metas)
        ids, new = self.ids, self.new
        get = ids.get
        enc = []
        try:
            for s in items:
                t = type(s)
                if not isinstance(s, tuple) or (t is not tuple and _REG.get(id(t)) is not t):
                    raise _Raw
                parts = [0 if t is tuple else id(t)]
                for f in s:
                    if type(f) is tuple:
                        fe = []
                        for e in f:
                            i = get(e)
                            if i is None:
                                i = ids[e] = len(ids)
                                new.append(e)
                            fe.append(i)
                        parts.append(tuple(fe))
                    else:
                        i = get(f)
                        if i is None:
                            i = ids[f] = len(ids)
                            new.append(f)
                        parts.append(i)
                enc.append(tuple(parts))
            acts = []
            for _, _, a in metas:
                i = get(a)
                if i is None:
                    i = ids[a] = len(ids)
                    new.append(a)
                acts.append(i)
        except (_Raw, TypeError):
            new.clear()  # nothing of this batch is shipped encoded: forget what it numbered
            for v in [v for v, i in ids.items() if i >= self.sent]:
                del ids[v]
            return ("raw", items, metas)
        defs, self.new = new, []
        self.sent = len(ids)
        return ("enc", defs, enc, [m[0] for m in metas], [m[1] for m in metas], acts)


class _Raw(Exception):
    pass


class _Decoder:
    """The receiving side of one ``_Encoder``."""

    def __init__(self):
        self.table: list = []

    def unbatch(self, batch):
        if batch[0] == "raw":
            return batch[1], batch[2]
        _, defs, enc, keys, gids, acts = batch
        tbl = self.table
        tbl.extend(defs)
        new, reg = tuple.__new__, _REG
        items = [new(reg[p[0]] if p[0] else tuple, [tbl[x] if type(x) is int else tuple([tbl[i] for i in x]) for x in p[1:]])
                 for p in enc]
        metas = list(zip(keys, gids, [tbl[i] for i in acts]))
        return items, metas


def _error_payload(e: BaseException):
    if isinstance(e, SpecError):
        cause = e.cause
        try:
            pickle.dumps(cause)
        except Exception:  # noqa: BLE001
            cause = RuntimeError(f"{type(cause).__name__}: {cause}")
        return ("spec", e.where, cause, traceback.format_exc())
    return ("other", f"{type(e).__name__}: {e}", traceback.format_exc())


def _worker_main(model, k, n, tmp, init, conn, counters, pgid=0, parent=0, kind="encoded", steal=None):
    procs.join_group(pgid)  # the workers' own group (the parent ends it as a whole)
    if parent:
        procs.die_with_parent(parent)  # even a SIGKILLed parent leaves no worker behind
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN if sig == signal.SIGINT else signal.SIG_DFL)  # the parent handles ^C
    if GC_MODE in ("off", "level"):
        gc.disable()
    try:
        if kind == "keyed":
            _KeyedWorker(model, k, n, tmp, init, conn, counters, steal).serve()
        else:
            _Worker(model, k, n, tmp, init, conn, counters, kind == "numbered").serve()
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        os._exit(0)


class WorkerError(RuntimeError):
    """A worker process failed outside the model (or died)."""


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------
class _Pool:
    def __init__(self, model, n: int, init: list):
        ctx = mp.get_context("fork")
        self.model, self.n = model, n
        self.tmp = _shm_dir()
        self.counters = ctx.Array("q", n, lock=False)
        _register_namedtuples()
        feats = features_of(model)
        # keyed workers when the model's keys are ints (not for states with monitors: their own keys)
        keyed = (KEYED_WORKERS and TRANSPORT == "compact" and KEYED in feats and KEY_FIELDS in feats and bool(init)
                 and type(model.state_key(init[0])) is int)
        numbered = not keyed and TRANSPORT == "compact" and n >= NUMBERED_FROM and bool(init) and structured(init[0])
        kind = self.kind = "keyed" if keyed else "numbered" if numbered else "encoded" if TRANSPORT == "compact" else "pickled"
        # each initial state's owner, as the workers compute it
        if keyed:
            keys = [model.state_key(s) for s in init]
            fk = FieldKeys(model, n)
            by_fields = iter(fk.owners(fk.matrix([k for k in keys if type(k) is int]), n).tolist())
            owners = [next(by_fields) if type(k) is int else hash(k) for k in keys]
        else:
            owners = [_route_hash(s) if numbered else hash(s) for s in init]
        parts = [[] for _ in range(n)]
        for rank, (s, owner) in enumerate(zip(init, owners)):
            parts[owner % n].append((rank, s))
        steal = None
        # what is left of each worker's published frontier or serial range (``_KeyedWorker._claim``,
        # ``_ranges``); not where the
        # workers outnumber the cores: there no core idles at a level's end, and a stolen state costs
        # more than one's own (its thief translates and rebuilds it, and meets it first)
        if keyed and n > 1 and (STEAL in ("force", "ranges") or (STEAL in ("auto", "halves") and n <= _usable_cores())):
            claims = ctx.Array("q", [-1] * (_CLAIM * n), lock=False)
            steal = (claims, ctx.Lock())
        self.conns = []
        self.procs = []
        self.pgid = 0  # the workers' process group, led by worker 0
        gc.collect()
        gc.freeze()  # inherited objects stay out of the children's collections (no copy-on-write)
        try:
            for k in range(n):
                a, b = ctx.Pipe(duplex=True)
                p = ctx.Process(target=_worker_main, args=(model, k, n, self.tmp, parts[k], b, self.counters,
                                                           self.pgid, os.getpid(), kind, steal),
                                daemon=True, name=f"lockstep-worker-{k}")
                p.start()
                procs.place_child(p.pid, self.pgid)
                self.pgid = self.pgid or p.pid
                b.close()
                self.conns.append(a)
                self.procs.append(p)
        finally:
            gc.unfreeze()
        self.worker_rss = [0.0] * n
        self.worker_cpu = [0.0] * n
        self.worker_timing: list = [None] * n
        self.worker_fired: list = [None] * n

    def send(self, k: int, msg) -> None:
        self.conns[k].send_bytes(_dumps(msg))

    def recv(self, k: int):
        try:
            status, payload = _loads(self.conns[k].recv_bytes())
        except (EOFError, ConnectionResetError) as e:
            raise WorkerError(f"worker {k} died (exit code {self.procs[k].exitcode})") from e
        if status == "error":
            if payload[0] == "spec":
                _, where, cause, tb = payload
                raise SpecError(where, cause)
            raise WorkerError(f"worker {k}: {payload[1]}\n{payload[2]}")
        return payload

    def call(self, k: int, msg):
        self.send(k, msg)
        return self.recv(k)

    def gather(self, msgs, on_wait: Callable[[], None] | None = None) -> list:
        """Send msgs[k] to every worker, wait for every reply (calling ``on_wait`` about 4 times a
        second meanwhile)."""
        for k, m in enumerate(msgs):
            self.send(k, m)
        out: list = [None] * self.n
        pending = {self.conns[k]: k for k in range(self.n)}
        while pending:
            ready = _wait_conns(list(pending), timeout=0.25)
            for c in ready:
                k = pending.pop(c)
                out[k] = self.recv(k)
            if on_wait is not None and pending:
                on_wait()
        return out

    def close(self, graceful: bool = True) -> None:
        """Stop the workers (collecting their peak RSS and CPU time) or, after an error or ^C, kill them
        (their peak RSS read first from /proc, where there is one)."""
        for k, c in enumerate(self.conns):
            if not graceful:
                break
            try:
                c.send_bytes(_dumps(("stop",)))
                if c.poll(5):
                    status, payload = _loads(c.recv_bytes())
                    if status == "ok":
                        self.worker_rss[k], self.worker_cpu[k], self.worker_timing[k], self.worker_fired[k] = payload
            except (OSError, EOFError):
                pass
        if not graceful:
            for k, p in enumerate(self.procs):  # their peak RSS, read before they go (a stop has none)
                self.worker_rss[k] = self.worker_rss[k] or procs.peak_rss_mb_of(p.pid)
            procs.kill_group(self.pgid, signal.SIGKILL)
        for p in self.procs:
            if not graceful and p.is_alive():
                p.terminate()
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in self.conns:
            c.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def symmetry_report(model) -> dict:
    """What a worker's copy of the model learnt about the properties the symmetry check could only
    test with a few permutations (spec/world.py ``sym_detected``, ``sym_unproved``): sent home with
    its timing, so that the HOLDS a worker helped prove carries the same note as a serial one."""
    return {"sym_detected": dict(getattr(model, "sym_detected", None) or {}),
            "sym_unproved": dict(getattr(model, "sym_unproved", None) or {})}


def merge_symmetry_report(model, timing: dict | None) -> None:
    """One worker's ``symmetry_report`` into the driver's model (the counts add up: each state is
    owned by one worker)."""
    if not timing or not timing.get("sym_detected") or not isinstance(getattr(model, "sym_detected", None), dict):
        return
    model.sym_detected.update(timing["sym_detected"])
    for what, n in (timing.get("sym_unproved") or {}).items():
        model.sym_unproved[what] = model.sym_unproved.get(what, 0) + n


def critical_path(timings: list) -> float | None:
    """The search's CPU critical path: per level, the slowest worker's expand plus the slowest worker's
    merge, summed.  On a machine with a free core per worker the wall time is about this plus the
    parent's share and the pipe latency; on a shared machine it is the steadier figure (wall time
    there measures the other processes too).  None when a worker's timings are missing."""
    if not timings or any(t is None or "level_expand" not in t for t in timings):
        return None
    total = 0.0
    for key in ("level_expand", "level_merge"):
        levels = max(len(t[key]) for t in timings)
        for lv in range(levels):
            total += max((t[key][lv] for t in timings if lv < len(t[key])), default=0.0)
    return total


def phase_balance(timings: list, level_wall: list) -> dict | None:
    """Per phase of the levels (expand, merge), summed over the levels: the wall time the parent waited
    for it, the slowest worker's CPU and the mean worker's CPU.  Slowest over mean is what the barrier
    at the end of the phase costs in imbalance; wall over slowest, the latency of a round through the
    parent (messages, wake-ups) and whatever else takes the slowest worker off its CPU.  None when a
    worker's timings are missing."""
    if not timings or any(t is None or "level_expand" not in t for t in timings) or not level_wall:
        return None
    out = {}
    for p, key in enumerate(("expand", "merge")):
        cpu = [t["level_" + key] for t in timings]
        levels = min(min(len(c) for c in cpu), len(level_wall))
        m = np.array([c[:levels] for c in cpu])
        out[key] = {"levels": levels, "wall_s": round(sum(w[p] for w in level_wall[:levels]), 3),
                    "slowest_cpu_s": round(float(m.max(0).sum()), 3), "mean_cpu_s": round(float(m.mean(0).sum()), 3)}
    return out


def _fork_available() -> bool:
    return "fork" in mp.get_all_start_methods()


def check_parallel(model_factory, bounds: Bounds | None = None, workers: int = 2,
                   progress: Callable[[Stats], None] | None = None) -> Result:
    """Safety check with ``workers`` processes; the same Result as ``Explorer(model, bounds).run()``.

    ``model_factory`` is a zero-argument callable returning the model (or the model itself).  It is
    called once, in this process, before the workers fork: configure it (``features.configure``) in the
    factory or before the call, as for ``Explorer``; ``engine.check`` does this for you."""
    is_model = isinstance(model_factory, Model) and not isinstance(model_factory, type)
    model = model_factory if is_model else model_factory()
    bounds = bounds or Bounds()
    if workers <= 1 or not _fork_available():
        return Explorer(model, bounds, progress).run()
    return _Coordinator(model, bounds, workers, progress).run()


class _Coordinator:
    def __init__(self, model, bounds: Bounds, n: int, progress):
        self.model, self.b, self.n, self.progress = model, bounds, n, progress
        self.st = Stats()
        self.ex = Explorer(model, bounds)  # for describe_path / waiting_at_end only
        self.pool: _Pool | None = None
        self.level_wall: list = []  # per level, the wall seconds of its expand and its merge phase

    def _make_pool(self, init: list):
        return _Pool(self.model, self.n, init)

    # -- counterexamples -----------------------------------------------------------------
    def _path_to(self, gid: int) -> list:
        """(state, action, next) triples from an initial state to the state with global id ``gid``."""
        n = self.n
        chain = []
        while gid >= 0:
            s, pgid, a = self.pool.call(gid % n, ("node", gid // n))
            chain.append((s, a))
            gid = pgid
        chain.reverse()
        steps = []
        for t in range(1, len(chain)):
            s, (nx, a) = chain[t - 1][0], chain[t]
            if type(a) is _NthSuccessor:
                a = self._nth_action(s, a, nx)
            steps.append((s, a, nx))
        return steps

    def _nth_action(self, s, j: int, nx):
        """The action of successor ``j`` of ``s`` (a keyed worker keeps only the index), checked to
        lead to ``nx``."""
        model = self.model
        succs = model.keyed_successors(s, model.state_key(s)) if model.keyed() else model.successors(s)
        a, n = list(succs)[j]
        if type(n) is int:
            n = model.state_of(n)
        if n != nx:
            raise WorkerError(f"successor {j} of a state on the counterexample path is not the state a worker found")
        return a

    def _result_for(self, key, owner: int) -> Result:
        kind, gid, a, v = self.pool.call(owner, ("cand", key))
        steps = self._path_to(gid)
        st = self.st
        if kind == _EDGE:
            s = steps[-1][2] if steps else self._node_state(gid)
            return self.ex.violation_result(v, steps + [(s, a, v)], st)
        stuck = None
        if kind in (_STUCK, _ENDV):
            stuck = steps[-1][2] if steps else self._node_state(gid)
        return self.ex.violation_result(v, steps, st, stuck)

    def _node_state(self, gid: int):
        return self.pool.call(gid % self.n, ("node", gid // self.n))[0]

    # -- exploration ---------------------------------------------------------------------
    def run(self) -> Result:
        model, b, st = self.model, self.b, self.st
        t0 = time.perf_counter()
        deadline = t0 + b.timeout if b.timeout is not None else None
        init: list = []
        seen = set()
        for s in model.init_states():
            if s not in seen:
                seen.add(s)
                init.append(s)
        del seen
        st.states = len(init)
        for s in init:
            v = model.invariant(s)
            if v is not None:
                st.seconds = time.perf_counter() - t0
                st.peak_rss_mb = peak_rss_mb()
                return Result(v.verdict, v.message, st, [], detail=dict(v.detail))
        self.pool = self._make_pool(init)
        ok = False
        try:
            res = self._explore(init, t0, deadline)
            ok = True
            return res
        finally:
            self.pool.close(graceful=ok)
            self._collect_coverage()
            for timing in self.pool.worker_timing:
                merge_symmetry_report(self.model, timing)
            st.seconds = time.perf_counter() - t0
            st.peak_rss_mb = peak_rss_mb() + sum(self.pool.worker_rss)
            ru = resource.getrusage(resource.RUSAGE_SELF)
            LAST_RUN.clear()
            LAST_RUN.update(workers=self.n, transport=self.pool.kind, worker_cpu_s=list(self.pool.worker_cpu), worker_rss_mb=list(self.pool.worker_rss),
                            worker_timing=list(self.pool.worker_timing), parent_cpu_s=ru.ru_utime + ru.ru_stime,
                            critical_path_cpu_s=critical_path(self.pool.worker_timing),
                            phases=phase_balance(self.pool.worker_timing, self.level_wall))

    def _collect_coverage(self) -> None:
        """The workers' coverage (which transitions fired) into this process's model, so that the engine
        judges a parallel HOLDS for vacuity as it judges a serial one."""
        pool = self.pool
        if pool is None or COVERAGE not in features_of(self.model):
            return
        for fired in pool.worker_fired:
            if fired:
                self.model.fired.update(fired)

    def _explore(self, init, t0, deadline) -> Result:
        b, st, n, pool = self.b, self.st, self.n, self.pool
        depth = 0
        frontier_size = len(init)
        ranks_per_worker: list = [None] * n
        bound_hit = None
        best = None  # (key, owner)
        # the depth of the merge whose new states' invariants are still to check (None: none are):
        # the next expansion checks them (``_Worker._check_first``), or a round of their own where
        # the search stops before it
        due = None
        last_report = [t0]
        counters = pool.counters

        def on_wait():
            now = time.perf_counter()
            if self.progress and now - last_report[0] > 0.25:
                last_report[0] = now
                saved = st.transitions
                st.transitions = saved + sum(counters[:])
                st.seconds = now - t0
                self.progress(st)
                st.transitions = saved

        while frontier_size and best is None:
            if b.max_depth is not None and depth >= b.max_depth:
                bound_hit = f"max-depth {b.max_depth}"
                break
            for k in range(n):
                counters[k] = 0
            t_level = time.perf_counter()
            replies = pool.gather([("expand", depth, ranks_per_worker[k], deadline) for k in range(n)], on_wait)
            if any(r[0] for r in replies):  # timed out inside the level
                st.transitions += int(sum(int(r[2].sum()) for r in replies))
                st.end_states += int(sum(int((r[3] > 0).sum()) for r in replies))
                st.fail_fast_ends += int(sum(int((r[3] == 2).sum()) for r in replies))
                bound_hit = f"timeout {b.timeout:g}s"
                break
            inv = [(c, k) for k, r in enumerate(replies) for c in r[4] if c[1] == -1]
            if inv:  # an invariant of a frontier state fails: the serial search stopped at the last level
                best = min(inv)
                break
            due = None
            last = any(r[4] for r in replies)  # a violation: the search ends with this level's merge
            t_merge = time.perf_counter()
            merged = pool.gather([("merge", depth, last)] * n, on_wait)
            self.level_wall.append((t_merge - t_level, time.perf_counter() - t_merge))
            F = frontier_size
            keys = [m[0] for m in merged]
            all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
            cands = [(c, k) for k, r in enumerate(replies) for c in r[4]] + [(c, k) for k, m in enumerate(merged) for c in m[1]]
            cut = None  # the frontier position after which the serial loop would have stopped
            if b.max_states is not None:
                newcount = np.bincount(all_keys >> _SH, minlength=F) if len(all_keys) else np.zeros(F, dtype=np.int64)
                cum = st.states + np.cumsum(newcount)
                p = int(np.searchsorted(cum, b.max_states, side="left"))
                if p < F:
                    cut = p
                    if not last:  # the states found before the cut: their invariants now
                        cands += [(c, k) for k, m in enumerate(pool.gather([("inv", depth, cut)] * n, on_wait))
                                  for c in m]
            if cut is None:
                st.transitions += int(sum(int(r[2].sum()) for r in replies))
                st.end_states += int(sum(int((r[3] > 0).sum()) for r in replies))
                st.fail_fast_ends += int(sum(int((r[3] == 2).sum()) for r in replies))
                st.states += len(all_keys)
            else:
                for r in replies:
                    sel = r[1] <= cut
                    st.transitions += int(r[2][sel].sum())
                    st.end_states += int((r[3][sel] > 0).sum())
                    st.fail_fast_ends += int((r[3][sel] == 2).sum())
                st.states += int((all_keys >> _SH <= cut).sum())
                cands = [(c, k) for c, k in cands if c[1] <= cut]
                bound_hit = f"max-states {b.max_states}"
            if cands:
                best = min(cands)
            if bound_hit:
                break
            # the serial discovery order of the new states
            order = np.argsort(all_keys, kind="stable")
            ranks = np.empty(len(all_keys), dtype=np.int64)
            ranks[order] = np.arange(len(all_keys), dtype=np.int64)
            off = 0
            for k in range(n):
                ranks_per_worker[k] = ranks[off:off + len(keys[k])]
                off += len(keys[k])
            frontier_size = len(all_keys)
            if frontier_size:
                due = depth
                depth += 1
            st.depth = depth
            now = time.perf_counter()
            st.seconds = now - t0
            if deadline is not None and now > deadline and frontier_size and best is None:
                bound_hit = f"timeout {b.timeout:g}s"
                break
            if self.progress and now - last_report[0] > 0.25:
                last_report[0] = now
                self.progress(st)
        if best is None and due is not None:  # stopped (a bound, a timeout) before checking the frontier
            inv = [(c, k) for k, m in enumerate(pool.gather([("inv", due)] * n, on_wait)) for c in m]
            if inv:
                best = min(inv)
        st.depth = depth
        st.seconds = time.perf_counter() - t0
        if best is not None:
            return self._result_for(*best)
        if bound_hit:
            return Result(BOUND_REACHED, f"bound reached ({bound_hit}) before the state space was exhausted; "
                                         f"no violation in the {st.states:,} states explored", st, bound=bound_hit)
        return Result(HOLDS, "all properties hold within the bounds", st)
