"""bf16 mixed precision for the models: what runs in bf16 and what stays in float32.

Under `torch.autocast(..., dtype=torch.bfloat16)` (the trainer enters it for
`precision = "bf16"`) the matrix products and convolutions run in bf16 on float32 master
weights. Three things autocast does not get right here, handled by the models:
- the recurrent cells (`nn.LSTMCell`, `nn.GRUCell`, `nn.RNNCell`) stay float32 under CPU
  autocast, and they are most of the work: `Core` then computes them from two bf16 products
  and float32 gate arithmetic (`cell_step`; the LSTM through `MixedLSTMStep`, whose backward
  is written out; RAM's fused loop has its own mixed mode, models/unroll.py);
- the policy, baseline and classifier heads run in float32 (`fp32`): the location means, the
  log-probabilities, the softmax and the sampling must not lose bits near ±1;
- the recurrent state is kept in float32 between glimpses.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

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


_local = threading.local()  # .casts: id(weight) → its cast, inside `weight_casts()`


@contextlib.contextmanager
def weight_casts() -> Iterator[None]:
    """Within: `cast_weight` casts each weight once and reuses it (as autocast caches its own
    weight casts within a region). The weights must not change inside, so it wraps one forward
    pass. (The version counter cannot key a longer-lived cache: the fused Adam step updates the
    weights without bumping it.)"""
    outer = getattr(_local, "casts", None)
    _local.casts = {} if outer is None else outer
    try:
        yield
    finally:
        _local.casts = outer


def cast_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`w` (detached) in `dtype`; cast once per `weight_casts()` region."""
    cache = getattr(_local, "casts", None)
    if cache is None:
        return w.detach().to(dtype)
    key = (id(w), dtype)
    if key not in cache:
        cache[key] = w.detach().to(dtype)
    return cache[key]


class MixedLSTMStep(torch.autograd.Function):
    """One LSTM step with bf16 products and float32 gate arithmetic and state, with a
    hand-written backward: autograd's version of the same step records the gate split, the
    float32 ↔ bf16 casts and one node per gate operation, and a bf16 DRAM step spent ~10 % of
    its time in the concatenations and casts that undo them. Here the gate gradients are
    written straight into one bf16 buffer, the operand of the four gradient products.
    (x, h, c, W_ih, b_ih, W_hh, b_hh, operands) → (h', c'); h and c may be None (the zero
    state); `operands` is the products' dtype (bf16; a test checks the arithmetic with float32
    operands on a float64 cell)."""

    @staticmethod
    def forward(ctx, x, h, c, w_ih, b_ih, w_hh, b_hh, op=torch.bfloat16):  # type: ignore[no-untyped-def, override]
        wi, wh = cast_weight(w_ih, op), cast_weight(w_hh, op)
        xb = x.to(op)
        hb = None if h is None else h.to(op)
        prod = torch.mm(xb, wi.t())
        if hb is not None:
            prod.addmm_(hb, wh.t())
        z = prod.to(b_ih.dtype).add_(b_ih).add_(b_hh)  # the gates, activated in place: σ(i), σ(f), tanh(g), σ(o)
        i, f, g, o = z.chunk(4, 1)
        torch.sigmoid_(i), torch.sigmoid_(f), tanh(g, out=g), torch.sigmoid_(o)
        c_new = i * g if c is None else torch.addcmul(i * g, f, c)
        k = tanh(c_new)
        h_new = o * k
        ctx.save_for_backward(xb, hb, c, z, k, wi, wh)
        ctx.f32, ctx.has_h, ctx.has_c = w_ih.dtype, h is not None, c is not None
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh, dc):  # type: ignore[no-untyped-def, override]
        xb, hb, c, z, k, wi, wh = ctx.saved_tensors
        f32, has_h, has_c = ctx.f32, ctx.has_h, ctx.has_c
        i, f, g, o = z.chunk(4, 1)
        dz = torch.empty(z.shape, dtype=xb.dtype, device=z.device)  # bf16: only a product operand
        di, df, dg, do = dz.chunk(4, 1)
        if dh is None:
            dh = torch.zeros_like(k)
        torch.ops.aten.sigmoid_backward.grad_input(dh * k, o, grad_input=do)
        dc_t = torch.ops.aten.tanh_backward(dh * o, k)
        if dc is not None:
            dc_t += dc
        torch.ops.aten.sigmoid_backward.grad_input(dc_t * g, i, grad_input=di)
        torch.ops.aten.tanh_backward.grad_input(dc_t * i, g, grad_input=dg)
        if has_c:
            torch.ops.aten.sigmoid_backward.grad_input(dc_t * c, f, grad_input=df)
        else:
            df.zero_()
        need = ctx.needs_input_grad
        dx = torch.mm(dz, wi).to(f32) if need[0] else None
        dh_prev = torch.mm(dz, wh).to(f32) if has_h and need[1] else None
        dc_prev = dc_t * f if has_c and need[2] else None
        dw_ih = torch.mm(dz.t(), xb).to(f32) if need[3] else None
        db = dz.sum(0).to(f32)
        dw_hh = torch.mm(dz.t(), hb).to(f32) if has_h and need[5] else None
        return dx, dh_prev, dc_prev, dw_ih, db if need[4] else None, dw_hh, db.clone() if need[6] else None, None


def cell_step(
    kind: str, cell: nn.Module, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """One step of an LSTM/GRU/ReLU-RNN cell with bf16 products and float32 gates and state
    (the same arithmetic as the torch cell, which autocast leaves in float32 on the CPU).
    The LSTM under bf16 autocast takes `MixedLSTMStep`."""
    h = None if state is None else state[0]
    if kind == "lstm" and autocasting(x) and torch.get_autocast_dtype(x.device.type) == torch.bfloat16:
        c = None if state is None else state[1]
        with torch.autocast(x.device.type, enabled=False):
            h_new, c_new = MixedLSTMStep.apply(
                x, h, c, cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh
            )
        return h_new, (h_new, c_new)
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
