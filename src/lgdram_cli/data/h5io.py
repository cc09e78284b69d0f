"""The public HDF5 canvas format ("lgdram-canvas", version 1): writer and validating reader.

Layout (N samples, C channels, H×W canvas):
    images         uint8   [N, C, H, W]
    labels         int64   [N]
    centers        float32 [N, 2]   target centre (x, y) in [-1, 1]
    boxes          float32 [N, 4]   target box (x_min, y_min, x_max, y_max), pixels, max exclusive
    n_distractors  int16   [N]
    annotated      bool    [N]      which samples a trainer may use the location of
Root attributes: lgdram.format = "lgdram-canvas", lgdram.format_version = 1,
lgdram.spec (resolved spec JSON), lgdram.split, lgdram.seed, lgdram.digits.source,
lgdram.digits.sha256.

Files are written to a temp file in the destination folder and renamed when complete, so a
reader never sees a half-written dataset and an existing one is never clobbered by a failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.errors import UserError

FORMAT = "lgdram-canvas"
FORMAT_VERSION = 1
FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    # name: (dtype, per-sample shape; images' is filled in per file)
    "images": (np.dtype(np.uint8), ()),
    "labels": (np.dtype(np.int64), ()),
    "centers": (np.dtype(np.float32), (2,)),
    "boxes": (np.dtype(np.float32), (4,)),
    "n_distractors": (np.dtype(np.int16), ()),
    "annotated": (np.dtype(np.bool_), ()),
}


class CanvasWriter:
    """Appends CanvasBatches to an open HDF5 file with the layout above."""

    def __init__(self, f: h5py.File, n: int, shape: tuple[int, int, int], attrs: dict[str, Any]) -> None:
        self.f, self.n, self.filled = f, n, 0
        c, h, w = shape
        for name, (dtype, tail) in FIELDS.items():
            per = (c, h, w) if name == "images" else tail
            # chunks of ~64-256 canvases: 10 KiB–1 MiB as h5py recommends, whole canvases per chunk
            rows = max(1, min(n, (1 << 19) // max(1, int(np.prod(per)) * dtype.itemsize)))
            f.create_dataset(
                name, shape=(n, *per), dtype=dtype, chunks=(rows, *per),
                compression="gzip", compression_opts=4, shuffle=True, fletcher32=True,
            )
        f.attrs["lgdram.format"] = FORMAT
        f.attrs["lgdram.format_version"] = FORMAT_VERSION
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)

    def append(self, batch: CanvasBatch, annotated: np.ndarray) -> None:
        lo, hi = self.filled, self.filled + len(batch)
        cpu = batch.to("cpu")
        self.f["images"][lo:hi] = cpu.images.numpy()
        self.f["labels"][lo:hi] = cpu.labels.numpy()
        self.f["centers"][lo:hi] = cpu.centers.numpy()
        self.f["boxes"][lo:hi] = cpu.boxes.numpy()
        self.f["n_distractors"][lo:hi] = cpu.n_distractors.numpy()
        self.f["annotated"][lo:hi] = annotated
        self.filled = hi


def annotation_mask(n: int, share: float, seed: int) -> np.ndarray:
    """Exactly round(share·n) samples annotated, chosen by `seed`."""
    k = int(round(share * n))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng([seed, 0xA77]).permutation(n)[:k]] = True
    return mask


class CanvasFile:
    """A validated, read-only view of an lgdram-canvas HDF5 file.

    Safe with DataLoader workers: the h5py handle is opened lazily and re-opened in each
    process (a handle inherited through fork corrupts reads).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._pid: int | None = None
        self._f: h5py.File | None = None
        f = self._open()
        try:
            self.attrs = {k: _attr(v) for k, v in f.attrs.items()}
            self._validate(f)
            self.n = int(f["labels"].shape[0])
            self.shape = tuple(int(s) for s in f["images"].shape[1:])  # (C, H, W)
        except UserError:
            self.close()
            raise

    @property
    def spec(self) -> dict[str, Any]:
        return json.loads(self.attrs.get("lgdram.spec", "{}"))

    def _open(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            if not self.path.is_file():
                raise UserError(f"dataset file not found: {self.path}")
            try:
                self._f = h5py.File(self.path, "r")
            except OSError as exc:
                raise UserError(
                    f"{self.path} is not a readable HDF5 file (truncated or another format); "
                    "regenerate it with 'lgdram gen-data'"
                ) from exc
            self._pid = os.getpid()
        return self._f

    def _validate(self, f: h5py.File) -> None:
        where = str(self.path)
        if f.attrs.get("lgdram.format") != FORMAT:
            raise UserError(f"{where} is not an lgdram canvas file (no lgdram.format = '{FORMAT}' attribute)")
        version = int(f.attrs.get("lgdram.format_version", -1))
        if version != FORMAT_VERSION:
            raise UserError(
                f"{where} has format version {version}; this lgdram reads version {FORMAT_VERSION}"
            )
        n = None
        for name, (dtype, tail) in FIELDS.items():
            if name not in f:
                raise UserError(f"{where} lacks the '{name}' dataset; regenerate it with 'lgdram gen-data'")
            d = f[name]
            if d.dtype != dtype:
                raise UserError(f"{where}: '{name}' has dtype {d.dtype}, expected {dtype}")
            expected_ndim = 4 if name == "images" else 1 + len(tail)
            if d.ndim != expected_ndim or (name != "images" and d.shape[1:] != tail):
                raise UserError(f"{where}: '{name}' has shape {d.shape}, expected [N, {', '.join(map(str, tail)) or '...'}]")
            if n is None:
                n = d.shape[0]
            elif d.shape[0] != n:
                raise UserError(f"{where}: '{name}' has {d.shape[0]} rows but 'images' has {n}")

    def read(self, index: slice | np.ndarray | list[int]) -> tuple[CanvasBatch, torch.Tensor]:
        """Samples at `index` (a slice or sorted indices) as a CanvasBatch + annotated mask."""
        f = self._open()
        try:
            arrays = {name: f[name][index] for name in FIELDS}
        except OSError as exc:  # checksum (fletcher32) or decompression failure
            raise UserError(f"{self.path} is corrupt ({exc}); regenerate it with 'lgdram gen-data'") from exc
        batch = CanvasBatch(*(torch.from_numpy(np.asarray(arrays[k])) for k in list(FIELDS)[:5]))
        return batch, torch.from_numpy(np.asarray(arrays["annotated"]))

    def annotated(self) -> np.ndarray:
        """The `annotated` mask of every sample (read alone: no canvases are decompressed)."""
        try:
            return np.asarray(self._open()["annotated"][:], dtype=bool)
        except OSError as exc:
            raise UserError(f"{self.path} is corrupt ({exc}); regenerate it with 'lgdram gen-data'") from exc

    def close(self) -> None:
        if self._f is not None and self._pid == os.getpid():
            self._f.close()
        self._f = None

    def __getstate__(self) -> dict[str, Any]:  # pickled into DataLoader workers without a handle
        state = self.__dict__.copy()
        state["_f"], state["_pid"] = None, None
        return state


def _attr(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value
