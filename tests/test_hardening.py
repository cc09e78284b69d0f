"""Hardening: crash-consistent run state, integrity of the metadata, one writer per output,
resource guards, damaged metrics, bad input that used to surface as raw exceptions, misleading
messages and leftovers of killed processes. Each test fails on lgdram before these fixes.

Disk-full cases are in test_disk_full.py, downloads in test_download_limits.py, property-based
tests in test_properties.py and the SIGKILL crash tests in test_crash.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from safetensors.torch import save_file

from helpers import (
    LGDRAM,
    assert_one_line_error,
    assert_same_tensors,
    blob_digits,
    checkpoint_metadata,
    checkpoint_tensors,
    leftovers,
    read_jsonl,
    run_cli,
    run_main,
    tiny_train_args,
    write_idx_dir,
)
from lgdram_cli.training import checkpoint as ckpt

GEN = ["gen-data", "--dataset", "cmnist-60", "--set", "digits=mnist-mini", "--n", "20"]


def train_ok(capsys, out: Path, *extra: str, **kw) -> str:
    code, _, err = run_main(tiny_train_args(out, *extra, **kw), capsys)
    assert code == 0, err
    return err


def copy_run(run: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for src in (run, ckpt.optim_path(run), ckpt.metrics_path(run)):
        shutil.copy(src, folder / src.name)
    return folder / run.name


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- 1. crash-consistent run state


def test_the_run_state_is_one_bound_unit(tiny_run):
    """Weights name their optimizer file by SHA-256; both carry the run id; the optimizer file
    names the weights' tensors; the metrics position is recorded; nothing staged is left."""
    weights = checkpoint_metadata(tiny_run)
    optim_file = ckpt.optim_path(tiny_run)
    optim = checkpoint_metadata(optim_file)
    assert weights["lgdram.run_id"] == optim["lgdram.run_id"] and len(weights["lgdram.run_id"]) == 32
    assert weights["lgdram.optim_sha256"] == hashlib.sha256(optim_file.read_bytes()).hexdigest()
    assert optim["lgdram.weights_sha256"] == weights["lgdram.tensors_sha256"]
    assert int(weights["lgdram.metrics_bytes"]) == ckpt.metrics_path(tiny_run).stat().st_size
    assert not [f for f in leftovers(tiny_run.parent) if f.startswith(".")]


@pytest.fixture(scope="module")
def legs(tmp_path_factory) -> dict[str, Path]:
    """A run checkpointed at step 3 (its files kept aside), the same run at step 6, and the
    uninterrupted 9-step run to compare resumed runs with."""
    from lgdram_cli.cli.app import main

    root = tmp_path_factory.mktemp("legs")
    (root / "run").mkdir()
    (root / "straight").mkdir()

    def run(*args: str) -> None:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code in (0, None)

    run(*tiny_train_args(root / "run" / "run.safetensors", steps=3, eval_every=3))
    step3 = root / "step3"
    shutil.copytree(root / "run", step3)
    run(*tiny_train_args(root / "run" / "run.safetensors", "--resume", steps=6, eval_every=3))
    run(*tiny_train_args(root / "straight" / "run.safetensors", steps=9, eval_every=3))
    return {"step3": step3, "step6": root / "run", "straight": root / "straight" / "run.safetensors"}


def crash_state(legs: dict[str, Path], folder: Path, moment: str) -> Path:
    """The files a crash at `moment` of the save at step 6 leaves (after the save at step 3)."""
    folder.mkdir()
    w3, o3 = legs["step3"] / "run.safetensors", legs["step3"] / "run.optim.safetensors"
    w6, o6 = legs["step6"] / "run.safetensors", legs["step6"] / "run.optim.safetensors"
    out = folder / "run.safetensors"
    shutil.copy(legs["step6"] / "run.metrics.jsonl", folder / "run.metrics.jsonl")  # written before the save
    shutil.copy(o3, ckpt.optim_path(out))
    if moment == "optimizer staged":  # died before the weights were written
        shutil.copy(w3, out)
        shutil.copy(o6, ckpt.staged_optim_path(out))
        shutil.copy(w3, ckpt.previous_path(out))
    elif moment == "weights written":  # died before the staged optimizer file was renamed
        shutil.copy(w6, out)
        shutil.copy(o6, ckpt.staged_optim_path(out))
        shutil.copy(w3, ckpt.previous_path(out))
    elif moment == "staged file lost":  # the newest pair is incomplete: the previous one is used
        shutil.copy(w6, out)
        shutil.copy(w3, ckpt.previous_path(out))
    return out


@pytest.mark.parametrize(("moment", "resumed_at"), [("optimizer staged", 3), ("weights written", 6), ("staged file lost", 3)])
def test_a_crash_mid_save_resumes_from_a_complete_pair(legs, tmp_path, capsys, moment, resumed_at):
    """lgdram 0.1 replaced the weights, then the optimizer file: dying between the two left
    '--resume' refusing ('run.optim.safetensors is from step 3, but the checkpoint is at step 6')."""
    out = crash_state(legs, tmp_path / "run", moment)
    err = train_ok(capsys, out, "--resume", steps=9, eval_every=3)
    assert f"at step {resumed_at}" in err
    if moment == "staged file lost":
        assert "previous complete checkpoint (step 3)" in err
    assert_same_tensors(checkpoint_tensors(legs["straight"]), checkpoint_tensors(out))
    assert_same_tensors(checkpoint_tensors(ckpt.optim_path(legs["straight"])), checkpoint_tensors(ckpt.optim_path(out)))
    assert sorted(leftovers(out.parent)) == ["run.metrics.jsonl", "run.optim.safetensors", "run.safetensors", "run.spec.json"]
    evals = [r["step"] for r in read_jsonl(ckpt.metrics_path(out)) if r["kind"] == "eval"]
    assert evals == [3, 6, 9], "the metrics file was cut back to the checkpoint that was resumed"


def test_an_optimizer_file_of_another_run_is_refused(legs, tmp_path, capsys):
    """Same spec, seed and step — identical tensors — but another run: refused, one line."""
    out = copy_run(legs["step6"] / "run.safetensors", tmp_path / "a")
    other = tmp_path / "b" / "run.safetensors"
    other.parent.mkdir()
    train_ok(capsys, other, steps=3, eval_every=3)
    snapshot = lambda: {p.name: p.read_bytes() for p in out.parent.iterdir()}  # noqa: E731
    shutil.copy(ckpt.optim_path(legs["step3"] / "run.safetensors"), ckpt.optim_path(out))
    before = snapshot()
    code, _, err = run_main(tiny_train_args(out, "--resume", steps=9), capsys)
    assert_one_line_error(code, err, "run.optim.safetensors", "step 3", "step 6")
    assert snapshot() == before  # refusals change nothing
    shutil.copy(ckpt.optim_path(other), ckpt.optim_path(out))  # step 3 of another run: still refused
    before = snapshot()
    code, _, err = run_main(tiny_train_args(out, "--resume", steps=9), capsys)
    assert_one_line_error(code, err, "another run")
    assert snapshot() == before


def test_same_step_other_run_is_refused(tmp_path, capsys):
    """Two runs of one spec and seed: bitwise the same tensors, but each optimizer file is bound
    to its own run id (lgdram 0.1 accepted the other's: same step)."""
    a, b = tmp_path / "a" / "run.safetensors", tmp_path / "b" / "run.safetensors"
    a.parent.mkdir()
    b.parent.mkdir()
    train_ok(capsys, a, steps=2, eval_every=0)
    train_ok(capsys, b, steps=2, eval_every=0)
    assert_same_tensors(checkpoint_tensors(ckpt.optim_path(a)), checkpoint_tensors(ckpt.optim_path(b)))
    shutil.copy(ckpt.optim_path(b), ckpt.optim_path(a))
    code, _, err = run_main(tiny_train_args(a, "--resume", steps=3, eval_every=0), capsys)
    assert_one_line_error(code, err, "belongs to another run")


def test_format_1_checkpoints_are_still_read_and_resumed(tiny_run, tmp_path, capsys):
    """A checkpoint of lgdram 0.1 (digest of the tensors only, no run id) still evaluates and resumes."""
    out = copy_run(tiny_run, tmp_path)
    meta = checkpoint_metadata(out)
    tensors = checkpoint_tensors(out)
    old = {k: meta[k] for k in ("lgdram.spec", "lgdram.step", "lgdram.metrics")}
    old.update({"lgdram.format_version": "1", "lgdram.sha256": ckpt.tensor_digest(tensors)})
    save_file(tensors, str(out), metadata=old)
    optim = ckpt.optim_path(out)
    ometa = checkpoint_metadata(optim)
    save_file(checkpoint_tensors(optim), str(optim), metadata={
        "lgdram.format_version": "1", "lgdram.step": ometa["lgdram.step"], "lgdram.param_groups": ometa["lgdram.param_groups"]})
    code, _, err = run_main(["eval", str(out), "--threads", "1"], capsys)
    assert code == 0, err
    train_ok(capsys, out, "--resume", steps=7, eval_every=0)
    assert checkpoint_metadata(out)["lgdram.format_version"] == "2"


# ---------------------------------------------------------------- 2. integrity over the metadata


@pytest.fixture
def edited_run(tiny_run, tmp_path) -> Path:
    """The tiny run with `lgdram.spec` edited to 2 glimpses (the model has 3) and left unsealed."""
    out = copy_run(tiny_run, tmp_path / "run")
    meta = checkpoint_metadata(out)
    spec = json.loads(meta["lgdram.spec"])
    spec["model"]["glimpses"] = 2
    save_file(checkpoint_tensors(out), str(out), metadata={**meta, "lgdram.spec": json.dumps(spec, sort_keys=True)})
    return out


def test_an_edited_spec_is_refused_by_every_reader(edited_run, tmp_path, capsys):
    """lgdram 0.1 checked the tensors only: `eval` quietly evaluated 2 glimpses."""
    commands = [
        ["eval", str(edited_run)],
        ["visualize", str(edited_run), "--gif", "--out", str(tmp_path / "g.gif")],
        ["export", str(edited_run), "--format", "folder", "--out", str(tmp_path / "m")],
        tiny_train_args(edited_run, "--resume", steps=8),
    ]
    for args in commands:
        code, _, err = run_main(args, capsys)
        assert_one_line_error(code, err, edited_run.name, "was edited", "--allow-edited")
    assert not (tmp_path / "g.gif").exists() and not (tmp_path / "m").exists()


def test_allow_edited_uses_it_with_a_warning(edited_run, tmp_path, capsys):
    code, stdout, err = run_main(["eval", str(edited_run), "--json", "--allow-edited", "--threads", "1"], capsys)
    assert code == 0, err
    assert "warning:" in err and "was edited" in err
    assert len(json.loads(stdout)["per_glimpse_accuracy"]) == 2  # what the user asked for, knowingly
    other = edited_run.with_name("other.safetensors")  # (each warning is shown once per process)
    shutil.copy(edited_run, other)
    code, _, err = run_main(["export", str(other), "--format", "folder", "--out", str(tmp_path / "m"), "--allow-edited"], capsys)
    assert code == 0 and "was edited" in err, err
    third = edited_run.with_name("third.safetensors")
    shutil.copy(edited_run, third)
    code, _, err = run_main(["visualize", str(third), "--png", "--n", "2", "--out", str(tmp_path / "g.png"), "--allow-edited"], capsys)
    assert code == 0 and "was edited" in err, err
    # train --resume: the run continues with the spec it was given (2 glimpses), sealed anew
    code, _, err = run_main(["train", "--out", str(edited_run), "--resume", "--allow-edited", "--steps", "7", "--threads", "1"], capsys)
    assert code == 0, err
    assert json.loads(checkpoint_metadata(edited_run)["lgdram.spec"])["model"]["glimpses"] == 2
    code, _, err = run_main(["eval", str(edited_run), "--threads", "1"], capsys)
    assert code == 0, err


# ---------------------------------------------------------------- 3. one writer per output


def test_a_second_writer_of_the_same_output_is_refused(tiny_run, tmp_path, capsys):
    """lgdram 0.1: two trains to the same --out both exited 0 with interleaved metrics."""
    from lgdram_cli.locking import lock_path, output_lock

    out = tmp_path / "run.safetensors"
    with output_lock(out) as held:
        assert held == lock_path(out) and held.read_text().strip() == str(os.getpid())
        code, _, err = run_main(tiny_train_args(out, steps=2), capsys)
        assert_one_line_error(code, err, str(out), f"pid {os.getpid()}")
    assert not lock_path(out).exists()
    assert leftovers(tmp_path) == []
    for args, target in (
        ([*GEN, "--out", str(tmp_path / "d.h5")], tmp_path / "d.h5"),
        (["export", str(tiny_run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")], tmp_path / "m.onnx"),
    ):
        with output_lock(target):
            code, _, err = run_main(args, capsys)
            assert_one_line_error(code, err, "is being written by another lgdram process", f"pid {os.getpid()}")
        assert not target.exists()


def test_two_trains_at_once_in_real_processes(tmp_path):
    out = tmp_path / "run.safetensors"
    env = {**os.environ, "LGDRAM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([str(LGDRAM), *tiny_train_args(out, steps=100000, eval_every=0)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        lock = out.with_name(out.name + ".lock")
        while not (lock.exists() and ckpt.metrics_path(out).exists()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = run_cli(*tiny_train_args(out, "--force", steps=2))
        assert_one_line_error(second.returncode, second.stderr, f"pid {first.pid}")
        assert ckpt.metrics_path(out).exists() and ckpt.metrics_path(out).with_name("run.spec.json").exists(), \
            "the refused train removed files of the running one"
    finally:
        first.kill()
        first.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    lock = out.with_name(out.name + ".lock")
    lock.write_text(f"{dead_pid()}\n")  # what kill -9 leaves
    train_ok(capsys, out, steps=1, eval_every=0)
    assert not lock.exists()


# ---------------------------------------------------------------- 5. resource guards


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        ([*GEN, "--set", "canvas=100000"], ["100000×100000", "TiB of memory"]),
        ([*GEN, "--set", "distractors=100000"], ["100000 distractors", "GiB of memory"]),
        (["train", "--dataset", "cmnist-60", "--set", "canvas=100000", "--steps", "1"], ["training with batch 32"]),
        (["train", "--dataset", "cmnist-60", "--batch-size", "100000", "--mc", "100", "--steps", "1"], ["batch 100000 × mc 100"]),
    ],
)
def test_what_cannot_fit_in_memory_is_refused_before_allocating(tmp_path, args, needles):
    """lgdram 0.1 tried: an allocator error after minutes, or the kernel's OOM killer. The
    subprocess runs with a 4 GB address-space limit, so a missing guard fails fast here."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    out = tmp_path / ("d.h5" if args[0] == "gen-data" else "run.safetensors")
    result = subprocess.run(
        [str(LGDRAM), *args, "--out", str(out)], capture_output=True, text=True, timeout=120, preexec_fn=limit,
        env={**os.environ, "LGDRAM_THREADS": "1", "LGDRAM_MEMORY_LIMIT": "3G", "LGDRAM_MNIST_MIRRORS": "http://127.0.0.1:9/"},
    )
    line = assert_one_line_error(result.returncode, result.stderr, "needs about", "more than the 3.0 GiB available", *needles)
    assert "use a smaller" in line
    assert leftovers(tmp_path) == []


def test_eval_n_beyond_memory_is_refused(tiny_run, capsys, monkeypatch):
    monkeypatch.setenv("LGDRAM_MEMORY_LIMIT", "1G")
    code, _, err = run_main(["eval", str(tiny_run), "--n", str(10**9)], capsys)
    assert_one_line_error(code, err, "eval --n", "1000000000 canvases", "memory")


@pytest.fixture
def huge_h5(tmp_path) -> Path:
    """A tiny file that declares 10^12 samples (chunked datasets, nothing written)."""
    from lgdram_cli.data.h5io import FIELDS

    path = tmp_path / "huge.h5"
    n = 10**12
    with h5py.File(path, "w") as f:
        for name, (dtype, tail) in FIELDS.items():
            shape = (n, 1, 60, 60) if name == "images" else (n, *tail)
            f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1, *shape[1:]))
        f.attrs["lgdram.format"] = "lgdram-canvas"
        f.attrs["lgdram.format_version"] = 1
        f.attrs["lgdram.spec"] = json.dumps({"dataset": {"type": "cmnist", "digits": "mnist-mini"}})
    assert path.stat().st_size < 1 << 20
    return path


def test_a_file_declaring_a_trillion_samples_is_refused(huge_h5, tiny_run, tmp_path, capsys):
    code, _, err = run_main(["eval", str(tiny_run), "--data", str(huge_h5)], capsys)
    assert_one_line_error(code, err, "huge.h5", "1,000,000,000,000 rows", "memory")
    code, _, err = run_main(["train", "--data", str(huge_h5), "--steps", "1", "--out", str(tmp_path / "r.safetensors")], capsys)
    assert_one_line_error(code, err, "huge.h5", "annotated mask", "memory")


def test_spec_files_are_size_limited_and_yaml_aliases_refused(tmp_path, capsys):
    """A 530-byte YAML 'billion laughs' expanded to 3.5 GB in lgdram 0.1."""
    bomb = tmp_path / "bomb.yaml"
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb.write_text("\n".join(lines) + "\n")
    assert len(bomb.read_bytes()) < 600
    started = time.monotonic()
    code, _, err = run_main(["gen-data", "--spec", str(bomb), "--n", "2", "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, err, "bomb.yaml", "aliases")
    assert time.monotonic() - started < 10
    big = tmp_path / "big.json"
    big.write_text('{"n": 2, "pad": "' + "x" * (1 << 20) + '"}')
    code, _, err = run_main(["gen-data", "--spec", str(big), "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, err, "big.json", "at most 1,048,576 (1.0 MiB)")
    plain = tmp_path / "ok.yaml"  # anchors are the only YAML refused
    plain.write_text("dataset:\n  type: cmnist\n  digits: mnist-mini\nn: 3\n")
    code, _, err = run_main(["gen-data", "--spec", str(plain), "--out", str(tmp_path / "d.h5")], capsys)
    assert code == 0, err


# ---------------------------------------------------------------- 7. an unwritable cache


def test_an_unwritable_cache_falls_back_to_mnist_mini(tmp_path, capsys, monkeypatch):
    """lgdram 0.1: 'failed: FileNotFoundError: /proc/x', exit 1, instead of the fallback."""
    monkeypatch.setenv("XDG_CACHE_HOME", "/proc/x")
    code, _, err = run_main(["gen-data", "--dataset", "cmnist-60", "--n", "20", "--out", str(tmp_path / "d.h5")], capsys)
    assert code == 0, err
    assert "warning:" in err and "mnist-mini" in err and "/proc/x" in err
    # a ~/.cache that cannot hold a folder (a file in its place: what a read-only one does for root too)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".cache").write_text("not a folder")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(home))
    code, _, err = run_main(["gen-data", "--dataset", "cmnist-60", "--n", "20", "--out", str(tmp_path / "e.h5"), "--force"], capsys)
    assert code == 0, err
    assert "mnist-mini" in err


def test_a_read_only_cache_mount_falls_back(tmp_path, capsys, monkeypatch):
    cache = tmp_path / "ro-cache"
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(cache)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
        code, _, err = run_main(["gen-data", "--dataset", "cmnist-60", "--n", "20", "--out", str(tmp_path / "d.h5")], capsys)
        assert code == 0, err
        assert "mnist-mini" in err and "Read-only file system" in err
    finally:
        subprocess.run(["umount", str(cache)], check=False)


# ---------------------------------------------------------------- 8. a damaged metrics file


def test_a_metrics_file_cut_mid_line_resumes_with_a_warning(tiny_run, tmp_path, capsys):
    """lgdram 0.1: --resume stopped with a bare JSONDecodeError."""
    out = copy_run(tiny_run, tmp_path)
    metrics = ckpt.metrics_path(out)
    good = metrics.read_bytes()
    metrics.write_bytes(good[:-25])  # the last record cut mid-line (a copy or a disk that lost the end)
    err = train_ok(capsys, out, "--resume", steps=8, eval_every=4)
    assert "warning:" in err and "cut short" in err and "run.metrics.jsonl" in err
    records = read_jsonl(metrics)  # every line whole again
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 8]


def test_a_line_cut_by_a_kill_after_the_checkpoint_is_dropped(tiny_run, tmp_path, capsys):
    """A run killed while writing a record past its last checkpoint: the checkpoint records how
    much of the metrics file it had seen, and the resumed run continues from there."""
    out = copy_run(tiny_run, tmp_path)
    metrics = ckpt.metrics_path(out)
    good = metrics.read_bytes()
    metrics.write_bytes(good + b'{"kind": "train", "step": 7, "loss/to')
    train_ok(capsys, out, "--resume", steps=8, eval_every=4)
    assert metrics.read_bytes().startswith(good)
    assert [r["step"] for r in read_jsonl(metrics)][-2:] == [8, 8]


def test_damage_inside_the_metrics_file_is_one_line_naming_it(tiny_run, tmp_path, capsys):
    out = copy_run(tiny_run, tmp_path)
    metrics = ckpt.metrics_path(out)
    lines = metrics.read_text().splitlines()
    lines[1] = lines[1][:10]
    metrics.write_text("\n".join(lines) + "\n")
    # a file shorter than the recorded position: read as it is, damage and all
    code, _, err = run_main(tiny_train_args(out, "--resume", steps=8), capsys)
    assert_one_line_error(code, err, str(metrics), "line 2")


# ---------------------------------------------------------------- 9. raw exceptions for bad input


def canvas_file(tmp_path: Path, name: str = "d.h5", n: int = 20) -> Path:
    from lgdram_cli.data.gen import GenDataSpec, generate_file

    path = tmp_path / name
    generate_file(GenDataSpec(dataset={"type": "cmnist", "digits": "mnist-mini"}, n=n), path)
    return path


def edit_h5(path: Path, edit) -> Path:
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda f: f["labels"].__setitem__(slice(3, 4), 99), ["label 99 at row 3", "0…9"]),
        (lambda f: f["labels"].__setitem__(slice(0, 1), -3), ["label -3 at row 0"]),
        (lambda f: f["centers"].__setitem__(slice(5, 6), np.nan), ["'centers' at row 5", "not finite"]),
        (lambda f: f.attrs.__setitem__("lgdram.spec", "{not json"), ["'lgdram.spec' attribute is not a JSON object"]),
        (lambda f: f.attrs.__setitem__("lgdram.classes", "many"), ["'lgdram.classes'"]),
    ],
    ids=["label-99", "label-minus-3", "nan-centre", "spec-not-json", "classes-not-a-number"],
)
def test_bad_values_in_an_hdf5_file_are_one_line_naming_it(tiny_run, tmp_path, capsys, edit, needles):
    """lgdram 0.1: IndexError (labels), 'training diverged' (NaN centres), JSONDecodeError (spec), exit 1."""
    bad = edit_h5(canvas_file(tmp_path), edit)
    out = tmp_path / "out" / "run.safetensors"
    out.parent.mkdir()
    code, _, err = run_main(tiny_train_args(out, "--data", str(bad), "--annotations", "100%", steps=3, eval_every=0), capsys)
    assert_one_line_error(code, err, "d.h5", *needles)
    assert leftovers(out.parent) == []
    if "label" in needles[0] or "centers" in needles[0]:
        code, _, err = run_main(["eval", str(tiny_run), "--data", str(bad)], capsys)
        assert_one_line_error(code, err, "d.h5", *needles)


def test_an_empty_hdf5_file_is_one_line(tiny_run, tmp_path, capsys):
    """N = 0: lgdram 0.1 crashed (ZeroDivisionError in eval, randint in training)."""
    from lgdram_cli.data.h5io import FIELDS

    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        for name, (dtype, tail) in FIELDS.items():
            f.create_dataset(name, shape=(0, 1, 60, 60) if name == "images" else (0, *tail), dtype=dtype)
        f.attrs["lgdram.format"] = "lgdram-canvas"
        f.attrs["lgdram.format_version"] = 1
    code, _, err = run_main(["eval", str(tiny_run), "--data", str(path)], capsys)
    assert_one_line_error(code, err, "empty.h5", "no samples")


@pytest.mark.parametrize(
    ("train", "needles"),
    [
        ((np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8)), ["train-images", "holds no images"]),
        ((blob_digits(20, 80, 0)[0], np.full(20, 200, np.uint8)), ["train-labels", "label 200", "0…9"]),
    ],
    ids=["zero-images", "label-200"],
)
def test_bad_idx_digit_sources_are_one_line_naming_the_file(tmp_path, capsys, train, needles):
    """lgdram 0.1: zero images crashed in the generator; label 200 was blamed on the dataset plugin."""
    directory = write_idx_dir(tmp_path / "digits", train, blob_digits(10, 90, 1))
    code, _, err = run_main(["gen-data", "--dataset", "cmnist-60", "--set", f"digits=idx:{directory}", "--n", "4",
                             "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "d.h5").exists()


def test_raw_exceptions_of_lgdram_0_1_are_now_one_line(tmp_path, capsys, monkeypatch):
    """Each used to end in 'failed: <Exception>' with exit 1."""
    not_utf8 = tmp_path / "spec.json"
    not_utf8.write_bytes(b"\xff\xfe{}")
    code, _, err = run_main(["gen-data", "--spec", str(not_utf8), "--n", "2", "--out", str(tmp_path / "a.h5")], capsys)
    assert_one_line_error(code, err, "spec.json", "not UTF-8")

    long_name = tmp_path / ("a" * 300 + ".h5")
    code, _, err = run_main([*GEN, "--out", str(long_name)], capsys)
    assert_one_line_error(code, err, "File name too long")

    deep = Path("/tmp") / "/".join(["b" * 200] * 25) / "x.h5"
    code, _, err = run_main([*GEN, "--out", str(deep)], capsys)
    assert_one_line_error(code, err, "too long", "x.h5")

    code, _, err = run_main([*GEN, "--out", "/proc/x.h5"], capsys)
    line = assert_one_line_error(code, err, "/proc/x.h5", "takes no new files")
    assert ".x.h5." not in line, "the message names the hidden temp file"

    monkeypatch.setenv("LGDRAM_THREADS", "abc")
    code, _, err = run_main([*GEN, "--out", str(tmp_path / "b.h5")], capsys)
    assert_one_line_error(code, err, "$LGDRAM_THREADS='abc'")
    assert leftovers(tmp_path) == ["spec.json"]


# ---------------------------------------------------------------- 10. misleading messages


def test_divergence_before_the_first_checkpoint_says_none_was_written(tmp_path, capsys):
    """lgdram 0.1 said 'the last good checkpoint run.safetensors is kept' when there was none."""
    out = tmp_path / "run.safetensors"
    code, _, err = run_main(tiny_train_args(out, "--set", "optim.lr=1e30", "--set", "optim.clip=1e30", steps=6, eval_every=0), capsys)
    line = [x for x in err.splitlines() if x.strip()][-1]
    assert code == 1 and "diverged at step" in line, err
    assert "no checkpoint was written" in line and "is kept" not in line
    assert leftovers(tmp_path) == [], "a run without a checkpoint leaves no metrics or spec file"


def test_divergence_after_a_checkpoint_names_its_step(tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    code, _, err = run_main(tiny_train_args(out, "--set", "optim.lr=1e30", "--set", "optim.clip=1e30", steps=6, eval_every=1), capsys)
    assert code == 1
    step = checkpoint_metadata(out)["lgdram.step"]
    assert f"the last good checkpoint {out} (step {step}) is kept" in err


# ---------------------------------------------------------------- 11. leftovers of killed processes


def kill_when(args: list[str], ready, timeout: float = 60) -> None:
    proc = subprocess.Popen([str(LGDRAM), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "LGDRAM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_temp_files_of_killed_processes_are_removed_by_the_next_write(tiny_run, tmp_path, capsys):
    """kill -9 mid-write left `.d.h5.*.h5` (and `.mf.*/`, …) that no later run removed."""
    kill_when([*GEN[:-1], "200000", "--out", str(tmp_path / "d.h5")], lambda: bool(hidden(tmp_path)))
    stale = hidden(tmp_path)
    assert stale and ".lgdram-" in stale[0]
    folder_temp = tmp_path / f".mf.lgdram-{__import__('lgdram_cli.atomic', fromlist=['x']).host_tag()}-{dead_pid()}-abcd1234"
    folder_temp.mkdir()
    (folder_temp / "model.safetensors").write_bytes(b"half")
    alive = tmp_path / f".m.onnx.lgdram-{__import__('lgdram_cli.atomic', fromlist=['x']).host_tag()}-{os.getppid()}-abcd1234.onnx"
    alive.write_bytes(b"another live process's write")
    code, _, err = run_main([*GEN, "--out", str(tmp_path / "e.h5")], capsys)
    assert code == 0, err
    assert hidden(tmp_path) == [alive.name], "only the temp files of dead processes are removed"
    assert not (tmp_path / "d.h5").exists() and (tmp_path / "d.h5.lock").exists()
    # the killed writer's lock is taken over (and removed) by the next gen-data to that output
    code, _, err = run_main([*GEN, "--out", str(tmp_path / "d.h5")], capsys)
    assert code == 0, err
    assert not (tmp_path / "d.h5.lock").exists()
