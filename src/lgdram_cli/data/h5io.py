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

import errno
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from lgdram_cli import resources
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


class GuardedFile(io.RawIOBase):
    """A file for h5py's `fileobj` driver that never lets a failed write reach HDF5.

    When the disk fills up (or a file-size limit, quota or I/O error strikes), HDF5's own file
    driver leaves the library in a broken state: closing the file fails again, and freeing
    h5py's objects at exit crashes the interpreter (SIGSEGV). Here the first failed write is
    recorded, later writes are dropped, and HDF5 is told every write succeeded, so the file can
    be closed normally; `check()` raises the recorded error (the caller then removes the file).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._f = open(path, "w+b", buffering=0)  # noqa: SIM115 (closed in close())
        self.error: OSError | None = None

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._f.readinto(buffer)

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if self.error is None:
            try:
                view, done = memoryview(data).cast("B"), 0
                while done < size:
                    written = self._f.write(view[done:])
                    if not written:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += written
            except OSError as exc:
                self.error = exc
        return size

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def truncate(self, size: int | None = None) -> int:
        try:
            return self._f.truncate(size)
        except OSError as exc:
            if self.error is None:
                self.error = exc
            return self._f.tell() if size is None else size

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
        super().close()

    def check(self) -> None:
        """Raise the first write error, if there was one."""
        if self.error is not None:
            raise self.error


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
            with self._damage("its structure"):
                self.attrs = {k: _attr(v) for k, v in f.attrs.items()}
                self._validate(f)
                self.n = int(f["labels"].shape[0])
                self.shape = tuple(int(s) for s in f["images"].shape[1:])  # (C, H, W)
            self.classes = self._classes()
            self._spec = self._read_spec()
        except UserError:
            self.close()
            raise

    @contextmanager
    def _damage(self, what: str) -> Iterator[None]:
        """h5py's errors on a damaged file (OSError, KeyError, ValueError, … from libhdf5) as
        one UserError naming the file."""
        try:
            yield
        except UserError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, OverflowError, AttributeError) as exc:
            detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise UserError(
                f"{self.path} is corrupt ({what} cannot be read: {detail}); regenerate it with 'lgdram gen-data'"
            ) from exc

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self._spec)

    def _read_spec(self) -> dict[str, Any]:
        text = self.attrs.get("lgdram.spec", "{}")
        try:
            spec = json.loads(text) if isinstance(text, str) else None
        except (ValueError, RecursionError):
            spec = None
        if not isinstance(spec, dict):
            raise UserError(f"{self.path}: its 'lgdram.spec' attribute is not a JSON object; regenerate it with 'lgdram gen-data'")
        return spec

    def _classes(self) -> int:
        """The number of classes the file declares (`lgdram.classes`; 10 when it does not)."""
        value = self.attrs.get("lgdram.classes", 10)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise UserError(f"{self.path}: its 'lgdram.classes' attribute is {value!r}, not a number of classes")
        classes = int(value)
        if not 1 <= classes <= 1_000_000:
            raise UserError(f"{self.path}: its 'lgdram.classes' attribute is {classes}; a file needs 1 or more classes")
        return classes

    def _open(self) -> h5py.File:
        if self._f is None or self._pid != os.getpid():
            if not self.path.is_file():
                raise UserError(f"dataset file not found: {self.path}")
            try:
                self._f = h5py.File(self.path, "r")
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
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
        if not n:
            raise UserError(f"{where} holds no samples (N = 0); regenerate it with 'lgdram gen-data --n N'")
        if min(f["images"].shape[1:]) < 1:
            raise UserError(f"{where}: 'images' has shape {f['images'].shape}; a canvas needs pixels")

    def read(self, index: slice | np.ndarray | list[int]) -> tuple[CanvasBatch, torch.Tensor]:
        """Samples at `index` (a slice or sorted indices) as a CanvasBatch + annotated mask.
        Labels outside the file's classes and non-finite centres or boxes are a UserError."""
        rows = len(range(*index.indices(self.n))) if isinstance(index, slice) else len(index)
        c, h, w = self.shape
        resources.check_rows(rows, c * h * w * 5 + 64, self.path, "reading canvases")  # uint8 + float32 copies
        f = self._open()
        with self._damage("its samples"):  # checksum (fletcher32), decompression, a damaged index
            arrays = {name: f[name][index] for name in FIELDS}
        self._check_values(arrays, index)
        batch = CanvasBatch(*(torch.from_numpy(np.asarray(arrays[k])) for k in list(FIELDS)[:5]))
        return batch, torch.from_numpy(np.asarray(arrays["annotated"]))

    def _check_values(self, arrays: dict[str, Any], index: slice | np.ndarray | list[int]) -> None:
        """Values no model can use: a label outside 0 … classes − 1, a NaN or infinite centre or box."""
        rows = range(self.n)[index] if isinstance(index, slice) else np.asarray(index)
        labels = np.asarray(arrays["labels"])
        bad = np.flatnonzero((labels < 0) | (labels >= self.classes))
        if bad.size:
            i = int(bad[0])
            raise UserError(
                f"{self.path}: label {int(labels[i])} at row {int(rows[i])} is outside 0…{self.classes - 1} "
                f"(the file declares {self.classes} classes); regenerate it with 'lgdram gen-data'"
            )
        for name in ("centers", "boxes"):
            values = np.asarray(arrays[name])
            bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
            if bad.size:
                i = int(bad[0])
                raise UserError(
                    f"{self.path}: '{name}' at row {int(rows[i])} is {values[i].tolist()} (not finite); "
                    "regenerate it with 'lgdram gen-data'"
                )

    def annotated(self) -> np.ndarray:
        """The `annotated` mask of every sample (read alone: no canvases are decompressed)."""
        # the mask, its indices and a permutation of them (training's annotation pool)
        resources.check_rows(self.n, 18, self.path, "reading the annotated mask")
        with self._damage("its annotated mask"):
            mask = np.asarray(self._open()["annotated"][:], dtype=bool)
        self.check_targets()  # training reads random rows for hours: a bad one must stop it now
        return mask

    def check_targets(self, block: int = 1 << 20) -> None:
        """Every row's label, centre and box, read a block at a time (no canvases)."""
        f = self._open()
        for lo in range(0, self.n, block):
            index = slice(lo, min(lo + block, self.n))
            with self._damage("its labels and locations"):
                arrays = {name: f[name][index] for name in ("labels", "centers", "boxes")}
            self._check_values(arrays, index)

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
