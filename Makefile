# lgdram developer tasks. Everything installs into .venv from the package registries.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, installed deliberately: a bare `torch` requirement pulls several GB
# of CUDA packages on Linux. On a GPU machine: make setup TORCH_SPEC=torch==2.13.0 TORCH_INDEX=...
TORCH_SPEC ?= torch==2.13.0
TORCH_ARGS ?=

.PHONY: setup test test-slow demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile plugins/lgdram-example/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	# the example third-party plugin (its dependency, lgdram, is the editable install above)
	$(BIN)/pip install --quiet --no-deps -e plugins/lgdram-example
	touch $@

## The test suite (default: everything but tests marked slow; < 10 min on 2 cores).
test: setup
	$(BIN)/python -m pytest -q

## The slow tests (real training runs, distributed runs).
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

## The main job on bundled data, offline (a few minutes on 2 CPU cores): generate data,
## train RAM with location guidance on 1% of the images, evaluate, visualise, export.
DEMO_STEPS ?= 400
demo: setup
	mkdir -p out
	$(BIN)/lgdram plugins
	$(BIN)/lgdram gen-data --dataset cmnist-60 --n 1000 --split test --seed 1 --out out/test.h5 --force --preview
	$(BIN)/lgdram train --dataset cmnist-60 --annotations 1% --steps $(DEMO_STEPS) --eval-every 100 \
		--test-data out/test.h5 --out out/demo.safetensors --force
	$(BIN)/lgdram eval out/demo.safetensors --data out/test.h5
	$(BIN)/lgdram visualize out/demo.safetensors --gif
	$(BIN)/lgdram visualize out/demo.safetensors --curves
	$(BIN)/lgdram export out/demo.safetensors --format onnx --out out/demo.onnx --force

bench: setup
	$(BIN)/python bench/bench_gen.py

clean:
	rm -rf $(VENV) out .pytest_cache
