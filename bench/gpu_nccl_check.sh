#!/usr/bin/env bash
# One prepared NCCL check for a machine with one GPU (an NCCL world of 1: the only one a single GPU allows).
#
#   bash bench/gpu_nccl_check.sh [OUT_DIR]        (from the repository root; needs torch with CUDA)
#
# 1. a tp world=1 NCCL run under torchrun, with --flight-recorder;
# 2. the Flight Recorder dump: it must hold entries (on NCCL lockstep dumps with _dump_nccl_trace;
#    _dump_fr_trace comes back empty there) and every entry must be in state `completed`; the dump
#    must carry the run id of the trace;
# 3. the JSONL trace: every comm_enter has its comm_exit (recorded after the CUDA stream completed,
#    not at enqueue);
# 4. `lockstep conform` on the trace: CONFORMS (0), or "not checkable: ..." (exit 2, one line) since
#    the tp spec needs 2 ranks -- never a traceback;
# 5. `lockstep conform --flight-recorder` on the dump: CONSISTENT (0);
# 6. the pytest run fixture on NCCL (bench/gpu_fixture_test.py): `lockstep_run("tp", world=1,
#    backend="nccl", flight_recorder=True)` launches through torchrun, the run is clean, its trace conforms
#    (or is "not checkable"), its dump is CONSISTENT with every entry completed.
# Prints one PASS/FAIL line per check and exits non-zero if any failed.  Every step has a timeout.
set -u
OUT=${1:-${OUT:-/tmp/lockstep-gpu-check}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHIM=$(mktemp -d)
trap 'rm -rf "$SHIM"' EXIT
ln -s "$ROOT" "$SHIM/lockstep"            # `import lockstep` = this checkout (package-dir lockstep=".")
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS=1
export TORCH_NCCL_TRACE_BUFFER_SIZE=${TORCH_NCCL_TRACE_BUFFER_SIZE:-2000}   # Flight Recorder on (NCCL)
export TORCH_FR_BUFFER_SIZE=${TORCH_FR_BUFFER_SIZE:-2000}
rm -rf "$OUT" && mkdir -p "$OUT"
FAIL=0
say() { echo "$1: $2"; [ "$1" = PASS ] || FAIL=1; }

python - <<'EOF' || { echo "FAIL: torch with CUDA and one GPU needed"; exit 1; }
import sys
import torch
if not (torch.cuda.is_available() and torch.cuda.device_count() >= 1):
    sys.exit(f"no GPU visible to torch {torch.__version__}")
print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", ".".join(map(str, torch.cuda.nccl.version())),
      torch.cuda.get_device_name(0))
EOF

timeout 300 torchrun --standalone --nproc-per-node 1 -m lockstep.cli.run --topology tp -p world=1 -p chunks=3 \
    --backend nccl --trace-dir "$OUT/run" --flight-recorder "$OUT/fr" > "$OUT/run.log" 2>&1
rc=$?
tail -5 "$OUT/run.log"
[ $rc -eq 0 ] && say PASS "tp world=1 NCCL run exited 0" || say FAIL "tp world=1 NCCL run exited $rc (see $OUT/run.log)"

timeout 120 python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
from lockstep.conformance.flight import load_dump
out = Path(sys.argv[1])
ok = True
dumps = sorted((out / "fr").glob("lockstep_fr_rank_*"))
if not dumps:
    print("FAIL: no Flight Recorder dump in", out / "fr"); sys.exit(1)
d = load_dump(dumps[0])
entries = d["entries"]
states = {}
for e in entries:
    states[e.get("state")] = states.get(e.get("state"), 0) + 1
print(f"dump {dumps[0].name}: version {d['version']}, {len(entries)} entries, states {states}, "
      f"ops {sorted({e['profiling_name'] for e in entries})[:6]}")
if not entries:
    print("FAIL: the NCCL dump holds no entries"); ok = False
elif set(states) != {"completed"}:
    print("FAIL: entries not all completed:", states); ok = False
else:
    print("PASS: every entry of the NCCL dump is completed")
first = json.loads((out / "run" / "rank0.jsonl").read_text().splitlines()[0])
rid = (d.get("lockstep") or {}).get("run_id")
if rid and rid == first.get("run_id"):
    print("PASS: the dump and the trace carry the same run id", rid)
else:
    print("FAIL: run ids differ: dump", rid, "trace", first.get("run_id")); ok = False
evs = [json.loads(x) for x in (out / "run" / "rank0.jsonl").read_text().splitlines()]
enters = sum(e["ev"] == "comm_enter" for e in evs)
exits = sum(e["ev"] == "comm_exit" and e["ok"] for e in evs)
if enters and enters == exits:
    print(f"PASS: {enters} comm ops, each with its comm_exit ok (recorded after the stream completed)")
else:
    print(f"FAIL: {enters} comm_enter vs {exits} ok comm_exit"); ok = False
sys.exit(0 if ok else 1)
EOF
[ $? -eq 0 ] || FAIL=1

timeout 300 python -m lockstep conform "$OUT/run" > "$OUT/conform.txt" 2>&1
rc=$?
cat "$OUT/conform.txt" | tail -3
if [ $rc -eq 0 ]; then say PASS "conform: CONFORMS"
elif [ $rc -eq 2 ] && grep -q "not checkable" "$OUT/conform.txt" && [ "$(wc -l < "$OUT/conform.txt")" -eq 1 ]; then
  say PASS "conform: one-line 'not checkable' (exit 2)"
else say FAIL "conform exited $rc"; fi
grep -q Traceback "$OUT/conform.txt" && say FAIL "conform printed a traceback"

timeout 300 python -m lockstep conform --flight-recorder "$OUT/fr" > "$OUT/fr.txt" 2>&1
rc=$?
tail -3 "$OUT/fr.txt"
[ $rc -eq 0 ] && say PASS "conform --flight-recorder: CONSISTENT" || say FAIL "conform --flight-recorder exited $rc"

timeout 400 python -m pytest bench/gpu_fixture_test.py -q -s -p no:cacheprovider --basetemp "$OUT/pytest" \
    > "$OUT/fixture.txt" 2>&1
rc=$?
tail -4 "$OUT/fixture.txt"
if [ $rc -eq 0 ] && grep -q "1 passed" "$OUT/fixture.txt"; then say PASS "the lockstep_run fixture on NCCL (world 1, torchrun)"
else say FAIL "the lockstep_run fixture on NCCL exited $rc (see $OUT/fixture.txt)"; fi

[ $FAIL -eq 0 ] && echo "ALL PASS" || echo "SOME CHECKS FAILED"
exit $FAIL
