"""State counts with and without reductions, and how cost grows with the mesh size.

    python bench/bench_reductions.py [--timeout 120] [--max-mesh 8] [--json PATH] [--markdown PATH]
    python bench/bench_reductions.py --before /path/to/old/shim [--json PATH] [--kv-mesh 2,4,8,16]

``--markdown`` writes the rows as a table with the date, machine and command that produced them (the
README's state-count table is pasted from it).

``--before SHIM`` compares two trees side by side: SHIM is a directory whose ``lockstep`` is an
older checkout (e.g. ``git worktree add OLD dc6e413`` and ``SHIM/lockstep -> OLD``).  For tp ranks
3..5, pp1 mesh 2..8 and kv at each ``--kv-mesh`` size (reductions on, safety only) each exploration runs in its own process, old
then new, and the table gives both state counts and CPU seconds of the search (process time: wall time
on a shared machine measures the neighbours).

For tp (ranks 2..), pp1 (mesh 2..--max-mesh), kv (each ``--kv-mesh`` size) and pipeline: safety only (liveness off), every fault
enabled, default parameters otherwise.  Each row is one exploration with the model's reductions on
(symmetry over interchangeable workers for the protocol specs, partial-order reduction for the
pipeline) and one with ``--no-reduction``.  A run that hits --timeout prints BOUND_REACHED with the
states explored so far: that is a lower bound, not a count.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

from lockstep.model.checker import Bounds, Explorer
from lockstep.spec.registry import resolve


def explore(spec: str, raw: dict, reduction: bool, timeout: float) -> dict:
    info, params = resolve(spec, None, {k: str(v) for k, v in raw.items()})
    model = info.build(params, None, "gloo")
    if hasattr(model, "set_reduction"):
        model.set_reduction(reduction)
    r = Explorer(model, Bounds(timeout=timeout)).run()
    st = r.stats
    return {"spec": spec, "params": raw, "reduction": reduction, "verdict": r.verdict, "states": st.states,
            "transitions": st.transitions, "seconds": round(st.seconds, 2), "states_per_s": round(st.states_per_second),
            "peak_rss_mb": round(st.peak_rss_mb)}


_CHILD = """
import json, sys
from lockstep.model.checker import Bounds, Explorer
from lockstep.spec.registry import resolve
spec, raw, timeout = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
info, params = resolve(spec, None, {k: str(v) for k, v in raw.items()})
model = info.build(params, None, "gloo")
model.set_reduction(True)
import time
c0 = time.process_time()
r = Explorer(model, Bounds(timeout=timeout)).run()
print(json.dumps({"verdict": r.verdict, "states": r.stats.states, "transitions": r.stats.transitions,
                  "wall_s": round(r.stats.seconds, 2), "seconds": round(time.process_time() - c0, 2)}))
"""


def before_after(shim: str, timeout: float, max_mesh: int, kv_mesh: list[int], json_path: str | None) -> int:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    import lockstep

    new_shim = os.path.dirname(os.path.dirname(os.path.abspath(lockstep.__file__)))
    configs = [("tp", {"ranks": n}) for n in (3, 4, 5)] + [("pp1", {"mesh": m}) for m in range(2, max_mesh + 1)]
    configs += [("kv", {"mesh": m}) for m in kv_mesh]
    rows = []
    print(f"{'spec':<6}{'params':<9}{'old verdict':>14}{'old states':>12}{'old cpu s':>10}{'new verdict':>14}{'new states':>12}{'new cpu s':>10}{'cpu new/old':>12}")
    for spec, raw in configs:
        out = {}
        for key, pp in (("old", shim), ("new", new_shim)):
            env = dict(os.environ, PYTHONPATH=pp, OMP_NUM_THREADS="1")
            p = subprocess.run([sys.executable, "-c", _CHILD, spec, json.dumps(raw), str(timeout)], env=env, cwd=here,
                               capture_output=True, text=True, timeout=timeout + 120)
            out[key] = json.loads(p.stdout) if p.returncode == 0 else {"verdict": "ERROR", "states": 0, "transitions": 0,
                                                                        "seconds": 0.0, "error": p.stderr[-300:]}
        o, n = out["old"], out["new"]
        ratio = n["seconds"] / o["seconds"] if o["seconds"] else float("nan")
        ptxt = ",".join(f"{k}={v}" for k, v in raw.items())
        print(f"{spec:<6}{ptxt:<9}{o['verdict']:>14}{o['states']:>12,}{o['seconds']:>10}{n['verdict']:>14}{n['states']:>12,}"
              f"{n['seconds']:>10}{ratio:>12.2f}", flush=True)
        rows.append({"spec": spec, "params": raw, "old": o, "new": n})
    if json_path:
        with open(json_path, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _sizes(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated mesh sizes such as 2,4,8; got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected mesh sizes of at least 1; got {text!r}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per exploration")
    ap.add_argument("--max-mesh", type=int, default=8)
    ap.add_argument("--kv-mesh", type=_sizes, default=[2, 4, 8], help="kv mesh sizes, comma-separated (default 2,4,8)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None, help="write a dated markdown table here")
    ap.add_argument("--before", default=None, metavar="SHIM", help="compare with the lockstep found on this PYTHONPATH")
    a = ap.parse_args()
    if a.before:
        return before_after(a.before, a.timeout, a.max_mesh, a.kv_mesh, a.json)
    configs = [("tp", {"ranks": n}) for n in (2, 3, 4)]
    configs += [("pp1", {"mesh": m}) for m in range(2, a.max_mesh + 1)]
    configs += [("kv", {"mesh": m}) for m in a.kv_mesh]
    configs += [("pipeline", {})]
    rows = []
    print(f"{'spec':<10}{'params':<12}{'reduction':>10}{'verdict':>15}{'states':>12}{'transitions':>14}{'s':>9}{'states/s':>10}{'RSS MB':>8}")
    for spec, raw in configs:
        for red in (True, False):
            row = explore(spec, raw, red, a.timeout)
            rows.append(row)
            ptxt = ",".join(f"{k}={v}" for k, v in raw.items()) or "-"
            print(f"{spec:<10}{ptxt:<12}{'on' if red else 'off':>10}{row['verdict']:>15}{row['states']:>12,}"
                  f"{row['transitions']:>14,}{row['seconds']:>9}{row['states_per_s']:>10,}{row['peak_rss_mb']:>8}", flush=True)
            if row["verdict"] == "BOUND_REACHED" and not red:
                break
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown(rows, " ".join(sys.argv[1:])))
    return 0


def markdown(rows: list[dict], args: str) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"Measured {when} with `python bench/bench_reductions.py {args}` on {platform.machine()}, "
           f"{os.cpu_count()} cores, Python {platform.python_version()} (safety only, every fault enabled; "
           "seconds depend on the machine's load, state counts do not; BOUND_REACHED rows are lower bounds; "
           "peak RSS is the bench process's peak so far).", "",
           "| spec | params | reduction | verdict | states | transitions | seconds | peak RSS MB |",
           "|---|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        p = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "defaults"
        out.append(f"| `{r['spec']}` | {p} | {'on' if r['reduction'] else 'off'} | {r['verdict']} | {r['states']:,} | "
                   f"{r['transitions']:,} | {r['seconds']} | {r['peak_rss_mb']} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
