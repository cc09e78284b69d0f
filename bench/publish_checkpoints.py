"""Copy the best full-budget run of each headline cell into checkpoints/, so that users can
`lgdram eval` and `lgdram visualize` a trained LG-DRAM without training one.

    python bench/publish_checkpoints.py      (after `lgdram results runs/ldram-cmnist-100 ...`)

"Best" is the lowest final test error among the cell's finished seeds, read from the results
file (docs/results/ldram-cmnist-100.json); the weights, the spec and the metrics are copied
as lgdram wrote them (their recorded hashes still hold); the optimizer state is left out.
checkpoints/README.md lists what was published, with each run's seed and final figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROW = "ldram-cmnist-100"
FILES = ("run.safetensors", "run.spec.json", "run.metrics.jsonl")


def folder_name(cell: dict) -> str:
    """`…/annotations=1pct` → `ldram-cmnist-100-1pct`: the sweep's own spelling of the setting."""
    return f"{ROW}-{Path(cell['folder']).name.split('=', 1)[1]}"


def publish(root: Path = ROOT) -> list[dict]:
    summary = json.loads((root / "docs" / "results" / f"{ROW}.json").read_text())
    published = []
    for cell in summary["cells"]:
        done = [r for r in cell["runs"] if r["step"] == cell["steps"]]
        if not done:
            continue
        best = min(done, key=lambda r: r["final"]["error"])
        source = (root / best["path"]).parent
        target = root / "checkpoints" / folder_name(cell)
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in FILES:
            shutil.copy2(source / name, staging / name)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        published.append({"folder": target.relative_to(root).as_posix(), "cell": cell["cell"], "seed": best["seed"],
                          "of": len(done), "final": best["final"]})  # fmt: skip
    (root / "checkpoints" / "README.md").write_text(readme(published))
    return published


def readme(published: list[dict]) -> str:
    lines = [
        "# Trained checkpoints",
        "",
        "The best run (lowest final test error) of each cell of the headline row in",
        "[docs/results.md](../docs/results.md): DRAM on `cmnist-100`, 30,000 updates, trained on 5,000",
        "MNIST training digits. Written by `python bench/publish_checkpoints.py` from",
        f"`docs/results/{ROW}.json`.",
        "",
        "| folder | location annotations | seed (best of) | test error | location error |",
        "|---|---|---|---|---|",
    ]
    for p in published:
        f = p["final"]
        lines.append(
            f"| `{p['folder']}` | `{p['cell']}` | {p['seed']} (of {p['of']}) | {f['error']:.2f} % "
            f"| {f['location_error_px']:.1f} px |"
        )
    lines += [
        "",
        "The runs were tested on canvases from the official MNIST test split, read from a local IDX",
        "folder; on your machine give the test digits another way:",
        "",
        "```console",
        f"$ lgdram eval checkpoints/{ROW}-1pct --set dataset.test_digits=mnist",
        f"$ lgdram visualize checkpoints/{ROW}-1pct --gif --set dataset.test_digits=mnist",
        "```",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    for p in publish():
        print(p["folder"], p["cell"], "seed", p["seed"], f"{p['final']['error']:.2f} %")
