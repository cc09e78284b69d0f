"""GPU throughput: training steps and canvas generation on CUDA, with references from the same run.

    python bench/bench_gpu.py [--steps 30] [--json-out FILE]

RAM with the default model (LSTM core, 6 glimpses of 12×12 × 3 scales, hidden 256) on
cmnist-60 canvases, M 10, at several batch sizes: milliseconds per step and images/s through
the fused loop and through autograd, the same step on one CPU thread of the same machine, the
card's fp32 / TF32 matmul rate, and canvases/s of the generator on the GPU and on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from lgdram_cli.allocator import keep_freed_memory
from lgdram_cli.training.assemble import train_spec
from lgdram_cli.data.presets import make_generator, resolve_dataset
from lgdram_cli.models.ram import RAM
from lgdram_cli.training.benchmark import StepTimer, time_train_step

BATCHES = (32, 128, 512, 2048)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_tflops(device: torch.device, tf32: bool, n: int = 8192, repeats: int = 10) -> float:
    """The card's dense matmul rate on random data (TF32: the matrix units' float32 mode)."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)
    for _ in range(3):
        torch.mm(a, b, out=c)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b, out=c)
    sync(device)
    torch.backends.cuda.matmul.allow_tf32 = False  # lgdram trains in plain fp32
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def step(batch: int, device: torch.device, fused: bool, steps: int) -> dict[str, Any]:
    """`lgdram bench train`'s measurement; `fused` False times RAM through plain autograd."""
    spec = train_spec(dataset="cmnist-60", model="ram", sets=["dataset.digits=mnist-mini"],
                      batch_size=batch, mc=10, annotations="100%")
    RAM.fused = fused
    try:
        return time_train_step(spec, device, steps=steps, warmup=5)
    finally:
        RAM.fused = True


def kernels_per_step(batch: int, device: torch.device) -> int | None:
    """CUDA kernels one training step launches (torch.profiler): at small batches a step costs
    about this many launch latencies, whatever the batch."""
    from torch.profiler import ProfilerActivity, profile

    spec = train_spec(dataset="cmnist-60", model="ram", sets=["dataset.digits=mnist-mini"],
                      batch_size=batch, mc=10, annotations="100%")
    timer = StepTimer(spec, device)
    timer.run(3)
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            timer.run(1)  # synchronises before it returns
    except Exception as exc:  # the profiler needs CUPTI; a bench must not die of its absence
        print(f"(no kernel count: {exc})")
        return None
    return sum(1 for e in prof.events() if e.device_type.name == "CUDA")


def canvases_per_s(device: torch.device, n: int) -> float:
    generator = make_generator({**resolve_dataset("mcmnist-100"), "digits": "mnist-mini"})
    generator.generate(512, "train", 0, device)
    best = float("inf")
    for r in range(3):
        sync(device)
        t0 = time.perf_counter()
        generator.generate(n, "train", r + 1, device)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    keep_freed_memory()  # as `lgdram train` does (a command's choice: process-wide)
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json-out")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script on a machine without a GPU")
    ap.add_argument("--batches", type=int, nargs="+", default=BATCHES)
    ap.add_argument("--quick", action="store_true", help="fused steps and generation only (for A/B runs)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gpu, cpu = torch.device(args.device), torch.device("cpu")
    report: dict[str, Any] = {
        "card": torch.cuda.get_device_name(0) if gpu.type == "cuda" else "cpu", "torch": torch.__version__,
        "matmul_tflops_fp32": 0.0 if args.quick else matmul_tflops(gpu, tf32=False),
        "matmul_tflops_tf32": 0.0 if args.quick else matmul_tflops(gpu, tf32=True),
        "train": [],
    }
    rows = [] if args.quick else [("cpu (1 thread)", 32, step(32, cpu, True, args.steps))]
    for batch in args.batches:
        for fused in (True,) if args.quick else (True, False):
            rows.append((f"{gpu.type} {'fused' if fused else 'autograd'}", batch, step(batch, gpu, fused, args.steps)))
    for where, batch, r in rows:
        report["train"].append({"where": where, "batch": batch, "mc": 10, "ms_per_step": r["ms_per_step"],
                                "images_per_s": r["images_per_s"], "gflops": r["gflops"]})
    if gpu.type == "cuda" and not args.quick:
        report["kernels_per_step_b32_m10"] = kernels_per_step(32, gpu)
    report["gen_canvases_per_s"] = {
        "cuda": canvases_per_s(gpu, 16384 if args.quick or gpu.type != "cuda" else 65536),
        "cpu_1_thread": 0.0 if args.quick else canvases_per_s(cpu, 8192),
    }
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=1)
    print(f"{report['card']}, torch {report['torch']}: matmul fp32 {report['matmul_tflops_fp32']:.1f} TFLOP/s, "
          f"tf32 {report['matmul_tflops_tf32']:.1f} TFLOP/s")
    print(f"{'where':<16} {'batch×M':>9} {'ms/step':>9} {'images/s':>10} {'GFLOP/s':>9}")
    for r in report["train"]:
        print(f"{r['where']:<16} {str(r['batch']) + '×10':>9} {r['ms_per_step']:>9.2f} {r['images_per_s']:>10,.0f} {r['gflops']:>9.1f}")
    if report.get("kernels_per_step_b32_m10"):
        k = report["kernels_per_step_b32_m10"]
        fused = next(r for r in report["train"] if r["batch"] == 32 and "fused" in r["where"])
        print(f"kernels per step (32×10): {k}; {1000 * fused['ms_per_step'] / k:.1f} µs of step per kernel")
    g = report["gen_canvases_per_s"]
    print(f"mcmnist-100 generation: {g['cuda']:,.0f} canvases/s on the GPU, {g['cpu_1_thread']:,.0f} on one CPU thread")


if __name__ == "__main__":
    main()
