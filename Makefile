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

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

## The test suite (default: everything but tests marked slow; < 10 min on 2 cores).
test: setup
	$(BIN)/python -m pytest -q

## The slow tests (real training runs, distributed runs).
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

## The main job on bundled data, offline: generate data, then show it.
demo: setup
	mkdir -p out
	$(BIN)/lgdram plugins
	$(BIN)/lgdram gen-data --dataset mcmnist-100 --n 1000 --split train --seed 0 --out out/train.h5 --force
	$(BIN)/lgdram gen-data --dataset mcmnist-100 --n 500 --split test --seed 1 --out out/test.h5 --force

bench: setup
	$(BIN)/python bench/bench_gen.py

clean:
	rm -rf $(VENV) out .pytest_cache
