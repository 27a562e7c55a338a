"""Benchmark: following a run's recorded collectives on a user's spec (conformance/flight_follow.py),
the search behind `lockstep conform --flight-recorder DUMPS --spec PATH.py`, at the sizes users run.

For each (spec, parameters) a run is made by a random walk of the spec's full graph to its end (what
the dumps of a clean job show: per group its collectives, in order); then the hardened protocol
follows it (a run it conforms to), and follows the same run with its last collective changed to a
broadcast (a run it must refuse, searching every pair that agrees with the rest: as many as the spec
has states, since the run agrees with it up to its last collective).  One JSON line per
row: ranks, collectives recorded, pairs (spec state, progress) explored, seconds, collectives/s and
pairs/s, and the peak RSS of this process so far.

    python bench/bench_flight_follow.py [--rows early_stop:8:3,mesh_2d:4x4:50] [--seed 1]

A run the spec follows costs a thin band of the spec's graph around it (hundreds to thousands of
pairs); a run it refuses costs what ``lockstep check`` costs at the same parameters, since every state
the run agrees with up to its last collective is searched (early_stop at 16 ranks, 2 epochs, patience
3, on this 2-core machine: the refusal 250,988 pairs in 35 s and 686 MB; ``lockstep check
--no-liveness`` 271,337 states in 33 s and 724 MB).

Rows: ``early_stop:RANKS:EPOCHS`` (examples/early_stop_spec.py, patience above the epochs: no rank
stops early, and each rank counts its epochs without improvement, so the spec has many states) and
``mesh_2d:TPxDP:STEPS`` (examples/mesh_2d_spec.py: a long run on five groups).  A search that meets
the bound (flight_follow.MAX_STATES pairs) says so: ``complete`` false.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT.parent))

from lockstep.conformance import flight_follow  # noqa: E402
from lockstep.model.api import Violation  # noqa: E402
from lockstep.model.features import configure  # noqa: E402
from lockstep.spec.loading import build_model, load_spec  # noqa: E402
from lockstep.spec.registry import pick_backend, resolve  # noqa: E402

DEFAULT_ROWS = "early_stop:4:6,early_stop:8:3,early_stop:16:2,mesh_2d:2x2:50,mesh_2d:4x2:50,mesh_2d:4x4:50"


def _row(spec: str):
    name, size, length = spec.split(":")
    if name == "early_stop":
        raw = {"ranks": size, "epochs": length, "patience": str(int(length) + 1)}
    elif name == "mesh_2d":
        tp, dp = size.split("x")
        raw = {"tp": tp, "dp": dp, "steps": length}
    else:
        raise SystemExit(f"unknown row {spec!r}: early_stop:RANKS:EPOCHS or mesh_2d:TPxDP:STEPS")
    info = load_spec(str(ROOT / "examples" / f"{name}_spec.py"))
    return info, raw


def _model(info, raw):
    return build_model(info, resolve(info, None, raw)[1], None, pick_backend(info, None, None))


def walk(model, rng: random.Random) -> dict:
    """A random run of the full graph to its end: per group the kinds of its collectives, in order."""
    configure(model, False, liveness=False)
    plan = {g: [] for g in model.groups}
    s = next(iter(model.init_states()))
    while True:
        steps = [(a, n) for a, n in model.successors(s) if a is not None and not isinstance(n, Violation)
                 and not model.rank_fault(a)]
        if not steps:
            return plan
        a, n = rng.choice(steps)
        step = model.collective_step(s, a)
        if step is not None:
            plan[step[0]].append(step[1])
        s = n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default=DEFAULT_ROWS)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    for spec in args.rows.split(","):
        info, raw = _row(spec)
        plan = walk(_model(info, raw), rng)
        n = sum(map(len, plan.values()))
        last = max(plan, key=lambda g: len(plan[g]))
        changed = {**plan, last: plan[last][:-1] + ["broadcast"]}
        for what, p, expect in (("conforms", plan, True), ("refused", changed, False)):
            t = time.perf_counter()
            x = flight_follow.follow(_model(info, raw), p)
            dt = time.perf_counter() - t
            assert x["follows"] is expect or not x["complete"], (spec, what, x)
            print(json.dumps({"row": spec, "run": what, "ranks": len({a.rank for a in _model(info, raw).actors}),
                              "collectives": n, "pairs": x["states"], "complete": x["complete"], "seconds": round(dt, 3),
                              "collectives_per_s": round(n / dt), "pairs_per_s": round(x["states"] / dt),
                              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
