"""Checkpoints and `lgdram eval`: reproducing the recorded metrics, evaluation options, every
kind of damaged or foreign checkpoint (exit 2, one line, no traceback), and `--resume` refusals.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import (
    assert_one_line_error,
    checkpoint_metadata,
    checkpoint_tensors,
    run_main,
    tiny_train_args,
)
from lgdram_cli.training import checkpoint as ckpt


def eval_main(capsys, *args: str) -> tuple[int, str, str]:
    return run_main(["eval", *args, "--threads", "1"], capsys)


def eval_json(capsys, *args: str) -> dict:
    code, stdout, err = eval_main(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(stdout)


def copy_run(run: Path, folder: Path, *, optim: bool = True, metrics: bool = True) -> Path:
    """A writable copy of a run (checkpoint + optimizer file + metrics) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(run, folder / run.name)
    if optim:
        shutil.copy(ckpt.optim_path(run), folder / ckpt.optim_path(run).name)
    if metrics:
        shutil.copy(ckpt.metrics_path(run), folder / ckpt.metrics_path(run).name)
    return folder / run.name


@pytest.fixture(scope="module")
def test_h5(tmp_path_factory) -> Path:
    from lgdram_cli.cli.app import main

    path = tmp_path_factory.mktemp("h5") / "test.h5"
    with pytest.raises(SystemExit) as exc:
        main(["gen-data", "--dataset", "cmnist-60", "--set", "digits=mnist-mini", "--n", "30", "--split", "test",
              "--out", str(path)])
    assert exc.value.code in (0, None)
    return path


# ---------------------------------------------------------------- eval


def test_eval_reproduces_the_recorded_metrics(tiny_run, capsys):
    result = eval_json(capsys, str(tiny_run))
    recorded = json.loads(checkpoint_metadata(tiny_run)["lgdram.metrics"])
    assert {"accuracy", "error", "n", "per_glimpse_accuracy", "location_error_px", "glimpses_in_box"} <= set(result)
    assert result["step"] == 6 and result["checkpoint"] == str(tiny_run)
    # the same test canvases (the run's eval_n and eval_seed) and the same deterministic policy
    for key in ("n", "accuracy", "error", "per_glimpse_accuracy", "location_error_px", "glimpses_in_box"):
        assert result[key] == recorded[key], key
    assert result["error"] == pytest.approx(100 * (1 - result["accuracy"]))
    assert len(result["per_glimpse_accuracy"]) == 3
    assert 0 <= result["glimpses_in_box"] <= 1


def test_eval_human_readable_output(tiny_run, capsys):
    code, stdout, err = eval_main(capsys, str(tiny_run))
    assert code == 0, err
    assert "step 6" in stdout and "accuracy" in stdout and "location error" in stdout


def test_eval_options(tiny_run, test_h5, capsys):
    on_file = eval_json(capsys, str(tiny_run), "--data", str(test_h5))
    assert on_file["n"] == 30
    assert eval_json(capsys, str(tiny_run), "--data", str(test_h5), "--n", "7")["n"] == 7
    assert eval_json(capsys, str(tiny_run), "--n", "12", "--seed", "5")["n"] == 12
    sampled = eval_json(capsys, str(tiny_run), "--mc", "3")
    assert sampled["n"] == 20 and 0 <= sampled["accuracy"] <= 1
    assert "location_error_px" in sampled  # measured on the deterministic trajectory
    # the same checkpoint on a harder variant of its own dataset (same canvas size)
    harder = eval_json(capsys, str(tiny_run), "--set", "distractors=8", "--n", "10")
    assert harder["n"] == 10


def test_eval_is_deterministic(tiny_run, capsys):
    assert eval_json(capsys, str(tiny_run), "--n", "10") == eval_json(capsys, str(tiny_run), "--n", "10")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--n", "0"), "--n"),
        (("--mc", "-1"), "--mc"),
        (("--dataset", "mcmnist-100"), "100x100"),  # the model takes 60×60 canvases
        (("--dataset", "nosuchset"), "nosuchset"),
        (("--device", "tpu"), "--device"),
        (("--device", "mps"), "cpu or cuda"),
    ],
)
def test_eval_bad_options(tiny_run, capsys, args, needle):
    code, _, err = eval_main(capsys, str(tiny_run), *args)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("value", ["tpu", "cuda:7"])
def test_lgdram_device_from_the_environment(tiny_run, capsys, monkeypatch, value):
    """$LGDRAM_DEVICE stands in for --device (the suite itself sets it to 'cpu')."""
    monkeypatch.setenv("LGDRAM_DEVICE", value)
    code, _, err = eval_main(capsys, str(tiny_run))
    assert_one_line_error(code, err, f"--device {value}")
    code, _, err = eval_main(capsys, str(tiny_run), "--device", "cpu", "--n", "5")  # the option wins
    assert code == 0, err


def test_eval_file_that_does_not_fit_the_model(tiny_run, tmp_path, capsys):
    from lgdram_cli.cli.app import main

    small = tmp_path / "small.h5"
    with pytest.raises(SystemExit):
        main(["gen-data", "--dataset", "cmnist", "--set", "canvas=40", "--set", "digits=mnist-mini", "--n", "5",
              "--out", str(small)])
    capsys.readouterr()
    code, _, err = eval_main(capsys, str(tiny_run), "--data", str(small))
    assert_one_line_error(code, err, "40x40", "60x60")


# ---------------------------------------------------------------- damaged and foreign checkpoints


def _bad_checkpoints(run: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, a word the error must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = run.read_bytes()
    meta = checkpoint_metadata(run)
    tensors = checkpoint_tensors(run)
    files: dict[str, tuple[Path, str]] = {}

    files["missing"] = (folder / "missing.safetensors", "not found")

    p = folder / "truncated.safetensors"
    p.write_bytes(data[: len(data) // 2])
    files["truncated"] = (p, "truncated")

    p = folder / "text.safetensors"
    p.write_text("this is not a checkpoint\n" * 20)
    files["not-safetensors"] = (p, "safetensors")

    p = folder / "empty.safetensors"
    p.write_bytes(b"")
    files["empty"] = (p, "safetensors")

    p = folder / "plain.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(p))
    files["no-lgdram-spec"] = (p, "lgdram.spec")

    # tensors of a hidden-16 RAM under the spec of a hidden-32 one (digest consistent)
    from lgdram_cli.models.ram import RAM

    spec = json.loads(meta["lgdram.spec"])
    other = RAM(RAM.Config(**{**spec["model"], "hidden": 16}), channels=1, size=(60, 60), classes=10)
    other_tensors = {k: v.contiguous() for k, v in other.state_dict().items()}
    p = folder / "wrong-shapes.safetensors"
    save_file(other_tensors, str(p), metadata=ckpt.seal(other_tensors, meta))
    files["tensors-do-not-match-spec"] = (p, "do not match")

    # a tensor missing (digest consistent)
    fewer = dict(tensors)
    fewer.pop(sorted(fewer)[0])
    p = folder / "missing-tensor.safetensors"
    save_file(fewer, str(p), metadata=ckpt.seal(fewer, meta))
    files["tensor-missing"] = (p, "missing")

    # weights edited after saving: the recorded digest no longer matches
    edited = {k: v.clone() for k, v in tensors.items()}
    name = sorted(edited)[0]
    edited[name].view(-1)[0] += 1.0
    p = folder / "edited.safetensors"
    save_file(edited, str(p), metadata=meta)
    files["sha256-mismatch"] = (p, "SHA-256")

    p = folder / "future.safetensors"
    save_file(tensors, str(p), metadata={**meta, "lgdram.format_version": "99"})
    files["format-version"] = (p, "version 99")

    p = folder / "bad-spec-json.safetensors"
    save_file(tensors, str(p), metadata=ckpt.seal(tensors, {**meta, "lgdram.spec": "{not json"}))
    files["spec-not-json"] = (p, "metadata")

    p = folder / "bad-model.safetensors"
    bad = {**spec, "model": {**spec["model"], "glimpses": 0}}
    save_file(tensors, str(p), metadata=ckpt.seal(tensors, {**meta, "lgdram.spec": json.dumps(bad)}))
    files["spec-invalid-model"] = (p, "glimpses")

    # a spec that is valid JSON but not an object (sealed: only its shape is wrong)
    p = folder / "spec-list.safetensors"
    save_file(tensors, str(p), metadata=ckpt.seal(tensors, {**meta, "lgdram.spec": "[1, 2]"}))
    files["spec-a-json-list"] = (p, "not an object")

    # the spec edited after saving (2 glimpses instead of 3): the metadata digest no longer matches
    p = folder / "edited-spec.safetensors"
    fewer_glimpses = {**spec, "model": {**spec["model"], "glimpses": 2}}
    save_file(tensors, str(p), metadata={**meta, "lgdram.spec": json.dumps(fewer_glimpses, sort_keys=True)})
    files["metadata-edited"] = (p, "was edited")

    # the step and the recorded metrics edited
    p = folder / "edited-step.safetensors"
    save_file(tensors, str(p), metadata={**meta, "lgdram.step": "600"})
    files["step-edited"] = (p, "--allow-edited")

    p = folder / "dir.safetensors"
    p.mkdir()
    files["a-directory"] = (p, "not found")
    return files


BAD = [
    "missing", "truncated", "not-safetensors", "empty", "no-lgdram-spec", "tensors-do-not-match-spec",
    "tensor-missing", "sha256-mismatch", "format-version", "spec-not-json", "spec-invalid-model", "a-directory",
    "spec-a-json-list", "metadata-edited", "step-edited",
]


@pytest.fixture(scope="module")
def bad_checkpoints(tiny_run, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _bad_checkpoints(tiny_run, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("kind", BAD)
def test_eval_refuses_bad_checkpoints_in_one_line(bad_checkpoints, capsys, kind):
    path, needle = bad_checkpoints[kind]
    code, stdout, err = eval_main(capsys, str(path))
    line = assert_one_line_error(code, err, needle)
    assert path.name in line  # the message names the file
    assert stdout == ""


@pytest.mark.parametrize("kind", ["truncated", "sha256-mismatch", "tensors-do-not-match-spec"])
def test_other_commands_refuse_bad_checkpoints_too(bad_checkpoints, tmp_path, capsys, kind):
    path, needle = bad_checkpoints[kind]
    for args in (["visualize", str(path), "--gif", "--out", str(tmp_path / "g.gif")],
                 ["export", str(path), "--format", "folder", "--out", str(tmp_path / "folder")]):
        code, _, err = run_main(args, capsys)
        assert_one_line_error(code, err, needle)
    assert list(tmp_path.iterdir()) == []


def test_load_checkpoint_roundtrip(tiny_run):
    c = ckpt.load_checkpoint(tiny_run)
    assert c.step == 6 and c.spec["model"]["hidden"] == 32 and c.metrics["step"] == 6
    assert c.metadata["lgdram.tensors_sha256"] == ckpt.tensor_digest(c.tensors)
    # the recorded digest covers the metadata too: spec, step, metrics, run id
    assert c.metadata["lgdram.sha256"] == ckpt.metadata_digest(c.metadata)
    assert c.metadata["lgdram.format_version"] == "2" and len(c.run_id or "") == 32


# ---------------------------------------------------------------- --resume refusals


def resume_main(capsys, out: Path, *extra: str, steps: int = 8) -> tuple[int, str, str]:
    return run_main(tiny_train_args(out, "--resume", *extra, steps=steps), capsys)


def assert_untouched(folder: Path, before: dict[str, bytes]) -> None:
    assert snapshot(folder) == before


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_resume_without_the_optimizer_file(tiny_run, tmp_path, capsys):
    out = copy_run(tiny_run, tmp_path, optim=False)
    before = snapshot(tmp_path)
    code, _, err = resume_main(capsys, out)
    assert_one_line_error(code, err, "optimizer file", "missing")
    assert_untouched(tmp_path, before)


def test_resume_with_an_optimizer_file_of_another_step(tiny_run, tmp_path, capsys):
    out = copy_run(tiny_run, tmp_path / "run")
    other = tmp_path / "other" / "run.safetensors"
    other.parent.mkdir()
    code, _, err = run_main(tiny_train_args(other, steps=2), capsys)
    assert code == 0, err
    shutil.copy(ckpt.optim_path(other), ckpt.optim_path(out))
    before = snapshot(out.parent)
    code, _, err = resume_main(capsys, out)
    assert_one_line_error(code, err, "step 2", "step 6")
    assert_untouched(out.parent, before)


def test_resume_with_an_optimizer_file_of_another_model(tiny_run, tmp_path, capsys):
    out = copy_run(tiny_run, tmp_path / "run")
    other = tmp_path / "other" / "run.safetensors"
    other.parent.mkdir()
    code, _, err = run_main(tiny_train_args(other, "--set", "model.hidden=16", steps=6), capsys)
    assert code == 0, err
    shutil.copy(ckpt.optim_path(other), ckpt.optim_path(out))  # same step, other shapes
    before = snapshot(out.parent)
    code, _, err = resume_main(capsys, out)
    assert_one_line_error(code, err, ckpt.optim_path(out).name)
    assert_untouched(out.parent, before)


def test_resume_with_a_damaged_optimizer_file(tiny_run, tmp_path, capsys):
    out = copy_run(tiny_run, tmp_path)
    optim = ckpt.optim_path(out)
    optim.write_bytes(optim.read_bytes()[:100])
    code, _, err = resume_main(capsys, out)
    assert_one_line_error(code, err, optim.name)


def test_resume_with_a_foreign_optimizer_file(tiny_run, tmp_path, capsys):
    """Another safetensors file in the optimizer's place, even one claiming the right step."""
    out = copy_run(tiny_run, tmp_path)
    optim = ckpt.optim_path(out)
    save_file({"w": torch.ones(2)}, str(optim), metadata={"lgdram.step": "6"})
    before = snapshot(tmp_path)
    code, _, err = resume_main(capsys, out)
    assert_one_line_error(code, err, optim.name, "not an lgdram optimizer file")
    assert_untouched(tmp_path, before)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--set", "model.hidden=16"), "model"),
        (("--set", "model.core=gru"), "model"),
        (("--seed", "3"), "seed"),
        (("--mc", "3"), "mc"),
        (("--batch-size", "5"), "batch_size"),
        (("--set", "loss.location.weight=2"), "loss"),
        (("--set", "optim.lr=0.01"), "optim"),
        (("--set", "dataset.distractors=6"), "dataset"),
        (("--annotations", "50%"), "annotations"),
    ],
)
def test_resume_with_a_changed_spec_is_refused(tiny_run, tmp_path, capsys, extra, needle):
    out = copy_run(tiny_run, tmp_path)
    before = snapshot(tmp_path)
    code, _, err = resume_main(capsys, out, *extra)
    assert_one_line_error(code, err, "--resume", needle)
    assert_untouched(tmp_path, before)


def test_resume_may_change_evaluation_settings(tiny_run, tmp_path, capsys):
    out = copy_run(tiny_run, tmp_path)
    code, _, err = run_main(tiny_train_args(out, "--resume", "--eval-n", "10", steps=7, eval_every=0), capsys)
    assert code == 0, err
    assert checkpoint_metadata(out)["lgdram.step"] == "7"
    assert json.loads(checkpoint_metadata(out)["lgdram.metrics"])["n"] == 10


def test_resume_of_a_missing_checkpoint(tmp_path, capsys):
    code, _, err = resume_main(capsys, tmp_path / "run.safetensors")
    assert_one_line_error(code, err, "not found")
    assert list(tmp_path.iterdir()) == []


def test_resume_of_a_foreign_safetensors_file(tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    save_file({"w": torch.ones(2)}, str(out))
    code, _, err = resume_main(capsys, out)
    assert_one_line_error(code, err, "lgdram.spec")
