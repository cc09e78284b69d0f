"""Recurrent cores behind one interface, so RAM and DRAM can swap them by name.

A core maps (input, state) → (output, state). The state is a tuple of tensors — (h, c) for the
LSTM, (h,) for the others — and `output` is always the hidden vector h, which is what the
location, baseline and classifier heads read.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lgdram_cli.models.precision import autocasting, cell_step

CoreName = Literal["lstm", "rnn", "gru"]
State = tuple[torch.Tensor, ...]


class Core(nn.Module):
    """One recurrent layer: `lstm` (nn.LSTMCell), `rnn` (Mnih et al.: h' = ReLU(W·h + U·x)) or `gru`."""

    def __init__(self, kind: CoreName, input_size: int, hidden: int) -> None:
        super().__init__()
        self.kind, self.hidden = kind, hidden
        if kind == "lstm":
            self.cell: nn.Module = nn.LSTMCell(input_size, hidden)
        elif kind == "rnn":
            # h' = ReLU(W_ih·x + b_ih + W_hh·h + b_hh)
            self.cell = nn.RNNCell(input_size, hidden, nonlinearity="relu")
        elif kind == "gru":
            self.cell = nn.GRUCell(input_size, hidden)
        else:
            raise ValueError(f"unknown core '{kind}'; use lstm, rnn or gru")

    def init_state(self, h: torch.Tensor | None = None) -> State | None:
        """The zero state (None: lets the first step skip W·0), or hidden vector `h` (DRAM's context)."""
        if h is None:
            return None
        return (h, torch.zeros_like(h)) if self.kind == "lstm" else (h,)

    def forward(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        if autocasting(x):  # bf16 products, float32 gates and state (models/precision.py)
            return cell_step(self.kind, self.cell, x, state)
        if self.kind == "lstm":
            h, c = self.cell(x, state)
            return h, (h, c)
        if state is None and self.kind == "rnn":
            cell = self.cell
            h = F.relu(F.linear(x, cell.weight_ih, cell.bias_ih + cell.bias_hh))
        else:
            h = self.cell(x, None if state is None else state[0])
        return h, (h,)
