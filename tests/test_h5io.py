"""The lgdram-canvas HDF5 format: layout, attributes, annotation masks, and the validating reader."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import shutil
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from helpers import leftovers
from lgdram_cli.data import gen as gen_module
from lgdram_cli.data.gen import GenDataSpec, generate_file
from lgdram_cli.data.h5io import FORMAT, FORMAT_VERSION, CanvasFile, annotation_mask
from lgdram_cli.data.presets import make_generator
from lgdram_cli.errors import UserError

DATASET = {"type": "mcmnist", "canvas": "40x56", "distractors": "1-3", "digits": "mnist-mini"}
N = 300


def write(
    path: Path, n: int = N, annotations: float = 0.3, seed: int = 5, force: bool = False, **dataset
) -> dict:
    spec = GenDataSpec(dataset={**DATASET, **dataset}, n=n, split="train", seed=seed, annotations=annotations)
    return generate_file(spec, path, force=force)


@pytest.fixture
def h5file(tmp_path) -> Path:
    path = tmp_path / "data.h5"
    write(path)
    return path


def test_layout_dtypes_shapes_chunking_compression(h5file):
    with h5py.File(h5file, "r") as f:
        assert set(f.keys()) == {"images", "labels", "centers", "boxes", "n_distractors", "annotated"}
        expected = {
            "images": (np.uint8, (N, 1, 40, 56)),
            "labels": (np.int64, (N,)),
            "centers": (np.float32, (N, 2)),
            "boxes": (np.float32, (N, 4)),
            "n_distractors": (np.int16, (N,)),
            "annotated": (np.bool_, (N,)),
        }
        for name, (dtype, shape) in expected.items():
            d = f[name]
            assert d.dtype == np.dtype(dtype), name
            assert d.shape == shape, name
            assert d.chunks is not None, f"{name} is not chunked"
            assert d.compression == "gzip", name
        assert f["images"].chunks[1:] == (1, 40, 56), "an images chunk must hold whole canvases"


def test_root_attributes_record_format_spec_and_digits(h5file):
    with h5py.File(h5file, "r") as f:
        attrs = dict(f.attrs)
    assert attrs["lgdram.format"] == FORMAT == "lgdram-canvas"
    assert int(attrs["lgdram.format_version"]) == FORMAT_VERSION == 1
    assert attrs["lgdram.split"] == "train"
    assert int(attrs["lgdram.seed"]) == 5
    spec = json.loads(attrs["lgdram.spec"])
    assert spec["n"] == N and spec["seed"] == 5 and spec["split"] == "train"
    assert spec["annotations"] == pytest.approx(0.3)
    assert spec["dataset"]["type"] == "mcmnist"
    assert spec["dataset"]["canvas"] == [40, 56]
    assert spec["dataset"]["distractors"] == [1, 3]
    assert spec["dataset"]["digits"] == "mnist-mini"
    assert attrs["lgdram.digits.source"] == "mnist-mini"
    # the checksum identifies the decompressed digit bytes of the split used
    mini = Path(str(resources.files("lgdram_cli.data") / "mnist_mini"))
    raw = b"".join(
        gzip.decompress((mini / name).read_bytes())
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    )
    assert attrs["lgdram.digits.sha256"] == hashlib.sha256(raw).hexdigest()


def test_spec_records_the_digit_source_actually_used(tmp_path):
    # 'mnist' cannot be found or downloaded here (mirrors refuse): the fallback is recorded
    with pytest.warns(UserWarning, match="mnist-mini"):
        resolved = write(tmp_path / "fallback.h5", n=20, digits="mnist")
    assert resolved["dataset"]["digits"] == "mnist-mini"
    cf = CanvasFile(tmp_path / "fallback.h5")
    assert cf.spec["dataset"]["digits"] == "mnist-mini"
    assert cf.attrs["lgdram.digits.source"] == "mnist-mini"


def test_file_content_is_the_generator_stream(h5file):
    g = make_generator(dict(DATASET))
    b = g.generate(N, "train", seed=5)
    with h5py.File(h5file, "r") as f:
        assert np.array_equal(f["images"][:], b.images.numpy())
        assert np.array_equal(f["labels"][:], b.labels.numpy())
        assert np.array_equal(f["centers"][:], b.centers.numpy())
        assert np.array_equal(f["boxes"][:], b.boxes.numpy())
        assert np.array_equal(f["n_distractors"][:], b.n_distractors.numpy())


def test_writing_in_blocks_gives_the_same_file_content(tmp_path, monkeypatch):
    write(tmp_path / "one.h5")
    monkeypatch.setattr(gen_module, "block_size", lambda generator: 70)  # 300 = 4 blocks of 70 + 20
    write(tmp_path / "blocks.h5")
    with h5py.File(tmp_path / "one.h5", "r") as a, h5py.File(tmp_path / "blocks.h5", "r") as b:
        for name in a:
            assert np.array_equal(a[name][:], b[name][:]), name
    assert leftovers(tmp_path) == ["blocks.h5", "one.h5"]


@pytest.mark.parametrize("n,share", [(300, 0.3), (7, 0.5), (10, 0.0), (10, 1.0), (1000, 0.01), (3, 0.17)])
def test_annotation_mask_has_exactly_round_share_times_n(n, share):
    mask = annotation_mask(n, share, seed=3)
    assert mask.dtype == np.bool_ and mask.shape == (n,)
    assert mask.sum() == round(share * n)


def test_annotation_mask_is_seeded():
    a = annotation_mask(500, 0.1, seed=1)
    assert np.array_equal(a, annotation_mask(500, 0.1, seed=1))
    assert not np.array_equal(a, annotation_mask(500, 0.1, seed=2))


def test_annotated_dataset_in_file(h5file, tmp_path):
    with h5py.File(h5file, "r") as f:
        annotated = f["annotated"][:]
    assert annotated.sum() == round(0.3 * N)
    assert 0 < annotated[: N // 2].sum() < round(0.3 * N), "annotated samples are not spread over the file"
    write(tmp_path / "again.h5")
    with h5py.File(tmp_path / "again.h5", "r") as f:
        assert np.array_equal(f["annotated"][:], annotated)


# ---------------------------------------------------------------- the reader


def test_canvas_file_reads_what_was_written(h5file):
    cf = CanvasFile(h5file)
    assert cf.n == N and cf.shape == (1, 40, 56)
    assert cf.spec["dataset"]["type"] == "mcmnist"
    batch, annotated = cf.read(slice(10, 20))
    assert batch.images.shape == (10, 1, 40, 56) and batch.images.dtype == torch.uint8
    assert annotated.dtype == torch.bool
    with h5py.File(h5file, "r") as f:
        assert np.array_equal(batch.images.numpy(), f["images"][10:20])
        assert np.array_equal(batch.labels.numpy(), f["labels"][10:20])
        assert np.array_equal(annotated.numpy(), f["annotated"][10:20])
        picked, _ = cf.read([1, 5, 299])
        assert np.array_equal(picked.boxes.numpy(), f["boxes"][[1, 5, 299]])
    cf.close()


def _copy_and_edit(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _retype_labels(f: h5py.File) -> None:
    labels = f["labels"][:]
    del f["labels"]
    f.create_dataset("labels", data=labels.astype(np.int32))


def _shorten_boxes(f: h5py.File) -> None:
    boxes = f["boxes"][:]
    del f["boxes"]
    f.create_dataset("boxes", data=boxes[:-1])


def _bad_centers_shape(f: h5py.File) -> None:
    centers = f["centers"][:]
    del f["centers"]
    f.create_dataset("centers", data=np.zeros((len(centers), 3), np.float32))


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda f: f.attrs.__delitem__("lgdram.format"), "not an lgdram canvas file"),
        (lambda f: f.attrs.__setitem__("lgdram.format", "something-else"), "not an lgdram canvas file"),
        (lambda f: f.attrs.__setitem__("lgdram.format_version", 2), "format version 2"),
        (lambda f: f.attrs.__delitem__("lgdram.format_version"), "format version"),
        (_retype_labels, "dtype int32"),
        (lambda f: f.__delitem__("annotated"), "lacks the 'annotated' dataset"),
        (_shorten_boxes, "rows"),
        (_bad_centers_shape, "shape"),
    ],
)
def test_reader_rejects_files_that_are_not_valid_canvas_files(h5file, tmp_path, edit, needle):
    bad = _copy_and_edit(h5file, tmp_path / "bad.h5", edit)
    with pytest.raises(UserError) as exc:
        CanvasFile(bad)
    assert needle in str(exc.value)
    assert str(bad) in str(exc.value)


def test_reader_rejects_a_plain_hdf5_file(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    with pytest.raises(UserError, match="not an lgdram canvas file"):
        CanvasFile(path)


def test_reader_rejects_non_hdf5_and_truncated_files(h5file, tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("this is not HDF5\n" * 100)
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        CanvasFile(text)
    truncated = tmp_path / "truncated.h5"
    data = h5file.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        CanvasFile(truncated)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(UserError):
        CanvasFile(empty)
    with pytest.raises(UserError, match="not found"):
        CanvasFile(tmp_path / "missing.h5")
    with pytest.raises(UserError, match="not found"):
        CanvasFile(tmp_path)  # a directory


def test_reader_reports_corrupt_data_as_user_error(h5file, tmp_path):
    bad = tmp_path / "corrupt.h5"
    shutil.copy(h5file, bad)
    with h5py.File(bad, "r") as f:
        info = f["images"].id.get_chunk_info(0)
    raw = bytearray(bad.read_bytes())
    for i in range(info.byte_offset + 100, info.byte_offset + 200):
        raw[i] ^= 0xFF
    bad.write_bytes(bytes(raw))
    cf = CanvasFile(bad)  # the metadata is intact
    with pytest.raises(UserError, match="corrupt"):
        cf.read(slice(0, 10))


class _Samples(Dataset):
    """A minimal Dataset over a CanvasFile, as a trainer would wrap it."""

    def __init__(self, cf: CanvasFile) -> None:
        self.cf = cf

    def __len__(self) -> int:
        return self.cf.n

    def __getitem__(self, i: int):
        batch, annotated = self.cf.read([i])
        return batch.images[0], batch.labels[0], annotated[0]


def test_canvas_file_pickles_without_its_handle(h5file):
    cf = CanvasFile(h5file)
    cf.read(slice(0, 1))  # the handle is open
    clone = pickle.loads(pickle.dumps(cf))
    a, _ = cf.read(slice(3, 9))
    b, _ = clone.read(slice(3, 9))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    clone.close()
    cf.close()


def test_canvas_file_works_in_a_dataloader_with_two_workers(h5file):
    cf = CanvasFile(h5file)
    cf.read(slice(0, 1))  # a handle is open in the parent: workers must not reuse it
    loader = DataLoader(_Samples(cf), batch_size=32, num_workers=2, shuffle=False)
    images, labels, annotated = (torch.cat(parts) for parts in zip(*loader))
    with h5py.File(h5file, "r") as f:
        assert np.array_equal(images.numpy(), f["images"][:])
        assert np.array_equal(labels.numpy(), f["labels"][:])
        assert np.array_equal(annotated.numpy(), f["annotated"][:])
    cf.close()


def test_generate_file_refuses_to_clobber_and_leaves_nothing_on_failure(h5file, tmp_path, monkeypatch):
    before = h5file.read_bytes()
    with pytest.raises(UserError, match="already exists"):
        write(h5file)
    assert h5file.read_bytes() == before
    write(h5file, n=10, seed=9, force=True, canvas=32)
    assert CanvasFile(h5file).shape == (1, 32, 32)

    from lgdram_cli.data import h5io

    def boom(self, batch, annotated):
        raise RuntimeError("disk full")

    monkeypatch.setattr(h5io.CanvasWriter, "append", boom)
    with pytest.raises(RuntimeError):
        write(tmp_path / "never.h5")
    assert leftovers(tmp_path) == ["data.h5"]
