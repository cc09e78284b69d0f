"""`lgdram` on the command line: gen-data, plugins, schema, --help/--version, and the error contract
(bad input: exit 2, one 'error:' line, no traceback, no file left behind)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import h5py
import numpy as np
import pytest

from helpers import (
    interrupt_when,
    BUILTIN_DATASETS,
    PRESETS,
    assert_one_line_error,
    blob_digits,
    gz_bytes,
    leftovers,
    run_cli,
    run_main,
    write_idx_dir,
)
from lgdram_cli.data import idx
from lgdram_cli.data.h5io import CanvasFile

SMALL = ["--dataset", "mcmnist", "--set", "digits=mnist-mini", "--set", "canvas=40", "--n", "20"]


def gen_data(tmp_path: Path, capsys, *args: str, out: str = "out/d.h5") -> tuple[int, str, str, Path]:
    path = tmp_path / out
    path.parent.mkdir(parents=True, exist_ok=True)
    code, stdout, stderr = run_main(["gen-data", *args, "--out", str(path)], capsys)
    return code, stdout, stderr, path


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[name][:] for name in f}


# ---------------------------------------------------------------- the acceptance check


def test_gen_data_mcmnist_100_offline_and_reproducible(tmp_path):
    args = ["gen-data", "--dataset", "mcmnist-100", "--n", "1000", "--split", "train", "--seed", "0"]
    first = run_cli(*args, "--out", "train.h5", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    assert "wrote 1000 train samples of mcmnist" in first.stderr
    cf = CanvasFile(tmp_path / "train.h5")
    assert cf.n == 1000 and cf.shape == (1, 100, 100)
    spec = cf.spec
    assert spec["dataset"]["distractors"] == [4, 20] and spec["dataset"]["canvas"] == [100, 100]
    assert spec["dataset"]["digits"] in ("mnist", "mnist-mini")  # offline here: the bundled digits
    assert spec["dataset"]["digits"] == cf.attrs["lgdram.digits.source"]
    batch, annotated = cf.read(slice(0, 1000))
    assert batch.n_distractors.min() >= 4 and batch.n_distractors.max() <= 20
    assert annotated.all()  # default: 100% annotated
    cf.close()

    second = run_cli(*args, "--out", "again.h5", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    a, b = read_arrays(tmp_path / "train.h5"), read_arrays(tmp_path / "again.h5")
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    assert leftovers(tmp_path) == ["again.h5", "train.h5"]


def test_different_seed_gives_different_data(tmp_path, capsys):
    code, _, _, one = gen_data(tmp_path, capsys, *SMALL, "--seed", "1", out="one.h5")
    assert code == 0
    code, _, _, two = gen_data(tmp_path, capsys, *SMALL, "--seed", "2", out="two.h5")
    assert code == 0
    assert not np.array_equal(read_arrays(one)["images"], read_arrays(two)["images"])


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**32 + 7)])
def test_any_accepted_seed_gives_its_own_data(tmp_path, capsys, seed):
    """A seed is either refused as bad input, or it selects data no other seed gives
    (seeds must not silently alias: e.g. a 'test' set drawn with seed 2**32 + 7 would repeat
    the 'train' set drawn with seed 7)."""
    low = str(int(seed) % 2**32)
    code, _, stderr, path = gen_data(tmp_path, capsys, *SMALL, "--seed", seed, out="s.h5")
    if code != 0:
        assert_one_line_error(code, stderr, "seed")
        assert leftovers(tmp_path) == []
        return
    code, _, stderr, other = gen_data(tmp_path, capsys, *SMALL, "--seed", low, out="low.h5")
    assert code == 0, stderr
    same = np.array_equal(read_arrays(path)["images"], read_arrays(other)["images"])
    assert not same, f"--seed {seed} and --seed {low} give identical canvases"


# ---------------------------------------------------------------- the bad-input contract


def _idx_source(tmp_path: Path, images: bytes | None = None, labels: bytes | None = None, raw: bytes | None = None) -> str:
    directory = write_idx_dir(tmp_path / "digits", blob_digits(20, 80, 0), blob_digits(20, 90, 1))
    if images is not None:
        (directory / "train-images-idx3-ubyte.gz").write_bytes(gz_bytes(images))
    if labels is not None:
        (directory / "train-labels-idx1-ubyte.gz").write_bytes(gz_bytes(labels))
    if raw is not None:
        (directory / "train-labels-idx1-ubyte.gz").write_bytes(raw)
    return f"digits=idx:{directory}"


def _corrupt_gzip() -> bytes:
    noisy = np.random.default_rng(0).integers(0, 10, 2000).astype(np.uint8)
    data = bytearray(gz_bytes(idx.encode_labels(noisy)))
    for i in range(15, len(data) - 10):
        data[i] ^= 0x55
    return bytes(data)


BAD_INPUTS = {
    "unknown dataset": (["--dataset", "mcmnsit", "--n", "5"], ["unknown dataset 'mcmnsit'", "did you mean 'mcmnist'"]),
    "unknown key": ([*SMALL, "--set", "canvs=100"], ["unknown key 'dataset.canvs'", "did you mean 'canvas'"]),
    "unknown top-level key": ([*SMALL, "--set", "dataset.type=mcmnist", "--set", "sede=3"], ["unknown key"]),
    "unknown source": ([*SMALL, "--set", "digits=mnst"], ["unknown digit source 'mnst'", "did you mean 'mnist'"]),
    "canvas below a digit": ([*SMALL, "--set", "canvas=20"], ["canvas 20x20 is smaller than a 28x28 digit"]),
    "canvas HxW below a digit": ([*SMALL, "--set", "canvas=100x27"], ["smaller than a 28x28 digit"]),
    "distractors lo>hi": ([*SMALL, "--set", "distractors=9-4"], ["lower bound exceeds", "4-9"]),
    "distractors negative": ([*SMALL, "--set", "distractors=-3"], ["cannot be negative"]),
    "annotations above 100%": ([*SMALL, "--annotations", "150%"], ["between 0% and 100%"]),
    "annotations negative": ([*SMALL, "--annotations", "-5%"], ["--annotations"]),
    "annotations not a number": ([*SMALL, "--annotations", "lots"], ["--annotations"]),
    "annotations above N": ([*SMALL, "--annotations", "21"], ["more than the 20 samples"]),
    "n zero": ([*SMALL[:-2], "--n", "0"], ["--n 0"]),
    "n negative": ([*SMALL[:-2], "--n", "-4"], ["--n -4"]),
    "n in spec zero": ([*SMALL[:-2], "--set", "n=0"], ["'n'"]),
    "unknown split": ([*SMALL, "--split", "val"], ["'split'"]),
    "mnist with a canvas": (["--dataset", "mnist", "--n", "5", "--set", "canvas=60"], ["'translated'"]),
    "malformed --set": ([*SMALL, "--set", "canvas"], ["--set expects key=value"]),
    "no dataset": (["--n", "5"], ["no dataset given"]),
    "missing spec file": ([*SMALL, "--spec", "nope.toml"], ["spec file not found"]),
    "unknown device": ([*SMALL, "--device", "tpu"], ["--device tpu"]),
    "threads negative": ([*SMALL, "--threads", "-2"], ["--threads -2"]),
    "markup-like value": ([*SMALL, "--set", "digits=[/oops]"], ["unknown digit source '[/oops]'"]),
    "markup-like name": (["--dataset", "[bold]x", "--n", "5"], ["unknown dataset '[bold]x'"]),
}


@pytest.mark.parametrize("args,needles", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_no_file(tmp_path, capsys, args, needles):
    code, stdout, stderr, out = gen_data(tmp_path, capsys, *args)
    assert_one_line_error(code, stderr, *needles)
    assert stdout == ""
    assert leftovers(tmp_path) == [], "a failed run left files behind"


IDX_FAULTS = {
    "wrong image magic": ({"images": b"\x00\x00\x08\x01" + bytes(12) + bytes(20 * 784)}, ["magic 2049", "expected 2051"]),
    "wrong label magic": ({"labels": b"\x00\x00\x08\x03" + (20).to_bytes(4, "big") + bytes(20)}, ["magic 2051"]),
    "images truncated": ({"images": idx.encode_images(np.zeros((20, 28, 28), np.uint8))[:-50]}, ["truncated or padded"]),
    "labels padded": ({"labels": idx.encode_labels(np.zeros(20)) + b"\x01\x02"}, ["truncated or padded"]),
    "gzip cut short": ({"raw": gz_bytes(idx.encode_labels(np.arange(20) % 10))[:-12]}, ["cannot read IDX file"]),
    "gzip corrupt": ({"raw": _corrupt_gzip()}, ["cannot read IDX file"]),
}


@pytest.mark.parametrize("fault,needles", list(IDX_FAULTS.values()), ids=list(IDX_FAULTS))
def test_bad_idx_digits_exit_2_and_leave_no_file(tmp_path, capsys, fault, needles):
    source = _idx_source(tmp_path, **fault)
    out_dir = tmp_path / "out"
    code, _, stderr, _ = gen_data(tmp_path, capsys, "--dataset", "translated", "--n", "5", "--set", source)
    assert_one_line_error(code, stderr, "train-", *needles)
    assert leftovers(out_dir) == [], "a failed run left its output or temp file behind"


def test_missing_output_folder(tmp_path, capsys):
    code, _, stderr = run_main(["gen-data", *SMALL, "--out", str(tmp_path / "no" / "such" / "d.h5")], capsys)
    assert_one_line_error(code, stderr, "folder", "does not exist")
    assert leftovers(tmp_path) == []


def test_output_is_a_directory(tmp_path, capsys):
    (tmp_path / "d.h5").mkdir()
    code, _, stderr = run_main(["gen-data", *SMALL, "--out", str(tmp_path / "d.h5"), "--force"], capsys)
    assert_one_line_error(code, stderr, "is a directory")
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_read_only_output_folder(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, stderr = run_main(["gen-data", *SMALL, "--out", str(folder / "d.h5")], capsys)
        assert_one_line_error(code, stderr, "not writable")
        assert leftovers(folder) == []
    finally:
        folder.chmod(0o755)


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "d.h5"
    out.write_bytes(b"precious")
    code, _, stderr = run_main(["gen-data", *SMALL, "--out", str(out)], capsys)
    assert_one_line_error(code, stderr, "already exists", "--force")
    assert out.read_bytes() == b"precious"
    assert leftovers(tmp_path) == ["d.h5"]

    code, _, stderr = run_main(["gen-data", *SMALL, "--out", str(out), "--force"], capsys)
    assert code == 0, stderr
    assert CanvasFile(out).n == 20
    assert leftovers(tmp_path) == ["d.h5"]


@pytest.mark.parametrize(
    "content,name,needles",
    [
        ("this is = = not toml", "spec.toml", ["cannot parse spec file"]),
        ('{"dataset": {"type": "mcmnist"}, "n": ', "spec.json", ["cannot parse spec file"]),
        ("- a\n- b\n", "spec.yaml", ["must hold a table/mapping"]),
        ("n: [1, 2", "spec.yml", ["cannot parse spec file"]),
        ("n = 5", "spec.ini", ["must end in .toml, .json, .yaml or .yml"]),
        ("\x89HDF\r\n\x1a\n" + "\x00" * 40, "spec.toml", ["cannot parse spec file"]),
    ],
)
def test_bad_spec_files_exit_2(tmp_path, capsys, content, name, needles):
    spec = tmp_path / name
    spec.write_text(content)
    code, _, stderr, _ = gen_data(tmp_path, capsys, "--spec", str(spec))
    assert_one_line_error(code, stderr, str(spec), *needles)
    assert leftovers(tmp_path / "out") == []


def test_truncated_recipe_file_as_dataset_exits_2(tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"type": "mcmnist", "canvas": ')
    code, _, stderr, _ = gen_data(tmp_path, capsys, "--dataset", str(recipe), "--n", "5")
    assert_one_line_error(code, stderr, "recipe.json")
    assert leftovers(tmp_path / "out") == []


def test_debug_shows_the_traceback_but_keeps_exit_2(tmp_path, capsys):
    code, _, stderr = run_main(["--debug", "gen-data", *SMALL, "--set", "canvas=20", "--out", str(tmp_path / "d.h5")], capsys)
    assert code == 2
    assert "Traceback" in stderr
    assert stderr.strip().splitlines()[-1].startswith("error:")
    assert leftovers(tmp_path) == []


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    code, _, stderr = run_main(["gen-data", "--bogus-option", "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, stderr, "--bogus-option")
    code, _, stderr = run_main(["gen-data", *SMALL], capsys)  # --out missing
    assert_one_line_error(code, stderr, "--out")
    code, _, stderr = run_main(["gen-data", *SMALL[:-2], "--n", "many", "--out", "x.h5"], capsys)
    assert_one_line_error(code, stderr, "'--n'")
    code, _, stderr = run_main(["no-such-command"], capsys)
    assert_one_line_error(code, stderr, "no-such-command")
    assert leftovers(tmp_path) == []


def test_usage_error_in_a_real_process(tmp_path):
    result = run_cli("gen-data", "--nope", "--out", "x.h5", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "--nope")
    assert leftovers(tmp_path) == []


def test_interrupt_exits_130_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    from lgdram_cli.data import h5io

    def interrupted(self, batch, annotated):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5io.CanvasWriter, "append", interrupted)
    code, _, stderr = run_main(["gen-data", *SMALL, "--out", str(tmp_path / "d.h5")], capsys)
    assert code == 130
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert leftovers(tmp_path) == []


def test_ctrl_c_in_a_real_process_exits_130_and_leaves_nothing(tmp_path):
    code, stderr = interrupt_when(
        ["gen-data", "--dataset", "mcmnist-200", "--n", "1000000", "--set", "digits=mnist-mini", "--out", "big.h5"],
        started=lambda: bool(list(tmp_path.glob(".big.h5.*"))),  # its hidden temp file: generation has started
        cwd=tmp_path,
    )
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert leftovers(tmp_path) == []


def test_runtime_failure_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    from lgdram_cli.data import h5io

    def broken(self, batch, annotated):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(h5io.CanvasWriter, "append", broken)
    code, _, stderr = run_main(["gen-data", *SMALL, "--out", str(tmp_path / "d.h5")], capsys)
    lines = stderr.strip().splitlines()
    assert code == 1 and len(lines) == 1, stderr
    assert "the disk caught fire" in lines[0] and "--debug" in lines[0]
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- working runs


def test_gen_data_options_reach_the_file(tmp_path, capsys):
    code, _, stderr, out = gen_data(
        tmp_path, capsys, "--dataset", "cmnist-60", "--n", "40", "--split", "test", "--seed", "3",
        "--annotations", "25%", "--set", "digits=mnist-mini", "--set", "canvas=50x64", "--set", "colour=true",
    )
    assert code == 0, stderr
    cf = CanvasFile(out)
    assert cf.shape == (3, 50, 64) and cf.n == 40
    assert cf.attrs["lgdram.split"] == "test" and cf.spec["seed"] == 3
    assert cf.spec["dataset"]["distractors"] == [4, 4]  # from the preset
    _, annotated = cf.read(slice(0, 40))
    assert int(annotated.sum()) == 10


@pytest.mark.parametrize("value,expected", [("1%", 2), ("0%", 0), ("100%", 200), ("37", 37), ("0.5%", 1), ("200", 200)])
def test_annotations_share_or_count(tmp_path, capsys, value, expected):
    code, _, stderr, out = gen_data(tmp_path, capsys, *SMALL[:-2], "--n", "200", "--annotations", value)
    assert code == 0, stderr
    _, annotated = CanvasFile(out).read(slice(0, 200))
    assert int(annotated.sum()) == expected


@pytest.mark.parametrize("name", [*BUILTIN_DATASETS, *PRESETS])
def test_every_generator_and_preset_generates(tmp_path, capsys, name):
    code, _, stderr, out = gen_data(tmp_path, capsys, "--dataset", name, "--n", "3", "--set", "digits=mnist-mini")
    assert code == 0, stderr
    cf = CanvasFile(out)
    assert cf.n == 3
    assert cf.spec["dataset"]["type"] in BUILTIN_DATASETS


def test_help_and_version():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("gen-data", "plugins", "schema"):
        assert command in result.stdout
    result = run_cli("gen-data", "--help")
    assert result.returncode == 0 and "--dataset" in result.stdout and "--annotations" in result.stdout
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lgdram {version('lgdram')}"


def test_help_does_not_import_torch():
    code = (
        "import sys; from lgdram_cli.cli.app import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported for --help'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_plugins_table_lists_generators_and_presets():
    result = run_cli("plugins", env={"COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    for name in (*BUILTIN_DATASETS, *PRESETS):
        assert name in result.stdout
    assert "Modified cluttered MNIST (M-CMNIST) 100x100 with 4-20 distractors" in result.stdout
    assert "problem" not in result.stdout


def test_plugins_json(capsys):
    code, stdout, stderr = run_main(["plugins", "--json"], capsys)
    assert code == 0, stderr
    listing = json.loads(stdout)
    datasets = {r["name"]: r for r in listing["entries"] if r["kind"] == "dataset"}
    assert set(BUILTIN_DATASETS) <= set(datasets)
    for name in BUILTIN_DATASETS:
        assert datasets[name]["ok"] and datasets[name]["distribution"] == "lgdram"
        assert datasets[name]["description"]
    presets = {r["name"]: r for r in listing["entries"] if r["kind"] == "preset"}
    assert set(presets) == set(PRESETS)
    assert presets["mcmnist-200"]["description"].startswith("Modified cluttered MNIST")


def test_schema_gen_data_is_a_json_schema_of_the_generator_configs(capsys):
    code, stdout, stderr = run_main(["schema", "gen-data"], capsys)
    assert code == 0, stderr
    schema = json.loads(stdout)
    assert schema["type"] == "object"
    assert {"dataset", "n", "split", "seed", "annotations"} <= set(schema["properties"])
    assert "n" in schema["required"] and "dataset" in schema["required"]
    assert schema["properties"]["split"]["enum"] == ["train", "test"]
    options = schema["properties"]["dataset"]["oneOf"]
    types = {o["properties"]["type"]["default"] for o in options}
    assert set(BUILTIN_DATASETS) <= types
    for option in options:
        assert option["type"] == "object" and option.get("additionalProperties") is False
        if option["properties"]["type"]["default"] != "mnist":
            assert {"canvas", "distractors", "distractor_size", "colour", "digits"} <= set(option["properties"])

    code, _, stderr = run_main(["schema", "gen-dta"], capsys)
    assert_one_line_error(code, stderr, "did you mean 'gen-data'")


def _bad_dataset_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "in" / f"{kind}.h5"
    path.parent.mkdir()
    if kind == "text":
        path.write_text("images,labels\n1,2\n")
    elif kind == "plain-hdf5":
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=np.zeros((2, 1, 28, 28), np.uint8))
    else:  # half of a real canvas file
        from lgdram_cli.data.gen import GenDataSpec, generate_file

        full = tmp_path / "in" / "full.h5"

        generate_file(GenDataSpec(dataset={"type": "translated", "digits": "mnist-mini"}, n=64), full)
        path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
        full.unlink()
    return path


@pytest.mark.parametrize(
    "kind,needle",
    [("text", "not a readable HDF5 file"), ("truncated", "not a readable HDF5 file"), ("plain-hdf5", "not an lgdram canvas file")],
)
@pytest.mark.parametrize("command", ["visualize", "train"])
def test_readers_reject_bad_dataset_files_with_exit_2(tmp_path, capsys, kind, needle, command):
    bad = _bad_dataset_file(tmp_path, kind)
    before = leftovers(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if command == "visualize":
        args = ["visualize", "--data", str(bad), "--out", str(out_dir / "preview.png")]
    else:
        args = ["train", "--data", str(bad), "--steps", "1", "--out", str(out_dir / "run.safetensors")]
    code, _, stderr = run_main(args, capsys)
    assert_one_line_error(code, stderr, str(bad), needle)
    assert leftovers(tmp_path) == before
