"""Shared fixtures: an isolated environment (no user cache, no network) and the offline data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers import SHARED_DATA, TINY_MODEL, dead_url, offline_env, train_cli
from lgdram_cli.data import sources

torch.set_num_threads(1)
# The suite checks the CPU contracts (bitwise resume, seeds) even where a GPU is present, in
# module- and session-scoped fixtures too; tests/test_cuda.py asks for the GPU explicitly.
os.environ["LGDRAM_DEVICE"] = "cpu"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test: a private cache, no $LGDRAM_DATA, the CPU, and MNIST/Fashion mirrors that refuse.

    So nothing reads or writes the user's cache and nothing reaches the internet: `mnist`
    falls back to the bundled `mnist-mini` unless a test serves files itself.
    """
    cache = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("LGDRAM_DATA", raising=False)
    monkeypatch.delenv("LGDRAM_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("LGDRAM_DEBUG", raising=False)
    monkeypatch.delenv("LGDRAM_THREADS", raising=False)
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", dead_url())
    monkeypatch.setenv("LGDRAM_FASHION_MIRRORS", dead_url())
    sources._load_cached.cache_clear()
    yield cache
    sources._load_cached.cache_clear()


@pytest.fixture(autouse=True)
def inprocess_registrations():
    """`lgdram.register` calls (the docs' examples, tests) do not outlive their test."""
    from lgdram_cli.registry import REGISTRIES

    saved = [dict(r._local) for r in REGISTRIES]
    yield
    for registry, local in zip(REGISTRIES, saved):
        registry._local.clear()
        registry._local.update(local)


@pytest.fixture
def shared_data() -> Path:
    """The offline MNIST files beside the checkout; skips the test when they are absent."""
    if not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"offline MNIST data not found at {SHARED_DATA}")
    return SHARED_DATA


# ---------------------------------------------------------------- trained runs shared by modules

#: name → the model arguments of the session's shared tiny runs.
TRAINED = {
    "ram": TINY_MODEL,
    "dram": ("--model", "dram", *TINY_MODEL[2:]),
    # a whole-image classifier trains with the classification term only (a spec file's loss
    # table replaces the default one)
    "fc": ("--model", "fc", "--set", "model.width=32", "--spec", "{root}/classification-only.json"),
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """`trained(name)` → path of a tiny run's checkpoint (6 steps, evaluated at 3 and 6), trained
    once per session in a subprocess. Read-only: copy it before changing anything."""
    root = tmp_path_factory.mktemp("trained")
    env = offline_env(root / "cache")
    (root / "classification-only.json").write_text('{"loss": {"classification": {}}}')
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            out = root / name / "run.safetensors"
            out.parent.mkdir()
            train_cli(out, env=env, model=tuple(a.format(root=root) for a in TRAINED[name]))
            done[name] = out
        return done[name]

    return get


@pytest.fixture(scope="session")
def tiny_run(trained) -> Path:
    """The shared tiny RAM run (run.safetensors, run.optim.safetensors, run.metrics.jsonl)."""
    return trained("ram")
