"""The example plugin passes lgdram's conformance kit and works with every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from PIL import Image

from lgdram.testing import check_dataset, check_loss, check_model
from lgdram_example.datasets import DigitSumTask

LGDRAM = [sys.executable, "-m", "lgdram_cli"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*LGDRAM, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_dataset_conforms():
    assert "stream slicing (start=k equals a slice)" in check_dataset("sum-mnist")


def test_model_conforms():
    passed = check_model("ram-ln", {"glimpses": 3, "hidden": 32, "glimpse_hidden": 16})
    assert "every parameter gets a finite gradient" in passed
    assert "ONNX export matches (other batch size)" in passed


def test_loss_conforms():
    assert "finite value (without annotations)" in check_loss("box-hinge")


def test_sum_labels_and_box_cover_both_digits():
    task = DigitSumTask(DigitSumTask.Config(digits="mnist-mini"))
    batch = task.generate(64, "test", 0)
    assert batch.images.shape == (64, 1, 60, 80)
    assert int(batch.labels.max()) <= 18 and int(batch.labels.min()) >= 0
    # the union box spans both halves: from the left half into the right half
    assert (batch.boxes[:, 0] < 40).all() and (batch.boxes[:, 2] > 40).all()
    # all ink (no distractors) lies inside the box
    for i in range(8):
        x0, y0, x1, y1 = batch.boxes[i].int().tolist()
        assert batch.images[i, 0, y0:y1, x0:x1].sum() == batch.images[i].sum()


def test_box_hinge_is_zero_inside_and_grows_outside():
    from lgdram.plugin_api import LossBatch, ModelOutput
    from lgdram_example.losses import BoxHingeLoss

    loss = BoxHingeLoss()
    boxes = torch.tensor([[20.0, 20.0, 40.0, 40.0]])  # centre of a 60x60 canvas: [-1/3, 1/3]
    def value(x: float) -> float:
        means = torch.tensor([[[x, 0.0]]], requires_grad=True)
        out = ModelOutput(logits=torch.zeros(1, 10), means=means)
        b = LossBatch(torch.zeros(1, dtype=torch.long), torch.zeros(1, 2), torch.ones(1, dtype=torch.bool),
                      boxes=boxes, size=(60, 60))
        return float(loss(out, b, 0).value.detach())
    assert value(0.0) == 0.0 and value(0.3) == 0.0
    assert 0 < value(0.5) < value(0.9)


@pytest.mark.slow
def test_end_to_end_with_every_command(tmp_path):
    plugins = json.loads(run("plugins", "--json", cwd=tmp_path).stdout)
    mine = {(e["kind"], e["name"]) for e in plugins["entries"] if e["distribution"] == "lgdram-example"}
    assert mine == {("dataset", "sum-mnist"), ("model", "ram-ln"), ("loss", "box-hinge")}

    r = run("gen-data", "--dataset", "sum-mnist", "--set", "digits=mnist-mini", "--n", "40",
            "--split", "test", "--seed", "3", "--out", "sums.h5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "sums.h5") as f:
        assert f["images"].shape == (40, 1, 60, 80)
        assert json.loads(f.attrs["lgdram.spec"])["dataset"]["type"] == "sum-mnist"

    r = run("train", "--dataset", "sum-mnist", "--set", "dataset.digits=mnist-mini", "--model", "ram-ln",
            "--set", "model.glimpses=3", "--set", "model.hidden=32", "--set", "model.glimpse_hidden=16",
            "--set", "loss.box-hinge.weight=1", "--annotations", "50%", "--steps", "6", "--batch-size", "4",
            "--mc", "2", "--eval-n", "20", "--threads", "1", "--out", "run.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (tmp_path / "run.metrics.jsonl").read_text().splitlines()]
    assert any("loss/box-hinge" in x for x in lines if x["kind"] == "train")

    r = run("eval", "run.safetensors", "--data", "sums.h5", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 40

    r = run("visualize", "run.safetensors", "--gif", "--n", "4", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "run.glimpses.gif").n_frames == 3

    r = run("export", "run.safetensors", "--format", "onnx", "--out", "run.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run.onnx").stat().st_size > 0
