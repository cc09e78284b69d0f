"""`lgdram sweep`: a grid of training runs (cells × seeds), each an `lgdram train` process.

Why processes: every run is exactly the command a user could type (same checkpoint, metrics
and `--resume` contract), runs use all cores without sharing one interpreter, and on a cluster
the very same run list is split over a job array with `--only I`: no scheduler of our own.

Layout of a sweep folder OUT:

    OUT/sweep.json                      the manifest: recipe (hash + resolved base spec), --set,
                                        grid, seeds, and the cells → folders mapping
    OUT/<cell>/s<seed>/run.safetensors  one `lgdram train` run (+ .optim, .metrics.jsonl, train.log)

A cell folder is its grid values, `key=value` joined by `,` and made filesystem-safe
(`annotations=1pct,model.glimpses=4`). Everything is validated before any process starts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lgdram_cli.errors import UserError, suggest
from lgdram_cli.training.spec import spec_diff

MANIFEST = "sweep.json"
FORMAT = "lgdram-sweep"
VERSION = 1
RUN_FILE = "run.safetensors"
LOG_FILE = "train.log"
#: Seconds an interrupted child gets to save its checkpoint before it is killed.
GRACE_S = 60.0
POLL_S = 0.1
#: Spec keys that do not change a run's final weights or final evaluation.
EVAL_ONLY = ("eval_every", "log_every", "checkpoint_every")
#: Variables that would make a child join a torchrun process group meant for its parent.
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


# ---------------------------------------------------------------- parsing the command line


def split_values(text: str) -> list[str]:
    """'0,1%,100' → ['0', '1%', '100']; commas inside [...] or {...} stay (list values)."""
    values, depth, current = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return values


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """`--grid KEY=V1,V2` options → {KEY: [V1, V2]}, in the order given."""
    grid: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--grid expects KEY=V1,V2,… (e.g. annotations=0,1%,100), got '{item}'")
        if key == "seed":
            raise UserError("--grid seed: give the seeds with --seeds (e.g. --seeds 0-2)")
        if key in grid:
            raise UserError(f"--grid {key} given twice; list all its values once: --grid {key}=A,B")
        values = split_values(text)
        if "" in values:
            raise UserError(f"--grid {item}: empty value; separate values by single commas")
        if len(set(values)) < len(values):
            raise UserError(f"--grid {item}: a value is repeated")
        grid[key] = values
    return grid


def parse_indices(items: list[str] | str | None, option: str) -> list[int]:
    """'0-2' / '0,3,5-7' (or several options) → [0, 1, 2] / [0, 3, 5, 6, 7], first-seen order."""
    if isinstance(items, str):
        items = [items]
    out: list[int] = []
    for item in items or []:
        for part in item.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
            if not m:
                raise UserError(f"{option} '{item}': use numbers and ranges, e.g. 0-2 or 0,3,5-7")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise UserError(f"{option} '{part.strip()}': the range ends before it starts")
            out.extend(i for i in range(lo, hi + 1) if i not in out)
    return out


def grid_args(params: dict[str, str]) -> list[str]:
    """A cell's `lgdram train` arguments: `annotations` is its own option, the rest `--set`."""
    args: list[str] = []
    for key, value in params.items():
        args += ["--annotations", value] if key == "annotations" else ["--set", f"{key}={value}"]
    return args


def grid_sets(params: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in params.items() if k != "annotations"]


def cell_folder(params: dict[str, str]) -> str:
    """{'annotations': '1%', 'model.glimpses': '4'} → 'annotations=1pct,model.glimpses=4';
    a list value [4,8] → 4-8, a path's / → _."""
    if not params:
        return "base"
    parts = []
    for key, value in params.items():
        safe = re.sub(r"[\[\]{}()'\" ]", "", value).replace("%", "pct").replace(",", "-")
        parts.append(f"{key}={re.sub(r'[^A-Za-z0-9._+-]', '_', safe)}")
    return ",".join(parts)


# ---------------------------------------------------------------- recipes and keys


@dataclass(frozen=True)
class Recipe:
    """The run-spec file every run of the sweep starts from."""

    path: Path
    source: str  # what the user typed
    sha256: str


def resolve_recipe(name: str) -> Recipe:
    """RECIPE is a spec file, or the name of a shipped experiment recipe (`ldram-cmnist-100`),
    resolved as `train --spec` resolves it."""
    from lgdram_cli.data.presets import resolve_spec_file

    path = resolve_spec_file(name)
    if not path.is_file():
        raise UserError(f"recipe file not found: {path}")
    return Recipe(path.resolve(), name, hashlib.sha256(path.read_bytes()).hexdigest())


def _known(option: str, key: str, leaf: str, where: str, known: list[str]) -> None:
    if leaf not in known:
        of = f" of '{where}'" if where else ""
        raise UserError(
            f"{option} {key}: unknown key '{leaf}'{suggest(leaf, known)}; valid keys{of}: {', '.join(known)}"
        )


def full_key(key: str, option: str, base: dict[str, Any]) -> str:
    """The full path of a short key, as `train --set` reads it (`glimpses` → `model.glimpses`),
    so that one grid axis always gets one folder name however it was typed."""
    from lgdram_cli.training.assemble import expand_train_sets as expand
    from lgdram_cli.training.spec import TrainSpec

    if key.split(".")[0] in TrainSpec.model_fields:
        return key
    try:
        return expand(base, [f"{key}=0"])[0].partition("=")[0]
    except UserError as exc:
        text = str(exc).removeprefix(f"--set {key}: ")
        if text.startswith("unknown key"):  # name the valid keys, as for a full key
            hint = re.search(r" \(did you mean [^)]*\)", text)
            text = (
                f"unknown key '{key}'{hint.group(0) if hint else ''}; valid keys: {', '.join(TrainSpec.model_fields)}, "
                "or a key of the dataset, model, optim or loss section, alone or in full (model.glimpses); "
                "'lgdram schema train' lists every key"
            )
        raise UserError(f"{option} {key}: {text}") from exc


def check_key(key: str, option: str, base: dict[str, Any]) -> None:
    """Refuse a --grid/--set key that names nothing, listing the valid keys of the section
    where it went wrong (values are left to the spec's own validation)."""
    from lgdram_cli.registry import DATASETS, LOSSES, MODELS
    from lgdram_cli.training.spec import OptimSpec, TrainSpec

    parts = key.split(".")
    top = parts[0]
    _known(option, key, top, "", list(TrainSpec.model_fields))
    if len(parts) == 1:
        return
    try:
        if top == "optim":
            _known(option, key, parts[1], "optim", list(OptimSpec.model_fields))
        elif top in ("dataset", "model"):
            kind = (base.get(top) or {}).get("type")
            registry = DATASETS if top == "dataset" else MODELS
            if kind is not None:
                _known(option, key, parts[1], top, list(registry.get(str(kind)).Config.model_fields))
        elif top == "loss":
            _known(option, key, parts[1], "loss", LOSSES.names())
            if len(parts) > 2:
                _known(option, key, parts[2], f"loss.{parts[1]}", list(LOSSES.get(parts[1]).Config.model_fields))
        else:
            raise UserError(f"{option} {key}: '{top}' is a value, not a section")
    except UserError as exc:
        if str(exc).startswith(f"{option} {key}:"):
            raise
        raise UserError(f"{option} {key}: {exc}") from exc


# ---------------------------------------------------------------- specs


def train_level_spec(recipe: Recipe, sets: list[str], steps: int | None, params: dict[str, str], seed: int | None) -> Any:
    """The TrainSpec `lgdram train --spec RECIPE …` assembles for one run (or the base, no params)."""
    from lgdram_cli.training.assemble import train_spec

    return train_spec(
        spec_file=recipe.path, annotations=params.get("annotations"), sets=[*sets, *grid_sets(params)],
        steps=steps, seed=seed,
    )


def resolved_spec(recipe: Recipe, sets: list[str], steps: int | None, params: dict[str, str], seed: int) -> dict[str, Any]:
    """The fully resolved spec the run's checkpoint will record: validates every section too
    (dataset, model and loss configs are only checked when built)."""
    from lgdram_cli.training.loop import build

    setup = build(train_level_spec(recipe, sets, steps, params, seed))
    return json.loads(json.dumps(setup.resolved()))


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Cell:
    """One point of the grid."""

    params: dict[str, str]
    folder: str

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items()) or "base"


@dataclass
class Run:
    """One training run: a cell and a seed, at a fixed place in the run order."""

    index: int
    cell: Cell
    seed: int
    path: Path
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.cell.folder}/s{self.seed}"

    @property
    def log(self) -> Path:
        return self.path.parent / LOG_FILE


@dataclass
class Plan:
    """Everything a sweep invocation will do, validated."""

    recipe: Recipe
    sets: list[str]
    steps: int | None
    grid: dict[str, list[str]]
    seeds: list[int]
    out: Path
    base: dict[str, Any]
    runs: list[Run] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        cells = {r.cell.folder: r.cell.params for r in self.runs}
        return {
            "format": FORMAT, "version": VERSION,
            "recipe": {"source": self.recipe.source, "path": str(self.recipe.path), "sha256": self.recipe.sha256,
                       "spec": self.base},
            "sets": self.sets, "steps": self.steps, "grid": self.grid, "seeds": self.seeds, "cells": cells,
        }


def _labelled(prefix: str, fn: Callable[[], Any]) -> Any:
    """Run `fn`, prefixing a UserError with the option and values that caused it."""
    try:
        return fn()
    except UserError as exc:
        raise UserError(f"{prefix}: {exc}") from exc


def _base_label(recipe: Recipe, sets: list[str]) -> str:
    return f"recipe {recipe.source}" + (" with --set " + " ".join(sets) if sets else "")


def make_plan(
    recipe_name: str, grid_items: list[str] | None, seeds: list[str] | None, sets: list[str] | None,
    steps: int | None, out: Path,
) -> Plan:
    """Parse and validate the whole sweep (every run's spec is built) before anything starts."""
    recipe = resolve_recipe(recipe_name)
    sets = list(sets or [])
    if any(item.partition("=")[0].strip() == "seed" for item in sets):
        raise UserError("--set seed: give the seeds with --seeds (e.g. --seeds 0-2)")
    base_spec = train_level_spec(recipe, sets, steps, {}, None)
    base = base_spec.model_dump(mode="json")
    set_keys = []
    for item in sets:
        key = full_key(item.partition("=")[0].strip(), "--set", base)
        check_key(key, "--set", base)
        set_keys.append(key)
    grid = {full_key(k, "--grid", base): v for k, v in parse_grid(grid_items).items()}
    if len(grid) < len(grid_items or []):
        raise UserError(f"--grid names one key twice ({', '.join(g.partition('=')[0] for g in grid_items or [])}); list all its values once")
    for key in grid:
        check_key(key, "--grid", base)
        if key in set_keys:
            raise UserError(f"--grid {key} and --set {key} both given; keep one of them")
    seed_list = parse_indices(seeds, "--seeds") or [base_spec.seed]
    grid = _align_with_manifest(out, grid, base)
    plan = Plan(recipe, sets, steps, grid, seed_list, out, base)
    cells = _cells(plan)
    for seed in seed_list:  # seed bounds, before any build
        _labelled(f"--seeds {seed}", lambda: train_level_spec(recipe, sets, steps, {}, seed))
    specs = {
        c.folder: _labelled(
            f"--grid {c.label}" if c.params else _base_label(recipe, sets),
            lambda c=c: resolved_spec(recipe, sets, steps, c.params, seed_list[0]),
        )
        for c in cells
    }
    for i, (cell, seed) in enumerate(itertools.product(cells, seed_list)):
        spec = {**specs[cell.folder], "seed": seed}
        plan.runs.append(Run(i, cell, seed, out / cell.folder / f"s{seed}" / RUN_FILE, spec))
    return plan


def _cells(plan: Plan) -> list[Cell]:
    """The grid's cells in product order; values that would share a folder are refused."""
    keys = list(plan.grid)
    if len(keys) > 1:  # blame a bad value on its own key, not on a combination
        for key, values in plan.grid.items():
            for value in values:
                _labelled(f"--grid {key}={value}", lambda p={key: value}: resolved_spec(plan.recipe, plan.sets, plan.steps, p, 0))
    cells: list[Cell] = []
    seen: dict[str, dict[str, str]] = dict(read_manifest(plan.out) or {}).get("cells", {})
    for combo in itertools.product(*(plan.grid[k] for k in keys)):
        params = dict(zip(keys, combo))
        folder = cell_folder(params)
        if seen.get(folder, params) != params:
            raise UserError(f"--grid values {seen[folder]} and {params} both map to folder '{folder}'; write one of them differently")
        seen[folder] = params
        cells.append(Cell(params, folder))
    return cells


# ---------------------------------------------------------------- the manifest


def read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"{path} is not readable JSON ({exc}); fix or remove it") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"{path} is not an lgdram sweep manifest; use another --out")
    return data


def _align_with_manifest(out: Path, grid: dict[str, list[str]], base: dict[str, Any]) -> dict[str, list[str]]:
    """Refuse a sweep of another recipe/--set/--steps in OUT; order the grid keys as recorded
    there (the cell folders depend on it). More seeds and more grid values are welcome."""
    old = read_manifest(out)
    if old is None:
        return grid
    differ = spec_diff(old["recipe"]["spec"], base, ignore=("seed",))
    if differ:
        raise UserError(
            f"{out} holds a sweep of another recipe or --set/--steps (they differ in {', '.join(differ[:5])}); "
            f"use another --out, or rerun with the recipe and options recorded in {out / MANIFEST}"
        )
    if set(old["grid"]) != set(grid):
        raise UserError(
            f"{out} holds a sweep over --grid keys ({', '.join(old['grid']) or 'none'}), not ({', '.join(grid) or 'none'}); "
            "a sweep's grid keys are fixed: use another --out"
        )
    return {k: grid[k] for k in old["grid"]}


def merged_manifest(plan: Plan, old: dict[str, Any] | None) -> dict[str, Any]:
    """This invocation's manifest joined with what OUT already records (values, seeds, cells)."""
    new = plan.manifest()
    if old is None:
        return new
    grid = {k: list(dict.fromkeys([*old["grid"][k], *new["grid"][k]])) for k in new["grid"]}
    seeds = list(dict.fromkeys([*old["seeds"], *new["seeds"]]))
    return {**new, "grid": grid, "seeds": seeds, "cells": {**old["cells"], **new["cells"]}}


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Serialise manifest updates of job-array tasks that start together."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(out / ".sweep.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_manifest(plan: Plan) -> None:
    from lgdram_cli.atomic import atomic_path

    plan.out.mkdir(parents=True, exist_ok=True)
    with locked(plan.out):
        data = merged_manifest(plan, read_manifest(plan.out))
        with atomic_path(plan.out / MANIFEST) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------- run states


@dataclass(frozen=True)
class State:
    """done (skip), partial (resume at `step`), restart (a checkpoint without its optimizer
    state: start over), new."""

    kind: str
    step: int = 0

    def describe(self) -> str:
        return {
            "done": f"done (step {self.step})",
            "partial": f"partial at step {self.step}",
            "restart": f"partial at step {self.step}, optimizer state missing: restarts",
        }.get(self.kind, "new")


def eval_steps(metrics: Path) -> set[int]:
    """Steps with an evaluation record (a line cut short by a kill is ignored)."""
    steps: set[int] = set()
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("kind") == "eval":
                steps.add(int(record.get("step", -1)))
    return steps


def run_state(run: Run) -> State:
    """Where a run stands; a checkpoint of another spec in its folder is refused, never mixed."""
    from lgdram_cli.training import checkpoint as ckpt

    if not run.path.exists():
        return State("new")
    found = ckpt.load_checkpoint(run.path)
    differ = spec_diff(found.spec, run.spec)
    if differ:
        raise UserError(
            f"{run.path} is a run of another spec (differs in {', '.join(differ[:5])}); a sweep does not mix "
            "runs: use another --out or move that run away"
        )
    steps = int(run.spec["steps"])
    if found.step >= steps and steps in eval_steps(ckpt.metrics_path(run.path)):
        return State("done", found.step)
    # `train --resume` picks the newest complete weights + optimizer pair (checkpoint.load_state),
    # also after a kill between writing the two; only a run without any optimizer state restarts
    if not (ckpt.optim_path(run.path).exists() or ckpt.staged_optim_path(run.path).exists()):
        return State("restart", found.step)
    return State("partial", found.step)


# ---------------------------------------------------------------- running


def check_gpus(gpus: int) -> None:
    """`--gpus N` needs N CUDA devices here: refused before any run starts (each would fail)."""
    if not gpus:
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > have:
        raise UserError(f"--gpus {gpus}: this machine has {have} CUDA device(s); use --gpus {have} or leave it out" if have
                        else f"--gpus {gpus}: CUDA is not available on this machine; leave --gpus out to train on the CPU")


def child_command(run: Run, plan: Plan, state: State, threads: int, device: str | None) -> list[str]:
    """`python -m lgdram_cli train …` for one run: the command a user would type."""
    cmd = [sys.executable, "-m", "lgdram_cli", "train", "--spec", str(plan.recipe.path), "--seed", str(run.seed)]
    for item in plan.sets:
        cmd += ["--set", item]
    cmd += grid_args(run.cell.params)
    if plan.steps is not None:
        cmd += ["--steps", str(plan.steps)]
    cmd += ["--out", str(run.path), "--threads", str(threads)]
    if device:
        cmd += ["--device", device]
    if state.kind == "partial":
        cmd.append("--resume")
    elif state.kind == "restart":
        cmd.append("--force")
    return cmd


def child_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def _child_setup() -> None:
    """In the child: default Ctrl-C handling even when the sweep was started with SIGINT
    ignored (a background job), so a forwarded SIGINT makes it save and stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@dataclass
class Child:
    run: Run
    state: State
    proc: subprocess.Popen
    log: IO[str]
    gpu: int | None
    started: float


@dataclass
class Outcome:
    finished: list[Run] = field(default_factory=list)
    failed: list[tuple[Run, str]] = field(default_factory=list)
    interrupted: list[Run] = field(default_factory=list)


class StopSignals:
    """SIGINT and SIGTERM (Slurm's scancel) as a flag; a second one raises KeyboardInterrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def final_error(run: Run) -> float | None:
    """Test error % of the run's last evaluation, for the status line."""
    from lgdram_cli.training.checkpoint import metrics_path

    path = metrics_path(run.path)
    for line in reversed(path.read_text().splitlines() if path.is_file() else []):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "eval":
            return record.get("error")
    return None


def last_line(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()] if path.is_file() else []
    return lines[-1] if lines else "(empty log)"


class Pool:
    """Runs `work` with at most `jobs` children at a time; says one line per start and finish."""

    def __init__(self, plan: Plan, *, jobs: int, threads: int, gpus: int, say: Callable[[str], None]) -> None:
        self.plan, self.jobs, self.threads, self.gpus, self.say = plan, jobs, threads, gpus, say
        self.running: list[Child] = []
        self.outcome = Outcome()
        self.waiting = 0
        self.stopping = False  # we interrupted the children: their exit 130 is no failure

    def run(self, work: list[tuple[Run, State]]) -> Outcome:
        """Start, watch and reap; on Ctrl-C/SIGTERM interrupt the children (they save a
        checkpoint) and raise KeyboardInterrupt."""
        pending = deque(work)
        with StopSignals() as stop:
            try:
                while (pending or self.running) and not stop.requested:
                    while pending and len(self.running) < self.jobs and not stop.requested:
                        self.waiting = len(pending) - 1
                        self._start(*pending.popleft())
                    time.sleep(POLL_S)
                    self._reap()
                if stop.requested:
                    self._interrupt()
            except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
                self._kill()
                raise
        if stop.requested:
            raise KeyboardInterrupt
        return self.outcome

    def _gpu(self) -> int | None:
        if not self.gpus:
            return None
        busy = [c.gpu for c in self.running]
        return min(range(self.gpus), key=busy.count)  # the least loaded, lowest index first

    def _start(self, run: Run, state: State) -> None:
        gpu = self._gpu()
        cmd = child_command(run, self.plan, state, self.threads, None if gpu is None else f"cuda:{gpu}")
        run.path.parent.mkdir(parents=True, exist_ok=True)
        log = open(run.log, "a")  # a resumed run's log keeps what came before
        log.write(f"\n# lgdram sweep {time.strftime('%Y-%m-%d %H:%M:%S')}: {shlex.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env(self.threads),
            start_new_session=True,  # a terminal's Ctrl-C reaches the sweep only; it forwards one SIGINT
            preexec_fn=_child_setup,
        )
        self.running.append(Child(run, state, proc, log, gpu, time.monotonic()))
        how = {"partial": f" from step {state.step}", "restart": f" over (no optimizer state at step {state.step})"}.get(state.kind, "")
        verb = {"partial": "resume", "restart": "start"}.get(state.kind, "start")
        where = f" on cuda:{gpu}" if gpu is not None else ""
        self.say(f"[{run.index}] {verb} {run.name}{how}{where} ({len(self.running)} running, {self.waiting} waiting)")

    def _reap(self) -> None:
        for child in list(self.running):
            code = child.proc.poll()
            if code is None:
                continue
            self.running.remove(child)
            child.log.close()
            self._report(child, code)

    def _report(self, child: Child, code: int) -> None:
        run, took = child.run, time.monotonic() - child.started
        if code == 0:
            self.outcome.finished.append(run)
            error = final_error(run)
            tail = f": test error {error:.2f} %" if error is not None else ""
            self.say(f"[{run.index}] done {run.name} in {took:.0f} s{tail}")
        elif self.stopping and code in (130, -signal.SIGINT):
            self.outcome.interrupted.append(run)
            self.say(f"[{run.index}] interrupted {run.name} (checkpoint saved; rerun the sweep to resume)")
        else:
            why = f"killed by signal {-code}" if code < 0 else "interrupted, exit 130" if code == 130 else f"exit {code}"
            self.outcome.failed.append((run, why))
            self.say(f"[{run.index}] FAILED {run.name} ({why}): {last_line(run.log)} (log: {run.log})")

    def _interrupt(self) -> None:
        """One SIGINT per child (each saves a checkpoint at its next step), then wait, then kill."""
        self.stopping = True
        self.say(f"stopping {len(self.running)} run(s): each saves a checkpoint (Ctrl-C again to kill them now)")
        for child in self.running:
            child.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + GRACE_S
        while self.running and time.monotonic() < deadline:
            time.sleep(POLL_S)
            self._reap()
        self._kill()

    def _kill(self) -> None:
        for child in self.running:
            child.proc.kill()
            child.proc.wait()
            child.log.close()
            self.outcome.interrupted.append(child.run)
        self.running.clear()
