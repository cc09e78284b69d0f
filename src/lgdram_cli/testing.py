"""Conformance kit for plugin authors: call these from your own pytest suite.

    from lgdram.testing import check_dataset, check_model, check_loss

    def test_my_task():
        check_dataset("my-task")                       # by registered name (entry point)

    def test_my_model():
        check_model(MyModel, config={"glimpses": 3})   # or by class, with config overrides

Every problem — a failed check, an invalid config, a name that is unknown or whose plugin
cannot be imported, bad input the plugin's constructor refuses — raises `ConformanceError`
(an AssertionError) whose message starts with the plugin and its distribution. A check
returns a `CheckReport`: the list of the checks that passed, with `.skipped` naming those
that could not run here (ONNX without onnx/onnxruntime; also warned as `CheckSkipped`).
lgdram runs the same checks over every registered built-in in its own test suite.

This is the pytest layer: the runtime checks every command runs (`check_batch`,
`check_output`) live in `lgdram_cli.contract`, below the training code, and are re-exported
here.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.contract import check_batch, check_output  # the runtime checks (re-exported here)
from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.data.generators import DatasetGenerator
from lgdram_cli.errors import UserError
from lgdram_cli.losses import Loss, LossBatch
from lgdram_cli.models.base import Model, ModelOutput
from lgdram_cli.registry import DATASETS, LOSSES, MODELS, REGISTRIES, Registry, plugin_description
from lgdram_cli.specs import StrictModel, describe_validation_error


class ConformanceError(AssertionError):
    """A plugin breaks the contract of `lgdram.plugin_api`. The message starts with what was
    checked — `model 'x' from 'lgdram-x 0.1.0'` for a registered name, `model class
    pkg.mod.X from 'lgdram-x 0.1.0'` for a class — and then says what is wrong."""


class CheckSkipped(UserWarning):
    """A conformance check could not run here (e.g. ONNX without onnxruntime); see `CheckReport.skipped`."""


class CheckReport(list):
    """What a `check_*` function verified: the names of the checks that passed (it is a list of
    them), `skipped` (check name → why it could not run here) and `what` (the plugin, as the
    messages name it)."""

    def __init__(self, passed: list[str], skipped: dict[str, str], what: str) -> None:
        super().__init__(passed)
        self.skipped = dict(skipped)
        self.what = what

    @property
    def passed(self) -> list[str]:
        return list(self)


class _Checker:
    def __init__(self, what: str) -> None:
        self.what = what
        self.passed: list[str] = []
        self.skipped: dict[str, str] = {}

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        if not ok:
            raise ConformanceError(f"{self.what}: check '{name}' failed{': ' + detail if detail else ''}")
        self.passed.append(name)

    def skip(self, name: str, why: str) -> None:
        """Record (and warn) that check `name` could not run here."""
        self.skipped[name] = why
        warnings.warn(f"{self.what}: check '{name}' skipped: {why}", CheckSkipped, stacklevel=3)

    def fail(self, problem: str, cause: BaseException | None = None) -> ConformanceError:
        error = ConformanceError(f"{self.what}: {problem}")
        error.__cause__ = cause
        return error

    def build(self, make: Any) -> Any:
        """`make()` — the plugin's constructor — with its bad-input errors named like the others."""
        try:
            return make()
        except UserError as exc:
            raise self.fail(str(exc), exc) from exc

    def report(self) -> CheckReport:
        return CheckReport(self.passed, self.skipped, self.what)


def _distribution_of(cls: type) -> str:
    """'lgdram-x 0.1.0': the installed distribution whose lgdram entry points, or else whose
    files, provide `cls`'s top-level package; '' when none does (a class in a test file)."""
    from importlib.metadata import PackageNotFoundError, entry_points, packages_distributions, version

    top = str(getattr(cls, "__module__", "")).split(".")[0]
    for registry in REGISTRIES:
        for ep in entry_points(group=registry.group):
            if ep.dist is not None and ep.value.split(":")[0].split(".")[0] == top:
                return f"{ep.dist.name} {ep.dist.version}"
    names = packages_distributions().get(top, [])
    if not names:
        return ""
    try:
        return f"{names[0]} {version(names[0])}"
    except PackageNotFoundError:
        return names[0]


def _resolve(target: str | type, registry: Registry, base: type) -> tuple[type, str, str]:
    """(class, registered name or class name, how messages name the plugin). A name that is
    unknown or whose plugin cannot be loaded is a ConformanceError naming its distribution."""
    if isinstance(target, str):
        try:
            entry = registry.entry(target)
            return entry.load(), target, entry.what
        except UserError as exc:
            raise ConformanceError(str(exc)) from exc
    what = f"{registry.kind} class {getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
    if not (isinstance(target, type) and issubclass(target, base)):
        raise ConformanceError(f"{what}: {target!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    dist = _distribution_of(target)
    return target, getattr(target, "name", "") or target.__name__, what + (f" from '{dist}'" if dist else "")


def _contract(c: _Checker, cls: type, base: type) -> None:
    c.check("plugin_api_version", getattr(cls, "plugin_api_version", None) == PLUGIN_API_VERSION,
            f"declares {getattr(cls, 'plugin_api_version', None)}, lgdram speaks {PLUGIN_API_VERSION}")
    config = getattr(cls, "Config", None)
    c.check("Config is a StrictModel", isinstance(config, type) and issubclass(config, StrictModel),
            "Config must subclass lgdram.plugin_api.StrictModel (unknown keys must be errors)")
    c.check("description", bool(plugin_description(cls)), "give the class a one-line `description` or docstring")


def _config(c: _Checker, cls: type, name: str, overrides: dict[str, Any] | None, typed: bool, kind: str) -> Any:
    """The validated config; a bad one is a ConformanceError in the words `--set` would use."""
    from pydantic import ValidationError

    data: dict[str, Any] = {"type": name} if typed else {}
    data.update(overrides or {})
    try:
        cfg = cls.Config.model_validate(data)
    except ValidationError as exc:
        raise c.fail(f"invalid config: {describe_validation_error(exc, cls.Config, kind)}", exc) from exc
    except UserError as exc:
        raise c.fail(f"invalid config: {exc}", exc) from exc
    dumped = json.loads(json.dumps(cfg.model_dump(mode="json")))
    c.check("config JSON round-trip", cls.Config.model_validate(dumped) == cfg, f"{dumped} reads back differently")
    try:
        cls.Config.model_validate({**dumped, "no_such_key_xyz": 1})
        accepted = True
    except Exception:
        accepted = False
    c.check("config rejects unknown keys", not accepted, "an unknown key was accepted")
    return cfg


def _same(a: CanvasBatch, b: CanvasBatch) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors()))


def check_dataset(target: str | type, config: dict[str, Any] | None = None, n: int = 12) -> CheckReport:
    """Contract, config, shapes/dtypes/ranges, determinism and stream slicing of a generator."""
    cls, name, what = _resolve(target, DATASETS, DatasetGenerator)
    c = _Checker(what)
    _contract(c, cls, DatasetGenerator)
    cfg = _config(c, cls, name, config, typed=True, kind="dataset")
    gen = c.build(lambda: cls(cfg))
    shape = (gen.channels, tuple(gen.size), gen.classes)
    c.check("channels/size/classes", gen.channels >= 1 and min(gen.size) >= 1 and gen.classes >= 2, f"{shape}")
    for split in ("train", "test"):
        batch = c.build(lambda: gen.generate(n, split, 0))
        problem = check_batch(batch, n, gen.channels, tuple(gen.size), gen.classes)
        c.check(f"{split} batch shapes, dtypes and ranges", problem is None, problem or "")
    first = gen.generate(n, "train", 0)
    c.check("same seed, same samples", _same(first, gen.generate(n, "train", 0)))
    c.check("another seed, other samples", not torch.equal(first.images, gen.generate(n, "train", 1).images))
    part = gen.generate(n - 3, "train", 0, start=3)
    c.check("stream slicing (start=k equals a slice)", _same(part, CanvasBatch(*(t[3:] for t in first.tensors()))))
    c.check("resolved_config is JSON", isinstance(json.loads(json.dumps(gen.resolved_config())), dict))
    return c.report()


def _policy_losses(out: ModelOutput) -> dict[str, dict]:
    spec: dict[str, dict] = {"classification": {}}
    if out.log_probs is not None:
        spec.update({"reinforce": {}, "location": {}})
    return spec


def check_model(
    target: str | type, config: dict[str, Any] | None = None, *, channels: int = 1,
    size: tuple[int, int] = (60, 60), classes: int = 10, onnx: bool | None = None,
) -> CheckReport:
    """Contract, output shapes, the parts of an attention model, gradients to every parameter,
    determinism, safetensors and ONNX export (reported in `.skipped` where onnx or onnxruntime
    is not installed, or `exportable` is False; `onnx=False` leaves it out)."""
    from safetensors.torch import load_file, save_file

    from lgdram_cli.losses import HybridLoss

    cls, name, what = _resolve(target, MODELS, Model)
    c = _Checker(what)
    _contract(c, cls, Model)
    cfg = _config(c, cls, name, config, typed=True, kind="model")
    torch.manual_seed(0)
    model = c.build(lambda: cls(cfg, channels=channels, size=size, classes=classes))
    B, M = 3, 2
    images = torch.rand(B, channels, *size, generator=torch.Generator().manual_seed(0))
    _check_parts(c, model, images, M)
    torch.manual_seed(1)
    out = model(images, replicas=M)
    N = B * M
    problem = check_output(out, N, classes, replicas=M)
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
        if onnx is None and not getattr(cls, "exportable", True):
            c.skip(ONNX_CHECK, "the model says exportable = False")
        elif onnx is not False:
            _check_onnx(c, model, images, Path(tmp) / "m.onnx")
    return c.report()


ONNX_CHECK = "ONNX export matches (other batch size)"


def _check_parts(c: _Checker, model: Model, images: torch.Tensor, M: int) -> None:
    """An attention model's parts (`lgdram.plugin_api` protocols), one call each, shapes checked
    against the protocol, so that a replaced part is named rather than a shape error later."""
    from lgdram_cli.models.contract import PARTS, LocationPolicyProtocol
    from lgdram_cli.models.ram import AttentionModel

    if not isinstance(model, AttentionModel):
        return
    cfg = model.config
    n = images.shape[0] * M
    for attr, protocol in PARTS.items():
        part = getattr(model, attr, None)
        if part is not None or attr != "context":
            c.check(f"part self.{attr} is a {protocol.__name__}", isinstance(part, protocol),
                    f"{type(part).__name__} lacks {', '.join(_missing(part, protocol))}")
    c.check("the model is a LocationPolicyProtocol", isinstance(model, LocationPolicyProtocol))
    g, S, C = cfg.glimpse_size, cfg.scales, images.shape[1]
    loc = torch.rand(n, 2, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        patches = model.retina.glimpse(model.retina.prepare(images), loc, M)
        c.check("retina.glimpse(prepare(images), loc [n, 2], replicas) is [n, scales·C, g, g]",
                tuple(patches.shape) == (n, S * C, g, g), f"{tuple(patches.shape)}, expected {(n, S * C, g, g)}")
        feature = model.glimpse(patches, loc)
        c.check("glimpse(patches, loc) is [n, hidden]", tuple(feature.shape) == (n, cfg.hidden),
                f"{tuple(feature.shape)}, expected {(n, cfg.hidden)}")
        state = model.core.init_state()
        c.check("core.init_state() is None (the zero state)", state is None, f"got {type(state).__name__}")
        result = model.core(feature, state)
        ok = isinstance(result, tuple) and len(result) == 2 and tuple(result[0].shape) == (n, cfg.hidden)
        c.check("core(x, state) is (h [n, hidden], state)", ok,
                f"got {type(result).__name__}" + (f" with h {tuple(result[0].shape)}" if isinstance(result, tuple) and result else ""))
        model.core(feature, result[1])  # the state it returned is one it takes back
        mean = model.policy_mean(result[0])
        c.check("policy_mean(h) is [n, 2] in [-1, 1]", tuple(mean.shape) == (n, 2) and bool(mean.abs().max() <= 1),
                f"{tuple(mean.shape)}")
        where = model.look(model._act(mean, torch.randn(n, 2) * cfg.loc_std))
        c.check("look(_act(mean, noise)) is [n, 2] in [-1, 1]", tuple(where.shape) == (n, 2) and bool(where.abs().max() <= 1))
        context = getattr(model, "context", None)
        if context is not None:
            top = context(images)
            c.check("context(images) is [B, hidden]", tuple(top.shape) == (images.shape[0], cfg.hidden), f"{tuple(top.shape)}")


def _missing(obj: Any, protocol: type) -> list[str]:
    wanted = [m for m in ("prepare", "glimpse", "init_state", "__call__") if m in protocol.__dict__]
    return [m for m in wanted if not hasattr(obj, m)] or ["the protocol's methods"]


def _check_onnx(c: _Checker, model: Model, images: torch.Tensor, path: Path) -> None:
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:  # the kit works without them; the check is then reported as skipped
        c.skip(ONNX_CHECK, f"{' and '.join(missing)} not installed (pip install {' '.join(missing)})")
        return
    import onnxruntime

    from lgdram_cli.export.formats import ONNX_OPSET, Policy

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
    c.check(ONNX_CHECK, diff < 1e-4, f"max abs diff {diff:.2e}")


def _fake_output(N: int, T: int, classes: int) -> ModelOutput:
    """A RAM-like output of T glimpses: P = T − 1 decisions (none for T = 1)."""
    g = torch.Generator().manual_seed(0)
    P = T - 1
    logits = torch.randn(N, classes, generator=g).requires_grad_()
    means = torch.tanh(torch.randn(N, P, 2, generator=g)).requires_grad_()
    log_probs = torch.randn(N, P, generator=g).requires_grad_()
    baselines = torch.rand(N, P, generator=g).requires_grad_()
    return ModelOutput(
        logits=logits, step_logits=logits[:, None].expand(N, T, classes),
        locations=torch.cat([torch.zeros(N, 1, 2), means.detach()], 1), means=means, log_probs=log_probs,
        baselines=baselines, actions=means.detach(),
    )


#: Glimpses the loss check tries: 1 (P = 0 decisions: empty `means`), 2 and 4.
LOSS_GLIMPSES = (1, 2, 4)


def check_loss(target: str | type, config: dict[str, Any] | None = None) -> CheckReport:
    """Contract, a finite scalar with gradients, numeric metrics, no NaN without annotations,
    for outputs of 1, 2 and 4 glimpses (RAM-like: P = T − 1 decisions, so none for T = 1)."""
    cls, name, what = _resolve(target, LOSSES, Loss)
    c = _Checker(what)
    _contract(c, cls, Loss)
    cfg = _config(c, cls, name, config, typed=False, kind=f"loss.{name}")
    term = c.build(lambda: cls(cfg))
    B, M, classes = 4, 2, 10
    N = B * M
    for T in LOSS_GLIMPSES:
        for annotated in (True, False):
            out = _fake_output(N, T, classes)
            batch = LossBatch(
                labels=torch.arange(N) % classes, centers=torch.rand(N, 2) * 2 - 1,
                annotated=torch.full((N,), annotated), replicas=M,
                boxes=torch.tensor([[10.0, 10.0, 30.0, 30.0]]).repeat(N, 1), size=(60, 60),
            )
            label = f"{'with' if annotated else 'without'} annotations"  # lgdram 0.1's names for T = 4
            label += "" if T == 4 else f", {T} glimpse{'s' if T > 1 else ''} ({T - 1} decision{'' if T == 2 else 's'})"
            try:
                result = term(out, batch, step=0)
            except UserError as exc:
                raise c.fail(f"({label}): {exc}", exc) from exc
            except Exception as exc:
                raise c.fail(f"raised {type(exc).__name__} ({label}): {exc}", exc) from exc
            c.check(f"returns a LossTerm ({label})", hasattr(result, "value") and hasattr(result, "metrics"),
                    f"got {type(result).__name__}")
            c.check(f"scalar value ({label})", torch.is_tensor(result.value) and result.value.dim() == 0,
                    f"shape {tuple(getattr(result.value, 'shape', ()))}")
            c.check(f"finite value ({label})", bool(torch.isfinite(result.value)), f"{float(result.value.detach())}")
            numbers = all(
                isinstance(v, (int, float)) or (torch.is_tensor(v) and v.numel() == 1 and not v.requires_grad)
                for v in result.metrics.values()
            )
            c.check(f"metrics are numbers: floats or detached scalar tensors ({label})", numbers, f"{result.metrics}")
            if result.value.requires_grad:
                result.value.backward()
                grads = [t.grad for t in (out.logits, out.means, out.log_probs, out.baselines) if t.grad is not None]
                c.check(f"finite gradients ({label})", all(torch.isfinite(g).all() for g in grads))
    return c.report()


def check_registered() -> dict[str, CheckReport]:
    """Run the matching check over every usable registered entry; returns what passed per entry."""
    results: dict[str, CheckReport] = {}
    for name in DATASETS.usable():
        results[f"dataset:{name}"] = check_dataset(name)
    for name in MODELS.usable():
        results[f"model:{name}"] = check_model(name)
    for name in LOSSES.usable():
        results[f"loss:{name}"] = check_loss(name)
    return results
