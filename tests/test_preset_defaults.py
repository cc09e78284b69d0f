"""A dataset preset's `[train]` table: the settings its default run needs, below every option."""

from __future__ import annotations

import pytest

from helpers import assert_one_line_error, run_main
from lgdram_cli.data.presets import presets, resolve_dataset, train_defaults
from lgdram_cli.training.assemble import fill_missing, train_spec

PRESET = """# A big canvas whose default run needs a wider retina.
type = "mcmnist"
canvas = 120
distractors = "4-8"

[train]
steps = 1234

[train.model]
type = "ram"
scales = 5
"""


@pytest.fixture
def preset(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text(PRESET)
    return str(path)


def test_the_train_table_is_not_part_of_the_dataset(preset):
    assert resolve_dataset(preset) == {"type": "mcmnist", "canvas": 120, "distractors": "4-8"}
    assert train_defaults(preset) == {"steps": 1234, "model": {"type": "ram", "scales": 5}}
    assert train_defaults("cmnist-60") == {}  # a preset without one


def test_a_default_run_takes_the_presets_settings(preset):
    spec = train_spec(dataset=preset)
    assert (spec.steps, spec.model["type"], spec.model["scales"]) == (1234, "ram", 5)
    assert spec.dataset["canvas"] == 120


def test_options_spec_files_and_sets_win(preset, tmp_path):
    assert train_spec(dataset=preset, steps=10).steps == 10
    assert train_spec(dataset=preset, sets=["model.scales=3"]).model["scales"] == 3
    assert train_spec(dataset=preset, sets=["scales=2"]).model["scales"] == 2
    dram = train_spec(dataset=preset, model="dram").model  # another model: none of the preset's model keys
    assert dram["type"] == "dram" and "scales" not in dram
    recipe = tmp_path / "run.toml"
    recipe.write_text('steps = 77\n[model]\ntype = "ram"\nscales = 4\n')
    spec = train_spec(spec_file=recipe, dataset=preset)
    assert (spec.steps, spec.model["scales"]) == (77, 4)
    recipe.write_text('[model]\ntype = "cnn"\n')
    assert train_spec(spec_file=recipe, dataset=preset).model["type"] == "cnn"  # no RAM keys forced on a CNN


def test_a_train_entry_that_is_not_a_table_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('type = "cmnist"\ntrain = 3\n')
    code, _, err = run_main(["train", "--dataset", str(bad), "--steps", "1", "--out", str(tmp_path / "r")], capsys)
    assert_one_line_error(code, err, "'train' must be a table")
    assert not (tmp_path / "r").exists()


def test_fill_missing_keeps_what_is_set():
    assert fill_missing({"a": 1, "m": {"type": "x", "k": 1}}, {"a": 2, "b": 3, "m": {"k": 2, "j": 4}}) == {
        "a": 1, "b": 3, "m": {"type": "x", "k": 1, "j": 4},
    }  # fmt: skip
    assert fill_missing({"m": {"type": "x"}}, {"m": {"type": "y", "k": 1}}) == {"m": {"type": "x"}}


@pytest.mark.parametrize("name", sorted(presets()))
def test_every_shipped_presets_defaults_make_a_valid_spec(name):
    """Each shipped preset's default run assembles (the table's keys exist for its model)."""
    spec = train_spec(dataset=name)
    for key, value in train_defaults(name).get("model", {}).items():
        assert spec.model[key] == value
