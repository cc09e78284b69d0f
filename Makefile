# lgdram developer tasks. Everything installs into .venv from the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, installed deliberately: a bare `torch` requirement pulls several GB
# of CUDA packages on Linux. On a GPU machine: make setup TORCH_SPEC=torch==2.13.0 TORCH_INDEX=...
TORCH_SPEC ?= torch==2.13.0
TORCH_ARGS ?=

.PHONY: setup lint test test-slow demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile plugins/lgdram-example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# the example third-party plugin (its dependency, lgdram, is the editable install above)
	$(BIN)/pip install --quiet --no-deps -e plugins/lgdram-example
	touch $@

## The dependency graph: pyproject's [tool.importlinter] contracts (layers cli → export → viz →
## training → contract → losses → models → data; see docs/development.md).
lint: setup
	$(BIN)/lint-imports

## The test suite (default: everything but tests marked slow; 6–15 min on 2 cores, by CPU).
test: setup
	$(BIN)/python -m pytest -q

## The slow tests (real training runs, distributed runs).
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

## The tool's point in ~3 minutes on 2 CPU cores, offline: RAM on cmnist-60 with location
## annotations on 1 % of the training images against none (plain REINFORCE), the two runs side
## by side (one per core), then their overlaid learning curves and where the 1 % model looks.
DEMO_STEPS ?= 1200
DEMO_ARGS = --dataset cmnist-60 --steps $(DEMO_STEPS) --eval-every 200 --eval-n 500 \
	--set dataset.digits=mnist-mini --threads 1 --force
demo: setup
	mkdir -p out
	$(BIN)/lgdram train $(DEMO_ARGS) --annotations 1% --out out/demo-1pct > out/demo-1pct.log 2>&1 & \
	$(BIN)/lgdram train $(DEMO_ARGS) --annotations 0 --out out/demo-0 > out/demo-0.log 2>&1; \
	status=$$?; wait $$! || status=$$?; \
	for run in demo-1pct demo-0; do echo "== $$run"; grep "^eval" out/$$run.log; done; exit $$status
	$(BIN)/lgdram visualize out/demo-0 out/demo-1pct --curves --out out/demo-curves.png
	$(BIN)/lgdram visualize out/demo-1pct --gif --n 9 --out out/demo-glimpses.gif
	@echo "curves: out/demo-curves.png   glimpses: out/demo-glimpses.gif   runs: out/demo-1pct, out/demo-0"

bench: setup
	$(BIN)/python bench/bench_gen.py

clean:
	rm -rf $(VENV) out .pytest_cache
