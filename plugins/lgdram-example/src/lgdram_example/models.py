"""`ram-ln`: RAM with layer normalisation of the glimpse features."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from lgdram.plugin_api import RAM, RAMConfig


class LayerNormRAMConfig(RAMConfig):
    type: str = "ram-ln"


class _NormedGlimpse(nn.Module):
    """Wraps a glimpse network: g ↦ LayerNorm(g), which keeps the core's input scale steady."""

    def __init__(self, inner: nn.Module, hidden: int) -> None:
        super().__init__()
        self.inner = inner
        self.norm = nn.LayerNorm(hidden)

    def forward(self, patches: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return self.norm(self.inner(patches, loc))


class LayerNormRAM(RAM):
    """RAM (Mnih et al. 2014) with layer-normalised glimpse features."""

    Config: ClassVar[type[LayerNormRAMConfig]] = LayerNormRAMConfig
    description: ClassVar[str] = "RAM with layer-normalised glimpse features (example plugin)"

    def __init__(self, config: LayerNormRAMConfig, *, channels: int, size: tuple[int, int], classes: int) -> None:
        super().__init__(config, channels=channels, size=size, classes=classes)
        self.glimpse = _NormedGlimpse(self.glimpse, config.hidden)
