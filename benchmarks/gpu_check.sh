#!/usr/bin/env bash
# The GPU measurements of the training-speed work, as one script for a session that is lent a GPU
# (about 8-9 minutes on an H200 with the defaults). Writes every output to ${OUT:-runs/gpu_check}/
# and prints it too; exits non-zero if any measurement failed (the others still run).
#
#     OUT=/some/folder bash benchmarks/gpu_check.sh
#
# Environment (defaults in brackets): ITEMS, the measurements to run, in this order [train_step_bf16
# train_step_bf16_compile concurrent_runs floor_batched_bf16]; ROUNDS, timed steps per variant [30];
# WINDOW_S, seconds each packed run is timed [15]; COUNTS, runs packed at once [1 2 4 8]; DEVICE
# [cuda], PRECISION [bf16] and BATCH [512], which only the CPU smoke test changes
# (tests/test_scripts.py). examples/gpu_session.sh runs a short selection before the campaign.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
KNOWN_ITEMS="train_step_bf16 train_step_bf16_compile concurrent_runs floor_batched_bf16"
ITEMS=${ITEMS:-$KNOWN_ITEMS}
for item in $ITEMS; do # a misspelt item would otherwise run nothing and succeed
    if [[ " $KNOWN_ITEMS " != *" $item "* ]]; then
        echo "gpu_check: unknown item '$item' in ITEMS; choose from: $KNOWN_ITEMS" >&2
        exit 2
    fi
done
ROUNDS=${ROUNDS:-30}
WINDOW_S=${WINDOW_S:-15}
COUNTS=${COUNTS:-1 2 4 8}
DEVICE=${DEVICE:-cuda}
PRECISION=${PRECISION:-bf16}
BATCH=${BATCH:-512}
mkdir -p "$OUT"
PY=${PYTHON:-$(command -v python3 || command -v python)}
# Always the checked-out code, installed or not (the lent GPU machine has no install). No probe:
# `python -c "import timm_anytime"` succeeds in the repository root without any install (the folder
# timm_anytime/ imports as an empty namespace package) while the scripts then fail.
export PYTHONPATH="$PWD/osgd/src:$PWD/timm_anytime/src${PYTHONPATH:+:$PYTHONPATH}"
{
    git rev-parse HEAD
    git status --short
    nvidia-smi --query-gpu=name,memory.total --format=csv
} >"$OUT/provenance.txt" 2>&1
COMMON=(--device "$DEVICE" --precision "$PRECISION" --batch-size "$BATCH" --channels-last)
failed=()
run() { # name, timeout in seconds, command...
    local name=$1 limit=$2
    shift 2
    [[ " $ITEMS " == *" $name "* ]] || return 0
    echo "== $name: $*" | tee "$OUT/$name.txt"
    timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.txt" || failed+=("$name")
}
run train_step_bf16 150 "$PY" benchmarks/train_step.py "${COMMON[@]}" \
    --methods sgd osgd normsgd osgd_norm --rounds "$ROUNDS" --warmup 10 --memory
run train_step_bf16_compile 240 "$PY" benchmarks/train_step.py "${COMMON[@]}" --compile \
    --methods sgd osgd --rounds "$ROUNDS" --warmup 10
# shellcheck disable=SC2086  # COUNTS is a list of numbers
run concurrent_runs 200 "$PY" benchmarks/concurrent_runs.py "${COMMON[@]}" --counts $COUNTS \
    --seconds "$WINDOW_S" --warmup 10
# Last, so that a call cut off at its limit loses only this: whether one vectorized backward pass
# (floor_batched) beats one backward pass per stage (floor) where kernel launches cost most.
run floor_batched_bf16 60 "$PY" benchmarks/train_step.py "${COMMON[@]}" \
    --methods sgd floor floor_batched --rounds "$(((ROUNDS + 1) / 2))" --warmup 5
if ((${#failed[@]})); then
    echo "failed: ${failed[*]}" | tee "$OUT/failed.txt"
    exit 1
fi
