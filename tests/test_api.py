"""The Python API (`import lgdram`): docs/api.md's examples run as written; predict's shapes and
input forms; loading a run from its folder or checkpoint; no process-wide side effects."""

from __future__ import annotations


import pytest
import torch

import lgdram
from helpers import REPO, python_blocks, run_doc_blocks
from lgdram.plugin_api import UserError

DOC = REPO / "docs" / "api.md"
TINY = dict(
    dataset="cmnist-60", model={"type": "ram", "hidden": 16, "glimpse_hidden": 16, "glimpses": 2},
    overrides={"dataset.digits": "mnist-mini"}, batch_size=4, mc=2, eval_n=20, progress=False,
)


def test_the_api_doc_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5, "docs/api.md lost its examples"
    monkeypatch.chdir(tmp_path)
    _, seconds = run_doc_blocks([(f"docs/api.md block {i + 1}", b) for i, b in enumerate(blocks)], "__api_doc__")
    assert seconds < 30  # tiny settings: seconds on a CPU
    assert (tmp_path / "runs" / "first" / "run.safetensors").is_file()
    assert (tmp_path / "glimpses.gif").is_file() and (tmp_path / "glimpses.png").is_file()
    assert (tmp_path / "test.h5").is_file()
    assert (tmp_path / "runs" / "logged" / "tb").is_dir()


@pytest.fixture(scope="module")
def api_run(tmp_path_factory) -> lgdram.Run:
    out = tmp_path_factory.mktemp("api") / "run"
    return lgdram.train(**TINY, steps=2, eval_every=2, out=out)


def test_train_returns_the_run_it_wrote(api_run):
    assert api_run.step == 2 and api_run.path.name == "run.safetensors"
    assert api_run.spec["model"]["hidden"] == 16 and api_run.spec["dataset"]["digits"] == "mnist-mini"
    assert [r["step"] for r in api_run.metrics if r["kind"] == "eval"] == [2]
    assert api_run.last_eval["step"] == 2
    assert (api_run.folder / "run.spec.json").is_file()


def test_load_from_the_folder_or_the_checkpoint(api_run):
    by_folder, by_file = lgdram.load(api_run.folder), lgdram.load(api_run.path)
    assert by_folder.path == by_file.path == api_run.path
    for name, value in by_folder.model.state_dict().items():
        assert torch.equal(value, by_file.model.state_dict()[name])


def test_load_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(UserError, match="no run"):
        lgdram.load(tmp_path)
    with pytest.raises(UserError, match="no run"):
        lgdram.load(tmp_path / "missing.safetensors")


def test_predict_shapes_and_input_forms(api_run):
    batch = lgdram.generate("cmnist-60", 5, split="test", seed=3, overrides={"digits": "mnist-mini"})
    pred = api_run.predict(batch.images)
    assert pred.labels.shape == (5,) and pred.labels.dtype == torch.int64
    assert pred.probabilities.shape == (5, 10)
    assert torch.allclose(pred.probabilities.sum(-1), torch.ones(5))
    assert pred.locations.shape == (5, 2, 2) and pred.locations.abs().max() <= 1
    assert pred.locations_px.shape == (5, 2, 2)
    assert torch.allclose(pred.locations_px, (pred.locations + 1) * 30)  # 60×60 canvas
    assert torch.equal(pred.locations[:, 0], torch.zeros(5, 2))  # RAM's first glimpse: the centre
    # the same images as float [0, 1], as [B, H, W], as numpy: the same answer
    for images in (batch.images.float() / 255, batch.images[:, 0], batch.images.numpy(), batch.images[:, 0].numpy()):
        again = api_run.predict(images)
        assert torch.equal(again.labels, pred.labels)
        assert torch.allclose(again.probabilities, pred.probabilities, atol=1e-6)
    chunked = api_run.predict(batch.images, chunk=2)
    assert torch.allclose(chunked.probabilities, pred.probabilities, atol=1e-6)
    with pytest.raises(UserError, match=r"\[B, 1, 60, 60\]"):
        api_run.predict(torch.zeros(2, 1, 28, 28))


def test_evaluate_matches_the_stored_evaluation(api_run):
    result = api_run.evaluate()  # the run's own test set: what training evaluated at step 2
    assert result["accuracy"] == api_run.last_eval["accuracy"]
    assert result["n"] == 20 and result["step"] == 2


def test_generate_is_deterministic_and_checks_its_arguments():
    a = lgdram.generate({"type": "cmnist", "canvas": 40, "digits": "mnist-mini"}, 3, seed=5)
    b = lgdram.generate("cmnist", 3, seed=5, overrides={"canvas": 40, "digits": "mnist-mini"})
    assert a.images.shape == (3, 1, 40, 40) and torch.equal(a.images, b.images)
    with pytest.raises(UserError):
        lgdram.generate("cmnist", 0)
    with pytest.raises(UserError, match="split"):
        lgdram.generate("cmnist", 1, split="validation")
    with pytest.raises(UserError, match="did you mean"):
        lgdram.generate("cmnsit", 1)


def test_train_has_no_process_wide_side_effects(tmp_path, monkeypatch):
    import lgdram_cli.allocator as allocator

    def forbidden() -> bool:
        raise AssertionError("the library changed the process-wide allocator settings")

    monkeypatch.setattr(allocator, "keep_freed_memory", forbidden)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    threads = torch.get_num_threads()
    run = lgdram.train(**TINY, steps=1, eval_every=0, out=tmp_path / "run.safetensors")
    lgdram.load(run.path)
    assert torch.equal(torch.rand(3), expected), "training or loading moved the caller's random stream"
    assert torch.get_num_threads() == threads


def test_train_refuses_to_overwrite_and_resumes(tmp_path):
    out = tmp_path / "r"
    lgdram.train(**TINY, steps=1, eval_every=0, out=out)
    with pytest.raises(UserError, match="resume=True"):
        lgdram.train(**TINY, steps=1, eval_every=0, out=out)
    run = lgdram.train(**TINY, steps=2, eval_every=0, out=out, resume=True)
    assert run.step == 2
    with pytest.raises(UserError, match="stepz"):
        lgdram.train(**TINY, stepz=1, out=tmp_path / "other")


def test_gen_data_writes_an_lgdram_canvas_file(tmp_path):
    from lgdram_cli.data.h5io import CanvasFile

    path = lgdram.gen_data("cmnist-60", 10, tmp_path / "d.h5", annotations=4, overrides={"digits": "mnist-mini"})
    file = CanvasFile(path)
    batch, annotated = file.read(slice(0, 10))
    assert file.n == 10 and int(annotated.sum()) == 4
    same = lgdram.generate("cmnist-60", 10, seed=0, overrides={"digits": "mnist-mini"})
    assert torch.equal(batch.images, same.images)
    with pytest.raises(UserError, match="already exists"):
        lgdram.gen_data("cmnist-60", 10, path, overrides={"digits": "mnist-mini"})


def test_public_names():
    assert {"train", "load", "generate", "gen_data", "Run", "Prediction"} <= set(lgdram.__all__)
    from lgdram import plugin_api, testing

    assert plugin_api.Logger.__name__ == "Logger" and "Logger" in plugin_api.__all__
    assert callable(testing.check_model)
