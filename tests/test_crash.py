"""Crash tests that really kill: `lgdram train --set checkpoint_every=1` is sent SIGKILL at random
moments — mid-step, mid-save, mid-resume — and restarted with `--resume` each time, until it
finishes. It must end with the weights and optimizer state of an uninterrupted run, a metrics
file whose records are each written once, and no leftover temp, staged or lock file.

A handful of kills in the default suite; `-m slow` runs 60.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import LGDRAM, assert_same_tensors, checkpoint_tensors, leftovers, read_jsonl, tiny_train_args
from lgdram_cli.training import checkpoint as ckpt

STEPS = 40
SLOW_STEPS = 600
#: a tiny, fast run that checkpoints after every step (every save is a window for a kill)
FAST = ("--set", "checkpoint_every=1", "--set", "log_every=4", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8")


def args(out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return tiny_train_args(out, *FAST, *extra, steps=steps, eval_every=10)


def env() -> dict[str, str]:
    return {**os.environ, "LGDRAM_THREADS": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`reference(steps)`: the uninterrupted run of that many steps (made once)."""
    made: dict[int, Path] = {}

    def get(steps: int) -> Path:
        if steps not in made:
            out = tmp_path_factory.mktemp("straight") / "run.safetensors"
            result = subprocess.run([str(LGDRAM), *args(out, steps=steps)], env=env(), capture_output=True, text=True,
                                    timeout=900)
            assert result.returncode == 0, result.stderr
            made[steps] = out
        return made[steps]

    return get


def kill_and_resume(out: Path, kills: int, seed: int, steps: int = STEPS) -> list[int | None]:
    """Start (or resume) the run, SIGKILL it at a random moment once it trains, `kills` times;
    then let it finish. Returns where each kill landed (the checkpoint step after it)."""
    rng = random.Random(seed)
    landed = []
    done = 0
    while True:
        command = [str(LGDRAM), *args(out, *(["--resume"] if out.exists() else []), steps=steps)]
        proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done >= kills:
            _, stderr = proc.communicate(timeout=900)
            assert proc.returncode == 0, f"the final resume failed (exit {proc.returncode}):\n{stderr}"
            return landed
        # wait until this process trains (its lock is taken), then kill it a random moment later
        lock = out.with_name(out.name + ".lock")
        deadline = time.monotonic() + 120
        while proc.poll() is None and not (lock.exists() and lock.read_text().strip() == str(proc.pid)):
            assert time.monotonic() < deadline, "the run never started training"
            time.sleep(0.005)
        if proc.poll() is not None:  # finished before it was killed: the run is done
            _, stderr = proc.communicate()
            assert proc.returncode == 0, stderr
            return landed
        time.sleep(rng.uniform(0.0, 0.35))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        done += 1
        landed.append(ckpt._step_of(out))


def check_finished(out: Path, reference: Path) -> None:
    assert_same_tensors(checkpoint_tensors(reference), checkpoint_tensors(out))
    assert_same_tensors(checkpoint_tensors(ckpt.optim_path(reference)), checkpoint_tensors(ckpt.optim_path(out)))
    assert sorted(leftovers(out.parent)) == ["run.metrics.jsonl", "run.optim.safetensors", "run.safetensors", "run.spec.json"]
    records = read_jsonl(ckpt.metrics_path(out))
    for kind in ("train", "eval"):
        steps = [r["step"] for r in records if r["kind"] == kind]
        expected = [r["step"] for r in read_jsonl(ckpt.metrics_path(reference)) if r["kind"] == kind]
        assert steps == expected, f"{kind} records: {steps}"
    evals = [r for r in records if r["kind"] == "eval"]
    reference_evals = [r for r in read_jsonl(ckpt.metrics_path(reference)) if r["kind"] == "eval"]
    assert [r["accuracy"] for r in evals] == [r["accuracy"] for r in reference_evals]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(reference, tmp_path):
    out = tmp_path / "run.safetensors"
    kill_and_resume(out, kills=4, seed=1)
    check_finished(out, reference(STEPS))


@pytest.mark.slow
def test_sixty_random_sigkills(reference, tmp_path):
    out = tmp_path / "run.safetensors"
    landed = kill_and_resume(out, kills=60, seed=2, steps=SLOW_STEPS)
    check_finished(out, reference(SLOW_STEPS))
    assert len(landed) >= 50, f"only {len(landed)} kills landed before the run finished"
