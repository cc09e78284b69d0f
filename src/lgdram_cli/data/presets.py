"""Dataset presets: one recipe file per task of the papers, shipped in the wheel.

`--dataset` accepts a generator name (`mcmnist`), a preset name (`mcmnist-100`) or a path to
a recipe file (TOML/JSON/YAML). A recipe is a dataset spec: `type` plus parameters; its
first comment line is its description. A preset may also carry a `[train]` table: the training
settings its default `lgdram train --dataset NAME` run needs to learn in its default steps
(measured: README, "Tasks"), applied where neither a spec file nor an option sets them.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from lgdram_cli.errors import unknown_name
from lgdram_cli.registry import DATASETS, TARGET
from lgdram_cli.specs import read_spec_file

SUFFIXES = (".toml", ".json", ".yaml", ".yml")


def preset_dir(packaged_as: str = "presets", checkout: str = "datasets") -> Path:
    """Installed wheels carry the presets as package data; a source checkout has `datasets/`
    (and `experiments/` for the experiment recipes, packaged as `lgdram_cli/experiments`)."""
    packaged = Path(str(resources.files("lgdram_cli") / packaged_as))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / checkout


def presets() -> dict[str, Path]:
    directory = preset_dir()
    return {p.stem: p for p in sorted(directory.glob("*.toml"))} if directory.is_dir() else {}


def experiments() -> dict[str, Path]:
    """The shipped experiment recipes (whole run specs, one per row of docs/results.md)."""
    directory = preset_dir("experiments", "experiments")
    return {p.stem: p for p in sorted(directory.glob("*.toml"))} if directory.is_dir() else {}


def resolve_spec_file(name: str | Path) -> Path:
    """`--spec` takes a path or the name of a shipped experiment recipe (`ldram-cmnist-100`)."""
    path = Path(name)
    if path.exists() or path.suffix in SUFFIXES:
        return path
    found = experiments()
    if str(name) in found:
        return found[str(name)]
    raise unknown_name("spec file or experiment recipe", str(name), set(found))


def describe(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


#: a preset's table of training defaults (not part of the dataset spec)
TRAIN_TABLE = "train"


def resolve_dataset(name: str) -> dict[str, Any]:
    """The dataset spec (a dict with `type`) that `--dataset NAME` stands for."""
    path = Path(name)
    if path.suffix in SUFFIXES and (path.exists() or "/" in name or "\\" in name):
        return _without_train(read_spec_file(path))
    found = presets()
    if name in found:
        return _without_train(read_spec_file(found[name]))
    if name in DATASETS.names():
        return {"type": name}
    if TARGET.fullmatch(name):  # `my_tasks:SpeckleTask`: a class (or generate function) imported by name
        DATASETS.entry(name).load()
        return {"type": name}
    raise DATASETS.unknown(name, also=found)


def _without_train(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != TRAIN_TABLE}


def train_defaults(name: str) -> dict[str, Any]:
    """The `[train]` table of preset (or recipe file) `name`: a partial train spec; {} if none."""
    path = Path(name)
    if not (path.suffix in SUFFIXES and path.exists()):
        path = presets().get(name)  # type: ignore[assignment]
    if path is None:
        return {}
    table = read_spec_file(path).get(TRAIN_TABLE) or {}
    if not isinstance(table, dict):
        from lgdram_cli.errors import UserError

        raise UserError(f"{path}: '{TRAIN_TABLE}' must be a table of training settings ([train]), not {table!r}")
    return table


def make_generator(spec: dict[str, Any], where: str = "dataset") -> Any:
    """Two-stage validation: `type` picks the registry entry, its Config validates the rest."""
    from lgdram_cli.errors import UserError
    from lgdram_cli.specs import validate

    if not isinstance(spec, dict) or "type" not in spec:
        raise UserError(f"the {where} spec needs a 'type' (a generator name such as 'mcmnist')")
    entry = DATASETS.entry(str(spec["type"]))
    cls = entry.load()
    generator = cls(validate(cls.Config, spec, where=where))
    generator.origin = f"dataset '{entry.name}' from '{entry.origin}'"  # for error messages
    return generator
