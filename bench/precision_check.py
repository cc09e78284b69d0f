"""Is bf16's learning curve inside fp32's seed spread? Reads `lgdram results` files.

    python bench/precision_check.py docs/results/precision-ram-cmnist-60.json [...]

For every evaluation step: the fp32 runs' min–max test accuracy and the bf16 runs' mean, and
whether the mean lies inside; then the final test error of both (mean ± std, min–max).
Writes nothing; bench/precision_runs.sh produces the files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def curves(cell: dict) -> dict[int, list[float]]:
    """step → the test accuracies (%) of the cell's runs at that step."""
    out: dict[int, list[float]] = {}
    for run in cell["runs"]:
        for step, acc in zip(run["curve"]["step"], run["curve"]["accuracy"]):
            out.setdefault(step, []).append(100 * acc)
    return out


def check(path: Path) -> bool:
    cells = {c["params"]["precision"]: c for c in json.loads(path.read_text())["cells"]}
    fp32, bf16 = curves(cells["fp32"]), curves(cells["bf16"])
    print(f"{path.stem}: bf16 mean test accuracy against fp32's min–max over {cells['fp32']['n']} seeds")
    print("| step | fp32 min–max % | bf16 mean % | inside |\n|---|---|---|---|")
    inside = 0
    steps = sorted(set(fp32) & set(bf16))
    for step in steps:
        lo, hi = min(fp32[step]), max(fp32[step])
        mean = sum(bf16[step]) / len(bf16[step])
        ok = lo <= mean <= hi
        inside += ok
        print(f"| {step} | {lo:.1f}–{hi:.1f} | {mean:.1f} | {'yes' if ok else 'no'} |")
    for p in ("fp32", "bf16"):
        e = cells[p]["test_error"]
        print(f"{p}: final test error {e['mean']:.2f} ± {e['std']:.2f} % ({e['min']:.2f}–{e['max']:.2f}), n = {e['n']}")
    print(f"inside at {inside} of {len(steps)} evaluations\n")
    return inside == len(steps)


if __name__ == "__main__":
    results = [check(Path(p)) for p in sys.argv[1:]]
    sys.exit(0 if all(results) else 1)
