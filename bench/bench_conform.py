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

A run of more than 16 MiB is streamed (``check.conform_dir``): its ``load_s`` is null (reading is not a
separate step); a baseline checkout without ``conform_dir`` loads the run whole first.

Memory: every row is measured in a fresh child process (``--measure DIR``), so its ``peak_rss_mb`` (the
child's peak resident set, load and check together) is that trace's own; ``base_rss_mb`` is the child's
RSS before it loads the trace (the interpreter and lockstep's modules) and ``bytes_per_event`` the peak
above it per event.

Long traces: ``--long-chunks N[,N...]`` adds a row (each) for a real tp 4-rank run of N chunks (about 455 events per
chunk: 2,250 chunks make a 1M-event trace, 165 MB of JSONL; making it takes ~20 min here, once; it is
reused from --trace-dir).  The targets for it: < 60 s and a flat memory.  ``--baseline PYTHONPATH``
measures every row a second time with another checkout's ``lockstep`` (e.g. an extracted older commit:
``git archive <commit> | tar -x -C /tmp/base/lockstep``, then ``--baseline /tmp/base``) and prints the
two side by side.
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
    # a long run on a loaded machine outlasts the launcher's default deadline: about 1 s per chunk, at least 600 s
    return args + SLOW_MACHINE + ["--deadline", str(max(600, 2 * chunks))]


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


def _rss_mb() -> float:
    """The current resident set of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def measure_in_child(d: Path, repeat: int, pythonpath: str | None = None) -> dict:
    """time_conform in a fresh process (its own peak RSS); ``pythonpath`` picks the lockstep it imports."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run([sys.executable, __file__, "--measure", str(d), "--repeat", str(repeat)], env=env,
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _count_events(d: Path) -> int:
    """Recorded events of a run: its rank files' lines (outside the timing)."""
    n = 0
    for p in Path(d).glob("rank*.jsonl"):
        with open(p, "rb") as f:
            n += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))
    return n


def time_conform(d: Path, repeat: int) -> dict:
    import resource

    from lockstep.conformance import check, loader
    base_rss = _rss_mb()
    best = None
    streamed = hasattr(check, "conform_dir")  # a baseline checkout loads the whole run first
    for _ in range(repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        if streamed:
            rep = check.conform_dir(d, check_variant=False)
            t1 = t0  # loading is not a separate step: the files are streamed
            topology, ranks = rep.topology, len(list(Path(d).glob("rank*.jsonl")))
        else:
            run = loader.load(d)
            t1 = time.perf_counter()
            rep = check.conform_run(run, check_variant=False)
            topology, ranks = run.manifest["topology"], len(run.ranks)
            del run
        t2 = time.perf_counter()
        cpu = time.process_time() - c0
        if best is None or t2 - t0 < best[0]:
            # numbers only: holding the run or the report would double the next repeat's peak RSS
            best = (t2 - t0, t1 - t0, rep.replay.observables, rep.replay.nodes, rep.verdict, topology, ranks,
                    _count_events(d), cpu)
        del rep
    total, load_s, observables, nodes, verdict, topology, ranks, events, cpu = best
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"peak_rss_mb": round(peak), "base_rss_mb": round(base_rss),
            "bytes_per_event": round((peak - base_rss) * 2**20 / events), "trace": str(d), "topology": topology, "ranks": ranks, "events": events,
            "observables": observables, "search_nodes": nodes, "verdict": verdict,
            "load_s": round(load_s, 3) if load_s else None, "total_s": round(total, 3), "cpu_s": round(cpu, 3),
            "us_per_event": round(1e6 * total / events, 2), "cpu_us_per_event": round(1e6 * cpu / events, 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace-dir", default="/tmp/lockstep-bench-conform")
    ap.add_argument("--worlds", default="3,5,9,17")
    ap.add_argument("--topologies", default="tp,pp1")
    ap.add_argument("--chunks", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--long-chunks", default="",
                    help="add a row for a real tp 4-rank run of this many chunks (2250: about 1M events); a comma list "
                         "(550,1100,2250: 250k, 500k, 1M events) also compares their peak RSS (flat: the largest within "
                         "1.25x of the smallest)")
    ap.add_argument("--long-repeat", type=int, default=1)
    ap.add_argument("--baseline", default=None, metavar="PYTHONPATH",
                    help="also measure every row with the lockstep found on this PYTHONPATH, side by side")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)  # the child: one row, as JSON
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(time_conform(Path(a.measure), a.repeat)), flush=True)
        return 0
    base = Path(a.trace_dir)
    worlds = [int(w) for w in a.worlds.split(",")] if a.worlds else []
    rows: dict[str, list[dict]] = {}
    side: list[tuple[dict, dict]] = []

    def measure(d: Path, repeat: int) -> dict:
        r = measure_in_child(d, repeat)
        print(json.dumps(r), flush=True)
        if a.baseline:
            b = measure_in_child(d, repeat, a.baseline)
            print(json.dumps({"baseline": a.baseline, **b}), flush=True)
            side.append((b, r))
        return r

    for topo in (a.topologies.split(",") if worlds else []):
        for w in worlds:
            d = base / f"{topo}-w{w}-c{a.chunks}"
            ensure_run(d, topo, w, a.chunks)
            rows.setdefault(topo, []).append(measure(d, a.repeat))
    ok = True
    longs = []
    for c in [int(x) for x in str(a.long_chunks).split(",") if x.strip() and int(x)]:
        d = base / f"tp-w4-c{c}"
        ensure_run(d, "tp", 4, c)
        r = measure(d, a.long_repeat)
        longs.append(r)
        print(f"long trace: {r['events']:,} events, {r['total_s']} s wall ({r['cpu_s']} s cpu), peak RSS "
              f"{r['peak_rss_mb']} MiB ({r['bytes_per_event']} bytes/event above the {r['base_rss_mb']} MiB base); "
              f"{r['verdict']} (goal < 60 s)", flush=True)
        ok &= r["verdict"] == "CONFORMS" and r["total_s"] < 60
    if len(longs) > 1:
        lo, hi = min(longs, key=lambda r: r["events"]), max(longs, key=lambda r: r["events"])
        ratio = hi["peak_rss_mb"] / lo["peak_rss_mb"]
        per = ", ".join(f"{r['events']:,} events {r['peak_rss_mb']} MiB" for r in longs)
        print(f"memory: peak RSS {per}; "
              f"{hi['events'] / lo['events']:.1f}x the events take {ratio:.2f}x the memory (flat: <= 1.25)")
        ok &= ratio <= 1.25
    if side:
        print(f"{'trace':<28}{'events':>10}{'before s':>10}{'after s':>9}{'before MiB':>12}{'after MiB':>11}"
              f"{'before B/ev':>13}{'after B/ev':>12}")
        for b, r in side:
            print(f"{Path(r['trace']).name:<28}{r['events']:>10,}{b['total_s']:>10}{r['total_s']:>9}{b['peak_rss_mb']:>12}"
                  f"{r['peak_rss_mb']:>11}{b['bytes_per_event']:>13}{r['bytes_per_event']:>12}")
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
