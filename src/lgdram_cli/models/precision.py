"""bf16 mixed precision for the models: what runs in bf16 and what stays in float32.

Under `torch.autocast(..., dtype=torch.bfloat16)` (the trainer enters it for
`precision = "bf16"`) the matrix products and convolutions run in bf16 on float32 master
weights. Three things autocast does not get right here, handled by the models:
- the recurrent cells (`nn.LSTMCell`, `nn.GRUCell`, `nn.RNNCell`) stay float32 under CPU
  autocast, and they are most of the work: `Core` then computes them from two bf16 products
  and float32 gate arithmetic (`cell_step`);
- the policy, baseline and classifier heads run in float32 (`fp32`): the location means, the
  log-probabilities, the softmax and the sampling must not lose bits near ±1;
- the recurrent state is kept in float32 between glimpses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tanh(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """tanh(x) as 2·σ(2x) − 1 (within 2e-7 of torch.tanh in float32): torch 2.13's CPU tanh
    runs ~3.5× slower than its sigmoid (docs/performance.md), and the LSTM's two tanh per
    step were ~10 % of a RAM-LSTM training step. Differentiable; `out` for the fused loop."""
    if out is None:
        return torch.sigmoid(x * 2).mul(2).sub(1)
    torch.sigmoid(x * 2, out=out)
    return out.mul_(2).sub_(1)


def autocasting(x: torch.Tensor) -> bool:
    """Whether `x`'s device is inside an enabled autocast region."""
    return torch.is_autocast_enabled(x.device.type)


def fp32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` in float32, also under bf16 autocast (the policy, baseline and classifier heads)."""
    if not autocasting(x):
        return layer(x)
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


def cell_step(
    kind: str, cell: nn.Module, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One step of an LSTM/GRU/ReLU-RNN cell with bf16 products and float32 gates and state
    (the same arithmetic as the torch cell, which autocast leaves in float32 on the CPU)."""
    h = None if state is None else state[0]
    if kind in ("rnn", "lstm"):
        # both products into one bf16 sum (addmm), one cast to float32 for the gate arithmetic
        gates = F.linear(x, cell.weight_ih, cell.bias_ih + cell.bias_hh)
        if h is not None:
            gates = torch.addmm(gates, h, cell.weight_hh.t())
        gates = gates.float()
        if kind == "rnn":
            out = torch.relu(gates)
            return out, (out,)
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(i) * tanh(g)
        if state is not None:
            c = c + torch.sigmoid(f) * state[1].float()
        out = torch.sigmoid(o) * tanh(c)
        return out, (out, c)
    gi = F.linear(x, cell.weight_ih, cell.bias_ih).float()
    gh = cell.bias_hh.float() if h is None else F.linear(h, cell.weight_hh, cell.bias_hh).float()
    ir, iz, i_n = gi.chunk(3, 1)
    hr, hz, hn = gh.expand_as(gi).chunk(3, 1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = tanh(i_n + r * hn)
    out = n - z * n if h is None else n + z * (h.float() - n)
    return out, (out,)
