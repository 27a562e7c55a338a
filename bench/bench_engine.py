"""The generic checker, old engine against new, side by side in one run.

    python bench/bench_engine.py --old /path/to/shim-of-old-checkout            # default set
    python bench/bench_engine.py --old OLD --only user tp:3 pp1:2               # a subset
    python bench/bench_engine.py --old OLD --json out.json

Each row runs in a fresh child process for each engine (``new`` = this checkout, ``old`` = the
checkout whose parent directory ``--old`` names, a directory holding a ``lockstep`` link to it, like
the PYTHONPATH shims), so peak RSS is that run's own.  Rows:

- ``user``/``user-por``: bench/user_pipeline_spec.py (the 6/4/2 pipeline over shared-variable queues)
  through the generic explorer, unreduced and reduced, safety only; each engine runs its own
  checkout's copy of the file (same unreduced graph; older copies queue in plain tuples);
- ``tp:N``: ``tp -p ranks=N``, ``pp1:N``: ``pp1 -p mesh=N`` as ``lockstep check`` runs them by
  default (reductions on, liveness on); ``pp1:N:full`` (or ``tp:N:full``) the same with
  ``--no-reduction`` (liveness on);
- ``spin``: SPIN end to end (spin -a, gcc -DNOREDUCE, ./pan) on bench/pipeline.pml when spin is
  installed (its seconds are wall time, its CPU seconds those of the three commands).

Columns: states, transitions, seconds (the checker's own), CPU seconds of the check (the fairer figure
on a shared machine), states/s (states / seconds), bytes per state: peak RSS after the run minus RSS
after building the model, divided by the stored states, and the run's peak RSS in MB.

``--markdown PATH`` writes the rows as Markdown tables, old and new side by side on one line per row
(the tables of README and docs/performance.md), with the load average before and after the run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
USER_SPEC = HERE / "user_pipeline_spec.py"
DEFAULT = ["user", "user-por", "spin", "tp:2", "tp:3", "tp:4", "tp:5", "tp:6",
           "pp1:2", "pp1:3", "pp1:4", "pp1:5", "pp1:6", "pp1:7", "pp1:8"]


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(row: str) -> dict:
    import resource

    from lockstep.model.checker import check
    from lockstep.spec.loading import build_model, load_spec

    if row.startswith("user"):
        info, params, reduction, live = load_spec(str(_user_spec())), {}, row == "user-por", False
    else:
        name, n, *flags = row.split(":")
        info = load_spec(name)
        params = {"ranks" if name == "tp" else "mesh": int(n)}
        reduction, live = "full" not in flags, True
    full = {k: p.default for k, p in info.params.items()}
    full.update(params)
    model = build_model(info, full, None, "gloo")
    base = _rss_kb()
    cpu0 = time.process_time()
    res = check(model, liveness=live, reduction=reduction)
    cpu = time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    st = res.stats
    return {"verdict": res.verdict, "states": st.states, "transitions": st.transitions, "seconds": st.seconds, "cpu_s": cpu,
            "states_per_s": st.states / st.seconds if st.seconds else 0.0,
            "bytes_per_state": max(0, peak - base) * 1024 / max(1, st.states), "peak_rss_mb": peak / 1024}


def _user_spec() -> Path:
    """The user pipeline spec of the checkout being measured (an old checkout may predate what this
    checkout's copy imports, e.g. ``Fifo``); this checkout's copy when that one has none."""
    import lockstep

    own = Path(lockstep.__file__).parent / "bench" / "user_pipeline_spec.py"
    return own if own.exists() else USER_SPEC


def measure(row: str, shim: str) -> dict:
    env = dict(os.environ, PYTHONPATH=shim, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", row], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def spin_row() -> dict | None:
    """SPIN end to end on bench/pipeline.pml, unreduced; ``cpu_s`` is the CPU time of spin -a, gcc
    and pan together."""
    import resource

    sys.path.insert(0, str(HERE))
    from bench_check import run_spin  # noqa: E402

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = run_spin({"stages": 6, "microbatches": 4, "capacity": 2}, reduce=False)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out is not None and "error" not in out:
        out["cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return out


def print_spin() -> dict | None:
    s = spin_row()
    if s is None:
        print("spin: not installed (apt-get install spin), skipped")
    elif "error" in s:
        print(f"spin: {s['error']}")
    else:
        print(f"{'spin e2e':10} {'spin':6} {s['states']:>9,} {s['transitions']:>10,} {s['wall_s']:>8.2f} {s['cpu_s']:>7.2f}  "
              f"(spin -a {s['spin_a_s']:.2f} s, gcc {s['gcc_s']:.2f} s, pan {s['pan_s']:.2f} s, wall)", flush=True)
        return {"row": "user", "engine": "spin", **s}
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", help="shim directory (holds a `lockstep` link) of the old checkout")
    ap.add_argument("--new", help="shim directory of the new checkout (default: the one importing this)")
    ap.add_argument("--only", nargs="*", help=f"rows to run (default: {' '.join(DEFAULT)})")
    ap.add_argument("--no-spin", action="store_true")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--markdown", metavar="PATH", help="write the rows as Markdown tables (old and new side by side)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child)))
        return 0
    new = a.new or os.environ.get("PYTHONPATH", "")
    engines = [("new", new)] + ([("old", a.old)] if a.old else [])
    out = []
    load0 = os.getloadavg()
    print(f"{'row':10} {'engine':6} {'states':>9} {'trans':>10} {'seconds':>8} {'cpu s':>7} {'states/s':>9} {'B/state':>8}  verdict")
    for row in a.only or DEFAULT:
        if row == "spin":
            if not a.no_spin:
                s = print_spin()
                if s:
                    out.append(s)
            continue
        for eng, shim in engines:
            r = {"row": row, "engine": eng, **measure(row, shim)}
            out.append(r)
            if "error" in r:
                print(f"{row:10} {eng:6} error: {r['error']}")
            else:
                print(f"{row:10} {eng:6} {r['states']:>9,} {r['transitions']:>10,} {r['seconds']:>8.2f} "
                      f"{r['cpu_s']:>7.2f} {r['states_per_s']:>9,.0f} {r['bytes_per_state']:>8,.0f}  {r['verdict']}", flush=True)
        if len(engines) == 2 and "error" not in out[-1] and "error" not in out[-2]:
            o, n = out[-1], out[-2]
            same = (o["states"], o["transitions"], o["verdict"]) == (n["states"], n["transitions"], n["verdict"])
            print(f"{'':10} ratio  old/new seconds {o['seconds'] / max(n['seconds'], 1e-9):.2f}x, "
                  f"cpu {o['cpu_s'] / max(n['cpu_s'], 1e-9):.2f}x, bytes/state {o['bytes_per_state'] / max(n['bytes_per_state'], 1):.2f}x"
                  f"{'' if same else '  COUNTS OR VERDICT DIFFER'}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(markdown(out, load0, os.getloadavg()))
    return 0


ROW_NAMES = {"user": "user-written 6/4/2 pipeline, `--no-reduction --no-liveness`",
             "user-por": "user-written 6/4/2 pipeline, reduced, `--no-liveness`"}


def row_name(row: str) -> str:
    if row in ROW_NAMES:
        return ROW_NAMES[row]
    name, n, *flags = row.split(":")
    return f"`{name} -p {'ranks' if name == 'tp' else 'mesh'}={n}{' --no-reduction' if 'full' in flags else ''}`"


def markdown(out: list, load0, load1) -> str:
    """One table per spec family (user pipeline and SPIN, tp, pp1): a line per row, new and old side by side."""
    by_row: dict = {}
    for r in out:
        by_row.setdefault(r["row"], {})[r["engine"]] = r
    fams: dict = {}
    for row in by_row:
        fams.setdefault(row.split(":")[0].replace("user-por", "user"), []).append(row)
    lines = [f"Load average (1, 5, 15 min) before the run {load0[0]:.1f} {load0[1]:.1f} {load0[2]:.1f}, "
             f"after {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f}; CPU seconds are the fairer figure on a shared machine.", ""]

    def cells(r):
        if r is None or "error" in r:
            return ["–"] * 5
        return [f"{r['seconds']:.2f}", f"{r['cpu_s']:.2f}", f"{r['states_per_s']:,.0f}", f"{r['bytes_per_state']:,.0f}",
                f"{r.get('peak_rss_mb', 0):,.0f}"]
    for fam, rows in fams.items():
        lines += ["| run | states | new s | new CPU s | new states/s | new B/state | new peak MB | old s | old CPU s | "
                  "old states/s | old B/state | old peak MB | CPU old/new |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in rows:
            e = by_row[row]
            n, o = e.get("new"), e.get("old")
            if n or o:
                ref = n if n and "error" not in n else o
                states = f"{ref['states']:,}" if ref and "error" not in ref else "–"
                ratio = (f"{o['cpu_s'] / max(n['cpu_s'], 1e-9):.2f}×" if n and o and "error" not in n and "error" not in o else "")
                lines.append(f"| {row_name(row)} | {states} | " + " | ".join(cells(n)) + " | " + " | ".join(cells(o)) + f" | {ratio} |")
            if "spin" in e:
                sp = e["spin"]
                lines.append(f"| SPIN 6.5 end to end (spin -a, gcc, pan; wall s, CPU s), same model | {sp['states']:,} | "
                             f"{sp['wall_s']:.2f} | {sp['cpu_s']:.2f} | | | | | | | | | |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
