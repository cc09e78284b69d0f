"""Digit sources: IDX parsing, `idx:DIR`, `$LGDRAM_DATA`, real HTTP downloads, fallback, Fashion-MNIST."""

from __future__ import annotations

import gzip
import hashlib
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from helpers import blob_digits, dead_url, gz_bytes, leftovers, write_idx_dir
from lgdram_cli.data import download as download_module
from lgdram_cli.data import idx, sources
from lgdram_cli.data.presets import make_generator
from lgdram_cli.data.sources import SourceFallbackWarning, load_digits
from lgdram_cli.errors import UserError

# ---------------------------------------------------------------- IDX files


def test_idx_round_trip_gzipped_or_not(tmp_path):
    images, labels = blob_digits(30, 77, seed=0)
    for gz in (True, False):
        directory = write_idx_dir(tmp_path / f"gz{gz}", (images, labels), (images[:5], labels[:5]), gz=gz)
        sources._load_cached.cache_clear()
        train = load_digits(f"idx:{directory}", "train")
        assert np.array_equal(train.images, images)
        assert np.array_equal(train.labels, labels)
        assert train.labels.dtype == np.int64
        assert train.source == f"idx:{directory}"
        assert len(load_digits(f"idx:{directory}", "test").images) == 5


def _idx_dir_with(tmp_path: Path, image_bytes: bytes | None = None, label_bytes: bytes | None = None) -> Path:
    images, labels = blob_digits(20, 90, seed=0)
    directory = write_idx_dir(tmp_path / "digits", (images, labels), (images, labels))
    if image_bytes is not None:
        (directory / "train-images-idx3-ubyte.gz").write_bytes(gz_bytes(image_bytes))
    if label_bytes is not None:
        (directory / "train-labels-idx1-ubyte.gz").write_bytes(gz_bytes(label_bytes))
    return directory


GOOD_IMAGES = idx.encode_images(np.zeros((20, 28, 28), np.uint8))
GOOD_LABELS = idx.encode_labels(np.arange(20) % 10)


@pytest.mark.parametrize(
    "image_bytes,label_bytes,needles",
    [
        (b"\x00\x00\x08\x01" + GOOD_IMAGES[4:], None, ["not an IDX image file", "magic 2049", "2051"]),
        (None, b"\x00\x00\x08\x03" + GOOD_LABELS[4:], ["not an IDX label file", "magic 2051", "2049"]),
        (GOOD_IMAGES[:-100], None, ["truncated or padded"]),
        (GOOD_IMAGES + b"\x00" * 5, None, ["truncated or padded"]),
        (None, GOOD_LABELS[:-3], ["truncated or padded"]),
        (GOOD_IMAGES[:10], None, ["only 10 bytes"]),
        (None, b"", ["only 0 bytes"]),
        (idx.encode_images(np.zeros((21, 28, 28), np.uint8)), None, ["21 images", "20 labels"]),
        (idx.encode_images(np.zeros((20, 32, 32), np.uint8)), None, ["32×32", "28×28"]),
    ],
)
def test_bad_idx_files_are_user_errors_naming_the_file(tmp_path, image_bytes, label_bytes, needles):
    directory = _idx_dir_with(tmp_path, image_bytes, label_bytes)
    with pytest.raises(UserError) as exc:
        load_digits(f"idx:{directory}", "train")
    message = str(exc.value)
    assert str(directory) in message
    for needle in needles:
        assert needle in message, message


def test_truncated_gzip_is_a_user_error(tmp_path):
    directory = _idx_dir_with(tmp_path)
    path = directory / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(UserError, match="cannot read IDX file"):
        load_digits(f"idx:{directory}", "train")


def test_corrupt_gzip_is_a_user_error(tmp_path):
    """A gzip file whose deflate stream is damaged (a bad sector, a broken copy)."""
    directory = _idx_dir_with(tmp_path)
    path = directory / "train-labels-idx1-ubyte.gz"
    noisy = np.random.default_rng(0).integers(0, 10, 2000).astype(np.uint8)
    raw = bytearray(gz_bytes(idx.encode_labels(noisy)))
    for i in range(15, len(raw) - 10):
        raw[i] ^= 0x55
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="cannot read IDX file"):
        load_digits(f"idx:{directory}", "train")


def test_idx_source_errors(tmp_path):
    with pytest.raises(UserError, match="is not a directory"):
        load_digits(f"idx:{tmp_path / 'nowhere'}", "train")
    only_train = write_idx_dir(tmp_path / "only-train", blob_digits(10, 5, 0), None)
    assert len(load_digits(f"idx:{only_train}", "train").images) == 10
    with pytest.raises(UserError, match="has no test split"):
        load_digits(f"idx:{only_train}", "test")


def test_unknown_source_and_split():
    with pytest.raises(UserError, match="unknown digit source 'mnst' \\(did you mean 'mnist'\\?\\)"):
        load_digits("mnst", "train")
    with pytest.raises(UserError, match="unknown split"):
        load_digits("mnist-mini", "validation")


def test_lgdram_data_is_used_without_download(tmp_path, monkeypatch, isolated_env):
    data = tmp_path / "data"
    write_idx_dir(data / "mnist", blob_digits(30, 40, 0), blob_digits(12, 50, 1))
    monkeypatch.setenv("LGDRAM_DATA", str(data))
    train = load_digits("mnist", "train")
    assert train.source == "mnist" and len(train.images) == 30
    assert len(load_digits("mnist", "test").images) == 12
    assert leftovers(isolated_env) == [], "nothing may be downloaded when $LGDRAM_DATA has the files"


# ---------------------------------------------------------------- a real HTTP mirror


class Mirror:
    """A file server on 127.0.0.1 (ephemeral port) with per-file misbehaviour."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()  # announce more bytes than sent, then hang up
        self.requests: list[str] = []
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                mirror.requests.append(name)
                body = mirror.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                length = len(body) + 100_000 if name in mirror.cut else len(body)
                self.send_header("Content-Length", str(length))
                self.end_headers()
                self.wfile.write(body if name not in mirror.cut else body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    m = Mirror()
    yield m
    m.stop()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def mnist_files(shared_data, monkeypatch) -> dict[str, bytes]:
    """The four MNIST files: the real t10k ones, and small synthetic train files whose md5s
    replace the published ones (the real train files are not available offline)."""
    files = {
        name: (shared_data / "mnist" / name).read_bytes()
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    }
    images, labels = blob_digits(50, 123, seed=3)
    files["train-images-idx3-ubyte.gz"] = gz_bytes(idx.encode_images(images))
    files["train-labels-idx1-ubyte.gz"] = gz_bytes(idx.encode_labels(labels))
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        monkeypatch.setitem(sources.MNIST_MD5, name, md5(files[name]))
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert md5(files[name]) == sources.MNIST_MD5[name], "shared t10k files differ from the official ones"
    return files


def test_download_from_second_mirror_into_cache(mirror, mnist_files, monkeypatch, isolated_env):
    mirror.files.update(mnist_files)
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", f"{dead_url()},{mirror.url}")
    train = load_digits("mnist", "train")
    assert train.source == "mnist"
    assert len(train.images) == 50 and set(np.unique(train.images)) == {0, 123}
    test = load_digits("mnist", "test")
    assert test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).sum() == 10000

    cached = isolated_env / "lgdram" / "mnist"
    assert leftovers(cached) == sorted(mnist_files), "the cache holds exactly the four files, no temp files"
    for name, data in mnist_files.items():
        assert md5((cached / name).read_bytes()) == md5(data)
    assert sorted(mirror.requests) == sorted(mnist_files)  # each file fetched once

    # later runs use the cache, offline
    mirror.stop()
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", dead_url())
    sources._load_cached.cache_clear()
    again = load_digits("mnist", "train")
    assert again.source == "mnist" and again.sha256 == train.sha256


def test_checksum_mismatch_is_a_user_error_and_leaves_no_file(mirror, mnist_files, monkeypatch, isolated_env):
    mirror.files.update(mnist_files)
    mirror.files["train-images-idx3-ubyte.gz"] = gz_bytes(b"tampered" * 100)
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", mirror.url)
    with pytest.raises(UserError) as exc:
        load_digits("mnist", "train")
    assert "checksum mismatch" in str(exc.value)
    assert "train-images-idx3-ubyte.gz" in str(exc.value)
    cached = isolated_env / "lgdram" / "mnist"
    files = leftovers(cached) if cached.exists() else []
    assert "train-images-idx3-ubyte.gz" not in files
    assert not any(Path(f).name.startswith(".") for f in files), files  # no temp file left


def test_corrupt_download_is_never_renamed_into_place(mirror, mnist_files, monkeypatch, tmp_path):
    """'An interrupted or corrupt download never leaves a file that looks finished': the final
    name may only ever hold verified bytes, also for the instant between rename and check
    (a kill at that moment would leave a corrupt file that later runs trust)."""
    mirror.files["train-images-idx3-ubyte.gz"] = b"not the real file"
    real_replace = download_module.os.replace
    landed: list[str] = []

    def spying_replace(src, dst):
        landed.append(md5(Path(src).read_bytes()))
        return real_replace(src, dst)

    monkeypatch.setattr(download_module.os, "replace", spying_replace)
    with pytest.raises(UserError, match="checksum mismatch"):
        download_module.download(
            "train-images-idx3-ubyte.gz", [mirror.url], tmp_path / "train-images-idx3-ubyte.gz", "0" * 32
        )
    assert md5(b"not the real file") not in landed, "a file with the wrong checksum was renamed into place"
    assert leftovers(tmp_path) == []


def test_all_mirrors_down_falls_back_to_mnist_mini(monkeypatch, isolated_env):
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", f"{dead_url()},{dead_url()}")
    with pytest.warns(SourceFallbackWarning, match="mnist-mini"):
        digits = load_digits("mnist", "train")
    assert digits.source == "mnist-mini" and len(digits.images) == 4000
    g = make_generator({"type": "translated", "digits": "mnist"})
    with warnings.catch_warnings():  # said once per process: not again for the test split
        warnings.simplefilter("error", SourceFallbackWarning)
        g.generate(4, "test", seed=0)
    assert g.resolved_config()["digits"] == "mnist-mini"
    assert g.provenance("test")["digits.source"] == "mnist-mini"
    assert not any(Path(f).name.startswith(".") for f in leftovers(isolated_env))  # no temp file left


def test_http_errors_fall_back_too(mirror, monkeypatch):
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", mirror.url)  # serves nothing: 404s
    with pytest.warns(SourceFallbackWarning):
        assert load_digits("mnist", "test").source == "mnist-mini"
    assert mirror.requests, "the mirror was not asked"


def test_connection_cut_mid_transfer_leaves_no_partial_file(mirror, mnist_files, monkeypatch, isolated_env):
    mirror.files.update(mnist_files)
    mirror.cut.add("train-images-idx3-ubyte.gz")
    monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", mirror.url)
    with pytest.warns(SourceFallbackWarning):
        digits = load_digits("mnist", "train")
    assert digits.source == "mnist-mini"
    cached = isolated_env / "lgdram" / "mnist"
    files = leftovers(cached) if cached.exists() else []
    assert "train-images-idx3-ubyte.gz" not in files
    assert not any(Path(f).name.startswith(".") for f in files), files  # no temp file left


def test_connection_cut_on_first_mirror_uses_the_second(mnist_files, monkeypatch, isolated_env):
    bad, good = Mirror(), Mirror()
    try:
        bad.files.update(mnist_files)
        bad.cut.update(mnist_files)
        good.files.update(mnist_files)
        monkeypatch.setenv("LGDRAM_MNIST_MIRRORS", f"{bad.url},{good.url}")
        digits = load_digits("mnist", "train")
        assert digits.source == "mnist" and len(digits.images) == 50
        assert leftovers(isolated_env / "lgdram" / "mnist") == sorted(mnist_files)
    finally:
        bad.stop()
        good.stop()


# ---------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_debian_package_is_detected(isolated_env):
    directory = sources.DEBIAN_FASHION_DIR
    if not (directory / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {directory}")
    test = load_digits("fashion-mnist", "test")
    assert test.source == "fashion-mnist"
    assert test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels).tolist() == [1000] * 10
    # Fashion-MNIST's first test item is an ankle boot (class 9); MNIST's is a 7
    assert test.labels[0] == 9
    assert leftovers(isolated_env) == [], "an installed copy must not be downloaded again"


def test_fashion_mnist_missing_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_DIR", tmp_path / "absent")
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_digits("fashion-mnist", "test")


def test_cached_sha256_identifies_decompressed_digits(tmp_path):
    images, labels = blob_digits(10, 60, seed=9)
    a = write_idx_dir(tmp_path / "a", (images, labels), None, gz=True)
    b = write_idx_dir(tmp_path / "b", (images, labels), None, gz=False)
    expected = hashlib.sha256(idx.encode_images(images) + idx.encode_labels(labels)).hexdigest()
    assert load_digits(f"idx:{a}", "train").sha256 == expected
    assert load_digits(f"idx:{b}", "train").sha256 == expected
    assert gzip.decompress((a / "train-images-idx3-ubyte.gz").read_bytes()) == idx.encode_images(images)
