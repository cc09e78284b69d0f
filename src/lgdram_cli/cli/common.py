"""Small helpers shared by CLI commands: console, progress bars, annotations, devices, threads."""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from rich.console import Console

from lgdram_cli.devices import resolve_device  # noqa: F401 (the commands' name for it)
from lgdram_cli.errors import UserError

#: Messages, warnings and progress go to stderr; data (JSON, tables asked for) to stdout.
err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


#: Set when a command has already told the user it was interrupted (and how to continue),
#: so the top-level handler does not print "interrupted" a second time.
INTERRUPT = {"reported": False}


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


#: One intra-op thread by default: on 2-core machines two OpenMP threads ran this kind of
#: small-op model up to 40x slower than one when the other core was busy (see README).
DEFAULT_THREADS = 1


def set_threads(threads: int | None) -> int:
    import torch

    if threads is not None:
        n = threads
    else:
        value = os.environ.get("LGDRAM_THREADS", "").strip() or str(DEFAULT_THREADS)
        if not value.isdigit() or int(value) < 1:
            raise UserError(f"$LGDRAM_THREADS={value!r}: give a whole number of threads, 1 or more")
        n = int(value)
    if n < 1:
        raise UserError(f"--threads {n}: must be at least 1")
    torch.set_num_threads(n)
    return n
