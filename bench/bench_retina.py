"""Retina speed: `prepare` (block-mean grids, once per batch) and `glimpse` (per glimpse step).

    python bench/bench_retina.py [--threads 1] [--batch 32] [--replicas 10] [--size 60]

RAM's default retina (12×12, 3 scales, factor 2). The glimpse is timed two ways on the same
grids, in the same run: reading each window row as one run of g floats (what training and
evaluation do) and reading cell by cell (what graph capture — ONNX, torch.export — does, and
what the retina did before the grids were phase-split). Both give the same numbers, bit for
bit; the script checks that. Prints one JSON line (microseconds, medians).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Callable

import torch

from lgdram_cli.models.retina import Retina


def median_us(fn: Callable[[], object], repeats: int = 300, warmup: int = 30) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--replicas", type=int, default=10)
    ap.add_argument("--size", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.rand(args.batch, 1, args.size, args.size)
    n = args.batch * args.replicas
    loc = torch.rand(n, 2) * 2 - 1
    retina = Retina(12, 3, 2)
    state = retina.prepare(images, reuse=True)
    cellwise = dataclasses.replace(state, runs=None)  # the graph-capture path: one index per cell
    out = torch.empty(n, 3, 12, 12)
    assert torch.equal(retina.glimpse(state, loc, args.replicas), retina.glimpse(cellwise, loc, args.replicas))
    rows = median_us(lambda: retina.glimpse(state, loc, args.replicas, out=out))
    cells = median_us(lambda: retina.glimpse(cellwise, loc, args.replicas))
    print(json.dumps({
        "threads": args.threads,
        "images": args.batch,
        "glimpse_rows": n,
        "prepare_us": round(median_us(lambda: retina.prepare(images, reuse=True))),
        "glimpse_us_row_runs": round(rows),
        "glimpse_us_cell_by_cell": round(cells),
        "speedup": round(cells / rows, 2),
    }))


if __name__ == "__main__":
    main()
