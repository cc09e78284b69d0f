import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user cache, no network: MNIST falls back to lgdram's bundled digits."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LGDRAM_DATA", raising=False)
    monkeypatch.delenv("LGDRAM_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", "http://127.0.0.1:9/")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
