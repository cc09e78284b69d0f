"""What a training run reports, from one object: `RunLog`.

The loop hands it each step's metrics and each evaluation; it averages the training metrics
over `log_every` steps (across processes under DDP), tracks the steps to 50/80/90 % test
accuracy, sends every record to the metrics loggers (`training/loggers.py`) and keeps the
user informed through a `Display`: a live Rich progress bar on a terminal, or a plain line
every `log_every` steps where there is none (a log file, CI, a sweep's child).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lgdram_cli.errors import UserError
from lgdram_cli.training import distributed
from lgdram_cli.training.checkpoint import sibling
from lgdram_cli.training.loggers import JsonlLogger, Logger, missing_package

THRESHOLDS = (0.5, 0.8, 0.9)


def spec_path(out: Path) -> Path:
    """run.safetensors → run.spec.json: the whole resolved spec, beside the checkpoint."""
    return sibling(out, ".spec.json")


def write_spec(out: Path, resolved: dict[str, Any]) -> Path:
    from lgdram_cli.atomic import atomic_path

    path = spec_path(out)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
    return path


class Thresholds:
    """The first evaluated step at which test accuracy reached 50 %, 80 % and 90 %."""

    def __init__(self, records: Iterable[dict[str, Any]] = ()) -> None:
        self.reached: dict[str, int] = {}
        for record in records:  # a resumed run remembers what its checkpoint's past reached
            self.reached.update(record.get("steps_to", {}))

    def update(self, step: int, accuracy: float) -> dict[str, int]:
        for t in THRESHOLDS:
            key = f"{round(t * 100)}%"
            if key not in self.reached and accuracy >= t:
                self.reached[key] = step
        return dict(self.reached)


class MetricsLog:
    """run.metrics.jsonl with steps-to-accuracy thresholds: the `jsonl` logger and `Thresholds`
    (the interface of lgdram 0.1's training loop, kept for callers of it)."""

    def __init__(self, path: Path, resume_step: int | None, enabled: bool) -> None:
        self.enabled = enabled
        self.jsonl = JsonlLogger()
        if enabled:
            self.jsonl.open_path(path, resume_step)
        self.thresholds = Thresholds(self.jsonl.kept)
        self.reached = self.thresholds.reached

    def eval(self, step: int, metrics: dict[str, Any]) -> None:
        metrics["steps_to"] = self.thresholds.update(step, metrics["accuracy"])
        self.write({"kind": "eval", "step": step, **metrics})

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.jsonl.log(record)


# ---------------------------------------------------------------- what the user sees


@dataclass
class Pace:
    """Where the run stands: steps done of total, wall time, rate and the time left."""

    done: int
    total: int
    elapsed: float
    rate: float  # steps/s since this process started training

    @property
    def eta(self) -> float | None:
        return (self.total - self.done) / self.rate if self.rate > 0 else None


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def stats_text(stats: dict[str, Any]) -> str:
    """'loss 2.301  reward 0.120  train acc 0.110  γ 1.000  lr 1.0e-03' from a train record."""
    parts = []
    if "loss/total" in stats:
        parts.append(f"loss {stats['loss/total']:.3f}")
    reward = next((v for k, v in sorted(stats.items()) if k.endswith("/reward")), None)
    if reward is not None:
        parts.append(f"reward {reward:.3f}")
    if "train_accuracy" in stats:
        parts.append(f"train acc {stats['train_accuracy']:.3f}")
    if stats.get("gamma") is not None:
        parts.append(f"γ {stats['gamma']:.3g}")
    if stats.get("lr") is not None:
        parts.append(f"lr {stats['lr']:.2e}")
    return "  ".join(parts)


def pace_text(pace: Pace) -> str:
    width = len(str(pace.total))
    return (
        f"step {pace.done:>{width}}/{pace.total}  {pace.rate:.1f} steps/s  "
        f"elapsed {duration(pace.elapsed)}  ETA {duration(pace.eta)}"
    )


EVAL_HEADER = "eval   step  test acc  loc error   in box"


def eval_row(record: dict[str, Any]) -> str:
    """'eval     50    21.3 %    12.3 px  41.0 %': step, test accuracy, location error, glimpses in box."""
    loc = record.get("location_error_px")
    box = record.get("glimpses_in_box")
    return (
        f"eval {record['step']:>6}  {100 * record['accuracy']:6.1f} %  "
        + (f"{loc:6.1f} px" if loc is not None else "     - px")
        + "  "
        + (f"{100 * box:5.1f} %" if box is not None else "    - %")
    )


class Display:
    """How a run shows itself to the user; this base shows nothing (other processes under DDP)."""

    def message(self, text: str) -> None: ...

    def begin(self, start: int, total: int) -> None: ...

    def advance(self, pace: Pace, stats: dict[str, Any]) -> None:
        """After every step: the running means of the current window."""

    def train(self, pace: Pace, record: dict[str, Any]) -> None:
        """Every `log_every` steps: the train record just written."""

    def eval(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class LineDisplay(Display):
    """Plain lines (no terminal): one per `log_every` steps, a table row per evaluation."""

    def __init__(self, write: Callable[[str], None] = print) -> None:
        self.write = write
        self._header = False

    def message(self, text: str) -> None:
        self.write(text)

    def train(self, pace: Pace, record: dict[str, Any]) -> None:
        self.write(f"{pace_text(pace)}  {stats_text(record)}")

    def eval(self, record: dict[str, Any]) -> None:
        if not self._header:
            self.write(EVAL_HEADER)
            self._header = True
        self.write(eval_row(record))


class ProgressDisplay(LineDisplay):
    """A live Rich progress bar: step of steps and ETA (the bar's columns), then steps/s,
    elapsed time and the running loss, reward, train accuracy, γ and lr (its description);
    messages and evaluation rows are printed above it through `write`."""

    def __init__(self, progress: Any, write: Callable[[str], None]) -> None:
        super().__init__(write)
        self.progress = progress
        self.task: Any = None
        self._started_here = False

    def begin(self, start: int, total: int) -> None:
        self.task = self.progress.add_task(f"step {start}", total=total, completed=start)
        if not self.progress.live.is_started:
            self.progress.start()
            self._started_here = True

    def advance(self, pace: Pace, stats: dict[str, Any]) -> None:
        if self.task is not None:
            text = f"{pace.rate:.1f} steps/s  elapsed {duration(pace.elapsed)}  {stats_text(stats)}"
            self.progress.update(self.task, completed=pace.done, description=text)

    def train(self, pace: Pace, record: dict[str, Any]) -> None:
        pass  # the bar shows it

    def close(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        if self._started_here:
            self.progress.stop()
            self._started_here = False


def make_display(log: Callable[[str], None] = print, progress: Any = None) -> Display:
    """Messages through `log`; progress on `progress` (a Rich Progress) when it is enabled,
    else as plain lines through `log`."""
    if progress is not None and not getattr(progress, "disable", True):
        return ProgressDisplay(progress, log)
    return LineDisplay(log)


def console_display(console: Any) -> Display:
    """A progress bar on `console` when it is a terminal (or Jupyter), plain lines elsewhere."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    def write(message: str) -> None:
        console.print(message, markup=False, highlight=False, soft_wrap=True)

    if not (console.is_terminal or getattr(console, "is_jupyter", False)):
        return LineDisplay(write)
    progress = Progress(
        TextColumn("step"), MofNCompleteColumn(), BarColumn(bar_width=20), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("{task.description}"), console=console, transient=True,
    )
    return ProgressDisplay(progress, write)


# ---------------------------------------------------------------- the start-up summary


def _share(x: float) -> str:
    return f"{100 * x:g}%"


def summary(resolved: dict[str, Any], model: torch.nn.Module, device: str, spec_file: Path, loggers: list[str]) -> list[str]:
    """The resolved spec in a few readable lines (the whole of it is in `spec_file`)."""
    ds, m = resolved.get("dataset", {}), resolved.get("model", {})
    data = f"; trained on {resolved['data']}" if resolved.get("data") else ", generated on the fly"
    if resolved.get("test_data"):
        data += f"; tested on {resolved['test_data']}"
    parts = [str(ds.get("type", "?"))]
    if isinstance(ds.get("canvas"), list):
        parts[0] += " " + "×".join(map(str, ds["canvas"]))
    lo_hi = ds.get("distractors")
    if isinstance(lo_hi, list) and any(lo_hi):
        parts.append(f"{lo_hi[0] if lo_hi[0] == lo_hi[1] else f'{lo_hi[0]}-{lo_hi[1]}'} distractors")
    if ds.get("colour"):
        parts.append("colour")
    if ds.get("digits"):
        parts.append(f"digits {ds['digits']}" + (f" (test: {ds['test_digits']})" if ds.get("test_digits") else ""))
    arch = []
    if "glimpses" in m:
        arch.append(f"{m['glimpses']} glimpses" + (f" of {m['glimpse_size']} px" if "glimpse_size" in m else "")
                    + (f" × {m['scales']} scales" if "scales" in m else ""))
    for key, text in (("core", "{} core"), ("hidden", "hidden {}"), ("width", "width {}")):
        if key in m:
            arch.append(text.format(m[key]))
    params = sum(p.numel() for p in model.parameters())
    loss_terms = []
    for name, cfg in resolved.get("loss", {}).items():
        weight = cfg.get("weight", 1.0)
        term = name if weight == 1 else f"{weight:g}×{name}"
        if name == "location" and "gamma_start" in cfg:
            term += f" (γ {cfg['gamma_start']:g}, ×{cfg.get('decay', 1):g} every {cfg.get('decay_every', '?')} steps)"
        loss_terms.append(term)
    if resolved.get("annotation_pool"):
        annotations = f"a fixed pool of {resolved['annotation_pool']} annotated canvases"
    elif resolved.get("annotations"):
        annotations = f"{_share(resolved['annotations'])} of the training images"
    else:
        annotations = "none (plain REINFORCE)"
    o = resolved.get("optim", {})
    every = resolved.get("eval_every")
    return [
        f"spec: {spec_file} (the whole resolved spec)",
        f"  dataset: {', '.join(parts)}{data}",
        f"  model: {m.get('type', '?')}" + (f" ({', '.join(arch)})" if arch else "") + f", {params:,} parameters",
        f"  loss: {' + '.join(loss_terms)}",
        f"  annotations: {annotations}",
        f"  steps: {resolved.get('steps')} × batch {resolved.get('batch_size')} × mc {resolved.get('mc')}, "
        f"lr {o.get('lr', 0):g}; eval {'every ' + str(every) + ' steps' if every else 'at the end'} "
        f"on {resolved.get('eval_n')} canvases",
        f"  precision: {resolved.get('precision', 'fp32')}; loggers: {', '.join(loggers)}",
        f"  device: {device}",
    ]


# ---------------------------------------------------------------- the run's records


class RunLog:
    """Collects a run's metrics and sends them to the loggers and the display.

    Created on every process (the window averages are reduced across processes), it writes and
    shows only on the main one. Use as: `open()`, `begin(start)`, then `step(...)` after every
    training step and `eval(...)` after every evaluation, and `close()` in a `finally`.
    """

    def __init__(
        self, out: Path, spec: Any, resolved: dict[str, Any], *, loggers: dict[str, type[Logger]],
        resume_step: int | None, world: distributed.World, device: torch.device, display: Display,
    ) -> None:
        self.out, self.spec, self.resolved = Path(out), spec, resolved
        self.logger_classes = loggers
        self.resume_step, self.world, self.device = resume_step, world, device
        self.main = world.is_main
        self.display = display if self.main else Display()
        self.loggers: list[Logger] = []
        self.thresholds = Thresholds()
        self._window: dict[str, float] = {}
        self._window_steps = 0
        self._t_window = self._t_start = time.perf_counter()
        self._start = 0

    def open(self) -> None:
        """Open every logger (main process): resumed runs drop records past the checkpoint."""
        if not self.main:
            return
        for name, cls in self.logger_classes.items():
            logger = cls()
            logger.run_name = self.out.name.removesuffix(".safetensors")
            try:
                logger.open(self.out.parent, self.resolved, self.resume_step)
            except ImportError as exc:
                package = (cls.requires or (str(exc.name or "?").split(".")[0],))[0]
                raise UserError(missing_package(name, package)) from exc
            self.loggers.append(logger)
            if isinstance(logger, JsonlLogger):
                self.thresholds = Thresholds(logger.kept)

    def message(self, text: str) -> None:
        if self.main:
            self.display.message(text)

    def begin(self, start: int) -> None:
        self._start = start
        self._t_window = self._t_start = time.perf_counter()
        if self.main:
            self.display.begin(start, self.spec.steps)

    def pace(self, done: int) -> Pace:
        elapsed = time.perf_counter() - self._t_start
        return Pace(done, self.spec.steps, elapsed, (done - self._start) / elapsed if elapsed > 0 else 0.0)

    def step(self, step: int, terms: dict[str, float], lr: float, gamma: float | None) -> None:
        """After training step `step` (0-based): accumulate; every `log_every` steps (and at the
        last) write the window's means as a train record."""
        for k, v in terms.items():
            self._window[k] = self._window.get(k, 0.0) + float(v)
        self._window_steps += 1
        done = step + 1
        if self.main:
            running = {k: v / self._window_steps for k, v in self._window.items()}
            self.display.advance(self.pace(done), {**running, "lr": lr, "gamma": gamma})
        if done % self.spec.log_every == 0 or done == self.spec.steps:
            self._write_window(done, lr, gamma)

    def _write_window(self, done: int, lr: float, gamma: float | None) -> None:
        elapsed = time.perf_counter() - self._t_window
        record = {k: v / self._window_steps for k, v in self._window.items()}
        record = {k: distributed.mean(v, self.world, self.device) for k, v in sorted(record.items())}
        record.update(
            kind="train", step=done, lr=lr, gamma=gamma,
            images_per_s=self._window_steps * self.spec.batch_size * self.spec.mc * self.world.size / elapsed,
        )
        self._write(record)
        if self.main:
            self.display.train(self.pace(done), record)
        self._window, self._window_steps, self._t_window = {}, 0, time.perf_counter()

    def eval(self, step: int, metrics: dict[str, Any]) -> None:
        """An evaluation at `step`: adds `steps_to` to `metrics` (in place) and writes it."""
        metrics["steps_to"] = self.thresholds.update(step, metrics["accuracy"])
        record = {"kind": "eval", "step": step, **metrics}
        self._write(record)
        if self.main:
            self.display.eval(record)

    def _write(self, record: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(dict(record))

    def close(self) -> None:
        """Close every logger and the display; a logger failing to close is a warning, so it
        cannot hide the error that ended the run."""
        import warnings

        for logger in self.loggers:
            try:
                logger.close()
            except Exception as exc:  # noqa: BLE001
                warnings.warn(f"closing metrics logger {type(logger).__name__} failed: {exc}", stacklevel=2)
        self.loggers = []
        self.display.close()
