"""Checkpoints: safetensors only (no pickle anywhere; a user's file is never `torch.load`ed).

`run.safetensors`        model weights + metadata: lgdram.spec (resolved spec JSON),
                         lgdram.format_version, lgdram.step, lgdram.metrics (last eval JSON),
                         lgdram.sha256 (of the tensor bytes, in name order).
`run.optim.safetensors`  optimizer moments, RNG states and the step, for an exact `--resume`.

Both are written to a temp file and renamed, so a crash mid-write never damages the last
good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lgdram_cli.atomic import atomic_path
from lgdram_cli.errors import UserError

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """A validated checkpoint file: its weights and what they came from."""

    path: Path
    tensors: dict[str, torch.Tensor]
    spec: dict[str, Any]
    step: int
    metrics: dict[str, Any]
    metadata: dict[str, str]


def sibling(path: Path, suffix: str) -> Path:
    """A file that belongs to a run: run.safetensors → run<suffix> beside it."""
    return path.with_name(path.name.removesuffix(".safetensors") + suffix)


def optim_path(path: Path) -> Path:
    """run.safetensors → run.optim.safetensors."""
    return sibling(path, ".optim.safetensors")


def metrics_path(path: Path) -> Path:
    """run.safetensors → run.metrics.jsonl."""
    return sibling(path, ".metrics.jsonl")


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def save_checkpoint(
    path: Path, model: torch.nn.Module, spec: dict[str, Any], step: int, metrics: dict[str, Any]
) -> None:
    tensors = {k: v for k, v in model.state_dict().items()}
    metadata = {
        "lgdram.format_version": str(FORMAT_VERSION),
        "lgdram.spec": json.dumps(spec, sort_keys=True),
        "lgdram.step": str(step),
        "lgdram.metrics": json.dumps(metrics, sort_keys=True),
        "lgdram.sha256": tensor_digest(tensors),
    }
    _atomic_save(tensors, metadata, path)


def _read(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; any defect is a UserError naming it."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for bad headers/sizes
        raise UserError(f"{path} is not a readable {what} (truncated or another format): {exc}") from exc


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint; every defect is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    tensors, metadata = _read(path, "safetensors checkpoint")
    if "lgdram.spec" not in metadata:
        raise UserError(f"{path} is a safetensors file but not an lgdram checkpoint (no lgdram.spec metadata)")
    version = metadata.get("lgdram.format_version", "?")
    if version != str(FORMAT_VERSION):
        raise UserError(f"{path} has checkpoint format version {version}; this lgdram reads {FORMAT_VERSION}")
    expected = metadata.get("lgdram.sha256")
    if expected and tensor_digest(tensors) != expected:
        raise UserError(f"{path} is corrupt: its tensors do not match the recorded SHA-256")
    try:
        spec = json.loads(metadata["lgdram.spec"])
        metrics = json.loads(metadata.get("lgdram.metrics", "{}"))
        step = int(metadata.get("lgdram.step", "0"))
    except ValueError as exc:
        raise UserError(f"{path} has unreadable lgdram metadata: {exc}") from exc
    return Checkpoint(path, tensors, spec, step, metrics, metadata)


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


def save_training_state(path: Path, optimizer: torch.optim.Optimizer, step: int, rng: dict[str, torch.Tensor]) -> None:
    """Optimizer moments + RNG states, as tensors; the param-group settings as JSON metadata."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"state.{index}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    for key, value in rng.items():
        tensors[f"rng.{key}"] = value
    metadata = {
        "lgdram.format_version": str(FORMAT_VERSION),
        "lgdram.step": str(step),
        "lgdram.param_groups": json.dumps(state["param_groups"]),
    }
    _atomic_save(tensors, metadata, path)


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
    except (ValueError, KeyError) as exc:
        raise UserError(f"{path} does not match the model's parameters: {exc}") from exc
    return rng
