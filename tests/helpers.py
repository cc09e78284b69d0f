"""Helpers shared by the test modules: CLI runners, error-contract checks, synthetic IDX data."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lgdram_cli.data import idx, sources

REPO = Path(__file__).resolve().parents[1]
#: Offline data shared beside the checkout (the CI clone has ../shared next to it).
SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
LGDRAM = Path(sys.executable).parent / "lgdram"

BUILTIN_DATASETS = ("cmnist", "mcmnist", "mnist", "translated")
PRESETS = ("cmnist-100", "cmnist-60", "mcmnist-100", "mcmnist-200", "mnist", "translated-60")


def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused, instantly)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# ---------------------------------------------------------------- CLI runners


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120):
    """Run the installed `lgdram` console script in a subprocess (the environment is inherited)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("LGDRAM_THREADS", "1")
    return subprocess.run(
        [str(LGDRAM), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def run_main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run `lgdram_cli.cli.app.main(args)` in-process: (exit code, stdout, stderr)."""
    from lgdram_cli.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), captured.out, captured.err


def assert_one_line_error(code: int, stderr: str, *needles: str, exit_code: int = 2) -> str:
    """The bad-input contract: exit 2, exactly one stderr line starting 'error:', no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == exit_code, f"exit {code}, stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def leftovers(directory: Path) -> list[str]:
    """Every file in `directory` (recursively), hidden temp files included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# ---------------------------------------------------------------- synthetic digit sources


def blob_digits(n: int, value: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` synthetic 28×28 'digits': random rectangles whose ink is exactly `value`."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        y0, x0 = rng.integers(0, 14, size=2)
        h, w = rng.integers(6, 14, size=2)
        images[i, y0 : y0 + h, x0 : x0 + w] = value
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


def write_idx_dir(
    directory: Path,
    train: tuple[np.ndarray, np.ndarray] | None,
    test: tuple[np.ndarray, np.ndarray] | None,
    *,
    gz: bool = True,
) -> Path:
    """A directory in MNIST naming (`train-*`, `t10k-*`), usable as `idx:DIR`."""
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, pair in (("train", train), ("test", test)):
        if pair is None:
            continue
        image_name, label_name = sources.FILES[split]
        images, labels = pair
        idx.write_atomic(directory / (image_name.removesuffix(".gz") + suffix), idx.encode_images(images))
        idx.write_atomic(directory / (label_name.removesuffix(".gz") + suffix), idx.encode_labels(labels))
    return directory


def gz_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
