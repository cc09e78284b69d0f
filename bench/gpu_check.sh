#!/usr/bin/env bash
# The GPU checks, in one call on a CUDA machine (CI has no GPU; the suite skips these there):
#   bash bench/gpu_check.sh [OUT_DIR]
# 1. tests/test_cuda.py: generation bit-identical to the CPU, retina and models (fused and
#    autograd) equal to the CPU in float64, train/eval/resume on the GPU, torchrun with NCCL;
# 2. bench/bench_gpu.py: ms/step and images/s at batch 32…2048 × M 10, fused vs autograd,
#    one CPU thread of the same machine and the card's matmul rate as references;
# 3. the README's learning run (cmnist-60, annotations 1 %, 3,000 steps) on the GPU, then
#    `lgdram eval` on 1,000 held-out canvases;
# 4. the whole default suite with CUDA present (`--device auto` picks the GPU).
# Where the lgdram wheels and their missing dependencies lie in .whl/ (a machine without
# network), they are installed first. Each phase has its own time limit; all run regardless.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu-check}}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 LGDRAM_THREADS=1
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
fi
LG="$PY -m lgdram_cli"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nproc; } | tee "$OUT/machine.txt"

echo "== 1. CUDA tests"
timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -25

echo "== 2. throughput"
timeout 120 $PY bench/bench_gpu.py --json-out "$OUT/bench_gpu.json" 2>&1 | tail -15

echo "== 3. learning on the GPU"
RUN=/tmp/gpu-learning
mkdir -p $RUN
t0=$(date +%s)
timeout 150 $LG train --dataset cmnist-60 --model ram --annotations 1% --steps 3000 --eval-every 100 \
  --seed 0 --device cuda --out $RUN/annotations-1.safetensors --force 2>&1 | grep -v "^step" | tail -5
echo "train: $(( $(date +%s) - t0 )) s"
cp $RUN/annotations-1.metrics.jsonl "$OUT/" 2>/dev/null
timeout 30 $LG eval $RUN/annotations-1.safetensors --n 1000 --device cuda --json 2>/dev/null | tee "$OUT/annotations-1.eval.json"

echo "== 4. the default suite with CUDA present"
timeout 80 $PY -m pytest -q -x -p no:cacheprovider -n 8 2>&1 | tee "$OUT/suite.log" | tail -15
