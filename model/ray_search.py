"""The safety search over Ray actors: one hash partition of the visited set per actor.

``check_ray(model_factory, bounds, workers, address)`` gives the same answer as
``checker.Explorer(model, bounds).run()`` and ``parallel.check_parallel`` — verdict, state and
transition counts, depth, end-state counts and the same counterexample — with the search spread over
``workers`` Ray actors, on this machine or on a cluster.  Safety only (liveness needs the whole edge
list in one process; the CLI refuses ``--ray`` with liveness).

It is the level-synchronous search of model/parallel.py with another transport:

* the per-level algorithm (expand, route, merge, serial discovery order, ``max_states`` cut,
  counterexample tie-break and reconstruction) is ``parallel._Worker`` / ``parallel._Coordinator``
  unchanged; ``_RayPartition`` overrides only how a worker routes and ships its successors, and
  ``_RayPool`` replaces the forked processes and pipes;
* actors are not forked from the driver, so nothing is inherited: each actor builds the model itself
  from ``model_factory`` (it must be picklable: ``cli.ray_check.SpecFactory`` for a spec), and Python's
  ``hash()`` differs between processes (string hashing is salted per process and, on Python < 3.12,
  ``hash(None)`` is an address), so the owner of a state is ``stable_hash(state) % workers``, a hash
  of the state's value that every process computes alike;
* successors travel as one byte string per (sender, destination, level): pickle protocol 5 over
  the whole batch (shared substructure is written once), with the runtime-made namedtuple classes of
  role variables written as (module, name, fields) and found again by that key in the receiving
  process.  Batches go from actor to actor through Ray's object store; the driver holds references
  only.  Results that carry states (the counterexample's nodes) come back the same way;
* memory: every actor reports its resident set size; with ``memory_budget_mb`` the driver polls the
  actors about 4 times a second and ends the run with BOUND_REACHED (``memory budget ... per actor``)
  when one passes it, then kills the actors — before the machine's out-of-memory killer would.  The
  counts are those of the last completed level, as for a timeout;
* progress: states, frontier and per-actor states/s, transitions/s and memory (``actor_progress``).

A local instance (``address=None``) is started with ``ray.init(num_cpus=...)`` and shut down at the
end, also on ^C or SIGTERM; on a cluster (``"auto"``, ``"ray://host:port"``) only the actors are
killed.  When the caller initialised Ray itself (a test session, a notebook), the actors are kept for
the next check with the same actor count (``setup`` replaces their partition), which saves the
process start-up.  A SpecError raised in an actor reaches the caller as a SpecError.  ``LAST_RUN`` holds the partitions of the last run (node, pid, states, peak RSS, CPU).
"""
from __future__ import annotations

import collections
import gc
import io
import os
import pickle
import signal
import socket
import time
import zlib
from enum import Enum
from typing import Any, Callable

from .api import BOUND_REACHED, SpecError
from .result import Bounds, Result, Stats, peak_rss_mb
from . import parallel as _par
from . import safepickle

INSTALL_HINT = "pip install 'lockstep[ray]'  (or: pip install ray)"

LAST_RUN: dict[str, Any] = {}
START_TIMEOUT = 180.0  # seconds for every actor to be placed and to build its model


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached or cannot host the actors."""


class MemoryBudgetExceeded(Exception):
    def __init__(self, actor: int, rss_mb: float, budget_mb: float):
        super().__init__(actor, rss_mb, budget_mb)
        self.actor, self.rss_mb, self.budget_mb = actor, rss_mb, budget_mb


def require_ray():
    try:
        import ray  # noqa: F401
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


# ---------------------------------------------------------------------------------------------
# a hash of a state's value, the same in every process
# ---------------------------------------------------------------------------------------------
_M64 = (1 << 64) - 1
_NONE = 0x5BD1E9955BD1E995
_memo: dict = {}
_MEMO_MAX = 1 << 18  # entries; the memo is cleared when full (it holds references to sub-tuples)


def _vhash(o) -> int:
    t = type(o)
    if t is int or t is bool or t is float:
        return hash(o) & _M64  # numeric hashes are not salted, and 1 == 1.0 == True hash alike
    if t is str:
        b = o.encode("utf-8", "surrogatepass")
        return (zlib.crc32(b) << 32 | zlib.adler32(b)) ^ len(b)
    if o is None:
        return _NONE
    if isinstance(o, tuple):  # tuples and namedtuples (namedtuple equality is tuple equality)
        h = _memo.get(o)
        if h is None:
            h = 0x345678
            for e in o:
                h = ((h ^ _vhash(e)) * 1000003 + 82520) & _M64
            h ^= len(o)
            if len(_memo) > _MEMO_MAX:
                _memo.clear()
            _memo[o] = h
        return h
    if isinstance(o, (frozenset, set)):
        h = 0x1F3D5B79
        for e in o:
            h = (h + (_vhash(e) * 0x9E3779B97F4A7C15 & _M64)) & _M64
        return h ^ len(o)
    if isinstance(o, Enum):
        return _vhash((type(o).__name__, o.name))
    if isinstance(o, bytes):
        return (zlib.crc32(o) << 32 | zlib.adler32(o)) ^ len(o)
    if isinstance(o, (int, float)):
        return hash(o) & _M64
    # anything else: by its repr (a state made of other objects needs a repr that is stable and
    # equal for equal values)
    return _vhash(repr(o))


def stable_hash(state) -> int:
    """A 64-bit hash of ``state``'s value, equal in every process for equal states (tuples,
    namedtuples, ints, floats, bools, strs, bytes, None, frozensets, enums; other objects by repr)."""
    h = _vhash(state)
    h = (h ^ (h >> 31)) * 0x94D049BB133111EB & _M64
    return h ^ (h >> 29)


def owner_of(state, n: int) -> int:
    return stable_hash(state) % n


# ---------------------------------------------------------------------------------------------
# batches: pickle with runtime namedtuple classes by (module, name, fields)
# ---------------------------------------------------------------------------------------------
_KEY_OF: dict[type, tuple] = {}
_BY_KEY: dict[tuple, type] = {}


def _nt_key(cls) -> tuple:
    k = _KEY_OF.get(cls)
    if k is None:
        k = _KEY_OF[cls] = (cls.__module__, cls.__name__, tuple(cls._fields))
    return k


def _scan_namedtuples() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for o in gc.get_objects():
            if isinstance(o, type) and issubclass(o, tuple) and "_fields" in o.__dict__:
                _BY_KEY.setdefault(_nt_key(o), o)


def _mk_nt(key, vals):
    cls = _BY_KEY.get(key)
    if cls is None:
        _scan_namedtuples()
        cls = _BY_KEY.get(key)
        if cls is None:  # not made in this process (yet): an equivalent class
            cls = _BY_KEY[key] = collections.namedtuple(key[1], key[2], module=key[0])
    return tuple.__new__(cls, vals)


def _reduce_nt(o):
    return _mk_nt, (_nt_key(type(o)), tuple(o))


class _Dispatch(dict):
    def __missing__(self, t):
        if isinstance(t, type) and issubclass(t, tuple) and "_fields" in t.__dict__ and getattr(t, "__module__", "") != "builtins":
            try:  # importable by reference (a module-level namedtuple): let pickle do it
                import importlib

                if getattr(importlib.import_module(t.__module__), t.__qualname__, None) is t:
                    raise KeyError(t)
            except (ImportError, AttributeError, ValueError):
                pass
            self[t] = _reduce_nt
            return _reduce_nt
        raise KeyError(t)


_DISPATCH = _Dispatch()


def dumps(obj) -> bytes:
    f = io.BytesIO()
    p = pickle.Pickler(f, 5)
    p.dispatch_table = _DISPATCH
    p.dump(obj)
    return f.getvalue()


def loads(b: bytes):
    # batches and replies of this search's own actors and driver, through the restricted unpickler
    return safepickle.loads(b, {(__name__, "_mk_nt"): _mk_nt})


# ---------------------------------------------------------------------------------------------
# one partition (runs inside a Ray actor)
# ---------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


class _RayPartition(_par._Worker):
    def __init__(self, model, k: int, n: int, init: list):
        super().__init__(model, k, n, "", init, None, [0] * n)
        self.outgoing: list = [None] * n
        self.incoming: dict[int, bytes] = {}

    def _route(self, out: dict) -> list[tuple[list, list]]:
        n = self.n
        outs = [([], []) for _ in range(n)]
        for nx, meta in out.items():
            sl, ml = outs[owner_of(nx, n)]
            sl.append(nx)
            ml.append(meta)
        return outs

    def _send(self, depth: int, outs: list) -> None:
        k, tm = self.k, self.timing
        for h in range(self.n):
            if h != k:
                self.outgoing[h] = dumps(outs[h])
                tm["sent"] += len(outs[h][0])
                outs[h] = None

    def _receive(self, depth: int, h: int):
        return loads(self.incoming.pop(h))


class _SpecFailure(Exception):
    """A SpecError raised in an actor, in a form Ray can carry back (SpecError's own pickling
    does not round-trip)."""

    def __init__(self, where, cause):
        super().__init__(where, cause)
        self.where, self.cause = where, cause


def _carry(e: SpecError) -> _SpecFailure:
    cause = e.cause
    try:
        pickle.dumps(cause)
    except Exception:  # noqa: BLE001
        cause = RuntimeError(f"{type(cause).__name__}: {cause}")
    return _SpecFailure(e.where, cause)


class PartitionActor:
    """The Ray actor around one ``_RayPartition`` (``ray.remote`` is applied at run time).  ``setup``
    starts a run; an actor kept between runs (see ``_RayPool``) drops the previous run's partition."""

    def __init__(self):
        self.w = None

    def setup(self, model_factory, k: int, n: int, init_batch: bytes):
        self.w = None
        gc.unfreeze()
        gc.collect()
        if _par.GC_MODE in ("off", "level"):
            gc.disable()
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu0 = ru.ru_utime + ru.ru_stime
        self.peak = 0.0
        try:
            model = model_factory()
        except SpecError as e:
            raise _carry(e) from None
        self.t0 = time.perf_counter()
        self.w = _RayPartition(model, k, n, loads(init_batch))
        return self.where()

    def where(self):
        import ray

        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}

    def expand(self, depth, ranks, deadline):
        w = self.w
        w.outgoing = [None] * w.n
        try:
            reply = w.expand(depth, ranks, deadline)
        except SpecError as e:
            raise _carry(e) from None
        out = w.outgoing
        w.outgoing = [None] * w.n
        return (reply, *out)

    def merge(self, depth, check, *batches):
        w = self.w
        w.incoming = {h: b for h, b in enumerate(batches) if h != w.k}
        try:
            keys, inv = w.merge(depth, check)
        except SpecError as e:
            raise _carry(e) from None
        self.peak = max(self.peak, _rss_mb())
        return keys, inv

    def inv(self, depth, cut=None):
        try:
            return self.w.check_invariants(depth, cut)
        except SpecError as e:
            raise _carry(e) from None

    def cand(self, key) -> bytes:
        return dumps(self.w.cands[key])

    def node(self, i: int) -> bytes:
        w = self.w
        return dumps((w.states[i], w.parent[i], w.via[i]))

    def progress(self):
        w = self.w
        rss = _rss_mb()
        self.peak = max(self.peak, rss)
        return (int(w.counters[w.k]), len(w.states), len(w.frontier), rss, time.perf_counter() - self.t0)

    def stop(self):
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.w.timing.update(_par.symmetry_report(self.w.model))
        out = (max(_rss_mb(), self.peak), ru.ru_utime + ru.ru_stime - self.cpu0, self.w.timing, len(self.w.states),
               self.w.fired())
        self.w = None
        gc.unfreeze()
        gc.collect()
        return out


# ---------------------------------------------------------------------------------------------
# driver side
# ---------------------------------------------------------------------------------------------
class _RayPool:
    """``parallel._Pool``'s interface over Ray actors."""

    def __init__(self, ray, model_factory, n: int, init: list, budget_mb: float | None, keep: bool = False):
        self.ray, self.n, self.budget = ray, n, budget_mb
        self.kind = "pickled"  # states as they are (parallel._Pool's transports are for forked workers)
        self.counters = [0] * n
        self.worker_rss = [0.0] * n
        self.worker_cpu = [0.0] * n
        self.worker_timing: list = [None] * n
        self.worker_states = [0] * n
        self.worker_fired: list = [None] * n
        self.snapshot: list = [None] * n  # the last progress() of every actor
        self.batches: list = []  # batches[k][h]: ObjectRef of what actor k sent actor h this level
        parts: list[list] = [[] for _ in range(n)]
        for rank, s in enumerate(init):
            parts[owner_of(s, n)].append((rank, s))
        # one CPU per actor; more actors than the cluster's CPUs share them (never wait for a CPU forever)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        per = min(1.0, int(cpus / n * 100) / 100) or 0.01
        cached = _KEPT.get("actors")
        if keep and cached is not None and len(cached) == n and _KEPT.get("job") == _job_id(ray):
            self.actors = cached
        else:
            _drop_kept(ray)
            Actor = ray.remote(PartitionActor).options(num_cpus=per, max_concurrency=2, scheduling_strategy="SPREAD")
            self.actors = [Actor.remote() for k in range(n)]
        self.keep = keep
        refs = [a.setup.remote(model_factory, k, n, dumps(parts[k])) for k, a in enumerate(self.actors)]
        ready, _ = ray.wait(refs, num_returns=n, timeout=START_TIMEOUT)
        if len(ready) < n:
            self.close(graceful=False)
            raise RayUnavailable(f"--ray: only {len(ready)} of {n} actors started within {START_TIMEOUT:g} s "
                                 f"(cluster resources: {ray.cluster_resources()})")
        try:
            self.where = self._get(refs)
        except BaseException:
            self.close(graceful=False)
            raise

    def _get(self, refs):
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayTaskError as e:
            c = getattr(e, "cause", None)
            if isinstance(c, (SpecError, _SpecFailure)):
                raise SpecError(c.where, c.cause) from None
            raise _par.WorkerError(str(e)) from None
        except self.ray.exceptions.RayActorError as e:
            raise _par.WorkerError(f"a Ray actor died: {e}") from None

    def poll(self) -> None:
        """Ask every actor how far it is (its threads answer while it expands); enforce the budget."""
        snaps = self._get([a.progress.remote() for a in self.actors])
        for k, s in enumerate(snaps):
            self.counters[k] = s[0]
            self.snapshot[k] = s
            if self.budget is not None and s[3] > self.budget:
                raise MemoryBudgetExceeded(k, s[3], self.budget)

    def gather(self, msgs, on_wait: Callable[[], None] | None = None) -> list:
        ray, n = self.ray, self.n
        cmd = msgs[0][0]
        if cmd == "expand":
            refs = [a.expand.options(num_returns=n + 1).remote(*m[1:]) for a, m in zip(self.actors, msgs)]
            self.batches = [r[1:] for r in refs]
            waiting = [r[0] for r in refs]
        elif cmd == "merge":
            waiting = [a.merge.remote(msgs[h][1], msgs[h][2], *[self.batches[k][h] for k in range(n)])
                       for h, a in enumerate(self.actors)]
        elif cmd == "inv":
            waiting = [a.inv.remote(*m[1:]) for a, m in zip(self.actors, msgs)]
        else:
            raise ValueError(cmd)
        pending = list(waiting)
        while pending:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.25)
            if pending:
                self.poll()
                if on_wait is not None:
                    on_wait()
        out = self._get(waiting)
        if cmd == "merge":
            self.batches = []
            if self.budget is not None:
                self.poll()
        return out

    def call(self, k: int, msg):
        cmd = msg[0]
        if cmd == "cand":
            return loads(self._get(self.actors[k].cand.remote(msg[1])))
        if cmd == "node":
            return loads(self._get(self.actors[k].node.remote(msg[1])))
        raise ValueError(cmd)

    def close(self, graceful: bool = True) -> None:
        ray = self.ray
        if graceful:
            try:
                for k, (rss, cpu, timing, nstates, fired) in enumerate(ray.get([a.stop.remote() for a in self.actors], timeout=30)):
                    self.worker_rss[k], self.worker_cpu[k], self.worker_timing[k], self.worker_states[k] = rss, cpu, timing, nstates
                    self.worker_fired[k] = fired
            except Exception:  # noqa: BLE001 - diagnostics only
                pass
        self.batches = []
        if graceful and self.keep:
            _KEPT.update(actors=self.actors, job=_job_id(ray))
            return
        if _KEPT.get("actors") is self.actors:
            _KEPT.clear()
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass


# actors kept for the next run when the caller initialised Ray itself (a notebook, a test session):
# the next check with the same actor count reuses them instead of starting processes again
_KEPT: dict = {}


def _job_id(ray):
    """This driver's Ray session (job ids repeat between clusters: the session name tells them apart)."""
    try:
        from ray._private import worker as _w

        session = getattr(getattr(_w, "_global_node", None), "session_name", None) or \
            getattr(getattr(_w.global_worker, "node", None), "session_name", None)
    except Exception:  # noqa: BLE001
        session = None
    try:
        return (ray.get_runtime_context().get_job_id(), session)
    except Exception:  # noqa: BLE001
        return None


def _drop_kept(ray) -> None:
    """Kill the kept actors if they belong to this session; forget them in any case (an actor id
    of another session may name a new actor here: never kill by it)."""
    actors = _KEPT.pop("actors", None)
    same = _KEPT.get("job") is not None and _KEPT.get("job") == _job_id(ray)
    _KEPT.clear()
    for a in (actors or ()) if same else ():
        try:
            ray.kill(a)
        except Exception:  # noqa: BLE001
            pass


class _RayCoordinator(_par._Coordinator):
    def __init__(self, ray, model_factory, model, bounds, n, progress, budget_mb, actor_progress, keep=False):
        super().__init__(model, bounds, n, progress)
        self.ray, self.factory, self.budget, self.actor_progress = ray, model_factory, budget_mb, actor_progress
        self.keep = keep
        if actor_progress is not None:
            self.progress = self._report

    def _make_pool(self, init):
        self.pool = _RayPool(self.ray, self.factory, self.n, init, self.budget, self.keep)
        return self.pool

    def _report(self, st: Stats) -> None:
        snaps = getattr(self.pool, "snapshot", None) or []
        self.actor_progress(st, [s for s in snaps if s is not None])

    def run(self) -> Result:
        try:
            return super().run()
        except MemoryBudgetExceeded as e:
            st = self.st
            bound = f"memory budget {e.budget_mb:g} MB per actor"
            return Result(BOUND_REACHED, f"bound reached ({bound}: actor {e.actor} at {e.rss_mb:.0f} MB) before the "
                                         f"state space was exhausted; no violation in the {st.states:,} states explored",
                          st, bound=bound)
        finally:
            pool = self.pool
            if pool is not None:
                LAST_RUN.clear()
                LAST_RUN.update(workers=self.n, partitions=[
                    {"actor": k, "node": pool.where[k]["node"], "host": pool.where[k]["host"], "pid": pool.where[k]["pid"],
                     "states": pool.worker_states[k] or (pool.snapshot[k][1] if pool.snapshot[k] else 0),
                     "peak_rss_mb": round(pool.worker_rss[k] or (pool.snapshot[k][3] if pool.snapshot[k] else 0.0), 1),
                     "cpu_s": round(pool.worker_cpu[k], 2) if pool.worker_timing[k] is not None else None}
                    for k in range(self.n)])
                if not any(pool.worker_rss):  # the actors were killed (error, budget, ^C): their last reports
                    self.st.peak_rss_mb = peak_rss_mb() + sum(p["peak_rss_mb"] for p in LAST_RUN["partitions"])
            _par.LAST_RUN.clear()


def _connect(ray, address: str | None, workers: int | None) -> tuple[bool, int]:
    """Start or join Ray; (whether this call initialised Ray and must shut it down, the actor count)."""
    import logging

    if not ray.is_initialized():
        # actors kept in an earlier session ended with it; drop every handle to them now, before a new
        # session exists (a stale handle freed later would release a reference in the new session)
        _KEPT.clear()
        gc.collect()
    if ray.is_initialized():
        cpus = int(ray.cluster_resources().get("CPU", 0))
        return False, workers or max(cpus, 1)
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in [os.environ.get("PYTHONPATH", "")] if p)}} \
        if os.environ.get("PYTHONPATH") else None
    if address in (None, "", "local"):
        cpus = max(os.cpu_count() or 1, workers or 1)
        try:
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
                     runtime_env=env)
        except Exception as e:  # noqa: BLE001
            raise RayUnavailable(f"--ray: could not start a local Ray instance: {type(e).__name__}: {e}") from None
        return True, workers or (os.cpu_count() or 1)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, runtime_env=env)
    except Exception as e:  # noqa: BLE001
        raise RayUnavailable(f"--ray {address}: cannot connect to the Ray cluster: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    return True, max(workers or cpus, 1)


def check_ray(model_factory, bounds: Bounds | None = None, workers: int | None = None, address: str | None = None,
              progress: Callable[[Stats], None] | None = None, memory_budget_mb: float | None = None,
              actor_progress: Callable[[Stats, list], None] | None = None, model=None) -> Result:
    """Safety check on ``workers`` Ray actors; the same Result as ``Explorer(model, bounds).run()``.

    ``model_factory``: a picklable zero-argument callable that returns the model configured for the
    safety search (reduction set, liveness off); every actor and the driver call it once.
    ``address``: None starts (and afterwards stops) a local instance; else ``"auto"`` or
    ``"ray://host:port"``.  ``workers``: the actor count (default: the CPUs Ray sees).  If Ray is
    already initialised in this process it is used as it is and left running.
    ``actor_progress(stats, [(transitions, states, frontier, rss_mb, seconds) per actor])``.  ``model``:
    the driver's own copy, configured as the factory configures its models (default: one more from
    the factory); the actors' coverage (which transitions fired) is added to its ``fired``."""
    ray = require_ray()
    bounds = bounds or Bounds()
    owned, n = _connect(ray, address, workers)
    old_term = None
    try:
        if owned:
            def on_term(signum, frame):
                raise KeyboardInterrupt
            try:
                old_term = signal.signal(signal.SIGTERM, on_term)
            except ValueError:  # not the main thread
                old_term = None
        model = model_factory() if model is None else model
        coord = _RayCoordinator(ray, model_factory, model, bounds, n, progress, memory_budget_mb, actor_progress,
                                keep=not owned)
        try:
            return coord.run()
        finally:
            coord.pool = coord.progress = coord.actor_progress = None  # no cycle keeps actor handles alive
    finally:
        if owned:
            _KEPT.clear()
            ray.shutdown()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
