"""Metrics loggers: where a training run's records go (entry-point group `lgdram.loggers`).

A record is a dict `{"kind": "train" | "eval", "step": int, ...metrics}`: train records carry
the loss terms, rewards, train accuracy, `lr`, `gamma` and `images_per_s` averaged over the last
`log_every` steps; eval records the held-out metrics (`accuracy`, `location_error_px`, ...) and
`steps_to` (the first evaluated steps reaching 50/80/90 % test accuracy). Values are numbers,
None, lists of numbers or (for `steps_to`) a dict.

A logger is a class with three methods, called on the main process only:

    open(run_dir, spec, resume_step)   before the first record; resume_step is None for a new
                                       run, else the checkpoint's step: drop what lies past it
    log(record)                        once per record, in step order
    close()                            at the end, also after an error or Ctrl-C

Built-ins: `jsonl` (run.metrics.jsonl; always on: `--resume`, `lgdram results` and `visualize
--curves` read it), `csv` (run.train.csv, run.eval.csv) and `tensorboard` (event files in
tb/ of the run folder).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, ClassVar

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.registry import own_description
from lgdram_cli.specs import StrictModel

#: The logger that is always on, whatever the spec's `loggers` say.
ALWAYS_ON = "jsonl"


class LoggerConfig(StrictModel):
    """Loggers take no options in the run spec (yet): `loggers = ["jsonl", "csv"]`."""


class Logger:
    """A metrics logger. Subclasses set `description` (and `requires`) and implement `log`.

    `run_name` is the checkpoint's name without `.safetensors` (`run` for run.safetensors),
    set before `open`: name files `<run_name>.<something>` so that runs sharing a folder do
    not collide.
    """

    plugin_api_version: ClassVar[int] = PLUGIN_API_VERSION
    Config: ClassVar[type[StrictModel]] = LoggerConfig
    #: one line for `lgdram plugins`; default: the first line of the class's own docstring
    description: ClassVar[str] = ""
    #: pip distributions the logger imports; named in the error when one is missing
    requires: ClassVar[tuple[str, ...]] = ()

    run_name: str = "run"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_description(cls)

    def open(self, run_dir: Path, spec: dict[str, Any], resume_step: int | None) -> None:
        """Prepare to log a run in `run_dir` (the checkpoint's folder) with the resolved `spec`."""

    def log(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release files; called once, also when the run stops with an error."""


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"steps_to": {"50%": 3}, "per_glimpse_accuracy": [0.1, 0.2]}` →
    `{"steps_to/50%": 3, "per_glimpse_accuracy/0": 0.1, "per_glimpse_accuracy/1": 0.2}`."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (list, tuple)):
            flat.update(flatten({str(i): v for i, v in enumerate(value)}, f"{name}/"))
        else:
            flat[name] = value
    return flat


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of a record, flattened (`kind` and `step` left out)."""
    flat = flatten({k: v for k, v in record.items() if k not in ("kind", "step")})
    return {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class JsonlLogger(Logger):
    """JSON lines in run.metrics.jsonl beside the checkpoint (always on)."""

    description = "JSON lines in run.metrics.jsonl beside the checkpoint (always on: resume and results read it)"

    def __init__(self) -> None:
        self.path: Path | None = None
        self.kept: list[dict[str, Any]] = []  # records of the checkpoint's past, on resume
        self._mode = "w"

    def open(self, run_dir: Path, spec: dict[str, Any], resume_step: int | None) -> None:
        self.open_path(Path(run_dir) / f"{self.run_name}.metrics.jsonl", resume_step)

    def open_path(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self._mode = "w"  # a new run replaces an old file at its first line, not before
        if resume_step is not None and self.path.exists():
            # keep what the checkpoint has seen; lines past it (a run killed after its last
            # checkpoint) would be written again by the resumed run
            from lgdram_cli.training.checkpoint import read_metrics_records  # a damaged last line is dropped

            self.kept = read_metrics_records(self.path, resume_step)
            text = "".join(json.dumps(r) + "\n" for r in self.kept)
            if text.encode() != self.path.read_bytes():  # written whole or not at all: a kill here loses nothing
                from lgdram_cli.atomic import atomic_path

                with atomic_path(self.path) as tmp:
                    tmp.write_text(text)
            self._mode = "a"

    def log(self, record: dict[str, Any]) -> None:
        assert self.path is not None, "open() first"
        with self.path.open(self._mode) as f:
            f.write(json.dumps(record) + "\n")
        self._mode = "a"


class CsvLogger(Logger):
    """One CSV file per record kind: run.train.csv and run.eval.csv beside the checkpoint."""

    description = "CSV files run.train.csv and run.eval.csv beside the checkpoint (nested values as key/sub columns)"

    def __init__(self) -> None:
        self.run_dir = Path(".")
        self.resume_step: int | None = None
        self._columns: dict[str, list[str]] = {}

    def path(self, kind: str) -> Path:
        return self.run_dir / f"{self.run_name}.{kind}.csv"

    def open(self, run_dir: Path, spec: dict[str, Any], resume_step: int | None) -> None:
        self.run_dir, self.resume_step = Path(run_dir), resume_step
        self._columns = {}

    def log(self, record: dict[str, Any]) -> None:
        kind = str(record.get("kind", "other"))
        flat = flatten(record)
        row = {k: ("" if v is None else v) for k, v in {"step": flat.pop("step", ""), **flat}.items() if k != "kind"}
        if kind not in self._columns:
            self._start(kind)
        columns = self._columns[kind]
        new = [k for k in row if k not in columns]
        if new:  # the first record, or a key the header lacks (a metric that appears later)
            self._rewrite(kind, columns + new, [*self._read(kind), row])
        else:
            with self.path(kind).open("a", newline="") as f:
                csv.DictWriter(f, columns, restval="").writerow(row)

    def _start(self, kind: str) -> None:
        """At the first record of a kind, a new run replaces an old file; a resumed run keeps
        its rows up to the checkpoint's step."""
        path = self.path(kind)
        self._columns[kind] = []
        if self.resume_step is None or not path.exists():
            path.unlink(missing_ok=True)
            return
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        self._rewrite(kind, header, [r for r in self._read(kind) if _step(r) <= self.resume_step])

    def _read(self, kind: str) -> list[dict[str, str]]:
        path = self.path(kind)
        if not path.exists():
            return []
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, kind: str, columns: list[str], rows: list[dict[str, Any]]) -> None:
        """Write the whole file (header and rows) under a temporary name, then rename it."""
        from lgdram_cli.atomic import atomic_path

        self._columns[kind] = columns
        text = io.StringIO()
        writer = csv.DictWriter(text, columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_path(self.path(kind)) as tmp:
            tmp.write_text(text.getvalue())


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


class TensorBoardLogger(Logger):
    """TensorBoard event files in tb/ of the run folder: a scalar per numeric metric."""

    description = "TensorBoard event files in tb/ of the run folder: train/* and eval/* scalars"
    requires = ("tensorboard",)

    def __init__(self) -> None:
        self.writer: Any = None
        self._writer_class: Any = None
        self._log_dir = Path("tb")
        self._resume_step: int | None = None
        self._spec: dict[str, Any] = {}

    def log_dir(self, run_dir: Path) -> Path:
        """tb/ of the run folder; tb/<name>/ when the checkpoint is not run.safetensors, so runs
        sharing a folder stay apart."""
        return Path(run_dir) / "tb" if self.run_name == "run" else Path(run_dir) / "tb" / self.run_name

    def open(self, run_dir: Path, spec: dict[str, Any], resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # ImportError without tensorboard

        self._writer_class, self._resume_step = SummaryWriter, resume_step
        self._log_dir = self.log_dir(run_dir)
        self._spec = spec

    def _start(self) -> None:
        """At the first record (like the other loggers): a new run replaces an old run's event
        files; a resumed one adds a file that purges the events past its checkpoint."""
        if self._resume_step is None and self._log_dir.is_dir():
            for old in self._log_dir.glob("events.out.tfevents.*"):
                old.unlink()
        purge = None if self._resume_step is None else self._resume_step + 1
        self.writer = self._writer_class(log_dir=str(self._log_dir), purge_step=purge)
        if self._resume_step is None:
            self.writer.add_text("spec", "```\n" + json.dumps(self._spec, indent=2, sort_keys=True) + "\n```", 0)

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            self._start()
        kind, step = record.get("kind", "other"), int(record.get("step", 0))
        for name, value in scalars(record).items():
            self.writer.add_scalar(f"{kind}/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def install_hint(package: str) -> str:
    return f"pip install {package} (with pipx: pipx inject lgdram {package})"


def missing_package(name: str, package: str) -> str:
    return f"logger '{name}' needs the package '{package}', which is not installed: {install_hint(package)}"


def check_requirements(name: str, cls: type[Logger]) -> None:
    """A UserError naming `pip install` when a package the logger needs is missing."""
    import importlib.util

    from lgdram_cli.errors import UserError

    for package in getattr(cls, "requires", ()):
        module = package.replace("-", "_")
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise UserError(missing_package(name, package))


def resolve(names: list[str]) -> dict[str, type[Logger]]:
    """The logger classes of `names` (jsonl first, always), each checked for its packages;
    an unknown or broken name is a UserError."""
    from lgdram_cli.registry import LOGGERS

    ordered = [ALWAYS_ON, *(n for n in names if n != ALWAYS_ON)]
    classes: dict[str, type[Logger]] = {}
    for name in dict.fromkeys(ordered):
        cls = LOGGERS.get(name)
        check_requirements(name, cls)
        classes[name] = cls
    return classes

