"""Timing the training step (`lgdram bench train`): the same `train_step` the trainer runs."""

from __future__ import annotations

import time
from typing import Any

import torch

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
        train_step(model, setup.loss, optimizer, batch, 0, M, 1e9, setup.spec.precision)
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


class StepTimer:
    """One model, optimizer and fixed batch, ready to time training steps in blocks (so that a
    benchmark can interleave them with a reference measured under the same conditions).

    `keep_freed_memory=True` first tunes the process's allocator as `lgdram train` does
    (`allocator.keep_freed_memory`: process-wide, so only a command asks for it — `lgdram
    bench train` does; a library caller keeps its process as it is)."""

    def __init__(self, spec: TrainSpec, device: torch.device, *, keep_freed_memory: bool = False) -> None:
        if keep_freed_memory:
            from lgdram_cli.allocator import keep_freed_memory as tune

            tune()
        torch.manual_seed(spec.seed)
        self.spec, self.device = spec, device
        self.setup = setup = build(spec)
        self.model = setup.model.to(device)
        self.optimizer = make_optimizer(self.model, spec.optim.lr)
        feed = OnTheFlyFeed(setup.generator, spec.seed, spec.annotations, spec.batch_size, 1)
        self.batch = feed.batch(0, 0, device)  # fixed batch: time the model, not the generator
        self.flops = step_flops(setup, self.batch, spec.mc)
        self.nominal = nominal_step_flops(setup, self.batch, spec.mc) if hasattr(setup.model, "fused") else self.flops
        self.step = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, steps: int) -> list[float]:
        """Seconds of each of `steps` training steps."""
        self._sync()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            train_step(
                self.model, self.setup.loss, self.optimizer, self.batch, self.step, self.spec.mc,
                self.spec.optim.clip, self.spec.precision,
            )
            self._sync()
            times.append(time.perf_counter() - t0)
            self.step += 1
        return times

    def report(self, times: list[float]) -> dict[str, Any]:
        """`lgdram bench train`'s figures from step times (the median, and the best)."""
        times = sorted(times)
        median = times[len(times) // 2]
        spec = self.spec
        return {
            "model": self.setup.model.config.model_dump(mode="json"),
            "canvas": list(self.setup.size),
            "batch_size": spec.batch_size,
            "mc": spec.mc,
            "device": str(self.device),
            "ms_per_step": 1000 * median,
            "ms_per_step_best": 1000 * times[0],
            "images_per_s": spec.batch_size * spec.mc / median,
            "gflop_per_step": self.flops / 1e9,
            "gflops": self.flops / 1e9 / median,
            "gflop_per_step_nominal": self.nominal / 1e9,
            "gflops_nominal": self.nominal / 1e9 / median,
        }


def time_train_step(
    spec: TrainSpec, device: torch.device, steps: int, warmup: int, *, keep_freed_memory: bool = False
) -> dict[str, Any]:
    timer = StepTimer(spec, device, keep_freed_memory=keep_freed_memory)
    timer.run(warmup)
    return timer.report(timer.run(steps))
