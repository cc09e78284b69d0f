"""`lgdram bench`: throughput of the generator (`gen`) and of a training step (`train`)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Optional

import typer

from lgdram_cli.cli.common import out, resolve_device, set_threads
from lgdram_cli.cli.gen_data import Sets, build_spec

bench_app = typer.Typer(help="Measure throughput.", no_args_is_help=True)


@bench_app.command("gen")
def bench_gen(
    dataset: Annotated[str, typer.Option(help="Generator, preset or recipe file.")] = "mcmnist-100",
    n: Annotated[int, typer.Option("--n", help="Canvases to generate per repeat.")] = 16384,
    repeats: Annotated[int, typer.Option(help="Timed repeats (best is reported).")] = 3,
    sets: Sets = None,
    split: Annotated[str, typer.Option(help="Digit split.")] = "train",
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N] \\[default: $LGDRAM_DEVICE, else cpu].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Canvases per second of the generator alone (no file writing)."""
    import torch

    from lgdram_cli.data.presets import make_generator
    from lgdram_cli.errors import UserError

    if n <= 0 or repeats <= 0:
        raise UserError("--n and --repeats must be positive")
    threads_used = set_threads(threads)
    spec = build_spec(dataset, None, sets, n=n, split=split)
    generator = make_generator(spec.dataset)
    dev = resolve_device(device, "cpu")
    generator.generate(min(n, 512), split, 0, dev)  # warm-up: loads digits, first allocations
    best = float("inf")
    for r in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generator.generate(n, split, r, dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    result = {
        "dataset": generator.resolved_config(),
        "n": n,
        "device": str(dev),
        "threads": threads_used,
        "seconds": best,
        "canvases_per_s": n / best,
    }
    if as_json:
        out.print_json(json.dumps(result))
    else:
        h, w = generator.size
        out.print(f"{result['canvases_per_s']:,.0f} canvases/s ({h}x{w}, {n} canvases, {dev}, {threads_used} thread(s))")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")


@bench_app.command("train")
def bench_train(
    model: Annotated[str, typer.Option(help="Model name.")] = "ram",
    dataset: Annotated[str, typer.Option(help="Generator, preset or recipe file.")] = "cmnist-60",
    sets: Annotated[
        Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Spec override by path: model.core=rnn, dataset.canvas=100.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 32,
    mc: Annotated[int, typer.Option("--mc", help="Monte-Carlo replicas per image.")] = 10,
    steps: Annotated[int, typer.Option(help="Timed steps.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed steps first.")] = 10,
    precision: Annotated[Optional[str], typer.Option(help="fp32 or bf16 (mixed precision) \\[default: fp32].")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu or cuda[:N] \\[default: $LGDRAM_DEVICE, else cpu].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Milliseconds per training step (forward, hybrid loss, backward, Adam) on a fixed batch."""
    from lgdram_cli.errors import UserError
    from lgdram_cli.training.benchmark import time_train_step

    if steps < 1 or warmup < 0 or batch_size < 1 or mc < 1:
        raise UserError("--steps, --batch-size and --mc must be at least 1 and --warmup at least 0")
    threads_used = set_threads(threads)
    from lgdram_cli.cli.train_cmd import train_spec

    spec = train_spec(
        dataset=dataset, model=model, sets=sets, batch_size=batch_size, mc=mc, annotations="100%", precision=precision
    )
    dev = resolve_device(device, "cpu")
    from lgdram_cli.training.precision import check_precision

    check_precision(spec.precision, dev)
    # the allocator tuning `lgdram train` makes: process-wide, so the command asks for it
    result = time_train_step(spec, dev, steps=steps, warmup=warmup, keep_freed_memory=True)
    result["precision"] = spec.precision
    result["threads"] = threads_used
    if as_json:
        out.print_json(json.dumps(result))
    else:
        out.print(
            f"{result['ms_per_step']:.2f} ms/step, {result['images_per_s']:,.0f} images/s "
            f"({model}, {spec.precision}, batch {batch_size} x mc {mc}, {result['device']}, {threads_used} thread(s)); "
            f"{result['gflop_per_step']:.3f} GFLOP/step = {result['gflops']:.1f} GFLOP/s"
        )
