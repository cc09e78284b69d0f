"""A plugin author's experience (the issue "Plugin authors' experience and a clean dependency
graph"): the exported parts and their protocols, dataset building blocks, descriptions from
docstrings, what the kit reports and raises, the batch check on every command, `--debug`
tracebacks into the plugin, in-process registration (`module:Class`, `lgdram.register`), the
messages for unknown names, the one home of the coordinate convention, the layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

import lgdram
from helpers import LGDRAM, REPO, assert_one_line_error, leftovers, offline_env, run_cli
from lgdram.plugin_api import RAM, CanvasBatch, Loss, LossConfig, LossTerm, RAMConfig, UserError
from lgdram.testing import CheckSkipped, ConformanceError, check_dataset, check_loss, check_model

TINY_RAM = {"hidden": 16, "glimpse_hidden": 8, "glimpses": 2}


# ---------------------------------------------------------------- 1. RAM's parts and their protocols


def test_the_parts_and_their_protocols_are_public():
    from lgdram import plugin_api as api

    for name in ("Retina", "GlimpseNetwork", "Core", "ContextNetwork", "DRAM", "DRAMConfig", "RetinaProtocol",
                 "GlimpseNetworkProtocol", "CoreProtocol", "LocationPolicyProtocol", "ContextNetworkProtocol"):
        assert name in api.__all__ and hasattr(api, name), name
    model = api.DRAM(api.DRAMConfig(**TINY_RAM), channels=1, size=(60, 60), classes=10)
    assert isinstance(model.retina, api.RetinaProtocol)
    assert isinstance(model.glimpse, api.GlimpseNetworkProtocol)
    assert isinstance(model.core, api.CoreProtocol) and model.core.init_state() is None
    assert isinstance(model.context, api.ContextNetworkProtocol)
    assert isinstance(model, api.LocationPolicyProtocol)
    # the documented shapes: patches [n, S·C, g, g] → g_t [n, hidden] → (h, state)
    images = torch.rand(2, 1, 60, 60)
    loc = torch.zeros(6, 2)
    patches = model.retina.glimpse(model.retina.prepare(images), loc, 3)
    assert patches.shape == (6, 2 * 1, 12, 12)
    g = model.glimpse(patches, loc)
    h, state = model.core(g, None)
    assert g.shape == h.shape == (6, 16)
    assert model.context(images).shape == (2, 16)


class WideGlimpse(torch.nn.Module):
    """Returns hidden + 1 features: not what the core reads."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.out = torch.nn.Linear(2, hidden + 1)

    def forward(self, patches, loc):  # noqa: ANN001, ANN201
        return self.out(loc)


class WideGlimpseRAM(RAM):
    """A RAM whose replaced glimpse network returns the wrong width."""

    def __init__(self, config, **kw):  # noqa: ANN001, ANN003
        super().__init__(config, **kw)
        self.glimpse = WideGlimpse(config.hidden)


class StatefulCore(torch.nn.Module):
    """init_state() returns a tensor: it cannot know the batch size."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.cell = torch.nn.GRUCell(hidden, hidden)

    def init_state(self, h=None):  # noqa: ANN001, ANN201
        return torch.zeros(1, self.cell.hidden_size) if h is None else h

    def forward(self, x, state):  # noqa: ANN001, ANN201
        h = self.cell(x, state.expand(x.shape[0], -1))
        return h, h


class StatefulCoreRAM(RAM):
    """A RAM whose core starts from a tensor."""

    def __init__(self, config, **kw):  # noqa: ANN001, ANN003
        super().__init__(config, **kw)
        self.core = StatefulCore(config.hidden)


def test_the_kit_names_a_replaced_part_that_breaks_its_protocol():
    with pytest.raises(ConformanceError, match=r"glimpse\(patches, loc\) is \[n, hidden\].*\(6, 17\), expected \(6, 16\)"):
        check_model(WideGlimpseRAM, {"type": "ram", **TINY_RAM}, onnx=False)
    with pytest.raises(ConformanceError, match=r"core.init_state\(\) is None"):
        check_model(StatefulCoreRAM, {"type": "ram", **TINY_RAM}, onnx=False)


def test_a_subclass_that_replaces_a_part_runs_the_autograd_loop():
    assert RAM(RAMConfig(**TINY_RAM), channels=1, size=(60, 60), classes=10).train()._can_fuse()
    assert not WideGlimpseRAM(RAMConfig(**TINY_RAM), channels=1, size=(60, 60), classes=10).train()._can_fuse()


# ---------------------------------------------------------------- 2. dataset building blocks


def test_the_dataset_building_blocks_are_public():
    from lgdram import plugin_api as api

    for name in ("CanvasTask", "CanvasConfig", "chunk_generator", "chunks", "CHUNK", "load_digits", "DigitSet",
                 "compose", "digit_boxes", "loc_to_px", "px_to_loc", "box_centre", "box_contains"):
        assert name in api.__all__ and hasattr(api, name), name
    # stream 0 is the stream lgdram's canvases always used; other streams are independent
    a, b = api.chunk_generator(5, 2), api.chunk_generator(5, 2, stream=0)
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert not torch.equal(torch.rand(4, generator=api.chunk_generator(5, 2)), torch.rand(4, generator=api.chunk_generator(5, 2, stream=1)))
    assert api.chunks(250, 10) == [(0, 250, 256), (1, 0, 4)] and api.chunks(0, 0) == []
    digits = api.load_digits("mnist-mini", "test")
    assert isinstance(digits, api.DigitSet) and digits.images.shape[1:] == (28, 28)


def test_the_mnist_fallback_warns_once_per_process_and_says_what_to_do():
    from lgdram_cli.data.sources import SourceFallbackWarning, load_digits

    with pytest.warns(SourceFallbackWarning) as caught:
        assert load_digits("mnist", "train").source == "mnist-mini"
    text = str(caught[0].message)
    assert "once per process" in text and "--set dataset.digits=mnist-mini" in text
    assert str(Path(os.environ["XDG_CACHE_HOME"]) / "lgdram" / "mnist") in text and "$LGDRAM_DATA/mnist" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", SourceFallbackWarning)
        assert load_digits("mnist", "test").source == "mnist-mini"  # the other split: quietly


def test_a_training_run_on_default_digits_warns_once(tmp_path):
    env = offline_env(tmp_path / "cache")
    args = ["train", "--out", str(tmp_path / "run"), "--dataset", "cmnist-60", "--steps", "0", "--eval-n", "8",
            "--model", "fc", "--set", "model.width=8", "--threads", "1"]
    result = subprocess.run([str(LGDRAM), *args], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("full MNIST is not on disk") == 1, result.stderr


# ---------------------------------------------------------------- 3. descriptions from docstrings


def test_a_subclass_is_described_by_its_own_docstring():
    from lgdram.plugin_api import CanvasTask, Logger
    from lgdram_cli.registry import plugin_description

    class MyRAM(RAM):
        """RAM that looks twice as hard.

        More words that `lgdram plugins` does not show."""

    class MyTask(CanvasTask):
        """Digits on a canvas, my way."""

    class MyLoss(Loss):
        """Pull harder."""

    class MyLogger(Logger):
        """Send records to my dashboard."""

    class Silent(RAM):
        pass

    class Explicit(RAM):
        """Docstring."""

        description = "set on the class itself"

    assert MyRAM.description == plugin_description(MyRAM) == "RAM that looks twice as hard."
    assert MyTask.description == "Digits on a canvas, my way."
    assert MyLoss.description == "Pull harder." and MyLogger.description == "Send records to my dashboard."
    assert Silent.description == RAM.description  # nothing of its own: inherited
    assert Explicit.description == "set on the class itself"


# ---------------------------------------------------------------- 4. the kit reports skipped checks


def test_check_model_reports_a_skipped_onnx_check(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.warns(CheckSkipped, match="onnxruntime not installed"):
        report = check_model("ram", TINY_RAM)
    assert "ONNX export matches (other batch size)" in report.skipped
    assert "pip install onnxruntime" in report.skipped["ONNX export matches (other batch size)"]
    assert "ONNX export matches (other batch size)" not in report
    assert report.what.startswith("model 'ram' from 'lgdram")


def test_a_model_that_is_not_exportable_is_reported_as_skipped():
    class Unexportable(RAM):
        """A RAM that says it cannot be exported."""

        exportable = False

    with pytest.warns(CheckSkipped, match="exportable = False"):
        report = check_model(Unexportable, {"type": "ram", **TINY_RAM})
    assert list(report.skipped) == ["ONNX export matches (other batch size)"]


# ---------------------------------------------------------------- 8. check_loss tries 1, 2 and 4 glimpses


class LastMeanLoss(Loss):
    """lgdram 0.1's documented example: indexes the last decision without checking there is one."""

    Config = LossConfig

    def __call__(self, out, batch, step):  # noqa: ANN001, ANN201
        value = ((out.means[:, -1] - batch.centers) ** 2).sum(-1)[batch.annotated].mean().nan_to_num()
        return LossTerm(self.config.weight * value, {"error": value.detach()})


def test_check_loss_catches_a_loss_that_fails_without_decisions():
    with pytest.raises(ConformanceError, match=r"loss class .*LastMeanLoss: raised IndexError \(with annotations, 1 glimpse \(0 decisions\)\)"):
        check_loss(LastMeanLoss)


def test_check_loss_covers_one_and_two_glimpses():
    report = check_loss("location")
    for label in ("1 glimpse (0 decisions)", "2 glimpses (1 decision)"):
        assert any(label in name for name in report), (label, list(report))
    assert "finite value (without annotations)" in report  # lgdram 0.1's names stay


# ---------------------------------------------------------------- 9. errors named consistently


def test_kit_errors_name_the_plugin_and_its_distribution():
    with pytest.raises(ConformanceError) as caught:
        check_model("ram-ln", {"glimpes": 2})
    message = str(caught.value)
    assert message.startswith("model 'ram-ln' from 'lgdram-example 0.1.0': invalid config: unknown key 'model.glimpes'")
    assert "did you mean 'glimpses'" in message and "ValidationError" not in message and "pydantic" not in message
    with pytest.raises(ConformanceError, match=r"^unknown model 'ram-lm' \(did you mean 'ram-ln'\?\)"):
        check_model("ram-lm")
    with pytest.raises(ConformanceError, match=r"^model 'no_such_module_xyz:Thing' from .* cannot be used: failed to import"):
        check_model("no_such_module_xyz:Thing")
    with pytest.raises(ConformanceError, match=r"^dataset class .*DigitSumTask from 'lgdram-example 0.1.0': sum-mnist needs a canvas"):
        from lgdram_example.datasets import DigitSumTask

        check_dataset(DigitSumTask, {"canvas": "60x40", "digits": "mnist-mini"})


def test_a_plugin_that_fails_to_import_is_a_conformance_error_chained_to_its_exception(monkeypatch):
    from lgdram_cli.registry import MODELS, Entry

    entry = Entry(MODELS, "exploding", "lgdram_cli.no_such_module:Model", "lgdram-exploding", "0.2")
    monkeypatch.setitem(MODELS._entries, "exploding", entry)
    with pytest.raises(ConformanceError, match=r"^model 'exploding' from 'lgdram-exploding 0.2' cannot be used") as caught:
        check_model("exploding")
    assert isinstance(caught.value.__cause__, UserError)
    assert isinstance(caught.value.__cause__.__cause__, ModuleNotFoundError)


# ---------------------------------------------------------------- plugins installed for the CLI tests


FLAT = '''
from lgdram.plugin_api import CanvasBatch, TranslatedTask


class FlatTask(TranslatedTask):
    """Returns images without the channel axis."""

    def generate(self, n, split, seed, device="cpu", start=0):
        b = super().generate(n, split, seed, device, start)
        return CanvasBatch(b.images[:, 0], b.labels, b.centers, b.boxes, b.n_distractors)
'''

BROKEN = '''
x = 1
raise RuntimeError("the plugin exploded at import")
'''

DOCUMENTED_RAM = '''
from lgdram.plugin_api import RAM


class DocumentedRAM(RAM):
    """RAM as its author describes it.

    (Only the first line is listed.)"""
'''


def install(site: Path, dist: str, module: str, source: str, entries: dict[str, dict[str, str]]) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.4.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.4.0\n")
    text = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in names.items()) for group, names in entries.items())
    (info / "entry_points.txt").write_text(text)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("authoring-site")
    install(site, "lgdram-flat2", "flat2_plugin", FLAT, {"lgdram.datasets": {"flat2": "flat2_plugin:FlatTask"}})
    install(site, "lgdram-boom", "boom_plugin", BROKEN, {"lgdram.models": {"boom": "boom_plugin:Model"}})
    install(site, "lgdram-gone", "gone_placeholder", "", {"lgdram.models": {"gone": "no_module_here_at_all:Model"}})
    install(site, "lgdram-documented", "documented_plugin", DOCUMENTED_RAM,
            {"lgdram.models": {"documented": "documented_plugin:DocumentedRAM"}})
    return site


def lgdram_cli(site: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return run_cli(*args, cwd=cwd, env={"PYTHONPATH": pythonpath, "COLUMNS": "250", **env})


def test_plugins_lists_a_subclass_with_its_own_docstring(site, tmp_path):
    result = lgdram_cli(site, "plugins", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = {(e["kind"], e["name"]): e for e in json.loads(result.stdout)["entries"]}
    assert rows[("model", "documented")]["description"] == "RAM as its author describes it."
    assert rows[("model", "ram")]["description"].startswith("recurrent attention model")


# ---------------------------------------------------------------- 5. the batch check on eval and visualize


def test_visualize_and_eval_name_a_generator_with_a_bad_batch(site, tmp_path, tiny_run):
    result = lgdram_cli(site, "visualize", "--dataset", "flat2", "--set", "digits=mnist-mini", "--n", "4",
                        "--out", "p.png", cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "dataset 'flat2' from 'lgdram-flat2 0.4.0' returned a bad batch",
                          "'images' is torch.uint8 (4, 60, 60), expected torch.uint8 (4, 1, 60, 60)")
    result = lgdram_cli(site, "eval", str(tiny_run), "--dataset", "flat2", "--set", "digits=mnist-mini", "--n", "6",
                        cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr, "dataset 'flat2' from 'lgdram-flat2 0.4.0' returned a bad batch")
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- 6. --debug shows the plugin's own frame


def test_debug_traceback_goes_into_the_plugins_file(site, tmp_path):
    result = lgdram_cli(site, "--debug", "train", "--model", "boom", "--steps", "1", "--out", "r", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "boom_plugin.py:3" in result.stderr.replace("\n", "")  # Rich: FILE:LINE in <module>
    assert "direct cause" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: model 'boom' from 'lgdram-boom 0.4.0' cannot be used")


# ---------------------------------------------------------------- 10. unknown names


def test_unknown_model_does_not_offer_broken_entries(site, tmp_path):
    result = lgdram_cli(site, "train", "--model", "bom", cwd=tmp_path)
    line = assert_one_line_error(result.returncode, result.stderr, "unknown model 'bom'")
    available, _, rest = line.partition("available: ")[2].partition("; not usable: ")
    assert "gone" not in available and "ram" in available and "documented" in available
    assert "gone" in rest and "lgdram plugins" in rest


def test_a_plugin_name_while_plugins_are_disabled_says_so(site, tmp_path):
    result = lgdram_cli(site, "train", "--model", "documented", cwd=tmp_path, LGDRAM_DISABLE_PLUGINS="1")
    assert_one_line_error(result.returncode, result.stderr, "model 'documented' comes from the plugin 'lgdram-documented 0.4.0'",
                          "plugins are disabled (LGDRAM_DISABLE_PLUGINS=1)")
    result = lgdram_cli(site, "train", "--model", "nosuch", cwd=tmp_path, LGDRAM_DISABLE_PLUGINS="1")
    assert_one_line_error(result.returncode, result.stderr, "unknown model 'nosuch'", "plugins are disabled")


def test_the_wrong_shape_message_names_the_replica_convention():
    from lgdram_cli.contract import check_output
    from lgdram_cli.models.base import ModelOutput

    problem = check_output(ModelOutput(logits=torch.zeros(3, 10)), 6, 10, replicas=2)
    assert "expected (6, 10)" in problem and "B·M = 3·2" in problem and "replicas=M" in problem


def test_schema_says_which_loss_terms_are_on_and_how_to_add_one(tmp_path):
    result = run_cli("schema", "train", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loss = json.loads(result.stdout)["properties"]["loss"]
    assert loss["default"] == {"classification": {}, "reinforce": {}, "location": {}}
    assert "On by default: classification, reinforce, location" in loss["description"]
    assert "--set loss.NAME" in loss["description"] and "adds a term" in loss["description"]
    assert "off by default" in loss["properties"]["rloo"]["description"]
    assert "on by default" in loss["properties"]["location"]["description"]


# ---------------------------------------------------------------- 7. in-process registration


MODULES = {
    "my_models.py": '''
        from lgdram.plugin_api import RAM


        class SmallRAM(RAM):
            """A RAM imported by name."""
    ''',
    "my_tasks.py": '''
        import torch
        from lgdram.plugin_api import CHUNK, CanvasBatch, box_centre, chunk_generator, chunks


        def square(n, split, seed, device="cpu", start=0):
            """A bright 6x6 square on a 32x32 canvas; the label is its quadrant."""
            parts = [torch.randint(0, 27, (CHUNK, 2), generator=chunk_generator(seed, c, 1 + (split == "test")))[lo:hi]
                     for c, lo, hi in chunks(start, n)]
            xy = torch.cat(parts)
            boxes = torch.cat([xy, xy + 6], 1).float()
            side = torch.arange(32)
            cols = (side >= xy[:, :1]) & (side < xy[:, :1] + 6)
            rows = (side >= xy[:, 1:]) & (side < xy[:, 1:] + 6)
            images = (rows[:, :, None] & cols[:, None, :]).to(torch.uint8)[:, None] * 255
            centers = box_centre(boxes, (32, 32))
            labels = (centers[:, 0] > 0).long() + 2 * (centers[:, 1] > 0).long()
            return CanvasBatch(images, labels, centers, boxes, torch.zeros(n, dtype=torch.int16))


        square.classes = 4
    ''',
    "my_losses.py": '''
        from lgdram.plugin_api import Loss, LossTerm


        class Sharpen(Loss):
            """Entropy of the prediction."""

            def __call__(self, out, batch, step):
                p = out.logits.softmax(-1)
                entropy = -(p * p.clamp_min(1e-9).log()).sum(-1).mean()
                return LossTerm(self.config.weight * entropy, {"entropy": entropy.detach()})
    ''',
    "my_loggers.py": '''
        from lgdram.plugin_api import Logger


        class Evals(Logger):
            """Appends evaluation steps to evals.txt."""

            def open(self, run_dir, spec, resume_step):
                self.path = run_dir / "evals.txt"

            def log(self, record):
                if record["kind"] == "eval":
                    with open(self.path, "a") as f:
                        f.write(f"{record['step']}\\n")
    ''',
}


def test_module_class_names_on_the_command_line(tmp_path):
    for name, source in MODULES.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    env = offline_env(tmp_path / "cache")
    args = ["train", "--model", "my_models:SmallRAM", "--dataset", "my_tasks:square", "--loss", "my_losses:Sharpen=0.5",
            "--logger", "my_loggers:Evals", "--set", "model.hidden=16", "--set", "model.glimpse_hidden=8",
            "--set", "model.glimpses=2", "--set", "model.glimpse_size=8", "--set", "model.scales=2",
            "--annotations", "50%", "--steps", "2", "--batch-size", "4", "--mc", "2", "--eval-every", "2",
            "--eval-n", "8", "--set", "log_every=1", "--threads", "1", "--out", "run"]
    result = subprocess.run([str(LGDRAM), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    spec = json.loads((tmp_path / "run" / "run.spec.json").read_text())
    assert spec["model"]["type"] == "my_models:SmallRAM" and spec["dataset"]["type"] == "my_tasks:square"
    assert spec["loss"]["my_losses:Sharpen"] == {"weight": 0.5} and "location" in spec["loss"]
    records = [json.loads(line) for line in (tmp_path / "run" / "run.metrics.jsonl").read_text().splitlines()]
    assert any("my_losses:Sharpen/entropy" in r for r in records if r["kind"] == "train")
    assert (tmp_path / "run" / "evals.txt").read_text().split() == ["2"]
    # the checkpoint names the classes: eval imports them again
    result = subprocess.run([str(LGDRAM), "eval", "run", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n"] == 8
    # a name that does not import is one line naming it
    result = subprocess.run([str(LGDRAM), "train", "--model", "my_models:Nope", "--out", "x"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert_one_line_error(result.returncode, result.stderr, "model 'my_models:Nope'", "cannot be used", "AttributeError")


def test_register_validates_like_an_entry_point(tmp_path):
    class Tiny(RAM):
        """A RAM registered in-process."""

    assert lgdram.register("model", "tiny-ram", Tiny) is Tiny
    from lgdram_cli.registry import MODELS

    assert MODELS.entry("tiny-ram").what == "model 'tiny-ram' from 'test_plugin_authoring.test_register_validates_like_an_entry_point.<locals>.Tiny, registered in-process'"
    assert "tiny-ram" in MODELS.names() and check_model("tiny-ram", TINY_RAM, onnx=False)

    class Tiny2(RAM):
        """The same name again (a notebook cell run twice)."""

    lgdram.register("model", "tiny-ram", Tiny2)
    assert MODELS.get("tiny-ram") is Tiny2

    @lgdram.register("loss", "sharpen")
    class Sharpen(Loss):
        """Entropy of the prediction."""

        def __call__(self, out, batch, step):  # noqa: ANN001, ANN201
            p = out.logits.softmax(-1)
            entropy = -(p * p.clamp_min(1e-9).log()).sum(-1).mean()
            return LossTerm(self.config.weight * entropy, {"entropy": entropy.detach()})

    assert isinstance(Sharpen, type) and "finite value (without annotations)" in check_loss("sharpen")

    with pytest.raises(UserError, match=r"cannot register model 'ram': model 'ram' from 'lgdram .*' already has that name"):
        lgdram.register("model", "ram", Tiny)
    with pytest.raises(UserError, match=r"not a subclass of lgdram_cli.models.base.Model"):
        lgdram.register("model", "not-a-model", Sharpen)
    with pytest.raises(UserError, match=r"no '\.', ':'"):
        lgdram.register("loss", "my.loss", Sharpen)
    with pytest.raises(UserError, match=r"unknown plugin kind 'modle' \(did you mean 'model'\?\)"):
        lgdram.register("modle", "x", Tiny)

    from lgdram.plugin_api import TranslatedTask

    task = TranslatedTask(TranslatedTask.Config(digits="mnist-mini"))

    def four_canvases(n, split, seed, device="cpu", start=0):
        """What lgdram's translated task gives."""
        return task.generate(n, split, seed, device, start)

    lgdram.register("dataset", "four", four_canvases)
    batch = lgdram.generate("four", 3)
    assert isinstance(batch, CanvasBatch) and batch.images.shape == (3, 1, 60, 60)
    assert check_dataset("four", n=6)


def test_the_api_generate_checks_the_batch():
    def flat(n, split, seed, device="cpu", start=0):
        """Forgets the channel axis."""
        b = lgdram.generate({"type": "translated", "digits": "mnist-mini"}, n, split, seed)
        return CanvasBatch(b.images[:, 0], b.labels, b.centers, b.boxes, b.n_distractors)

    lgdram.register("dataset", "flat-fn", flat)
    with pytest.raises(UserError, match=r"dataset 'flat-fn' \(function .*flat\) returned images \(1, 60, 60\)"):
        lgdram.generate("flat-fn", 2)


# ---------------------------------------------------------------- 11, 12, 14: structure


def test_training_does_not_import_the_pytest_kit():
    code = "import sys, lgdram_cli.training.loop, lgdram_cli.data.gen; print('lgdram_cli.testing' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_the_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.is_file():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_one_home_for_the_coordinate_convention():
    from lgdram_cli.data.canvas import centre_table
    from lgdram_cli.geometry import box_contains, loc_to_px, px_to_loc
    from lgdram_cli.viz.draw import to_canvas_px

    for side in (28, 60, 61, 100, 257):
        old = torch.arange(2 * side + 1, dtype=torch.float32) / side - 1.0
        assert torch.equal(centre_table(side, torch.device("cpu")), old)  # the canvases' centres, bit for bit
    loc = torch.rand(1000, 2) * 2 - 1
    H, W = 60, 90
    px = loc_to_px(loc, (H, W))
    assert torch.equal(px, torch.stack([(loc[:, 0] + 1) * W / 2, (loc[:, 1] + 1) * H / 2], 1))
    assert torch.allclose(px_to_loc(px, (H, W)), loc, atol=1e-6)
    x, y = loc[0].tolist()
    assert to_canvas_px((x, y), (H, W), 3) == ((x + 1) / 2 * W * 3, (y + 1) / 2 * H * 3)
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    inside = box_contains(boxes, torch.tensor([[10.0, 19.9], [20.0, 15.0], [9.9, 15.0]]))
    assert inside.tolist() == [True, False, False]
    assert box_contains(boxes, torch.tensor([[20.0, 20.0]]), inclusive=True).tolist() == [True]


def test_the_step_timer_leaves_the_allocator_alone_unless_asked(monkeypatch):
    import lgdram_cli.allocator as allocator
    from lgdram_cli.training.assemble import train_spec
    from lgdram_cli.training.benchmark import StepTimer

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    spec = train_spec(dataset="cmnist-60", model="fc", sets=["dataset.digits=mnist-mini", "model.width=8"],
                      batch_size=2, mc=1, annotations="100%")
    StepTimer(spec, torch.device("cpu"))
    assert calls == []
    StepTimer(spec, torch.device("cpu"), keep_freed_memory=True)
    assert calls == [1]

