#!/usr/bin/env bash
# The GPU measurements of the training-speed work, as one script for a session that is lent a GPU
# (about 8-9 minutes on an H200). Writes every output to ${OUT:-runs/gpu_check}/ and prints it too.
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-$(command -v python3 || command -v python)}
# On a machine without this project installed (the lent GPU machine), import it from the checkout.
"$PY" -c "import timm_anytime" 2>/dev/null || export PYTHONPATH="$PWD/osgd/src:$PWD/timm_anytime/src${PYTHONPATH:+:$PYTHONPATH}"
{ git rev-parse HEAD; git status --short; nvidia-smi --query-gpu=name,memory.total --format=csv; } > "$OUT/provenance.txt" 2>&1
run() {  # name, timeout in seconds, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee "$OUT/$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt"
}
run train_step_bf16 150 $PY benchmarks/train_step.py --device cuda --precision bf16 --batch-size 512 \
    --channels-last --methods sgd osgd normsgd osgd_norm --rounds 30 --warmup 10 --memory
run train_step_bf16_compile 240 $PY benchmarks/train_step.py --device cuda --precision bf16 --batch-size 512 \
    --channels-last --compile --methods sgd osgd --rounds 30 --warmup 10
run concurrent_runs 200 $PY benchmarks/concurrent_runs.py --device cuda --precision bf16 --channels-last \
    --batch-size 512 --counts 1 2 4 8 --seconds 15 --warmup 10
# Last, so that a call cut off at its limit loses only this: whether one vectorized backward pass
# (floor_batched) beats one backward pass per stage (floor) where kernel launches cost most.
run floor_batched_bf16 60 $PY benchmarks/train_step.py --device cuda --precision bf16 --batch-size 512 \
    --channels-last --methods sgd floor floor_batched --rounds 15 --warmup 5
