"""Building a model from its spec section: the registry entry its `type` names, then its Config."""

from __future__ import annotations

from typing import Any

from lgdram_cli.errors import UserError
from lgdram_cli.models.base import Model
from lgdram_cli.registry import MODELS
from lgdram_cli.specs import validate


def build_model(
    model_spec: dict[str, Any], channels: int, size: tuple[int, int], classes: int, where: str = "model"
) -> Model:
    """Two-stage: `type` picks the registry entry, its Config validates the parameters."""
    if "type" not in model_spec:
        raise UserError("the model spec needs a 'type' (e.g. ram or dram)")
    entry = MODELS.entry(str(model_spec["type"]))
    cls = entry.load()
    model = cls(validate(cls.Config, model_spec, where=where), channels=channels, size=size, classes=classes)
    model.origin = f"model '{entry.name}' from '{entry.origin}'"  # for error messages
    return model
