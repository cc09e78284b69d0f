"""The dataset half of the runtime contract: is a generator's batch a proper `CanvasBatch`?

Every command that takes canvases from a generator — `gen-data`, `train`, `eval --dataset`,
`visualize --dataset`, the Python API — runs `require_batch` on them, so a plugin that breaks
the tensor conventions is stopped with one line naming it and its distribution, not by a
shape error deep inside PyTorch. The conformance kit (`lgdram.testing.check_dataset`) runs
the same `check_batch`.
"""

from __future__ import annotations

from typing import Any

import torch

from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.errors import UserError
from lgdram_cli.geometry import box_contains, loc_to_px

#: What each CanvasBatch field must be: dtype, and shape for N canvases of C × H × W.
FIELDS = (
    ("images", torch.uint8, "[N, C, H, W]"),
    ("labels", torch.int64, "[N]"),
    ("centers", torch.float32, "[N, 2]"),
    ("boxes", torch.float32, "[N, 4]"),
    ("n_distractors", torch.int16, "[N]"),
)


def check_batch(batch: Any, n: int, channels: int, size: tuple[int, int], classes: int) -> str | None:
    """None when `batch` honours the CanvasBatch conventions for `n` canvases of `channels` ×
    `size` (H, W) with labels in [0, classes), else what is wrong, in a few words."""
    if not isinstance(batch, CanvasBatch):
        return f"generate returned {type(batch).__name__}, not a CanvasBatch"
    H, W = size
    shapes = {
        "images": (n, channels, H, W), "labels": (n,), "centers": (n, 2), "boxes": (n, 4), "n_distractors": (n,),
    }
    for (name, dtype, layout), t in zip(FIELDS, batch.tensors()):
        if not isinstance(t, torch.Tensor):
            return f"'{name}' is a {type(t).__name__}, not a tensor"
        if t.dtype != dtype or tuple(t.shape) != shapes[name]:
            return f"'{name}' is {t.dtype} {tuple(t.shape)}, expected {dtype} {shapes[name]} ({layout})"
    if n == 0:
        return None
    if int(batch.labels.min()) < 0 or int(batch.labels.max()) >= classes:
        return f"labels outside [0, {classes})"
    if not torch.isfinite(batch.centers).all() or batch.centers.abs().max() > 1:
        return "centres outside [-1, 1]"
    b = batch.boxes
    if not torch.isfinite(b).all():
        return "boxes that are not finite"
    if (b[:, 0] < 0).any() or (b[:, 1] < 0).any() or (b[:, 2] > W).any() or (b[:, 3] > H).any():
        return "boxes reach outside the canvas"
    if (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
        return "empty boxes (x_max <= x_min or y_max <= y_min)"
    if not box_contains(b, loc_to_px(batch.centers, size), inclusive=True).all():
        return "centres outside their boxes (are x and y swapped?)"
    return None


def origin_of(generator: Any) -> str:
    """How messages name a generator: "dataset 'x' from 'lgdram-x 0.1.0'" when it was built
    from the registry, else its class."""
    return getattr(generator, "origin", None) or f"dataset class {type(generator).__qualname__}"


def require_batch(generator: Any, batch: Any, n: int) -> Any:
    """`batch` when it is `n` proper canvases of `generator`, else a UserError naming the plugin."""
    problem = check_batch(batch, n, generator.channels, tuple(generator.size), generator.classes)
    if problem:
        raise UserError(f"{origin_of(generator)} returned a bad batch: {problem}")
    return batch


def generate_checked(
    generator: Any, n: int, split: str, seed: int, device: torch.device | str = "cpu", start: int = 0
) -> CanvasBatch:
    """`generator.generate(...)`, checked by `require_batch` where it lies (no copy)."""
    batch = generator.generate(n, split, seed, device, start=start)
    require_batch(generator, batch, n)
    return batch
