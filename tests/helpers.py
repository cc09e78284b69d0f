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
TORCHRUN = Path(sys.executable).parent / "torchrun"

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


def torchrun(*args: str, nproc: int = 2, timeout: float = 120, env: dict[str, str] | None = None):
    """`torchrun --standalone -m lgdram_cli ARGS` in a subprocess, with `env` (default: this
    process's) less any launcher variables; skips the test where torchrun is not installed.
    (torchrun runs Python files or modules, not console scripts.)"""
    if not TORCHRUN.is_file():
        pytest.skip("torchrun not installed beside the interpreter")
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1", LGDRAM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return subprocess.run(
        [str(TORCHRUN), "--nproc-per-node", str(nproc), "--standalone", "-m", "lgdram_cli", *args],
        env=env, capture_output=True, text=True, timeout=timeout,
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


# ---------------------------------------------------------------- tiny training runs

#: A RAM small enough that a few steps take well under a second on one CPU thread.
TINY_MODEL = ("--model", "ram", "--set", "model.hidden=32", "--set", "model.glimpse_hidden=16", "--set", "model.glimpses=3")
#: Data, batch and evaluation settings of every tiny run (bundled digits: offline, fast).
TINY_RUN = (
    "--dataset", "cmnist-60", "--set", "dataset.digits=mnist-mini",
    "--batch-size", "4", "--mc", "2", "--eval-n", "20", "--threads", "1",
)


def tiny_train_args(out: Path, *extra: str, steps: int = 6, eval_every: int = 3, model: tuple[str, ...] = TINY_MODEL) -> list[str]:
    """`lgdram train` arguments of a tiny run writing `out` (extra arguments last: they win)."""
    return [
        "train", "--out", str(out), *TINY_RUN, *model,
        "--steps", str(steps), "--eval-every", str(eval_every), *extra,
    ]


def offline_env(cache: Path) -> dict[str, str]:
    """The isolated environment of `conftest.isolated_env`, for session-scoped subprocesses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LGDRAM_")}
    env.update(
        XDG_CACHE_HOME=str(cache), LGDRAM_MNIST_MIRRORS=dead_url(), LGDRAM_FASHION_MIRRORS=dead_url(),
        LGDRAM_THREADS="1", OMP_NUM_THREADS="1", LGDRAM_DEVICE="cpu",
    )
    return env


def train_cli(out: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 180, **kw) -> subprocess.CompletedProcess:
    """A tiny `lgdram train` in a subprocess; fails the test (with its stderr) unless it exits 0."""
    args = tiny_train_args(out, *extra, **kw)
    if env is None:
        result = run_cli(*args, timeout=timeout)
    else:
        result = subprocess.run([str(LGDRAM), *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    return result


def checkpoint_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def checkpoint_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def read_jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_same_tensors(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


def interrupt_when(args: list[str], started, cwd: Path | None = None, env: dict[str, str] | None = None,
                   timeout: float = 60) -> tuple[int, str]:
    """Run `lgdram ARGS`, send Ctrl-C (SIGINT) once `started()` is true; (exit code, stderr)."""
    import signal
    import time

    proc = subprocess.Popen(
        [str(LGDRAM), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "LGDRAM_THREADS": "1", "OMP_NUM_THREADS": "1", **(env or {})},
        preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + timeout
        while not started():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the command never reached the point to interrupt"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, stderr


def default_sigint() -> None:
    """preexec_fn for subprocesses that tests interrupt: a shell running the suite in the
    background starts it with SIGINT ignored, and Python keeps an inherited SIG_IGN, so restore
    the default disposition (the child then installs its KeyboardInterrupt handler)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def python_blocks(text: str) -> list[str]:
    """The ```python blocks of a Markdown text, in order."""
    import re

    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def run_doc_blocks(blocks: list[tuple[str, str]], name: str) -> tuple[dict, float]:
    """Run documentation examples ((label, code) pairs) in one namespace, as a reader would,
    restoring torch's thread count; returns the namespace and the seconds they took."""
    import time

    import torch

    namespace: dict = {"__name__": name}
    threads = torch.get_num_threads()
    started = time.perf_counter()
    try:
        for label, block in blocks:
            exec(compile(block, label, "exec"), namespace)
    finally:
        torch.set_num_threads(threads)
    return namespace, time.perf_counter() - started
