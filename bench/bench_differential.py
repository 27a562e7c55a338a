"""The nightly-size differential run: random protocols (tests/protogen.py) checked reduced,
unreduced and with workers=2 (every ``--parallel-every``-th spec); every disagreement is printed
with its description (a JSON line to turn into a regression test).  Every ``--wide-every``-th spec
is a wide one: 4-6 ranks, most with a symmetric orbit of 2-5 ranks and drawn sub-groups
(``--wide-every 0`` draws the 2-3-rank specs alone, as runs before wide specs did for a seed).
``--aux-ops`` keeps only specs whose rank 0 has a second thread that posts ops of its own (drawing
until one comes): the case of C1's posting-order condition for threads that share a rank;
``--three-threads`` only those where rank 0 runs three threads (a rank's threads taken together);
``--observed-when`` only those whose invariant reads a control state where a variable has a value,
declared ``observed_when`` (honest or planted wrong); ``--fifo`` only those where one role takes from the
FIFO and another puts to it, each declared per transition (C0 for FIFO ends); ``--unobserved`` only those
whose invariant reads a field of an actor the reduction may take alone, its ``observed`` planted wrong
(the read check must refuse them, or they must be harmless); ``--dumps`` also compares what a Flight
Recorder dump could show of each spec's runs (tests/followgen.py ``observations``: each run prefix's
collectives per group, each end with them and how it ended), the soundness of ``conform
--flight-recorder --spec``'s search on the reduced graph; ``--detach`` draws specs whose main-thread
roles may also post an op (a collective, or an isend or irecv towards a rank outside the symmetric orbit)
and never wait for it, and may exit with it outstanding: a rank's exit voids its posted ops, and two
symmetric actors may share one local state while only one has an op outstanding; ``--recover`` lets some
ops that fail (their partner's process gone) send their thread on to a later state (``on_error=``) instead
of ``FAILED``, so a thread outlives a failed op and goes on posting (with ``--detach`` too, both);
``--rich`` draws more op kinds (all_gather, all_reduce with max, broadcast from rank 0, batch_isend_irecv)
and a fault budget of two; ``--threads`` gives ranks other than 0 (outside the symmetric orbit) a second
thread that posts ops too (drawing until one has); ``--rooted`` draws the rest of the collective kinds:
reduce, gather, scatter and broadcast with a drawn root on the world and on sub-groups, reduce_scatter,
all_to_all, monitored_barrier and all_gather with uneven sizes; ``--profiles`` draws the backend's
profile fields (p2p matching, what a gone or a finished peer does) each on its own, where the default
draws one of the four presets.  These six combine.  ``--positions`` keeps the ``--rooted`` specs whose
symmetric role contributes its x to a gather, all_gather or all_to_all (the check that refuses results
that tell symmetric ranks apart).  ``--big 8,12`` draws every spec as a world of 8-12
ranks with a symmetric orbit (the sizes users run; a fifth to a half of them finish unreduced within
the 60,000 states the comparison allows, and only those are compared in full).
The summary counts the specs with footprint declarations (reads=/writes=/shares=/puts=/takes=)
and those with one planted wrong, and those with ``observed_when`` and those planted wrong.

    PYTHONPATH=... python bench/bench_differential.py --specs 2000 --seed 1
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import followgen  # noqa: E402
import protogen  # noqa: E402
from lockstep.model.api import SpecError  # noqa: E402


def _span(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(",")
    try:
        span = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI (two numbers of ranks, e.g. 8,12), got {text!r}") from None
    if not 7 <= span[0] <= span[1] <= 16:
        raise argparse.ArgumentTypeError(f"expected 7 <= LO <= HI <= 16, got {text!r}")
    return span


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--parallel-every", type=int, default=10, help="run workers=2 on every N-th spec (0: never)")
    ap.add_argument("--wide-every", type=int, default=4, help="draw every N-th spec wide: 4-6 ranks (0: never)")
    ap.add_argument("--aux-ops", action="store_true", help="only specs where a second thread of rank 0 posts ops")
    ap.add_argument("--three-threads", action="store_true", help="only specs where rank 0 runs three threads")
    ap.add_argument("--observed-when", action="store_true", help="only specs whose invariant is declared observed_when")
    ap.add_argument("--fifo", action="store_true", help="only specs where one role takes from the FIFO and another puts")
    ap.add_argument("--unobserved", action="store_true",
                    help="only specs whose invariant reads a reducible actor's field with observed= planted wrong")
    ap.add_argument("--detach", action="store_true",
                    help="specs whose roles may also post an op and never wait for it, and exit with it outstanding")
    ap.add_argument("--recover", action="store_true",
                    help="specs where some failed ops send their thread on to a later state (on_error=) instead of FAILED")
    ap.add_argument("--rich", action="store_true",
                    help="more op kinds (all_gather, max, broadcast, batch_isend_irecv) and two faults a run")
    ap.add_argument("--threads", action="store_true",
                    help="only specs where a rank other than 0 runs a second thread that posts ops")
    ap.add_argument("--rooted", action="store_true",
                    help="rooted collectives (reduce, gather, scatter, broadcast), reduce_scatter, all_to_all, "
                         "monitored_barrier, uneven all_gather")
    ap.add_argument("--profiles", action="store_true",
                    help="backend profile fields drawn each on its own (p2p_match, gone_peer, finished_peer)")
    ap.add_argument("--positions", action="store_true",
                    help="only --rooted specs whose symmetric role contributes its x to a call whose results go by group rank")
    ap.add_argument("--ranked", action="store_true",
                    help="guards and effects that read c.rank, on the symmetric role too (some of them telling its ranks apart)")
    ap.add_argument("--big", metavar="LO,HI", type=_span,
                    help="every spec a world of LO-HI ranks with a symmetric orbit (e.g. 8,12)")
    ap.add_argument("--dumps", action="store_true",
                    help="also compare what a Flight Recorder dump could show of the spec's runs, reduced and unreduced "
                         "(tests/followgen.py observations: the soundness of conform --flight-recorder --spec)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    t0 = time.perf_counter()
    bad, parallel, declared, planted, unshared, wide, orbits, aux, when, when_planted = [], 0, 0, 0, 0, 0, 0, 0, 0, 0
    full = dumps_compared = 0
    for i in range(a.specs):
        is_wide = bool(a.big) or (a.wide_every > 0 and i % a.wide_every == a.wide_every - 1)
        draws = {"wide": is_wide, "big": a.big, "detach": a.detach, "recover": a.recover, "rich": a.rich, "threads": a.threads,
                 "rooted": a.rooted or a.positions, "profiles": a.profiles, "ranked": a.ranked}
        d = protogen.describe(protogen.random_pick(rng), **draws)
        while (a.threads and not any(r > 0 and t != "main" for r, t in d["actors"])) or (a.aux_ops and not d["aux_ops"]) \
                or (a.three_threads and len([x for x in d["actors"] if x[0] == 0]) < 3) \
                or (a.observed_when and not (d["inv"] or {}).get("when")) or (a.fifo and not protogen.fifo_ends(d)) \
                or (a.unobserved and not protogen.unobserved_reads(d)) or (a.positions and not protogen.by_position(d)):
            d = protogen.describe(protogen.random_pick(rng), **draws)
        aux += d["aux_ops"]
        w = (d["inv"] or {}).get("when")
        when += bool(w)
        when_planted += bool(w and w["plant"])
        wide += is_wide
        orbits += is_wide and d["sym"]
        roles = d["roles"].values()
        declared += any(r["footprint"] != "none" for r in roles)
        planted += any(r["planted_footprint"] for r in roles)
        unshared += bool(d.get("no_shared"))
        par = a.parallel_every > 0 and i % a.parallel_every == 0
        parallel += par
        seen: dict = {}
        diffs = protogen.compare(d, workers=par, seen=seen)
        full += seen.get("complete", False)
        if a.dumps and not diffs:
            try:
                r, u = (followgen.observations(protogen.build(d), red) for red in (True, False))
            except SpecError:
                r = u = None  # refused: what a planted-wrong declaration gets (compare said so already)
            if r is not None and u is not None:
                dumps_compared += 1
                if r != u:
                    diffs = [f"what a dump shows: {len(u - r)} only unreduced, {len(r - u)} only reduced, "
                             f"e.g. {sorted(u - r, key=repr)[:1]}"]
        if diffs:
            bad.append({"index": i, "differences": diffs, "spec": d})
            print(json.dumps(bad[-1]), file=sys.stderr)
        if (i + 1) % 25 == 0 and i + 1 < a.specs:  # progress, on stderr (stdout keeps the summary alone)
            print(f"{i + 1}/{a.specs} specs, {len(bad)} disagreements, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
    secs = time.perf_counter() - t0
    out = {"specs": a.specs, "seed": a.seed, "with_workers_2": parallel, "with_footprints": declared,
           "with_planted_footprints": planted, "without_shared_variables": unshared, "wide": wide, "wide_symmetric": orbits, "compared_in_full": full,
           "second_thread_ops": aux, "observed_when": when, "observed_when_planted": when_planted,
           "dumps_compared": dumps_compared if a.dumps else None, "disagreements": len(bad), "seconds": round(secs, 1)}
    print(json.dumps(out) if a.json else
          f"{a.specs} generated specs (seed {a.seed}; {parallel} also with workers=2; {declared} with footprint "
          f"declarations, {planted} of them planted wrong; {unshared} without shared variables; {wide} wide, "
          f"{orbits} of them with a symmetric orbit; {full} compared in full, both searches within the bound; {aux} with ops on a second thread; {when} with "
          f"observed_when, {when_planted} of them planted wrong"
          + (f"; what a dump shows compared on {dumps_compared}" if a.dumps else "") + "): "
          f"{len(bad)} disagreements, "
          f"{secs:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
