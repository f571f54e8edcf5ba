#!/usr/bin/env bash
# Everything a session lent a GPU should run, as ONE device call (a session has about 15 minutes of
# device time and each new machine costs minutes to start): issue 14's short throughput
# measurements first, then issue 15's campaign (examples/reproduce_cifar_gpu.py) for the rest of
# the budget. What comes back fits the device's 8 files: gpu_check.tar, campaign.json, logs.tar and
# the run bundles (runs0.tar, ...). Afterwards, here: `python examples/reproduce_cifar_gpu.py
# collect <files_at>` unpacks all of it (the measurements go to results/gpu_check/).
#
#     # the device call, from a clean committed tree, carrying .device_data, timeout_s 600:
#     bash examples/gpu_session.sh
#
# Environment: BUDGET_S, seconds for the whole script [570]; OUT, what comes back [runs/gpu_out];
# SKIP_CHECK=1 spends everything on the campaign. Arguments go to `reproduce_cifar_gpu.py run`
# (--only, --epochs, --train-per-class ...). The measurements take about 2-3 minutes; they are
# bounded by their own timeouts, so the campaign always keeps at least BUDGET_S - 300 seconds.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
BUDGET_S=${BUDGET_S:-570}
OUT=${OUT:-runs/gpu_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
# Always the checked-out code, installed or not (the lent GPU machine has no install). No probe:
# `python -c "import timm_anytime"` succeeds in the repository root without any install (the folder
# timm_anytime/ imports as an empty namespace package) while the scripts then fail.
export PYTHONPATH="$PWD/osgd/src:$PWD/timm_anytime/src${PYTHONPATH:+:$PYTHONPATH}"
if [[ ${SKIP_CHECK:-0} != 1 ]]; then
    check=$(mktemp -d)/gpu_check
    ITEMS=${ITEMS:-train_step_bf16 concurrent_runs} ROUNDS=${ROUNDS:-20} WINDOW_S=${WINDOW_S:-8} OUT=$check \
        timeout 300 bash benchmarks/gpu_check.sh
    echo "gpu_check: exit $? after $(($(date +%s) - start)) s"
    tar -cf "$OUT/gpu_check.tar" -C "$(dirname "$check")" gpu_check
fi
left=$((BUDGET_S - ($(date +%s) - start)))
echo "campaign: $left s left of $BUDGET_S"
"$PY" examples/reproduce_cifar_gpu.py run --budget-s "$left" --out "$OUT" "$@"
