"""Annotation budgets: a share (the seed's Bernoulli stream) or a fixed, seeded pool of
annotated canvases, on the fly and from a file; how the spec records which one ran."""

from __future__ import annotations

import pytest
import torch

from lgdram_cli.errors import UserError
from lgdram_cli.training.spec import TrainSpec, parse_annotations

from helpers import assert_one_line_error, run_main

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "text,expected",
    [("1%", (0.01, None)), ("0.5%", (0.005, None)), ("100%", (1.0, None)), ("0.01", (0.01, None)),
     ("1.0", (1.0, None)), ("100", (0.0, 100)), ("1", (0.0, 1)), ("0", (0.0, None))],
)  # fmt: skip
def test_parse_annotations_share_or_count(text, expected):
    assert parse_annotations(text) == expected


@pytest.mark.parametrize("text", ["150%", "-1", "lots", "1.5", "1e3"])
def test_parse_annotations_refuses_nonsense(text):
    with pytest.raises(UserError, match="annotations"):
        parse_annotations(text)


def test_spec_records_which_budget_ran():
    assert TrainSpec(annotations="1%").model_dump()["annotations"] == 0.01
    pool = TrainSpec(annotations="100")
    assert (pool.annotations, pool.annotation_pool) == (0.0, 100)
    assert TrainSpec(annotations=100).annotation_pool == 100  # an integer in a spec file is a count
    assert TrainSpec(annotations=1).annotation_pool == 1  # as on the command line: 1 canvas, not 100 %
    assert TrainSpec(annotations=0.25).annotation_pool is None  # a float is a share
    with pytest.raises(ValueError, match="not both"):
        TrainSpec(annotations=0.1, annotation_pool=5)


def _setup(**kw):
    from lgdram_cli.cli.train_cmd import train_spec
    from lgdram_cli.training.loop import build

    return build(train_spec(dataset="cmnist-60", model="ram", batch_size=32, mc=1,
                            sets=["dataset.digits=mnist-mini", "model.hidden=16", "model.glimpse_hidden=8"], **kw))


def test_pool_feed_reuses_a_fixed_set_of_annotated_canvases():
    """Annotated rows are copies of the K pool canvases (same image, label and centre), at
    the rate K / (training digits); the other rows are fresh and unannotated; deterministic."""
    from lgdram_cli.training.feed import OnTheFlyFeed

    setup = _setup(annotations="40")
    assert setup.spec.annotation_pool == 40
    feed = OnTheFlyFeed(setup.generator, 3, 0.0, 32, 1, pool=40)
    assert feed.pool_rate == pytest.approx(40 / setup.generator.train_size)  # 40 / 4,000 digits
    pool_images = feed.pool.images.flatten(1)
    seen: set[int] = set()
    annotated = 0
    for step in range(400):
        batch = feed.batch(step, 0, CPU)
        flat = (batch.images * 255).round().to(torch.uint8).flatten(1)
        for row in batch.annotated.nonzero().squeeze(1).tolist():
            match = (pool_images == flat[row]).all(1).nonzero().squeeze(1)
            assert len(match) >= 1, "an annotated canvas that is not from the pool"
            k = int(match[0])
            assert batch.labels[row] == feed.pool.labels[k]
            assert torch.equal(batch.centers[row], feed.pool.centers[k])
            seen.add(k)
        annotated += int(batch.annotated.sum())
    rate = annotated / (400 * 32)
    assert rate == pytest.approx(feed.pool_rate, rel=0.35)
    assert len(seen) <= 40 and len(seen) > 20  # the same few canvases come back
    again = OnTheFlyFeed(setup.generator, 3, 0.0, 32, 1, pool=40)
    assert torch.equal(again.batch(7, 0, CPU).images, feed.batch(7, 0, CPU).images)


def test_share_feed_is_a_fresh_stream():
    """A share annotates fresh canvases: no annotated canvas repeats over many steps."""
    from lgdram_cli.training.feed import OnTheFlyFeed

    setup = _setup(annotations="10%")
    feed = OnTheFlyFeed(setup.generator, 0, 0.1, 32, 1)
    rows = [b.images[b.annotated] for b in (feed.batch(s, 0, CPU) for s in range(60))]
    flat = torch.cat(rows).flatten(1)
    assert len(flat) > 100 and len(torch.unique(flat, dim=0)) == len(flat)


def test_pool_count_with_a_file_picks_that_many(tmp_path):
    from lgdram_cli.data.gen import GenDataSpec, generate_file
    from lgdram_cli.data.h5io import CanvasFile
    from lgdram_cli.training.feed import FileFeed

    path = tmp_path / "d.h5"
    generate_file(GenDataSpec(dataset={"type": "cmnist", "digits": "mnist-mini"}, n=60, seed=1), path)
    feed = FileFeed(CanvasFile(path), seed=0, annotations=0.0, batch_size=4, pool=7)
    assert feed.mask.sum() == 7


def test_train_with_a_pool_runs_and_records_it(tmp_path, capsys):
    out = tmp_path / "run.safetensors"
    code, _, err = run_main(
        ["train", "--dataset", "cmnist-60", "--annotations", "25", "--steps", "4", "--batch-size", "4", "--mc", "2",
         "--eval-n", "8", "--set", "dataset.digits=mnist-mini", "--set", "model.hidden=16",
         "--set", "model.glimpse_hidden=8", "--set", "model.glimpses=2", "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    from lgdram_cli.training.checkpoint import load_checkpoint

    spec = load_checkpoint(out).spec
    assert (spec["annotations"], spec["annotation_pool"]) == (0.0, 25)


def test_pool_larger_than_the_file_is_one_line(tmp_path, capsys):
    from lgdram_cli.data.gen import GenDataSpec, generate_file

    path = tmp_path / "d.h5"
    generate_file(GenDataSpec(dataset={"type": "cmnist", "digits": "mnist-mini"}, n=20, seed=1), path)
    code, _, err = run_main(["train", "--data", str(path), "--annotations", "50", "--out", str(tmp_path / "r.safetensors")], capsys)
    assert_one_line_error(code, err, "more than the 20 images")


def test_test_digits_come_from_their_own_source(tmp_path):
    """`test_digits` gives the test split its own digits (the papers' protocol: train on a
    training subset, test on the official test split); a training-only folder has no test split."""
    import shutil

    from lgdram_cli.data.presets import make_generator
    from lgdram_cli.data.sources import _mnist_mini, FILES

    mini = _mnist_mini("train")
    train_dir, test_dir = tmp_path / "train-only", tmp_path / "test"
    train_dir.mkdir(), test_dir.mkdir()
    import importlib.resources as resources

    src = resources.files("lgdram_cli.data") / "mnist_mini"
    shutil.copy(src / FILES["train"][0], train_dir / "sub5-images-idx3-ubyte.gz")
    shutil.copy(src / FILES["train"][1], train_dir / "sub5-labels-idx1-ubyte.gz")
    for name in FILES["test"]:
        shutil.copy(src / name, test_dir / name)
    g = make_generator({"type": "cmnist", "digits": f"idx:{train_dir}", "test_digits": f"idx:{test_dir}"})
    assert g.train_size == len(mini.labels)
    assert g.digits("test").sha256 == _mnist_mini("test").sha256
    assert g.resolved_config()["test_digits"] == f"idx:{test_dir}"
    alone = make_generator({"type": "cmnist", "digits": f"idx:{train_dir}"})
    with pytest.raises(UserError, match="test_digits"):
        alone.generate(2, "test", 0)
