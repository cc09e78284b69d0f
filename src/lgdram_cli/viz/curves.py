"""Learning curves from one or more runs' metrics files (matplotlib, drawn off-screen)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lgdram_cli.errors import UserError
from lgdram_cli.atomic import atomic_path

PANELS = (
    ("eval", "accuracy", "test accuracy"),
    ("eval", "location_error_px", "location error (px)"),
    ("train", "loss/total", "training loss"),
    ("train", "gamma", "location-loss weight γ"),
)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"no metrics file {path}: was the checkpoint written by 'lgdram train'?")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as exc:
        raise UserError(f"{path} is not a JSON-lines metrics file: {exc}") from exc


def pyplot(what: str = "--curves") -> Any:
    """matplotlib.pyplot, drawing off-screen; a one-line UserError when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UserError(f"{what} needs matplotlib: pip install matplotlib (pipx: pipx inject lgdram matplotlib)") from exc
    return plt


def plot_curves(runs: dict[str, list[dict]], out: Path) -> None:
    """One panel per quantity, one line per run (labelled by the run's name)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (kind, key, title) in zip(axes.flat, PANELS):
        for name, records in runs.items():
            points = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if kind == "eval" else None, markersize=3, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save(plt, fig, out)


def spread_band(curves: list[list[tuple[int, float]]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps every seed evaluated at, with the mean, min and max there (seeds of one cell share
    their evaluation steps; a step some seed lacks would make the band jump, so it is left out)."""
    common = sorted(set.intersection(*(set(s for s, _ in c) for c in curves))) if curves else []
    values = [dict(c) for c in curves]
    at = [[v[s] for v in values] for s in common]
    return common, [sum(a) / len(a) for a in at], [min(a) for a in at], [max(a) for a in at]


def plot_spread(cells: dict[str, list[list[tuple[int, float]]]], out: Path, title: str = "") -> None:
    """Test accuracy against step: per cell the mean over seeds, with a min–max band."""
    plt = pyplot("lgdram results (its .curves.png)")
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, curves in cells.items():
        steps, mean, lo, hi = spread_band(curves)
        if not steps:
            continue
        (line,) = ax.plot(steps, mean, marker="o", markersize=3, label=f"{name} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel("test accuracy (mean over seeds, band: min–max)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=8, wrap=True)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    _save(plt, fig, out)


def _save(plt: Any, fig: Any, out: Path) -> None:
    """A figure to `out` as PNG, written then renamed, and the figure freed."""
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
