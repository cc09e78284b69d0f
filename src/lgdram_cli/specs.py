"""Run specs: strict pydantic models, loaded from TOML/JSON/YAML and `--set key=value` overrides.

Validation is two-stage: a section's `type` (or name) picks a registry entry, then that
entry's own `Config` model validates the section's parameters. Unknown keys are errors,
never silently dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from lgdram_cli.errors import UserError, suggest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class StrictModel(BaseModel):
    """Base of every spec and plugin config: unknown keys are errors, values are re-validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """A spec file as a plain dict; the format is chosen by the file's suffix."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise UserError(f"spec file {path} must end in .toml, .json, .yaml or .yml")
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot parse spec file {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise UserError(f"spec file {path} must hold a table/mapping at the top level")
    return data


def parse_value(text: str) -> Any:
    """Interpret an override's value: JSON where it parses (numbers, bools, lists), else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `a.b=value` overrides to a nested dict (returns a new dict)."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set expects key=value, got '{item}'")
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: '{part}' is a value, not a section")
            node = child
        node[leaf] = parse_value(value.strip())
    return out


def validate(model: type[BaseModel], data: dict[str, Any], where: str = "") -> Any:
    """Validate `data` against `model`, turning the first pydantic error into one clear line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, model, where)) from exc


def describe_validation_error(exc: ValidationError, model: type[BaseModel], where: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    full = f"{where}.{loc}" if where and loc else (where or loc)
    if err["type"] == "extra_forbidden":
        known = list(model.model_fields)
        leaf = str(err["loc"][-1])
        return (
            f"unknown key '{full}'{suggest(leaf, known)}; valid keys: {', '.join(known)}"
        )
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"invalid value for '{full}': {msg}{more}" if full else f"invalid spec: {msg}{more}"
