"""What a monitor costs the checker: the shipped tp spec (which declares the per-rank monitor
``emit_after_count_check``) checked with its monitor and with the monitor removed, side by side in one
process, alternating, best of N.  The state counts must be equal (the monitor's state is a function of
rank 0's control state); the figure is the ratio of the seconds.

    python bench/bench_monitor.py                     # tp ranks=3 chunks=2, reduced and unreduced
    python bench/bench_monitor.py -p ranks=4 --repeat 3
"""
from __future__ import annotations

import argparse
import time


def build(raw: dict, monitored: bool):
    from lockstep.spec import registry

    info = registry.load("tp")
    _, p = registry.resolve("tp", None, raw, "gloo")
    w = info.build(p, None, "gloo")
    if not monitored:
        w.monitors = []
        w._prepare()
    return w


def main() -> None:
    from lockstep.model.checker import check

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-p", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    raw = {"ranks": "3", "chunks": "2"}
    raw.update(dict(x.split("=", 1) for x in a.p))
    print(f"tp {' '.join(f'{k}={v}' for k, v in sorted(raw.items()))}")
    for reduction in (True, False):
        best = {}
        states = {}
        for _ in range(a.repeat):
            for monitored in (False, True):
                w = build(raw, monitored)
                t0 = time.perf_counter()
                r = check(w, reduction=reduction)
                dt = time.perf_counter() - t0
                best[monitored] = min(best.get(monitored, dt), dt)
                states.setdefault(monitored, set()).add((r.verdict, r.stats.states))
        assert states[True] == states[False], f"the monitor changed the search: {states}"
        (verdict, n), = states[True]
        print(f"  reduction={'on ' if reduction else 'off'} {verdict} {n:,} states: without monitor {best[False]:.2f} s, "
              f"with monitor {best[True]:.2f} s, ratio {best[True] / best[False]:.2f}")


if __name__ == "__main__":
    main()
