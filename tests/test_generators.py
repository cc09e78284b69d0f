"""The task generators: geometry of the ground truth, determinism, stream slicing, splits, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import BUILTIN_DATASETS, blob_digits, write_idx_dir
from lgdram_cli.data import sources
from lgdram_cli.data.generators import CHUNK
from lgdram_cli.data.presets import make_generator
from lgdram_cli.errors import UserError
from lgdram_cli.registry import DATASETS

#: A small, fast config per built-in task (the bundled digits; nothing touches the network).
CONFIGS = {
    "mnist": {},
    "translated": {"canvas": 48},
    "cmnist": {"canvas": 48, "distractors": 3},
    "mcmnist": {"canvas": "50x70", "distractors": "0-6"},
}


def gen(type_: str, **params):
    return make_generator({"type": type_, "digits": "mnist-mini", **CONFIGS.get(type_, {}), **params})


def arrays(batch) -> list[np.ndarray]:
    return [t.numpy() for t in batch.tensors()]


def test_every_builtin_is_registered_through_entry_points():
    names = DATASETS.names()
    for name in BUILTIN_DATASETS:
        assert name in names
        entry = DATASETS.entry(name)
        assert entry.dist.lower() == "lgdram"
        assert entry.load().Config.model_fields["type"].default == name


@pytest.mark.parametrize("task", BUILTIN_DATASETS)
def test_ground_truth_geometry(task):
    g = gen(task)
    n = CHUNK + 44  # crosses a chunk boundary
    b = g.generate(n, "train", seed=1)
    H, W = g.size
    C = g.channels
    assert b.images.shape == (n, C, H, W) and b.images.dtype == torch.uint8
    assert b.labels.dtype == torch.int64 and b.labels.shape == (n,)
    assert ((b.labels >= 0) & (b.labels <= 9)).all()
    assert len(set(b.labels.tolist())) == 10

    x0, y0, x1, y1 = b.boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all(), "target box leaves the canvas (top/left)"
    assert (x1 <= W).all() and (y1 <= H).all(), "target box leaves the canvas (bottom/right)"
    assert (x1 > x0).all() and (y1 > y0).all()
    # the box has integer pixel edges and never exceeds a digit
    assert torch.equal(b.boxes, b.boxes.round())
    assert ((x1 - x0) <= 28).all() and ((y1 - y0) <= 28).all()

    expected = torch.stack([(x0 + x1) / W - 1, (y0 + y1) / H - 1], dim=1)
    assert torch.equal(b.centers, expected)  # bitwise: the formula as written, on every device
    assert (b.centers.abs() <= 1).all()


@pytest.mark.parametrize("task", BUILTIN_DATASETS)
def test_without_distractors_the_box_holds_all_the_ink(task):
    g = gen(task, distractors=0)
    b = g.generate(200, "test", seed=2)
    assert (b.n_distractors == 0).all()
    img = b.images.sum(dim=1).long()  # [N, H, W]
    for i in range(len(b)):
        x0, y0, x1, y1 = (int(v) for v in b.boxes[i])
        inside = img[i, y0:y1, x0:x1].sum()
        assert inside == img[i].sum() > 0, f"sample {i}: ink outside its box"
        # the box is tight: each edge row/column of the box holds ink
        crop = img[i, y0:y1, x0:x1]
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def test_label_is_the_label_of_the_digit_drawn():
    g = gen("translated")
    digits = sources.load_digits("mnist-mini", "train")

    def tight(a: np.ndarray) -> bytes:
        ys, xs = np.nonzero(a)
        return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].tobytes()

    by_crop: dict[bytes, set[int]] = {}
    for image, label in zip(digits.images, digits.labels):
        by_crop.setdefault(tight(image), set()).add(int(label))
    b = g.generate(150, "train", seed=3)
    for i in range(len(b)):
        x0, y0, x1, y1 = (int(v) for v in b.boxes[i])
        crop = b.images[i, 0, y0:y1, x0:x1].numpy().tobytes()
        assert crop in by_crop, f"sample {i}: the boxed digit is not a digit of the split"
        assert int(b.labels[i]) in by_crop[crop]


def _full_ink_dir(tmp_path):
    """Digits whose every pixel is 1: a canvas's sum then counts exactly what was pasted."""
    images = np.ones((40, 28, 28), dtype=np.uint8)
    labels = (np.arange(40) % 10).astype(np.uint8)
    return write_idx_dir(tmp_path / "ones", (images, labels), (images, labels))


@pytest.mark.parametrize(
    "task,params,lo,hi",
    [
        ("cmnist", {"canvas": 60, "distractors": 4}, 4, 4),
        ("mcmnist", {"canvas": 64, "distractors": "2-9", "distractor_size": 6}, 2, 9),
        ("mcmnist", {"canvas": 40, "distractors": "0-3"}, 0, 3),
        ("translated", {"canvas": 40}, 0, 0),
    ],
)
def test_distractor_counts_match_what_is_pasted(tmp_path, task, params, lo, hi):
    source = f"idx:{_full_ink_dir(tmp_path)}"
    g = make_generator({"type": task, "digits": source, **params})
    b = g.generate(300, "train", seed=4)
    count = b.n_distractors.long()
    assert b.n_distractors.dtype == torch.int16
    assert ((count >= lo) & (count <= hi)).all()
    if hi > lo:  # a range is really sampled, ends included
        assert count.min() == lo and count.max() == hi
    ds = g.config.distractor_size
    total = b.images.long().sum(dim=(1, 2, 3))
    assert torch.equal(total, 28 * 28 + count * ds * ds), "n_distractors differs from the patches on the canvas"


@pytest.mark.parametrize("task", BUILTIN_DATASETS)
def test_same_seed_is_bit_identical_and_another_seed_differs(task):
    a = arrays(gen(task).generate(300, "train", seed=7))
    b = arrays(gen(task).generate(300, "train", seed=7))  # a fresh generator instance
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)
    c = arrays(gen(task).generate(300, "train", seed=8))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])


@pytest.mark.parametrize("start,n", [(0, 10), (200, 100), (250, 300), (256, 256), (511, 2)])
def test_stream_slicing_equals_slice_of_longer_stream(start, n):
    g = gen("mcmnist", colour=True)
    whole = arrays(g.generate(600, "train", seed=11))
    part = arrays(g.generate(n, "train", seed=11, start=start))
    for w, p in zip(whole, part):
        assert np.array_equal(w[start : start + n], p)


def test_colour_gives_three_distinct_channels():
    g = gen("mcmnist", colour=True)
    assert g.channels == 3
    b = g.generate(50, "train", seed=0)
    assert b.images.shape[1] == 3
    img = b.images.long()
    differs = ((img[:, 0] != img[:, 1]) | (img[:, 1] != img[:, 2])).flatten(1).any(dim=1)
    assert differs.all(), "a colour canvas whose channels are all equal"
    grey = gen("mcmnist").generate(5, "train", seed=0)
    assert grey.images.shape[1] == 1


def test_non_square_canvas_is_height_by_width():
    g = gen("mcmnist", canvas="100x300", distractors="4-8")
    assert g.size == (100, 300)
    b = g.generate(300, "train", seed=5)
    assert b.images.shape[-2:] == (100, 300)
    x0, y0, x1, y1 = b.boxes.unbind(1)
    assert (x1 <= 300).all() and (y1 <= 100).all()
    assert (x0 > 150).any(), "targets never placed in the right part of a wide canvas"
    assert torch.equal(b.centers[:, 0], (x0 + x1) / 300 - 1)
    assert torch.equal(b.centers[:, 1], (y0 + y1) / 100 - 1)
    for i in range(20):  # the digit's ink is where the box says (x = column, y = row)
        bx0, by0, bx1, by1 = (int(v) for v in b.boxes[i])
        assert b.images[i, 0, by0:by1, bx0:bx1].any()


def test_canvas_forms_are_parsed():
    assert gen("translated", canvas=64).size == (64, 64)
    assert gen("translated", canvas="64").size == (64, 64)
    assert gen("translated", canvas="48x80").size == (48, 80)
    assert gen("translated", canvas=[48, 80]).size == (48, 80)
    assert gen("mcmnist", distractors="4-20").config.distractors == (4, 20)
    assert gen("mcmnist", distractors=3).config.distractors == (3, 3)


def test_test_split_canvases_use_only_test_digits(tmp_path):
    train = blob_digits(60, 100, seed=0)  # train ink is exactly 100
    test = blob_digits(60, 200, seed=1)  # test ink is exactly 200
    source = f"idx:{write_idx_dir(tmp_path / 'digits', train, test)}"
    g = make_generator({"type": "mcmnist", "canvas": 40, "distractors": "0-8", "digits": source})
    te = g.generate(400, "test", seed=0).images
    # sums of 200s clip to 255; a 100 can only come from a train digit
    assert set(torch.unique(te).tolist()) <= {0, 200, 255}
    assert (te == 200).any()
    clean = make_generator({"type": "translated", "canvas": 40, "digits": source})
    assert set(torch.unique(clean.generate(100, "test", seed=0).images).tolist()) == {0, 200}
    assert set(torch.unique(clean.generate(100, "train", seed=0).images).tolist()) == {0, 100}
    assert g.provenance("test")["digits.sha256"] != g.provenance("train")["digits.sha256"]


def test_bundled_mnist_mini_splits_are_disjoint_and_balanced():
    train = sources.load_digits("mnist-mini", "train")
    test = sources.load_digits("mnist-mini", "test")
    assert train.images.shape == (4000, 28, 28) and test.images.shape == (1000, 28, 28)
    assert train.images.dtype == np.uint8
    assert np.bincount(train.labels, minlength=10).tolist() == [400] * 10
    assert np.bincount(test.labels, minlength=10).tolist() == [100] * 10
    train_set = {im.tobytes() for im in train.images}
    assert not any(im.tobytes() in train_set for im in test.images), "a test digit also occurs in train"
    assert train.source == test.source == "mnist-mini"


@pytest.mark.parametrize(
    "spec,needles",
    [
        ({"type": "cmnist", "canvas": 27}, ["canvas", "smaller than a 28x28 digit"]),
        ({"type": "mcmnist", "canvas": "100x20"}, ["canvas", "smaller"]),
        ({"type": "mcmnist", "distractors": "9-3"}, ["distractors", "lower bound exceeds", "3-9"]),
        ({"type": "mcmnist", "distractors": -2}, ["distractors", "cannot be negative"]),
        ({"type": "mcmnist", "distractors": "-2-5"}, ["cannot be negative"]),
        ({"type": "cmnist", "canvs": 60}, ["unknown key 'dataset.canvs'", "did you mean 'canvas'"]),
        ({"type": "cmnist", "distractor_size": 0}, ["distractor_size"]),
        ({"type": "cmnist", "distractor_size": 29}, ["distractor_size"]),
        ({"type": "cmnist", "canvas": "huge"}, ["canvas"]),
        ({"type": "cmnist", "canvas": True}, ["canvas", "boolean"]),
        ({"type": "mnist", "canvas": 60}, ["'translated'"]),
        ({"type": "cmnsit"}, ["unknown dataset 'cmnsit'", "did you mean 'cmnist'"]),
        ({"canvas": 60}, ["needs a 'type'"]),
    ],
)
def test_bad_configs_are_user_errors_with_helpful_text(spec, needles):
    with pytest.raises(UserError) as exc:
        make_generator(spec)
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_unknown_split_is_a_user_error():
    with pytest.raises(UserError, match="unknown split 'val'"):
        gen("translated").generate(4, "val", seed=0)


def test_training_sized_slices_of_a_stream_equal_the_whole_stream():
    """Training reads 32 canvases a step from the same 256-canvas chunk (reused, not recomposed):
    the pieces must be exactly the stream, across chunk boundaries too."""
    from lgdram_cli.data.presets import make_generator

    gen = make_generator({"type": "mcmnist", "canvas": 40, "digits": "mnist-mini"})
    whole = gen.generate(600, "train", 9)
    pieces = [gen.generate(24, "train", 9, start=24 * i) for i in range(25)]
    for name, tensor in zip(("images", "labels", "centers", "boxes", "n_distractors"), whole.tensors()):
        assert torch.equal(torch.cat([getattr(p, name) for p in pieces]), tensor), name
    other_seed = gen.generate(24, "train", 10, start=24)  # the cache is keyed by seed too
    assert not torch.equal(other_seed.images, pieces[1].images)
