#!/bin/bash
# Builds the GPU checks' binaries on a machine without a GPU (../shared/gpu/README.md: nvcc
# 13.0 from wheels, a link stub for libcuda) and gathers what benchmarks/gpu/run.sh needs in
# target-gpu/ (git-ignored; name it in the device call's `carry`).
#   benchmarks/gpu/build.sh [--bsds]     (from the repository root)
# Env: CUDA_TARGET (cargo target dir, default ../cuda-target: outside the CPU build's
# target/, so the two feature sets do not rebuild each other), CUDA_ENV (cuda-env.sh),
# REF (the authors' exported code, default ~/cpflow-ref), REF_SCRIPT (ref_tabular.py).
set -euo pipefail
T=${CUDA_TARGET:-$(cd .. && pwd)/cuda-target}
E=${CUDA_ENV:-../shared/gpu/cuda-env.sh}
G=target-gpu
mkdir -p $G
export CARGO_TARGET_DIR=$T
$E cargo build --release -p benchmarks --features cuda --bin side_by_side --bin step_profile
$E cargo build --release -p cpflow --features cuda --bin cpflow
TEST=$($E cargo test --release -p cpflow --features cuda --test device --no-run \
  --message-format=json | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
for pair in "$T/release/side_by_side:side_by_side" "$T/release/step_profile:step_profile" \
            "$T/release/cpflow:cpflow" "$TEST:device_tests"; do
  src=${pair%%:*}; name=${pair##*:}
  strip -o /tmp/$name.stripped "$src"
  xz -9 -T2 -c /tmp/$name.stripped > $G/$name.xz && rm /tmp/$name.stripped
done
cp ../shared/gpu/gpu-run.sh $G/
mkdir -p $G/ref
rm -rf $G/ref/cpflow-ref && cp -r "${REF:-$HOME/cpflow-ref}" $G/ref/cpflow-ref
cp "${REF_SCRIPT:-../shared/reference/bench/ref_tabular.py}" $G/ref/
if [ "${1:-}" = --bsds ]; then cp ../shared/data/bsds300/BSDS300-images.tar.gz $G/; fi
du -sh $G/*
