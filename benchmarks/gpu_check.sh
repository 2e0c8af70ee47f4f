#!/usr/bin/env bash
# GPU readiness check (issue 10), <= 8 minutes wall on one GPU. Run from the repository root:
#     bash benchmarks/gpu_check.sh [DATA_ROOT]  > results/throughput/gpu_check.txt 2>&1
# 1. train-form / deploy-form images/s on the GPU against timm (benchmarks/throughput.py: bf16 autocast, channels_last;
#    then once more with torch.compile), 224 px, batch 128;
# 2. one short training of the full recipe (ghostnetv3 preset, 224 px, batch 128, the device-resident batched data
#    path, KD teacher included) on a class-balanced subset;
# 3. what `gv3lite reproduce --budget full` would cost, extrapolated from the measured train-step images/s of every
#    model in its plan (benchmarks/full_cost.py).
# Every step has its own time limit so that the whole script stays under 8 minutes; a step that runs out says so.
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}   # a Python with this package installed (make install); override with PY=...
DATA=${1:-${GV3LITE_DATA:-../shared/data/imagenette2-224}}
OUT=${OUT:-results/throughput}
RUN_DIR=$(mktemp -d)                     # the short training's run directory: never inside the repository
trap 'rm -rf "$RUN_DIR"' EXIT
step() { local limit=$1; shift; echo; echo "=== [$(date -u +%H:%M:%S)] $* (limit ${limit}s)"; timeout "$limit" "$@" \
         || echo "!!! step exited with status $? (124 = ran out of its ${limit}s)"; }

echo "gpu_check: commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), data $DATA"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi not found"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible to torch'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1

step 90  $PY benchmarks/throughput.py --device cuda --model ghostnetv3_050 --img-size 224 --batch-size 128 \
         --repeats 10 --threads 8 --per-class 50 --loader-batches 20 --data "$DATA" --out "$OUT"
step 60  $PY benchmarks/throughput.py --device cuda --model ghostnetv3_100 --img-size 224 --batch-size 128 \
         --repeats 10 --threads 8 --cases train_step,eval_train_form,eval_deploy_form,eval_deploy_vs_train --out "$OUT"
step 120 $PY benchmarks/throughput.py --device cuda --compile --model ghostnetv3_050 --img-size 224 \
         --batch-size 128 --repeats 10 --threads 8 --cases train_step,eval_deploy_form --out "$OUT"
step 120 $PY -m gv3lite.cli train --preset ghostnetv3 --device cuda --data "$DATA" --out "$RUN_DIR/short" \
         --img-size 224 --batch-size 128 --epochs 2 --images-per-class-train 100 --images-per-class-val 20
step 90  $PY benchmarks/full_cost.py --device cuda --budget full --steps 12 --out "$OUT/full_cost_cuda.json"
echo; echo "gpu_check done at $(date -u +%H:%M:%S)"
