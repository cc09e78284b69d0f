"""Whole-image classifiers, the yardsticks for the attention models: `fc` and `cnn`.

For a fair comparison their default width is solved for so that the parameter count matches
a default-config RAM for the same channels and classes (RAM's count does not depend on the
canvas size, theirs does):
- fc: two hidden layers of width w, params = w² + (D + K + 2)·w + K with D = C·H·W inputs and
  K classes — the positive root of the quadratic;
- cnn: a fixed conv stack (32, 64, 64 channels, each followed by 2×2 max-pooling) then a
  hidden layer of width w — params are linear in w.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import model_validator
from torch import nn

from lgdram_cli.models.base import Model, ModelConfig, ModelOutput


def ram_parameter_count(channels: int, classes: int) -> int:
    """Parameters of a default-config RAM (the budget the baselines match)."""
    from lgdram_cli.models.ram import RAM

    ram = RAM(RAM.Config(), channels=channels, size=(60, 60), classes=classes)  # size does not matter
    return sum(p.numel() for p in ram.parameters())


class WholeImageConfig(ModelConfig):
    #: hidden width; None solves for the width that matches a default RAM's parameter count
    width: int | None = None

    @model_validator(mode="after")
    def _check(self) -> WholeImageConfig:
        if self.width is not None and self.width < 1:
            raise ValueError(f"width must be at least 1, got {self.width}")
        return self


def _output(logits: torch.Tensor, replicas: int) -> ModelOutput:
    """A whole-image model sees no glimpses: its M replicas of an image are copies."""
    return ModelOutput(logits=logits.repeat_interleave(replicas, dim=0) if replicas > 1 else logits)


class FCConfig(WholeImageConfig):
    type: str = "fc"


class FCClassifier(Model):
    """Fully connected classifier of the whole image (2 hidden ReLU layers)."""

    Config: ClassVar[type[FCConfig]] = FCConfig
    config: FCConfig
    description: ClassVar[str] = "whole-image MLP, width matched to RAM's parameter count"

    def __init__(self, config: FCConfig, *, channels: int, size: tuple[int, int], classes: int) -> None:
        super().__init__(config, channels=channels, size=size, classes=classes)
        d = channels * size[0] * size[1]
        w = config.width or self.matched_width(d, classes, ram_parameter_count(channels, classes))
        self.width = w
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(d, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, classes)
        )

    @staticmethod
    def matched_width(inputs: int, classes: int, budget: int) -> int:
        b = inputs + classes + 2
        return max(8, round((-b + math.sqrt(b * b + 4 * max(budget - classes, 0))) / 2))

    def forward(self, images: torch.Tensor, deterministic: bool = False, replicas: int = 1) -> ModelOutput:
        return _output(self.net(images), replicas)


class CNNConfig(WholeImageConfig):
    type: str = "cnn"


class CNNClassifier(Model):
    """Convolutional classifier of the whole image (3 conv + max-pool blocks, 1 hidden layer)."""

    Config: ClassVar[type[CNNConfig]] = CNNConfig
    config: CNNConfig
    description: ClassVar[str] = "whole-image CNN, width matched to RAM's parameter count"

    def __init__(self, config: CNNConfig, *, channels: int, size: tuple[int, int], classes: int) -> None:
        super().__init__(config, channels=channels, size=size, classes=classes)
        layers: list[nn.Module] = []
        h, w, c_in = size[0], size[1], channels
        for c_out, k in ((32, 5), (64, 5), (64, 3)):
            layers += [nn.Conv2d(c_in, c_out, k, padding=k // 2), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            h, w, c_in = (h + 1) // 2, (w + 1) // 2, c_out
        self.features = nn.Sequential(*layers, nn.Flatten())
        flat = c_in * h * w
        fixed = sum(p.numel() for p in self.features.parameters())
        if config.width:
            width = config.width
        else:  # budget = fixed + (flat + 1)·w + (w + 1)·K
            budget = ram_parameter_count(channels, classes)
            width = max(8, round((budget - fixed - classes) / (flat + 1 + classes)))
        self.width = width
        self.head = nn.Sequential(nn.Linear(flat, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, images: torch.Tensor, deterministic: bool = False, replicas: int = 1) -> ModelOutput:
        return _output(self.head(self.features(images)), replicas)
