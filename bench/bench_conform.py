"""Benchmark: conformance is linear in trace length; a 4-rank trace of >= 100,000 events checks in
under 10 s.

The trace is a real run of the implementation (`lockstep run --topology tp -p world=4 -p chunks=N`,
~440 events per chunk over the 4 ranks), made once and reused from --trace-dir.  The bench times
`conform` (load + c10d matching + replay) on the full trace and on a shorter run, and prints the
time per event of each so linearity can be read off.

    python bench/bench_conform.py [--trace-dir DIR] [--chunks 230] [--short-chunks 40]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def ensure_run(d: Path, chunks: int, world: int = 4) -> None:
    m = d / "manifest.json"
    if m.exists():
        cfg = json.loads(m.read_text())["config"]
        if cfg.get("chunks") == chunks and cfg.get("world") == world:
            return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "lockstep", "run", "--topology", "tp", "-p", f"world={world}", "-p", f"chunks={chunks}",
                    "--trace-dir", str(d), "--force"], check=True, env=env, stdout=subprocess.DEVNULL)


def time_conform(d: Path) -> dict:
    from lockstep.conformance import check, loader
    t0 = time.perf_counter()
    run = loader.load(d)
    t1 = time.perf_counter()
    rep = check.conform_run(run, check_variant=False)
    t2 = time.perf_counter()
    events = sum(len(t.events) for t in run.ranks.values())
    return {"trace": str(d), "ranks": len(run.ranks), "events": events, "observables": rep.replay.observables,
            "search_nodes": rep.replay.nodes, "conforms": rep.conforms, "load_s": round(t1 - t0, 3),
            "check_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3), "us_per_event": round(1e6 * (t2 - t0) / events, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace-dir", default="/tmp/lockstep-bench-conform")
    ap.add_argument("--chunks", type=int, default=230)
    ap.add_argument("--short-chunks", type=int, default=40)
    ap.add_argument("--limit-s", type=float, default=10.0)
    a = ap.parse_args()
    base = Path(a.trace_dir)
    full, short = base / f"tp4-{a.chunks}", base / f"tp4-{a.short_chunks}"
    ensure_run(short, a.short_chunks)
    ensure_run(full, a.chunks)
    rs = [time_conform(short), time_conform(full)]
    for r in rs:
        print(json.dumps(r))
    big = rs[-1]
    ratio = big["us_per_event"] / rs[0]["us_per_event"]
    print(f"full trace: {big['events']} events over {big['ranks']} ranks checked in {big['total_s']:.2f}s "
          f"({big['us_per_event']} us/event; per-event cost ratio full/short = {ratio:.2f}, 1.0 = linear)")
    ok = big["conforms"] and big["total_s"] < a.limit_s and big["events"] >= 100_000
    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
