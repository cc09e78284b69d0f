"""The conformance kit: every registered entry passes it; broken plugins are caught and named."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch

from helpers import assert_one_line_error, leftovers, run_cli
from lgdram_cli.data.generators import TranslatedTask
from lgdram_cli.losses import ClassificationLoss, LossTerm
from lgdram_cli.models.ram import RAM
from lgdram_cli.registry import DATASETS, LOSSES, MODELS
from lgdram_cli.testing import ConformanceError, check_dataset, check_loss, check_model


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_registered_dataset_conforms(name):
    assert len(check_dataset(name)) >= 10


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_conforms(name):
    passed = check_model(name, {"hidden": 32} if name in ("ram", "dram", "ram-ln") else None)
    assert "every parameter gets a finite gradient" in passed
    assert "safetensors round-trip" in passed


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_registered_loss_conforms(name):
    assert "finite value (without annotations)" in check_loss(name)


class SwappedTask(TranslatedTask):
    """Centres with x and y swapped: a classic plugin bug."""

    def generate(self, n, split, seed, device="cpu", start=0):  # noqa: ANN001, ANN201
        batch = super().generate(n, split, seed, device, start)
        batch.centers = batch.centers.flip(-1)
        return batch


class FrozenHeadRAM(RAM):
    """A parameter that never takes part in the forward pass."""

    def __init__(self, config, **kw):  # noqa: ANN001, ANN003
        super().__init__(config, **kw)
        self.unused = torch.nn.Linear(3, 3)


class NoReplicasRAM(RAM):
    """Ignores `replicas`: B rows instead of B·M."""

    def forward(self, images, deterministic=False, replicas=1):  # noqa: ANN001, ANN201
        return super().forward(images, deterministic)


class VectorLoss(ClassificationLoss):
    """Returns a per-row vector instead of a scalar."""

    def __call__(self, out, batch, step):  # noqa: ANN001, ANN201
        return LossTerm(torch.nn.functional.cross_entropy(out.logits, batch.labels, reduction="none"))


def test_kit_catches_swapped_centres():
    with pytest.raises(ConformanceError, match="centres outside their boxes"):
        check_dataset(SwappedTask, {"type": "translated", "canvas": "40x90", "digits": "mnist-mini"})


def test_kit_catches_parameters_without_gradient():
    with pytest.raises(ConformanceError, match="unused"):
        check_model(FrozenHeadRAM, {"type": "ram", "hidden": 16, "glimpses": 2}, onnx=False)


def test_kit_catches_outputs_of_the_wrong_shape():
    with pytest.raises(ConformanceError, match=r"logits have shape \(3, 10\), expected \(6, 10\)"):
        check_model(NoReplicasRAM, {"type": "ram", "hidden": 16, "glimpses": 2}, onnx=False)


def test_kit_catches_non_scalar_loss():
    with pytest.raises(ConformanceError, match="scalar value"):
        check_loss(VectorLoss)


def test_kit_refuses_a_class_of_the_wrong_kind():
    with pytest.raises(ConformanceError, match="not a subclass"):
        check_model(SwappedTask)


BAD_SHAPES = '''
from lgdram_cli.plugin_api import CanvasBatch
from lgdram_cli.data.generators import TranslatedTask, TranslatedConfig


class FlatConfig(TranslatedConfig):
    type: str = "flat"


class FlatTask(TranslatedTask):
    """Returns images without the channel axis."""

    Config = FlatConfig

    def generate(self, n, split, seed, device="cpu", start=0):
        b = super().generate(n, split, seed, device, start)
        return CanvasBatch(b.images[:, 0], b.labels, b.centers, b.boxes, b.n_distractors)
'''

BAD_MODEL = '''
import torch
from lgdram_cli.plugin_api import Model, ModelConfig, ModelOutput


class TallyConfig(ModelConfig):
    type: str = "tally"


class Tally(Model):
    """Forgets the replicas: returns B rows instead of B*M."""

    Config = TallyConfig

    def __init__(self, config, *, channels, size, classes):
        super().__init__(config, channels=channels, size=size, classes=classes)
        self.head = torch.nn.Linear(channels * size[0] * size[1], classes)

    def forward(self, images, deterministic=False, replicas=1):
        return ModelOutput(logits=self.head(images.flatten(1)))
'''


def install(site: Path, dist: str, module: str, source: str, group: str, name: str, target: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("badsite")
    install(site, "lgdram-flat", "flat_plugin", BAD_SHAPES, "lgdram.datasets", "flat", "flat_plugin:FlatTask")
    install(site, "lgdram-tally", "tally_plugin", BAD_MODEL, "lgdram.models", "tally", "tally_plugin:Tally")
    return site


def lgdram(site: Path, *args: str, cwd: Path):
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return run_cli(*args, cwd=cwd, env={"PYTHONPATH": pythonpath, "COLUMNS": "250"})


def test_generator_with_wrong_shapes_is_named_and_nothing_is_written(site, tmp_path):
    r = lgdram(site, "gen-data", "--dataset", "flat", "--set", "digits=mnist-mini", "--n", "8", "--out", "f.h5", cwd=tmp_path)
    assert_one_line_error(r.returncode, r.stderr, "lgdram-flat", "images")
    assert leftovers(tmp_path) == []


def test_model_with_wrong_output_is_named_before_training(site, tmp_path):
    r = lgdram(
        site, "train", "--dataset", "translated", "--set", "dataset.digits=mnist-mini", "--model", "tally",
        "--steps", "2", "--mc", "2", "--batch-size", "2", "--set", "loss={\"classification\": {}}",
        "--out", "t.safetensors", cwd=tmp_path,
    )
    assert_one_line_error(r.returncode, r.stderr, "lgdram-tally", "logits")
    assert not (tmp_path / "t.safetensors").exists()


def test_broken_plugins_do_not_break_other_commands(site, tmp_path):
    r = lgdram(site, "gen-data", "--dataset", "cmnist", "--set", "digits=mnist-mini", "--n", "4", "--out", "ok.h5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_public_import_names_for_plugin_authors():
    import lgdram
    from lgdram import plugin_api, testing

    from lgdram_cli import PLUGIN_API_VERSION

    assert lgdram.plugin_api_version == PLUGIN_API_VERSION
    assert plugin_api.DatasetGenerator.plugin_api_version == PLUGIN_API_VERSION
    assert testing.check_model is check_model
    assert set(plugin_api.__all__) >= {"DatasetGenerator", "Model", "Loss", "StrictModel", "CanvasBatch"}
