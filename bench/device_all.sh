#!/usr/bin/env bash
# Everything a lent GPU machine (one GPU, 16 cores) is used for, in one prepared run:
#   1. bench/gpu_nccl_check.sh      -- NCCL traces and Flight Recorder dumps (world 1)
#   2. bench/machine_scaling.py     -- how the machine itself runs 1/2/4/8/16 Python processes at once
#   3. bench/multicore_16.sh        -- serial vs 2/4/8/16 forked workers
#
#   bash bench/device_all.sh OUT_DIR      (from the repository root; `import lockstep` is this checkout)
#
# Logs land in OUT_DIR: gpu.log, machine.log, multicore.log and the multicore JSON (few files, as the machine's
# transfer back allows).  Each part has its own time limit (GPU_LIMIT, MC_LIMIT seconds).
set -u
[ $# -eq 1 ] || { echo "usage: bench/device_all.sh OUT_DIR" >&2; exit 2; }
OUT=$1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHIM=$(mktemp -d)
ln -s "$ROOT" "$SHIM/lockstep"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
mkdir -p "$OUT"
{ echo "# $(env -u OMP_NUM_THREADS nproc) cores, $(python3 -V 2>&1), load $(cut -d' ' -f1-3 /proc/loadavg)"; nvidia-smi -L 2>&1 | head -2; } | tee "$OUT/gpu.log"
timeout "${GPU_LIMIT:-200}" bash "$ROOT/bench/gpu_nccl_check.sh" /tmp/lockstep-gpu-check >> "$OUT/gpu.log" 2>&1
echo "# gpu_nccl_check.sh exit $?" | tee -a "$OUT/gpu.log"
cp /tmp/lockstep-gpu-check/fixture.txt "$OUT/gpu_fixture.txt" 2>/dev/null
timeout 200 python3 "$ROOT/bench/machine_scaling.py" 2>&1 | tee "$OUT/machine.log"
MC=$(mktemp -d)
OUT=$MC LIMIT=${MC_LIMIT:-200} bash "$ROOT/bench/multicore_16.sh" 2>&1 | tee "$OUT/multicore.log"
cp "$MC"/multicore_*.json "$OUT/" 2>/dev/null
rm -rf "$SHIM"
