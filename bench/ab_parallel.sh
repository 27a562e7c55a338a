#!/usr/bin/env bash
# Two versions of the parallel engine on one machine, alternating: a serial run, then OLD's parallel run,
# a serial run, NEW's parallel run, a serial run, ... for as many rounds as fit in BUDGET_S seconds (at least
# one), each search in a process of its own (bench/parallel_once.py), each version from its own copy of
# the package.  Each parallel run's efficiency is by wall against the serial runs either side of it.
# The figure to trust for a change to model/parallel.py on a machine whose speed drifts (docs/scaling.md,
# seventeenth round).  Run from the repository root:
#
#     OLD=main~1 NEW=HEAD bench/ab_parallel.sh                    # git revisions (built with git archive)
#     OLD=/tmp/old NEW=/tmp/new WORKERS=8 BUDGET_S=150 bench/ab_parallel.sh   # folders holding lockstep/
#
# CONFIG (default pp1:mesh=4:off), WORKERS (default 8), BUDGET_S (default 300); the serial runs use OLD.
# Writes runs.jsonl (a line per search) into OUT (default: a new temporary directory).
set -u -o pipefail
: "${OLD:?OLD=<git revision or folder holding lockstep/>}" "${NEW:?NEW=<git revision or folder holding lockstep/>}"
CONFIG=${CONFIG:-pp1:mesh=4:off}
WORKERS=${WORKERS:-8}
BUDGET_S=${BUDGET_S:-300}
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
here=$(cd "$(dirname "$0")" && pwd)
pkg() {  # a folder holding lockstep/ for a folder or a git revision
  if [ -d "$1/lockstep" ]; then (cd "$1" && pwd); return; fi
  local d="$OUT/pkg-$2"
  mkdir -p "$d/lockstep" && git -C "$here/.." archive "$1" | tar xf - -C "$d/lockstep" || { echo "# $1: not a folder holding lockstep/ nor a git revision" >&2; exit 2; }
  echo "$d"
}
old=$(pkg "$OLD" old) || exit 2
new=$(pkg "$NEW" new) || exit 2
echo "# $(env -u OMP_NUM_THREADS nproc) cores, $(uname -n), $(date -u), load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null); $CONFIG, $WORKERS workers; old $OLD, new $NEW"
one() { PYTHONPATH="$1" "$PY" "$here/parallel_once.py" "$2" --config "$CONFIG" --tag "$3" | tee -a "$OUT/runs.jsonl" | cut -c1-160; }
start=$SECONDS
one "$old" serial serial || exit $?
while :; do
  one "$old" "$WORKERS" old && one "$old" serial serial && one "$new" "$WORKERS" new && one "$old" serial serial || exit $?
  # another round only if it fits: a round took (now - start) / rounds so far
  rounds=$(( $(grep -c '"tag": "new"' "$OUT/runs.jsonl") ))
  [ $(( (SECONDS - start) * (rounds + 1) / rounds )) -le "$BUDGET_S" ] || break
done
"$PY" - "$OUT/runs.jsonl" <<'PYEOF'
import json, sys, statistics
rows = [json.loads(line) for line in open(sys.argv[1])]
answers = {(r["verdict"], r["states"]) for r in rows}
if len(answers) != 1:
    print(f"# MISMATCH: the searches disagree: {sorted(answers)}")
effs = {"old": [], "new": []}
for i, r in enumerate(rows):
    if r["tag"] in effs:
        s = (rows[i - 1]["wall_s"] + rows[i + 1]["wall_s"]) / 2
        effs[r["tag"]].append((r["wall_s"], s / (int(r["mode"]) * r["wall_s"])))
for tag, got in effs.items():
    print(f"# {tag}: wall " + ", ".join(f"{w:.2f}" for w, _ in got) + " s; efficiency by wall against the serial runs "
          "either side: " + ", ".join(f"{e:.2f}" for _, e in got) + f"; median {statistics.median(e for _, e in got):.2f}")
sys.exit(len(answers) != 1)
PYEOF
rc=$?
echo "# results in $OUT/runs.jsonl"
exit $rc
