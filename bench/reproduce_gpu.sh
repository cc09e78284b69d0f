#!/usr/bin/env bash
# The seed's whole table at the seed's budgets on one GPU machine: L-DRAM rows 30,000 updates,
# RAM rows 60,000, DRAM rows 100,000; 3 seeds each; several runs packed per GPU (PACK
# processes per device, `lgdram sweep --gpus N --jobs N*PACK`). Same data protocol as
# bench/results_runs.sh (5,000 training digits, official test split). Results go to
# docs/results/gpu-<row>.* through `lgdram results`.
#   bash bench/reproduce_gpu.sh            (GPUS: devices to use, default: all; PACK, default 8)
# Not yet run: no GPU machine was lent while this script was written (see docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LGDRAM:-lgdram}
GPUS=${GPUS:-$(python -c 'import torch; print(torch.cuda.device_count())')}
PACK=${PACK:-8}
SEEDS=${SEEDS:-0-2}
[ "$GPUS" -ge 1 ] || { echo "no CUDA device: this script is for a GPU machine" >&2; exit 2; }
DATA=(--set "dataset.digits=idx:../shared/data/mnist-5k" --set "dataset.test_digits=idx:../shared/data/mnist")

row() {  # name recipe steps grid...
  local name=$1 recipe=$2 steps=$3
  shift 3
  local grid=()
  for g in "$@"; do grid+=(--grid "$g"); done
  $L sweep "experiments/$recipe.toml" --seeds "$SEEDS" "${grid[@]}" --steps "$steps" "${DATA[@]}" \
    --gpus "$GPUS" --jobs $((GPUS * PACK)) --out "runs/gpu/$name"
  $L results "runs/gpu/$name" --out "docs/results/gpu-$name"
}

row ram-cmnist-60 ram-cmnist-60 60000
row dram-cmnist-60 dram-cmnist-60 100000
row ram-cmnist-100 ram-cmnist-100 60000 "model.glimpses=8"
row dram-cmnist-100 dram-cmnist-100 100000 "model.glimpses=6,8"
row ldram-cmnist-100 ldram-cmnist-100 30000 "annotations=0,1%,5%,10%,25%,50%,100"
row ldram-mcmnist-200 ldram-mcmnist-200 30000 "annotations=0,100%"
