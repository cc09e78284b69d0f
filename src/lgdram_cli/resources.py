"""Resource guards: refuse, before allocating, what cannot fit in memory or on disk.

A canvas of 100000×100000, 100000 distractors per canvas, an HDF5 file declaring 10^12 samples
or a huge `--n` would otherwise end in the allocator's error, the kernel's OOM killer or a full
disk hours later. Each guard estimates what a command will allocate (a lower bound of the peak:
the big buffers only) and compares it with the memory available now (`MemAvailable` in
/proc/meminfo) or the free space of the output's file system; too much is a UserError (exit 2)
naming the estimate and the limit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lgdram_cli.errors import UserError, short_path

#: Canvases composed per generator call (data.generators.CHUNK; not imported: no torch here).
CHUNK = 256
#: Largest spec file lgdram reads (a recipe is a few hundred bytes).
MAX_SPEC_BYTES = 1 << 20


def human(n: float) -> str:
    """12345678 → '11.8 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def memory_available() -> int | None:
    """Bytes of memory available to a new allocation now (MemAvailable), None if unknown.
    `$LGDRAM_MEMORY_LIMIT` (bytes, or with a K/M/G/T suffix) caps it."""
    available = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    cap = _parse_size(os.environ.get("LGDRAM_MEMORY_LIMIT", ""))
    if cap is not None:
        available = cap if available is None else min(available, cap)
    return available


def _parse_size(text: str) -> int | None:
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if not text:
        return None
    factor = 1
    if text[-1] in "KMGT":
        factor = 1024 ** ("KMGT".index(text[-1]) + 1)
        text = text[:-1]
    try:
        return int(float(text) * factor)
    except ValueError:
        raise UserError(f"$LGDRAM_MEMORY_LIMIT={os.environ.get('LGDRAM_MEMORY_LIMIT')!r}: give bytes, e.g. 4G") from None


def disk_free(path: Path) -> int | None:
    """Free bytes on the file system that holds `path` (or its nearest existing folder)."""
    probe = Path(path).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def check_memory(need: int, what: str, hint: str = "") -> None:
    """Refuse `need` bytes of memory for `what` when they are not available."""
    available = memory_available()
    if available is not None and need > available:
        raise UserError(
            f"{what} needs about {human(need)} of memory, more than the {human(available)} available"
            + (f"; {hint}" if hint else "")
        )


def check_disk(need: int, out: Path, what: str, hint: str = "") -> None:
    """Refuse to write about `need` bytes to `out` when its file system has less free space."""
    free = disk_free(Path(out).parent if str(Path(out).parent) else Path("."))
    if free is not None and need > free:
        raise UserError(
            f"{what} needs about {human(need)} of disk space, more than the {human(free)} free where "
            f"{short_path(out)} goes" + (f"; {hint}" if hint else "")
        )


# ---------------------------------------------------------------- estimates


def dataset_shape(dataset: Any) -> tuple[int, int, int, int, int]:
    """(channels, height, width, most distractors, distractor side) of a generator (or its
    spec as a dict: no generator is built), for the estimates below."""
    if isinstance(dataset, dict):
        canvas = dataset.get("canvas", (60, 60))
        if isinstance(canvas, (int, float)):
            canvas = (canvas, canvas)
        elif isinstance(canvas, str):
            parts = canvas.lower().split("x")
            canvas = (parts[0], parts[-1])
        distractors = dataset.get("distractors", 0)
        if isinstance(distractors, str):
            distractors = distractors.split("-")[-1]
        elif isinstance(distractors, (list, tuple)):
            distractors = distractors[-1]
        try:
            h, w = int(canvas[0]), int(canvas[1])
            k = int(distractors)
            ds = int(dataset.get("distractor_size", 8))
        except (TypeError, ValueError, IndexError):
            return (1, 60, 60, 0, 8)
        return (3 if dataset.get("colour") else 1, h, w, max(k, 0), ds)
    config = getattr(dataset, "config", None)
    h, w = (int(s) for s in dataset.size)
    k = int(getattr(config, "distractors", (0, 0))[1]) if hasattr(config, "distractors") else 0
    ds = int(getattr(config, "distractor_size", 8)) if config is not None else 8
    return (int(dataset.channels), h, w, k, ds)


def generation_bytes(shape: tuple[int, int, int, int, int]) -> int:
    """The big buffers of composing one chunk of canvases (data/canvas.py `compose`): the int16
    summing canvas and the uint8 images, and per distractor slot its random draws (5 int64) and
    the gather and scatter indices of its pixels (2 int64 and 2 int16 per pixel and channel)."""
    c, h, w, k, ds = shape
    per_canvas = c * h * w * 3 + k * (40 + c * ds * ds * 20)
    return CHUNK * per_canvas


def canvases_bytes(n: int, shape: tuple[int, int, int, int, int]) -> int:
    """`n` canvases held as uint8 with their labels, centres, boxes and counts."""
    c, h, w, _, _ = shape
    return n * (c * h * w + 8 + 8 + 16 + 2 + 1)


def check_generation(dataset: Any, n: int, what: str) -> None:
    """`n` canvases of `dataset`, generated in one call and held (a test set)."""
    shape = dataset_shape(dataset)
    need = generation_bytes(shape) + canvases_bytes(n, shape)
    c, h, w, k, _ = shape
    check_memory(need, f"{what} ({n} canvases of {c}×{h}×{w}" + (f", up to {k} distractors" if k else "") + ")",
                 "use a smaller canvas, fewer distractors or fewer canvases")


def model_step_bytes(shape: tuple[int, int, int, int, int], batch: int, replicas: int, model: dict[str, Any]) -> int:
    """The big buffers of one training step: the batch as float32, the retina's block-mean grids
    (about two canvases per scale), and per replica and glimpse the patches and a few hidden
    layers, kept for the backward pass."""
    c, h, w, _, _ = shape
    try:
        scales = int(model.get("scales", 3))
        g = int(model.get("glimpse_size", 12))
        glimpses = int(model.get("glimpses", 6))
        hidden = int(model.get("hidden", 256))
    except (TypeError, ValueError):
        scales, g, glimpses, hidden = 3, 12, 6, 256
    images = batch * c * h * w * 4 * (1 + 2 * max(scales, 1))
    per_row = glimpses * (max(scales, 1) * g * g * c + 8 * hidden) * 4
    return images + batch * replicas * per_row


def check_train(spec: Any) -> None:
    """A training run's batch (× Monte-Carlo replicas) and its test set must fit in memory."""
    shape = dataset_shape(spec.dataset)
    c, h, w, k, _ = shape
    step = model_step_bytes(shape, spec.batch_size, spec.mc, spec.model if isinstance(spec.model, dict) else {})
    test = 0 if spec.test_data else canvases_bytes(spec.eval_n, shape)
    evaluation = model_step_bytes(shape, min(spec.eval_n, 500), 1, spec.model if isinstance(spec.model, dict) else {})
    need = generation_bytes(shape) + step + test + evaluation
    check_memory(
        need,
        f"training with batch {spec.batch_size} × mc {spec.mc} on {c}×{h}×{w} canvases"
        + (f" with up to {k} distractors" if k else "") + f" and {spec.eval_n} test canvases",
        "use a smaller --batch-size, --mc, --eval-n, canvas or fewer distractors",
    )


def check_rows(n: int, row_bytes: int, path: Path, what: str) -> None:
    """Reading `n` rows of `row_bytes` each from a file (its declared shape) must fit in memory."""
    check_memory(n * row_bytes, f"{what} of {short_path(path)} ({n:,} rows)", "use a smaller --n or a smaller file")
