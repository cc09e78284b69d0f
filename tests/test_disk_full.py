"""A full disk and every other OS write error: one line, exit 1, the previous output intact, no
partial file, never a crash of the interpreter.

Two ways to run out of space: a real tmpfs of a few hundred KiB (needs `mount`, i.e. root in a
container; skipped with the reason otherwise) and RLIMIT_FSIZE (always: writes past the limit
fail with EFBIG once SIGXFSZ is ignored), which takes the same error paths. lgdram 0.1 died of
SIGSEGV in `gen-data` (h5py freeing objects of a file HDF5 could not close) and of SIGABRT in
`export --format pt2` (torch's zip writer), and reported a full disk during ONNX export as
'model cannot be exported to ONNX'.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import LGDRAM, assert_one_line_error, checkpoint_metadata, leftovers, tiny_train_args
from lgdram_cli.training import checkpoint as ckpt

GEN = ["gen-data", "--dataset", "cmnist-60", "--set", "digits=mnist-mini"]


def run_limited(args: list[str], fsize: int | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`lgdram ARGS` with files limited to `fsize` bytes (SIGXFSZ ignored: writes fail with EFBIG)."""

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {**os.environ, "LGDRAM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(LGDRAM), *args], capture_output=True, text=True, timeout=timeout, preexec_fn=limit, env=env)


def assert_write_failure(result: subprocess.CompletedProcess, *needles: str, log: bool = False) -> str:
    """Exit 1 with one 'error:' line (after the run's own log lines when `log`), no traceback."""
    assert result.returncode >= 0, f"killed by signal {-result.returncode}:\n{result.stderr}"
    if not log:
        return assert_one_line_error(result.returncode, result.stderr, "cannot", *needles, exit_code=1)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith(("error:", "failed:"))]
    assert errors == [lines[-1]] and lines[-1].startswith("error:"), result.stderr
    for needle in ("cannot", *needles):
        assert needle in lines[-1], f"{needle!r} not in {lines[-1]!r}"
    return lines[-1]


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """`tmpfs(size)`: a folder on a tmpfs of `size` bytes (unmounted afterwards)."""
    mounts: list[Path] = []

    def make(size: int) -> Path:
        folder = tmp_path / f"tmpfs{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'}); RLIMIT_FSIZE tests cover the paths")
        mounts.append(folder)
        return folder

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# ---------------------------------------------------------------- gen-data


def test_gen_data_past_a_file_size_limit_fails_cleanly(tmp_path):
    out = tmp_path / "d.h5"
    result = run_limited([*GEN, "--n", "3000", "--out", str(out)], fsize=200_000)
    line = assert_write_failure(result, str(out), "File too large")
    assert "Traceback" not in result.stderr and "HDF5" not in result.stderr
    assert "nothing half-written" in line
    assert leftovers(tmp_path) == []


def test_gen_data_keeps_the_previous_file_when_the_write_fails(tmp_path):
    out = tmp_path / "d.h5"
    first = run_limited([*GEN, "--n", "50", "--out", str(out)])
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    result = run_limited([*GEN, "--n", "3000", "--seed", "1", "--out", str(out), "--force"], fsize=len(before) + 50_000)
    assert_write_failure(result, "File too large")
    assert out.read_bytes() == before
    assert leftovers(tmp_path) == ["d.h5"]


def test_gen_data_to_a_full_tmpfs(tmpfs):
    """The free space is checked against the estimated size first (exit 2, both named)."""
    folder = tmpfs(2 << 20)
    result = run_limited([*GEN, "--n", "10000", "--out", str(folder / "d.h5")])
    line = assert_one_line_error(result.returncode, result.stderr, "disk space", "MiB free")
    assert "needs about" in line
    assert leftovers(folder) == []


def test_gen_data_when_the_disk_fills_up_mid_write(tmpfs):
    """The estimate fits, then another process takes the rest of the space while the file is
    written: ENOSPC mid-write is exit 1 naming the output, no crash, no temp file left."""
    import time

    folder = tmpfs(4 << 20)
    out = folder / "d.h5"
    env = {**os.environ, "LGDRAM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(LGDRAM), *GEN, "--n", "8000", "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    def writing() -> bool:  # the temp file has its first bytes: the free-space check is behind it
        for p in folder.iterdir():
            try:
                if p.name.startswith(".d.h5.") and p.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                pass
        return False

    while proc.poll() is None and not writing():
        assert time.monotonic() < deadline
        time.sleep(0.002)
    with open(folder / "filler", "wb", buffering=0) as f:  # the rest of the disk, taken by someone else
        try:
            while f.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    stdout, stderr = proc.communicate(timeout=300)
    if proc.returncode == 0:
        pytest.skip("gen-data finished before the disk filled up")
    result = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert_write_failure(result, str(out), "No space left on device")
    assert leftovers(folder) == ["filler"]


# ---------------------------------------------------------------- train


def test_train_that_fills_the_disk_before_its_first_checkpoint(tmp_path):
    """Exit 1 naming the checkpoint; no orphan metrics or spec file, no staged or temp file."""
    out = tmp_path / "run.safetensors"
    result = run_limited(tiny_train_args(out, steps=4, eval_every=2), fsize=60_000)
    line = assert_write_failure(result, "cannot save the checkpoint", "File too large", log=True)
    assert "no checkpoint was written" in line
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_train_on_a_full_tmpfs_keeps_the_last_checkpoint(tmpfs):
    folder = tmpfs(1 << 20)
    out = folder / "run.safetensors"
    first = run_limited(tiny_train_args(out, steps=3, eval_every=3))
    assert first.returncode == 0, first.stderr
    kept = {name: (folder / name).read_bytes() for name in ("run.safetensors", "run.optim.safetensors")}
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - 60_000))
    result = run_limited(tiny_train_args(out, "--resume", steps=6, eval_every=3))
    line = assert_write_failure(result, "No space left on device", log=True)
    assert "last complete checkpoint (step 3) is kept" in line and ".next" not in line
    assert {name: (folder / name).read_bytes() for name in kept} == kept
    assert not [f for f in leftovers(folder) if f.startswith(".")]
    (folder / "filler").unlink()
    again = run_limited(tiny_train_args(out, "--resume", steps=6, eval_every=3))
    assert again.returncode == 0, again.stderr
    assert checkpoint_metadata(out)["lgdram.step"] == "6"


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "folder"])
def test_export_past_a_file_size_limit_fails_cleanly(tiny_run, tmp_path, fmt):
    out = tmp_path / {"pt2": "m.pt2", "onnx": "m.onnx", "folder": "mf"}[fmt]
    result = run_limited(["export", str(tiny_run), "--format", fmt, "--out", str(out)], fsize=20_000)
    line = assert_write_failure(result, str(out), "File too large")
    assert "cannot be exported" not in line
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_export_to_a_full_tmpfs_keeps_the_previous_export(tiny_run, tmpfs):
    folder = tmpfs(256 << 10)
    out = folder / "m.onnx"
    first = run_limited(["export", str(tiny_run), "--format", "onnx", "--out", str(out)])
    assert first.returncode == 0, first.stderr
    before = out.read_bytes()
    result = run_limited(["export", str(tiny_run), "--format", "pt2", "--out", str(folder / "m.pt2")])
    if result.returncode != 0:
        assert_write_failure(result, "No space left on device")
        assert sorted(leftovers(folder)) == ["m.onnx"]
    result = run_limited(["export", str(tiny_run), "--format", "folder", "--out", str(out), "--force"])
    assert_write_failure(result, str(out), "No space left on device")
    assert out.read_bytes() == before


def test_write_errors_are_run_failures_naming_the_output(tmp_path):
    """The mapping every writer goes through: disk full, quota, size limit, read-only, I/O."""
    import errno

    from lgdram_cli.atomic import atomic_path
    from lgdram_cli.errors import RunFailure

    out = tmp_path / "x.bin"
    out.write_text("previous")
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO):
        with pytest.raises(RunFailure, match=f"cannot write {out}: {os.strerror(code)}"):
            with atomic_path(out) as tmp:
                tmp.write_text("half")
                raise OSError(code, os.strerror(code))
        assert out.read_text() == "previous"
    assert leftovers(tmp_path) == ["x.bin"]
    assert ckpt  # (the checkpoint writer goes through atomic_path too: see the train tests)
