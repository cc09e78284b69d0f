"""The training loop: hybrid REINFORCE + classification + location-guidance loss, with Adam.

One step: a batch of B images (generated or read), each replicated M times for the
Monte-Carlo policy-gradient estimate; forward with sampled glimpse locations; hybrid loss;
backward; global-norm clip; Adam step with an exponentially decaying learning rate.
Evaluation (deterministic policy) and checkpoints every `eval_every` steps; metrics as
JSON lines beside the checkpoint. Everything depends only on (spec, seed, step), so an
interrupted run resumed with `--resume` ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lgdram_cli.allocator import keep_freed_memory
from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.data.generators import DatasetGenerator
from lgdram_cli.data.h5io import CanvasFile
from lgdram_cli.data.presets import make_generator
from lgdram_cli.errors import RunFailure, UserError
from lgdram_cli.interrupts import StopFlag
from lgdram_cli.losses import HybridLoss, LossBatch, read_metrics
from lgdram_cli.models.base import Model, ModelOutput
from lgdram_cli.registry import MODELS
from lgdram_cli.specs import validate
from lgdram_cli.training import checkpoint as ckpt
from lgdram_cli.training import distributed
from lgdram_cli.training.evaluate import evaluate
from lgdram_cli.training.feed import FileFeed, OnTheFlyFeed, TrainBatch, check_file_matches
from lgdram_cli.training.precision import check_precision, mixed_precision
from lgdram_cli.training.spec import DEFAULT_LOSS, TrainSpec

THRESHOLDS = (0.5, 0.8, 0.9)


def probe(generator: DatasetGenerator, model: Model) -> ModelOutput:
    """Catch a plugin that breaks the tensor contract before training starts, naming it."""
    from lgdram_cli.testing import check_batch, check_output

    size = tuple(generator.size)
    sample = generator.generate(2, "train", 0)
    problem = check_batch(sample, 2, generator.channels, size, generator.classes)
    if problem:
        raise UserError(f"{getattr(generator, 'origin', 'the dataset')} returned a bad batch: {problem}")
    state = torch.get_rng_state()  # probing must not shift the training run's random stream
    with torch.no_grad():
        out = model(sample.images.float() / 255, replicas=2)
    torch.set_rng_state(state)
    problem = check_output(out, 4, generator.classes)
    if problem:
        raise UserError(f"{getattr(model, 'origin', 'the model')}: {problem}")
    return out


def build_model(
    model_spec: dict[str, Any], channels: int, size: tuple[int, int], classes: int, where: str = "model"
) -> Model:
    """Two-stage: `type` picks the registry entry, its Config validates the parameters."""
    if "type" not in model_spec:
        raise UserError("the model spec needs a 'type' (e.g. ram or dram)")
    entry = MODELS.entry(str(model_spec["type"]))
    cls = entry.load()
    model = cls(validate(cls.Config, model_spec, where=where), channels=channels, size=size, classes=classes)
    model.origin = f"model '{entry.name}' from '{entry.origin}'"  # for error messages
    return model


@dataclass
class Setup:
    """The parts a spec describes, validated and built."""

    spec: TrainSpec
    generator: DatasetGenerator
    model: Model
    loss: HybridLoss
    channels: int
    size: tuple[int, int]
    classes: int

    def resolved(self) -> dict[str, Any]:
        """The fully resolved spec (every default filled in) stored with every output."""
        out = self.spec.model_dump(mode="json")
        out["dataset"] = self.generator.resolved_config()
        out["model"] = self.model.config.model_dump(mode="json")
        out["loss"] = {name: term.config.model_dump(mode="json") for name, term in self.loss.terms.items()}
        return out

    def gamma(self, step: int) -> float | None:
        """The location-guidance weight at `step` (None without a location term)."""
        term = self.loss.terms.get("location")
        return term.gamma(step) if term is not None and hasattr(term, "gamma") else None


def build(spec: TrainSpec) -> Setup:
    generator = make_generator(spec.dataset)
    channels, size, classes = generator.channels, tuple(generator.size), generator.classes
    model = build_model(spec.model, channels, size, classes)
    out = probe(generator, model)
    if out.log_probs is None and spec.loss == DEFAULT_LOSS:
        # a whole-image classifier takes no glimpses: the default hybrid loss reduces to its
        # classification term (asking for a policy term explicitly is an error, below)
        spec = spec.model_copy(update={"loss": {"classification": {}}})
    loss = HybridLoss(spec.loss)
    rows = out.logits.shape[0]
    loss(out, LossBatch(labels=torch.zeros(rows, dtype=torch.long), centers=torch.zeros(rows, 2),
                        annotated=torch.ones(rows, dtype=torch.bool), replicas=2,
                        boxes=torch.tensor([[0.0, 0.0, size[1], size[0]]]).repeat(rows, 1), size=size), 0)
    if spec.mc < 2 and "rloo" in loss.terms:
        raise UserError("the 'rloo' loss needs --mc 2 or more: its baseline is the other replicas' mean reward")
    return Setup(spec, generator, model, loss, channels, size, classes)


def load_test_set(setup: Setup) -> CanvasBatch:
    spec = setup.spec
    if spec.test_data:
        file = CanvasFile(spec.test_data)
        check_file_matches(file, setup.channels, setup.size, "the model")
        data, _ = file.read(slice(0, min(spec.eval_n, file.n)))
        return data
    return setup.generator.generate(spec.eval_n, "test", spec.eval_seed)


def train_step(
    net: torch.nn.Module, loss: HybridLoss, optimizer: torch.optim.Optimizer, batch: TrainBatch,
    step: int, replicas: int, clip: float, precision: str = "fp32",
) -> dict[str, float]:
    """One update: forward with sampled glimpses, hybrid loss, backward, clip, Adam step.

    Raises FloatingPointError (before touching the weights) when the loss or the gradient is
    not finite. The step's metrics are read from the device once, after the backward pass has
    been queued: on a GPU a read is a synchronisation, and one per metric stalled the queue.
    """
    with mixed_precision(precision, batch.images.device):
        output = net(batch.images, replicas=replicas)
    target = LossBatch(
        labels=batch.labels.repeat_interleave(replicas),
        centers=batch.centers.repeat_interleave(replicas, dim=0),
        annotated=batch.annotated.repeat_interleave(replicas),
        replicas=replicas,
        boxes=batch.boxes.repeat_interleave(replicas, dim=0),
        size=(batch.images.shape[-2], batch.images.shape[-1]),
    )
    total, unread = loss.unread(output, target, step)
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    unread["grad_norm"] = clip_gradients(list(net.parameters()), clip)
    unread["train_accuracy"] = (output.logits.detach().argmax(-1) == target.labels).float().mean()
    terms = read_metrics(unread)
    # under DDP every process sees the same (averaged) gradient, so all stop together
    for name in ("loss/total", "grad_norm"):
        if not math.isfinite(terms[name]):
            raise FloatingPointError(f"the {'loss' if name == 'loss/total' else 'gradient norm'} is {terms[name]}")
    optimizer.step()
    return terms


def clip_gradients(params: list[torch.nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global-norm clipping, as `torch.nn.utils.clip_grad_norm_`; returns the norm before clipping.
    On the CPU the multiply by a coefficient of exactly 1.0 (the norm within bounds, most steps)
    is skipped: bitwise the same gradients, one pass over all of them less. On a GPU that check
    would cost a synchronisation."""
    total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if total.device.type == "cpu" and float(max_norm / (total + 1e-6)) >= 1.0:
        return total
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, fused into one kernel per step (one pass over every parameter, not one call per tensor)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def learning_rate(spec: TrainSpec, step: int) -> float:
    o = spec.optim
    return max(o.lr_min, o.lr * o.lr_decay ** (step // o.decay_every))


def describe_device(device: torch.device) -> str:
    """'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu, 1 thread(s)': what the start-up log names."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{device}, {torch.get_num_threads()} thread(s)"


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    if "cpu" in state:
        torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class MetricsLog:
    """Appends JSON lines to run.metrics.jsonl and tracks steps-to-accuracy thresholds."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool) -> None:
        self.path, self.enabled = path, enabled
        self.reached: dict[str, int] = {}
        self._mode = "w"  # a new run replaces an old file at its first line, not before
        if enabled and resume_step is not None and path.exists():
            # keep what the checkpoint has seen; lines past it (a run killed after its last
            # checkpoint) would be written again by the resumed run
            kept = [r for r in map(json.loads, path.read_text().splitlines()) if r.get("step", 0) <= resume_step]
            for record in kept:
                self.reached.update(record.get("steps_to", {}))
            path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self._mode = "a"

    def eval(self, step: int, metrics: dict[str, Any]) -> None:
        for t in THRESHOLDS:
            key = f"{round(t * 100)}%"
            if key not in self.reached and metrics["accuracy"] >= t:
                self.reached[key] = step
        metrics["steps_to"] = dict(self.reached)
        self.write({"kind": "eval", "step": step, **metrics})

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open(self._mode) as f:
                f.write(json.dumps(record) + "\n")
            self._mode = "a"


def train(
    spec: TrainSpec,
    out: Path,
    *,
    device: torch.device,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Any = None,
) -> dict[str, Any]:
    """Run (or continue) a training run; return the final evaluation metrics."""
    keep_freed_memory()
    world, device = distributed.setup(device)
    try:
        return _train(spec, out, device, world, resume, log, progress)
    finally:
        # Free the DDP wrapper (and the communication work it holds) while the process group
        # is alive: gloo aborts the process if that happens at interpreter exit instead.
        gc.collect()
        distributed.teardown(world)


def _train(
    spec: TrainSpec, out: Path, device: torch.device, world: distributed.World, resume: bool,
    log: Callable[[str], None], progress: Any,
) -> dict[str, Any]:
    torch.manual_seed(spec.seed * 1000 + world.rank)
    check_precision(spec.precision, device)
    setup = build(spec)
    model = setup.model.to(device)
    optimizer = make_optimizer(model, spec.optim.lr)
    start = 0
    if resume:
        previous = ckpt.load_checkpoint(out)
        _check_resumable(previous.spec, setup, out)
        ckpt.load_weights(model, previous)
        rng = ckpt.load_training_state(ckpt.optim_path(out), optimizer, previous.step)
        _set_rng_state(rng, device)
        start = previous.step
        if spec.steps < start:
            raise UserError(f"--resume: {out} is already at step {start}; ask for --steps {start} or more")
        log(f"resuming {out} at step {start}")
    if spec.data:
        file = CanvasFile(spec.data)
        check_file_matches(file, setup.channels, setup.size, "the model")
        feed: OnTheFlyFeed | FileFeed = FileFeed(
            file, spec.seed, spec.annotations, spec.batch_size, pool=spec.annotation_pool
        )
    else:
        feed = OnTheFlyFeed(
            setup.generator, spec.seed, spec.annotations, spec.batch_size, world.size,
            pool=spec.annotation_pool, device=device,
        )
    test_set = load_test_set(setup) if world.is_main else None
    resolved = setup.resolved()
    if world.is_main:
        log("spec: " + json.dumps(resolved, sort_keys=True))
        where = f"device: {describe_device(device)}"
        if world.enabled:
            where += f"; distributed: {world.size} process(es), backend {distributed.backend()}"
        log(where)
    net = distributed.wrap(model, world, device)
    metrics_log = MetricsLog(ckpt.metrics_path(out), start if resume else None, world.is_main)
    last_eval: dict[str, Any] = {}
    M = spec.mc

    def checkpoint(step: int) -> None:
        if world.is_main:
            ckpt.save_checkpoint(out, model, resolved, step, last_eval)
            ckpt.save_training_state(ckpt.optim_path(out), optimizer, step, _rng_state(device))

    def run_eval(step: int) -> None:
        nonlocal last_eval
        if not world.is_main:
            return
        last_eval = {"step": step, **evaluate(model, test_set, device)}
        last_eval["gamma"] = setup.gamma(step)
        metrics_log.eval(step, last_eval)
        loc = last_eval.get("location_error_px")
        log(
            f"step {step}: test accuracy {last_eval['accuracy']:.3f}"
            + (f", location error {loc:.1f} px" if loc is not None else "")
        )

    task = progress.add_task("train", total=spec.steps, completed=start) if progress else None
    window: dict[str, float] = {}
    window_steps, t_window = 0, time.perf_counter()
    with StopFlag() as stop:
        for step in range(start, spec.steps):
            lr = learning_rate(spec, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = feed.batch(step, world.rank, device)
            try:
                terms = train_step(net, setup.loss, optimizer, batch, step, M, spec.optim.clip, spec.precision)
            except FloatingPointError as exc:
                raise RunFailure(
                    f"training diverged at step {step}: {exc}; the last good checkpoint {out} is kept "
                    "(lower optim.lr or optim.clip, then resume or restart)"
                ) from exc
            for k, v in terms.items():
                window[k] = window.get(k, 0.0) + float(v)
            window_steps += 1
            done = step + 1
            if done % spec.log_every == 0 or done == spec.steps:
                elapsed = time.perf_counter() - t_window
                record = {k: v / window_steps for k, v in window.items()}
                record = {k: distributed.mean(v, world, device) for k, v in sorted(record.items())}
                record.update(
                    kind="train", step=done, lr=lr, gamma=setup.gamma(step),
                    images_per_s=window_steps * spec.batch_size * M * world.size / elapsed,
                )
                metrics_log.write(record)
                window, window_steps, t_window = {}, 0, time.perf_counter()
            if (spec.eval_every and done % spec.eval_every == 0) or done == spec.steps:
                run_eval(done)
                checkpoint(done)
            elif spec.checkpoint_every and done % spec.checkpoint_every == 0:
                checkpoint(done)
            if task is not None:
                progress.update(task, completed=done)
            if stop.requested:
                if world.is_main:
                    checkpoint(done)
                    log(f"interrupted: saved {out} at step {done}; continue with --resume")
                raise KeyboardInterrupt
    if spec.steps == start:  # nothing to train (--steps 0, or resuming a finished run): still report
        run_eval(start)
        if not resume:
            checkpoint(start)
    if not world.is_main:
        return {}
    return {**last_eval, "steps_to": dict(metrics_log.reached)}


def _check_resumable(previous: dict[str, Any], setup: Setup, out: Path) -> None:
    now = setup.resolved()
    fixed = ("model", "loss", "optim", "batch_size", "mc", "seed", "annotations", "annotation_pool", "data", "precision")
    # a key the checkpoint predates (e.g. `precision`) counts as its default
    defaults = {k: TrainSpec.model_fields[k].default for k in fixed if k in TrainSpec.model_fields}
    changed = [k for k in fixed if previous.get(k, defaults.get(k)) != now.get(k)]
    if previous.get("dataset") != now["dataset"]:  # includes the digit source actually used
        changed.append("dataset")
    if changed:
        raise UserError(
            f"--resume: {out} was trained with a different {', '.join(changed)}; "
            "resume with the same spec (only steps and evaluation settings may change)"
        )
