"""Training-step speed: lgdram vs a reference RAM in the most-used public PyTorch style, one run.

    python bench/bench_train.py [--threads 1] [--steps 100] [--blocks 10]

Configuration of the issue's target: RAM with a ReLU RNN core (`model.core=rnn`), 60×60
cluttered canvases, 12×12 glimpses, 3 scales, 6 glimpses, hidden 256, glimpse/location
hidden 128. Measures, in the same process: lgdram at batch 32 × M 1 and at 32 × M 10, the
reference at 32 × M 1, and the machine's fp32 matmul rate (for the model-FLOP efficiency).
The share counts the FLOPs the step executes; `nominal_share` counts the plain model's FLOPs
(every Monte-Carlo replica computing its own, identical first glimpse; the MFU convention: the
model's FLOPs for the rows processed). `unshared_*` times the same step with that sharing
switched off, so that it executes every nominal FLOP.

The speed of these shared 2-core machines drifts by 10 % and more within minutes (other
tenants), and a memory-heavy training step drifts more than an in-cache 1024² product. So the
M 10 steps and the matmul rate are sampled in alternating blocks (--blocks), and the share is
reported with the same statistic on both sides: median step against median product
(`share_of_matmul_rate_b32_m10`), and best step against best product (`..._best`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from reference_ram import ReferenceRAM, reference_step  # noqa: E402

from lgdram_cli.cli.train_cmd import train_spec  # noqa: E402
from lgdram_cli.training.benchmark import StepTimer, time_train_step  # noqa: E402
from lgdram_cli.training.spec import TrainSpec  # noqa: E402


def matmul_seconds(n: int = 1024, repeats: int = 10) -> list[float]:
    """Times of `repeats` fp32 n×n products (after a warm-up): the machine's matmul rate."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=c)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def reference_ms(steps: int, warmup: int, mc: int) -> float:
    torch.manual_seed(0)
    model = ReferenceRAM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.rand(32, 1, 60, 60), torch.randint(0, 10, (32,))
    for _ in range(warmup):
        reference_step(model, opt, x, y, 6, mc)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        reference_step(model, opt, x, y, 6, mc)
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=10, help="alternating blocks of M 10 steps and 1024² products")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sets = ["model.core=rnn", "dataset.digits=mnist-mini"]
    cpu = torch.device("cpu")

    def spec(mc: int) -> TrainSpec:
        return train_spec(dataset="cmnist-60", model="ram", sets=sets, batch_size=32, mc=mc, annotations="100%")

    ours = {1: time_train_step(spec(1), cpu, steps=args.steps, warmup=args.warmup)}
    ref = reference_ms(args.steps, args.warmup, 1)
    timer = StepTimer(spec(10), cpu)
    timer.run(args.warmup)
    steps, unshared, products = [], [], []
    per_block = max(1, args.steps // args.blocks)
    for _ in range(args.blocks):
        steps += timer.run(per_block)
        # the same step with every replica computing its own first glimpse: it executes the
        # plain model's FLOPs (the nominal count), for comparison only
        timer.model.share_first = False
        unshared += timer.run(per_block)
        timer.model.share_first = True
        products += matmul_seconds()
    ours[10] = timer.report(steps)
    plain = median(unshared)
    flop = 2 * 1024**3
    peak, peak_best = flop / median(products) / 1e9, flop / min(products) / 1e9
    best = timer.flops / min(steps) / 1e9
    print(json.dumps({
        "threads": args.threads,
        "lgdram_ms_per_step_b32_m1": round(ours[1]["ms_per_step"], 2),
        "reference_ms_per_step_b32_m1": round(ref, 2),
        "speedup_vs_reference": round(ref / ours[1]["ms_per_step"], 2),
        "lgdram_ms_per_step_b32_m10": round(ours[10]["ms_per_step"], 2),
        "lgdram_images_per_s_b32_m10": round(ours[10]["images_per_s"]),
        "model_gflops_b32_m10": round(ours[10]["gflops"], 1),
        "matmul_gflops": round(peak, 1),
        "share_of_matmul_rate_b32_m10": round(ours[10]["gflops"] / peak, 3),
        "matmul_gflops_best": round(peak_best, 1),
        "share_of_matmul_rate_b32_m10_best": round(best / peak_best, 3),
        # the same step's work counted as the plain model runs it (every replica, every glimpse)
        "nominal_gflops_b32_m10": round(ours[10]["gflops_nominal"], 1),
        "nominal_share_b32_m10": round(ours[10]["gflops_nominal"] / peak, 3),
        # sharing off: slower, but every nominal FLOP is executed
        "unshared_ms_per_step_b32_m10": round(1000 * plain, 2),
        "unshared_share_of_matmul_rate_b32_m10": round(timer.nominal / plain / 1e9 / peak, 3),
    }))


if __name__ == "__main__":
    main()
