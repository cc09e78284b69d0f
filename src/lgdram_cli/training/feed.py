"""Where training images come from: an infinite on-the-fly stream, or an HDF5 file.

Both are pure functions of (seed, step, rank): batch `step` is the same whether a run was
interrupted and resumed or not, so no data-loader state needs saving.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.data.generators import DatasetGenerator, chunk_generator
from lgdram_cli.data.h5io import CanvasFile
from lgdram_cli.errors import UserError


@dataclass
class TrainBatch:
    images: torch.Tensor  # float32 [B, C, H, W] in [0, 1]
    labels: torch.Tensor  # int64 [B]
    centers: torch.Tensor  # float32 [B, 2]
    annotated: torch.Tensor  # bool [B]: may the location loss use this image?
    boxes: torch.Tensor  # float32 [B, 4]: target boxes in pixels (meaningful where annotated)


def _step_generator(seed: int, step: int, rank: int, salt: int) -> torch.Generator:
    return chunk_generator(seed * 7919 + salt, step * 1024 + rank)


class OnTheFlyFeed:
    """Fresh canvases every step (the seed's infinite stream); each annotated with probability P."""

    def __init__(self, generator: DatasetGenerator, seed: int, annotations: float, batch_size: int, world_size: int):
        self.generator, self.seed, self.share = generator, seed, annotations
        self.batch_size, self.world_size = batch_size, world_size

    def batch(self, step: int, rank: int, device: torch.device) -> TrainBatch:
        start = (step * self.world_size + rank) * self.batch_size
        data = self.generator.generate(self.batch_size, "train", self.seed, device, start=start)
        coin = torch.rand(self.batch_size, generator=_step_generator(self.seed, step, rank, 1))
        return _to_train_batch(data, (coin < self.share).to(device), device)


class FileFeed:
    """Random batches (with replacement) from an lgdram-canvas HDF5 file.

    Annotated images: the file's `annotated` mask, narrowed to a seeded subset of
    round(P·N) of them when `annotations` asks for fewer.
    """

    def __init__(self, file: CanvasFile, seed: int, annotations: float, batch_size: int):
        self.file, self.seed, self.batch_size = file, seed, batch_size
        available = np.flatnonzero(file.annotated())
        want = int(round(annotations * file.n))
        if want > len(available):
            warnings.warn(
                f"--annotations asks for {want} annotated images but {file.path} marks only "
                f"{len(available)}; using those",
                stacklevel=2,
            )
            want = len(available)
        chosen = np.random.default_rng([seed, 0xA22]).permutation(available)[:want]
        self.mask = np.zeros(file.n, dtype=bool)
        self.mask[chosen] = True

    def batch(self, step: int, rank: int, device: torch.device) -> TrainBatch:
        g = _step_generator(self.seed, step, rank, 2)
        index = torch.randint(0, self.file.n, (self.batch_size,), generator=g).numpy()
        unique, inverse = np.unique(index, return_inverse=True)  # h5py wants increasing indices
        data, _ = self.file.read(unique)
        order = torch.from_numpy(inverse)
        data = CanvasBatch(*(t[order] for t in data.tensors()))
        return _to_train_batch(data, torch.from_numpy(self.mask[index]).to(device), device)


def _to_train_batch(data: CanvasBatch, annotated: torch.Tensor, device: torch.device) -> TrainBatch:
    data = data.to(device)
    return TrainBatch(data.images.float().div_(255), data.labels, data.centers, annotated, data.boxes)


def check_file_matches(file: CanvasFile, channels: int, size: tuple[int, int], what: str) -> None:
    c, h, w = file.shape
    if (c, (h, w)) != (channels, tuple(size)):
        raise UserError(
            f"{file.path} holds {c}-channel {h}x{w} canvases but {what} expects {channels}-channel "
            f"{size[0]}x{size[1]}; use a matching file or dataset spec"
        )
