"""Where 8 forked workers' extra successor-generation CPU comes from, on one machine:

    python bench/parallel_gap.py [--config pp1:mesh=4:off] [--workers 8] [--rounds 2] [--json PATH]

- ``copies``: the serial search alone, then ``--workers`` serial searches at once, each on its own fresh
  model in its own forked process: what the machine itself adds for this workload (memory, caches), which
  microbenchmarks such as bench/machine_scaling.py may not show;
- ``warm`` against ``cold``, ``--rounds`` times: a serial search, then ``check_parallel`` forked from the
  model that has just run it (its memo tables and key numbers full: no first-sight work left), then one
  forked from a fresh model (what users get).  Each parallel line gives wall, every worker's CPU, the CPU
  critical path and the workers' summed phase CPU (expand: successor generation and invariants; dump:
  routing and writing; load: reading and translating; dedup).

Efficiency of a parallel run = serial wall / (workers x its wall), against the serial run of its round.
Run on an idle machine with at least ``--workers`` cores (docs/scaling.md, sixteenth round).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from lockstep.model import parallel  # noqa: E402
from lockstep.model.checker import Explorer  # noqa: E402
from lockstep.model.result import Bounds  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_parallel import factory, parse_config  # noqa: E402


def serial(make) -> dict:
    m = make()
    t, c = time.perf_counter(), time.process_time()
    r = Explorer(m, Bounds()).run()
    return dict(states=r.stats.states, wall=round(time.perf_counter() - t, 3), cpu=round(time.process_time() - c, 3))


def parallel_row(tag: str, make, workers: int, base: float) -> dict:
    t = time.perf_counter()
    r = parallel.check_parallel(make, Bounds(), workers=workers)
    wall = time.perf_counter() - t
    last = parallel.LAST_RUN
    phases = {k: round(sum(tm[k] for tm in last["worker_timing"]), 2) for k in ("expand", "dump", "load", "dedup")}
    return dict(run=tag, states=r.stats.states, wall=round(wall, 3), efficiency=round(base / (workers * wall), 3),
                cpu=round(sum(last["worker_cpu_s"]), 2), critical_path=round(last["critical_path_cpu_s"], 3), **phases)


def copies(make, n: int) -> list[dict]:
    """``n`` serial searches at once, one per forked process: each one's result."""
    rfd, wfd = os.pipe()
    pids = []
    for k in range(n):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(rfd)
            try:
                os.write(wfd, (json.dumps(dict(run=f"copy {k}", **serial(make))) + "\n").encode())
            finally:
                os._exit(0)
        pids.append(pid)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        out = [json.loads(line) for line in f]
    for pid in pids:
        os.waitpid(pid, 0)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="pp1:mesh=4:off", type=parse_config, metavar="SPEC:PARAMS:on|off")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    if a.workers < 1 or a.rounds < 1:
        ap.error("--workers and --rounds must be at least 1")
    spec, raw, reduction = a.config
    make = factory(spec, raw, reduction)
    rows = []

    def show(row):
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)

    alone = serial(make)
    show(dict(run="serial alone", **alone))
    for row in sorted(copies(make, a.workers), key=lambda r: r["wall"]):
        show(row)
    for _ in range(a.rounds):
        m = make()
        t = time.perf_counter()
        Explorer(m, Bounds()).run()
        base = time.perf_counter() - t
        show(dict(run="serial", wall=round(base, 3)))
        show(parallel_row("warm", lambda: m, a.workers, base))
        show(parallel_row("cold", make, a.workers, base))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(config=a.config, workers=a.workers, rows=rows), f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
