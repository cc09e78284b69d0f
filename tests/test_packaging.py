"""The release artefacts: `python -m build` makes an sdist and a wheel that pass `twine check`,
carry the presets, experiment recipes and bundled digits, and declare what the documented
install needs (ONNX export and curves work without extras)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_twine_check_passes(dist: Path) -> None:
    files = sorted(map(str, dist.iterdir()))
    assert any(f.endswith(".whl") for f in files) and any(f.endswith(".tar.gz") for f in files)
    done = subprocess.run([sys.executable, "-m", "twine", "check", *files], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_wheel_contents_and_metadata(dist: Path) -> None:
    import lgdram

    (wheel,) = dist.glob("*.whl")
    assert f"-{lgdram.__version__}-" in wheel.name  # one version source: pyproject → metadata → lgdram.__version__
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "lgdram_cli/presets/cmnist-60.toml" in names
    assert "lgdram_cli/experiments/ldram-cmnist-100.toml" in names
    assert any(n.startswith("lgdram_cli/data/mnist_mini/") for n in names)
    assert "lgdram/__init__.py" in names
    for dep in ("matplotlib", "onnx", "tensorboard", "torch"):
        assert f"Requires-Dist: {dep}" in metadata, dep
    for group in ("lgdram.datasets", "lgdram.models", "lgdram.losses", "lgdram.loggers"):
        assert f"[{group}]" in entry_points
    assert "lgdram = lgdram_cli.cli.app:main" in entry_points


def test_sdist_leaves_out_run_state_and_published_checkpoints(dist: Path) -> None:
    """The sdist builds lgdram; the trained checkpoints and run folders stay in the repository."""
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as t:
        names = t.getnames()
    assert any(n.endswith("/src/lgdram_cli/__init__.py") for n in names)
    assert not [n for n in names if "/checkpoints/" in n or "/runs/" in n or n.endswith(".safetensors")]
