"""docs/results.md and README's headline table are written from the committed results files
(`python bench/results_doc.py`): no hand-typed figure, and none left behind when a row changes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def results_doc():
    spec = importlib.util.spec_from_file_location("results_doc", ROOT / "bench" / "results_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_page_is_in_step_with_the_results_files(results_doc):
    assert (ROOT / "docs" / "results.md").read_text() == results_doc.results_doc(), (
        "docs/results.md differs from the results files: run python bench/results_doc.py"
    )


def test_readme_headline_table_is_in_step_with_the_headline_results_file(results_doc):
    readme = (ROOT / "README.md").read_text()
    assert results_doc.readme_with_headline(readme) == readme, (
        "README's headline table differs from docs/results/ldram-cmnist-100.json: run python bench/results_doc.py"
    )


def test_readme_headline_table_shows_each_cells_mean_error_and_seed_count(results_doc):
    summary = json.loads((ROOT / "docs" / "results" / "ldram-cmnist-100.json").read_text())
    block = results_doc.readme_headline()
    for cell in summary["cells"]:
        label = dict(results_doc.HEADLINE_CELLS)[cell["cell"]]
        row = next(line for line in block.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {cell['n']} |" in row
        assert f"{cell['test_error']['mean']:,.2f}" in row


def test_publish_checkpoints_copies_the_best_finished_seed_of_each_cell(tmp_path):
    spec = importlib.util.spec_from_file_location("publish", ROOT / "bench" / "publish_checkpoints.py")
    publish = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(publish)
    runs = []
    for seed, error, step in ((0, 5.0, 300), (1, 3.0, 300), (2, 1.0, 150)):  # seed 2 unfinished
        folder = tmp_path / "runs" / "row" / "annotations=1pct" / f"s{seed}"
        folder.mkdir(parents=True)
        for name in publish.FILES:
            (folder / name).write_text(f"{name} of seed {seed}")
        (folder / "run.optim.safetensors").write_text("optimizer state")
        runs.append({"seed": seed, "path": str((folder / "run.safetensors").relative_to(tmp_path)), "step": step,
                     "final": {"error": error, "location_error_px": 2.0}})  # fmt: skip
    results = tmp_path / "docs" / "results"
    results.mkdir(parents=True)
    (results / f"{publish.ROW}.json").write_text(json.dumps({"cells": [{"cell": "annotations=1%", "folder": "runs/row/annotations=1pct", "steps": 300, "runs": runs}]}))
    (published,) = publish.publish(tmp_path)
    target = tmp_path / "checkpoints" / f"{publish.ROW}-1pct"
    assert published["seed"] == 1 and published["of"] == 2
    assert sorted(p.name for p in target.iterdir()) == sorted(publish.FILES)  # no optimizer state
    assert (target / "run.safetensors").read_text() == "run.safetensors of seed 1"
    assert "| 1 (of 2) | 3.00 % |" in (tmp_path / "checkpoints" / "README.md").read_text()


def _stat(values: list[float]) -> dict:
    return {"mean": sum(values) / len(values), "std": 0.0, "min": min(values), "max": max(values), "n": len(values)}


def _cell(name: str, errors: list[float], to_80: list[float] | None = None) -> dict:
    steps = {**_stat(to_80), "reached": len(to_80), "of": len(errors)} if to_80 else {"mean": None, "reached": 0, "of": len(errors)}
    return {"cell": name, "test_error": _stat(errors), "steps_to_80": steps}


@pytest.mark.parametrize(
    ("guided", "verdict"),
    [([2.0, 3.0, 4.0], "guidance helped"), ([5.0, 9.0, 12.0], "do not show"), ([13.0, 14.0, 15.0], "guidance hurt")],
)
def test_guidance_reading_calls_a_difference_only_when_the_seeds_ranges_are_apart(results_doc, guided, verdict):
    summary = {"cells": [_cell("annotations=0", [6.0, 8.0, 11.0]), _cell("annotations=1%", guided)]}
    (line,) = [line for line in results_doc.guidance(summary).splitlines() if line.startswith("- ")]
    assert line.startswith("- `annotations=1%`") and verdict in line


def test_guidance_reading_is_absent_without_an_unannotated_cell(results_doc):
    assert results_doc.guidance({"cells": [_cell("model=fc", [5.0, 6.0, 7.0])]}) == ""


def test_per_seed_table_of_a_whole_image_baseline_shows_no_location_figures(results_doc):
    run = {"seed": 0, "step": 100, "final": {"error": 33.5, "steps_to": {}}}  # fc/cnn: no location keys
    table = results_doc.per_seed({"cells": [{"cell": "base", "runs": [run]}]})
    assert "| `base` | 0 | 100 | 33.50 | — | — | — | — |" in table
    assert "within 5 px" not in table


@pytest.mark.parametrize(
    ("guided", "verdict"),
    [([1000, 1500, 2000], "reached it, sooner in every seed)"), ([1000, 3500], "(2 of 3 runs reached it)"),
     ([5000, 6000, 7000], "reached it, later in every seed)")],
)
def test_guidance_reading_judges_speed_to_80_percent_by_the_same_rule(results_doc, guided, verdict):
    summary = {"cells": [_cell("annotations=0", [6.0, 8.0, 11.0], [3000, 3500, 4000]), _cell("annotations=1%", [5.0, 9.0, 12.0], guided)]}
    assert verdict in results_doc.guidance(summary)


def test_guidance_reading_counts_runs_at_80_percent_when_one_side_never_got_there(results_doc):
    summary = {"cells": [_cell("annotations=0", [88.0, 89.0, 90.0]), _cell("annotations=100%", [14.0, 15.0, 16.0], [4500, 5000, 5000])]}
    assert "80 % test accuracy reached by 3 of 3 runs, against 0 of 3 without annotations" in results_doc.guidance(summary)


def test_guidance_reading_gives_no_verdict_below_3_seeds(results_doc):
    """One seed a side is always 'apart': an incomplete row must not read as a finding."""
    summary = {"cells": [_cell("annotations=0", [9.0], [4000]), _cell("annotations=1%", [5.0], [2000])]}
    text = results_doc.guidance(summary)
    assert "no verdict yet" in text and "helped" not in text and "every seed" not in text


def test_a_sweep_in_progress_is_shown_as_an_incomplete_row(results_doc, tmp_path, monkeypatch):
    cell = {**_cell("annotations=0", [9.0]), "n": 1, "runs": [], "test_accuracy": _stat([91.0]),
            "location_error_px": _stat([8.0]), "glimpses_in_box": _stat([70.0]), "steps_to_90": {"mean": None, "reached": 0, "of": 1}}
    summary = {"runs": 1, "cells": [cell], "common": {"precision": "fp32"},
               "planned": {"runs": 4, "missing": ["annotations=0/s1", "annotations=1%/s0", "annotations=1%/s1"]}}
    monkeypatch.setattr(results_doc, "RESULTS", tmp_path)
    (tmp_path / "row.json").write_text(json.dumps(summary))
    text = results_doc.row_section("row", "a row", "—", "bash run.sh")
    assert "**Incomplete row:** 1 of 4 planned runs have finished; still to run: annotations=0/s1, annotations=1%/s0, annotations=1%/s1." in text
