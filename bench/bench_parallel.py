"""Serial explorer vs multi-core exploration (model/parallel.py) on the same models.

    python bench/bench_parallel.py [--workers 2] [--repeat 1] [--timeout 600] [--quick] [--json PATH]

Rows: pp1 mesh=3 without and with reductions, and the pipeline spec (default size, pure-Python
path, no reduction).  Each row runs ``Explorer(model).run()`` (workers=1) and
``check_parallel(factory, workers=N)``, checks that verdict, states, transitions and depth agree,
and prints the wall time of each (best of --repeat), the speedup, and the CPU seconds of each run
summed over every process (on a shared machine the CPU columns are the steadier comparison: a
parallel run cannot beat serial by more than serial CPU / max worker CPU).  ``load`` is the
1-minute load average when the row finished: other processes compete for the same cores.  Liveness is off (the parallel
core is safety only).  ``--quick`` uses small sizes (a smoke test of the script itself).

RSS: for the parallel runs, the sum of the parent's and every worker's peak RSS (an upper bound:
copy-on-write pages inherited from the parent count in every process).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from lockstep.model.checker import Bounds, Explorer
from lockstep.model import parallel
from lockstep.spec.registry import resolve


def factory(spec: str, raw: dict, reduction: bool):
    def make():
        info, params = resolve(spec, None, {k: str(v) for k, v in raw.items()})
        model = info.build(params, None, "gloo")
        if hasattr(model, "set_liveness"):
            model.set_liveness(False)
        model.set_reduction(reduction)
        return model
    return make


def timed(fn, repeat: int, par: bool):
    """(best wall seconds, CPU seconds of that run over every process, result)."""
    best, res = None, None
    for _ in range(repeat):
        c = time.process_time()
        t = time.perf_counter()
        r = fn()
        dt = time.perf_counter() - t
        cpu = time.process_time() - c
        if par and parallel.LAST_RUN:
            cpu += sum(parallel.LAST_RUN["worker_cpu_s"])
        if best is None or dt < best[0]:
            best, res = (dt, cpu), r
    return best[0], best[1], res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.quick:
        configs = [("pp1", {"mesh": 2}, False), ("pp1", {"mesh": 2}, True), ("pipeline", {"stages": 3, "microbatches": 3}, False)]
    else:
        configs = [("pp1", {"mesh": 3}, False), ("pp1", {"mesh": 3}, True), ("pipeline", {}, False)]
    print(f"cores: {os.cpu_count()}, workers: {a.workers}")
    print(f"{'spec':<10}{'params':<18}{'red':>4}{'verdict':>9}{'states':>10}{'transitions':>13}"
          f"{'serial s':>10}{'par s':>8}{'speedup':>9}{'cpu ser':>9}{'cpu par':>9}{'RSS ser':>9}{'RSS par':>9}{'load':>6}")
    rows = []
    ok = True
    for spec, raw, red in configs:
        make = factory(spec, raw, red)
        bounds = Bounds(timeout=a.timeout)
        parallel.LAST_RUN.clear()
        ts, cs, rs = timed(lambda: Explorer(make(), bounds).run(), a.repeat, False)
        tp, cp, rp = timed(lambda: parallel.check_parallel(make, bounds, a.workers), a.repeat, True)
        same = (rs.verdict, rs.stats.states, rs.stats.transitions, rs.stats.depth) == \
               (rp.verdict, rp.stats.states, rp.stats.transitions, rp.stats.depth)
        ok &= same
        row = {"spec": spec, "params": raw, "reduction": red, "verdict": rs.verdict, "states": rs.stats.states,
               "transitions": rs.stats.transitions, "serial_s": round(ts, 2), "parallel_s": round(tp, 2),
               "serial_cpu_s": round(cs, 2), "parallel_cpu_s": round(cp, 2), "load_avg": os.getloadavg()[0],
               "workers": a.workers, "speedup": round(ts / tp, 2), "same": same,
               "serial_rss_mb": round(rs.stats.peak_rss_mb), "parallel_rss_mb": round(rp.stats.peak_rss_mb)}
        rows.append(row)
        ptxt = ",".join(f"{k}={v}" for k, v in raw.items()) or "-"
        print(f"{spec:<10}{ptxt:<18}{'on' if red else 'off':>4}{rs.verdict:>9}{rs.stats.states:>10,}{rs.stats.transitions:>13,}"
              f"{ts:>10.2f}{tp:>8.2f}{ts / tp:>8.2f}x{cs:>9.2f}{cp:>9.2f}{row['serial_rss_mb']:>9}{row['parallel_rss_mb']:>9}"
              f"{row['load_avg']:>6.1f}"
              + ("" if same else "  MISMATCH"), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
