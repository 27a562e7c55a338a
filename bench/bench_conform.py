"""Benchmark: the cost of `conform` per recorded event does not grow with the number of ranks.

Real runs of the implementation (`lockstep run`), made once and reused from --trace-dir, for TP and PP
(pp1) at 3, 5, 9 and 17 ranks (PP at 9 ranks: the issue's `-p heads=8 -p chunks=12 -p hard_cut_at=6`
run; at 17 ranks a mesh of 16; TP with one head per rank, dim 8 per head).  For each the bench times `conform` in this process (load + c10d
matching + payload checks + replay, no model checker) and prints one JSON line: events, observables,
search nodes, seconds and microseconds per event; then per topology the ratio of the largest world's
per-event cost to the smallest's (1.0 = flat; goal <= 1.5) and a PASS/FAIL line for the targets
(<= 50 us/event; the 9-rank pp1 run < 5 s; the 17-rank one < 20 s).

    python bench/bench_conform.py [--trace-dir DIR] [--worlds 3,5,9,17] [--chunks 12] [--repeat 3]

Timings are the best of --repeat runs; each row also gives CPU time per event (process time), which
a shared, loaded machine inflates less than wall time.  Report `uptime`'s load with the figures.  Runs use long PG timeouts so a loaded
machine does not turn a clean run into a timed-out one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SLOW_MACHINE = ["-p", "dist_timeout_s=60", "-p", "watchdog_s=90", "-p", "heartbeat_s=1"]


def run_args(topology: str, world: int, chunks: int) -> list[str]:
    args = ["--topology", topology, "-p", f"world={world}", "-p", f"chunks={chunks}"]
    if topology == "pp1":  # the mesh (world - 1 ranks) shards the heads: 8, or 16 for a mesh of 16
        heads = max(8, world - 1)
        args += ["-p", f"heads={heads}", "-p", f"dim={max(32, 4 * heads)}", "-p", f"hard_cut_at={chunks // 2}"]
    else:  # TP shards the heads: one per rank (the TP degree must divide them)
        args += ["-p", f"heads={world}", "-p", f"dim={8 * world}"]
    return args + SLOW_MACHINE


def ensure_run(d: Path, topology: str, world: int, chunks: int) -> None:
    m = d / "summary.json"
    if m.exists():
        s = json.loads(m.read_text())
        if s.get("ok") and s.get("world") == world and s.get("chunks") == chunks:
            return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lockstep", "run", *run_args(topology, world, chunks), "--trace-dir", str(d),
                    "--force"], check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"# made {d} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


def time_conform(d: Path, repeat: int) -> dict:
    from lockstep.conformance import check, loader
    best = None
    for _ in range(repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        run = loader.load(d)
        t1 = time.perf_counter()
        rep = check.conform_run(run, check_variant=False)
        t2 = time.perf_counter()
        cpu = time.process_time() - c0
        if best is None or t2 - t0 < best[0]:
            best = (t2 - t0, t1 - t0, rep, run, cpu)
    total, load_s, rep, run, cpu = best
    events = sum(len(t.events) for t in run.ranks.values())
    return {"trace": str(d), "topology": run.manifest["topology"], "ranks": len(run.ranks), "events": events,
            "observables": rep.replay.observables, "search_nodes": rep.replay.nodes, "verdict": rep.verdict,
            "load_s": round(load_s, 3), "total_s": round(total, 3), "cpu_s": round(cpu, 3),
            "us_per_event": round(1e6 * total / events, 2), "cpu_us_per_event": round(1e6 * cpu / events, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace-dir", default="/tmp/lockstep-bench-conform")
    ap.add_argument("--worlds", default="3,5,9,17")
    ap.add_argument("--topologies", default="tp,pp1")
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    base = Path(a.trace_dir)
    worlds = [int(w) for w in a.worlds.split(",")]
    rows: dict[str, list[dict]] = {}
    for topo in a.topologies.split(","):
        for w in worlds:
            d = base / f"{topo}-w{w}-c{a.chunks}"
            ensure_run(d, topo, w, a.chunks)
            r = time_conform(d, a.repeat)
            print(json.dumps(r), flush=True)
            rows.setdefault(topo, []).append(r)
    ok = True
    for topo, rs in rows.items():
        lo, hi = rs[0], rs[-1]
        ratio = hi["us_per_event"] / lo["us_per_event"]
        cratio = hi["cpu_us_per_event"] / lo["cpu_us_per_event"]
        worst = max(r["us_per_event"] for r in rs)
        print(f"{topo}: wall us/event " + ", ".join(f"{r['ranks']} ranks {r['us_per_event']}" for r in rs)
              + "; cpu us/event " + ", ".join(f"{r['cpu_us_per_event']}" for r in rs)
              + f"; ratio {hi['ranks']}/{lo['ranks']} ranks = {ratio:.2f} wall, {cratio:.2f} cpu (goal <= 1.5); "
                f"worst {worst} us/event (goal <= 50)")
        ok &= all(r["verdict"] == "CONFORMS" for r in rs) and ratio <= 1.5 and worst <= 50
        for r in rs:
            if topo == "pp1" and r["ranks"] == 9:
                ok &= r["total_s"] < 5
            if topo == "pp1" and r["ranks"] == 17:
                ok &= r["total_s"] < 20
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
