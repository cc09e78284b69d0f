"""Timing the training step (`lgdram bench train`): the same `train_step` the trainer runs."""

from __future__ import annotations

import time
from typing import Any

import torch

from lgdram_cli.allocator import keep_freed_memory
from lgdram_cli.training.feed import OnTheFlyFeed
from lgdram_cli.training.loop import build, make_optimizer, train_step
from lgdram_cli.training.spec import TrainSpec


def _inplace_matmul_flops(self_shape: Any, a_shape: Any, b_shape: Any, out_shape: Any = None, **_: Any) -> int:
    """`addmm_` (accumulate a product in place), which torch's counter does not know."""
    return 2 * a_shape[0] * a_shape[1] * b_shape[1]


def step_flops(setup: Any, batch: Any, M: int) -> float:
    """Floating-point operations of one training step (forward + backward), counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = setup.model
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)  # lr 0: counting must not train
    extra = {torch.ops.aten.addmm_: _inplace_matmul_flops}
    with FlopCounterMode(display=False, custom_mapping=extra) as counter:
        train_step(model, setup.loss, optimizer, batch, 0, M, 1e9)
    return float(counter.get_total_flops())


def nominal_step_flops(setup: Any, batch: Any, M: int) -> float:
    """FLOPs of the plain step-by-step model (RAM with `fused` off), where every replica runs
    every glimpse. RAM's fused loop computes a fixed first glimpse once per image, so it executes
    fewer (`step_flops`)."""
    model = setup.model
    fused = model.fused
    model.fused = False
    try:
        return step_flops(setup, batch, M)
    finally:
        model.fused = fused


def time_train_step(spec: TrainSpec, device: torch.device, steps: int, warmup: int) -> dict[str, Any]:
    keep_freed_memory()  # as `train` does
    torch.manual_seed(spec.seed)
    setup = build(spec)
    model = setup.model.to(device)
    optimizer = make_optimizer(model, spec.optim.lr)
    feed = OnTheFlyFeed(setup.generator, spec.seed, spec.annotations, spec.batch_size, 1)
    batch = feed.batch(0, 0, device)  # fixed batch: time the model, not the generator
    flops = step_flops(setup, batch, spec.mc)
    nominal = nominal_step_flops(setup, batch, spec.mc) if hasattr(setup.model, "fused") else flops

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for s in range(warmup):
        train_step(model, setup.loss, optimizer, batch, s, spec.mc, spec.optim.clip)
    sync()
    times = []
    for s in range(steps):
        t0 = time.perf_counter()
        train_step(model, setup.loss, optimizer, batch, warmup + s, spec.mc, spec.optim.clip)
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "model": setup.model.config.model_dump(mode="json"),
        "canvas": list(setup.size),
        "batch_size": spec.batch_size,
        "mc": spec.mc,
        "device": str(device),
        "ms_per_step": 1000 * median,
        "ms_per_step_best": 1000 * times[0],
        "images_per_s": spec.batch_size * spec.mc / median,
        "gflop_per_step": flops / 1e9,
        "gflops": flops / 1e9 / median,
        "gflop_per_step_nominal": nominal / 1e9,
        "gflops_nominal": nominal / 1e9 / median,
    }
