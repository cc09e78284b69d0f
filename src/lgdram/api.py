"""lgdram's Python API, for notebooks and scripts (see docs/api.md).

    import lgdram
    run = lgdram.train(dataset="cmnist-60", steps=500, out="runs/first")
    run = lgdram.load("runs/first")                     # a run folder or its run.safetensors
    pred = run.predict(images)                          # labels, probabilities, glimpse locations
    run.evaluate(n=1000); run.visualize("glimpses.gif")
    batch = lgdram.generate("cmnist-60", 16, split="test")
    lgdram.gen_data("mcmnist-100", 1000, "train.h5")

`lgdram` is the public, stable import name; `lgdram_cli` is the implementation and may change.
Nothing here changes process-wide state: no allocator tuning, no thread count, and the
global random-number state and TF32 switches are restored after training.
Errors are `lgdram.plugin_api.UserError` (bad input) and `RunFailure` (a run that failed).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:  # the heavy imports happen when a function is called
    import torch

    from lgdram_cli.data.canvas import CanvasBatch
    from lgdram_cli.training.runs import LoadedRun

__all__ = ["Prediction", "Run", "gen_data", "generate", "load", "register", "train"]

#: `overrides`: {"model.hidden": 64, "dataset.digits": "mnist-mini"} or ["model.hidden=64", …]
Overrides = Union[Mapping[str, Any], Sequence[str], None]
CHECKPOINT = "run.safetensors"


def _sets(overrides: Overrides, prefix: str = "") -> list[str]:
    """`--set`-style strings from a mapping (values as JSON) or a list of 'key=value'."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{prefix}{k}={json.dumps(v)}" for k, v in overrides.items()]
    return [str(s) for s in overrides]


def _section(value: str | Mapping[str, Any] | None, section: str) -> tuple[str | None, list[str]]:
    """A `dataset=` or `model=` argument: a name, or a dict (its `type` picks the entry, the
    other keys set its parameters)."""
    if value is None or isinstance(value, str):
        return value, []
    if not isinstance(value, Mapping):
        from lgdram_cli.errors import UserError

        raise UserError(f"{section}= takes a name or a dict, not {type(value).__name__}")
    params = {k: v for k, v in value.items() if k != "type"}
    name = value.get("type")
    return (str(name) if name is not None else None), _sets(params, f"{section}.")


def _device(device: Any) -> torch.device:
    import torch

    from lgdram_cli.devices import resolve_device

    return device if isinstance(device, torch.device) else resolve_device(None if device is None else str(device))


def _checkpoint(path: str | Path) -> Path:
    """A run folder (→ its run.safetensors) or a checkpoint file."""
    from lgdram_cli.errors import UserError

    path = Path(path)
    if path.is_dir():
        if not (path / CHECKPOINT).is_file():
            raise UserError(f"{path} holds no run: there is no {CHECKPOINT} in it")
        return path / CHECKPOINT
    if not path.is_file():
        raise UserError(f"no run at {path}: give a run folder or its {CHECKPOINT}")
    return path


@contextlib.contextmanager
def _process_state_kept(device: torch.device) -> Iterator[None]:
    """Restore the global RNG state and the TF32 switches that training sets."""
    import torch

    cuda = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = cuda


# ---------------------------------------------------------------- plugins in this process


def register(kind: str, name: str, obj: Any = None) -> Any:
    """Use `obj` as the `kind` ("dataset", "model", "loss" or "logger") called `name` in this
    process — `lgdram.train(model={"type": name})`, `lgdram.generate(name, …)`, the conformance
    kit — validated like an installed plugin's entry point (bad ones raise `UserError`).

        lgdram.register("model", "conv-ram", ConvRAM)
        @lgdram.register("loss", "centre-pull")       # or as a decorator
        class CentrePull(Loss): ...

    A dataset may also be a plain generate function `(n, split, seed, device="cpu", start=0) ->
    CanvasBatch` (its `classes` attribute, default 10, gives the number of classes). Registering
    a name again replaces it (a notebook cell run twice); an installed plugin's name is refused.
    Returns `obj` (so the decorator leaves the class as it is). Subprocesses (`lgdram sweep`,
    torchrun) do not see in-process registrations: there, name the class as `module:Class`.
    """
    from lgdram_cli.registry import register as register_in

    return register_in(kind, name, obj)


# ---------------------------------------------------------------- training


def train(
    spec: str | Path | Mapping[str, Any] | None = None,
    *,
    out: str | Path,
    dataset: str | Mapping[str, Any] | None = None,
    model: str | Mapping[str, Any] | None = None,
    data: str | Path | None = None,
    annotations: str | float | int | None = None,
    overrides: Overrides = None,
    loggers: Sequence[str] | None = None,
    resume: bool = False,
    force: bool = False,
    device: Any = "auto",
    progress: bool = True,
    **fields: Any,
) -> Run:
    """Train (or, with `resume=True`, continue) a run and return it, like `lgdram train`.

    spec:        a spec file (TOML/JSON/YAML), a shipped recipe name, or a dict of the same
                 shape (`{"dataset": {...}, "model": {...}, "steps": 3000}`)
    out:         a folder (the run goes to `out/run.safetensors`) or a `.safetensors` path
    dataset:     a generator or preset name (`"cmnist-60"`) or a dict (`{"type": "cmnist", "canvas": 60}`)
    model:       a model name (`"dram"`) or a dict (`{"type": "ram", "glimpses": 4}`)
    annotations: `"1%"` or `0.01` (a share), `100` (a fixed pool), `0` (plain REINFORCE)
    overrides:   `{"model.hidden": 64, "optim.lr": 3e-4}`: what `--set` does
    loggers:     extra metrics loggers (`["csv", "tensorboard"]`); jsonl is always on
    progress:    a progress bar (plain lines when not in a terminal or notebook); False: silent
    fields:      any other top-level spec key: `steps`, `batch_size`, `mc`, `seed`,
                 `eval_every`, `eval_n`, `log_every`, `precision`, `test_data`, `optim`, `loss`, …
    """
    from lgdram_cli.training.assemble import train_spec
    from lgdram_cli.errors import UserError
    from lgdram_cli.training import checkpoint as ckpt
    from lgdram_cli.training.loop import train as run_training
    from lgdram_cli.training.runlog import Display, console_display

    path = Path(out)
    if path.suffix != ".safetensors":
        path = path / CHECKPOINT
    base: dict[str, Any] = ckpt.load_checkpoint(path).spec if resume else {}
    if not resume and path.exists() and not force:
        raise UserError(f"{path} already exists; pass resume=True to continue it or force=True to start over")
    spec_file = None
    if isinstance(spec, Mapping):
        base = {**base, **json.loads(json.dumps(dict(spec)))}
    elif spec is not None:
        spec_file = Path(spec)
    dataset_name, dataset_sets = _section(dataset, "dataset")
    model_name, model_sets = _section(model, "model")
    resolved = train_spec(
        resume_from=base or None, spec_file=spec_file, dataset=dataset_name, model=model_name,
        data=Path(data) if data is not None else None,
        annotations=None if annotations is None else str(annotations),
        sets=[*dataset_sets, *model_sets, *_sets(overrides)],
        loggers=list(loggers) if loggers else None, **fields,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    dev = _device(device)
    if progress:
        from rich.console import Console

        display = console_display(Console(stderr=True, highlight=False))
    else:
        display = Display()
    with _process_state_kept(dev):
        run_training(resolved, path, device=dev, resume=resume, display=display)
        return load(path, device=dev)


# ---------------------------------------------------------------- a trained run


@dataclass
class Prediction:
    """What a model says about a batch of B images (deterministic policy).

    labels:        int64 [B], the predicted class
    probabilities: float32 [B, classes]
    locations:     float32 [B, T, 2], each glimpse's (x, y) in [-1, 1] (None for whole-image models)
    locations_px:  float32 [B, T, 2], the same in pixels of the canvas: ((x + 1) W / 2, (y + 1) H / 2)
    """

    labels: torch.Tensor
    probabilities: torch.Tensor
    locations: torch.Tensor | None
    locations_px: torch.Tensor | None


class Run:
    """A trained run: its model (in eval mode), spec, step and metrics, with helpers."""

    def __init__(self, loaded: LoadedRun, device: torch.device) -> None:
        self._loaded = loaded
        self.device = device
        self.path: Path = Path(loaded.path)  #: the checkpoint file
        self.model = loaded.model
        self.spec: dict[str, Any] = loaded.spec
        self.step: int = loaded.step

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, model={self.spec.get('model', {}).get('type')!r}, step={self.step})"

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The records of run.metrics.jsonl, read now: `{"kind": "train" | "eval", "step": …, …}`."""
        from lgdram_cli.training.checkpoint import metrics_path

        path = metrics_path(self.path)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @property
    def last_eval(self) -> dict[str, Any]:
        """The evaluation stored in the checkpoint (accuracy, location error, …)."""
        return dict(self._loaded.metrics)

    def predict(self, images: Any, *, chunk: int = 500) -> Prediction:
        """Classify `images`: uint8 (0–255) or float (0–1) tensors or numpy arrays, [B, C, H, W]
        or [B, H, W] for one-channel models, of the canvas size the model was trained on."""
        import torch

        from lgdram_cli.errors import UserError
        from lgdram_cli.geometry import loc_to_px

        x = images if isinstance(images, torch.Tensor) else torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(1)
        channels, size = self.model.channels, tuple(self.model.size)
        if x.ndim != 4 or x.shape[1] != channels or tuple(x.shape[-2:]) != size:
            raise UserError(
                f"predict: images of shape {tuple(x.shape)}; this model takes [B, {channels}, {size[0]}, {size[1]}]"
                + (f" or [B, {size[0]}, {size[1]}]" if channels == 1 else "")
            )
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        probs, locs = [], []
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for lo in range(0, len(x), chunk):
                out = self.model(x[lo : lo + chunk].to(self.device), deterministic=True)
                probs.append(out.logits.float().softmax(-1).cpu())
                if out.locations is not None:
                    locs.append(out.locations.float().cpu())
        self.model.train(was_training)
        probabilities = torch.cat(probs) if probs else torch.zeros(0, self._loaded.generator.classes)
        locations = torch.cat(locs) if locs else None
        return Prediction(
            labels=probabilities.argmax(-1),
            probabilities=probabilities,
            locations=locations,
            locations_px=loc_to_px(locations, size) if locations is not None else None,
        )

    def test_set(self, n: int | None = None, *, dataset: str | None = None, data: str | Path | None = None,
                 seed: int | None = None, overrides: Overrides = None) -> CanvasBatch:
        """Held-out canvases: from the `data` HDF5 file, or generated from the test split (the
        run's own dataset, or `dataset` with `overrides` of its parameters)."""
        from lgdram_cli.training.runs import test_canvases

        return test_canvases(
            self._loaded, data=Path(data) if data is not None else None, dataset=dataset, n=n, seed=seed,
            sets=_sets(overrides) or None,
        )

    def evaluate(self, n: int | None = None, *, dataset: str | None = None, data: str | Path | None = None,
                 seed: int | None = None, mc: int = 0, overrides: Overrides = None) -> dict[str, Any]:
        """What `lgdram eval` reports: accuracy, error %, per-glimpse accuracy, location error in
        pixels, glimpses in the target box. `mc=K` averages K sampled trajectories."""
        from lgdram_cli.errors import UserError
        from lgdram_cli.training.evaluate import evaluate

        if mc < 0:
            raise UserError(f"mc={mc}: must be 0 (deterministic) or more")
        test = self.test_set(n, dataset=dataset, data=data, seed=seed, overrides=overrides)
        result = evaluate(self.model, test, self.device, mc=mc)
        return {**result, "checkpoint": str(self.path), "step": self.step}

    def visualize(self, path: str | Path, kind: str = "gif", *, n: int | None = None, seed: int = 0,
                  data: str | Path | None = None) -> Path:
        """Write a picture of the run: `gif` (one frame per glimpse), `png` (glimpses and the
        retina's patches) or `curves` (learning curves; needs matplotlib). Returns `path`."""
        from lgdram_cli.errors import unknown_name

        path = Path(path)
        if kind == "curves":
            from lgdram_cli.viz.curves import plot_curves

            plot_curves({self.path.name.removesuffix(".safetensors"): self.metrics}, path)
            return path
        if kind not in ("gif", "png"):
            raise unknown_name("picture kind", kind, ["curves", "gif", "png"])
        from lgdram_cli.viz.glimpses import glimpse_gif, glimpse_sheet

        batch = self.test_set(n or (16 if kind == "gif" else 4), data=data, seed=seed)
        if kind == "gif":
            glimpse_gif(self.model, batch, path)
        else:
            glimpse_sheet(self.model, batch, path)
        return path


def load(path: str | Path, *, device: Any = "cpu") -> Run:
    """A trained run from its folder or its checkpoint file (run.safetensors)."""
    from lgdram_cli.training.runs import load_run

    import torch

    dev = _device(device)
    with torch.random.fork_rng(devices=[]):  # building the model draws initial weights
        return Run(load_run(_checkpoint(path), dev), dev)


# ---------------------------------------------------------------- data


def _dataset_spec(dataset: str | Mapping[str, Any], overrides: Overrides) -> dict[str, Any]:
    from lgdram_cli.data.presets import resolve_dataset
    from lgdram_cli.specs import apply_overrides

    name, params = _section(dataset, "dataset")
    spec = resolve_dataset(name) if name is not None else {}
    sets = [s.removeprefix("dataset.") for s in [*params, *_sets(overrides)]]
    return apply_overrides(spec, sets)


def generate(
    dataset: str | Mapping[str, Any], n: int, split: str = "train", seed: int = 0, *,
    overrides: Overrides = None, device: Any = "cpu",
) -> CanvasBatch:
    """`n` canvases of a dataset (a generator or preset name, a recipe file, or a dict), in
    memory: a `CanvasBatch` with `images` uint8 [n, C, H, W], `labels`, `centers` (x, y in
    [-1, 1]), `boxes` (pixels) and `n_distractors`. `overrides` set the dataset's parameters:
    `{"canvas": 100, "digits": "mnist-mini"}`. Same arguments, same canvases."""
    from lgdram_cli.contract import generate_checked
    from lgdram_cli.data.presets import make_generator
    from lgdram_cli.errors import UserError

    if n < 1:
        raise UserError(f"n={n}: give a positive number of canvases")
    if split not in ("train", "test"):
        raise UserError(f"split={split!r}: use 'train' or 'test'")
    generator = make_generator(_dataset_spec(dataset, overrides))
    return generate_checked(generator, n, split, seed, _device(device))


def gen_data(
    dataset: str | Mapping[str, Any], n: int, out: str | Path, *, split: str = "train", seed: int = 0,
    annotations: str | float | int = 1.0, overrides: Overrides = None, force: bool = False, device: Any = "cpu",
) -> Path:
    """Write `n` canvases to an lgdram-canvas HDF5 file (what `lgdram gen-data` writes), atomically;
    `annotations` marks that share (`"1%"`, `0.01`) or count (`40`) of them as annotated."""
    from lgdram_cli.data.gen import GenDataSpec, generate_file
    from lgdram_cli.errors import UserError
    from lgdram_cli.specs import validate
    from lgdram_cli.training.spec import parse_annotations

    if n < 1:
        raise UserError(f"n={n}: give a positive number of samples")
    share, count = parse_annotations(str(annotations), "annotations")
    if count is not None:
        if count > n:
            raise UserError(f"annotations={count} is more than the {n} samples")
        share = count / n
    spec = validate(GenDataSpec, {
        "dataset": _dataset_spec(dataset, overrides), "n": n, "split": split, "seed": seed, "annotations": share,
    })
    generate_file(spec, Path(out), force=force, device=_device(device))
    return Path(out)
