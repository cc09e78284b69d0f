"""Digit sources: where the 28×28 digits that canvases are built from come from.

`mnist`        full MNIST (60k train / 10k test) from IDX files: `$LGDRAM_DATA`, the user
               cache, or downloaded there on first use (mirrors: `$LGDRAM_MNIST_MIRRORS`).
               When it is neither on disk nor downloadable, lgdram falls back to
               `mnist-mini` with a warning and records the source actually used.
`mnist-mini`   4,000 train / 1,000 test real MNIST training digits bundled with lgdram.
`fashion-mnist` Fashion-MNIST IDX (Debian's `dataset-fashion-mnist` is detected).
`idx:DIR`      any directory holding `train-*`/`t10k-*` IDX files in the MNIST naming (for the
              train split, also a single `NAME-images-idx3-ubyte` / `NAME-labels-idx1-ubyte` pair).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from lgdram_cli.data import idx
from lgdram_cli.data.download import DownloadUnavailable, download
from lgdram_cli.errors import UserError, unknown_name

SPLITS = ("train", "test")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# Published MD5 sums of the gzip files, used to verify downloads.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
#: Sizes in bytes of the published gzip files: a download is cut off a little past them.
MNIST_SIZES = {
    "train-images-idx3-ubyte.gz": 9_912_422,
    "train-labels-idx1-ubyte.gz": 28_881,
    "t10k-images-idx3-ubyte.gz": 1_648_877,
    "t10k-labels-idx1-ubyte.gz": 4_542,
}
FASHION_SIZES = {
    "train-images-idx3-ubyte.gz": 26_421_880,
    "train-labels-idx1-ubyte.gz": 29_515,
    "t10k-images-idx3-ubyte.gz": 4_422_102,
    "t10k-labels-idx1-ubyte.gz": 5_148,
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FASHION_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = ("mnist", "mnist-mini", "fashion-mnist", "idx:DIR")
#: Classes of every digit source (MNIST, Fashion-MNIST and IDX folders in their format).
CLASSES = 10


class SourceFallbackWarning(UserWarning):
    """The requested digit source was unavailable and another one was used."""


#: (LGDRAM_DATA, cache folder, mirrors) for which this process found no MNIST and warned: no
#: second download attempt and no second warning there (files put in place later are found).
_FELL_BACK: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class DigitSet:
    """One split of a digit source, as arrays ready for canvas generation."""

    images: np.ndarray  # uint8 [N, 28, 28]
    labels: np.ndarray  # int64 [N]
    source: str  # the source actually used (after any fallback)
    split: str
    sha256: str  # of the decompressed image + label bytes: identifies the digits exactly

    @property
    def classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lgdram"


def mirrors(env: str, defaults: tuple[str, ...]) -> list[str]:
    """Mirror base URLs: a comma-separated env variable overrides the built-in list."""
    value = os.environ.get(env, "").strip()
    return [m.strip() for m in value.split(",") if m.strip()] if value else list(defaults)


def load_digits(source: str, split: str) -> DigitSet:
    """The digits of `split` from `source` (see the module docstring for names)."""
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use 'train' or 'test'")
    return _load_cached(source, split, os.environ.get("LGDRAM_DATA", ""))


@lru_cache(maxsize=16)
def _load_cached(source: str, split: str, _data_env: str) -> DigitSet:
    if source.startswith("idx:"):
        directory = Path(source[4:]).expanduser()
        if not directory.is_dir():
            raise UserError(
                f"digit source {source}: {directory} is not a directory; point it at an IDX folder or choose "
                "another source, e.g. --set dataset.test_digits=mnist (mnist, mnist-mini, fashion-mnist, idx:DIR)"
            )
        return _read_split(directory, split, source)
    if source == "mnist-mini":
        return _mnist_mini(split)
    if source == "mnist":
        # one download attempt and one warning per process (and place to look): the other
        # split, and every later generator, take the same decision quietly
        key = (os.environ.get("LGDRAM_DATA", ""), str(cache_dir()), os.environ.get("LGDRAM_MNIST_MIRRORS", ""))
        directory, why = _find_or_download(
            "mnist", MNIST_MD5, "LGDRAM_MNIST_MIRRORS", MNIST_MIRRORS, sizes=MNIST_SIZES, fetch=key not in _FELL_BACK
        )
        if directory is None:
            if key not in _FELL_BACK:
                _FELL_BACK.add(key)
                warnings.warn(
                    f"full MNIST is not on disk and could not be downloaded ({_first(why)}); using the bundled "
                    "'mnist-mini' (4,000 train / 1,000 test digits) instead (said once per process). To use full "
                    f"MNIST offline, put its four IDX files (train-images-idx3-ubyte.gz, …) in {cache_dir() / 'mnist'} "
                    "or $LGDRAM_DATA/mnist; to silence this, ask for the bundled digits: --set dataset.digits=mnist-mini",
                    SourceFallbackWarning,
                    stacklevel=3,
                )
            return _mnist_mini(split)
        return _read_split(directory, split, "mnist")
    if source == "fashion-mnist":
        directory, _ = _find_or_download(
            "fashion-mnist", FASHION_MD5, "LGDRAM_FASHION_MIRRORS", FASHION_MIRRORS, DEBIAN_FASHION_DIR,
            sizes=FASHION_SIZES,
        )
        if directory is None:
            raise UserError(
                "Fashion-MNIST is not on disk and could not be downloaded; install it with "
                "'apt-get install dataset-fashion-mnist' or put its IDX files in $LGDRAM_DATA/fashion-mnist"
            )
        return _read_split(directory, split, "fashion-mnist")
    raise unknown_name("digit source", source, NAMES)


def _has_files(directory: Path) -> bool:
    return all(_locate(directory, name) is not None for pair in FILES.values() for name in pair)


def _locate(directory: Path, gz_name: str) -> Path | None:
    """The file `gz_name` in `directory`, compressed or not."""
    for candidate in (directory / gz_name, directory / gz_name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _first(why: str, limit: int = 160) -> str:
    """The first failure of a list, short enough for a one-line warning."""
    first = why.split("; ")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _find_or_download(
    name: str, md5: dict[str, str], mirror_env: str, default_mirrors: tuple[str, ...], *extra: Path,
    sizes: dict[str, int] | None = None, fetch: bool = True,
) -> tuple[Path | None, str]:
    """A directory with all four IDX files of `name`, downloading into the cache if needed;
    (None, why) when that is not possible: no mirror answered in time and within the size cap,
    or the cache cannot be written (an unwritable $XDG_CACHE_HOME, a read-only ~/.cache)."""
    env = os.environ.get("LGDRAM_DATA")
    candidates = [Path(env) / name, Path(env)] if env else []
    candidates += [*extra, cache_dir() / name]
    for directory in candidates:
        try:
            if _has_files(directory):
                return directory, ""
        except OSError:  # a path the system refuses (too long, a loop): not this one
            continue
    target = cache_dir() / name
    if not fetch:
        return None, "not on disk; this process already tried to download it"
    try:
        for filename, digest in md5.items():
            if _locate(target, filename) is None:
                download(filename, mirrors(mirror_env, default_mirrors), target / filename, digest,
                         size=(sizes or {}).get(filename))
    except DownloadUnavailable as exc:
        return None, str(exc)
    except OSError as exc:  # the cache folder refuses the file: fall back like offline
        return None, f"cannot write the cache {target}: {exc.strerror or exc}"
    return target, ""


def _single_pair(directory: Path) -> tuple[Path, Path] | None:
    """The one `<name>-images-idx3-ubyte[.gz]` / `<name>-labels-idx1-ubyte[.gz]` pair in
    `directory` whose name does not start with t10k (a training subset such as mnist-5k)."""
    images = [p for p in directory.glob("*-images-idx3-ubyte*") if not p.name.startswith("t10k")]
    if len(images) != 1:
        return None
    prefix, _, ext = images[0].name.partition("-images-idx3-ubyte")
    labels = directory / f"{prefix}-labels-idx1-ubyte{ext}"
    return (images[0], labels) if labels.is_file() else None


def _read_split(directory: Path, split: str, source: str) -> DigitSet:
    image_name, label_name = FILES[split]
    image_path, label_path = _locate(directory, image_name), _locate(directory, label_name)
    if (image_path is None or label_path is None) and split == "train" and source.startswith("idx:"):
        image_path, label_path = _single_pair(directory) or (None, None)
    if image_path is None or label_path is None:
        hint = "; give the test digits their own source with dataset.test_digits=idx:DIR" if split == "test" else ""
        raise UserError(
            f"digit source {source}: {directory} has no {split} split "
            f"(expected {image_name} and {label_name}, gzipped or not){hint}"
        )
    image_bytes, label_bytes = idx.read_bytes(image_path), idx.read_bytes(label_path)
    images = idx.parse_images(image_bytes, image_path)
    labels = idx.parse_labels(label_bytes, label_path)
    if len(images) != len(labels):
        raise UserError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels")
    if images.shape[1:] != (28, 28):
        raise UserError(f"{image_path} holds {images.shape[1]}×{images.shape[2]} images; lgdram needs 28×28")
    if len(images) == 0:
        raise UserError(f"{image_path} holds no images (its header says 0); re-download or replace it")
    if labels.max() >= CLASSES:
        bad = int(np.flatnonzero(labels >= CLASSES)[0])
        raise UserError(
            f"{label_path}: label {int(labels[bad])} at item {bad} is outside 0…{CLASSES - 1} "
            "(MNIST-format digit sources have 10 classes); re-download or replace it"
        )
    digest = hashlib.sha256(image_bytes + label_bytes).hexdigest()
    return DigitSet(images.copy(), labels.astype(np.int64), source, split, digest)


def _mnist_mini(split: str) -> DigitSet:
    directory = Path(str(resources.files("lgdram_cli.data") / "mnist_mini"))
    return _read_split(directory, split, "mnist-mini")
