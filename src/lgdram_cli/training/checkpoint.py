"""Checkpoints: safetensors only (no pickle anywhere; a user's file is never `torch.load`ed).

`run.safetensors`        model weights + metadata: lgdram.spec (resolved spec JSON),
                         lgdram.format_version (2), lgdram.step, lgdram.metrics (last eval JSON),
                         lgdram.run_id, lgdram.optim_sha256 (of the optimizer file that belongs
                         to these weights), lgdram.metrics_bytes (how much of run.metrics.jsonl
                         they have seen), lgdram.tensors_sha256 (of the tensors, in name order)
                         and lgdram.sha256 (of all of it: tensors and metadata).
`run.optim.safetensors`  optimizer moments, RNG states and the step, for an exact `--resume`;
                         metadata lgdram.run_id and lgdram.weights_sha256 (the tensors of the
                         weights it belongs to).

The run state is committed as one unit (`save_state`): the optimizer file is written first
under a staging name (`.run.optim.safetensors.next`), the previous weights stay reachable
(`.run.safetensors.prev`, a hard link), then the weights are written, naming the optimizer file
by its SHA-256, and only then is the staged optimizer file renamed into place and the previous
weights dropped. Every file is written to a temp file, flushed to disk and renamed. A crash at
any point leaves a complete pair: `load_state` (`--resume`) takes the newest complete pair,
else the previous one, and puts the files back in order. The optimizer file of another run (or
another step) is refused, and so is a checkpoint whose tensors or metadata were edited after
lgdram wrote it, unless `--allow-edited` (`ALLOW_EDITED`) says to use it anyway (a warning).

Format version 1 (lgdram 0.1: a SHA-256 of the tensors only, no run id) is still read.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as serialize

from lgdram_cli.atomic import atomic_path, fsync_dir
from lgdram_cli.errors import RunFailure, UserError
from lgdram_cli.integrity import ALLOW_EDITED  # noqa: F401 (--allow-edited; re-exported)

FORMAT_VERSION = 2
#: The checkpoint format versions this lgdram reads.
READABLE_VERSIONS = ("1", "2")
#: The run id of each live optimizer: made at a run's first save, or read back on resume.
_RUN_IDS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@dataclass
class Checkpoint:
    """A validated checkpoint file: its weights and what they came from."""

    path: Path
    tensors: dict[str, torch.Tensor]
    spec: dict[str, Any]
    step: int
    metrics: dict[str, Any]
    metadata: dict[str, str]

    @property
    def run_id(self) -> str | None:
        return self.metadata.get("lgdram.run_id") or None


def sibling(path: Path, suffix: str) -> Path:
    """A file that belongs to a run: run.safetensors → run<suffix> beside it."""
    return path.with_name(path.name.removesuffix(".safetensors") + suffix)


def optim_path(path: Path) -> Path:
    """run.safetensors → run.optim.safetensors."""
    return sibling(path, ".optim.safetensors")


def metrics_path(path: Path) -> Path:
    """run.safetensors → run.metrics.jsonl."""
    return sibling(path, ".metrics.jsonl")


def staged_optim_path(path: Path) -> Path:
    """run.safetensors → .run.optim.safetensors.next: the optimizer file of a save in progress."""
    optim = optim_path(path)
    return optim.with_name(f".{optim.name}.next")


def previous_path(path: Path) -> Path:
    """run.safetensors → .run.safetensors.prev: the weights before a save in progress."""
    path = Path(path)
    return path.with_name(f".{path.name}.prev")


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def metadata_digest(metadata: dict[str, str]) -> str:
    """SHA-256 of every metadata entry but `lgdram.sha256` itself (the tensors enter through
    `lgdram.tensors_sha256`): what a format-2 checkpoint records as `lgdram.sha256`."""
    body = {k: v for k, v in metadata.items() if k != "lgdram.sha256"}
    h = hashlib.sha256(b"lgdram checkpoint 2\0")
    h.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


def seal(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """`metadata` with the format version and both digests filled in (what `save_checkpoint`
    writes): a checkpoint whose tensors or metadata change afterwards no longer matches."""
    out = {k: str(v) for k, v in metadata.items() if k not in ("lgdram.sha256", "lgdram.tensors_sha256")}
    out["lgdram.format_version"] = str(FORMAT_VERSION)
    out["lgdram.tensors_sha256"] = tensor_digest(tensors)
    out["lgdram.sha256"] = metadata_digest(out)
    return out


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def _write_bytes(path: Path, data: bytes) -> None:
    """`data` to `path` through a temp file, flushed to disk, then renamed into place."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes(path, serialize(_cpu(tensors), metadata=metadata))


def _weights_metadata(spec: dict[str, Any], step: int, metrics: dict[str, Any], **extra: str) -> dict[str, str]:
    return {
        "lgdram.format_version": str(FORMAT_VERSION),
        "lgdram.spec": json.dumps(spec, sort_keys=True),
        "lgdram.step": str(step),
        "lgdram.metrics": json.dumps(metrics, sort_keys=True),
        **extra,
    }


def save_checkpoint(
    path: Path, model: torch.nn.Module, spec: dict[str, Any], step: int, metrics: dict[str, Any]
) -> None:
    """Weights and metadata alone (no optimizer state): an exported model, a test's fixture.
    Training saves through `save_state`."""
    tensors = _cpu(dict(model.state_dict()))
    _atomic_save(tensors, seal(tensors, _weights_metadata(spec, step, metrics)), Path(path))


def _read(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; any defect is a UserError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers/sizes
        raise UserError(f"{path} is not a readable {what} (truncated or another format): {exc}") from exc


def load_checkpoint(path: str | Path, allow_edited: bool | None = None) -> Checkpoint:
    """Read and validate a checkpoint; every defect is a UserError naming the file. A checkpoint
    whose tensors or metadata were changed after lgdram wrote it is refused unless
    `allow_edited` (default: `ALLOW_EDITED`), which warns instead."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    tensors, metadata = _read(path, "safetensors checkpoint")
    if "lgdram.spec" not in metadata:
        raise UserError(f"{path} is a safetensors file but not an lgdram checkpoint (no lgdram.spec metadata)")
    version = metadata.get("lgdram.format_version", "?")
    if version not in READABLE_VERSIONS:
        raise UserError(f"{path} has checkpoint format version {version}; this lgdram reads {', '.join(READABLE_VERSIONS)}")
    problem = _integrity_problem(tensors, metadata, version)
    if problem:
        if not (ALLOW_EDITED.get() if allow_edited is None else allow_edited):
            raise UserError(f"{path} {problem}; pass --allow-edited to use it anyway")
        warnings.warn(f"{path} {problem}; using it as --allow-edited asks", stacklevel=2)
    try:
        spec = json.loads(metadata["lgdram.spec"])
        metrics = json.loads(metadata.get("lgdram.metrics", "{}"))
        step = int(metadata.get("lgdram.step", "0"))
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path} has unreadable lgdram metadata: {exc}".splitlines()[0]) from exc
    for key, value in (("lgdram.spec", spec), ("lgdram.metrics", metrics)):
        if not isinstance(value, dict):
            raise UserError(f"{path} has unreadable lgdram metadata: {key} is a JSON {type(value).__name__}, not an object")
    if step < 0:
        raise UserError(f"{path} has unreadable lgdram metadata: lgdram.step is {step}")
    return Checkpoint(path, tensors, spec, step, metrics, metadata)


def _integrity_problem(tensors: dict[str, torch.Tensor], metadata: dict[str, str], version: str) -> str | None:
    """Why `tensors` + `metadata` are not what lgdram wrote (None when they are)."""
    actual = tensor_digest(tensors)
    if version == "1":  # lgdram 0.1: a digest of the tensors only
        expected = metadata.get("lgdram.sha256")
        return "is corrupt: its tensors do not match the recorded SHA-256" if expected and actual != expected else None
    if metadata.get("lgdram.tensors_sha256") != actual:
        return "is corrupt or was edited: its tensors do not match the recorded SHA-256"
    if metadata.get("lgdram.sha256") != metadata_digest(metadata):
        return ("was edited after lgdram wrote it: its metadata (spec, step, metrics or run id) do not match "
                "the recorded SHA-256")
    return None


def load_weights(model: torch.nn.Module, ckpt: Checkpoint) -> None:
    """Load `ckpt`'s tensors into `model`, refusing any mismatch with its spec."""
    own = model.state_dict()
    missing = sorted(set(own) - set(ckpt.tensors))
    extra = sorted(set(ckpt.tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(ckpt.tensors) if own[k].shape != ckpt.tensors[k].shape)
    if missing or extra or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
            for what, names in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if names
        )
        raise UserError(f"{ckpt.path}: tensors do not match the model its spec describes ({detail})")
    model.load_state_dict(ckpt.tensors)


def _optimizer_tensors(optimizer: torch.optim.Optimizer, rng: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """Optimizer moments + RNG states as tensors, and the param-group settings as JSON."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"state.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    for key, value in rng.items():
        tensors[f"rng.{key}"] = value
    return tensors, json.dumps(state["param_groups"])


def save_training_state(path: Path, optimizer: torch.optim.Optimizer, step: int, rng: dict[str, torch.Tensor]) -> None:
    """Optimizer moments + RNG states, as tensors; the param-group settings as JSON metadata
    (on its own, bound to no weights: training saves through `save_state`)."""
    tensors, groups = _optimizer_tensors(optimizer, rng)
    metadata = {"lgdram.format_version": str(FORMAT_VERSION), "lgdram.step": str(step), "lgdram.param_groups": groups}
    _atomic_save(tensors, metadata, Path(path))


def _restore_optimizer(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                       optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Load an optimizer file's state into `optimizer`; return its RNG states."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    rng: dict[str, torch.Tensor] = {}
    try:
        groups = json.loads(metadata["lgdram.param_groups"])
        for name, value in tensors.items():
            if name.startswith("rng."):
                rng[name[4:]] = value
                continue
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    except (KeyError, ValueError) as exc:  # another safetensors file that happens to carry a step
        raise UserError(f"{path} is not an lgdram optimizer file ({exc!r}); retrain or restore it") from exc
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, slots in state.items():
        moments = slots.get("exp_avg")
        if index >= len(params) or (moments is not None and moments.shape != params[index].shape):
            raise UserError(f"{path} does not belong to this model: its optimizer state has other shapes")
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} does not match the model's parameters: {exc}") from exc
    return rng


def load_training_state(path: Path, optimizer: torch.optim.Optimizer, step: int) -> dict[str, torch.Tensor]:
    """Restore optimizer state from `path` (which must belong to a checkpoint at `step`); return RNG states."""
    if not path.is_file():
        raise UserError(f"--resume needs the optimizer file {path} next to the checkpoint; it is missing")
    tensors, metadata = _read(path, "optimizer file")
    if metadata.get("lgdram.step") != str(step):
        raise UserError(
            f"{path} is from step {metadata.get('lgdram.step')}, but the checkpoint is at step {step}; "
            "they do not belong together"
        )
    return _restore_optimizer(path, tensors, metadata, optimizer)


# ---------------------------------------------------------------- the run state, as one unit


def run_id_of(optimizer: torch.optim.Optimizer) -> str:
    """The id of the run `optimizer` trains: read back by `load_state`, else made now (a new run)."""
    if optimizer not in _RUN_IDS:
        _RUN_IDS[optimizer] = uuid.uuid4().hex
    return _RUN_IDS[optimizer]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_state(
    out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, spec: dict[str, Any], step: int,
    metrics: dict[str, Any], rng: dict[str, torch.Tensor],
) -> None:
    """Commit a training run's state at `step` as one unit: weights (`out`), optimizer and RNG
    state (run.optim.safetensors) and the metrics position (the size of run.metrics.jsonl now).

    Order: the optimizer file under its staging name; the previous weights kept as a hard link;
    the weights, naming the optimizer file's SHA-256 (the commit point); the optimizer file
    renamed into place; the previous weights dropped. A crash anywhere leaves a complete pair
    that `load_state` finds. A write that fails (disk full) is a RunFailure; the last complete
    checkpoint stays as it was.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run_id = run_id_of(optimizer)
    weights = _cpu(dict(model.state_dict()))
    digest = tensor_digest(weights)
    tensors, groups = _optimizer_tensors(optimizer, rng)
    optim_bytes = serialize(_cpu(tensors), metadata={
        "lgdram.format_version": str(FORMAT_VERSION),
        "lgdram.step": str(step),
        "lgdram.run_id": run_id,
        "lgdram.weights_sha256": digest,
        "lgdram.param_groups": groups,
    })
    metrics_file = metrics_path(out)
    position = metrics_file.stat().st_size if metrics_file.is_file() else 0
    weights_bytes = serialize(weights, metadata=seal(weights, _weights_metadata(
        spec, step, metrics, **{
            "lgdram.run_id": run_id,
            "lgdram.optim_file": optim_path(out).name,
            "lgdram.optim_sha256": _sha256(optim_bytes),
            "lgdram.metrics_bytes": str(position),
        },
    )))
    staged, previous = staged_optim_path(out), previous_path(out)
    try:
        _write_bytes(staged, optim_bytes)
        previous.unlink(missing_ok=True)
        if out.is_file():
            try:
                os.link(out, previous)
            except OSError:  # a file system without hard links: no fallback for this save
                pass
        _write_bytes(out, weights_bytes)  # the commit point
        os.replace(staged, optim_path(out))
        previous.unlink(missing_ok=True)
        fsync_dir(out.parent if str(out.parent) else Path("."))
    except RunFailure as exc:
        for leftover in (staged, previous):
            try:
                leftover.unlink(missing_ok=True)
            except OSError:
                pass
        cause = exc.__cause__
        reason = os.strerror(cause.errno) if isinstance(cause, OSError) and cause.errno else str(exc)
        raise RunFailure(f"cannot save the checkpoint {out} at step {step}: {reason}; {_describe_kept(out)}") from exc


def _describe_kept(out: Path) -> str:
    step = _step_of(out)
    return f"the last complete checkpoint (step {step}) is kept" if step is not None else "no checkpoint was written"


def _step_of(path: Path) -> int | None:
    """The step a checkpoint file records (None when there is no readable one)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("lgdram.step", ""))
    except Exception:  # noqa: BLE001 (missing, unreadable, no step)
        return None


def divergence_note(out: Path, optimizer: torch.optim.Optimizer | None = None) -> str:
    """What a run that stops (diverged) leaves: its last checkpoint, or that it wrote none."""
    out = Path(out)
    step = _step_of(out) if optimizer is None or optimizer in _RUN_IDS else None
    if step is None:
        return "no checkpoint was written (it stopped before the first one); lower optim.lr or optim.clip and restart"
    return f"the last good checkpoint {out} (step {step}) is kept (lower optim.lr or optim.clip, then resume or restart)"


@dataclass
class _Pair:
    weights: Checkpoint
    optim: Path
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]


def _match_optimizer(ckpt: Checkpoint, candidates: list[Path]) -> tuple[_Pair | None, str]:
    """The optimizer file among `candidates` that belongs to `ckpt`, or why none does."""
    expected = ckpt.metadata.get("lgdram.optim_sha256")
    reasons: list[str] = []
    for path in candidates:
        if not path.is_file():
            continue
        try:
            digest = _sha256(path.read_bytes()) if expected is not None else None
            tensors, metadata = _read(path, "optimizer file")
        except OSError as exc:
            reasons.append(f"{path} cannot be read ({exc.strerror or exc})")
            continue
        except UserError as exc:
            reasons.append(str(exc))
            continue
        if expected is not None:
            if digest == expected:
                return _Pair(ckpt, path, tensors, metadata), ""
            reasons.append(_mismatch(path, metadata, ckpt))
        elif metadata.get("lgdram.step") == str(ckpt.step):  # format 1: matched by step
            return _Pair(ckpt, path, tensors, metadata), ""
        else:
            reasons.append(
                f"{path} is from step {metadata.get('lgdram.step')}, but the checkpoint is at step {ckpt.step}; "
                "they do not belong together"
            )
    if not reasons:
        return None, f"--resume needs the optimizer file {optim_path(ckpt.path)} next to the checkpoint; it is missing"
    return None, reasons[0]


def _mismatch(path: Path, metadata: dict[str, str], ckpt: Checkpoint) -> str:
    """Why the optimizer file `path` is not the one `ckpt` names."""
    if "lgdram.param_groups" not in metadata or "lgdram.format_version" not in metadata:
        return f"{path} is not an lgdram optimizer file (no lgdram.param_groups metadata); retrain or restore it"
    theirs, ours = metadata.get("lgdram.run_id"), ckpt.run_id
    step = metadata.get("lgdram.step")
    if step != str(ckpt.step):
        run = " of another run" if theirs != ours else ""
        return f"{path} is from step {step}{run}, but the checkpoint is at step {ckpt.step}; they do not belong together"
    if theirs != ours:
        return (f"{path} belongs to another run (run id {str(theirs)[:12]}…, the checkpoint's is {str(ours)[:12]}…); "
                "they do not belong together")
    if metadata.get("lgdram.weights_sha256") != ckpt.metadata.get("lgdram.tensors_sha256"):
        return f"{path} was saved with other weights than {ckpt.path.name} holds; they do not belong together"
    return f"{path} is not the optimizer file {ckpt.path.name} was saved with (its SHA-256 differs)"


def load_state(
    out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    check: Callable[[Checkpoint], None] | None = None,
) -> tuple[Checkpoint, dict[str, torch.Tensor]]:
    """Load a run's state for `--resume`: the newest complete pair of weights and optimizer file
    (after a crash mid-save, the previous complete one, with a warning), checked by `check`
    (e.g. that the spec allows resuming), into `model` and `optimizer`; return the checkpoint
    and the RNG states. Then the files are put back in order (a staged optimizer file renamed
    into place, leftovers of an interrupted save removed) and run.metrics.jsonl is cut back to
    what the checkpoint had seen. Every refusal leaves every file as it was."""
    out = Path(out)
    previous = previous_path(out)
    candidates = [optim_path(out), staged_optim_path(out)]
    pair: _Pair | None = None
    try:
        newest: Checkpoint | None = load_checkpoint(out)
    except UserError as exc:
        if not previous.is_file():
            raise
        newest, problem = None, str(exc)
    if newest is not None:
        pair, problem = _match_optimizer(newest, candidates)
    if pair is None and previous.is_file():  # a save was interrupted: the pair before it
        try:
            older: Checkpoint | None = load_checkpoint(previous)
        except UserError:
            older = None
        fallback = _match_optimizer(older, candidates)[0] if older is not None else None
        if fallback is not None:
            warnings.warn(
                f"{out}: {problem}; resuming from the previous complete checkpoint (step {fallback.weights.step})",
                stacklevel=2,
            )
            pair = fallback
    if pair is None:
        raise UserError(problem)
    ckpt = pair.weights
    if check is not None:
        check(ckpt)
    metrics = metrics_path(out)
    if metrics.is_file():  # damage the run cannot continue past: refused before anything changes
        read_metrics_records(metrics, ckpt.step)
    load_weights(model, ckpt)
    rng = _restore_optimizer(pair.optim, pair.tensors, pair.metadata, optimizer)
    _RUN_IDS[optimizer] = ckpt.run_id or uuid.uuid4().hex  # a format-1 run gets an id from now on
    if os.environ.get("RANK", "0") == "0":  # under torchrun every process loads; the first tidies
        _tidy(out, pair)
        _cut_metrics(out, ckpt)
    return Checkpoint(out, ckpt.tensors, ckpt.spec, ckpt.step, ckpt.metrics, ckpt.metadata), rng


def _tidy(out: Path, pair: _Pair) -> None:
    """After a crash mid-save: the chosen pair under the usual names, the rest removed."""
    moves = [(pair.weights.path, out), (pair.optim, optim_path(out))]
    for source, target in moves:
        if source != target:
            os.replace(source, target)  # the previous weights back in place; the staged optimizer file
    for leftover in (staged_optim_path(out), previous_path(out)):
        leftover.unlink(missing_ok=True)
    fsync_dir(out.parent if str(out.parent) else Path("."))


def _cut_metrics(out: Path, ckpt: Checkpoint) -> None:
    """Cut run.metrics.jsonl back to the bytes the checkpoint had seen (records written after it
    would be written again by the resumed run)."""
    position = ckpt.metadata.get("lgdram.metrics_bytes")
    path = metrics_path(out)
    if position is None or not position.isdigit() or not path.is_file():
        return
    size, position_ = path.stat().st_size, int(position)
    if size <= position_ or position_ == 0:
        return  # nothing past it (or the file was shortened since: the reader copes)
    with open(path, "rb") as f:
        f.seek(position_ - 1)
        if f.read(1) != b"\n":
            return  # not the file the checkpoint saw: leave it to the step filter
    os.truncate(path, position_)


def read_metrics_records(path: Path, upto_step: int | None = None) -> list[dict[str, Any]]:
    """The records of a metrics file (JSON lines), those of steps up to `upto_step` when given.
    A damaged last line (a run killed mid-write) is dropped with a warning; a damaged line
    elsewhere is a UserError naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise UserError(f"cannot read the metrics file {path}: {exc.strerror or exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, 1):
        try:
            record = json.loads(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            if number == len(lines):
                warnings.warn(f"{path}: its last line is cut short or damaged; dropped it", stacklevel=2)
                break
            raise UserError(
                f"{path} is damaged at line {number} of {len(lines)} ({str(exc).splitlines()[0][:80]}); "
                "repair or remove that line, then resume"
            ) from exc
        step = record.get("step", 0)
        if upto_step is None or not isinstance(step, (int, float)) or step <= upto_step:
            records.append(record)
    return records


@dataclass
class _Unsaved:
    """What `forget_unsaved_run` remembers of a run's checkpoint when the run starts."""

    out: Path
    resume: bool
    before: tuple[int, int, int] | None
    started: float

    def forget(self) -> None:
        """A new run that stopped before writing a checkpoint (disk full, divergence, bad input)
        leaves no metrics file of its own behind: nothing could resume or evaluate it."""
        if self.resume or _stat(self.out) != self.before:
            return  # resumed, or this run wrote a checkpoint: its metrics belong to it
        path = metrics_path(self.out)
        try:
            if path.is_file() and path.stat().st_mtime >= self.started:
                path.unlink()
        except OSError:
            pass


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def forget_unsaved_run(out: Path, resume: bool) -> _Unsaved:
    """Call at a run's start; `.forget()` when it fails, to remove what it wrote without a checkpoint."""
    import time

    return _Unsaved(Path(out), resume, _stat(out), time.time() - 1.0)
