"""Run folders: where `lgdram train` writes without `--out`, and how `eval`, `visualize`,
`export` and `--resume` find a run from its folder or its checkpoint file.

    runs/<dataset>-<model>-<annotations>-s<seed>/run.safetensors   (+ run.optim.safetensors,
                                                                     run.metrics.jsonl, …)

`<annotations>` is `0`, a share (`1pct`, `0.5pct`) or a fixed pool (`pool100`). A folder that
already holds a run is never reused: the next free one is `…-2`, `…-3`, … No torch here: a
wrong path must be answered before any model is loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from lgdram_cli.errors import UserError
from lgdram_cli.specs import flatten_spec

RUNS = Path("runs")
CHECKPOINT = "run.safetensors"
#: The files whose presence means "a run lives here" (or began here: never write over it).
RUN_FILES = (CHECKPOINT, "run.optim.safetensors", "run.metrics.jsonl", "run.spec.json")
#: The resolved spec a run writes beside its checkpoint.
RUN_SPEC = "run.spec.json"
SPEC_SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def annotations_label(share: float, pool: Optional[int]) -> str:
    """0 → '0'; 0.01 → '1pct'; a fixed pool of 100 → 'pool100'."""
    if pool:
        return f"pool{pool}"
    if not share:
        return "0"
    return f"{round(share * 100, 6):g}pct"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def default_run_folder(spec: Any, dataset: Optional[str] = None, root: Path = RUNS) -> Path:
    """`runs/<dataset>-<model>-<annotations>-s<seed>`: the dataset as given to --dataset (a
    recipe file by its stem), else the spec's generator type."""
    if dataset:
        path = Path(dataset)
        name = path.stem if path.suffix in SPEC_SUFFIXES or "/" in dataset or "\\" in dataset else dataset
    else:
        name = str(spec.dataset.get("type", "dataset"))
    model = str(spec.model.get("type", "model"))
    label = annotations_label(spec.annotations, spec.annotation_pool)
    return root / _safe(f"{name}-{model}-{label}-s{spec.seed}")


def holds_run(folder: Path, files: tuple[str, ...] = RUN_FILES) -> bool:
    return any((folder / name).exists() for name in files)


def numbered(base: Path) -> Iterator[Path]:
    """base, base-2, base-3, …"""
    yield base
    n = 2
    while True:
        yield base.with_name(f"{base.name}-{n}")
        n += 1


def free_run_folder(base: Path) -> Path:
    """The first of base, base-2, … that holds no run (it may exist, empty or with other files)."""
    return next(f for f in numbered(base) if not holds_run(f))


def latest_run_folder(base: Path) -> Optional[Path]:
    """The last of base, base-2, … (up to the first that does not exist) with a checkpoint."""
    latest = None
    for folder in numbered(base):
        if not folder.exists():
            return latest
        if holds_run(folder, (CHECKPOINT,)):
            latest = folder
    return latest  # pragma: no cover (numbered() never ends)


def check_can_create(folder: Path, option: str = "") -> None:
    """Refuse a folder that cannot be made or written (before anything is written)."""
    how = f"; pass {option} to write elsewhere" if option else ""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"cannot create run folder {folder}: {probe} is a file, not a folder{how}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot create run folder {folder}: {probe} is not writable{how}")


def make_folder(folder: Path, option: str = "") -> list[Path]:
    """Create `folder` (and missing parents); return the folders created, outermost first,
    so that a run that fails on bad input can remove them again."""
    check_can_create(folder, option)
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    created = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:  # made meanwhile by another process (another rank of the run)
            continue
        except OSError as exc:
            remove_empty(created)
            raise UserError(f"cannot create run folder {folder}: {exc.strerror or exc}") from exc
        created.append(path)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders `make_folder` created, innermost first, where they are still empty."""
    for path in reversed(folders):
        try:
            path.rmdir()
        except OSError:
            pass


def checkpoint_of(path: Path) -> Path:
    """A run folder (→ its run.safetensors) or a checkpoint file (as is). A folder that holds
    no run is bad input; when its sub-folders hold runs (a sweep's cell), they are named."""
    path = Path(path)
    if not path.is_dir():
        return path
    checkpoint = path / CHECKPOINT
    if checkpoint.is_file():
        return checkpoint
    inner = sorted(str(p.parent) for p in [*path.glob(f"*/{CHECKPOINT}"), *path.glob(f"*/*/{CHECKPOINT}")])
    if inner:
        shown = ", ".join(inner[:3]) + (" …" if len(inner) > 3 else "")
        raise UserError(f"{path} holds no run ({CHECKPOINT}) itself; name one of the runs inside: {shown}")
    raise UserError(f"{path} holds no run: {CHECKPOINT} not found in it (train one with 'lgdram train --out {path}')")


def spec_files(folder: Path) -> list[Path]:
    """A run folder's spec file(s): the run.spec.json training writes, and a `spec.toml` (or
    .json/.yaml/.yml) a user keeps beside the run (`lgdram train --spec runs/x/spec.toml --out runs/x`)."""
    names = [RUN_SPEC, *(f"spec{s}" for s in SPEC_SUFFIXES)]
    return [folder / name for name in names if (folder / name).is_file()]


#: Keys a run may change and still be the same run (extended or re-evaluated on --resume),
#: and data paths (they name files, not the run).
_MAY_DIFFER = {"steps", "eval_every", "eval_n", "eval_seed", "log_every", "checkpoint_every", "data", "test_data"}


def spec_mismatch(wanted: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """The keys a folder's spec file sets that the checkpoint's resolved spec records otherwise.
    Dataset parameters other than `type` are written in several forms (canvas 100 or [100, 100];
    a digit source that fell back), so only the generator is compared there."""
    from lgdram_cli.training.spec import parse_annotations

    wanted = dict(wanted)
    if "annotations" in wanted:
        share, pool = parse_annotations(wanted.pop("annotations"))
        wanted["annotations"] = share
        if pool is not None:
            wanted["annotation_pool"] = pool
    have = flatten_spec(recorded)
    different = []
    for key, value in flatten_spec(wanted).items():
        head = key.split(".")[0]
        if head in _MAY_DIFFER or (head == "dataset" and key != "dataset.type") or key == "":
            continue
        if value == {}:  # an empty section (`[loss.classification]`): it must be there
            if not any(k == key or k.startswith(f"{key}.") for k in have):
                different.append(key)
        elif key not in have or have[key] != value:
            different.append(key)
    return different


def check_folder_spec(folder: Path, recorded: dict[str, Any], checkpoint: Path) -> None:
    """Refuse a run folder whose spec file describes another run than its checkpoint holds."""
    from lgdram_cli.specs import read_spec_file

    for file in spec_files(folder):
        different = spec_mismatch(read_spec_file(file), recorded)
        if different:
            shown = ", ".join(different[:4]) + (" …" if len(different) > 4 else "")
            raise UserError(
                f"{folder} holds a different run than its spec file {file.name} describes: "
                f"{checkpoint.name} was trained with another {shown}"
            )


def existing_checkpoint(path: Path) -> Path:
    """`checkpoint_of`, and the file must exist: the check eval/visualize/export make before
    importing torch."""
    checkpoint = checkpoint_of(path)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    return checkpoint
