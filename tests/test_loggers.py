"""Metrics loggers (`lgdram.loggers`: jsonl, csv, tensorboard) and what `lgdram train` shows:
the jsonl record format, CSV files, TensorBoard event files read back with TensorBoard's own
reader, resume consistency, unknown and uninstalled loggers, the plain progress lines without
a terminal, the short spec block and run.spec.json, Ctrl-C said once."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from helpers import assert_one_line_error, interrupt_when, read_jsonl, run_cli, run_main, tiny_train_args
from lgdram_cli.errors import UserError
from lgdram_cli.training import checkpoint as ckpt
from lgdram_cli.training.loggers import CsvLogger, JsonlLogger, Logger, TensorBoardLogger, flatten


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the event files in `folder`, read by TensorBoard itself."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def train_record(step: int, value: float) -> dict:
    return {"loss/total": value, "reinforce/reward": 0.5, "kind": "train", "step": step, "lr": 1e-3,
            "gamma": None, "images_per_s": 100.0}


def eval_record(step: int, accuracy: float, reached: dict | None = None) -> dict:
    return {"kind": "eval", "step": step, "n": 20, "accuracy": accuracy, "per_glimpse_accuracy": [0.1, accuracy],
            "location_error_px": 3.5, "gamma": 1.0, "steps_to": reached or {}}


def log_run(logger: Logger, folder: Path, steps: range, resume_step: int | None, scale: float) -> None:
    logger.open(folder, {"steps": 6}, resume_step)
    for step in steps:
        logger.log(train_record(step, scale * step))
        if step % 2 == 0:
            logger.log(eval_record(step, step / 10, {"50%": 6} if step >= 6 else {}))
    logger.close()


# ---------------------------------------------------------------- the jsonl format (other code reads it)


def test_jsonl_records_keep_their_format(tiny_run):
    records = read_jsonl(ckpt.metrics_path(tiny_run))
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    metric_keys = sorted(k for k in train[0] if "/" in k or k in ("grad_norm", "train_accuracy"))
    assert list(train[0]) == [*metric_keys, "kind", "step", "lr", "gamma", "images_per_s"]
    assert list(evals[0]) == [
        "kind", "step", "n", "accuracy", "error", "per_glimpse_accuracy", "location_error_px",
        "glimpses_in_box", "gamma", "steps_to",
    ]
    assert isinstance(evals[0]["steps_to"], dict)


def test_jsonl_logger_resume_drops_what_the_checkpoint_has_not_seen(tmp_path):
    log_run(JsonlLogger(), tmp_path, range(1, 7), None, 1.0)
    again = JsonlLogger()
    log_run(again, tmp_path, range(4, 7), 3, 10.0)
    records = read_jsonl(tmp_path / "run.metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [2, 4, 6]
    assert [r["loss/total"] for r in records if r["kind"] == "train"] == [1, 2, 3, 40, 50, 60]


# ---------------------------------------------------------------- csv


def test_csv_logger_writes_one_file_per_kind_with_a_header(tmp_path):
    log_run(CsvLogger(), tmp_path, range(1, 5), None, 1.0)
    train = read_csv(tmp_path / "run.train.csv")
    assert list(train[0])[0] == "step"
    assert [r["step"] for r in train] == ["1", "2", "3", "4"]
    assert float(train[2]["loss/total"]) == 3.0 and train[0]["gamma"] == ""  # None: an empty cell
    evals = read_csv(tmp_path / "run.eval.csv")
    assert [r["step"] for r in evals] == ["2", "4"]
    assert float(evals[1]["per_glimpse_accuracy/1"]) == 0.4  # lists and dicts: key/sub columns


def test_csv_logger_widens_the_file_for_keys_that_appear_later(tmp_path):
    log_run(CsvLogger(), tmp_path, range(1, 7), None, 1.0)  # steps_to/50% first appears at step 6
    evals = read_csv(tmp_path / "run.eval.csv")
    assert [r["step"] for r in evals] == ["2", "4", "6"]
    assert [r["steps_to/50%"] for r in evals] == ["", "", "6"]
    header = (tmp_path / "run.eval.csv").read_text().splitlines()[0].split(",")
    assert header[0] == "step" and header[-1] == "steps_to/50%"


def test_csv_logger_resume_and_restart(tmp_path):
    log_run(CsvLogger(), tmp_path, range(1, 7), None, 1.0)
    log_run(CsvLogger(), tmp_path, range(4, 7), 3, 10.0)
    train = read_csv(tmp_path / "run.train.csv")
    assert [(r["step"], float(r["loss/total"])) for r in train] == [
        ("1", 1), ("2", 2), ("3", 3), ("4", 40), ("5", 50), ("6", 60)]
    assert [r["step"] for r in read_csv(tmp_path / "run.eval.csv")] == ["2", "4", "6"]
    log_run(CsvLogger(), tmp_path, range(1, 3), None, 1.0)  # a new run replaces the files
    assert [r["step"] for r in read_csv(tmp_path / "run.train.csv")] == ["1", "2"]


def test_flatten():
    assert flatten({"a": {"b": 1}, "c": [2, 3], "d": None}) == {"a/b": 1, "c/0": 2, "c/1": 3, "d": None}


# ---------------------------------------------------------------- tensorboard


def test_tensorboard_logger_scalars_read_back(tmp_path):
    log_run(TensorBoardLogger(), tmp_path, range(1, 5), None, 1.0)
    series = scalars(tmp_path / "tb")
    assert series["train/loss/total"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert [s for s, _ in series["eval/accuracy"]] == [2, 4]
    assert series["eval/per_glimpse_accuracy/1"][1] == (4, pytest.approx(0.4))
    assert "train/gamma" not in series  # None is not a number
    assert "train/kind" not in series and "train/step" not in series


def test_tensorboard_logger_resume_purges_and_restart_replaces(tmp_path):
    log_run(TensorBoardLogger(), tmp_path, range(1, 7), None, 1.0)
    log_run(TensorBoardLogger(), tmp_path, range(4, 7), 3, 10.0)
    series = scalars(tmp_path / "tb")
    assert series["train/loss/total"] == [(1, 1), (2, 2), (3, 3), (4, 40), (5, 50), (6, 60)]
    assert [s for s, _ in series["eval/accuracy"]] == [2, 4, 6]
    log_run(TensorBoardLogger(), tmp_path, range(1, 3), None, 7.0)  # a new run: old events go
    assert scalars(tmp_path / "tb")["train/loss/total"] == [(1, 7), (2, 14)]


def test_tensorboard_log_dir_keeps_runs_sharing_a_folder_apart(tmp_path):
    logger = TensorBoardLogger()
    assert logger.log_dir(tmp_path) == tmp_path / "tb"
    logger.run_name = "other"
    assert logger.log_dir(tmp_path) == tmp_path / "tb" / "other"


# ---------------------------------------------------------------- through `lgdram train`


def test_train_with_every_logger_and_resume_keeps_them_consistent(tmp_path, capsys):
    """Three steps, checkpoint; on to six; then back to the step-3 checkpoint (a run killed
    after it) and on to six again: every logger holds each step once."""
    out = tmp_path / "run.safetensors"
    loggers = ("--logger", "csv", "--logger", "tensorboard", "--set", "log_every=1")

    def train(steps: int, *extra: str) -> None:
        code, _, err = run_main(tiny_train_args(out, *loggers, *extra, steps=steps, eval_every=3), capsys)
        assert code == 0, err

    train(3)
    saved = tmp_path / "at3"
    saved.mkdir()
    for path in (out, ckpt.optim_path(out)):
        shutil.copy(path, saved / path.name)
    train(6, "--resume")
    for path in (out, ckpt.optim_path(out)):
        shutil.copy(saved / path.name, path)
    train(6, "--resume")
    records = read_jsonl(ckpt.metrics_path(out))
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 6]
    csv_train = read_csv(tmp_path / "run.train.csv")
    assert [int(r["step"]) for r in csv_train] == [1, 2, 3, 4, 5, 6]
    assert [int(r["step"]) for r in read_csv(tmp_path / "run.eval.csv")] == [3, 6]
    for row, record in zip(csv_train, (r for r in records if r["kind"] == "train")):
        assert float(row["loss/total"]) == pytest.approx(record["loss/total"])
    series = scalars(tmp_path / "tb")
    assert [s for s, _ in series["train/loss/total"]] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in series["eval/accuracy"]] == [3, 6]
    assert series["eval/accuracy"][-1][1] == pytest.approx([r for r in records if r["kind"] == "eval"][-1]["accuracy"])
    spec = json.loads((tmp_path / "run.spec.json").read_text())
    assert spec["loggers"] == ["jsonl", "csv", "tensorboard"]  # the resume kept the checkpoint's loggers


def test_jsonl_is_always_on_and_the_default_spec_leaves_loggers_out(tmp_path, capsys):
    from lgdram_cli.cli.train_cmd import train_spec

    assert train_spec(loggers=["csv"]).loggers == ["jsonl", "csv"]
    assert train_spec().loggers == ["jsonl"]
    code, _, err = run_main(tiny_train_args(tmp_path / "run.safetensors", steps=1, eval_every=0), capsys)
    assert code == 0, err
    assert "loggers" not in ckpt.load_checkpoint(tmp_path / "run.safetensors").spec  # as before loggers existed


def test_an_unknown_logger_is_a_one_line_error_with_a_suggestion(tmp_path, capsys):
    code, _, err = run_main(tiny_train_args(tmp_path / "run.safetensors", "--logger", "tensorbord"), capsys)
    assert_one_line_error(code, err, "unknown logger 'tensorbord'", "did you mean 'tensorboard'")
    assert list(tmp_path.iterdir()) == []


def test_a_logger_whose_package_is_missing_names_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    code, _, err = run_main(tiny_train_args(tmp_path / "run.safetensors", "--logger", "tensorboard"), capsys)
    line = assert_one_line_error(code, err, "logger 'tensorboard'", "pip install tensorboard", "pipx inject lgdram tensorboard")
    assert "tensorboard" in line
    assert list(tmp_path.iterdir()) == []


def test_an_import_error_when_a_logger_opens_names_its_package(tmp_path):
    import torch

    from lgdram_cli.training import distributed
    from lgdram_cli.training.runlog import Display, RunLog
    from lgdram_cli.training.spec import TrainSpec

    class Fancy(Logger):
        requires = ("fancy-metrics",)

        def open(self, run_dir, spec, resume_step):
            raise ModuleNotFoundError("No module named 'fancy_metrics'", name="fancy_metrics")

    log = RunLog(tmp_path / "run.safetensors", TrainSpec(), {}, loggers={"fancy": Fancy}, resume_step=None,
                 world=distributed.World(), device=torch.device("cpu"), display=Display())
    with pytest.raises(UserError, match=r"pip install fancy-metrics \(with pipx: pipx inject lgdram fancy-metrics\)"):
        log.open()


def test_loggers_are_listed_by_plugins(capsys):
    code, out, err = run_main(["plugins", "--json"], capsys)
    assert code == 0, err
    loggers = {r["name"]: r for r in json.loads(out)["entries"] if r["kind"] == "logger"}
    assert {"jsonl", "csv", "tensorboard"} <= set(loggers)
    assert all(r["ok"] and r["distribution"] == "lgdram" for n, r in loggers.items() if n in ("jsonl", "csv", "tensorboard"))


# ---------------------------------------------------------------- what the user sees without a terminal


def test_progress_lines_eval_rows_and_the_spec_block_without_a_terminal(tmp_path):
    out = tmp_path / "run.safetensors"
    result = run_cli(*tiny_train_args(out, "--set", "log_every=2", steps=6, eval_every=3))
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    steps = [line for line in lines if re.match(r"step +\d+/6 ", line)]
    assert [int(re.match(r"step +(\d+)/", s).group(1)) for s in steps] == [2, 4, 6]  # every log_every steps
    for line in steps:
        for needle in ("steps/s", "elapsed", "ETA", "loss ", "reward ", "train acc ", "γ ", "lr "):
            assert needle in line, (needle, line)
    records = [r for r in read_jsonl(ckpt.metrics_path(out)) if r["kind"] == "train"]
    assert f"loss {records[-1]['loss/total']:.3f}" in steps[-1]  # the same numbers as the metrics file
    header = [line for line in lines if line.startswith("eval ") and "test acc" in line]
    rows = [line for line in lines if re.match(r"eval +\d+ ", line)]
    assert len(header) == 1 and all(k in header[0] for k in ("step", "test acc", "loc error", "in box"))
    assert [int(r.split()[1]) for r in rows] == [3, 6]
    assert all(" px " in r and r.endswith("%") for r in rows)
    # the spec: a short block, and the whole of it in run.spec.json beside the checkpoint
    start = next(i for i, line in enumerate(lines) if line.startswith("spec: "))
    end = next(i for i, line in enumerate(lines) if line.strip().startswith("device: "))
    block = lines[start : end + 1]
    assert len(block) <= 10 and max(map(len, block)) < 120, block
    for word in ("dataset: cmnist", "model: ram", "loss: classification", "annotations:", "steps: 6 × batch 4 × mc 2", "precision: fp32"):
        assert any(word in line for line in block), word
    spec_file = tmp_path / "run.spec.json"
    assert str(spec_file) in block[0]
    assert json.loads(spec_file.read_text()) == ckpt.load_checkpoint(out).spec
    assert max(map(len, lines)) < 200, "a very long line (the old one-line JSON spec?)"


def test_ctrl_c_says_interrupted_once(tmp_path):
    out = tmp_path / "run.safetensors"
    code, stderr = interrupt_when(tiny_train_args(out, steps=2000, eval_every=5), started=out.exists)
    assert code == 130, stderr
    assert stderr.replace(str(tmp_path), "TMP").lower().count("interrupted") == 1, stderr
    assert re.search(r"interrupted: saved .* at step \d+; continue with --resume", stderr), stderr


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_spec_file(tmp_path, capsys, monkeypatch):
    import lgdram_cli.models.retina as retina_module

    monkeypatch.setattr(retina_module, "MAX_CELLS", 30_000)  # the first training batch is refused
    code, _, err = run_main(tiny_train_args(tmp_path / "run.safetensors", "--logger", "csv"), capsys)
    assert code == 2, err
    assert list(tmp_path.iterdir()) == []
