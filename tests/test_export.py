"""`lgdram export`: ONNX (checked in onnxruntime), torch.export programs, self-describing folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_one_line_error, checkpoint_metadata, checkpoint_tensors, assert_same_tensors, leftovers, run_main
from lgdram_cli.training.runs import load_run

BATCH = 5  # the export example has 2 images: check a different batch size


def export(capsys, run: Path, fmt: str, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(["export", str(run), "--format", fmt, "--out", str(out), "--threads", "1", *extra], capsys)


def export_ok(capsys, run: Path, fmt: str, out: Path, *extra: str) -> Path:
    code, _, err = export(capsys, run, fmt, out, *extra)
    assert code == 0, err
    assert out.exists()
    return out


def inputs(run_path: Path, n: int = BATCH) -> torch.Tensor:
    """Real test canvases (first half) and uniform noise (second half), float in [0, 1]."""
    run = load_run(run_path)
    canvases = run.generator.generate(n, "test", 7).images.float() / 255
    noise = torch.rand(canvases.shape, generator=torch.Generator().manual_seed(1))
    half = n // 2
    return torch.cat([canvases[: n - half], noise[:half]])


@torch.no_grad()
def reference(run_path: Path, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The PyTorch model's deterministic forward: (logits, locations [N, T, 2] or [N, 0, 2])."""
    model = load_run(run_path).model
    out = model(x, deterministic=True)
    locations = out.locations if out.locations is not None else x.new_zeros(x.shape[0], 0, 2)
    return out.logits.numpy(), locations.numpy()


def run_onnx(path: Path, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits", "locations"]
    assert [i.name for i in session.get_inputs()] == ["images"]
    logits, locations = session.run(None, {"images": x.numpy()})
    return logits, locations


# ---------------------------------------------------------------- ONNX


@pytest.mark.parametrize("name", ["ram", "dram", "fc"])
def test_onnx_matches_the_pytorch_model_at_another_batch_size(trained, tmp_path, capsys, name):
    run = trained(name)
    onnx_path = export_ok(capsys, run, "onnx", tmp_path / "model.onnx")
    x = inputs(run)
    logits, locations = run_onnx(onnx_path, x)
    want_logits, want_locations = reference(run, x)
    assert logits.shape == (BATCH, 10)
    assert np.abs(logits - want_logits).max() < 1e-4
    if name == "fc":
        assert locations.shape == (BATCH, 0, 2)  # a whole-image model takes no glimpses
    else:
        assert locations.shape == (BATCH, 3, 2)
        assert np.abs(locations - want_locations).max() < 1e-4
    # batch 1 too (the smallest)
    one_logits, _ = run_onnx(onnx_path, x[:1])
    assert np.abs(one_logits - want_logits[:1]).max() < 1e-4
    assert leftovers(tmp_path) == ["model.onnx"]


# ---------------------------------------------------------------- torch.export


@pytest.mark.parametrize("name", ["ram", "dram", "fc"])
def test_pt2_program_matches_the_pytorch_model(trained, tmp_path, capsys, name):
    run = trained(name)
    pt2 = export_ok(capsys, run, "pt2", tmp_path / "model.pt2")
    program = torch.export.load(str(pt2))
    x = inputs(run)
    logits, locations = program.module()(x)
    want_logits, want_locations = reference(run, x)
    assert np.abs(logits.detach().numpy() - want_logits).max() < 1e-4
    assert tuple(locations.shape) == want_locations.shape == ((BATCH, 0, 2) if name == "fc" else (BATCH, 3, 2))
    if want_locations.size:
        assert np.abs(locations.detach().numpy() - want_locations).max() < 1e-4
    assert leftovers(tmp_path) == ["model.pt2"]


# ---------------------------------------------------------------- folder


def test_folder_export(tiny_run, tmp_path, capsys):
    folder = export_ok(capsys, tiny_run, "folder", tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "sample.gif"]
    # config.json is the checkpoint's resolved spec
    spec = json.loads(checkpoint_metadata(tiny_run)["lgdram.spec"])
    assert json.loads((folder / "config.json").read_text()) == spec
    # model.safetensors: same tensors and metadata, loadable by `lgdram eval` with the same result
    assert_same_tensors(checkpoint_tensors(tiny_run), checkpoint_tensors(folder / "model.safetensors"))
    meta = checkpoint_metadata(folder / "model.safetensors")
    original = checkpoint_metadata(tiny_run)
    for key in ("lgdram.spec", "lgdram.step", "lgdram.tensors_sha256", "lgdram.format_version"):
        assert meta[key] == original[key], key
    code, stdout, err = run_main(["eval", str(folder / "model.safetensors"), "--json", "--threads", "1"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == json.loads(original["lgdram.metrics"])["accuracy"]
    # the model card
    card = (folder / "README.md").read_text()
    accuracy = json.loads(original["lgdram.metrics"])["accuracy"]
    assert f"{100 * accuracy:.2f} %" in card
    assert "training steps | 6" in card
    assert "annotations" in card and "0.00 %" in card
    assert "ram" in card and "cmnist" in card and "sample.gif" in card
    # the sample GIF: one frame per glimpse
    with Image.open(folder / "sample.gif") as gif:
        assert gif.n_frames == 3
    assert leftovers(tmp_path) == [f"model/{n}" for n in ("README.md", "config.json", "model.safetensors", "sample.gif")]


def test_folder_export_of_a_whole_image_model(trained, tmp_path, capsys):
    folder = export_ok(capsys, trained("fc"), "folder", tmp_path / "model")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["README.md", "config.json", "model.safetensors"]  # nothing to animate
    assert "sample.gif" not in (folder / "README.md").read_text()
    assert "n/a" in (folder / "README.md").read_text()  # no location error


# ---------------------------------------------------------------- refusals and --force


@pytest.mark.parametrize("fmt", ["onnx", "pt2", "folder"])
def test_existing_output_needs_force(tiny_run, tmp_path, capsys, fmt):
    out = tmp_path / "out"
    if fmt == "folder":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    else:
        out.write_text("mine")
    before = leftovers(tmp_path)
    code, _, err = export(capsys, tiny_run, fmt, out)
    assert_one_line_error(code, err, "already exists", "--force")
    assert leftovers(tmp_path) == before
    assert ((out / "keep.txt") if fmt == "folder" else out).read_text() == "mine"


def test_force_replaces(tiny_run, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    export_ok(capsys, tiny_run, "folder", out, "--force")
    assert not (out / "old.txt").exists() and (out / "config.json").is_file()
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_text("old")
    export_ok(capsys, tiny_run, "onnx", onnx_path, "--force")
    assert onnx_path.read_bytes() != b"old"
    assert not [f for f in leftovers(tmp_path) if Path(f).name.startswith(".")]


def test_unknown_format_suggests_the_closest(tiny_run, tmp_path, capsys):
    code, _, err = export(capsys, tiny_run, "onx", tmp_path / "m.onnx")
    assert_one_line_error(code, err, "unknown export format 'onx'", "did you mean 'onnx'", "folder", "pt2")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("which", "needle"),
    [("missing-checkpoint", "not found"), ("missing-folder", "does not exist")],
)
def test_export_bad_paths(tiny_run, tmp_path, capsys, which, needle):
    if which == "missing-checkpoint":
        code, _, err = export(capsys, tmp_path / "nope.safetensors", "onnx", tmp_path / "m.onnx")
    else:
        code, _, err = export(capsys, tiny_run, "onnx", tmp_path / "no" / "m.onnx")
    assert_one_line_error(code, err, needle)
    assert leftovers(tmp_path) == []


def test_export_needs_format_and_out(tiny_run, capsys):
    code, _, err = run_main(["export", str(tiny_run), "--format", "onnx"], capsys)
    assert_one_line_error(code, err, "--out")
