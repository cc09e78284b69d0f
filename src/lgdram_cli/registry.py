"""Entry-point backed registries for datasets, models, losses and metrics loggers.

Finding plugins (reading entry-point metadata, cheap) is separate from loading them
(importing their code, possibly slow or broken). Built-ins are registered through lgdram's
own `pyproject.toml` exactly like a third-party plugin, so both take the same path.

A registry never lets a broken plugin take the program down: import errors, duplicate names,
wrong base classes and incompatible plugin-API versions are recorded as `problems` with the
providing distribution's name, reported by `lgdram plugins`, warned about when touched, and
raised as a `UserError` only when the user asks for that very entry (chained to the plugin's
own exception, so `--debug` shows the plugin's file and line).

Besides entry points, two in-process ways to use a class, for notebooks and quick experiments,
through the same validation:
- a `module:attr` name wherever a registered name goes (`--model my_models:ConvRAM`,
  `{"type": "my_models:ConvRAM"}`): imported by name (the current folder is searched too);
- `register(kind, name, obj)` (`lgdram.register`), also as a decorator.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.errors import UserError, unknown_name

BUILTIN_DIST = "lgdram"
DISABLE_ENV = "LGDRAM_DISABLE_PLUGINS"
#: `dist` of entries registered in this process (`register`) or imported by a `module:attr` name.
IN_PROCESS = "in-process"
#: A `module:attr` name: a dotted module path, a colon, a dotted attribute path.
TARGET = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


class PluginWarning(UserWarning):
    """Emitted when a plugin cannot be used; the message names its distribution."""


def plugins_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "") not in ("", "0")


def plugin_description(obj: Any) -> str:
    """The one line `lgdram plugins` shows for a plugin class: its `description` when the class
    sets one itself, else the first line of its own docstring, else what it inherits."""
    own = obj.__dict__ if isinstance(obj, type) else {}
    for text in (own.get("description"), own.get("__doc__"), getattr(obj, "description", None), getattr(obj, "__doc__", None)):
        if isinstance(text, str) and text.strip():
            return text.strip().splitlines()[0].strip()
    return ""


def own_description(cls: type) -> None:
    """For the bases' `__init_subclass__`: a subclass that does not set `description` itself
    gets the first line of its own docstring (not its base class's description)."""
    if "description" not in cls.__dict__ and isinstance(cls.__dict__.get("__doc__"), str) and cls.__doc__.strip():
        cls.description = plugin_description(cls)


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
    #: what messages say the entry comes from, when not a distribution (in-process entries)
    where: str | None = None
    #: the plugin's own exception behind `error` (an import error), chained to the UserError
    cause: BaseException | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return self.where or f"{self.dist} {self.dist_version}".strip()

    @property
    def what(self) -> str:
        """How messages name the entry: "model 'ram-ln' from 'lgdram-example 0.1.0'"."""
        return f"{self.registry.kind} '{self.name}' from '{self.origin}'"

    @property
    def builtin(self) -> bool:
        return self.dist.lower() == BUILTIN_DIST

    def load(self) -> Any:
        """Import and validate the entry's object; raise UserError naming the plugin on failure,
        chained to the plugin's own exception when there is one."""
        if self._obj is not None:
            return self._obj
        if self.error is None:
            try:
                if self.ep is not None:
                    obj = self.ep.load()
                else:
                    obj = _import_target(self.target, from_cwd=self.dist == IN_PROCESS)
                obj = self.registry.adapt(obj, self.name)
                self.error = self.registry.validate(obj)
                if self.error is None:
                    self._obj = obj
            except Exception as exc:  # a plugin may raise anything at import time
                self.error = f"failed to import {self.target}: {type(exc).__name__}: {exc}"
                self.cause = exc
        if self.error is not None:
            raise UserError(f"{self.what} cannot be used: {self.error}") from self.cause
        return self._obj

    @property
    def description(self) -> str:
        try:
            obj = self.load()
        except UserError:
            return f"BROKEN: {self.error}"
        return plugin_description(obj)


def _import_target(target: str, from_cwd: bool = False) -> Any:
    """The object `module:attr` names; `from_cwd`: the current folder is searched for the module
    too (as `python -m` does; the `lgdram` console script does not otherwise)."""
    module, _, attr = target.partition(":")
    if from_cwd and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj: Any = importlib.import_module(module)
    for part in attr.split(".") if attr else []:
        obj = getattr(obj, part)
    return obj


def _describe_object(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or "?"
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class Registry:
    """Names → plugin classes for one entry-point group (e.g. `lgdram.datasets`)."""

    def __init__(self, group: str, kind: str, base: str, adapter: str | None = None) -> None:
        self.group = group
        self.kind = kind  # "dataset", "model", "loss", "logger": used in messages
        self._base_target = base  # "module:Class" every entry must subclass
        #: "module:function" that turns a plain function into a plugin class (datasets), or None
        self._adapter_target = adapter
        self.problems: list[str] = []
        self._local: dict[str, Entry] = {}  # `register`ed in this process
        self._targets: dict[str, Entry] = {}  # `module:attr` names met so far

    @cached_property
    def _entries(self) -> dict[str, Entry]:
        only_builtins = plugins_disabled()
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
        """Every registered name: entry points and in-process registrations (not `module:attr`)."""
        return sorted(set(self._entries) | set(self._local))

    def entries(self) -> list[Entry]:
        return [self._local.get(n) or self._entries[n] for n in self.names()]

    def entry(self, name: str) -> Entry:
        """The entry `name` stands for: a registered name, or a `module:attr` to import."""
        if name in self._local:
            return self._local[name]
        if name in self._entries:
            return self._entries[name]
        if TARGET.fullmatch(name):
            if name not in self._targets or self._targets[name].error is not None:  # a fixed module: try again
                self._targets[name] = Entry(
                    self, name, name, IN_PROCESS, "", where=f"{name.partition(':')[0]}, imported by name"
                )
            return self._targets[name]
        raise self.unknown(name)

    def unknown(self, name: str, also: Any = ()) -> UserError:
        """The error for a name that is neither registered nor `module:attr`: the closest name,
        the usable ones (not those known to be broken), and why plugins may be missing. `also`:
        more valid names (dataset presets). Imports no plugin."""
        if plugins_disabled():
            for ep in entry_points(group=self.group):
                if ep.name == name and ep.dist is not None and ep.dist.name.lower() != BUILTIN_DIST:
                    return UserError(
                        f"{self.kind} '{name}' comes from the plugin '{ep.dist.name} {ep.dist.version}', and "
                        f"plugins are disabled ({DISABLE_ENV}=1); unset {DISABLE_ENV} to use it"
                    )
        broken = [e.name for e in self.entries() if self._known_broken(e)]
        usable = [n for n in self.names() if n not in broken]
        message = str(unknown_name(self.kind, name, [*usable, *also]))
        if broken:
            message += f"; not usable: {', '.join(broken)} (see 'lgdram plugins')"
        if plugins_disabled():
            message += f"; plugins are disabled ({DISABLE_ENV}=1): only lgdram's built-ins are available"
        return UserError(message)

    def _known_broken(self, entry: Entry) -> bool:
        """Whether `entry` is known not to load, without running plugin code: a recorded error
        (duplicate names, an earlier failed load), or a third-party module that is not there."""
        if entry.error is not None:
            return True
        if entry._obj is not None or entry.builtin or entry.ep is None:
            return False
        module = entry.target.partition(":")[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except Exception:  # a parent package that fails to import, a malformed name
            found = False
        if not found:
            entry.error = f"failed to import {entry.target}: no module named '{module}'"
        return not found

    def register(self, name: str, obj: Any) -> Any:
        """Make `obj` usable as `name` in this process, validated like an entry point's class
        (a function, for datasets: see `adapt`). Registering a name again replaces the earlier
        registration (a notebook cell run twice); an installed plugin's name is refused.
        Returns `obj`, so that it works as a decorator."""
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_+-]*", name):
            raise UserError(
                f"cannot register {self.kind} {name!r}: a name is letters, digits, '_', '-' and '+' "
                "(no '.', ':', '=' or spaces: it goes into --set keys and spec files)"
            )
        if name in self._entries:
            raise UserError(
                f"cannot register {self.kind} '{name}': {self._entries[name].what} already has that name; pick another"
            )
        plugin = self.adapt(obj, name)
        error = self.validate(plugin)
        if error is not None:
            raise UserError(f"cannot register {self.kind} '{name}' ({_describe_object(obj)}): {error}")
        self._local[name] = Entry(
            self, name, _describe_object(obj), IN_PROCESS, "", _obj=plugin,
            where=f"{_describe_object(obj)}, registered in-process",
        )
        return obj

    def unregister(self, name: str) -> None:
        """Forget an in-process registration (no-op for other names)."""
        self._local.pop(name, None)

    def adapt(self, obj: Any, name: str) -> Any:
        """The plugin class for `obj`: `obj` itself, or for a plain function where this registry
        has an adapter (datasets: a generate function) the class wrapping it."""
        if self._adapter_target is None or isinstance(obj, type) or not callable(obj):
            return obj
        return _import_target(self._adapter_target)(obj, name)

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
        """Forget discovered entries (tests install plugins at run time); in-process
        registrations stay."""
        self.__dict__.pop("_entries", None)
        self._targets.clear()
        self.problems.clear()


DATASETS = Registry(
    "lgdram.datasets", "dataset", "lgdram_cli.data.generators:DatasetGenerator",
    adapter="lgdram_cli.data.generators:function_task",
)
MODELS = Registry("lgdram.models", "model", "lgdram_cli.models.base:Model")
LOSSES = Registry("lgdram.losses", "loss", "lgdram_cli.losses:Loss")
LOGGERS = Registry("lgdram.loggers", "logger", "lgdram_cli.training.loggers:Logger")
REGISTRIES = (DATASETS, MODELS, LOSSES, LOGGERS)

KINDS: dict[str, Registry] = {r.kind: r for r in REGISTRIES}


def register(kind: str, name: str, obj: Any = None) -> Any:
    """Register `obj` as the `kind` ("dataset", "model", "loss" or "logger") called `name`, in
    this process, through the same validation as an installed plugin's entry point. Without
    `obj`, a decorator: `@register("model", "conv-ram")`. Returns `obj`."""
    if kind not in KINDS:
        raise unknown_name("plugin kind", str(kind), KINDS)
    registry = KINDS[kind]
    if obj is None:
        def decorate(target: Callable[..., Any]) -> Callable[..., Any]:
            return registry.register(name, target)

        return decorate
    return registry.register(name, obj)
