#!/usr/bin/env bash
# The multi-core table of docs/scaling.md on one machine: serial, then 2/4/8/16 forked workers
# (``--workers N``, model/parallel.py), on `pp1 -p mesh=4 --no-reduction` (about 1M states) and
# `pp1 -p mesh=8` (reduced), safety only, side by side in one process per spec (bench/bench_parallel.py).
# Run from the repository root on an idle machine with at least 16 cores, with lockstep installed (or
# PYTHONPATH pointing where `import lockstep` resolves):
#
#     bench/multicore_16.sh                 # the full table (tens of minutes on 16 cores)
#     WORKERS=2,4 CONFIGS="pp1:mesh=2:off" bench/multicore_16.sh   # a smoke test of the script itself
#     PAIRS=3 WORKERS=8 CONFIGS="pp1:mesh=4:off" bench/multicore_16.sh  # the 8-worker efficiency alone
#     PAIRS=3 WORKERS=8 STEAL=auto,halves CONFIGS="pp1:mesh=4:off" bench/multicore_16.sh  # serial ranges against
#                                                                  # the earlier sharing, alternating
#
# With PAIRS=K, each config and worker count runs K rounds of (serial, then each STEAL mode's parallel run
# followed by a serial run) and a last serial run instead of the table, and each parallel run's efficiency
# is against the serial runs either side of it (bench_parallel.py --pairs): the figure to trust on a
# machine whose speed drifts within minutes.
#
# Every worker count runs with work stealing on (where workers <= cores) and then off (``/off`` rows).
#
# Prints one row per run (wall, CPU, busiest worker, CPU critical path, efficiency by wall and by
# critical path: the goal is >= 0.6 at 8 workers), under each parallel row the levels' expand and
# merge phases (the parent's wall wait, the slowest and the mean worker's CPU: --phases), and writes
# JSON next to the log in OUT (default: a new temporary directory).  Each spec has its own wall-clock
# limit (LIMIT seconds, default 3600).
set -u
WORKERS=${WORKERS:-2,4,8,16}
STEAL=${STEAL:-auto,off}  # sharing a level's frontier (serial ranges), then off (model/parallel.py STEAL)
CONFIGS=${CONFIGS:-"pp1:mesh=4:off pp1:mesh=8:on"}
LIMIT=${LIMIT:-3600}
PAIRS=${PAIRS:-0}
PY=${PYTHON:-python}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export OMP_NUM_THREADS=1
here=$(cd "$(dirname "$0")" && pwd)
echo "# $(env -u OMP_NUM_THREADS nproc) cores, $(uname -n), $(date -u), load $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
if [ "$(env -u OMP_NUM_THREADS nproc)" -lt 16 ]; then  # (nproc alone reports OMP_NUM_THREADS)
  echo "# note: fewer than 16 cores: rows with more workers than cores measure time sharing, not scaling"
fi
rc=0
i=0
for cfg in $CONFIGS; do
  i=$((i + 1))
  if [ "$PAIRS" -gt 0 ]; then mode=(--pairs "$PAIRS" --steal "$STEAL" --phases); else mode=(--transport compact --steal "$STEAL" --phases); fi
  timeout "$LIMIT" "$PY" "$here/bench_parallel.py" --config "$cfg" --workers "$WORKERS" "${mode[@]}" \
    --json "$OUT/multicore_$i.json" 2>&1 | tee "$OUT/multicore_$i.log"
  r=${PIPESTATUS[0]}
  [ "$r" -ne 0 ] && { echo "# $cfg: exit $r"; rc=1; }
done
echo "# results in $OUT"
exit $rc
