#!/usr/bin/env bash
# bf16 against fp32 in learning (issue "training speed", item 1): RAM on cmnist-60 and DRAM on
# cmnist-100, 1 % location annotations, 3 seeds each in both precisions, trained on the 5,000
# real MNIST training digits and tested on the official test split. Each task is one
# `lgdram sweep` over precision=fp32,bf16 (rerunning skips finished runs, resumes the others),
# then `lgdram results`, whose curves overlay the two precisions with their seed spread.
#   bash bench/precision_runs.sh [ram-60] [dram-100]      (default: both)
#   SEEDS=3-5 bash bench/precision_runs.sh dram-100        (more seeds: the committed DRAM
#                                                           figures have seeds 0-5)
# Budget on a 2-core CPU: ~25 core-minutes for ram-60, ~45 for dram-100 (JOBS runs at a time).
source "$(dirname "$0")/runs_common.sh"

task() {  # name recipe steps
  local name=$1 recipe=$2 steps=$3
  $L sweep "experiments/$recipe.toml" --seeds "$SEEDS" --grid "precision=fp32,bf16" --steps "$steps" \
    --set "annotations=1%" --set eval_every=250 --set eval_n=2000 "${DATA[@]}" \
    --jobs "$JOBS" --threads 1 --out "runs/$name"
  mkdir -p docs/results
  $L results "runs/$name" --out "docs/results/$name"
}

TASKS=("$@")
[ ${#TASKS[@]} -eq 0 ] && TASKS=(ram-60 dram-100)
for t in "${TASKS[@]}"; do
  case $t in
    ram-60)   task precision-ram-cmnist-60 ram-cmnist-60 2000 ;;
    dram-100) task precision-dram-cmnist-100 dram-cmnist-100 2500 ;;
    *) echo "unknown task '$t'; tasks: ram-60 dram-100" >&2; exit 2 ;;
  esac
done
