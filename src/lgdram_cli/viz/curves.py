"""Learning curves from one or more runs' metrics files (matplotlib, drawn off-screen)."""

from __future__ import annotations

import json
from pathlib import Path

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


def plot_curves(runs: dict[str, list[dict]], out: Path) -> None:
    """One panel per quantity, one line per run (labelled by the run's name)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise UserError("--curves needs matplotlib: pip install 'lgdram[viz]'") from exc
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
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
