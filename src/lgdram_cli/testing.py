"""Conformance kit for plugin authors: call these from your own pytest suite.

    from lgdram_cli.testing import check_dataset, check_model, check_loss

    def test_my_task():
        check_dataset("my-task")                       # by registered name (entry point)

    def test_my_model():
        check_model(MyModel, config={"glimpses": 3})   # or by class, with config overrides

Each check raises `ConformanceError` (an AssertionError) naming the plugin, its distribution
and what is wrong, and returns the names of the checks that passed. lgdram runs the same
checks over every registered built-in in its own test suite.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.data.generators import DatasetGenerator
from lgdram_cli.losses import Loss, LossBatch
from lgdram_cli.models.base import Model, ModelOutput
from lgdram_cli.registry import DATASETS, LOSSES, MODELS, Registry
from lgdram_cli.specs import StrictModel


class ConformanceError(AssertionError):
    """A plugin breaks the contract of `lgdram_cli.plugin_api`."""


class _Checker:
    def __init__(self, what: str) -> None:
        self.what = what
        self.passed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if not ok:
            raise ConformanceError(f"{self.what}: check '{name}' failed{': ' + detail if detail else ''}")
        self.passed.append(name)


def _resolve(target: str | type, registry: Registry, base: type) -> tuple[type, str, str]:
    """(class, registered name or class name, description for messages)."""
    if isinstance(target, str):
        entry = registry.entry(target)
        return entry.load(), target, f"{registry.kind} '{target}' from '{entry.origin}'"
    if not (isinstance(target, type) and issubclass(target, base)):
        raise ConformanceError(f"{target!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    return target, getattr(target, "name", "") or target.__name__, f"{registry.kind} class {target.__qualname__}"


def _contract(c: _Checker, cls: type, base: type) -> None:
    c.check("plugin_api_version", getattr(cls, "plugin_api_version", None) == PLUGIN_API_VERSION,
            f"declares {getattr(cls, 'plugin_api_version', None)}, lgdram speaks {PLUGIN_API_VERSION}")
    config = getattr(cls, "Config", None)
    c.check("Config is a StrictModel", isinstance(config, type) and issubclass(config, StrictModel),
            "Config must subclass lgdram_cli.plugin_api.StrictModel (unknown keys must be errors)")
    doc = (getattr(cls, "description", "") or cls.__doc__ or "").strip()
    c.check("description", bool(doc), "give the class a one-line `description` or docstring")


def _config(c: _Checker, cls: type, name: str, overrides: dict[str, Any] | None, typed: bool) -> Any:
    data: dict[str, Any] = {"type": name} if typed else {}
    data.update(overrides or {})
    try:
        cfg = cls.Config.model_validate(data)
    except Exception as exc:
        raise ConformanceError(f"config {data} does not validate: {exc}") from exc
    dumped = json.loads(json.dumps(cfg.model_dump(mode="json")))
    c.check("config JSON round-trip", cls.Config.model_validate(dumped) == cfg, f"{dumped} reads back differently")
    try:
        cls.Config.model_validate({**dumped, "no_such_key_xyz": 1})
        c.check("config rejects unknown keys", False, "an unknown key was accepted")
    except Exception:
        c.passed.append("config rejects unknown keys")
    return cfg


def _same(a: CanvasBatch, b: CanvasBatch) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))


def check_batch(batch: CanvasBatch, n: int, channels: int, size: tuple[int, int], classes: int) -> str | None:
    """None when `batch` honours the CanvasBatch conventions, else what is wrong (used at run time too)."""
    H, W = size
    expect = {
        "images": (torch.uint8, (n, channels, H, W)),
        "labels": (torch.int64, (n,)),
        "centers": (torch.float32, (n, 2)),
        "boxes": (torch.float32, (n, 4)),
        "n_distractors": (torch.int16, (n,)),
    }
    for (name, (dtype, shape)), t in zip(expect.items(), batch.tensors()):
        if t.dtype != dtype or tuple(t.shape) != shape:
            return f"'{name}' is {t.dtype} {tuple(t.shape)}, expected {dtype} {shape}"
    if n == 0:
        return None
    if int(batch.labels.min()) < 0 or int(batch.labels.max()) >= classes:
        return f"labels outside [0, {classes})"
    if not torch.isfinite(batch.centers).all() or batch.centers.abs().max() > 1:
        return "centres outside [-1, 1]"
    b = batch.boxes
    if (b[:, 0] < 0).any() or (b[:, 1] < 0).any() or (b[:, 2] > W).any() or (b[:, 3] > H).any():
        return "boxes reach outside the canvas"
    if (b[:, 2] <= b[:, 0]).any() or (b[:, 3] <= b[:, 1]).any():
        return "empty boxes (x_max <= x_min or y_max <= y_min)"
    px = (batch.centers[:, 0] + 1) * W / 2
    py = (batch.centers[:, 1] + 1) * H / 2
    if ((px < b[:, 0]) | (px > b[:, 2]) | (py < b[:, 1]) | (py > b[:, 3])).any():
        return "centres outside their boxes (are x and y swapped?)"
    return None


def check_output(out: Any, rows: int, classes: int) -> str | None:
    """None when a forward pass's output honours the ModelOutput conventions, else what is wrong."""
    if not isinstance(out, ModelOutput):
        return f"forward returned {type(out).__name__}, not a ModelOutput"
    if tuple(out.logits.shape) != (rows, classes):
        return f"logits have shape {tuple(out.logits.shape)}, expected {(rows, classes)}"
    if out.locations is not None and (out.locations.dim() != 3 or out.locations.shape[0] != rows or out.locations.shape[2] != 2):
        return f"locations have shape {tuple(out.locations.shape)}, expected [{rows}, T, 2]"
    if out.log_probs is not None:
        if out.means is None or out.baselines is None:
            return "log_probs without means and baselines"
        P = out.means.shape[1]
        if tuple(out.means.shape) != (rows, P, 2) or tuple(out.log_probs.shape) != (rows, P) or tuple(out.baselines.shape) != (rows, P):
            return "means/log_probs/baselines disagree in shape"
    return None


def check_dataset(target: str | type, config: dict[str, Any] | None = None, n: int = 12) -> list[str]:
    """Contract, config, shapes/dtypes/ranges, determinism and stream slicing of a generator."""
    cls, name, what = _resolve(target, DATASETS, DatasetGenerator)
    c = _Checker(what)
    _contract(c, cls, DatasetGenerator)
    gen = cls(_config(c, cls, name, config, typed=True))
    shape = (gen.channels, tuple(gen.size), gen.classes)
    c.check("channels/size/classes", gen.channels >= 1 and min(gen.size) >= 1 and gen.classes >= 2, f"{shape}")
    for split in ("train", "test"):
        batch = gen.generate(n, split, 0)
        problem = check_batch(batch, n, gen.channels, tuple(gen.size), gen.classes)
        c.check(f"{split} batch shapes, dtypes and ranges", problem is None, problem or "")
    first = gen.generate(n, "train", 0)
    c.check("same seed, same samples", _same(first, gen.generate(n, "train", 0)))
    c.check("another seed, other samples", not torch.equal(first.images, gen.generate(n, "train", 1).images))
    part = gen.generate(n - 3, "train", 0, start=3)
    c.check("stream slicing (start=k equals a slice)", _same(part, CanvasBatch(*(t[3:] for t in first.tensors()))))
    c.check("resolved_config is JSON", isinstance(json.loads(json.dumps(gen.resolved_config())), dict))
    return c.passed


def _policy_losses(out: ModelOutput) -> dict[str, dict]:
    spec: dict[str, dict] = {"classification": {}}
    if out.log_probs is not None:
        spec.update({"reinforce": {}, "location": {}})
    return spec


def check_model(
    target: str | type, config: dict[str, Any] | None = None, *, channels: int = 1,
    size: tuple[int, int] = (60, 60), classes: int = 10, onnx: bool | None = None,
) -> list[str]:
    """Contract, output shapes, gradients to every parameter, determinism, safetensors and export."""
    from safetensors.torch import load_file, save_file

    from lgdram_cli.losses import HybridLoss

    cls, name, what = _resolve(target, MODELS, Model)
    c = _Checker(what)
    _contract(c, cls, Model)
    cfg = _config(c, cls, name, config, typed=True)
    torch.manual_seed(0)
    model = cls(cfg, channels=channels, size=size, classes=classes)
    B, M = 3, 2
    images = torch.rand(B, channels, *size, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    out = model(images, replicas=M)
    N = B * M
    problem = check_output(out, N, classes)
    c.check("output shapes: logits [B·M, classes], locations [B·M, T, 2], policy fields", problem is None, problem or "")
    if out.locations is not None:
        c.check("locations in [-1, 1]", bool(out.locations.abs().max() <= 1))
        c.check("locations carry no gradient", not out.locations.requires_grad)
    loss = HybridLoss(_policy_losses(out))
    target_batch = LossBatch(
        labels=torch.arange(N) % classes, centers=torch.zeros(N, 2), annotated=torch.ones(N, dtype=torch.bool),
        replicas=M, boxes=torch.tensor([[0.0, 0.0, size[1], size[0]]]).repeat(N, 1), size=size,
    )
    total, _ = loss(out, target_batch, 0)
    c.check("finite loss", bool(torch.isfinite(total)), f"{float(total.detach())}")
    model.zero_grad()
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    c.check("every parameter gets a finite gradient", not missing, ", ".join(missing[:5]))
    model.eval()
    with torch.no_grad():
        a = model(images, deterministic=True)
        b = model(images, deterministic=True)
        torch.manual_seed(5)
        s1 = model(images, replicas=M)
        torch.manual_seed(5)
        s2 = model(images, replicas=M)
    c.check("deterministic=True is repeatable", torch.equal(a.logits, b.logits))
    c.check("same seed, same sampled output", torch.equal(s1.logits, s2.logits))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        torch.manual_seed(0)
        other = cls(cfg, channels=channels, size=size, classes=classes).eval()
        other.load_state_dict(load_file(str(path)))
        with torch.no_grad():
            c.check("safetensors round-trip", torch.equal(other(images, deterministic=True).logits, a.logits))
        if onnx is None:
            onnx = bool(getattr(cls, "exportable", True))
        if onnx:
            _check_onnx(c, model, images, Path(tmp) / "m.onnx")
    return c.passed


def _check_onnx(c: _Checker, model: Model, images: torch.Tensor, path: Path) -> None:
    try:
        import onnxruntime
    except ImportError:  # the kit works without the export extra; the check is then skipped
        return
    from lgdram_cli.export.formats import ONNX_OPSET, Policy

    import warnings

    policy = Policy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            policy, (images,), str(path), input_names=["images"], output_names=["logits", "locations"],
            opset_version=ONNX_OPSET, dynamo=False, dynamic_axes={"images": {0: "batch"}},
        )
    session = onnxruntime.InferenceSession(str(path))
    more = torch.rand(images.shape[0] + 2, *images.shape[1:])
    logits, _ = session.run(None, {"images": more.numpy()})
    with torch.no_grad():
        expected, _ = policy(more)
    diff = float((torch.from_numpy(logits) - expected).abs().max())
    c.check("ONNX export matches (other batch size)", diff < 1e-4, f"max abs diff {diff:.2e}")


def _fake_output(N: int, T: int, classes: int) -> ModelOutput:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(N, classes, generator=g).requires_grad_()
    means = torch.tanh(torch.randn(N, T - 1, 2, generator=g)).requires_grad_()
    log_probs = torch.randn(N, T - 1, generator=g).requires_grad_()
    baselines = torch.rand(N, T - 1, generator=g).requires_grad_()
    return ModelOutput(
        logits=logits, step_logits=logits[:, None].expand(N, T, classes),
        locations=torch.cat([torch.zeros(N, 1, 2), means.detach()], 1), means=means, log_probs=log_probs,
        baselines=baselines,
    )


def check_loss(target: str | type, config: dict[str, Any] | None = None) -> list[str]:
    """Contract, a finite scalar with gradients, numeric metrics, no NaN without annotations."""
    cls, name, what = _resolve(target, LOSSES, Loss)
    c = _Checker(what)
    _contract(c, cls, Loss)
    term = cls(_config(c, cls, name, config, typed=False))
    B, M, T, classes = 4, 2, 4, 10
    N = B * M
    for annotated in (True, False):
        out = _fake_output(N, T, classes)
        batch = LossBatch(
            labels=torch.arange(N) % classes, centers=torch.rand(N, 2) * 2 - 1,
            annotated=torch.full((N,), annotated), replicas=M,
            boxes=torch.tensor([[10.0, 10.0, 30.0, 30.0]]).repeat(N, 1), size=(60, 60),
        )
        result = term(out, batch, step=0)
        label = "with" if annotated else "without"
        c.check(f"scalar value ({label} annotations)", result.value.dim() == 0, f"shape {tuple(result.value.shape)}")
        c.check(f"finite value ({label} annotations)", bool(torch.isfinite(result.value)), f"{float(result.value.detach())}")
        numbers = all(
            isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1 and not v.requires_grad)
            for v in result.metrics.values()
        )
        c.check("metrics are numbers (floats or detached scalar tensors)", numbers, f"{result.metrics}")
        if result.value.requires_grad:
            result.value.backward()
            grads = [t.grad for t in (out.logits, out.means, out.log_probs, out.baselines) if t.grad is not None]
            c.check(f"finite gradients ({label} annotations)", all(torch.isfinite(g).all() for g in grads))
    return c.passed


def check_registered() -> dict[str, list[str]]:
    """Run the matching check over every usable registered entry; returns what passed per entry."""
    results: dict[str, list[str]] = {}
    for name in DATASETS.usable():
        results[f"dataset:{name}"] = check_dataset(name)
    for name in MODELS.usable():
        results[f"model:{name}"] = check_model(name)
    for name in LOSSES.usable():
        results[f"loss:{name}"] = check_loss(name)
    return results
