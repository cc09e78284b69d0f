#!/usr/bin/env bash
# The runs behind docs/results.md, on CPU: every row with 3 seeds, trained on the 5,000 real
# MNIST training digits of ../shared/data/mnist-5k and tested on canvases built from the
# official MNIST test split (../shared/data/mnist). Each row is one `lgdram sweep` (one run
# per core, one thread each; rerunning skips finished runs and resumes interrupted ones),
# followed by `lgdram results`, which writes the row's table (.md, .csv, .json) and curves.
#   bash bench/results_runs.sh [ROW ...]      rows: ram-60 ldram-100 headline mcmnist-100
#                                              mcmnist-200 baselines (default: all, in that order)
# Time per run on a 2-core AMD EPYC (Zen 4) with both cores busy, one thread each, bf16:
# RAM cmnist-60 ~5 min; DRAM cmnist-100 / mcmnist-100 / mcmnist-200 ~10 min; fc ~30 s;
# cnn cmnist-60 ~7 min, cnn cmnist-100 ~27 min. The fp32 headline (2 cells x 3 seeds x 30,000
# updates) took ~9 core-hours. Everything else: ~7 core-hours in bf16.
# JOBS (default 2) runs at a time. A row of 3 runs on 2 cores leaves one core idle for its
# last run: run two rows at once with JOBS=1 each, e.g.
#   JOBS=1 bash bench/results_runs.sh baselines &  JOBS=1 bash bench/results_runs.sh mcmnist-100
# or split one row's runs between processes with `lgdram sweep ... --only 0-7` / `--only 8-14`
# (the same arguments as below; concurrent sweeps of one folder are safe), then
# `lgdram results`. PRECISION (default bf16) is the 10,000-update rows' precision: bf16 learns
# as fp32 does here (bench/precision_runs.sh, docs/performance.md) at 0.56-0.58 of the step time.
# The headline pair and the cmnist-100 DRAM 10,000-update row (the headline's recipe) run in
# fp32: it runs on every CPU (bf16 is refused without bf16 instructions, and a sweep never
# mixes specs), and the two rows of one recipe compare directly. On a 2-core AMD EPYC without
# AVX-512 (AVX2 only), both cores busy, fp32 DRAM takes ~285 ms/step: ~48 min per 10k run.
source "$(dirname "$0")/runs_common.sh"
OUT=runs
RESULTS=docs/results

PRECISION=${PRECISION:-bf16}

row() {  # name recipe steps precision grid...   (precision "": the recipe's, fp32)
  local name=$1 recipe=$2 steps=$3 precision=$4
  shift 4
  local grid=() sets=()
  for g in "$@"; do grid+=(--grid "$g"); done
  [ -n "$precision" ] && sets+=(--precision "$precision")
  $L sweep "experiments/$recipe.toml" --seeds "$SEEDS" "${grid[@]}" --steps "$steps" "${DATA[@]}" \
    ${sets[@]+"${sets[@]}"} \
    --jobs "$JOBS" --threads 1 --seeds-first --out "$OUT/$name"
  mkdir -p "$RESULTS"
  $L results "$OUT/$name" --out "$RESULTS/$name"
}

ROWS=("$@")
[ ${#ROWS[@]} -eq 0 ] && ROWS=(ram-60 ldram-100 headline mcmnist-100 mcmnist-200 baselines)
for r in "${ROWS[@]}"; do
  case $r in
    ram-60)      row ram-cmnist-60 ram-cmnist-60 10000 "$PRECISION" "annotations=0,1%,100%" ;;
    ldram-100)   row dram-cmnist-100-10k ldram-cmnist-100 10000 "" "annotations=0,1%,5%,100%,100" ;;
    headline)    row ldram-cmnist-100 ldram-cmnist-100 30000 "" "annotations=1%,0" ;;
    mcmnist-100) row ldram-mcmnist-100 ldram-mcmnist-100 10000 "$PRECISION" "annotations=0,1%" ;;
    mcmnist-200) row ldram-mcmnist-200 ldram-mcmnist-200 10000 "$PRECISION" "annotations=0,100%" ;;
    baselines)
      for m in fc cnn; do for s in 60 100; do row "$m-cmnist-$s" "$m-cmnist-$s" 10000 "$PRECISION"; done; done ;;
    *) echo "unknown row '$r'; rows: ram-60 ldram-100 headline mcmnist-100 mcmnist-200 baselines" >&2; exit 2 ;;
  esac
done
