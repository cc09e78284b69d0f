"""Assembling a training run's spec from its sources, as `lgdram train` and `lgdram.train` do.

Precedence, lowest first: a checkpoint's spec (`--resume`) ← a spec file ← options
(`--dataset`, `--model`, `--loss`, …) ← `--set` overrides. Names are checked against the
registries before anything heavy is imported (an unknown name answers fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def train_spec(
    *,
    resume_from: Optional[dict[str, Any]] = None,
    spec_file: Optional[Path] = None,
    dataset: Optional[str] = None,
    model: Optional[str] = None,
    data: Optional[Path] = None,
    annotations: Optional[str] = None,
    sets: Optional[list[str]] = None,
    losses: Optional[list[str]] = None,
    **fields: Any,
) -> Any:
    """Assemble the TrainSpec: checkpoint (resume) ← spec file ← options ← --set overrides.
    `losses`: `--loss` items, `NAME` or `NAME=WEIGHT` (NAME a registered loss or `module:Class`),
    each adding that term to the spec's loss (its weight set, its other parameters default)."""
    from lgdram_cli.data.presets import resolve_dataset, resolve_spec_file, train_defaults
    from lgdram_cli.errors import UserError
    from lgdram_cli.registry import DATASETS, IN_PROCESS, LOSSES, MODELS
    from lgdram_cli.specs import apply_overrides, read_spec_file, validate
    from lgdram_cli.training.spec import TrainSpec, parse_annotations

    spec: dict[str, Any] = dict(resume_from or {})
    if spec_file:
        spec.update(read_spec_file(resolve_spec_file(spec_file)))
    if dataset:
        spec["dataset"] = resolve_dataset(dataset)
        # the preset's own training defaults, below the spec file and every option
        spec = fill_missing(spec, train_defaults(dataset))
    file_n = None
    for option, path in (("--data", data), ("--test-data", fields.get("test_data"))):
        if path is not None and not Path(path).is_file():  # answered before torch is imported
            raise UserError(f"dataset file not found: {path} ({option})")
    if data:
        from lgdram_cli.data.h5io import CanvasFile

        file = CanvasFile(data)
        file_n = file.n
        spec["data"] = str(data)
        if not dataset and "dataset" not in spec and file.spec.get("dataset"):
            spec["dataset"] = file.spec["dataset"]  # the file knows what it holds
    if model:
        current = spec.get("model", {})
        spec["model"] = current if current.get("type") == model else {"type": model}
    spec.update({k: (str(v) if isinstance(v, Path) else v) for k, v in fields.items() if v is not None})
    if annotations is not None:
        share, pool = parse_annotations(annotations, "--annotations")
        if pool is not None and file_n is not None and pool > file_n:
            raise UserError(f"--annotations {pool} is more than the {file_n} images of {data}; use at most {file_n} or a share like 1%")
        spec["annotations"], spec["annotation_pool"] = share, pool
    for section in ("dataset", "model", "loss"):  # so `--set model.core=rnn` edits the default model
        if section not in spec:
            spec[section] = TrainSpec.model_fields[section].default_factory()
    for item in losses or []:
        name, weight = parse_loss_option(item)
        LOSSES.entry(name).load()  # an unknown or broken name answers here; `module:Class` is imported
        term = dict(spec["loss"].get(name) or {}) if isinstance(spec["loss"], dict) else {}
        if weight is not None:
            term["weight"] = weight
        spec["loss"] = {**(spec["loss"] if isinstance(spec["loss"], dict) else {}), name: term}
    spec = apply_overrides(spec, expand_train_sets(spec, sets))
    for registry, section in ((DATASETS, "dataset"), (MODELS, "model")):  # unknown names: fast, before any import
        if isinstance(spec.get(section), dict) and "type" in spec[section]:
            entry = registry.entry(str(spec[section]["type"]))
            if entry.dist == IN_PROCESS and entry.ep is None:  # `module:Class`: import it now, named
                entry.load()
    if isinstance(spec.get("loss"), dict):  # `--set loss.reinforce=null` removes a term
        spec["loss"] = {k: v for k, v in spec["loss"].items() if v is not None}
    return validate(TrainSpec, spec)


def fill_missing(spec: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`spec` with the values of `defaults` it does not set, recursively (its own win). A section
    whose `type` differs from the default's keeps none of the default's keys (they belong to
    another model, dataset or loss)."""
    out = dict(spec)
    for key, value in defaults.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if value.get("type", out[key].get("type")) != out[key].get("type", value.get("type")):
                continue
            out[key] = fill_missing(out[key], value)
        elif key not in out:
            out[key] = value
    return out


def expand_train_sets(spec: dict[str, Any], sets: Optional[list[str]]) -> list[str]:
    """`--set` keys of the train spec in full: `canvas=200` → `dataset.canvas=200`, `glimpses=4`
    → `model.glimpses=4`, `lr=1e-4` → `optim.lr=1e-4`, `gamma_start=1` → `loss.location.gamma_start=1`."""
    from lgdram_cli.registry import DATASETS, LOSSES, MODELS
    from lgdram_cli.specs import apply_overrides, expand_set_keys
    from lgdram_cli.training.spec import OptimSpec, TrainSpec

    if not sets:
        return []
    top = set(TrainSpec.model_fields)
    # the sections' types as the full keys leave them (`--set model.type=dram` picks DRAM's keys)
    given = apply_overrides(spec, [s for s in sets if s.partition("=")[0].strip().split(".")[0] in top])

    def config_keys(registry: Any, section: Any) -> Any:
        name = section.get("type") if registry is not LOSSES else section
        return lambda: registry.get(str(name)).Config.model_fields if name is not None else ()

    sections = {
        "dataset": config_keys(DATASETS, given.get("dataset") or {}),
        "model": config_keys(MODELS, given.get("model") or {}),
        "optim": lambda: OptimSpec.model_fields,
    }
    for name, term in (given.get("loss") or {}).items():
        if term is not None:
            sections[f"loss.{name}"] = config_keys(LOSSES, name)
    return expand_set_keys(sets, top=top, sections=sections, listing="; 'lgdram schema train' lists every key")


def parse_loss_option(item: str) -> tuple[str, Optional[float]]:
    """`--loss NAME` → (NAME, None); `--loss NAME=0.5` → (NAME, 0.5)."""
    from lgdram_cli.errors import UserError

    name, sep, weight = item.partition("=")
    name = name.strip()
    if not name:
        raise UserError(f"--loss {item!r}: give a loss name (e.g. rloo, or my_losses:MyLoss), optionally =WEIGHT")
    if not sep:
        return name, None
    try:
        return name, float(weight)
    except ValueError:
        raise UserError(f"--loss {item}: the weight '{weight.strip()}' is not a number") from None
