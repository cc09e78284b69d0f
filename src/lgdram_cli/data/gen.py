"""`gen-data`: generate a task's canvases and write them as an lgdram-canvas HDF5 file."""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import h5py
import torch
from pydantic import Field

from lgdram_cli import resources
from lgdram_cli.atomic import atomic_path
from lgdram_cli.data.contract import require_batch
from lgdram_cli.data.h5io import CanvasWriter, GuardedFile, annotation_mask
from lgdram_cli.locking import output_lock
from lgdram_cli.data.presets import make_generator
from lgdram_cli.errors import UserError
from lgdram_cli.interrupts import StopFlag
from lgdram_cli.specs import StrictModel

#: Bytes of canvases generated and written per block: bounded memory for any N and canvas, and
#: short enough blocks that Ctrl-C (handled between blocks' compression calls) acts quickly.
WRITE_BLOCK_BYTES = 16 << 20


def block_size(generator: object) -> int:
    c, (h, w) = generator.channels, generator.size
    return max(1, min(4096, WRITE_BLOCK_BYTES // (c * h * w)))


class GenDataSpec(StrictModel):
    """Everything that determines a dataset file's content."""

    dataset: dict[str, Any] = Field(description="dataset spec: 'type' plus the generator's parameters")
    n: int = Field(gt=0, description="number of samples")
    split: Literal["train", "test"] = "train"
    seed: int = Field(0, ge=0, lt=2**32, description="random seed, 0 <= seed < 2**32")
    annotations: float = Field(1.0, ge=0.0, le=1.0, description="share of samples whose location is annotated")


def generate_file(
    spec: GenDataSpec,
    out: Path,
    *,
    force: bool = False,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write `spec`'s samples to `out` atomically; return the resolved spec stored in it."""
    generator = make_generator(spec.dataset)
    block = block_size(generator)
    shape = resources.dataset_shape(generator)
    c, h, w, k, _ = shape
    what = f"gen-data ({spec.n} canvases of {c}×{h}×{w}" + (f", up to {k} distractors" if k else "") + ")"
    resources.check_memory(  # the composing chunk and one block of canvases: before allocating either
        resources.generation_bytes(shape) + 2 * resources.canvases_bytes(min(spec.n, block), shape), what,
        "use a smaller canvas or fewer distractors",
    )
    with output_lock(out, "lgdram gen-data"), atomic_path(out, force=force) as tmp:
        first = generator.generate(min(spec.n, block), spec.split, spec.seed, device)
        require_batch(generator, first.to("cpu") if hasattr(first, "to") else first, min(spec.n, block))
        # the file's size, from how well the first block compresses (gzip level 4, as written)
        raw = first.images.to("cpu").numpy().tobytes()
        per_canvas = len(zlib.compress(raw, 4)) / max(1, len(first)) + 24  # + labels, centres, boxes, …
        resources.check_disk(int(spec.n * per_canvas * 1.1) + (64 << 10), out, what, "free some space or write elsewhere")
        resolved = spec.model_dump(mode="json")
        resolved["dataset"] = generator.resolved_config()
        attrs: dict[str, Any] = {
            "lgdram.spec": resolved,
            "lgdram.split": spec.split,
            "lgdram.seed": spec.seed,
            "lgdram.classes": generator.classes,
        }
        attrs.update({f"lgdram.{k}": v for k, v in generator.provenance(spec.split).items()})
        mask = annotation_mask(spec.n, spec.annotations, spec.seed)
        sink = GuardedFile(tmp)  # a full disk is an OSError here, not a crash inside HDF5
        try:
            with h5py.File(sink, "w") as f:
                writer = CanvasWriter(f, spec.n, tuple(first.images.shape[1:]), attrs)
                sink.check()
                batch = first
                with StopFlag() as stop:  # Ctrl-C stops between blocks; the temp file is removed
                    while batch is not None:
                        writer.append(batch, mask[writer.filled : writer.filled + len(batch)])
                        sink.check()  # stop at the first failed write
                        if on_progress:
                            on_progress(len(batch))
                        stop.check()
                        left = spec.n - writer.filled
                        batch = (
                            generator.generate(min(block, left), spec.split, spec.seed, device, start=writer.filled)
                            if left > 0
                            else None
                        )
        finally:
            sink.close()
        sink.check()  # HDF5 writes its metadata when the file is closed
    return resolved
