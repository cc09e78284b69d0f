"""A researcher's first hour: commands as typed (default run folders, folders for eval /
visualize / export / --resume), one `--set` rule for every command, `--debug` anywhere,
errors pointing at the subcommand's help, fast input errors, Ctrl-C said once, plain help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (
    LGDRAM,
    REPO,
    assert_one_line_error,
    checkpoint_metadata,
    interrupt_when,
    leftovers,
    offline_env,
    run_main,
)
from lgdram_cli.training import rundir

#: The tiny settings of every run here (bundled digits: offline and fast).
TINY = (
    "--steps", "2", "--batch-size", "4", "--mc", "2", "--eval-n", "8", "--threads", "1",
    "--set", "dataset.digits=mnist-mini", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8",
    "--set", "model.glimpses=2",
)
AS_TYPED = ("train", "--dataset", "mcmnist", "--annotations", "1%")
FOLDER = Path("runs") / "mcmnist-ram-1pct-s0"


def lgdram(*args: str, cwd: Path, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(LGDRAM), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    return offline_env(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def trained_here(tmp_path_factory, env) -> tuple[Path, str]:
    """(working folder, stderr) of `lgdram train --dataset mcmnist --annotations 1%` run there once, as typed."""
    cwd = tmp_path_factory.mktemp("first-hour")
    result = ok(lgdram(*AS_TYPED, *TINY, cwd=cwd, env=env))
    assert (cwd / FOLDER / "run.safetensors").is_file(), leftovers(cwd)
    return cwd, result.stderr


@pytest.fixture
def first_run(trained_here) -> Path:
    return trained_here[0]


# ---------------------------------------------------------------- train: the default run folder


def test_train_without_out_writes_its_own_run_folder_and_says_so(trained_here):
    first_run, stderr = trained_here
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "run folder" in line)
    assert f"run folder {FOLDER}/" in lines[start]
    assert start < next(i for i, line in enumerate(lines) if line.startswith("saved")), stderr
    assert f"saved {FOLDER / 'run.safetensors'}" in lines[-1], stderr
    names = {p.name for p in (first_run / FOLDER).iterdir()}
    assert {"run.safetensors", "run.optim.safetensors", "run.metrics.jsonl"} <= names
    spec = json.loads(checkpoint_metadata(first_run / FOLDER / "run.safetensors")["lgdram.spec"])
    assert spec["dataset"]["type"] == "mcmnist" and spec["annotations"] == pytest.approx(0.01)


def test_a_second_run_gets_the_next_number_and_never_overwrites(tmp_path, env):
    folder = tmp_path / FOLDER
    ok(lgdram(*AS_TYPED, *TINY, cwd=tmp_path, env=env))
    before = (folder / "run.safetensors").read_bytes()
    second = ok(lgdram(*AS_TYPED, *TINY, cwd=tmp_path, env=env))
    assert f"run folder {FOLDER}-2/" in second.stderr
    assert (tmp_path / f"{FOLDER}-2" / "run.safetensors").is_file()
    assert (folder / "run.safetensors").read_bytes() == before
    (tmp_path / f"{FOLDER}-3").mkdir()  # an empty folder holds no run: it is used, not skipped
    (tmp_path / f"{FOLDER}-3" / "notes.txt").write_text("mine")
    ok(lgdram(*AS_TYPED, *TINY, cwd=tmp_path, env=env))
    assert (tmp_path / f"{FOLDER}-3" / "run.safetensors").is_file()
    assert (tmp_path / f"{FOLDER}-3" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"dataset": "mcmnist", "annotations": "1%"}, "mcmnist-ram-1pct-s0"),
        ({"dataset": "cmnist-60", "annotations": "0", "seed": 3, "model": "dram"}, "cmnist-60-dram-0-s3"),
        ({"dataset": "cmnist-60", "annotations": "100"}, "cmnist-60-ram-pool100-s0"),
        ({"dataset": "cmnist-60", "annotations": "0.5%"}, "cmnist-60-ram-0.5pct-s0"),
        ({}, "cmnist-ram-0-s0"),
        ({"dataset": str(REPO / "datasets" / "mcmnist-200.toml"), "annotations": "10%"}, "mcmnist-200-ram-10pct-s0"),
    ],
)
def test_default_folder_names(options, name):
    from lgdram_cli.cli.train_cmd import train_spec

    spec = train_spec(**options)
    assert rundir.default_run_folder(spec, options.get("dataset")) == Path("runs") / name


def test_out_takes_a_folder_and_resume_takes_it_too(tmp_path, capsys):
    folder = tmp_path / "mine"
    code, _, err = run_main([*AS_TYPED, *TINY, "--out", str(folder)], capsys)
    assert code == 0, err
    assert checkpoint_metadata(folder / "run.safetensors")["lgdram.step"] == "2"
    code, _, err = run_main([*AS_TYPED, *TINY, "--out", str(folder)], capsys)
    assert_one_line_error(code, err, "already exists", "--resume")
    code, _, err = run_main([*AS_TYPED, *TINY, "--steps", "3", "--out", str(folder), "--resume"], capsys)
    assert code == 0, err
    assert checkpoint_metadata(folder / "run.safetensors")["lgdram.step"] == "3"


def test_resume_without_out_continues_the_newest_default_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main([*AS_TYPED, *TINY, "--resume"], capsys)
    assert_one_line_error(code, err, "--resume", "no run")
    assert leftovers(tmp_path) == []
    for _ in range(2):
        code, _, err = run_main([*AS_TYPED, *TINY], capsys)
        assert code == 0, err
    code, _, err = run_main([*AS_TYPED, *TINY, "--steps", "3", "--resume"], capsys)
    assert code == 0, err
    assert checkpoint_metadata(tmp_path / f"{FOLDER}-2" / "run.safetensors")["lgdram.step"] == "3"
    assert checkpoint_metadata(tmp_path / FOLDER / "run.safetensors")["lgdram.step"] == "2"


def test_an_unwritable_default_run_folder_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    code, _, err = run_main([*AS_TYPED, *TINY], capsys)
    assert_one_line_error(code, err, "runs", "--out")
    assert leftovers(tmp_path) == ["runs"]


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root writes anywhere")
def test_a_read_only_working_folder_is_one_line(tmp_path, capsys, monkeypatch):
    work = tmp_path / "ro"
    work.mkdir()
    work.chmod(0o555)
    monkeypatch.chdir(work)
    try:
        code, _, err = run_main([*AS_TYPED, *TINY], capsys)
    finally:
        work.chmod(0o755)
    assert_one_line_error(code, err, "not writable")
    assert leftovers(work) == []


def test_bad_input_found_late_leaves_no_run_folder(tmp_path, capsys, monkeypatch):
    """A model config error (found when the model is built) must not leave an empty folder."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main([*AS_TYPED, *TINY, "--set", "model.glimpses=0"], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists(), leftovers(tmp_path)


# ---------------------------------------------------------------- eval / visualize / export on a folder


def test_eval_takes_the_run_folder(first_run, env):
    folder_result = ok(lgdram("eval", str(FOLDER), "--json", "--threads", "1", cwd=first_run, env=env))
    file_result = ok(lgdram("eval", str(FOLDER / "run.safetensors"), "--json", "--threads", "1", cwd=first_run, env=env))
    by_folder, by_file = json.loads(folder_result.stdout), json.loads(file_result.stdout)
    assert by_folder["checkpoint"] == str(FOLDER / "run.safetensors")
    assert by_folder["accuracy"] == by_file["accuracy"] and by_folder["n"] == 8


def test_visualize_takes_the_run_folder(first_run, env):
    ok(lgdram("visualize", str(FOLDER), "--n", "2", "--threads", "1", cwd=first_run, env=env))
    assert (first_run / FOLDER / "run.glimpses.gif").is_file()
    ok(lgdram("visualize", str(FOLDER), "--curves", cwd=first_run, env=env))
    assert (first_run / FOLDER / "run.curves.png").is_file()


def test_export_takes_the_run_folder(first_run, env):
    ok(lgdram("export", str(FOLDER), "--format", "onnx", "--out", "model.onnx", "--threads", "1", cwd=first_run, env=env))
    assert (first_run / "model.onnx").stat().st_size > 0


def test_eval_of_a_folder_without_a_run_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for command in (["eval", str(empty)], ["visualize", str(empty)], ["export", str(empty), "-f", "onnx", "-o", str(tmp_path / "m.onnx")]):
        code, _, err = run_main(command, capsys)
        assert_one_line_error(code, err, "holds no run", "run.safetensors")
    assert leftovers(tmp_path) == []


def test_eval_of_a_folder_of_runs_names_them(first_run, capsys):
    code, _, err = run_main(["eval", str(first_run / "runs")], capsys)
    assert_one_line_error(code, err, "holds no run", "mcmnist-ram-1pct-s0")


@pytest.mark.parametrize(
    ("name", "text"),
    [("spec.toml", 'seed = 7\n[model]\ntype = "ram"\n'), ("run.spec.json", '{"model": {"type": "dram"}, "seed": 0}')],
)
def test_eval_of_a_folder_holding_another_run_is_one_line(first_run, tmp_path, capsys, name, text):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(first_run / FOLDER, folder)
    (folder / name).write_text(text)
    before = leftovers(tmp_path)
    code, _, err = run_main(["eval", str(folder)], capsys)
    assert_one_line_error(code, err, "different run", name)
    code, _, err = run_main(["export", str(folder), "-f", "onnx", "-o", str(tmp_path / "m.onnx")], capsys)
    assert_one_line_error(code, err, "different run")
    assert leftovers(tmp_path) == before


def test_a_matching_spec_file_in_the_folder_is_fine(first_run, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(first_run / FOLDER, folder)
    (folder / "spec.toml").write_text('seed = 0\nannotations = "1%"\n[model]\ntype = "ram"\nhidden = 16\n[loss.location]\n')
    code, out, err = run_main(["eval", str(folder), "--n", "4"], capsys)
    assert code == 0, err


# ---------------------------------------------------------------- one --set rule


def test_short_set_keys_reach_their_section():
    from lgdram_cli.cli.train_cmd import train_spec

    spec = train_spec(
        dataset="mcmnist", model="dram",
        sets=["canvas=200", "glimpses=3", "lr=1e-4", "gamma_start=0.5", "location.weight=2", "steps=7", "dataset.colour=true"],
    )
    assert spec.dataset["canvas"] == 200 and spec.dataset["colour"] is True
    assert spec.model["glimpses"] == 3 and spec.optim.lr == 1e-4 and spec.steps == 7
    assert spec.loss["location"]["gamma_start"] == 0.5 and spec.loss["location"]["weight"] == 2


def test_short_keys_follow_a_model_type_set_by_key():
    from lgdram_cli.cli.train_cmd import train_spec

    spec = train_spec(dataset="cmnist-60", sets=["model.type=fc", "width=16"])
    assert spec.model == {"type": "fc", "width": 16}


@pytest.mark.parametrize(
    ("key", "needles"),
    [
        ("type=dram", ["ambiguous", "dataset.type", "model.type"]),
        ("weight=2", ["ambiguous", "loss.location.weight", "loss.reinforce.weight"]),
        ("canvs=100", ["unknown key", "dataset.canvas"]),
        ("glimpse=4", ["unknown key", "model.glimpses"]),
        ("modle.hidden=4", ["unknown key", "model.hidden"]),
    ],
)
def test_bad_short_set_keys_are_one_line_and_write_nothing(tmp_path, capsys, monkeypatch, key, needles):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main([*AS_TYPED, *TINY, "--set", key], capsys)
    assert_one_line_error(code, err, f"--set {key.split('=')[0]}", *needles)
    assert leftovers(tmp_path) == []


def test_bench_train_takes_short_keys(capsys):
    code, out, err = run_main(
        ["bench", "train", "--dataset", "cmnist-60", "--steps", "1", "--warmup", "0", "--batch-size", "2", "--mc", "2",
         "--threads", "1", "--set", "digits=mnist-mini", "--set", "hidden=16", "--set", "glimpse_hidden=8",
         "--set", "glimpses=2", "--json"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["ms_per_step"] > 0
    code, _, err = run_main(["bench", "train", "--set", "type=ram"], capsys)
    assert_one_line_error(code, err, "ambiguous", "model.type")


def test_gen_data_eval_and_visualize_share_the_rule():
    from lgdram_cli.specs import expand_set_keys
    from lgdram_cli.training.runs import dataset_sets

    assert dataset_sets(["canvas=80", "dataset.distractors=2"]) == ["canvas=80", "distractors=2"]
    sections = {"dataset": lambda: ("canvas",), "model": lambda: ("canvas", "hidden")}
    assert expand_set_keys(["hidden=3", "n=2"], top={"n"}, sections=sections) == ["model.hidden=3", "n=2"]
    with pytest.raises(Exception, match="ambiguous.*dataset.canvas or model.canvas"):
        expand_set_keys(["canvas=3"], top=(), sections=sections)


# ---------------------------------------------------------------- --debug, help pointers, speed, help text


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_subcommand(tmp_path, env, where):
    args = ["--debug", "train", "--dataset", "nosuch"] if where == "before" else ["train", "--dataset", "nosuch", "--debug"]
    result = lgdram(*args, cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" in result.stderr and "unknown dataset 'nosuch'" in result.stderr
    assert "No such option" not in result.stderr


def test_usage_errors_point_to_the_subcommands_help(capsys):
    code, _, err = run_main(["train", "--batch-sise", "4"], capsys)
    assert_one_line_error(code, err, "--batch-sise", "see 'lgdram train --help'")
    code, _, err = run_main(["bench", "train", "--nope"], capsys)
    assert_one_line_error(code, err, "see 'lgdram bench train --help'")
    code, _, err = run_main(["--nope"], capsys)
    assert_one_line_error(code, err, "see 'lgdram --help'")


FAST_ERRORS = {
    "unknown dataset": (["train", "--dataset", "nosuch"], "unknown dataset"),
    "unknown model": (["train", "--model", "nosuch"], "unknown model"),
    "bad flag": (["train", "--nope"], "No such option"),
    "missing data file": (["train", "--data", "missing.h5"], "not found"),
    "missing spec file": (["train", "--spec", "missing.toml"], "not found"),
    "missing checkpoint": (["eval", "missing.safetensors"], "not found"),
    "folder without a run": (["visualize", "."], "holds no run"),
    "export of a missing run": (["export", "missing", "-f", "onnx", "-o", "m.onnx"], "not found"),
}


@pytest.mark.parametrize("case", FAST_ERRORS, ids=list(FAST_ERRORS))
def test_input_errors_answer_fast_without_torch(tmp_path, env, case):
    args, needle = FAST_ERRORS[case]
    t0 = time.monotonic()
    result = lgdram(*args, cwd=tmp_path, env=env, timeout=60)
    elapsed = time.monotonic() - t0
    assert_one_line_error(result.returncode, result.stderr, needle)
    assert elapsed < 2, f"{case}: {elapsed:.2f} s"
    # the reason it is fast, independent of the machine's load: torch was never imported
    probe = (
        "import sys\nfrom lgdram_cli.cli.app import main\n"
        f"try:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().endswith("NO-TORCH"), f"{case} imported torch\n{result.stderr}"


def test_export_formats_named_by_the_cli_are_the_exporters():
    from lgdram_cli.cli.visualize_cmd import EXPORT_FORMATS
    from lgdram_cli.export.formats import FORMATS

    assert EXPORT_FORMATS == FORMATS


def test_help_shows_flags_as_flags_and_click_style_metavars(tmp_path, env):
    wide = {**env, "COLUMNS": "200"}
    for command in (["train", "--help"], ["eval", "--help"], ["visualize", "--help"], ["--help"]):
        result = ok(lgdram(*command, cwd=tmp_path, env=wide, timeout=60))
        assert not re.search(r"<(bool|int|str|path|float)>", result.stdout), result.stdout
    help_text = ok(lgdram("train", "--help", cwd=tmp_path, env=wide, timeout=60)).stdout
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\W*(--[a-z-]+)\b.*$", help_text, flags=re.M)}
    assert re.search(r"--batch-size\s+INTEGER", rows["--batch-size"])
    assert re.search(r"--dataset\s+TEXT", rows["--dataset"])
    assert re.search(r"--spec\s+PATH", rows["--spec"])
    assert re.search(r"--set\s+KEY=VALUE", rows["--set"])
    for flag in ("--resume", "--force", "--json"):
        assert re.search(rf"{flag}\s+(BOOLEAN|TEXT|INTEGER|[A-Z]+\b)", rows[flag]) is None, rows[flag]
    assert "runs/" in help_text  # where a run goes without --out


def test_ctrl_c_says_interrupted_once_and_resume_finds_the_folder(tmp_path, env):
    checkpoint = tmp_path / FOLDER / "run.safetensors"
    args = [*AS_TYPED, *TINY, "--steps", "5000", "--eval-every", "5"]
    code, stderr = interrupt_when(args, started=checkpoint.exists, cwd=tmp_path, env=env)
    assert code == 130, stderr
    assert "Traceback" not in stderr
    said = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(said) == 1, stderr
    step = int(checkpoint_metadata(checkpoint)["lgdram.step"])
    result = ok(lgdram(*AS_TYPED, *TINY, "--steps", str(step + 1), "--resume", cwd=tmp_path, env=env))
    assert f"run folder {FOLDER}/" in result.stderr
    assert checkpoint_metadata(checkpoint)["lgdram.step"] == str(step + 1)
    assert not (tmp_path / f"{FOLDER}-2").exists()
