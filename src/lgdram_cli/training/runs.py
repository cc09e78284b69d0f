"""A trained run, loaded back from its checkpoint: used by eval, visualize and export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.data.contract import generate_checked
from lgdram_cli.data.generators import DatasetGenerator
from lgdram_cli.data.h5io import CanvasFile
from lgdram_cli.data.presets import make_generator, resolve_dataset
from lgdram_cli.models.base import Model
from lgdram_cli.models.build import build_model
from lgdram_cli.specs import apply_overrides, expand_set_keys
from lgdram_cli.training import checkpoint as ckpt
from lgdram_cli.training import rundir
from lgdram_cli.training.feed import check_file_matches


@dataclass
class LoadedRun:
    path: Path
    spec: dict[str, Any]
    step: int
    metrics: dict[str, Any]
    generator: DatasetGenerator
    model: Model


def load_run(path: Path, device: torch.device | str = "cpu") -> LoadedRun:
    """Rebuild the model a checkpoint's spec describes and load its weights (validated).
    `path` is a checkpoint file or a run folder (its run.safetensors, which must be the run
    the folder's spec file, if it has one, describes)."""
    folder = Path(path) if Path(path).is_dir() else None
    path = rundir.checkpoint_of(Path(path))
    c = ckpt.load_checkpoint(path)
    if folder is not None:
        rundir.check_folder_spec(folder, c.spec, path)
    generator = make_generator(c.spec.get("dataset", {}), where=f"dataset (in {path})")
    model = build_model(
        c.spec.get("model", {}), generator.channels, tuple(generator.size), generator.classes, where=f"model (in {path})"
    )
    ckpt.load_weights(model, c)
    model.to(device).eval()
    return LoadedRun(Path(path), c.spec, c.step, c.metrics, generator, model)


def dataset_sets(sets: Optional[list[str]]) -> list[str]:
    """`--set` overrides of a dataset section on its own (eval, visualize): `canvas=100` and
    `dataset.canvas=100` alike, by the rule every command shares."""
    expanded = expand_set_keys(sets, top={"dataset"}, sections={"dataset": lambda: ()}, default="dataset")
    return [s.removeprefix("dataset.") for s in expanded]


def test_canvases(
    run: LoadedRun, *, data: Optional[Path] = None, dataset: Optional[str] = None,
    n: Optional[int] = None, seed: Optional[int] = None, sets: Optional[list[str]] = None,
) -> CanvasBatch:
    """Held-out canvases: a file, or generated from the test split (the run's own spec by default)."""
    if data is not None:
        file = CanvasFile(data)
        check_file_matches(file, run.model.channels, run.model.size, f"the model in {run.path}")
        batch, _ = file.read(slice(0, min(n or file.n, file.n)))
        return batch
    generator = run.generator
    if dataset or sets:
        spec = resolve_dataset(dataset) if dataset else dict(run.spec["dataset"])
        # `--set canvas=100` and `--set dataset.canvas=100` both address the dataset here
        generator = make_generator(apply_overrides(spec, dataset_sets(sets)))
        if (generator.channels, tuple(generator.size)) != (run.model.channels, run.model.size):
            from lgdram_cli.errors import UserError

            raise UserError(
                f"the dataset gives {generator.channels}-channel {generator.size[0]}x{generator.size[1]} canvases "
                f"but the model in {run.path} expects {run.model.channels}-channel {run.model.size[0]}x{run.model.size[1]}"
            )
    count = n or int(run.spec.get("eval_n", 1000))
    # the same batch check as gen-data and train: a plugin returning [N, H, W] is named here too
    return generate_checked(generator, count, "test", seed if seed is not None else int(run.spec.get("eval_seed", 1)))
