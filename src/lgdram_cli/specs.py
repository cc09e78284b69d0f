"""Run specs: strict pydantic models, loaded from TOML/JSON/YAML and `--set key=value` overrides.

Validation is two-stage: a section's `type` (or name) picks a registry entry, then that
entry's own `Config` model validates the section's parameters. Unknown keys are errors,
never silently dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping
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
    from lgdram_cli.resources import MAX_SPEC_BYTES, human

    path = Path(path)
    if not path.is_file():
        raise UserError(f"spec file not found: {path}")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise UserError(f"spec file {path} is {size:,} bytes; spec files may hold at most {MAX_SPEC_BYTES:,} ({human(MAX_SPEC_BYTES)})")
    try:
        text = path.read_bytes()[: MAX_SPEC_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"spec file {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x})") from exc
    except OSError as exc:
        raise UserError(f"cannot read spec file {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader without aliases)
        else:
            raise UserError(f"spec file {path} must end in .toml, .json, .yaml or .yml")
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"cannot parse spec file {path}: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise UserError(f"spec file {path} must hold a table/mapping at the top level")
    return data


def _yaml_loader() -> type:
    """PyYAML's SafeLoader without anchors and aliases: a few hundred bytes of nested aliases
    ("billion laughs") expand to gigabytes, and a run spec has no use for them."""
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise yaml.YAMLError(
                    f"YAML anchors and aliases (&name, *name) are not allowed in spec files "
                    f"(line {event.start_mark.line + 1}); write the values out"
                )
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


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


def expand_set_keys(
    overrides: list[str] | None,
    *,
    top: Iterable[str] = (),
    sections: Mapping[str, Callable[[], Iterable[str]]],
    default: str | None = None,
    listing: str = "",
) -> list[str]:
    """The full paths of `--set` overrides as typed, one rule for every command.

    A key that starts with a top-level field (`steps=…`, `dataset.canvas=…`) stays as it is;
    a short key goes to the one section that has it (`canvas=200` → `dataset.canvas=200`,
    `lr=1e-4` → `optim.lr=1e-4`, `location.weight=2` → `loss.location.weight=2`), or to
    `default` when no section has it (gen-data: its dataset, whose config then names the
    unknown key). A short key that several sections have, or (without a default) none, is
    bad input naming the full key(s). `sections` maps a section's path to a function listing
    its keys, called only when a short key needs it (listing a model's keys loads the model).
    """
    top = set(top)
    cache: dict[str, set[str]] = {}

    def keys(section: str) -> set[str]:
        if section not in cache:
            cache[section] = set(sections[section]())
        return cache[section]

    expanded = []
    for item in overrides or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set expects key=value, got '{item}'")
        head, dot, rest = key.partition(".")
        if head in top:
            expanded.append(f"{key}={value}")
            continue
        if default is not None and list(sections) == [default]:
            expanded.append(f"{default}.{key}={value}")
            continue
        if dot:  # `location.weight`: a sub-section named by its last part
            matches = [s for s in sections if s.rsplit(".", 1)[-1] == head]
            paths = [f"{m}.{rest}" for m in matches]
        else:
            matches = [s for s in sections if key in keys(s)]
            paths = [f"{m}.{key}" for m in matches]
        if len(matches) == 1:
            expanded.append(f"{paths[0]}={value}")
        elif matches:
            raise UserError(f"--set {key}: ambiguous short key; use the full key: {' or '.join(paths)}")
        elif default is not None:
            expanded.append(f"{default}.{key}={value}")
        else:
            raise UserError(f"--set {key}: unknown key{_suggest_key(key, top, sections, keys)}{listing}")
    return expanded


def _suggest_key(
    key: str, top: set[str], sections: Mapping[str, Callable[[], Iterable[str]]], keys: Callable[[str], set[str]]
) -> str:
    """' (did you mean 'dataset.canvas'?)': the closest full key(s) to a mistyped short key."""
    import difflib

    head, dot, rest = key.partition(".")
    if dot:  # a mistyped section: `modle.hidden` → model.hidden
        names = {s.rsplit(".", 1)[-1]: s for s in sections} | {t: t for t in top}
        close = difflib.get_close_matches(head, list(names), n=1, cutoff=0.6)
        return f" (did you mean '{names[close[0]]}.{rest}'?)" if close else ""
    full: dict[str, list[str]] = {}
    for section in sections:
        for name in sorted(keys(section)):
            full.setdefault(name, []).append(f"{section}.{name}")
    for name in top:
        full.setdefault(name, []).append(name)
    close = difflib.get_close_matches(key, list(full), n=1, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(p) for p in full[close[0]])}?)" if close else ""


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


def flatten_spec(spec: Any, prefix: str = "") -> dict[str, Any]:
    """{'model': {'hidden': 32}} → {'model.hidden': 32}: the dotted keys `--set` uses, for
    naming the keys in which two specs differ."""
    if isinstance(spec, dict) and spec:
        out: dict[str, Any] = {}
        for k, v in spec.items():
            out.update(flatten_spec(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: spec}
