# Shared by the scripts that train rows of results (results_runs.sh, precision_runs.sh): the
# data protocol and the knobs, in one place. Sourced, not run.
#   LGDRAM (default lgdram), JOBS (runs at a time, default 2), SEEDS (default 0-2)
# Protocol: train on the 5,000 real MNIST training digits of ../shared/data/mnist-5k, test on
# canvases built from the official MNIST test split (../shared/data/mnist).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
L=${LGDRAM:-lgdram}
JOBS=${JOBS:-2}
SEEDS=${SEEDS:-0-2}
DATA=(--set "dataset.digits=idx:../shared/data/mnist-5k" --set "dataset.test_digits=idx:../shared/data/mnist")
