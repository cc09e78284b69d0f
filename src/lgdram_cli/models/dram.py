"""DRAM, the deep recurrent attention model of Ba et al. (2014).

Two recurrent layers: the bottom one (r1) integrates glimpses and classifies; the top one (r2)
reads r1 and drives the policy (location mean and baseline). A context network looks at a
down-sampled whole image and initialises r2, so DRAM chooses its first glimpse too: P = T
policy decisions (one from the context state, then one after each glimpse but the last).
The detachment rules are RAM's (see `ram.py`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from lgdram_cli.models.base import ModelOutput
from lgdram_cli.models.cores import Core
from lgdram_cli.models.ram import AttentionConfig, AttentionModel


class DRAMConfig(AttentionConfig):
    type: str = "dram"
    #: Ba et al. and the LG-DRAM seed use two scales of 12×12 for DRAM (RAM: three)
    scales: int = 2
    #: side the whole image is area-averaged down to for the context network (None: 2·glimpse_size)
    context_size: int | None = None

    @model_validator(mode="after")
    def _check_context(self) -> DRAMConfig:
        if self.context_size is not None and self.context_size < 4:
            raise ValueError(f"context_size must be at least 4, got {self.context_size}")
        return self


class ContextNetwork(nn.Module):
    """Coarse whole-image view → initial top-layer state: integer area pooling, 3 convs, linear.

    Pooling by an integer factor (k = ceil(longer side / context_size)) keeps it exportable.
    """

    def __init__(self, channels: int, size: tuple[int, int], context: int, hidden: int, bounded: bool) -> None:
        super().__init__()
        self.factor = max(1, math.ceil(max(size) / context))
        h, w = (max(1, s // self.factor) for s in size)
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 16, 5, padding=2),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        h, w = (h + 1) // 2, (w + 1) // 2
        h, w = (h + 1) // 2, (w + 1) // 2
        self.out = nn.Linear(32 * h * w, hidden)
        self.bounded = bounded  # LSTM/GRU states live in (-1, 1): use tanh; the ReLU RNN's are >= 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(images, self.factor) if self.factor > 1 else images
        x = self.out(self.convs(x))
        return torch.tanh(x) if self.bounded else F.relu(x)


class DRAM(AttentionModel):
    """Deep recurrent attention model (Ba et al. 2014): 2-layer core, context picks glimpse 1."""

    Config: ClassVar[type[DRAMConfig]] = DRAMConfig
    config: DRAMConfig
    description: ClassVar[str] = "deep recurrent attention model (Ba et al. 2014) with a context network"

    def __init__(self, config: DRAMConfig, *, channels: int, size: tuple[int, int], classes: int) -> None:
        super().__init__(config, channels=channels, size=size, classes=classes)
        c = config
        self.context = ContextNetwork(
            channels, size, c.context_size or 2 * c.glimpse_size, c.hidden, bounded=c.core != "rnn"
        )
        self.core = Core(c.core, c.hidden, c.hidden)  # bottom layer r1: glimpses → classification
        self.top = Core(c.core, c.hidden, c.hidden)  # top layer r2: r1 → where to look next

    def forward(self, images: torch.Tensor, deterministic: bool = False, replicas: int = 1) -> ModelOutput:
        """`images` [B, C, H, W]; with `replicas` M every image is run M times (rows r·M … r·M+M−1)."""
        T = self.config.glimpses
        n = self._rows(images, replicas)
        sensed = self.retina.prepare(images, reuse=True)  # held only during this call
        r2 = self.context(images)
        if replicas > 1:
            r2 = r2.repeat_interleave(replicas, dim=0)
        noise = self._noise(n, T, images, deterministic)
        bottom, top = self.core.init_state(), self.top.init_state(r2)
        states, tops, means, locations, actions = [], [], [], [], []
        for t in range(T):
            tops.append(r2)
            means.append(self.policy_mean(r2))
            actions.append(self._act(means[-1], None if noise is None else noise[:, t]))
            loc = self.look(actions[-1])
            locations.append(loc)
            r1, bottom = self.core(self.glimpse(self.retina.glimpse(sensed, loc, replicas), loc), bottom)
            states.append(r1)
            if t < T - 1:
                r2, top = self.top(r1, top)
        return self._output(
            torch.stack(states), torch.stack(tops), torch.stack(means), torch.stack(locations),
            actions=torch.stack(actions),
        )
