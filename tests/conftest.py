"""Shared fixtures: an isolated environment (no user cache, no network) and the offline data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import SHARED_DATA, dead_url
from lgdram_cli.data import sources

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test: a private cache, no $LGDRAM_DATA, and MNIST/Fashion mirrors that refuse.

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


@pytest.fixture
def shared_data() -> Path:
    """The offline MNIST files beside the checkout; skips the test when they are absent."""
    if not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"offline MNIST data not found at {SHARED_DATA}")
    return SHARED_DATA
