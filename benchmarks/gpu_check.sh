#!/usr/bin/env bash
# The course's GPU paths, run for real on a machine with an NVIDIA GPU. Each step has a time
# limit (2 + 2 + 4 + 2 minutes: at most 10 minutes in all; not yet run on a GPU):
#
#   1. the doctor (versions, the GPU line, a few timed training steps of both recipes);
#   2. one epoch of the lecture's recipe (96x96, batch 256) with its images/s;
#   3. notebook 05 under nbval (on a GPU it trains the lecture's recipe, 10 epochs);
#   4. torchrun over every GPU here with nccl and --sync-bn (skipped with 1 GPU).
#
# Then one summary table. Exit status: 0 when every step that ran passed, 1 when one failed,
# 2 when there is no CUDA GPU (or no venv) to check.
#
#   bash benchmarks/gpu_check.sh                 # the venv of `make test` (.venv)
#   VENV=/path/to/venv bash benchmarks/gpu_check.sh
#   OUT=runs/gpu_check NOTEBOOK_TIMEOUT=600 bash benchmarks/gpu_check.sh   # a slower GPU
#
# Fashion-MNIST must be on the machine (./data, $RESNET_LESSONS_DATA, or the Debian
# package); the doctor step says where it looked.
set -euo pipefail

cd "$(dirname "$0")/.."  # VENV and OUT are relative to the checkout's root
VENV="${VENV:-.venv}"
OUT="${OUT:-runs/gpu_check}"
STEP_TIMEOUT="${STEP_TIMEOUT:-120}"          # seconds per step (doctor, epoch, torchrun)
NOTEBOOK_TIMEOUT="${NOTEBOOK_TIMEOUT:-240}"  # seconds for notebook 05 (10 lecture epochs)
PY="$VENV/bin/python"

die() {
    echo "gpu_check: $*" >&2
    exit 2
}

[ -x "$PY" ] || die "no Python at $PY: create the venv with \`make .venv/.installed-dev\`, or set VENV=<venv folder>."
command -v timeout >/dev/null || die "the \`timeout\` command is missing (GNU coreutils)."

# What PyTorch sees: "<count>\t<name>", or a reason on stderr and exit 1.
if ! gpus="$("$PY" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    build = torch.version.cuda or "none (a CPU-only build)"
    sys.exit(
        f"gpu_check: no CUDA GPU here (torch.cuda.is_available() is False; torch "
        f"{torch.__version__}, CUDA build: {build}). This check runs the GPU paths on an "
        "NVIDIA GPU; run it on a machine with one (and a CUDA build of torch), or run "
        "`make test` for everything a CPU can check."
    )
print(f"{torch.cuda.device_count()}\t{torch.cuda.get_device_name(0)}")
EOF
)"; then
    exit 2
fi
n_gpus="${gpus%%$'\t'*}"
gpu_name="${gpus#*$'\t'}"
echo "gpu_check: ${n_gpus} x ${gpu_name}; logs in ${OUT}/"
mkdir -p "$OUT"

# One row per step: name, status, seconds, figure.
rows=()
failed=0

# run_step NAME LIMIT COMMAND...: run COMMAND with a time limit, its output to OUT/NAME.log
# (and the terminal); prints nothing else. Sets $step_status and $step_seconds.
run_step() {
    local name="$1" limit="$2"
    shift 2
    echo
    echo "=== ${name} (limit ${limit} s): $*"
    local start rc
    start=$(date +%s)
    set +e
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    step_seconds=$(($(date +%s) - start))
    if [ "$rc" -eq 0 ]; then
        step_status="ok"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        step_status="TIMEOUT"
        failed=1
    else
        step_status="FAIL (exit $rc)"
        failed=1
    fi
}

# json_figure FILE EXPRESSION: a figure from a metrics.json (m), or "-" when it cannot be read.
json_figure() {
    "$PY" -c "import json, sys; m = json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null ||
        echo "-"
}

# 1. the doctor, with its probe of both recipes
run_step doctor "$STEP_TIMEOUT" "$PY" -m resnet_lessons doctor
figure="$(grep -o 'lecture recipe: ~[0-9,]* training images/s' "$OUT/doctor.log" | head -1 || true)"
rows+=("doctor|$step_status|$step_seconds|${figure:-see doctor.log}")

# 2. one epoch of the lecture's recipe
run_step lecture_epoch "$STEP_TIMEOUT" "$PY" -m resnet_lessons train --recipe lecture \
    --epochs 1 --device cuda --no-progress --out "$OUT/lecture_epoch"
figure="-"
if [ "$step_status" = ok ]; then
    figure="$(json_figure "$OUT/lecture_epoch/metrics.json" \
        "f\"{m['train_images'] / m['history'][0]['seconds']:,.0f} images/s (epoch {m['history'][0]['seconds']:.1f} s with its test pass), test acc {m['test_acc']:.3f}, {m['speedups']}\"")"
fi
rows+=("lecture recipe, 1 epoch|$step_status|$step_seconds|$figure")

# 3. notebook 05 under nbval
run_step notebook_05 "$NOTEBOOK_TIMEOUT" "$PY" -m pytest -p no:cacheprovider --nbval \
    --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks/05_training.ipynb
figure="$(grep -Eo '[0-9]+ passed[^=]*[^= ]' "$OUT/notebook_05.log" | tail -1 || true)"
rows+=("notebook 05 (nbval)|$step_status|$step_seconds|${figure:--}")

# 4. torchrun with nccl and synchronised batch norm over the GPUs here
if [ "$n_gpus" -ge 2 ]; then
    run_step torchrun_sync_bn "$STEP_TIMEOUT" "$VENV/bin/torchrun" --standalone \
        --nproc_per_node="$n_gpus" -m resnet_lessons train --recipe lecture --epochs 1 \
        --device cuda --sync-bn --no-progress --out "$OUT/torchrun_sync_bn"
    figure="-"
    if [ "$step_status" = ok ]; then
        figure="$(json_figure "$OUT/torchrun_sync_bn/metrics.json" \
            "f\"{m['processes']} processes, {m['backend']}, {m['batch_norm']}, {m['train_images'] / m['history'][0]['seconds']:,.0f} images/s, test acc {m['test_acc']:.3f}\"")"
        case "$figure" in
        *nccl*SyncBatchNorm*) ;;
        *)
            step_status="FAIL (expected nccl and SyncBatchNorm)"
            failed=1
            ;;
        esac
    fi
    rows+=("torchrun nccl --sync-bn|$step_status|$step_seconds|$figure")
else
    echo
    echo "=== torchrun_sync_bn: skipped, it needs 2 or more GPUs and this machine has ${n_gpus}"
    rows+=("torchrun nccl --sync-bn|skipped|0|needs 2+ GPUs, found ${n_gpus}")
fi

echo
echo "gpu_check summary: ${n_gpus} x ${gpu_name}, $("$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")')"
printf '%-26s %-14s %8s  %s\n' step status seconds figure
for row in "${rows[@]}"; do
    IFS='|' read -r name status seconds figure <<<"$row"
    printf '%-26s %-14s %8s  %s\n' "$name" "$status" "$seconds" "$figure"
done
if [ "$failed" -ne 0 ]; then
    echo "gpu_check: a step failed; its log is in ${OUT}/" >&2
    exit 1
fi
