"""The model plugin contract (entry-point group `lgdram.models`).

Conventions every model honours:
- input: float32 images [B, C, H, W] with values in [0, 1], plus `replicas` M: the output
  has B·M rows, M consecutive Monte-Carlo replicas per image;
- locations are (x, y) in [-1, 1], x horizontal, the `grid_sample` (align_corners=False)
  convention: pixel column i of W has centre x = (2i + 1) / W - 1;
- `forward` returns a `ModelOutput`; attention models fill the policy fields, whole-image
  classifiers leave them None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from lgdram_cli import PLUGIN_API_VERSION
from lgdram_cli.registry import own_description
from lgdram_cli.specs import StrictModel


class ModelConfig(StrictModel):
    """Base of every model config: `type` names the registry entry."""

    type: str


@dataclass
class ModelOutput:
    """What a forward pass returns. T = number of glimpses, P = number of policy decisions."""

    logits: torch.Tensor  # [B, classes]: the final prediction
    step_logits: torch.Tensor | None = None  # [B, T, classes]: prediction after each glimpse (eval mode)
    locations: torch.Tensor | None = None  # [B, T, 2]: where each glimpse was taken (no grad)
    means: torch.Tensor | None = None  # [B, P, 2]: policy means (grad → location net, core)
    log_probs: torch.Tensor | None = None  # [B, P]: log π(a) of the actions taken (grad via means only)
    baselines: torch.Tensor | None = None  # [B, P]: predicted reward (grad → baseline net only)
    #: [B, P, 2]: the sampled actions a ~ N(mean, σ²) before clamping (no grad). The last P
    #: `locations` are these clamped to [-1, 1], where the retina reads; `log_probs` is scored
    #: at the unclamped action, so the score function stays unbiased near the border.
    actions: torch.Tensor | None = None


class Model(nn.Module):
    """Base class of every registered model."""

    plugin_api_version: ClassVar[int] = PLUGIN_API_VERSION
    Config: ClassVar[type[ModelConfig]] = ModelConfig
    #: one line for `lgdram plugins`; default: the first line of the class's own docstring (a
    #: RAM subclass with a docstring is not listed with RAM's description)
    description: ClassVar[str] = ""
    #: False for models that cannot be unrolled into a static ONNX/torch.export graph.
    exportable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own_description(cls)

    def __init__(self, config: ModelConfig, *, channels: int, size: tuple[int, int], classes: int) -> None:
        super().__init__()
        self.config = config
        self.channels = channels
        self.size = size
        self.classes = classes

    def forward(self, images: torch.Tensor, deterministic: bool = False, replicas: int = 1) -> ModelOutput:
        """`images` holds B distinct images; each is used `replicas` times in a row (rows
        r·M … r·M + M − 1 of every output belong to image r), so the output has B·M rows.
        `deterministic` takes the policy's mean locations instead of sampling."""
        raise NotImplementedError  # pragma: no cover
