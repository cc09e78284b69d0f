"""`lgdram results`: aggregate finished runs per cell (mean ± std over seeds) into tables.

A cell is a folder of runs that differ only in their seed: a sweep's `OUT/<cell>/s<seed>/`
layout, or any folder holding run checkpoints. Runs of different specs in one cell are
refused rather than averaged; unfinished runs are left out, and said so. The JSON output
carries every per-seed value and curve, so tables and figures can be regenerated from it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgdram_cli.errors import UserError
from lgdram_cli.specs import flatten_spec
from lgdram_cli.training.spec import spec_diff
from lgdram_cli.training.sweep import MANIFEST

#: Spec keys that may differ inside a cell: the seed, and when evaluations and logs were written.
IGNORED = ("seed", "eval_every", "log_every", "checkpoint_every")
THRESHOLDS = ("80%", "90%")


@dataclass
class RunResult:
    """One finished run: its final evaluation and its test-accuracy curve."""

    path: Path
    seed: int
    step: int
    spec: dict[str, Any]
    final: dict[str, Any]
    curve: list[tuple[int, float]]


@dataclass
class CellResult:
    """The runs of one cell folder."""

    folder: Path
    label: str
    params: dict[str, str]
    runs: list[RunResult]

    @property
    def spec(self) -> dict[str, Any]:
        return {k: v for k, v in self.runs[0].spec.items() if k not in IGNORED}


# ---------------------------------------------------------------- finding runs


def read_records(path: Path) -> list[dict[str, Any]]:
    """A metrics file's records; a line cut short by a kill is skipped."""
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def load_run(path: Path) -> RunResult | str:
    """A finished run, or why `path` is not one (not a checkpoint, or at which step it stopped)."""
    from lgdram_cli.training.checkpoint import load_checkpoint, metrics_path

    try:
        ckpt = load_checkpoint(path)
    except UserError as exc:
        return str(exc)
    steps = int(ckpt.spec.get("steps", -1))
    evals = {r["step"]: r for r in read_records(metrics_path(path)) if r.get("kind") == "eval" and "step" in r}
    if ckpt.step < steps or steps not in evals:
        return f"{path}: unfinished (step {ckpt.step} of {steps})"
    curve = sorted((int(s), float(r["accuracy"])) for s, r in evals.items() if s <= steps)
    return RunResult(path, int(ckpt.spec.get("seed", 0)), ckpt.step, ckpt.spec, evals[steps], curve)


def checkpoints(folder: Path) -> list[Path]:
    """Every checkpoint under `folder` (not optimizer files, not hidden temporary files)."""
    return sorted(
        p for p in folder.rglob("*.safetensors")
        if not p.name.endswith(".optim.safetensors") and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def find_runs(dirs: list[Path]) -> tuple[dict[Path, list[RunResult]], list[str]]:
    """Finished runs per given folder, and notes on what was left out. A folder that does not
    exist or holds no finished run is a UserError naming every such folder."""
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise UserError(f"no such folder: {', '.join(missing)}")
    found: dict[Path, list[RunResult]] = {}
    notes: list[str] = []
    for folder in dirs:
        found[folder] = []
        for path in checkpoints(folder):
            run = load_run(path)
            if isinstance(run, str):
                notes.append(run)
            else:
                found[folder].append(run)
    empty = [d for d, runs in found.items() if not runs]
    if empty:
        unfinished = sum(1 for d in empty for p in checkpoints(d))
        raise UserError(
            f"no finished run in {', '.join(map(str, empty))} ({unfinished} unfinished or unreadable checkpoint(s); "
            "a run is finished when its checkpoint and metrics reach its last step: finish it with lgdram sweep or train --resume)"
        )
    return found, notes


# ---------------------------------------------------------------- cells


def cell_folder(run: Path) -> Path:
    """A sweep's OUT/<cell>/s<seed>/run.safetensors → OUT/<cell>; else the checkpoint's folder."""
    folder = run.parent
    return folder.parent if re.fullmatch(r"s\d+", folder.name) else folder


def manifest_params(cell: Path) -> dict[str, str] | None:
    """The grid values of a sweep's cell folder, from the sweep's manifest."""
    path = cell.parent / MANIFEST
    try:
        return json.loads(path.read_text())["cells"][cell.name]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def group(found: dict[Path, list[RunResult]]) -> list[CellResult]:
    """Runs grouped by cell folder; a cell whose runs differ in more than the seed is refused."""
    by_folder: dict[Path, tuple[Path, list[RunResult]]] = {}
    for root, runs in found.items():
        for run in runs:
            by_folder.setdefault(cell_folder(run.path), (root, []))[1].append(run)
    cells = []
    for folder, (root, runs) in by_folder.items():
        check_cell(folder, runs)
        params = manifest_params(folder) or {}
        cells.append(CellResult(folder, _label(folder, root, params, len(found) > 1), params, sorted(runs, key=lambda r: r.seed)))
    labels = [c.label for c in cells]
    if len(set(labels)) < len(labels):
        for c in cells:
            c.label = str(c.folder)
    return cells


def _label(folder: Path, root: Path, params: dict[str, str], several: bool) -> str:
    if params:
        text = ", ".join(f"{k}={v}" for k, v in params.items())
    else:
        rel = folder.relative_to(root) if folder.is_relative_to(root) else folder
        text = str(rel) if str(rel) != "." else root.name
    return f"{root.name}: {text}" if several else text


def check_cell(folder: Path, runs: list[RunResult]) -> None:
    first = runs[0]
    for run in runs[1:]:
        differ = spec_diff(first.spec, run.spec, ignore=IGNORED)
        if differ:
            raise UserError(
                f"{folder} mixes runs of different specs ({first.path.relative_to(folder)} and "
                f"{run.path.relative_to(folder)} differ in {', '.join(differ[:5])}); put each spec in its own folder"
            )
    seeds = [r.seed for r in runs]
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise UserError(f"{folder} holds several runs of seed {', '.join(map(str, twice))}; keep one run per seed in a cell")


# ---------------------------------------------------------------- statistics


def spread(values: list[float]) -> dict[str, Any]:
    """mean, sample std (ddof 1; None for one value: no spread to show), min, max of the values that exist."""
    have = [v for v in values if v is not None]
    if not have:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": statistics.fmean(have), "std": statistics.stdev(have) if len(have) > 1 else None,
        "min": min(have), "max": max(have), "n": len(have),
    }


def summarize_cell(cell: CellResult) -> dict[str, Any]:
    runs = cell.runs
    finals = [r.final for r in runs]

    def metric(key: str, scale: float = 1.0) -> list[float | None]:
        return [None if f.get(key) is None else scale * float(f[key]) for f in finals]

    out: dict[str, Any] = {
        "cell": cell.label, "folder": str(cell.folder), "params": cell.params, "n": len(runs),
        "seeds": [r.seed for r in runs], "steps": runs[0].step,
        "test_error": spread(metric("error")), "test_accuracy": spread(metric("accuracy", 100.0)),
        "location_error_px": spread(metric("location_error_px")),
        "glimpses_in_box": spread(metric("glimpses_in_box", 100.0)),
    }
    for t in THRESHOLDS:
        reached = [(r.final.get("steps_to") or {}).get(t) for r in runs]
        out[f"steps_to_{t[:-1]}"] = {**spread(reached), "reached": sum(v is not None for v in reached), "of": len(runs)}
    out["runs"] = [
        {"seed": r.seed, "path": str(r.path), "step": r.step, "final": r.final,
         "curve": {"step": [s for s, _ in r.curve], "accuracy": [a for _, a in r.curve]}}
        for r in runs
    ]
    out["spec"] = cell.spec
    return out


def coverage(dirs: list[Path], cells: list[CellResult]) -> dict[str, Any] | None:
    """How much of the planned sweeps the finished runs cover: a table of a sweep still running
    (or interrupted) says so, naming the runs it lacks. None when no folder is a sweep."""
    planned, missing = 0, []
    done = {(c.folder.resolve(), r.seed) for c in cells for r in c.runs}
    for root in dirs:
        try:
            manifest = json.loads((root / MANIFEST).read_text())
            plan_cells, seeds = dict(manifest["cells"]), [int(s) for s in manifest["seeds"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a sweep folder: nothing was planned
        for name, params in plan_cells.items():
            label = ", ".join(f"{k}={v}" for k, v in params.items()) or name
            for seed in seeds:
                planned += 1
                if ((root / name).resolve(), seed) not in done:
                    missing.append(f"{label}/s{seed}")
    return {"runs": planned, "missing": missing} if planned else None


def summarize(cells: list[CellResult], planned: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything `results` reports, as plain data (the JSON output); `planned`: `coverage()`."""
    differ = sorted({k for a in cells for b in cells for k in spec_diff(a.spec, b.spec)})
    common = flatten_spec(cells[0].spec)
    seeds = sorted({r.seed for c in cells for r in c.runs})
    summary = {
        "runs": sum(len(c.runs) for c in cells), "cells": [summarize_cell(c) for c in cells], "seeds": seeds,
        "differ": differ, "common": {k: v for k, v in common.items() if k not in differ},
    }
    if planned is not None:
        summary["planned"] = planned
    return summary


# ---------------------------------------------------------------- tables


def _pm(s: dict[str, Any], digits: int = 1) -> str:
    if s["mean"] is None:
        return "—"
    if s["std"] is None:  # one seed
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _steps(s: dict[str, Any]) -> str:
    return f"{_pm(s, 0)} ({s['reached']}/{s['of']})"


COLUMNS = ("cell", "seeds", "test error %", "min–max", "test accuracy %", "steps to 80 %", "steps to 90 %",
           "location error px", "glimpses in box %")


def missing_runs(summary: dict[str, Any]) -> list[str]:
    """The planned runs of the summarized sweeps that have not finished (none when not a sweep)."""
    return (summary.get("planned") or {}).get("missing", [])


def headline(summary: dict[str, Any]) -> str:
    """One line: how many runs and seeds, and what the cells differ in (or share)."""
    cells, common = summary["cells"], summary["common"]
    text = f"{summary['runs']} finished runs in {len(cells)} cell(s), seeds {', '.join(map(str, summary['seeds']))}"
    if summary["differ"]:
        text += f"; cells differ in {', '.join(summary['differ'])}"
    if "steps" in common:
        text += f"; {common['steps']} steps"
    if "eval_n" in common and not common.get("test_data"):
        text += f", final test on {common['eval_n']} held-out canvases"
    text += "."
    if missing_runs(summary):
        text += f" Incomplete: {summary['runs']} of {summary['planned']['runs']} planned runs finished."
    return text


def markdown(summary: dict[str, Any]) -> str:
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in summary["cells"]:
        err = c["test_error"]
        cells = (
            f"`{c['cell']}`", str(c["n"]), _pm(err, 2), f"{err['min']:.2f}–{err['max']:.2f}", _pm(c["test_accuracy"], 2),
            _steps(c["steps_to_80"]), _steps(c["steps_to_90"]), _pm(c["location_error_px"]), _pm(c["glimpses_in_box"]),
        )
        rows.append("| " + " | ".join(cells) + " |")
    missing = missing_runs(summary)
    lacking = f"\nNot finished yet: {', '.join(missing)}.\n" if missing else ""
    return headline(summary) + "\n\n" + "\n".join(rows) + "\n" + lacking


def csv_text(summary: dict[str, Any]) -> str:
    keys = list(dict.fromkeys(k for c in summary["cells"] for k in c["params"]))
    metrics = ("test_error", "test_accuracy", "steps_to_80", "steps_to_90", "location_error_px", "glimpses_in_box")
    header = ["cell", "folder", *keys, "n", "seeds"]
    for m in metrics:
        header += [f"{m}_mean", f"{m}_std", f"{m}_min", f"{m}_max"] + ([f"{m}_reached"] if m.startswith("steps") else [])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for c in summary["cells"]:
        row = [c["cell"], c["folder"], *(c["params"].get(k, "") for k in keys), c["n"], " ".join(map(str, c["seeds"]))]
        for m in metrics:
            s = c[m]
            row += ["" if s[k] is None else s[k] for k in ("mean", "std", "min", "max")]
            row += [s["reached"]] if m.startswith("steps") else []
        writer.writerow(row)
    return buf.getvalue()


def curves(summary: dict[str, Any]) -> dict[str, list[list[tuple[int, float]]]]:
    """Per cell, every seed's test-accuracy curve: what the spread plot draws."""
    return {
        c["cell"]: [list(zip(r["curve"]["step"], r["curve"]["accuracy"])) for r in c["runs"]]
        for c in summary["cells"]
    }


def write_outputs(summary: dict[str, Any], prefix: Path) -> list[Path]:
    """PREFIX.md, .csv and .json, each written atomically (the command draws PREFIX.curves.png
    from `curves(summary)` with `viz.curves.plot_spread`: pictures are a layer above this one)."""
    from lgdram_cli.atomic import atomic_path

    texts = {".md": markdown(summary), ".csv": csv_text(summary), ".json": json.dumps(summary, indent=1) + "\n"}
    written = []
    for suffix, text in texts.items():
        target = prefix.with_name(prefix.name + suffix)
        with atomic_path(target) as tmp:
            tmp.write_text(text)
        written.append(target)
    return written
