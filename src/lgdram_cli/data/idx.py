"""Read and write IDX files (the MNIST file format), optionally gzip-compressed.

IDX: big-endian header (magic 2051 + count, rows, cols for images; 2049 + count for labels),
then uint8 data. Every structural problem is a UserError naming the file.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from lgdram_cli.atomic import atomic_path
from lgdram_cli.errors import UserError

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049


#: Largest decompressed IDX file lgdram reads (MNIST's training images: 47 MB): a small gzip
#: file can expand to gigabytes.
MAX_IDX_BYTES = 2 << 30


def read_bytes(path: Path, limit: int | None = None) -> bytes:
    """The decompressed content of an IDX file (gzip detected by its magic bytes), at most
    `limit` bytes (default MAX_IDX_BYTES, and no more than the memory available)."""
    from lgdram_cli.resources import human, memory_available

    available = memory_available()
    limit = min(limit or MAX_IDX_BYTES, available // 2 if available else MAX_IDX_BYTES)
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
            f.seek(0)
            if gz:
                with gzip.GzipFile(fileobj=f) as z:
                    data = z.read(limit + 1)
            else:
                data = f.read(limit + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UserError(f"cannot read IDX file {path}: {exc}; re-download or replace it") from exc
    if len(data) > limit:
        raise UserError(f"IDX file {path} holds more than {human(limit)} (decompressed); lgdram reads at most that")
    return data


def parse_images(data: bytes, path: Path) -> np.ndarray:
    """uint8 [N, rows, cols] from the bytes of an IDX3 image file."""
    if len(data) < 16:
        raise UserError(f"{path} is not an IDX image file (only {len(data)} bytes)")
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGES_MAGIC:
        raise UserError(f"{path} is not an IDX image file (magic {magic}, expected {IMAGES_MAGIC})")
    expected = 16 + n * rows * cols
    if len(data) != expected:
        raise UserError(
            f"{path} is truncated or padded: {len(data)} bytes, header says {expected}; "
            "re-download or replace it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def parse_labels(data: bytes, path: Path) -> np.ndarray:
    """uint8 [N] from the bytes of an IDX1 label file."""
    if len(data) < 8:
        raise UserError(f"{path} is not an IDX label file (only {len(data)} bytes)")
    magic, n = struct.unpack(">II", data[:8])
    if magic != LABELS_MAGIC:
        raise UserError(f"{path} is not an IDX label file (magic {magic}, expected {LABELS_MAGIC})")
    if len(data) != 8 + n:
        raise UserError(
            f"{path} is truncated or padded: {len(data)} bytes, header says {8 + n}; "
            "re-download or replace it"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=8)


def encode_images(images: np.ndarray) -> bytes:
    n, rows, cols = images.shape
    return struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols) + images.astype(np.uint8).tobytes()


def encode_labels(labels: np.ndarray) -> bytes:
    return struct.pack(">II", LABELS_MAGIC, len(labels)) + labels.astype(np.uint8).tobytes()


def write_atomic(path: Path, data: bytes, *, compress: bool | None = None) -> None:
    """Write `data` to `path` via a temp file + rename (gzip when the name ends in .gz)."""
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, mtime=0)  # mtime=0: reproducible bytes
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
