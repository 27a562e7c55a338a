"""How sharp is the differential?  Plants one known bug at a time into the reductions (a *mutant*:
one condition of the partial-order reduction, the symmetry reduction, ``observed_when``, the
search shortcuts or a declaration check switched off by a textual edit of its source) and runs the
differential of bench/bench_differential.py (tests/protogen.py: reduced against unreduced) on
random protocols until it disagrees.  Each mutant reports the spec that killed it (1-based: how
many specs the differential needed), or that it survived ``--specs`` specs.

A mutant that survives is a blind spot of the differential, or a condition the generated protocols
cannot exercise (an *equivalent* mutant for them): the report says which specs each mutant draws
from.  Every kill is confirmed: the killing spec agrees with itself once the mutant is removed.

    PYTHONPATH=... python bench/bench_reduction_mutants.py --specs 600 --seed 1 [--only NAME ...] [--json]

Exit status: 0 when every mutant was killed, 1 when one survived, 2 when a mutant's edit no longer
matches the source (the bench must follow the code it mutates).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from mutants import MUTANTS, EditMismatch, hunt  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", type=int, default=600, help="specs per mutant before it counts as surviving")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None, help="mutant names (default: all)")
    ap.add_argument("--json", action="store_true", help="one JSON object: the mutants' rows (killing specs included)")
    a = ap.parse_args()
    chosen = [m for m in MUTANTS if a.only is None or m.name in a.only]
    if a.only and len(chosen) != len(set(a.only)):
        print(f"unknown mutant(s): {sorted(set(a.only) - {m.name for m in MUTANTS})}; "
              f"known: {', '.join(m.name for m in MUTANTS)}", file=sys.stderr)
        return 2
    rows = []
    for m in chosen:
        try:
            row = hunt(m, a.specs, a.seed)
        except EditMismatch as e:
            print(f"bench_reduction_mutants: {e}", file=sys.stderr)
            return 2
        row.update(what=m.what, draw=m.draw)
        rows.append(row)
        if not a.json:
            k = row["killed_at"]
            verdict = f"killed at spec {k}" + ("" if row["confirmed"] else " (NOT confirmed: the clean checker disagrees too)") \
                if k else f"SURVIVED {a.specs} specs"
            print(f"{m.name:18} {verdict:44} {row['seconds']:7.1f} s  [{m.draw}] {m.what}", flush=True)
            if k:
                print(f"{'':18} {row['difference']}", flush=True)
    survivors = [r["mutant"] for r in rows if not r["killed_at"]]
    if a.json:
        print(json.dumps({"seed": a.seed, "specs": a.specs, "mutants": rows, "survivors": survivors}))
    else:
        print(f"{len(rows) - len(survivors)}/{len(rows)} mutants killed (seed {a.seed}, up to {a.specs} specs each)"
              + (f"; survivors: {', '.join(survivors)}" if survivors else ""))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
