"""Training-step speed: lgdram vs a reference RAM in the most-used public PyTorch style, one run.

    python bench/bench_train.py [--threads 1] [--steps 100] [--blocks 10] [--section all|rnn|precision]

Section `precision` (the paper-scale defaults, issue "training speed"): DRAM and RAM with the
LSTM core on 100×100 `mcmnist`, batch 32 × M 10, each in fp32 and bf16 mixed precision,
sampled in alternating blocks with the fp32 and bf16 1024² products: the fp32 step's share of
the same-run fp32 matmul rate and the bf16 step as a ratio of the fp32 one. On a CPU without
bf16 instructions (where `train` refuses bf16) only the fp32 steps and both product rates are
timed: the emulated bf16 product rate says why.

Section `rnn`:

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

from lgdram_cli.allocator import keep_freed_memory  # noqa: E402
from lgdram_cli.training.assemble import train_spec  # noqa: E402
from lgdram_cli.training.benchmark import StepTimer, time_train_step  # noqa: E402
from lgdram_cli.training.precision import cpu_has_bf16  # noqa: E402
from lgdram_cli.training.spec import TrainSpec  # noqa: E402


def matmul_seconds(n: int = 1024, repeats: int = 10, dtype: torch.dtype = torch.float32, warmup: int = 3) -> list[float]:
    """Times of `repeats` n×n products into a preallocated output (after a warm-up): the
    machine's matmul rate in `dtype`."""
    a, b, c = (torch.randn(n, n, dtype=dtype) for _ in range(3))
    for _ in range(warmup):
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


def precision_section(steps: int, warmup: int, blocks: int) -> dict[str, float]:
    """fp32 and bf16 steps of DRAM and RAM-LSTM, interleaved with the 1024² product rates."""
    cpu = torch.device("cpu")
    native = cpu_has_bf16()  # else bf16 is emulated: train refuses it, and its products take ~2 s each
    precisions = ("fp32", "bf16") if native else ("fp32",)
    timers = {
        (model, p): StepTimer(
            train_spec(dataset="mcmnist", model=model, sets=["dataset.digits=mnist-mini", f"precision={p}"],
                       batch_size=32, mc=10, annotations="100%"), cpu)  # fmt: skip
        for model in ("dram", "ram") for p in precisions
    }
    for t in timers.values():
        t.run(warmup)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in timers}
    fp32, bf16 = [], []
    per_block = max(1, steps // blocks)
    for _ in range(blocks):
        for key, t in timers.items():
            times[key] += t.run(per_block)
        fp32 += matmul_seconds(repeats=5)
        bf16 += matmul_seconds(repeats=5 if native else 1, dtype=torch.bfloat16, warmup=3 if native else 1)
    flop = 2 * 1024**3
    rate32, rate16 = flop / median(fp32) / 1e9, flop / median(bf16) / 1e9
    result: dict[str, float] = {"matmul_gflops_fp32": round(rate32, 1), "matmul_gflops_bf16": round(rate16, 1)}
    for model in ("dram", "ram"):
        name = "ram_lstm" if model == "ram" else model
        ms32 = 1000 * median(times[(model, "fp32")])
        t = timers[(model, "fp32")]
        result.update({
            f"{name}_fp32_ms": round(ms32, 2),
            f"{name}_gflop_per_step": round(t.flops / 1e9, 2),
            f"{name}_gflop_per_step_nominal": round(t.nominal / 1e9, 2),
            f"{name}_fp32_share_of_matmul_rate": round(t.flops / 1e9 / (ms32 / 1000) / rate32, 3),
            f"{name}_fp32_nominal_share": round(t.nominal / 1e9 / (ms32 / 1000) / rate32, 3),
        })  # fmt: skip
        if native:
            ms16 = 1000 * median(times[(model, "bf16")])
            result.update({f"{name}_bf16_ms": round(ms16, 2), f"{name}_bf16_over_fp32": round(ms16 / ms32, 3)})
    return result


def main() -> None:
    keep_freed_memory()  # as `lgdram train` does (a command's choice: process-wide)
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=10, help="alternating blocks of M 10 steps and 1024² products")
    ap.add_argument("--section", choices=("all", "rnn", "precision"), default="all")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, float] = {"threads": args.threads}
    if args.section in ("all", "precision"):
        report.update(precision_section(args.steps, args.warmup, args.blocks))
    if args.section in ("all", "rnn"):
        report.update(rnn_section(args))
    print(json.dumps(report))


def rnn_section(args: argparse.Namespace) -> dict[str, float]:
    """RAM with the ReLU RNN core on 60×60 against the reference implementation."""
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
    return {
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
    }


if __name__ == "__main__":
    main()
