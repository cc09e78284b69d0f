"""Generator throughput: lgdram's vectorised generator vs a per-image numpy loop, one run.

    python bench/bench_gen.py [--n 16384] [--threads 1] [--colour]

Both are timed in the same process on the same digits (best of --repeats), M-CMNIST
100×100 with 4–20 distractors by default. Prints a JSON line with both rates and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from reference_gen import reference_canvases  # noqa: E402

from lgdram_cli.data.presets import make_generator  # noqa: E402


def best_of(repeats: int, fn) -> float:  # noqa: ANN001
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        fn(r)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16384)
    ap.add_argument("--reference-n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--canvas", default="100")
    ap.add_argument("--distractors", default="4-20")
    ap.add_argument("--colour", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    gen = make_generator(
        {"type": "mcmnist", "canvas": args.canvas, "distractors": args.distractors,
         "colour": args.colour, "digits": "mnist-mini"}
    )
    gen.generate(512, "train", 0)  # warm-up and digit loading
    digits = gen.digits("train")
    lo, hi = gen.config.distractors
    t_lgdram = best_of(args.repeats, lambda r: gen.generate(args.n, "train", r))
    t_ref = best_of(
        args.repeats,
        lambda r: reference_canvases(digits.images, digits.labels, args.reference_n, gen.size, (lo, hi), seed=r),
    )
    lgdram_rate, ref_rate = args.n / t_lgdram, args.reference_n / t_ref
    print(json.dumps({
        "canvas": list(gen.size), "distractors": [lo, hi], "colour": args.colour, "threads": args.threads,
        "lgdram_canvases_per_s": round(lgdram_rate), "reference_canvases_per_s": round(ref_rate),
        "speedup": round(lgdram_rate / ref_rate, 2),
    }))


if __name__ == "__main__":
    main()
