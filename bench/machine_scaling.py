"""How well this machine runs K CPU-bound Python processes at once, before any model checking.

    python bench/machine_scaling.py [--procs 1,2,4,8,16] [--pin none,spread] [--json PATH]

A multi-core search cannot scale better than the machine does.  For each K this forks K copies of
two pure-Python workloads at once and reports each copy's mean wall time against K = 1:

- ``interp``: a small loop of integer arithmetic and lookups in a small dict (stays in the caches);
- ``heap``: what a search worker does to memory: builds about 60 MB of nested tuples, hashes them into
  a dict and looks them up again in a shuffled order (allocation, page faults, cache misses).

``--pin spread`` pins copy i to the i-th CPU of an order that takes one CPU of each physical core
before a second one of any (the cores as ``/sys/devices/system/cpu/cpu*/topology`` gives them; the CPUs
in order where it gives none); ``none`` leaves placement to the scheduler.  The first line says how
many cores the topology shows.

``slowdown`` = mean wall at K / wall at 1: 1.0 means K cores run K copies as fast as one; 2.0 means
each copy runs at half speed (for example two hyperthreads of one core, or a memory bus that is
saturated).  ``eff`` = 1 / slowdown, the best parallel efficiency any K-process search can reach on
this machine.  User and system CPU seconds per copy show where the time went (system time: page
faults, which cost more in a virtual machine).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import time


def interp(n: int = 12_000_000) -> int:
    d = {i: i * 7 for i in range(64)}
    acc = 0
    for i in range(n):
        acc = (acc + d[i & 63] * i) & 0xFFFFFFFF
    return acc


def heap(n: int = 300_000) -> int:
    states = [(i & 7, (i, i >> 3, (i & 15, "x")), (i % 11, i % 13, i % 17)) for i in range(n)]
    seen = {}
    for i, s in enumerate(states):
        seen[s] = i
    order = list(range(n))
    random.Random(1).shuffle(order)
    hits = 0
    for i in order:
        hits += seen[states[i]] == i
    return hits


WORKLOADS = {"interp": interp, "heap": heap}


def topology() -> tuple[list[int], int | None]:
    """(the CPUs this process may run on, one per physical core first, then the second thread of each
    core, and so on; how many physical cores they sit on), or (the CPUs in order, None) where the
    topology cannot be read."""
    cpus = sorted(os.sched_getaffinity(0))
    cores: dict = {}
    for c in cpus:
        base = f"/sys/devices/system/cpu/cpu{c}/topology/"
        try:
            with open(base + "physical_package_id") as f, open(base + "core_id") as g:
                key = (f.read().strip(), g.read().strip())
        except OSError:
            return cpus, None
        cores.setdefault(key, []).append(c)
    rounds = max(len(v) for v in cores.values())
    return [v[r] for r in range(rounds) for v in cores.values() if r < len(v)], len(cores)


def _child(fn, w, cpu=None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    t = time.perf_counter()
    fn()
    wall = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_SELF)
    os.write(w, json.dumps([wall, ru.ru_utime, ru.ru_stime]).encode() + b"\n")
    os._exit(0)


def run(fn, k: int, pin: list | None = None) -> list[list[float]]:
    """Fork k copies of fn at once (copy i pinned to CPU ``pin[i % len(pin)]`` when given); each one's
    [wall, user, sys]."""
    r, w = os.pipe()
    pids = []
    for i in range(k):
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.close(r)
            _child(fn, w, None if pin is None else pin[i % len(pin)])
        pids.append(pid)
    os.close(w)
    try:
        for pid in pids:
            os.waitpid(pid, 0)
    except BaseException:  # ^C or SIGTERM: no copy outlives the bench
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        raise
    with os.fdopen(r) as f:
        res = [json.loads(line) for line in f.read().splitlines()]
    if len(res) < k:
        sys.exit(f"machine_scaling: {k - len(res)} of {k} copies did not finish (interrupted?)")
    return res


def _counts(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",")]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return ks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", default="1,2,4,8,16", type=_counts, help="comma-separated process counts (default 1,2,4,8,16)")
    ap.add_argument("--pin", default="none", help="comma-separated placements: none, spread (default none)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    pins = a.pin.split(",")
    if any(p not in ("none", "spread") for p in pins):
        ap.error(f"--pin: expected none or spread, got {a.pin!r}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the copies are killed on the way out (run)
    ks = a.procs
    order, ncores = topology()
    print(f"# {os.cpu_count()} CPUs, affinity {len(os.sched_getaffinity(0))}, "
          f"{'topology unknown' if ncores is None else f'{ncores} physical cores'}, spread order {order}, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"{'workload':<8} {'pin':<6} {'K':>3} {'wall':>7} {'user':>7} {'sys':>6} {'slowdown':>9} {'eff':>5}")
    rows = []
    for name, fn in WORKLOADS.items():
        for pin in pins:
            base = None
            for k in ks:
                res = run(fn, k, order if pin == "spread" else None)
                wall = sum(x[0] for x in res) / len(res)
                user = sum(x[1] for x in res) / len(res)
                sys_ = sum(x[2] for x in res) / len(res)
                base = base or wall
                rows.append({"workload": name, "pin": pin, "procs": k, "wall_s": round(wall, 3), "user_s": round(user, 3),
                             "sys_s": round(sys_, 3), "slowdown": round(wall / base, 3)})
                print(f"{name:<8} {pin:<6} {k:>3} {wall:7.2f} {user:7.2f} {sys_:6.2f} {wall / base:9.2f} {base / wall:5.2f}",
                      flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
