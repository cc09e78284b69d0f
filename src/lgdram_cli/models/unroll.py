"""RAM's glimpse loop as one autograd node with a hand-written backward (training speed).

Why: step by step, autograd records ~20 small nodes per glimpse, and at batch 32 × M 10 a
third of a CPU training step went to per-node overhead, small matrix products and element-wise
kernels rather than to the matrix products that are the model's real work. Two facts allow
better: sampled locations are detached, so in backward the glimpse network and the core's
input projection do not feed the recurrence; their gradients can wait until the recurrence is
done and then be computed for all T glimpses at once, one large matrix product per weight
instead of T small ones. Only h_{t-1} → h_t stays sequential (what cuDNN does for RNNs).

The forward pass does exactly the step-by-step path's arithmetic, into preallocated
[T, rows, ·] buffers; tests check values and gradients against autograd on the plain path.
`RAM` uses this for the `fc` sensor with any core, whenever gradients are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lgdram_cli.models.retina import Retina, RetinaState


@dataclass
class LoopPlan:
    """The non-tensor inputs of one unrolled forward pass."""

    retina: Retina
    sensed: RetinaState
    replicas: int
    steps: int  # T glimpses
    core: str  # "rnn" | "lstm" | "gru"


def weights_of(model: Any) -> list[torch.Tensor]:
    """The parameters `GlimpseLoop` reads, in its argument order."""
    glimpse, cell = model.glimpse, model.core.cell
    what = glimpse.what[1]  # Sequential(Flatten, Linear)
    return [
        what.weight, what.bias, glimpse.where.weight, glimpse.where.bias,
        glimpse.what_out.weight, glimpse.what_out.bias, glimpse.where_out.weight,
        cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh,
        model.locator.weight, model.locator.bias,
    ]  # fmt: skip


def _relu_grad(grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """grad · [output > 0] in one kernel (autograd's own ReLU backward; no bool → float copy)."""
    if out is None:
        return torch.ops.aten.threshold_backward(grad, output, 0)
    return torch.ops.aten.threshold_backward.grad_input(grad, output, 0, grad_input=out)


def _flat(x: torch.Tensor) -> torch.Tensor:
    """[T, n, k] → [T·n, k] (a view of the contiguous buffers; incoming gradients may be copied)."""
    return x.reshape(-1, x.shape[-1])


class GlimpseLoop(torch.autograd.Function):
    """(locations₀, noise, weights) → hidden states H [T, n, h] (no gradient: in training only
    the baseline reads them, detached), the final state h_T [n, h] (the classifier's input),
    policy means M [T−1, n, 2], locations L [T, n, 2] (no gradient). `noise` [n, T−1, 2] is
    σ·ε, or None for the means."""

    @staticmethod
    def forward(ctx: Any, plan: LoopPlan, loc0: torch.Tensor, noise: torch.Tensor | None, *w: torch.Tensor) -> Any:
        W1, b1, Wl, bl, W2, b2, Wq, Wih, bih, Whh, bhh, Wloc, bloc = w
        T, n, hid = plan.steps, loc0.shape[0], Whh.shape[1]
        new = loc0.new_empty
        P, R, Q = new(T, n, W1.shape[1]), new(T, n, W1.shape[0]), new(T, n, Wl.shape[0])
        G, H, M, L = new(T, n, hid), new(T, n, hid), new(max(T - 1, 0), n, 2), new(T, n, 2)
        # core internals kept for backward: lstm gates (i, f, g, o), cell c and tanh(c);
        # gru gates (r, z, ñ) and W_hn·h + b_hn in C
        Z = new(T, n, Wih.shape[0]) if plan.core != "rnn" else None
        C = new(T, n, hid) if plan.core != "rnn" else None
        K = new(T, n, hid) if plan.core == "lstm" else None
        L[0] = loc0
        # rnn and lstm add both biases every step (the first step's W_hh·h is W_hh·0, skipped)
        bias = bih + bhh if plan.core != "gru" else bih
        for t in range(T):
            plan.retina.glimpse(plan.sensed, L[t], plan.replicas, out=P[t])
            torch.addmm(b1, P[t], W1.t(), out=R[t]).relu_()
            torch.addmm(bl, L[t], Wl.t(), out=Q[t]).relu_()
            torch.addmm(b2, R[t], W2.t(), out=G[t]).addmm_(Q[t], Wq.t()).relu_()
            if plan.core == "rnn":
                pre = torch.addmm(bias, G[t], Wih.t(), out=H[t])
                if t > 0:
                    pre.addmm_(H[t - 1], Whh.t())
                pre.relu_()
            else:
                x = torch.addmm(bias, G[t], Wih.t())  # input projection (+ bias)
            if plan.core == "lstm":
                gates = x if t == 0 else x.addmm_(H[t - 1], Whh.t())
                i, f, g, o = gates.chunk(4, 1)
                zi, zf, zg, zo = Z[t].chunk(4, 1)
                torch.sigmoid(i, out=zi), torch.sigmoid(f, out=zf), torch.tanh(g, out=zg), torch.sigmoid(o, out=zo)
                if t == 0:
                    torch.mul(zi, zg, out=C[t])
                else:
                    torch.addcmul(zi * zg, zf, C[t - 1], out=C[t])
                torch.tanh(C[t], out=K[t])
                torch.mul(zo, K[t], out=H[t])
            elif plan.core == "gru":
                hw = bhh.expand(n, -1) if t == 0 else torch.addmm(bhh, H[t - 1], Whh.t())
                zr, zz, zn = Z[t].chunk(3, 1)
                xr, xz, xn = x.chunk(3, 1)
                hr, hz, hn = hw.chunk(3, 1)
                torch.sigmoid(xr + hr, out=zr), torch.sigmoid(xz + hz, out=zz)
                C[t] = hn
                torch.tanh(torch.addcmul(xn, zr, hn), out=zn)
                # h' = (1 − z)·ñ + z·h = ñ + z·(h − ñ)
                if t == 0:
                    torch.sub(zn, zz * zn, out=H[t])
                else:
                    torch.addcmul(zn, zz, H[t - 1] - zn, out=H[t])
            if t < T - 1:
                torch.addmm(bloc, H[t], Wloc.t(), out=M[t]).tanh_()
                if noise is None:
                    L[t + 1] = M[t]
                else:
                    torch.add(M[t], noise[:, t], out=L[t + 1]).clamp_(-1.0, 1.0)
        ctx.plan = plan
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(H, L)
        aux = {"rnn": (), "lstm": (Z, C, K), "gru": (Z, C)}[plan.core]
        ctx.save_for_backward(P, R, Q, G, H, M, L, *aux, *w)
        return H, H[T - 1].clone(), M, L

    @staticmethod
    def backward(ctx: Any, _dH: Any, d_last: torch.Tensor | None, dM: torch.Tensor | None, _dL: Any) -> Any:
        plan: LoopPlan = ctx.plan
        saved = ctx.saved_tensors
        P, R, Q, G, H, M, L = saved[:7]
        Z, C, K = (*saved[7:-13], None, None, None)[:3]
        W1, b1, Wl, bl, W2, b2, Wq, Wih, bih, Whh, bhh, Wloc, bloc = saved[-13:]
        T, n, hid = H.shape
        dWloc = dbloc = dMp = None
        if dM is not None and T > 1:
            dMp = dM * (1 - M * M)  # through tanh
            dWloc = _flat(dMp).t() @ _flat(H[:-1])
            dbloc = _flat(dMp).sum(0)

        def outside(t: int) -> torch.Tensor | None:
            """dL/dh_t from outside the recurrence: the classifier (last step) and the policy mean."""
            d = d_last if t == T - 1 else None
            if dMp is not None and t < T - 1:
                d = torch.mm(dMp[t], Wloc) if d is None else torch.addmm(d, dMp[t], Wloc)
            return d

        # the recurrence, last glimpse first: dX = dL/d(input projection), dY = dL/d(hidden projection)
        dX = torch.empty(T, n, Wih.shape[0], dtype=H.dtype, device=H.device)
        dY = dX if plan.core != "gru" else torch.empty_like(dX)
        dh, dc = outside(T - 1), None
        if dh is None:
            dh = H.new_zeros(n, hid)
        for t in range(T - 1, -1, -1):
            if plan.core == "rnn":
                _relu_grad(dh, H[t], out=dX[t])
            elif plan.core == "lstm":
                zi, zf, zg, zo = Z[t].chunk(4, 1)
                di, df, dg, do = dX[t].chunk(4, 1)
                tc = K[t]
                torch.mul(dh * tc, zo * (1 - zo), out=do)
                dc_t = dh * zo * (1 - tc * tc)
                if dc is not None:
                    dc_t += dc
                torch.mul(dc_t * zg, zi * (1 - zi), out=di)
                torch.mul(dc_t * zi, 1 - zg * zg, out=dg)
                if t > 0:
                    torch.mul(dc_t * C[t - 1], zf * (1 - zf), out=df)
                else:
                    df.zero_()
                dc = dc_t * zf
            else:  # gru
                zr, zz, zn = Z[t].chunk(3, 1)
                hn = C[t]
                h_prev = H[t - 1] if t > 0 else None
                dxr, dxz, dxn = dX[t].chunk(3, 1)
                dyr, dyz, dyn = dY[t].chunk(3, 1)
                torch.mul(dh * (1 - zz), 1 - zn * zn, out=dxn)  # through ñ = tanh(·)
                torch.mul(dxn * hn, zr * (1 - zr), out=dxr)
                dxz_ = dh * (-zn if h_prev is None else h_prev - zn)
                torch.mul(dxz_, zz * (1 - zz), out=dxz)
                dyr.copy_(dxr), dyz.copy_(dxz)
                torch.mul(dxn, zr, out=dyn)
                direct = dh * zz
            if t > 0:
                d = outside(t - 1)
                dh = torch.mm(dY[t], Whh) if d is None else torch.addmm(d, dY[t], Whh)
                if plan.core == "gru":
                    dh += direct

        dXf, dYf = _flat(dX), _flat(dY)
        dWhh = _flat(dY[1:]).t() @ _flat(H[:-1]) if T > 1 else None  # one glimpse: W_hh unused
        # everything below is batched over all T glimpses
        dWih = dXf.t() @ _flat(G)
        dbih = dXf.sum(0)
        dbhh = dbih.clone() if dY is dX else dYf.sum(0)  # a copy: the two .grad must not alias
        # ReLU gradients in place on the fresh products: one 2 MB buffer less per layer
        dA = dXf @ Wih
        _relu_grad(dA, _flat(G), out=dA)
        dW2, db2, dWq = dA.t() @ _flat(R), dA.sum(0), dA.t() @ _flat(Q)
        dR, dQ = dA @ W2, dA @ Wq
        _relu_grad(dR, _flat(R), out=dR)
        _relu_grad(dQ, _flat(Q), out=dQ)
        dW1, db1 = dR.t() @ _flat(P), dR.sum(0)
        dWl, dbl = dQ.t() @ _flat(L), dQ.sum(0)
        return (None, None, None, dW1, db1, dWl, dbl, dW2, db2, dWq, dWih, dbih, dWhh, dbhh, dWloc, dbloc)

