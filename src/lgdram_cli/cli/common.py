"""Small helpers shared by CLI commands: console, progress bars, annotations, devices, threads."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from rich.console import Console

from lgdram_cli.errors import UserError

#: Messages, warnings and progress go to stderr; data (JSON, tables asked for) to stdout.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def progress(**kwargs: Any) -> Any:
    """A Rich progress bar that switches itself off when stderr is not a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not sys.stderr.isatty(), **kwargs,
    )


def parse_annotations(text: str | float | int, n: int) -> float:
    """The annotated share of a fixed set of `n` samples: '1%' → 0.01; '40' (a count) → 40 / n."""
    from lgdram_cli.training.spec import parse_annotations as parse

    share, count = parse(text, "--annotations")
    if count is None:
        return share
    if count > n:
        raise UserError(f"--annotations {count} is more than the {n} samples; use at most {n} or a share like 1%")
    return count / n if n else 0.0


def resolve_device(name: str | None, default: str = "auto") -> Any:
    """The torch device of a `--device` option; when it is not given, `$LGDRAM_DEVICE`, then
    the command's own default (`auto`: CUDA when present)."""
    import torch

    name = name or os.environ.get("LGDRAM_DEVICE") or default
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"--device {name}: not a device; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(
            f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered from 0; use --device cuda:0 … cuda:{torch.cuda.device_count() - 1}"
        )
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: lgdram runs on cpu or cuda[:N]")
    return device


#: One intra-op thread by default: on 2-core machines two OpenMP threads ran this kind of
#: small-op model up to 40x slower than one when the other core was busy (see README).
DEFAULT_THREADS = 1


def set_threads(threads: int | None) -> int:
    import torch

    n = threads if threads is not None else int(os.environ.get("LGDRAM_THREADS", DEFAULT_THREADS))
    if n < 1:
        raise UserError(f"--threads {n}: must be at least 1")
    torch.set_num_threads(n)
    return n
