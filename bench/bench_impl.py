"""Benchmarks of the real implementation (not a timed test).

    python bench/bench_impl.py [--chunks 30] [--decode-ms 40] [--json out.json]

1. chunks/s per topology (tp w=2, pp0 w=2, pp1 w=3), from rank0's emission times;
2. the trace recorder's overhead as a ratio, measured in ONE run (record=alternate: even chunks
   recorded, odd chunks not; ratio = median period of recorded / unrecorded chunks, TP w=2);
3. overlap O-01: PP0 with a simulated Stage-0 decode of D ms and a Stage-1 of about the same, sweep
   D = 1..4: median period per chunk, median mesh idle time, OverlapScore (docs/domain.md §5.5);
   O-02: the same at D=2 with the planted send-after-decode bug, whose signature is mesh idle ~ decode.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")

from lockstep.conformance import schema as S  # noqa: E402
from lockstep.impl.config import RunConfig  # noqa: E402
from lockstep.impl.launch import launch_local  # noqa: E402


def _emitted(run_dir):
    return S.load_run(run_dir).ranks[0].of(S.CHUNK_EMITTED)


def _run(tmp, name, cfg):
    s = launch_local(cfg, os.path.join(tmp, name), deadline_s=300)
    if not s.ok:
        print(s.render(), file=sys.stderr)
        raise SystemExit(f"bench run {name} did not end clean")
    return _emitted(s.run_dir)


def throughput(tmp, chunks):
    out = {}
    for topo, world in (("tp", 2), ("pp0", 2), ("pp1", 3)):
        ev = _run(tmp, f"tput-{topo}", RunConfig(topology=topo, world=world, chunks=chunks, recompute_every=0))
        t = [e["tEmit"] for e in ev]
        out[f"{topo}-w{world}"] = round((len(t) - 1) / (t[-1] - t[0]), 2)
    return out


def recorder_overhead(tmp, chunks):
    ev = _run(tmp, "recorder", RunConfig(topology="tp", world=2, chunks=chunks, record="alternate", recompute_every=0))
    per = {e["chunk_index"]: e["tEmit"] for e in ev}
    on = [per[k] - per[k - 1] for k in per if k >= 2 and k - 1 in per and k % 2 == 0]
    off = [per[k] - per[k - 1] for k in per if k >= 2 and k - 1 in per and k % 2 == 1]
    return {"period_recorded_ms": round(statistics.median(on) * 1e3, 3),
            "period_unrecorded_ms": round(statistics.median(off) * 1e3, 3),
            "ratio": round(statistics.median(on) / statistics.median(off), 3)}


def overlap_metrics(ev, skip):
    ev = ev[skip:]
    period, stage0, stage1, hidden, idle = [], [], [], [], []
    for a, b in zip(ev, ev[1:]):
        p = b["tEmit"] - a["tEmit"]
        s0 = (b["tA1"] - b["tA0"]) + (b["tEmit"] - b["tRecv"])
        s1 = (b["tB_ms"] or 0) / 1e3
        period.append(p)
        stage0.append(s0)
        stage1.append(s1)
        hidden.append(max(0.0, s0 + s1 - p) / max(1e-6, min(s0, s1)))
        idle.append(b["t_mesh_idle_ms"] or 0.0)
    return {"period_ms": round(statistics.median(period) * 1e3, 2), "stage0_ms": round(statistics.median(stage0) * 1e3, 2),
            "stage1_ms": round(statistics.median(stage1) * 1e3, 2), "mesh_idle_ms": round(statistics.median(idle), 2),
            "overlap_score": round(statistics.median(hidden), 3),
            "max_inflight": max(e["inflight"] for e in ev) + 1, "max_ready": max(e["ready"] for e in ev)}


def overlap_sweep(tmp, chunks, decode_ms):
    rows = {}
    for d in (1, 2, 3, 4):
        cfg = RunConfig(topology="pp0", world=2, chunks=chunks, d_in=d, d_out=d, decode_ms=decode_ms,
                        mesh_ms=decode_ms, recompute_every=0)
        rows[f"D={d}"] = overlap_metrics(_run(tmp, f"o01-d{d}", cfg), skip=4)
    cfg = RunConfig(topology="pp0", world=2, chunks=chunks, d_in=2, d_out=2, decode_ms=decode_ms, mesh_ms=decode_ms,
                    recompute_every=0, unsafe="o02-send-after-decode")
    rows["D=2 send-after-decode (O-02 bug)"] = overlap_metrics(_run(tmp, "o02-bug", cfg), skip=4)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=30)
    ap.add_argument("--decode-ms", type=float, default=40.0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lockstep-bench-") as tmp:
        res = {"throughput_chunks_per_s": throughput(tmp, a.chunks),
               "recorder_overhead": recorder_overhead(tmp, max(a.chunks, 40)),
               "overlap": overlap_sweep(tmp, a.chunks, a.decode_ms)}
    print("chunks/s:", json.dumps(res["throughput_chunks_per_s"]))
    r = res["recorder_overhead"]
    print(f"trace recorder: period recorded {r['period_recorded_ms']} ms vs unrecorded {r['period_unrecorded_ms']} ms "
          f"-> ratio {r['ratio']}")
    print(f"overlap (PP0, decode {a.decode_ms} ms, stage1 ~{a.decode_ms} ms + compute):")
    print(f"  {'':34s} {'period':>8s} {'stage0':>8s} {'stage1':>8s} {'mesh idle':>9s} {'score':>6s} {'inflight':>8s} {'ready':>5s}")
    for k, m in res["overlap"].items():
        print(f"  {k:34s} {m['period_ms']:8.1f} {m['stage0_ms']:8.1f} {m['stage1_ms']:8.1f} {m['mesh_idle_ms']:9.1f} "
              f"{m['overlap_score']:6.2f} {m['max_inflight']:8d} {m['max_ready']:5d}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
