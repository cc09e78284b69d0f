"""Run specs: spec files (TOML/JSON/YAML), `--set` overrides, strict validation, `gen-data --spec`."""

from __future__ import annotations

import json

import pytest
from pydantic import Field

from helpers import assert_one_line_error, leftovers, run_main
from lgdram_cli.data.gen import GenDataSpec
from lgdram_cli.data.h5io import CanvasFile
from lgdram_cli.errors import UserError
from lgdram_cli.specs import StrictModel, apply_overrides, parse_value, read_spec_file, validate

SPEC = {"n": 12, "seed": 4, "split": "test", "dataset": {"type": "mcmnist", "canvas": [40, 48], "distractors": "1-3"}}

TEXTS = {
    "toml": 'n = 12\nseed = 4\nsplit = "test"\n\n[dataset]\ntype = "mcmnist"\ncanvas = [40, 48]\ndistractors = "1-3"\n',
    "json": json.dumps(SPEC),
    "yaml": "n: 12\nseed: 4\nsplit: test\ndataset:\n  type: mcmnist\n  canvas: [40, 48]\n  distractors: 1-3\n",
    "yml": "{n: 12, seed: 4, split: test, dataset: {type: mcmnist, canvas: [40, 48], distractors: 1-3}}\n",
}


@pytest.mark.parametrize("suffix", list(TEXTS))
def test_read_spec_file_formats_agree(tmp_path, suffix):
    path = tmp_path / f"spec.{suffix}"
    path.write_text(TEXTS[suffix])
    assert read_spec_file(path) == SPEC
    assert read_spec_file(str(path)) == SPEC


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("bad.toml", "n = = 3", "cannot parse spec file"),
        ("bad.json", "{'n': 3}", "cannot parse spec file"),
        ("bad.yaml", "n: [1, 2\nm: 3", "cannot parse spec file"),
        ("list.json", "[1, 2, 3]", "must hold a table/mapping"),
        ("scalar.yaml", "just a string", "must hold a table/mapping"),
        ("empty.yaml", "", "must hold a table/mapping"),
        ("spec.txt", "n = 3", "must end in .toml, .json, .yaml or .yml"),
    ],
)
def test_bad_spec_files_are_user_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserError) as exc:
        read_spec_file(path)
    message = str(exc.value)
    assert needle in message and str(path) in message
    assert "\n" not in message


def test_missing_spec_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="spec file not found"):
        read_spec_file(tmp_path / "absent.toml")
    with pytest.raises(UserError, match="spec file not found"):
        read_spec_file(tmp_path)


@pytest.mark.parametrize(
    "text,value",
    [
        ("3", 3),
        ("-2", -2),
        ("2.5", 2.5),
        ("1e-3", 0.001),
        ("true", True),
        ("yes", True),
        ("On", True),
        ("false", False),
        ("no", False),
        ("off", False),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("null", None),
        ('"7"', "7"),
        ("4-20", "4-20"),
        ("100x300", "100x300"),
        ("mnist-mini", "mnist-mini"),
        ("idx:/data/digits", "idx:/data/digits"),
        ("", ""),
    ],
)
def test_parse_value(text, value):
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_apply_overrides_sets_nested_keys_without_mutating_input():
    data = {"n": 5, "dataset": {"type": "mcmnist", "canvas": 100}}
    out = apply_overrides(
        data, ["dataset.canvas=100x300", "n=7", "model.core.hidden=256", "dataset.colour=true", " tag =a=b"]
    )
    assert out == {
        "n": 7,
        "dataset": {"type": "mcmnist", "canvas": "100x300", "colour": True},
        "model": {"core": {"hidden": 256}},
        "tag": "a=b",  # only the first '=' splits; keys are stripped
    }
    assert data == {"n": 5, "dataset": {"type": "mcmnist", "canvas": 100}}
    assert apply_overrides(data, None) == data
    assert apply_overrides(data, ["n=1", "n=2"])["n"] == 2  # the last one wins


@pytest.mark.parametrize(
    "override,needle",
    [("canvas", "--set expects key=value"), ("=3", "--set expects key=value"), ("n.sub=3", "'n' is a value, not a section")],
)
def test_bad_overrides(override, needle):
    with pytest.raises(UserError, match=needle):
        apply_overrides({"n": 5}, [override])


class Demo(StrictModel):
    canvas: int = 60
    distractors: int = Field(4, ge=0)


def test_validate_names_unknown_keys_and_bad_values():
    assert validate(Demo, {"canvas": 10}).canvas == 10
    with pytest.raises(UserError) as exc:
        validate(Demo, {"canvs": 10}, where="dataset")
    assert str(exc.value) == "unknown key 'dataset.canvs' (did you mean 'canvas'?); valid keys: canvas, distractors"
    with pytest.raises(UserError) as exc:
        validate(Demo, {"distractors": -1, "canvas": "big"}, where="dataset")
    message = str(exc.value)
    assert message.startswith("invalid value for 'dataset.")
    assert "(+1 more)" in message and "\n" not in message
    spec = validate(Demo, {})
    with pytest.raises(Exception):  # assignments are validated too
        spec.distractors = -5


def test_gen_data_spec_is_strict():
    ok = GenDataSpec.model_validate({"dataset": {"type": "cmnist"}, "n": 3})
    assert ok.split == "train" and ok.seed == 0 and ok.annotations == 1.0
    for bad in ({"dataset": {}, "n": 0}, {"dataset": {}, "n": 3, "extra": 1}, {"dataset": {}, "n": 3, "annotations": 1.5}):
        with pytest.raises(UserError):
            validate(GenDataSpec, bad)


# ---------------------------------------------------------------- gen-data --spec


@pytest.mark.parametrize("suffix", ["toml", "json", "yaml"])
def test_gen_data_from_spec_file(tmp_path, capsys, suffix):
    spec = tmp_path / f"run.{suffix}"
    spec.write_text(TEXTS[suffix])
    out = tmp_path / "d.h5"
    code, _, stderr = run_main(["gen-data", "--spec", str(spec), "--set", "digits=mnist-mini", "--out", str(out)], capsys)
    assert code == 0, stderr
    cf = CanvasFile(out)
    assert cf.n == 12 and cf.shape == (1, 40, 48)
    assert cf.spec["seed"] == 4 and cf.spec["split"] == "test"
    assert cf.spec["dataset"]["distractors"] == [1, 3]
    batch, _ = cf.read(slice(0, 12))
    assert 1 <= int(batch.n_distractors.min()) and int(batch.n_distractors.max()) <= 3


def test_set_and_options_override_the_spec_file(tmp_path, capsys):
    spec = tmp_path / "run.toml"
    spec.write_text(TEXTS["toml"])
    out = tmp_path / "d.h5"
    code, _, stderr = run_main(
        [
            "gen-data", "--spec", str(spec), "--seed", "9",
            "--set", "canvas=32x64",  # a dataset parameter, without the 'dataset.' prefix
            "--set", "dataset.digits=mnist-mini",  # the same, with it
            "--set", "n=6",  # a top-level field
            "--set", "split=train",
            "--out", str(out),
        ],
        capsys,
    )
    assert code == 0, stderr
    cf = CanvasFile(out)
    assert cf.n == 6 and cf.shape == (1, 32, 64)
    assert cf.spec["seed"] == 9 and cf.spec["split"] == "train"
    assert cf.spec["dataset"]["digits"] == "mnist-mini"
    assert spec.read_text() == TEXTS["toml"]  # the spec file itself is untouched


def test_dataset_option_replaces_the_spec_files_dataset(tmp_path, capsys):
    spec = tmp_path / "run.json"
    spec.write_text(TEXTS["json"])
    out = tmp_path / "d.h5"
    code, _, stderr = run_main(
        ["gen-data", "--spec", str(spec), "--dataset", "translated", "--set", "digits=mnist-mini", "--out", str(out)], capsys
    )
    assert code == 0, stderr
    cf = CanvasFile(out)
    assert cf.spec["dataset"]["type"] == "translated" and cf.shape == (1, 60, 60) and cf.n == 12


def test_recipe_file_as_dataset(tmp_path, capsys):
    recipe = tmp_path / "my-task.yaml"
    recipe.write_text("type: cmnist\ncanvas: 44\ndistractors: 2\ndigits: mnist-mini\n")
    out = tmp_path / "d.h5"
    code, _, stderr = run_main(["gen-data", "--dataset", str(recipe), "--n", "4", "--out", str(out)], capsys)
    assert code == 0, stderr
    cf = CanvasFile(out)
    assert cf.shape == (1, 44, 44)
    batch, _ = cf.read(slice(0, 4))
    assert (batch.n_distractors == 2).all()


def test_spec_file_errors_exit_2(tmp_path, capsys):
    spec = tmp_path / "run.toml"
    spec.write_text(TEXTS["toml"].replace("seed = 4", "sed = 4"))
    code, _, stderr = run_main(["gen-data", "--spec", str(spec), "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, stderr, "unknown key 'sed'", "did you mean 'seed'")

    spec.write_text(TEXTS["toml"] + "colour = 3\n")  # inside [dataset]: not a bool
    code, _, stderr = run_main(["gen-data", "--spec", str(spec), "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, stderr, "dataset.colour")

    spec.write_text('n = 3\nseed = 1\n')
    code, _, stderr = run_main(["gen-data", "--spec", str(spec), "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, stderr, "no dataset given")

    spec.write_text('n = 3\n[dataset]\ncanvas = 60\n')
    code, _, stderr = run_main(["gen-data", "--spec", str(spec), "--out", str(tmp_path / "d.h5")], capsys)
    assert_one_line_error(code, stderr, "needs a 'type'")
    assert leftovers(tmp_path) == ["run.toml"]
