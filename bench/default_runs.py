"""What each preset's default `lgdram train` run reaches, and how long it takes (README, "Tasks").

    python bench/default_runs.py [--jobs 2] [--presets translated-60 cmnist-60 ...] [--annotations 1%]

Runs `lgdram train --dataset PRESET --annotations 1% --threads 1` with every other setting at
its default (RAM, 3,000 steps, batch 32 × M 10, and the preset's own `[train]` table); a preset
whose table sets `annotations` runs without `--annotations` (its default run). JOBS at a time
(one per core), on the 5,000
real MNIST training digits of ../shared/data/mnist-5k with test canvases from the official test
split (../shared/data/mnist): the offline stand-in for the full MNIST that a default run
downloads. Then writes docs/results/defaults.{md,json}: per preset the final test accuracy,
the step it first passed 50 % and 80 %, the wall time and steps/s. Rerunning keeps finished
runs (delete runs/defaults/PRESET to redo one).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ["translated-60", "cmnist-60", "cmnist-100", "mcmnist-100", "mcmnist-200"]
DATA = ["--set", "dataset.digits=idx:../shared/data/mnist-5k", "--set", "dataset.test_digits=idx:../shared/data/mnist"]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def train(preset: str, annotations: str, out: Path) -> dict:
    """One default run (skipped when its folder already holds a finished one)."""
    from lgdram_cli.data.presets import train_defaults

    own = train_defaults(preset).get("annotations")
    flag = [] if own is not None else ["--annotations", annotations]
    run = out / preset
    timing = run / "wall.json"
    if timing.exists():
        return json.loads(timing.read_text())
    run.mkdir(parents=True, exist_ok=True)
    cmd = ["lgdram", "train", "--dataset", preset, *flag, "--threads", "1", "--out", str(run), "--force", *DATA]
    t0 = time.perf_counter()
    with open(run / "train.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=True)
    record = {
        "preset": preset, "command": " ".join(cmd[: 4 + len(flag)]), "wall_s": round(time.perf_counter() - t0, 1),
        "annotations": annotations if own is None else own,
    }  # fmt: skip
    timing.write_text(json.dumps(record))
    return record


def summarize(record: dict, run: Path) -> dict:
    lines = [json.loads(x) for x in (run / "run.metrics.jsonl").read_text().splitlines() if x.strip()]
    evals = [x for x in lines if x.get("kind") == "eval"]
    last = evals[-1]
    first = lambda level: next((e["step"] for e in evals if e["accuracy"] >= level), None)  # noqa: E731
    steps = last["step"]
    spec = json.loads((run / "run.spec.json").read_text())
    model = spec["model"]
    return {
        **record,
        "steps": steps,
        "test_accuracy": round(100 * last["accuracy"], 1),
        "eval_n": last["n"],
        "steps_to_50": first(0.5),
        "steps_to_80": first(0.8),
        "location_error_px": round(last["location_error_px"], 1),
        "steps_per_s": round(steps / record["wall_s"], 1),
        "model": f"{model['type']}" + (f", {model['scales']} scales" if "scales" in model else ""),
        "annotations": f"{100 * spec['annotations']:g} %",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--annotations", default="1%")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "defaults")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "results" / "defaults")
    args = ap.parse_args()
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda p: train(p, args.annotations, args.out), args.presets))
    rows = [summarize(r, args.out / r["preset"]) for r in records]
    report = {"cpu": cpu_name(), "jobs": args.jobs, "annotations": args.annotations, "rows": rows}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = [
        f"Default `lgdram train --dataset PRESET --annotations {args.annotations}` runs (3,000 steps, "
        f"batch 32 × M 10, one thread, {args.jobs} runs at a time on a {report['cpu']}; a preset with its own "
        "annotation default runs without `--annotations`); 5,000 MNIST training digits, test canvases from the "
        "official test split.",
        "",
        "| preset | model | annotations | test accuracy | 50 % at step | 80 % at step | location error | wall time | steps/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| `{r['preset']}` | {r['model']} | {r['annotations']} | {r['test_accuracy']} % (n = {r['eval_n']}) | "
            f"{r['steps_to_50'] or '—'} | "
            f"{r['steps_to_80'] or '—'} | {r['location_error_px']} px | {r['wall_s'] / 60:.1f} min | {r['steps_per_s']} |"
        )
    args.report.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
