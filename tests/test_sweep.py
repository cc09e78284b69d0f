"""`lgdram sweep` and `lgdram results`: grid parsing and bad input, the manifest's guard
against mixing recipes, `--list` / `--only`, Ctrl-C, aggregation and its refusals, and the
end-to-end contract: a 2 × 2 sweep of tiny runs, one run killed mid-run, the sweep rerun
resumes it, and the results table is complete.

Runs are tiny (RAM hidden 32, 3 glimpses, batch 4 × 2 replicas, 20 test canvases). Results
tests that only aggregate use made-up runs (a one-tensor checkpoint and a metrics file).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import LGDRAM, assert_one_line_error, default_sigint, read_jsonl, run_cli, run_main
from lgdram_cli.training import sweep as sw

TINY_RECIPE = """\
steps = 6
batch_size = 4
mc = 2
eval_every = 3
eval_n = 20

[dataset]
type = "cmnist"
digits = "mnist-mini"

[model]
type = "ram"
hidden = 32
glimpse_hidden = 16
glimpses = 3
"""
GRID = ("--grid", "annotations=0,100%", "--seeds", "0-1")


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_RECIPE)
    return path


def sweep_main(capsys, recipe: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    return run_main(["sweep", str(recipe), "--out", str(out), *extra], capsys)


def list_states(stdout: str) -> dict[str, str]:
    """`--list` output → {run name: state}."""
    rows = [line.split(None, 2) for line in stdout.splitlines()[1:] if line.strip()]
    return {name: state for _, name, state in rows}


# ---------------------------------------------------------------- parsing


def test_grid_seeds_and_folders_parse():
    assert sw.full_key("glimpses", "--grid", {"model": {"type": "ram"}}) == "model.glimpses"
    assert sw.parse_grid(["annotations=0,1%,100", "model.glimpses=2,4"]) == {
        "annotations": ["0", "1%", "100"], "model.glimpses": ["2", "4"],
    }
    assert sw.split_values("[1,2],[3,4]") == ["[1,2]", "[3,4]"]
    assert sw.parse_indices(["0-2", "5,1"], "--seeds") == [0, 1, 2, 5]
    assert sw.cell_folder({"annotations": "1%", "dataset.canvas": "100x300"}) == "annotations=1pct,dataset.canvas=100x300"
    assert sw.cell_folder({"dataset.distractors": "[4, 8]", "data": "a/b.h5"}) == "dataset.distractors=4-8,data=a_b.h5"
    assert sw.grid_args({"annotations": "1%", "model.core": "rnn"}) == ["--annotations", "1%", "--set", "model.core=rnn"]
    for bad, needle in ((["annotations"], "KEY=V1,V2"), (["a=1,,2"], "empty value"), (["a=1", "a=2"], "twice"),
                        (["seed=1,2"], "--seeds")):
        with pytest.raises(sw.UserError, match=needle):
            sw.parse_grid(bad)
    with pytest.raises(sw.UserError, match="range ends before"):
        sw.parse_indices("3-1", "--seeds")


@pytest.mark.parametrize(
    ("grid", "needles"),
    [
        ("glimpsez=2,4", ["--grid glimpsez", "unknown key 'glimpsez'", "model.glimpses", "valid keys:", "annotations"]),
        ("lrr=0.1", ["--grid lrr", "unknown key 'lrr'", "valid keys:", "optim"]),
        ("model.glimpsez=2", ["--grid model.glimpsez", "did you mean 'glimpses'", "valid keys of 'model'", "hidden"]),
        ("optim.lrr=1e-3", ["did you mean 'lr'", "valid keys of 'optim'", "lr_min"]),
        ("loss.locaton.weight=1", ["valid keys of 'loss'", "location"]),
        ("annotations=abc", ["--grid annotations=abc", "--annotations 'abc'"]),
        ("model.glimpses=2,-1", ["--grid model.glimpses=-1", "glimpses"]),
    ],
)
def test_bad_grid_exits_2_naming_the_key(capsys, tmp_path, recipe, grid, needles):
    out = tmp_path / "sweep"
    code, _, err = sweep_main(capsys, recipe, out, "--grid", grid, "--grid", "model.hidden=16,32")
    assert_one_line_error(code, err, *needles)
    assert not out.exists()  # validated before anything is written


def test_bad_options_exit_2(capsys, tmp_path, recipe):
    out = tmp_path / "sweep"
    for args, needle in (
        (["--jobs", "0"], "--jobs 0"),
        (["--set", "model.glimpses=2", "--grid", "model.glimpses=3"], "both given"),
        (["--set", "seed=3"], "--seeds"),
        (["--only", "9"], "runs 0–3"),
        (["--gpus", "99"], "--gpus 99"),
    ):
        code, _, err = sweep_main(capsys, recipe, out, *GRID, *args)
        assert_one_line_error(code, err, needle)
    code, _, err = run_main(["sweep", "no-such-recipe", "--out", str(out)], capsys)
    assert_one_line_error(code, err, "no-such-recipe", "experiment recipe")
    assert not out.exists()


def test_precision_option_sets_every_run_and_rejects_bad_values(capsys, tmp_path, recipe):
    out = tmp_path / "sweep"
    code, _, err = sweep_main(capsys, recipe, out, *GRID, "--precision", "half")
    assert_one_line_error(code, err, "precision", "'fp32' or 'bf16'")  # the run spec's own check
    code, _, err = sweep_main(capsys, recipe, out, "--grid", "precision=fp32,bf16", "--precision", "fp32")
    assert_one_line_error(code, err, "--precision and --grid precision")
    assert not out.exists()
    code, text, err = sweep_main(capsys, recipe, out, *GRID, "--precision", "fp32", "--list")
    assert code == 0, err
    plan = sw.make_plan(str(recipe), ["annotations=0,100%"], ["0-1"], ["precision=bf16"], None, tmp_path / "p")
    assert {run.spec["precision"] for run in plan.runs} == {"bf16"}


@pytest.mark.parametrize("how", [["--precision", "bf16"], ["--set", "precision=bf16"], ["--grid", "precision=fp32,bf16"]])
def test_bf16_is_refused_up_front_on_a_cpu_without_it(capsys, tmp_path, recipe, monkeypatch, how):
    """However bf16 reaches a run, a CPU sweep says so once, before any folder or process."""
    from lgdram_cli.training import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    out = tmp_path / "sweep"
    code, _, err = sweep_main(capsys, recipe, out, "--seeds", "0", *how)
    assert_one_line_error(code, err, "precision bf16", "--precision fp32", "--gpus")
    assert not out.exists()
    code, text, err = sweep_main(capsys, recipe, out, "--seeds", "0", *how, "--list")  # listing runs nothing
    assert code == 0, err
    # bf16 runs finished elsewhere are skipped, not refused (a results script reruns its sweeps)
    monkeypatch.setattr(sw, "run_state", lambda run: sw.State("done", 3))
    code, text, err = sweep_main(capsys, recipe, out, "--seeds", "0", *how)
    assert code == 0, err
    assert "skip" in text + err


def test_child_commands_and_gpu_round_robin(tmp_path, recipe):
    from types import SimpleNamespace

    plan = sw.make_plan(str(recipe), ["annotations=1%", "core=rnn,gru"], ["4"], ["model.hidden=16"], 9, tmp_path / "s")
    assert [r.name for r in plan.runs] == ["annotations=1pct,model.core=rnn/s4", "annotations=1pct,model.core=gru/s4"]
    run = plan.runs[1]
    cmd = sw.child_command(run, plan, sw.State("partial", 3), 2, "cuda:1")
    assert cmd[1:4] == ["-m", "lgdram_cli", "train"]
    text = " ".join(cmd[4:])
    assert text == (f"--spec {recipe} --seed 4 --set model.hidden=16 --annotations 1% --set model.core=gru --steps 9 "
                    f"--out {run.path} --threads 2 --device cuda:1 --resume")
    assert sw.child_command(run, plan, sw.State("restart", 3), 1, None)[-1] == "--force"
    assert "--resume" not in sw.child_command(run, plan, sw.State("new"), 1, None)
    pool = sw.Pool(plan, jobs=3, threads=1, gpus=2, say=print)
    pool.running = [SimpleNamespace(gpu=0)]
    assert pool._gpu() == 1
    pool.running.append(SimpleNamespace(gpu=1))
    assert pool._gpu() == 0
    assert sw.Pool(plan, jobs=3, threads=1, gpus=0, say=print)._gpu() is None


# ---------------------------------------------------------------- the manifest and run folders


def test_other_recipe_in_the_same_out_is_refused_more_seeds_extend(capsys, tmp_path, recipe):
    out = tmp_path / "sweep"
    sw.write_manifest(sw.make_plan(str(recipe), list(GRID[1:2]), ["0-1"], [], None, out))
    code, _, err = sweep_main(capsys, recipe, out, *GRID, "--set", "model.hidden=16", "--list")
    assert_one_line_error(code, err, "another recipe", "model.hidden", "another --out")
    code, _, err = sweep_main(capsys, recipe, out, *GRID, "--steps", "7", "--list")
    assert_one_line_error(code, err, "steps")
    code, _, err = sweep_main(capsys, recipe, out, "--grid", "model.glimpses=2", "--list")
    assert_one_line_error(code, err, "grid keys")
    other = tmp_path / "other.toml"
    other.write_text(TINY_RECIPE.replace("hidden = 32", "hidden = 16"))
    code, _, err = sweep_main(capsys, other, out, *GRID, "--list")
    assert_one_line_error(code, err, "model.hidden")
    # the same recipe (another copy of the file) with more values and seeds extends the sweep
    copy = tmp_path / "copy.toml"
    copy.write_text(TINY_RECIPE)
    code, stdout, err = sweep_main(capsys, copy, out, "--grid", "annotations=0,1%,100%", "--seeds", "0-2", "--list")
    assert code == 0, err
    assert len(list_states(stdout)) == 9
    assert set(list_states(stdout).values()) == {"new"}


def test_a_run_folder_of_another_spec_is_refused(capsys, tmp_path, recipe):
    out = tmp_path / "sweep"
    plan = sw.make_plan(str(recipe), None, None, [], None, out)
    fake_run(plan.runs[0].path, {**plan.runs[0].spec, "mc": 3}, [0.5])
    code, _, err = sweep_main(capsys, recipe, out, "--list")
    assert_one_line_error(code, err, "base/s0", "another spec", "mc")


def test_list_numbers_the_runs_and_writes_nothing(capsys, tmp_path, recipe):
    out = tmp_path / "sweep"
    code, stdout, err = sweep_main(capsys, recipe, out, *GRID, "--list")
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("4 run(s)")
    assert [line.split()[:2] for line in lines[1:]] == [
        ["0", "annotations=0/s0"], ["1", "annotations=0/s1"], ["2", "annotations=100pct/s0"], ["3", "annotations=100pct/s1"],
    ]
    assert not out.exists()


def test_only_runs_the_named_runs_and_warns_about_too_many_jobs(capsys, tmp_path, recipe):
    out = tmp_path / "sweep"
    result = run_cli("sweep", str(recipe), "--out", str(out), *GRID, "--only", "2", "--jobs", "64")
    assert result.returncode == 0, result.stderr
    assert "warning: 64 job(s)" in result.stderr
    assert "[2] done annotations=100pct/s0" in result.stderr
    assert (out / "annotations=100pct" / "s0" / "run.safetensors").is_file()
    assert not (out / "annotations=0").exists()
    manifest = json.loads((out / "sweep.json").read_text())
    assert manifest["grid"] == {"annotations": ["0", "100%"]} and manifest["seeds"] == [0, 1]
    assert manifest["cells"] == {"annotations=0": {"annotations": "0"}, "annotations=100pct": {"annotations": "100%"}}
    code, stdout, err = sweep_main(capsys, recipe, out, *GRID, "--list")
    assert list_states(stdout) == {
        "annotations=0/s0": "new", "annotations=0/s1": "new",
        "annotations=100pct/s0": "done (step 6)", "annotations=100pct/s1": "new",
    }
    # the table of a sweep in progress says how much of the plan it covers, and what it lacks
    code, stdout, err = run_main(["results", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "results.json").read_text())
    assert summary["planned"] == {"runs": 4, "missing": ["annotations=0/s0", "annotations=0/s1", "annotations=100%/s1"]}
    assert "Incomplete: 1 of 4 planned runs finished." in stdout
    assert "Not finished yet: annotations=0/s0, annotations=0/s1, annotations=100%/s1." in stdout


def test_ctrl_c_stops_the_children_with_a_checkpoint(capsys, tmp_path, recipe):
    out = tmp_path / "sweep"
    first = out / "annotations=0" / "s0" / "run.safetensors"
    proc = subprocess.Popen(
        [str(LGDRAM), "sweep", str(recipe), "--out", str(out), *GRID, "--jobs", "1", "--steps", "5000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint,
    )
    try:
        wait_for(first.exists, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 130, stderr
    assert "interrupted annotations=0/s0 (checkpoint saved" in stderr
    assert "continue with --resume" in (first.parent / "train.log").read_text()
    code, stdout, err = sweep_main(capsys, recipe, out, *GRID, "--steps", "5000", "--list")
    assert list_states(stdout)["annotations=0/s0"].startswith("partial at step")
    assert not (out / "annotations=0" / "s1").exists()  # --jobs 1: the next run never started


# ---------------------------------------------------------------- results


def fake_run(path: Path, spec: dict, accuracies: list[float], *, step: int | None = None,
             location: float | None = 5.0, steps_to: dict | None = None) -> Path:
    """A finished run without training: a one-tensor checkpoint at its last step and one
    evaluation per accuracy, evenly spaced up to `spec['steps']`."""
    import torch

    from lgdram_cli.training.checkpoint import metrics_path, save_checkpoint

    steps = spec["steps"]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, torch.nn.Linear(1, 1), spec, steps if step is None else step, {})
    every = steps // len(accuracies)
    records = []
    for i, acc in enumerate(accuracies, 1):
        record = {"kind": "eval", "step": i * every, "n": 20, "accuracy": acc, "error": 100 * (1 - acc),
                  "steps_to": steps_to or {}}
        if location is not None:
            record.update(location_error_px=location, glimpses_in_box=0.5)
        records.append(record)
    metrics_path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


SPEC = {"steps": 100, "seed": 0, "eval_n": 20, "model": {"type": "ram", "hidden": 32}, "annotations": 0.0}


def test_results_aggregates_per_cell(capsys, tmp_path):
    root = tmp_path / "runs"
    for seed, (acc, loc, reached) in enumerate(((0.5, 4.0, {"80%": 40}), (0.9, 6.0, {"80%": 60, "90%": 100}))):
        fake_run(root / "a" / f"s{seed}" / "run.safetensors", {**SPEC, "seed": seed}, [0.2, acc],
                 location=loc, steps_to=reached)
    fake_run(root / "b" / "s0" / "run.safetensors", {**SPEC, "annotations": 1.0}, [0.3, 0.7])
    fake_run(root / "b" / "s1" / "run.safetensors", {**SPEC, "annotations": 1.0, "seed": 1}, [0.3], step=50)  # unfinished
    code, stdout, err = run_main(["results", str(root)], capsys)
    assert code == 0, err
    assert "left out" in err and "b/s1" in err and "unfinished" in err
    summary = json.loads((root / "results.json").read_text())
    assert summary["runs"] == 3 and summary["differ"] == ["annotations"]
    a, b = sorted(summary["cells"], key=lambda c: c["cell"])
    assert (a["cell"], a["n"], a["seeds"], b["n"]) == ("a", 2, [0, 1], 1)
    assert a["test_error"]["mean"] == pytest.approx(30.0)
    assert a["test_error"]["std"] == pytest.approx(28.2842712)  # sample std of 50 and 10
    assert (a["test_error"]["min"], a["test_error"]["max"]) == pytest.approx((10.0, 50.0))
    assert a["location_error_px"]["mean"] == pytest.approx(5.0)
    assert (a["steps_to_80"]["mean"], a["steps_to_80"]["reached"]) == (50.0, 2)
    assert (a["steps_to_90"]["mean"], a["steps_to_90"]["reached"], a["steps_to_90"]["of"]) == (100.0, 1, 2)
    assert b["test_error"]["std"] is None  # one seed: no spread (tables show no ±)
    assert [r["curve"]["accuracy"] for r in a["runs"]] == [[0.2, 0.5], [0.2, 0.9]]
    table = (root / "results.md").read_text()
    assert stdout == table
    assert table.startswith("3 finished runs in 2 cell(s), seeds 0, 1; cells differ in annotations; 100 steps")
    row = next(line for line in table.splitlines() if line.startswith("| `a`"))
    assert "| 2 | 30.00 ± 28.28 | 10.00–50.00 |" in row and "50 ± 14 (2/2)" in row and "| 100 (1/2) |" in row
    single = next(line for line in table.splitlines() if line.startswith("| `b`"))
    assert "| 1 |" in single and "±" not in single
    header, *rows = (root / "results.csv").read_text().splitlines()
    assert header.startswith("cell,folder,n,seeds,test_error_mean") and len(rows) == 2
    assert (root / "results.curves.png").read_bytes()[:4] == b"\x89PNG"


def test_results_refuses_mixed_specs_in_a_cell(capsys, tmp_path):
    root = tmp_path / "runs"
    fake_run(root / "cell" / "s0" / "run.safetensors", SPEC, [0.5])
    fake_run(root / "cell" / "s1" / "run.safetensors", {**SPEC, "seed": 1, "model": {"type": "ram", "hidden": 16}}, [0.5])
    code, _, err = run_main(["results", str(root)], capsys)
    assert_one_line_error(code, err, "cell", "different specs", "model.hidden")
    assert not (root / "results.md").exists()
    fake_run(root / "other" / "run.safetensors", SPEC, [0.5])
    fake_run(root / "other" / "copy.safetensors", SPEC, [0.6])
    code, _, err = run_main(["results", str(root / "other")], capsys)
    assert_one_line_error(code, err, "seed 0")


def test_results_without_finished_runs_exits_2_naming_the_folders(capsys, tmp_path):
    empty, unfinished = tmp_path / "empty", tmp_path / "unfinished"
    empty.mkdir()
    fake_run(unfinished / "s0" / "run.safetensors", SPEC, [0.5], step=50)
    code, _, err = run_main(["results", str(empty), str(unfinished)], capsys)
    assert_one_line_error(code, err, "no finished run", str(empty), str(unfinished))
    code, _, err = run_main(["results", str(tmp_path / "missing")], capsys)
    assert_one_line_error(code, err, "no such folder", "missing")
    code, _, err = run_main(["results", str(empty), "--format", "xml"], capsys)
    assert_one_line_error(code, err, "xml")


# ---------------------------------------------------------------- end to end


def find_pid(marker: str) -> int | None:
    """The process whose command line has `marker` as an argument (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker.encode() in args and b"train" in args:
                return int(entry.name)
    return None


def wait_for(condition, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def kill_after_a_checkpoint(pid: int, run: Path, timeout: float = 90) -> None:
    """SIGKILL `pid` once `run` has a checkpoint with its optimizer state (a kill between the
    two files makes the sweep start that run over, not resume it). The process is stopped
    while the files are checked, so the kill lands in the state that was checked."""
    from safetensors import safe_open

    def step(path: Path) -> str | None:
        try:
            with safe_open(str(path), framework="pt") as f:
                return (f.metadata() or {}).get("lgdram.step")
        except Exception:
            return None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        os.kill(pid, signal.SIGSTOP)
        model, optim = step(run), step(run.with_name("run.optim.safetensors"))
        if model is not None and model == optim:
            os.kill(pid, signal.SIGKILL)
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"{run} never got a checkpoint")


@pytest.mark.parametrize(("flag", "order"), [([], [0, 1, 2, 3]), (["--seeds-first"], [0, 2, 1, 3])])
def test_seeds_first_runs_one_seed_of_every_cell_before_the_next(capsys, tmp_path, recipe, monkeypatch, flag, order):
    """The order runs are handed to the pool (the pool starts them in that order; the numbering
    stays the plan's: 0 = annotations=0/s0, 1 = annotations=0/s1, 2 = annotations=100%/s0)."""
    handed: list[int] = []

    def record(pool, work):
        handed.extend(run.index for run, _ in work)
        return sw.Outcome()

    monkeypatch.setattr(sw.Pool, "run", record)
    code, _, err = sweep_main(capsys, recipe, tmp_path / "sweep", *GRID, "--jobs", "1", *flag)
    assert code == 0, err
    assert handed == order


@pytest.mark.slow
def test_sweep_killed_run_resumes_and_results_are_complete(capsys, tmp_path, recipe):
    """The issue's done-when: 2 × 2 tiny runs, one SIGKILLed mid-run; the rerun resumes it."""
    out = tmp_path / "sweep"
    args = [str(LGDRAM), "sweep", str(recipe), "--out", str(out), *GRID, "--jobs", "2", "--steps", "100",
            "--set", "eval_every=10"]
    victim = out / "annotations=0" / "s0" / "run.safetensors"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: find_pid(str(victim)) is not None, proc)
        kill_after_a_checkpoint(find_pid(str(victim)), victim)
        _, stderr = proc.communicate(timeout=180)
    finally:
        stop(proc)
    assert proc.returncode == 1, stderr
    assert "FAILED annotations=0/s0 (killed by signal 9)" in stderr
    assert f"failed: annotations=0/s0 (killed by signal 9), log {victim.parent / 'train.log'}" in stderr
    assert stderr.count("] done ") == 3

    code, stdout, err = run_main([*args[1:], "--list"], capsys)
    assert code == 0, err
    states = list_states(stdout)
    assert states.get("annotations=0/s0", "").startswith("partial at step"), (stdout, err)
    assert [s for n, s in states.items() if n != "annotations=0/s0"] == ["done (step 100)"] * 3

    rerun = run_cli(*args[1:], timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert "resume annotations=0/s0 from step" in rerun.stderr
    assert rerun.stderr.count("skip ") == 3
    log = (victim.parent / "train.log").read_text()
    assert "resuming" in log and "--resume" in log
    assert any(r.get("kind") == "eval" and r["step"] == 100 for r in read_jsonl(victim.with_name("run.metrics.jsonl")))

    code, stdout, err = run_main(["results", str(out)], capsys)
    assert code == 0, err
    summary = json.loads((out / "results.json").read_text())
    assert summary["runs"] == 4 and summary["seeds"] == [0, 1]
    assert summary["planned"] == {"runs": 4, "missing": []} and "Incomplete" not in stdout
    assert {c["cell"]: (c["n"], c["seeds"]) for c in summary["cells"]} == {
        "annotations=0": (2, [0, 1]), "annotations=100%": (2, [0, 1]),
    }
    rows = [line for line in stdout.splitlines() if line.startswith("| `annotations=")]
    assert len(rows) == 2 and all("| 2 |" in row for row in rows)
    for suffix in ("md", "csv", "json", "curves.png"):
        assert (out / f"results.{suffix}").is_file()
