#!/usr/bin/env bash
# The GPU checks, in one call on a CUDA machine (CI has no GPU; the suite skips these there):
#   [PHASES="tests bench learn suite"] bash bench/gpu_check.sh [OUT_DIR]
# tests  tests/test_cuda.py: generation bit-identical to the CPU, retina and models (fused and
#        autograd) equal to the CPU in float64, train/eval/resume on the GPU, torchrun + NCCL;
# bench  bench/bench_gpu.py: ms/step and images/s at batch 32…2048 × M 10, fused vs autograd,
#        one CPU thread of the same machine and the card's matmul rate as references;
# base   the same benchmark for an older lgdram wheel in .whl/base/ (an A/B on one machine);
# learn  the README's learning run (cmnist-60, annotations 1 %, 3,000 steps) on the GPU, then
#        `lgdram eval` on 1,000 held-out canvases;
# suite  the whole default suite on that machine (it runs on the CPU there too, see conftest).
# Where the lgdram wheels and their missing dependencies lie in .whl/ (a machine without
# network), they are installed first. Each phase has its own time limit; all run regardless.
set -uo pipefail
OUT=${1:-${OUT:-/tmp/gpu-check}}
PHASES=${PHASES:-tests bench learn suite}
BATCHES=${BATCHES:-32 128 512 2048}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 LGDRAM_THREADS=1
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
fi
LG="$PY -m lgdram_cli"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nproc; } | tee "$OUT/machine.txt"
has() { [[ " $PHASES " == *" $1 "* ]]; }

if has tests; then
  echo "== CUDA tests"
  timeout 180 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -25
fi
if has bench; then
  echo "== throughput"
  # shellcheck disable=SC2086
  timeout 120 $PY bench/bench_gpu.py --batches $BATCHES --json-out "$OUT/bench_gpu.json" 2>&1 | tail -15
fi
if has base && ls .whl/base/*.whl >/dev/null 2>&1; then
  echo "== throughput of the baseline wheel (.whl/base)"
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/base .whl/base/*.whl || exit 1
  # shellcheck disable=SC2086
  PYTHONPATH=/tmp/base timeout 120 $PY bench/bench_gpu.py --batches $BATCHES --json-out "$OUT/bench_gpu_base.json" 2>&1 | tail -12
fi
if has learn; then
  echo "== learning on the GPU"
  RUN=/tmp/gpu-learning
  mkdir -p $RUN
  t0=$(date +%s)
  timeout 150 $LG train --dataset cmnist-60 --model ram --annotations 1% --steps 3000 --eval-every 100 \
    --seed 0 --device cuda --out $RUN/annotations-1.safetensors --force 2>&1 | grep -v "^step" | tail -5
  echo "train: $(( $(date +%s) - t0 )) s"
  cp $RUN/annotations-1.metrics.jsonl "$OUT/" 2>/dev/null
  timeout 30 $LG eval $RUN/annotations-1.safetensors --n 1000 --device cuda --json 2>/dev/null | tee "$OUT/annotations-1.eval.json"
fi
if has suite; then
  echo "== the default suite"
  timeout 150 $PY -m pytest -q -p no:cacheprovider -n 8 2>&1 | tee "$OUT/suite.log" | tail -15
fi
