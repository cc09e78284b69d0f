"""`lgdram train` under torchrun: two CPU processes (gloo), one writer (rank 0).

torchrun runs Python files or modules, not console scripts, so the launch is
`torchrun --nproc-per-node 2 --standalone -m lgdram_cli train ...`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import (
    assert_same_tensors,
    checkpoint_metadata,
    checkpoint_tensors,
    leftovers,
    read_jsonl,
    run_main,
    tiny_train_args,
    torchrun,
    train_cli,
)
from lgdram_cli.training import checkpoint as ckpt

# Real torchrun launches (a minute in all): part of `make test-slow`, which CI runs too.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("ddp") / "run.safetensors"
    result = torchrun(*tiny_train_args(out, "--set", "log_every=1", "--json", steps=4, eval_every=2))
    return out, result


def test_ddp_two_processes_train_and_rank0_writes_one_checkpoint(ddp_run):
    out, result = ddp_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    files = leftovers(out.parent)
    assert files == ["run.metrics.jsonl", "run.optim.safetensors", "run.safetensors", "run.spec.json"], files
    meta = checkpoint_metadata(out)
    assert meta["lgdram.step"] == "4"
    assert ckpt.load_checkpoint(out).step == 4
    assert result.stderr.count("spec: ") == 1  # only rank 0 logs the spec


def test_ddp_metrics_lines_are_not_duplicated(ddp_run):
    out, result = ddp_run
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(ckpt.metrics_path(out))
    train = [r["step"] for r in records if r["kind"] == "train"]
    evals = [r["step"] for r in records if r["kind"] == "eval"]
    assert train == [1, 2, 3, 4]  # --set log_every=1: one line per step, once
    assert evals == [2, 4]
    last = [r for r in records if r["kind"] == "train"][-1]
    # throughput counts both processes: batch 4 x mc 2 x world 2 per step
    assert last["images_per_s"] > 0


def test_ddp_checkpoint_loads_in_eval(ddp_run, capsys):
    out, result = ddp_run
    assert result.returncode == 0, result.stderr[-3000:]
    code, stdout, err = run_main(["eval", str(out), "--json", "--threads", "1"], capsys)
    assert code == 0, err
    evaluated = json.loads(stdout)
    recorded = json.loads(checkpoint_metadata(out)["lgdram.metrics"])
    assert evaluated["accuracy"] == recorded["accuracy"]
    assert evaluated["location_error_px"] == recorded["location_error_px"]


def test_ddp_json_is_printed_once(ddp_run):
    """`--json` under torchrun: one JSON document on stdout (rank 0's), not one per rank."""
    out, result = ddp_run
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout.strip()
    document, end = json.JSONDecoder().raw_decode(text)
    assert text[end:].strip() == "", f"more than one JSON document on stdout:\n{result.stdout}"
    assert document["step"] == 4 and "accuracy" in document


@pytest.fixture(scope="module")
def ddp_resumed(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """A 2-process run of 2 steps, resumed (2 processes again) to 4."""
    out = tmp_path_factory.mktemp("ddp-resume") / "run.safetensors"
    first = torchrun(*tiny_train_args(out, steps=2, eval_every=2))
    second = torchrun(*tiny_train_args(out, "--resume", steps=4, eval_every=2)) if first.returncode == 0 else None
    return out, first, second


def test_ddp_resume(ddp_resumed):
    out, first, second = ddp_resumed
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    assert checkpoint_metadata(out)["lgdram.step"] == "4"
    assert [r["step"] for r in read_jsonl(ckpt.metrics_path(out)) if r["kind"] == "eval"] == [2, 4]
    assert leftovers(out.parent) == ["run.metrics.jsonl", "run.optim.safetensors", "run.safetensors", "run.spec.json"]


def test_ddp_only_rank0_reports_the_result(ddp_resumed):
    """The final 'saved run.safetensors: test accuracy …' line comes once, from rank 0
    (the other rank has no evaluation and must not print 'accuracy nan')."""
    out, first, second = ddp_resumed
    for result in (first, second):
        assert result is not None and result.returncode == 0
        saved = [line for line in result.stderr.splitlines() if line.startswith("saved ")]
        assert len(saved) == 1, saved
        assert "nan" not in saved[0]


def test_one_process_under_torchrun_joins_the_group_and_matches_a_plain_run(tmp_path):
    """`--nproc-per-node 1` runs the N-process path (process group, DDP) and, averaging over a
    world of one, ends with exactly the weights of the same run without torchrun."""
    ddp, plain = tmp_path / "ddp" / "run.safetensors", tmp_path / "plain" / "run.safetensors"
    ddp.parent.mkdir()
    plain.parent.mkdir()
    result = torchrun(*tiny_train_args(ddp, steps=3, eval_every=3), nproc=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed: 1 process(es), backend gloo" in result.stderr
    train_cli(plain, steps=3, eval_every=3)
    assert_same_tensors(checkpoint_tensors(ddp), checkpoint_tensors(plain))
