"""Entry-point backed registries for datasets, models and losses.

Finding plugins (reading entry-point metadata, cheap) is separate from loading them
(importing their code, possibly slow or broken). Built-ins are registered through lgdram's
own `pyproject.toml` exactly like a third-party plugin, so both take the same path.

A registry never lets a broken plugin take the program down: import errors, duplicate names,
wrong base classes and incompatible plugin-API versions are recorded as `problems` with the
providing distribution's name, reported by `lgdram plugins`, warned about when touched, and
raised as a `UserError` only when the user asks for that very entry.
"""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.errors import UserError, unknown_name

BUILTIN_DIST = "lgdram"
DISABLE_ENV = "LGDRAM_DISABLE_PLUGINS"


class PluginWarning(UserWarning):
    """Emitted when a plugin cannot be used; the message names its distribution."""


@dataclass
class Entry:
    """One registered name: where it comes from and, once loaded, what it is."""

    registry: Registry
    name: str
    target: str  # "module:attr"
    dist: str
    dist_version: str
    ep: EntryPoint | None = field(default=None, repr=False)
    error: str | None = None
    _obj: Any = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return f"{self.dist} {self.dist_version}".strip()

    def load(self) -> Any:
        """Import and validate the entry's object; raise UserError naming the plugin on failure."""
        if self._obj is not None:
            return self._obj
        if self.error is None:
            try:
                obj = self.ep.load() if self.ep is not None else _import_target(self.target)
                self.error = self.registry.validate(obj)
                if self.error is None:
                    self._obj = obj
            except Exception as exc:  # a plugin may raise anything at import time
                self.error = f"failed to import {self.target}: {type(exc).__name__}: {exc}"
        if self.error is not None:
            raise UserError(
                f"{self.registry.kind} '{self.name}' from distribution '{self.origin}' "
                f"cannot be used: {self.error}"
            )
        return self._obj

    @property
    def description(self) -> str:
        try:
            obj = self.load()
        except UserError:
            return f"BROKEN: {self.error}"
        doc = (getattr(obj, "description", None) or obj.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


def _import_target(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


class Registry:
    """Names → plugin classes for one entry-point group (e.g. `lgdram.datasets`)."""

    def __init__(self, group: str, kind: str, base: str) -> None:
        self.group = group
        self.kind = kind  # "dataset", "model", "loss": used in messages
        self._base_target = base  # "module:Class" every entry must subclass
        self.problems: list[str] = []

    @cached_property
    def _entries(self) -> dict[str, Entry]:
        only_builtins = os.environ.get(DISABLE_ENV, "") not in ("", "0")
        found: dict[str, Entry] = {}
        duplicates: dict[str, list[Entry]] = {}
        for ep in entry_points(group=self.group):
            dist = ep.dist.name if ep.dist is not None else "unknown"
            version = ep.dist.version if ep.dist is not None else ""
            if only_builtins and dist.lower() != BUILTIN_DIST:
                continue
            entry = Entry(self, ep.name, ep.value, dist, version, ep)
            if ep.name in found:
                # Two installs of the same distribution (e.g. editable + site) are not a clash.
                if found[ep.name].dist == dist and found[ep.name].target == ep.value:
                    continue
                duplicates.setdefault(ep.name, [found[ep.name]]).append(entry)
            else:
                found[ep.name] = entry
        for name, entries in duplicates.items():
            origins = " and ".join(f"'{e.origin}'" for e in entries)
            message = f"name registered twice, by {origins}; uninstall one of them"
            for e in entries:
                e.error = message
            found[name] = entries[0]
            self.problems.append(f"{self.kind} '{name}': {message}")
        return found

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise unknown_name(self.kind, name, self.names())
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The loaded, validated plugin class for `name`."""
        return self.entry(name).load()

    def usable(self) -> dict[str, Any]:
        """Every entry that loads; broken ones are skipped with a PluginWarning."""
        out = {}
        for entry in self.entries():
            try:
                out[entry.name] = entry.load()
            except UserError as exc:
                warnings.warn(str(exc), PluginWarning, stacklevel=2)
        return out

    def validate(self, obj: Any) -> str | None:
        """None when `obj` honours the plugin contract, else the reason it does not."""
        base = _import_target(self._base_target)
        if not (isinstance(obj, type) and issubclass(obj, base)):
            return f"{obj!r} is not a subclass of {base.__module__}.{base.__qualname__}"
        declared = getattr(obj, "plugin_api_version", None)
        if declared != PLUGIN_API_VERSION:
            return (
                f"built for plugin API version {declared}, but this lgdram speaks version "
                f"{PLUGIN_API_VERSION}; upgrade the plugin or lgdram"
            )
        config = getattr(obj, "Config", None)
        from pydantic import BaseModel

        if not (isinstance(config, type) and issubclass(config, BaseModel)):
            return "has no `Config` pydantic model"
        return None

    def reset(self) -> None:
        """Forget discovered entries (tests install plugins at run time)."""
        self.__dict__.pop("_entries", None)
        self.problems.clear()


DATASETS = Registry("lgdram.datasets", "dataset", "lgdram_cli.data.generators:DatasetGenerator")
MODELS = Registry("lgdram.models", "model", "lgdram_cli.models.base:Model")
LOSSES = Registry("lgdram.losses", "loss", "lgdram_cli.losses:Loss")
REGISTRIES = (DATASETS, MODELS, LOSSES)
