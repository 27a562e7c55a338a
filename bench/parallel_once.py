"""One measured search, in a process of its own, as one JSON line (bench/ab_parallel.sh runs it):

    python bench/parallel_once.py serial|N [--config pp1:mesh=4:off] [--tag TEXT]

``serial``: ``Explorer(model).run()``; ``N``: ``check_parallel`` with N forked workers (the default sharing
of model/parallel.py).  Both build the model inside the timed span.  The line gives the tag, the states,
the wall seconds and, for a parallel search, the workers' summed CPU, the CPU critical path, the levels'
expand and merge phases, and the workers' summed phase timings (expand, dump, load, dedup, ...).
Safety only.  Which lockstep runs is whichever ``import lockstep`` finds (PYTHONPATH).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench_parallel import factory, parse_config  # noqa: E402  (bench/ is this script's folder)
from lockstep.model import parallel  # noqa: E402
from lockstep.model.checker import Explorer  # noqa: E402
from lockstep.model.result import Bounds  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", help="serial, or a number of workers")
    ap.add_argument("--config", default="pp1:mesh=4:off", type=parse_config, help="SPEC:NAME=VALUE,...:on|off (reduction)")
    ap.add_argument("--tag", default="", help="a label copied into the line")
    a = ap.parse_args()
    if a.mode != "serial" and not (a.mode.isdigit() and int(a.mode) >= 2):
        ap.error(f"mode: expected serial or a number of workers >= 2, got {a.mode!r}")
    spec, raw, red = a.config
    make = factory(spec, raw, red)
    out: dict = {}
    t0 = time.perf_counter()
    if a.mode == "serial":
        r = Explorer(make(), Bounds()).run()
    else:
        r = parallel.check_parallel(make, Bounds(), workers=int(a.mode))
        last = parallel.LAST_RUN
        timing: dict = {}
        for tm in last["worker_timing"]:
            for k, v in (tm or {}).items():
                if isinstance(v, (int, float)):
                    timing[k] = round(timing.get(k, 0) + v, 3)
        out = {"cpu_s": round(sum(last["worker_cpu_s"]), 3), "critical_path_cpu_s": last["critical_path_cpu_s"],
               "phases": last["phases"], "timing": timing}
    wall = time.perf_counter() - t0
    print(json.dumps({"tag": a.tag, "mode": a.mode, "config": f"{spec}:{','.join(f'{k}={v}' for k, v in raw.items())}:"
                                                                  f"{'on' if red else 'off'}", "verdict": r.verdict, "states": r.stats.states,
                      "wall_s": round(wall, 3), **out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
