#!/usr/bin/env bash
# The 16-core measurement of `lockstep check --ray` (docs/scaling.md): serial, --workers 16 and --ray
# with 16 actors on `pp1 -p mesh=4 --no-reduction` (about 1M states), safety only.  Run from the
# repository root on an idle 16-core machine with lockstep[ray] installed (or PYTHONPATH pointing at a
# directory where `import lockstep` resolves).  Prints one line per run and a table; the goal is >= 8x
# over serial.  Each run has its own wall-clock limit (LIMIT seconds, default 900).  For the 1/2/4/8/16-worker
# table of --workers alone (efficiency per worker count), see bench/multicore_16.sh.
set -u
# SPEC_ARGS overrides the spec for a smoke test, e.g. SPEC_ARGS="tp -p chunks=1" N=2 bench/ray_16core.sh
read -r -a SPEC <<< "${SPEC_ARGS:-pp1 -p mesh=4 --no-reduction} --no-liveness"
N=${N:-16}
LIMIT=${LIMIT:-900}
PY=${PYTHON:-python}
export OMP_NUM_THREADS=1
out=$(mktemp -d)
run() {  # name, extra args...
  local name=$1; shift
  local t0=$(date +%s.%N)
  timeout "$LIMIT" "$PY" -m lockstep check "${SPEC[@]}" "$@" --json > "$out/$name.json" 2> "$out/$name.err"
  local rc=$?
  local t1=$(date +%s.%N)
  echo "$name rc=$rc wall=$(echo "$t1 - $t0" | bc) s" | tee -a "$out/summary"
  echo "$t1 - $t0" | bc > "$out/$name.wall"
}
echo "# $(env -u OMP_NUM_THREADS nproc) cores, $(uname -n), $(date -u)"
run serial
run workers "--workers" "$N"
run ray "--ray" "--workers" "$N"
"$PY" - "$out" <<'PYEOF'
import json, os, sys
d = sys.argv[1]
rows = []
for name in ("serial", "workers", "ray"):
    try:
        j = json.load(open(os.path.join(d, name + ".json")))
    except Exception as e:
        print(f"{name}: no result ({e}); stderr: {open(os.path.join(d, name + '.err')).read()[-500:]}")
        continue
    wall = float(open(os.path.join(d, name + ".wall")).read())
    rows.append((name, j["verdict"], j["states"], j["transitions"], j["seconds"], wall))
if rows:
    base = rows[0][4] if rows[0][0] == "serial" else None
    print(f"{'run':<8} {'verdict':<8} {'states':>10} {'transitions':>12} {'search s':>9} {'wall s':>8} {'vs serial':>9}")
    for r in rows:
        sp = f"{base / r[4]:.2f}x" if base and r[4] else "-"
        print(f"{r[0]:<8} {r[1]:<8} {r[2]:>10,} {r[3]:>12,} {r[4]:>9.1f} {r[5]:>8.1f} {sp:>9}")
    if len({(r[1], r[2], r[3]) for r in rows}) != 1:
        print("ENGINES DISAGREE on verdict/states/transitions")
PYEOF
echo "# raw results in $out"
