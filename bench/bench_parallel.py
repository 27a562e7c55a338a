"""Serial explorer vs multi-core exploration (model/parallel.py) on the same models, side by side in one process.

    python bench/bench_parallel.py [--workers 2] [--transport compact,pickle] [--steal auto,halves,off] [--repeat 1]
                                   [--timeout 600] [--config pp1:mesh=3:off ...] [--quick] [--phases] [--json PATH]
    python bench/bench_parallel.py --pairs 3 --config pp1:mesh=4:off --workers 8

Each config (SPEC:NAME=VALUE,...:on|off for reduction; default pp1 mesh=3 unreduced and reduced, and the
pipeline spec on its pure-Python path) runs ``Explorer(model).run()`` once (the reference) and then
``check_parallel(factory, workers=N)`` for every N in ``--workers`` (comma-separated) and every
transport in ``--transport`` (``compact``: the model's int keys where its states have them, else the
numbered-values encodings, and the run column says which: ``keyed``, ``numbered`` or ``encoded``;
``pickle``: the states pickled as they are, the earliest transport) and every work-stealing mode in
``--steal`` (keyed workers; ``auto`` shares each level where the workers do not outnumber the cores: each
worker expands a consecutive range of its serial order, and takes chunks of the others' once done;
``halves`` is the earlier sharing, each worker expanding its own states and publishing half; a ``/off``
row does not).  Every run must agree with the serial one on verdict, states,
transitions and depth (``MISMATCH`` otherwise, exit 1).

Columns: ``wall`` seconds; ``cpu`` seconds summed over every process; ``max w`` the busiest worker's CPU;
``crit`` the CPU critical path (per BFS level, the slowest worker's expand phase plus the slowest
worker's merge phase: each phase ends at a barrier); ``eff wall`` = serial wall / (N x wall) and
``eff crit`` = serial CPU / (N x crit); after a configuration's rows the serial search runs again
(``serial again``; ``--no-serial-after`` skips it) and one line gives every row's efficiencies against
the mean of the two serial runs (JSON: ``efficiency_*_mean_serial``).  On an idle machine with N free
cores wall ~ crit and the two efficiencies agree; on a shared machine wall time also measures the other processes, and ``eff crit``
is the figure to read (it still includes every cost of the parallel search: routing, encoding, files,
unpickling, the second deduplication, waiting for the slowest worker at each barrier).  ``load`` is
the 1-minute load average at the end of the row.  With stealing on, a thief's CPU grows by what it takes:
``crit`` then overstates the critical path, and ``eff wall`` on an idle machine is the figure to read.
``--phases`` adds a line per parallel row: for the levels' expand and merge phases, summed over the levels,
the wall time the parent waited for the phase and the slowest and the mean worker's CPU in it (slowest over
mean: what the barrier costs in imbalance; wall over slowest: the latency of a round through the parent).
``--pairs K`` measures efficiency by wall on a machine whose speed drifts (shared or virtual): for each
config and worker count, K rounds of (serial search, then a parallel search in each ``--steal`` mode with a
serial search after each) and one more serial search; each
parallel run's efficiency is against the mean of the serial runs just before and just after it, and
the line ends with the median and the lowest (JSON: a ``pairs`` row; its ``parallel_runs`` give each parallel
run's CPU over the workers, their user and system time, page faults and phases; ``--phases`` prints the phases).  RSS of a parallel run: the parent's plus every
worker's peak (an upper bound).  Liveness is off (the parallel core is safety only).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from lockstep.model import parallel
from lockstep.model.checker import Explorer
from lockstep.model.features import configure
from lockstep.model.result import Bounds
from lockstep.spec.registry import UsageError, resolve


def factory(spec: str, raw: dict, reduction: bool):
    def make():
        info, params = resolve(spec, None, {k: str(v) for k, v in raw.items()})
        return configure(info.build(params, None, "gloo"), reduction, liveness=False)
    return make


def parse_config(text: str):
    """``pp1:mesh=3:off`` -> ("pp1", {"mesh": "3"}, False); an argparse type (a bad one: exit 2, one line)."""
    parts = text.split(":")
    pairs = [kv for kv in parts[1].split(",") if kv] if len(parts) > 1 else []
    red = parts[2] if len(parts) > 2 else "off"
    if not parts[0] or len(parts) > 3 or any("=" not in kv for kv in pairs) or red not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected SPEC[:NAME=VALUE,...[:on|off]], e.g. pp1:mesh=4:off")
    raw = dict(kv.split("=", 1) for kv in pairs)
    try:
        resolve(parts[0], None, raw)  # an unknown spec or parameter, or a bad value: refused here
    except UsageError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    return parts[0], raw, red == "on"


def timed(fn):
    """(wall seconds, CPU seconds of the run over every process, result)."""
    c = time.process_time()
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, time.process_time() - c, r


def serial_after(make, bounds, head, rows, ts, cs, config_rows) -> None:
    """The serial search again, after the parallel rows, and every row's efficiencies against the
    mean of the two serial runs (a machine whose speed drifts within minutes, as a shared or virtual
    one does, moves a single serial baseline; the first row's figures stay as printed)."""
    ts2, cs2, rs2 = timed(lambda: Explorer(make(), bounds).run())
    print(f"{head}{'serial again':>13}{rs2.stats.states:>10,}{ts2:>8.2f}{cs2:>8.2f}{'':>7}{'':>7}{'':>9}{'':>9}"
          f"{rs2.stats.peak_rss_mb:>8.0f}{os.getloadavg()[0]:>6.1f}", flush=True)
    mw, mc = (ts + ts2) / 2, (cs + cs2) / 2
    rows.append({**{k: rows[-len(config_rows) - 1][k] for k in ("spec", "params", "reduction")}, "run": "serial again",
                 "workers": 1, "verdict": rs2.verdict, "states": rs2.stats.states, "transitions": rs2.stats.transitions,
                 "wall_s": round(ts2, 3), "cpu_s": round(cs2, 3), "rss_mb": round(rs2.stats.peak_rss_mb)})
    parts = []
    for (n, name, tp, crit), row in zip(config_rows, rows[-len(config_rows) - 1:-1]):
        row["efficiency_wall_mean_serial"] = round(mw / (n * tp), 3)
        row["efficiency_critical_path_mean_serial"] = round(mc / (n * crit), 3) if crit else None
        parts.append(f"{name} {mw / (n * tp):.2f}/{(f'{mc / (n * crit):.2f}' if crit else '-')}")
    print(f"{head}  against the mean serial ({mw:.2f} s wall, {mc:.2f} s CPU), eff wall/crit: " + ", ".join(parts),
          flush=True)


def print_phases(phases) -> None:
    """One line under a parallel run: its levels' expand and merge phases (wall waited, slowest and mean CPU)."""
    if phases:
        print(f"{'':>27}phases: " + "; ".join(
            f"{p} wall {v['wall_s']:.2f} s, CPU slowest {v['slowest_cpu_s']:.2f} mean {v['mean_cpu_s']:.2f}"
            for p, v in phases.items()), flush=True)


def run_pairs(make, bounds, head, n: int, k: int, steals: list, phases: bool) -> tuple[list, bool]:
    """``k`` rounds of (a serial run, then ``n`` workers in each sharing mode of ``steals`` with a serial
    run after each), so every parallel run has a serial run on either side: (a JSON row per mode,
    whether every run agreed with the first serial one).  ``phases``: print each parallel run's phases."""
    serial, par, ok = [], {m: [] for m in steals}, True
    lasts: dict = {m: [] for m in steals}  # per mode: each run's CPU over the workers and its phases
    sides: dict = {m: [] for m in steals}  # per mode: the indexes of the serial runs either side of each run

    def one_serial():
        ts, _, rs = timed(lambda: Explorer(make(), bounds).run())
        serial.append(ts)
        print(f"{head}{'serial':>13}{rs.stats.states:>10,}{ts:>8.2f}", flush=True)
        return rs

    first = one_serial()
    want = (first.verdict, first.stats.states, first.stats.transitions, first.stats.depth)
    for _ in range(k):
        for m in steals:
            parallel.STEAL = m
            parallel.LAST_RUN.clear()
            tp, _, rp = timed(lambda: parallel.check_parallel(make, bounds, n))
            par[m].append(tp)
            last = dict(parallel.LAST_RUN)
            timing = [t for t in last.get("worker_timing") or [] if t]
            lasts[m].append({"worker_cpu_s": round(sum(last.get("worker_cpu_s", [])), 3), "phases": last.get("phases"),
                             **{f: round(sum(t.get(f, 0) for t in timing), 3) for f in ("user", "sys", "minflt")}})
            same = (rp.verdict, rp.stats.states, rp.stats.transitions, rp.stats.depth) == want
            ok &= same
            name = f"{n}w" + ("" if m == "auto" else f"/{m}")
            print(f"{head}{name:>13}{rp.stats.states:>10,}{tp:>8.2f}" + ("" if same else "  MISMATCH"), flush=True)
            if phases:
                print_phases(last.get("phases"))
            sides[m].append(len(serial) - 1)
            rs = one_serial()
            ok &= (rs.verdict, rs.stats.states, rs.stats.transitions, rs.stats.depth) == want
    parallel.STEAL = "auto"
    rows = []
    for m in steals:
        effs = [(serial[i] + serial[i + 1]) / 2 / (n * t) for i, t in zip(sides[m], par[m])]
        med = float(np.median(effs))
        print(f"{head}  {n} workers{'' if m == 'auto' else f' ({m})'}, efficiency by wall against the serial runs "
              f"either side: " + ", ".join(f"{e:.2f}" for e in effs) + f"; median {med:.2f}, lowest {min(effs):.2f}",
              flush=True)
        rows.append({"run": "pairs", "workers": n, "steal": m, "serial_wall_s": [round(t, 3) for t in serial],
                     "parallel_wall_s": [round(t, 3) for t in par[m]], "efficiency_wall": [round(e, 3) for e in effs],
                     "efficiency_wall_median": round(med, 3), "efficiency_wall_lowest": round(min(effs), 3),
                     "parallel_runs": lasts[m]})
    return rows, ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="2", help="comma-separated worker counts (default 2)")
    ap.add_argument("--transport", default="compact", help="comma-separated: compact, pickle")
    ap.add_argument("--steal", default="auto", help="comma-separated frontier-sharing modes of keyed workers: auto, "
                    "halves, off (model/parallel.py STEAL; auto and halves share only where the workers do not "
                    "outnumber the cores)")
    ap.add_argument("--config", action="append", default=None, type=parse_config, metavar="SPEC:PARAMS:on|off")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each parallel configuration (the best wall is kept)")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-serial-after", action="store_true",
                    help="run the serial search only before the parallel rows (default: before and after)")
    ap.add_argument("--phases", action="store_true",
                    help="after each parallel row, the levels' expand and merge phases: the wall time the parent "
                         "waited for each, the slowest and the mean worker's CPU (JSON: phases)")
    ap.add_argument("--pairs", type=int, default=0, metavar="K",
                    help="instead of the table: K rounds of (serial, parallel) per config and worker count, and a last "
                         "serial run; each parallel run's efficiency against the serial runs either side of it")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.pairs < 0:
        ap.error(f"--pairs: expected a count of rounds (0: the table), got {a.pairs}")
    steals = a.steal.split(",")
    if not set(steals) <= set(parallel._RANGES):  # the sharing modes model/parallel.py knows
        ap.error(f"--steal: expected a comma-separated list of {', '.join(parallel._RANGES)}; got {a.steal!r}")
    counts = [int(x) for x in a.workers.split(",")]
    transports = a.transport.split(",")
    if a.config:
        configs = a.config
    elif a.quick:
        configs = [("pp1", {"mesh": 2}, False), ("pp1", {"mesh": 2}, True), ("pipeline", {"stages": 3, "microbatches": 3}, False)]
    else:
        configs = [("pp1", {"mesh": 3}, False), ("pp1", {"mesh": 3}, True), ("pipeline", {}, False)]
    print(f"cores: {os.cpu_count()}, workers: {counts}, transports: {transports}")
    print(f"{'spec':<9}{'params':<14}{'red':>4}{'run':>13}{'states':>10}{'wall':>8}" + ("" if a.pairs else
          f"{'cpu':>8}{'max w':>7}{'crit':>7}{'eff wall':>9}{'eff crit':>9}{'RSS MB':>8}{'load':>6}"))
    rows = []
    ok = True
    for spec, raw, red in configs:
        make = factory(spec, raw, red)
        bounds = Bounds(timeout=a.timeout)
        ptxt = ",".join(f"{k}={v}" for k, v in raw.items()) or "-"
        head = f"{spec:<9}{ptxt:<14}{'on' if red else 'off':>4}"
        if a.pairs:
            for n in counts:
                got, same = run_pairs(make, bounds, head, n, a.pairs, steals, a.phases)
                rows += [{"spec": spec, "params": raw, "reduction": red, **row} for row in got]
                ok &= same
            continue
        ts, cs, rs = timed(lambda: Explorer(make(), bounds).run())
        print(f"{head}{'serial':>13}{rs.stats.states:>10,}{ts:>8.2f}{cs:>8.2f}{'':>7}{'':>7}{'':>9}{'':>9}"
              f"{rs.stats.peak_rss_mb:>8.0f}{os.getloadavg()[0]:>6.1f}", flush=True)
        rows.append({"spec": spec, "params": raw, "reduction": red, "run": "serial", "workers": 1, "verdict": rs.verdict,
                     "states": rs.stats.states, "transitions": rs.stats.transitions, "wall_s": round(ts, 3),
                     "cpu_s": round(cs, 3), "rss_mb": round(rs.stats.peak_rss_mb)})
        config_rows: list = []
        for transport, steal, n in [(t, m, n) for t in transports for m in steals for n in counts]:
            parallel.TRANSPORT, parallel.STEAL = transport, steal
            best = None
            for _ in range(a.repeat):
                parallel.LAST_RUN.clear()
                tp, cp, rp = timed(lambda: parallel.check_parallel(make, bounds, n))
                last = dict(parallel.LAST_RUN)
                cp += sum(last.get("worker_cpu_s", [])) if last else 0.0
                if best is None or tp < best[0]:
                    best = (tp, cp, rp, last)
            tp, cp, rp, last = best
            parallel.TRANSPORT, parallel.STEAL = "compact", "auto"
            same = (rs.verdict, rs.stats.states, rs.stats.transitions, rs.stats.depth) == \
                   (rp.verdict, rp.stats.states, rp.stats.transitions, rp.stats.depth)
            ok &= same
            crit = last.get("critical_path_cpu_s") if last else None
            maxw = max(last["worker_cpu_s"]) if last else None
            eff_wall = ts / (n * tp)
            eff_crit = cs / (n * crit) if crit else None
            used = last.get("transport", transport) if last else transport  # keyed, numbered, encoded
            name = f"{n}w {transport if transport != 'compact' else used}" + ("" if steal == "auto" else f"/{steal}")
            print(f"{head}{name:>13}{rp.stats.states:>10,}{tp:>8.2f}{cp:>8.2f}"
                  f"{(f'{maxw:.2f}' if maxw is not None else '-'):>7}{(f'{crit:.2f}' if crit else '-'):>7}"
                  f"{eff_wall:>9.2f}{(f'{eff_crit:.2f}' if eff_crit else '-'):>9}{rp.stats.peak_rss_mb:>8.0f}"
                  f"{os.getloadavg()[0]:>6.1f}" + ("" if same else "  MISMATCH"), flush=True)
            phases = last.get("phases") if last else None
            if a.phases:
                print_phases(phases)
            config_rows.append((n, name, tp, crit))
            rows.append({"spec": spec, "params": raw, "reduction": red, "run": name, "workers": n,
                         "transport": transport, "workers_kind": used, "steal": steal, "verdict": rp.verdict, "states": rp.stats.states,
                         "transitions": rp.stats.transitions, "wall_s": round(tp, 3), "cpu_s": round(cp, 3),
                         "max_worker_cpu_s": maxw, "critical_path_cpu_s": crit, "efficiency_wall": round(eff_wall, 3),
                         "efficiency_critical_path": round(eff_crit, 3) if eff_crit else None,
                         "rss_mb": round(rp.stats.peak_rss_mb), "same": same, "phases": phases,
                         "worker_timing": [{k: v for k, v in t.items() if not k.startswith("level_")}
                                           for t in (last.get("worker_timing") or []) if t]})
        if not a.no_serial_after:
            serial_after(make, bounds, head, rows, ts, cs, config_rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
