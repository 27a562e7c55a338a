"""Checker benchmark: states, transitions, seconds, states/s and peak RSS per spec and engine, and
the pipeline side by side with SPIN when it is installed.

    python bench/bench_check.py                       # pipeline: python, packed, reduced; SPIN
    python bench/bench_check.py tp -p ranks=3 -p chunks=2 pipeline -p stages=4
    python bench/bench_check.py --json out.json --skip-python

Every configuration runs in a fresh child process, so peak RSS is that run's own and the
end-to-end wall time includes interpreter start-up and imports, like SPIN's includes spin -a and gcc.
Engines: ``python`` is model/checker.py unreduced; ``packed`` is the vectorized core (model/fast.py,
for specs that define ``packed()``), unreduced; ``por`` is model/checker.py with the spec's
reductions on (``set_reduction``, e.g. the ample sets of model/por.py).  A spec that is not
registered yet is skipped.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PML = HERE / "pipeline.pml"


# -- child: one measured run ------------------------------------------------------------------------

def run_child(cfg: dict) -> dict:
    from lockstep.model.checker import check
    from lockstep.spec.registry import resolve

    info, params = resolve(cfg["spec"], cfg.get("variant"), cfg.get("params", {}))
    model = info.build(params, cfg.get("variant"), "gloo")
    engine = cfg["engine"]
    if engine == "packed":
        from lockstep.model.fast import check_packed

        res = check_packed(model)
        if res is None:
            return {"skipped": "no packed form"}
    elif engine == "por":
        from lockstep.model.por import Reduced, reduce

        if not hasattr(model, "set_reduction"):  # the checker's own hook; else the generic wrapper
            model = reduce(model)
            if not isinstance(model, Reduced):
                return {"skipped": "no reductions"}
        res = check(model, liveness=False, reduction=True)
    else:  # the pure-Python explorer, every reduction off
        from lockstep.model.checker import Explorer

        if hasattr(model, "set_reduction"):
            model.set_reduction(False)
        res = Explorer(model).run()
    st = res.stats
    return {"verdict": res.verdict, "states": st.states, "transitions": st.transitions, "depth": st.depth,
            "seconds": st.seconds, "states_per_s": st.states_per_second, "peak_rss_mb": st.peak_rss_mb,
            "params": params}


def measure(cfg: dict) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["failed"])[-1]
        return {**cfg, "skipped": last}
    out = json.loads(p.stdout.strip().splitlines()[-1])
    return {**cfg, **out, "wall_s": wall}


# -- SPIN -------------------------------------------------------------------------------------------

def run_spin(params: dict, reduce: bool) -> dict | None:
    """spin -a, gcc, ./pan on bench/pipeline.pml; the wall time of all three."""
    if not (shutil.which("spin") and (shutil.which("gcc") or shutil.which("cc"))):
        return None
    cc = shutil.which("gcc") or shutil.which("cc")
    defs = [f"-DS={params['stages']}", f"-DM={params['microbatches']}", f"-DC={params['capacity']}"]
    with tempfile.TemporaryDirectory() as d:
        shutil.copy(PML, d)
        t0 = time.perf_counter()
        steps = [["spin", *defs, "-a", "pipeline.pml"],
                 [cc, "-O2", "-w", *([] if reduce else ["-DNOREDUCE"]), "-o", "pan", "pan.c"],
                 ["./pan", "-m1000000"]]
        out, split = "", []
        for cmd in steps:
            t1 = time.perf_counter()
            p = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            split.append(time.perf_counter() - t1)
            if p.returncode != 0:
                return {"error": f"{cmd[0]}: {(p.stderr or p.stdout).strip()[:200]}"}
            out = p.stdout
        wall = time.perf_counter() - t0
    num = lambda pat: int(re.search(pat, out).group(1)) if re.search(pat, out) else None  # noqa: E731
    stored, trans = num(r"(\d+) states, stored"), num(r"(\d+) transitions")
    return {"states": stored, "transitions": trans - 1 if trans else None,  # SPIN counts the initial state too
            "errors": num(r"errors: (\d+)"), "wall_s": wall, "reduced": reduce,
            "spin_a_s": split[0], "gcc_s": split[1], "pan_s": split[2]}


def run_lockstep_cli(params: dict) -> dict | None:
    """``lockstep check pipeline`` end to end, when the CLI exists."""
    exe = shutil.which("lockstep")
    if exe is None:
        return None
    args = [exe, "check", "pipeline"] + [x for k, v in params.items() for x in ("-p", f"{k}={v}")]
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:] or ["failed"]}
    return {"wall_s": wall, "exit": p.returncode}


# -- driver -----------------------------------------------------------------------------------------

def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-' for stdout)")
    ap.add_argument("--skip-python", action="store_true", help="skip the pure-Python unreduced runs")
    ap.add_argument("--no-spin", action="store_true", help="do not run SPIN even when installed")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("specs", nargs="*", help="SPEC [-p NAME=VALUE ...] [-v VARIANT], repeatable; default: pipeline")
    args, rest = ap.parse_known_args(argv)
    # rebuild spec groups from the raw order: a bare word starts a group, -p/-v attach to it
    groups, toks, i = [], [t for t in argv if t not in ("--skip-python", "--no-spin")], 0
    while i < len(toks):
        t = toks[i]
        if t in ("--json", "--child"):
            i += 2
            continue
        if t in ("-p", "--param", "-v", "--variant"):
            if not groups or i + 1 >= len(toks):
                ap.error(f"{t} must follow a spec name")
            if t in ("-p", "--param"):
                k, _, v = toks[i + 1].partition("=")
                groups[-1]["params"][k] = v
            else:
                groups[-1]["variant"] = toks[i + 1]
            i += 2
            continue
        if t.startswith("-"):
            ap.error(f"unknown option {t}")
        groups.append({"spec": t, "params": {}, "variant": None})
        i += 1
    return args, groups or [{"spec": "pipeline", "params": {}, "variant": None}]


def fmt_row(r: dict) -> str:
    name = r["spec"] + (f"/{r['variant']}" if r.get("variant") else "")
    if "skipped" in r:
        return f"{name:<22} {r['engine']:<7} skipped: {r['skipped']}"
    return (f"{name:<22} {r['engine']:<7} {r['verdict']:<9} {r['states']:>10,} {r['transitions']:>11,} "
            f"{r['seconds']:>8.3f} {r['states_per_s']:>11,.0f} {r['peak_rss_mb']:>8.1f} {r['wall_s']:>8.3f}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, groups = parse(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0
    from lockstep.spec.registry import UsageError, available

    rows, comparisons = [], []
    print(f"{'spec':<22} {'engine':<7} {'verdict':<9} {'states':>10} {'transitions':>11} {'check s':>8} "
          f"{'states/s':>11} {'RSS MB':>8} {'wall s':>8}")
    have = set(available())
    for g in groups:
        if g["spec"] not in have:
            print(f"{g['spec']:<22} skipped: spec not registered (yet)")
            rows.append({**g, "skipped": "not registered"})
            continue
        engines = ["packed", "por"] + ([] if args.skip_python else ["python"])
        for engine in engines:
            r = measure({**g, "engine": engine})
            if r.get("skipped") and engine in ("packed", "por"):
                continue  # the spec does not opt in to this engine
            rows.append(r)
            print(fmt_row(r), flush=True)
        if g["spec"] == "pipeline" and not args.no_spin and g["variant"] is None:
            try:
                from lockstep.spec.registry import resolve

                _, params = resolve("pipeline", None, g["params"])
            except UsageError as e:
                print(f"spin: {e}")
                continue
            comparisons.append(compare_with_spin(params, rows))
    if args.json:
        doc = json.dumps({"rows": rows, "spin": comparisons, "python": sys.version.split()[0],
                          "cpus": os.cpu_count()}, indent=2, default=str)
        if args.json == "-":
            print(doc)
        else:
            Path(args.json).write_text(doc + "\n")
    return 0


def compare_with_spin(params: dict, rows: list[dict]) -> dict:
    ours = {r["engine"]: r for r in rows if r["spec"] == "pipeline" and "skipped" not in r
            and r.get("params") == params and not r.get("variant")}
    out: dict = {"params": params}
    full, red = run_spin(params, reduce=False), run_spin(params, reduce=True)
    if full is None:
        print("\nSPIN: not installed (apt-get install -y spin); no side-by-side comparison")
        return out
    out.update({"spin_full": full, "spin_por": red})
    cli = run_lockstep_cli(params)
    if cli is not None:
        out["lockstep_cli"] = cli
    print("\nside by side with SPIN (end-to-end wall time: SPIN = spin -a + gcc + ./pan; lockstep = a fresh "
          "python process)")
    for label, spin, mine in (("unreduced", full, ours.get("packed") or ours.get("python")),
                              ("reduced  ", red, ours.get("por"))):
        if "error" in spin or mine is None:
            print(f"  {label}: SPIN {spin.get('error', '')} lockstep {'n/a' if mine is None else ''}")
            continue
        ratio = mine["wall_s"] / spin["wall_s"]
        out[f"ratio_{label.strip()}"] = ratio
        print(f"  {label}: SPIN {spin['states']:>9,} states {spin['transitions']:>10,} transitions "
              f"{spin['wall_s']:6.3f} s (pan {spin['pan_s']:.3f}) | lockstep {mine['engine']} {mine['states']:>9,} states "
              f"{mine['transitions']:>10,} transitions {mine['wall_s']:6.3f} s | lockstep/SPIN = {ratio:.2f}")
    if cli is not None and "wall_s" in cli:
        print(f"  `lockstep check pipeline` end to end: {cli['wall_s']:.3f} s "
              f"(lockstep/SPIN reduced = {cli['wall_s'] / red['wall_s']:.2f})")
    return out


if __name__ == "__main__":
    sys.exit(main())
