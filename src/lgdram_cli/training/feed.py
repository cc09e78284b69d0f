"""Where training images come from: an infinite on-the-fly stream, or an HDF5 file.

Both are pure functions of (seed, step, rank): batch `step` is the same whether a run was
interrupted and resumed or not, so no data-loader state needs saving.

Location annotations come as a share or as a fixed budget (`annotation_pool`):
- a share p on the fly: every fresh canvas is annotated with probability p (the seed's
  stream: a 30k-step run at p = 1 % and batch 32 sees ~9,600 distinct annotated canvases);
- a pool of K on the fly: K canvases are made once (seeded) and are the only annotated ones.
  Each image of a batch is one of them with probability K / N, N = the number of training
  digits (what a fixed training set of one canvas per digit, K of them annotated, would give),
  otherwise a fresh, unannotated canvas;
- with an HDF5 file, a share p or a count K picks a fixed, seeded subset of the file's images.
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


#: The seed of a run's fixed annotation pool is derived from the run's seed with this salt, so
#: the pool never repeats canvases of the training stream.
POOL_SALT = 0x9E3779B9


class OnTheFlyFeed:
    """Fresh canvases every step (the seed's infinite stream), annotated with probability
    `annotations`, or drawn from a fixed pool of `pool` annotated canvases (module docstring)."""

    def __init__(
        self, generator: DatasetGenerator, seed: int, annotations: float, batch_size: int, world_size: int,
        pool: int | None = None, device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        self.generator, self.seed, self.share = generator, seed, annotations
        self.batch_size, self.world_size = batch_size, world_size
        self.pool: CanvasBatch | None = None
        if pool:
            size = getattr(generator, "train_size", None)
            if not size:
                raise UserError(
                    f"a fixed pool of {pool} annotated canvases needs a dataset with a known number of "
                    "training digits; give --annotations as a share (1%) or train from a file (--data)"
                )
            self.pool_rate = min(1.0, pool / size)
            self.pool = generator.generate(pool, "train", (seed + POOL_SALT) % 2**32, device)

    def batch(self, step: int, rank: int, device: torch.device) -> TrainBatch:
        start = (step * self.world_size + rank) * self.batch_size
        data = self.generator.generate(self.batch_size, "train", self.seed, device, start=start)
        g = _step_generator(self.seed, step, rank, 1)
        coin = torch.rand(self.batch_size, generator=g)
        if self.pool is None:
            return _to_train_batch(data, (coin < self.share).to(device), device)
        chosen = coin < self.pool_rate
        which = torch.randint(0, len(self.pool.labels), (self.batch_size,), generator=g)[chosen]
        if not len(which):  # most batches at small pools: no copy
            return _to_train_batch(data, chosen.to(device), device)
        rows = chosen.nonzero().squeeze(1)
        parts = [t.clone() for t in data.to(device).tensors()]
        for part, source in zip(parts, self.pool.to(device).tensors()):
            part[rows.to(device)] = source[which.to(device)]
        return _to_train_batch(CanvasBatch(*parts), chosen.to(device), device)


class FileFeed:
    """Random batches (with replacement) from an lgdram-canvas HDF5 file.

    Annotated images: the file's `annotated` mask, narrowed to a seeded subset of
    round(P·N) of them (or `pool` of them) when `annotations` asks for fewer.
    """

    def __init__(self, file: CanvasFile, seed: int, annotations: float, batch_size: int, pool: int | None = None):
        self.file, self.seed, self.batch_size = file, seed, batch_size
        available = np.flatnonzero(file.annotated())
        want = pool if pool else int(round(annotations * file.n))
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
