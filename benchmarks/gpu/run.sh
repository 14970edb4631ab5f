#!/bin/bash
# The GPU checks of issue 14, in one call on the lent GPU machine (no Rust toolchain there).
# Built here by benchmarks/gpu/build.sh into target-gpu/ (carried with the call):
#   device_tests.xz  cpflow's `device` test binary (tests/device, --features cuda, release)
#   side_by_side.xz  the tabular side-by-side harness (--device cuda)
#   step_profile.xz  per-piece timings of a train step
#   cpflow.xz        the CLI
#   gpu-run.sh       ../shared/gpu/gpu-run.sh (puts the CUDA libraries on LD_LIBRARY_PATH)
#   ref/             the authors' exported code and ref_tabular.py (run, never copied)
#   BSDS300-images.tar.gz  (for the BSDS300 CLI run)
# Usage (repository root on the GPU machine): bash benchmarks/gpu/run.sh STAGE...
# A call may run 600 s: the stages' limits (s) are info ~5, tests 150, profile 90 + 60,
# tabular-init 200, tabular 360, cli-toy 90, cli-bsds 220. Two calls fit the 15 minutes of
# device time: `info tests profile tabular-init cli-toy` (≤ 595 s), then `tabular cli-bsds`.
# Stages: info tests profile tabular-init tabular cli-toy cli-bsds. Everything lands in $OUT.
# A dry run of the plumbing on a CPU machine: DEVICE=cpu GPU_DIR=<CPU builds, same layout>
# PY=<python with torch> (the `tests` stage then runs the `_cpu` variants).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
G=${GPU_DIR:-target-gpu}
DEV=${DEVICE:-cuda}
PY=${PY:-/opt/torch/.venv/bin/python3}
command -v "$PY" >/dev/null || PY=python3
export CUDA_CACHE_MAXSIZE=4294967296   # keep the driver's PTX JIT cache between processes
export RAYON_NUM_THREADS=${THREADS:-16}
T0=$(date +%s)
BINS=$(mktemp -d)
bin() { # unpack a carried binary once per run
  local n=$1
  if [ ! -x "$BINS/$n" ]; then xz -dc "$G/$n.xz" > "$BINS/$n" && chmod +x "$BINS/$n"; fi
  echo "$BINS/$n"
}
run() { # run NAME SECONDS BINARY ARGS... (output in $OUT/NAME.log)
  local name=$1 secs=$2; shift 2
  local s=$(date +%s)
  echo "=== $name (limit ${secs}s, t=$(( s - T0 ))s)"
  timeout "$secs" bash $G/gpu-run.sh "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name rc=$rc in $(( $(date +%s) - s ))s"
  tail -n 25 "$OUT/$name.log"
  echo "$name rc=$rc $(( $(date +%s) - s ))s" >> "$OUT/summary.txt"
}
for stage in "$@"; do
  case $stage in
    info)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
      nproc >> "$OUT/gpu.txt"; "$PY" -c 'import torch; print("torch", torch.__version__)' >> "$OUT/gpu.txt" 2>&1
      ;;
    tests)
      # Every device test (`test_device!`), on CUDA; 4 at a time.
      run tests 150 "$(bin device_tests)" "_$DEV" --test-threads 4
      grep -E "^test result|FAILED|panicked" "$OUT/tests.log" | head -40
      ;;
    profile)
      run profile 90 "$(bin step_profile)" --device "$DEV" --dims 6,43,63 --reps 20
      [ "$DEV" = cuda ] && run profile-plain 60 "$(bin step_profile)" --device cuda-plain --dims 63 --reps 20
      ;;
    tabular-init|tabular)
      P=200; L=360; [ $stage = tabular-init ] && P=0 && L=200
      run side-by-side-$stage $L "$(bin side_by_side)" --device "$DEV" --threads "$RAYON_NUM_THREADS" \
        --pretrain $P --python "$PY" --ref $G/ref/cpflow-ref --ref-script $G/ref/ref_tabular.py \
        --work-dir /tmp/sbs --out "$OUT/side-by-side-gpu-$stage"
      ;;
    cli-toy)
      B=$(bin cpflow)
      run cli-toy 90 "$B" train --config configs/toy-8gaussians-fast.toml --device "$DEV" \
        --out /tmp/runs/toy-$DEV --no-progress
      cp /tmp/runs/toy-$DEV/report.json "$OUT/cli-toy-report.json" 2>/dev/null
      ;;
    cli-bsds)
      mkdir -p data/bsds300 && cp $G/BSDS300-images.tar.gz data/bsds300/
      B=$(bin cpflow)
      run cli-bsds 220 "$B" train --config configs/tabular.toml --data bsds300 --device "$DEV" \
        --iters "${BSDS_ITERS:-1000}" --out /tmp/runs/bsds-$DEV --no-progress
      cp /tmp/runs/bsds-$DEV/report.json "$OUT/cli-bsds-report.json" 2>/dev/null
      ;;
    *) echo "unknown stage $stage" ;;
  esac
done
echo "=== total $(( $(date +%s) - T0 ))s"; cat "$OUT/summary.txt"
