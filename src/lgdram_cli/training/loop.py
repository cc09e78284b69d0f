"""The training loop: hybrid REINFORCE + classification + location-guidance loss, with Adam.

One step: a batch of B images (generated or read), each replicated M times for the
Monte-Carlo policy-gradient estimate; forward with sampled glimpse locations; hybrid loss;
backward; global-norm clip; Adam step with an exponentially decaying learning rate.
Evaluation (deterministic policy) and checkpoints every `eval_every` steps; metrics go to
the run's loggers and the display through one `RunLog` (training/runlog.py). Everything
depends only on (spec, seed, step), so an interrupted run resumed with `--resume` ends with
the same weights as an uninterrupted one.

No process-wide side effects beyond the run's own seed: the CLI, not this module, tunes the
allocator (`keep_freed_memory`) and the thread count.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lgdram_cli.contract import generate_checked, probe
from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.data.generators import DatasetGenerator
from lgdram_cli.data.h5io import CanvasFile
from lgdram_cli.data.presets import make_generator
from lgdram_cli.errors import RunFailure, UserError
from lgdram_cli.interrupts import StopFlag
from lgdram_cli.losses import HybridLoss, LossBatch, read_metrics
from lgdram_cli.models.base import Model
from lgdram_cli.models.build import build_model  # build_model: also re-exported (lgdram 0.1's place)
from lgdram_cli.training import checkpoint as ckpt
from lgdram_cli.training import distributed
from lgdram_cli.training.evaluate import evaluate
from lgdram_cli.training.feed import FileFeed, OnTheFlyFeed, TrainBatch, check_file_matches
from lgdram_cli.training.loggers import resolve as resolve_loggers
from lgdram_cli.training.precision import RESUME_ELSEWHERE, check_precision, mixed_precision
from lgdram_cli.training.runlog import THRESHOLDS, MetricsLog  # noqa: F401 (the names of lgdram 0.1)
from lgdram_cli.training.runlog import Display, RunLog, make_display, spec_path, summary, write_spec
from lgdram_cli.training.spec import DEFAULT_LOSS, TrainSpec, spec_diff


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
        if out.get("loggers") == ["jsonl"]:
            # the default is left out: a default run's spec stays the spec of checkpoints that
            # predate loggers (sweeps and --resume compare specs)
            del out["loggers"]
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
    return generate_checked(setup.generator, spec.eval_n, "test", spec.eval_seed)


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


def train(
    spec: TrainSpec,
    out: Path,
    *,
    device: torch.device,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: Any = None,
    display: Display | None = None,
) -> dict[str, Any]:
    """Run (or continue) a training run; return the final evaluation metrics (empty on the
    processes of a distributed run other than the main one).

    `display` shows progress and messages. Without one, messages go to `log`, and progress to
    `progress` (a Rich `Progress`) when it is given and enabled, else as a plain line through
    `log` every `log_every` steps.
    """
    world, device = distributed.setup(device)
    try:
        return _train(spec, out, device, world, resume, display or make_display(log, progress))
    finally:
        # Free the DDP wrapper (and the communication work it holds) while the process group
        # is alive: gloo aborts the process if that happens at interpreter exit instead.
        gc.collect()
        distributed.teardown(world)


def _train(
    spec: TrainSpec, out: Path, device: torch.device, world: distributed.World, resume: bool, display: Display,
) -> dict[str, Any]:
    torch.manual_seed(spec.seed * 1000 + world.rank)
    if resume:
        check_precision(spec.precision, device, fix=RESUME_ELSEWHERE)
    else:
        check_precision(spec.precision, device)
    loggers = resolve_loggers(spec.loggers)  # an unknown or uninstalled logger fails before any output
    setup = build(spec)
    model = setup.model.to(device)
    optimizer = make_optimizer(model, spec.optim.lr)
    start = _restore(out, setup, model, optimizer, device) if resume else 0
    run_log = RunLog(
        out, spec, setup.resolved(), loggers=loggers, resume_step=start if resume else None,
        world=world, device=device, display=display,
    )
    if resume:
        run_log.message(f"resuming {out} at step {start}")
    run = _Run(
        spec, setup, out, world, device, model, optimizer, make_feed(spec, setup, world, device),
        load_test_set(setup) if world.is_main else None, run_log,
    )
    try:
        run.announce(list(loggers))
        run_log.open()
        run.loop(start)
        if spec.steps == start:  # nothing to train (--steps 0, or resuming a finished run): still report
            run.evaluate(start)
            if not resume:
                run.checkpoint(start)
    except BaseException:
        run.forget_spec_file(resume)
        raise
    finally:
        run_log.close()
    if not world.is_main:
        return {}
    return {**run.last_eval, "steps_to": dict(run_log.thresholds.reached)}


def _restore(out: Path, setup: Setup, model: Model, optimizer: torch.optim.Optimizer, device: torch.device) -> int:
    """Load a checkpoint's weights, optimizer and RNG state for `--resume`; its step."""
    previous, rng = ckpt.load_state(out, model, optimizer, check=lambda c: _check_resumable(c.spec, setup, out))
    _set_rng_state(rng, device)
    if setup.spec.steps < previous.step:
        raise UserError(f"--resume: {out} is already at step {previous.step}; ask for --steps {previous.step} or more")
    return previous.step


def make_feed(spec: TrainSpec, setup: Setup, world: distributed.World, device: torch.device) -> OnTheFlyFeed | FileFeed:
    """Training batches: read from `spec.data`, or generated on the fly."""
    if spec.data:
        file = CanvasFile(spec.data)
        check_file_matches(file, setup.channels, setup.size, "the model")
        return FileFeed(file, spec.seed, spec.annotations, spec.batch_size, pool=spec.annotation_pool)
    return OnTheFlyFeed(
        setup.generator, spec.seed, spec.annotations, spec.batch_size, world.size,
        pool=spec.annotation_pool, device=device,
    )


@dataclass
class _Run:
    """A training run between its set-up and its end: the loop and what it does at each step."""

    spec: TrainSpec
    setup: Setup
    out: Path
    world: distributed.World
    device: torch.device
    model: Model
    optimizer: torch.optim.Optimizer
    feed: OnTheFlyFeed | FileFeed
    test_set: CanvasBatch | None
    log: RunLog
    last_eval: dict[str, Any] = field(default_factory=dict)
    saved: bool = False  # a checkpoint was written by this run
    net: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        self.net = distributed.wrap(self.model, self.world, self.device)

    def announce(self, loggers: list[str]) -> None:
        """Write run.spec.json beside the checkpoint and show the spec in a few lines."""
        if not self.world.is_main:
            return
        where = describe_device(self.device)
        if self.world.enabled:
            where += f"; distributed: {self.world.size} process(es), backend {distributed.backend()}"
        path = write_spec(self.out, self.log.resolved)
        for line in summary(self.log.resolved, self.model, where, path, loggers):
            self.log.message(line)

    def forget_spec_file(self, resume: bool) -> None:
        """A new run that stops before its first checkpoint leaves no spec file behind."""
        if self.world.is_main and not resume and not self.saved and not self.out.exists():
            spec_path(self.out).unlink(missing_ok=True)

    def loop(self, start: int) -> None:
        spec = self.spec
        self.log.begin(start)
        with StopFlag() as stop:
            for step in range(start, spec.steps):
                self.train_step(step)
                done = step + 1
                if (spec.eval_every and done % spec.eval_every == 0) or done == spec.steps:
                    self.evaluate(done)
                    self.checkpoint(done)
                elif spec.checkpoint_every and done % spec.checkpoint_every == 0:
                    self.checkpoint(done)
                if stop.requested:
                    self.checkpoint(done)
                    self.log.message(f"interrupted: saved {self.out} at step {done}; continue with --resume")
                    raise KeyboardInterrupt

    def train_step(self, step: int) -> None:
        spec = self.spec
        lr = learning_rate(spec, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = self.feed.batch(step, self.world.rank, self.device)
        try:
            terms = train_step(self.net, self.setup.loss, self.optimizer, batch, step, spec.mc, spec.optim.clip, spec.precision)
        except FloatingPointError as exc:
            raise RunFailure(f"training diverged at step {step}: {exc}; {ckpt.divergence_note(self.out, self.optimizer)}") from exc
        self.log.step(step, terms, lr, self.setup.gamma(step))

    def evaluate(self, step: int) -> None:
        if not self.world.is_main:
            return
        self.last_eval = {"step": step, **evaluate(self.model, self.test_set, self.device)}
        self.last_eval["gamma"] = self.setup.gamma(step)
        self.log.eval(step, self.last_eval)  # adds steps_to

    def checkpoint(self, step: int) -> None:
        if self.world.is_main:
            ckpt.save_state(self.out, self.model, self.optimizer, self.log.resolved, step, self.last_eval, _rng_state(self.device))
            self.saved = True


def _check_resumable(previous: dict[str, Any], setup: Setup, out: Path) -> None:
    fixed = ("model", "loss", "optim", "batch_size", "mc", "seed", "annotations", "annotation_pool", "data",
             "precision", "dataset")  # dataset includes the digit source actually used
    differ = {key.split(".")[0] for key in spec_diff(previous, setup.resolved())}
    changed = [k for k in fixed if k in differ]
    if changed:
        raise UserError(
            f"--resume: {out} was trained with a different {', '.join(changed)}; "
            "resume with the same spec (only steps and evaluation settings may change)"
        )
