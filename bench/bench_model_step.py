"""Time one training step (forward + hybrid loss + backward + Adam) of RAM/DRAM on CPU.

    .venv/bin/python bench/bench_model_step.py [--model ram] [--core rnn] [--batch 32] [--replicas 1]
        [--compare-unfused]

Defaults: Mnih et al.'s 60×60 setup (glimpse 12, 3 scales, 6 glimpses, hidden 256), one thread.
`--compare-unfused` times RAM's fused training loop (`models/unroll.py`) against the plain
autograd path in the same process, alternating blocks of steps so both see the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lgdram_cli.allocator import keep_freed_memory
from lgdram_cli.losses import BUILTIN_LOSSES, HybridLoss, LossBatch
from lgdram_cli.models.dram import DRAM
from lgdram_cli.models.ram import RAM


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="ram", choices=["ram", "dram"])
    ap.add_argument("--core", default="rnn")
    ap.add_argument("--sensor", default="fc")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--replicas", type=int, default=1)
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True, help="fused Adam")
    ap.add_argument("--compare-unfused", action="store_true", help="also time RAM's plain autograd path")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `lgdram train` does
    torch.manual_seed(0)

    cls = RAM if args.model == "ram" else DRAM
    config = cls.Config(core=args.core, sensor=args.sensor)
    model = cls(config, channels=1, size=(args.size, args.size), classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=args.fused)
    loss = HybridLoss({"classification": {}, "reinforce": {}, "location": {}}, BUILTIN_LOSSES)
    n, m = args.batch, args.replicas
    images = torch.rand(n, 1, args.size, args.size)
    batch = LossBatch(
        labels=torch.randint(0, 10, (n,)).repeat_interleave(m),
        centers=(torch.rand(n, 2) * 2 - 1).repeat_interleave(m, dim=0),
        annotated=torch.ones(n * m, dtype=torch.bool),
        replicas=m,
    )

    def step(i: int) -> None:
        out = model(images, replicas=m)
        total, _ = loss(out, batch, i)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    for i in range(30):
        step(i)
    paths = [True, False] if args.compare_unfused else [True]
    times: dict[bool, list[float]] = {p: [] for p in paths}
    rounds = 10
    for r in range(rounds):
        for fused in paths:
            model.fused = fused
            for i in range(args.steps // rounds):
                t0 = time.perf_counter()
                step(i)
                times[fused].append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    for fused in paths:
        label = "" if not args.compare_unfused else (" fused loop" if fused else " plain autograd")
        print(
            f"{args.model} core={args.core} sensor={args.sensor} batch={n}x{m} {args.size}x{args.size} "
            f"params={params}{label}: median {statistics.median(times[fused]) * 1e3:.2f} ms/step, "
            f"mean {statistics.mean(times[fused]) * 1e3:.2f} ms/step ({args.threads} thread)"
        )


if __name__ == "__main__":
    main()
