"""RAM's glimpse loop as one autograd node with a hand-written backward (training speed).

Why: step by step, autograd records ~20 small nodes per glimpse, and at batch 32 × M 10 a
third of a CPU training step went to per-node overhead, small matrix products and element-wise
kernels rather than to the matrix products that are the model's real work. Two facts allow
better: sampled locations are detached, so in backward the glimpse network and the core's
input projection do not feed the recurrence; their gradients can wait until the recurrence is
done and then be computed for all T glimpses at once, one large matrix product per weight
instead of T small ones. Only h_{t-1} → h_t stays sequential (what cuDNN does for RNNs).

A third: with a fixed first location (RAM's `start = "centre"`), the first glimpse of the M
Monte-Carlo replicas of an image is one computation, so it is done once per image (its
gradient rows are summed over the replicas); the glimpse-network buffers hold B rows for the
first step and B·M for the others.

The forward pass does the step-by-step path's arithmetic into preallocated buffers; tests check
values and gradients against autograd on the plain path. `RAM` uses this for the `fc` sensor
with any core while training with gradients recorded.

Mixed precision (`LoopPlan.operands = torch.bfloat16`, for `precision = "bf16"`): the same
loop with autocast's dtypes, made explicit: the glimpse-network activations (P, R, Q, G), the
gate gradients and every large product's operands are bf16; the recurrent state, the gate
arithmetic, the heads and the locations float32; the gradients are bf16 products and sums,
returned as float32. The location network's K = 2 product and the heads stay float32: they
are tiny and feed the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lgdram_cli.models.precision import tanh
from lgdram_cli.models.retina import Retina, RetinaState


@dataclass
class LoopPlan:
    """The non-tensor inputs of one unrolled forward pass."""

    retina: Retina
    sensed: RetinaState
    replicas: int
    steps: int  # T glimpses
    core: str  # "rnn" | "lstm" | "gru"
    #: the first glimpse is the same for the M replicas of an image (a fixed start): compute it
    #: once per image; its gradients are summed over the replicas
    shared_first: bool = False
    #: policy means are loc_range·tanh(·)
    loc_range: float = 1.0
    #: the products' operand dtype when it differs from the weights' (mixed precision: bf16;
    #: float32 state and gate arithmetic); None: the weights' own
    operands: torch.dtype | None = None

    def first_rows(self, n: int) -> int:
        return n // self.replicas if self.shared_first else n


def weights_of(model: Any) -> list[torch.Tensor]:
    """The parameters `GlimpseLoop` reads, in its argument order."""
    glimpse, cell = model.glimpse, model.core.cell
    what = glimpse.what[1]  # Sequential(Flatten, Linear)
    return [
        what.weight, what.bias, glimpse.where.weight, glimpse.where.bias,
        glimpse.what_out.weight, glimpse.what_out.bias, glimpse.where_out.weight,
        cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh,
        model.locator.weight, model.locator.bias, model.baseline.weight, model.baseline.bias,
    ]  # fmt: skip


def _relu_grad(grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """grad · [output > 0] into `out` in one kernel (autograd's own ReLU backward; no bool →
    float copy). `out` may be `grad` itself."""
    return torch.ops.aten.threshold_backward.grad_input(grad, output, 0, grad_input=out)


def _sigmoid_grad(grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """grad · σ · (1 − σ) from the sigmoid's output, into `out`, in one kernel."""
    return torch.ops.aten.sigmoid_backward.grad_input(grad, output, grad_input=out)


def _tanh_grad(grad: torch.Tensor, output: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """grad · (1 − tanh²) from tanh's output, into `out`, in one kernel."""
    return torch.ops.aten.tanh_backward.grad_input(grad, output, grad_input=out)


def _segment(t: int, first: int, n: int) -> slice:
    """Rows of step t in the glimpse-network buffers (step 0 may have fewer: `first`)."""
    return slice(0, first) if t == 0 else slice(first + (t - 1) * n, first + t * n)


def _core_step(
    core: str, x: torch.Tensor, h: torch.Tensor | None, c: torch.Tensor | None, bias: torch.Tensor,
    bhh: torch.Tensor, Whht: torch.Tensor, H: torch.Tensor, Z: torch.Tensor | None = None,
    C: torch.Tensor | None = None, K: torch.Tensor | None = None,
) -> None:
    """One step of the core from the input projection `x` (rnn/lstm: without bias, `bias` = both
    biases is added here; gru: with b_ih) and the previous state (h, c; None at the first step),
    into the buffers H (and the internals backward needs: Z gates, C cell or W_hn·h + b_hn, K tanh(c)).
    `Whht` is W_hhᵀ. Mixed precision: `x` and `Whht` are bf16, h is cast for the product, and
    the sum of the two products (one bf16 addmm) is added to the float32 bias into the buffers."""
    mixed = Whht.dtype != H.dtype
    hp = h.to(Whht.dtype) if mixed and h is not None else h  # the product's operand
    if core == "rnn":  # x may be H itself: then everything happens in place
        if h is not None:
            x.addmm_(hp, Whht)
        if mixed:
            # (a copy, then a float32 add: faster than one mixed-dtype add)
            H.copy_(x).add_(bias).clamp_min_(0.0)
        else:
            torch.clamp_min(x.add_(bias), 0.0, out=H)
    elif core == "lstm":  # x may be Z itself: the gates are activated in place
        if mixed:
            gates = Z.copy_(x if h is None else x.addmm_(hp, Whht)).add_(bias)
        else:
            gates = (x if h is None else x.addmm_(h, Whht)).add_(bias)
        i, f, g, o = gates.chunk(4, 1)
        zi, zf, zg, zo = Z.chunk(4, 1)
        torch.sigmoid(i, out=zi), torch.sigmoid(f, out=zf), tanh(g, out=zg), torch.sigmoid(o, out=zo)
        if c is None:
            torch.mul(zi, zg, out=C)
        else:
            torch.addcmul(zi * zg, zf, c, out=C)
        tanh(C, out=K)
        torch.mul(zo, K, out=H)
    else:  # gru
        if h is None:
            hw = bhh.expand(x.shape[0], -1)
        else:
            hw = torch.mm(hp, Whht).to(H.dtype).add_(bhh) if mixed else torch.addmm(bhh, h, Whht)
        zr, zz, zn = Z.chunk(3, 1)
        xr, xz, xn = x.chunk(3, 1)
        hr, hz, hn = hw.chunk(3, 1)
        torch.sigmoid(xr + hr, out=zr), torch.sigmoid(xz + hz, out=zz)
        C.copy_(hn)
        tanh(torch.addcmul(xn, zr, hn), out=zn)
        # h' = (1 − z)·ñ + z·h = ñ + z·(h − ñ)
        if h is None:
            torch.sub(zn, zz * zn, out=H)
        else:
            torch.addcmul(zn, zz, h - zn, out=H)


def _aligned(n: int) -> int:
    """n rounded up to a multiple of 16 (64-byte rows of float32)."""
    return -(-n // 16) * 16


def _flat(x: torch.Tensor) -> torch.Tensor:
    """[T, n, k] → [T·n, k] (a view of the contiguous buffers; incoming gradients may be copied)."""
    return x.reshape(-1, x.shape[-1])


class GlimpseLoop(torch.autograd.Function):
    """(locations₀, noise, weights) → hidden states H [T, n, h] (no gradient), the final state
    h_T [n, h] (the classifier's input), policy means M [T−1, n, 2], locations L [T, n, 2] (no
    gradient), baselines [T−1, n] (the baseline head on the detached h_0 … h_(T−2): its gradient
    reaches only the baseline's weights). `noise` [n, T−1, 2] is σ·ε, or None for the means."""

    @staticmethod
    def forward(ctx: Any, plan: LoopPlan, loc0: torch.Tensor, noise: torch.Tensor | None, *w: torch.Tensor) -> Any:
        W1, b1, Wl, bl, W2, b2, Wq, Wih, bih, Whh, bhh, Wloc, bloc, Wb, bb = w
        T, n, hid, m = plan.steps, loc0.shape[0], Whh.shape[1], plan.replicas
        first = plan.first_rows(n)
        rows = first + (T - 1) * n  # glimpse-network rows: step 0 has `first`, the others n
        new = loc0.new_empty
        op = plan.operands or W1.dtype  # the products' operands, and the glimpse network's activations
        mixed = op != W1.dtype
        P, R, Q = (new(rows, k, dtype=op) for k in (W1.shape[1], W1.shape[0], Wl.shape[0]))
        G, A = new(rows, hid, dtype=op), new(rows, 2)  # A: the locations the glimpse network read
        sensed = plan.sensed.to(op) if mixed else plan.sensed  # the retina then reads bf16 patches
        H = new(T, n, hid)
        # the two heads that read h_t, policy mean (2 rows) and baseline (1), in one product,
        # transposed: [W_loc; W_b]·H_tᵀ, an N = n product, runs ~4× faster than H_t·W_locᵀ (N = 2)
        # and the baseline's own N = 1 product; M is the [T − 1, n, 2] view
        heads, heads_bias = torch.cat([Wloc, Wb]), torch.cat([bloc, bb])[:, None]
        MT = new(max(T - 1, 0), 3, n)
        M = MT[:, :2].transpose(1, 2)
        # core internals kept for backward: lstm gates (i, f, g, o), cell c and tanh(c);
        # gru gates (r, z, ñ) and W_hn·h + b_hn in C
        Z = new(T, n, Wih.shape[0]) if plan.core != "rnn" else None
        C = new(T, n, hid) if plan.core != "rnn" else None
        K = new(T, n, hid) if plan.core == "lstm" else None
        # rnn and lstm add both biases every step (the first step's W_hh·h is W_hh·0, skipped)
        bias = bih + bhh if plan.core != "gru" else bih
        # views made once, not once per glimpse (this loop is dispatch-bound at small sizes)
        # (cast once per forward pass when mixed; the location network's K = 2 product stays float32)
        W1t, W2t, Wqt, Wiht, Whht = (x.t().to(op) for x in (W1, W2, Wq, Wih, Whh))
        Wlt, b1_, b2_ = Wl.t(), b1.to(op), b2.to(op)
        sizes = [first] + [n] * (T - 1)
        Ps, Rs, Qs, Gs, As = (x.split(sizes) for x in (P, R, Q, G, A))
        Hs, MTs = H.unbind(0), MT.unbind(0)
        Ms, noises = M.unbind(0), (noise.unbind(1) if noise is not None else None)
        Zs, Cs, Ks = (x.unbind(0) if x is not None else None for x in (Z, C, K))
        into = {"rnn": Hs, "lstm": Zs, "gru": None}[plan.core]
        for t in range(T):
            Pt, Rt, Qt, Gt, At = Ps[t], Rs[t], Qs[t], Gs[t], As[t]
            if t == 0:  # later steps' locations are written into A by the step before
                At.copy_(loc0[::m] if first < n else loc0)  # shared: one row per image
            plan.retina.glimpse(sensed, At, 1 if first < n and t == 0 else m, out=Pt, in_range=True)
            torch.addmm(b1_, Pt, W1t, out=Rt).relu_()
            if mixed:
                Qt.copy_(torch.addmm(bl, At, Wlt).relu_())
            else:
                torch.addmm(bl, At, Wlt, out=Qt).relu_()
            # biases added after the products, not by `addmm`: its bias copy into the output
            # followed by a β = 1 product measured ~25 µs slower per [320, 256] product here
            torch.mm(Rt, W2t, out=Gt).addmm_(Qt, Wqt).add_(b2_).relu_()
            # input projection, straight into the step's output buffer where the core allows
            # (rnn: H, lstm: the gates Z), to keep a step's memory traffic in cache; `_core_step`
            # adds the bias (gru: here); mixed: a bf16 product, summed with the recurrent one
            direct = into is not None and not (t == 0 and first < n) and not mixed
            if plan.core == "gru":
                x = torch.mm(Gt, Wiht).to(bias.dtype).add_(bias) if mixed else torch.addmm(bias, Gt, Wiht)
            else:
                x = torch.mm(Gt, Wiht, out=into[t] if direct else None)
            if t == 0 and first < n:
                state = [new(first, *b.shape[2:]) for b in (H, Z, C, K) if b is not None]
                _core_step(plan.core, x, None, None, bias, bhh, Whht, *state)
                for small, big in zip(state, [b for b in (H, Z, C, K) if b is not None]):
                    big[0].view(first, m, -1).copy_(small[:, None])
            else:
                _core_step(
                    plan.core, x, None if t == 0 else Hs[t - 1], None if t == 0 or C is None else Cs[t - 1],
                    bias, bhh, Whht, Hs[t], *(() if Z is None else (Zs[t], Cs[t])), *(() if K is None else (Ks[t],)),
                )  # fmt: skip
            if t < T - 1:
                torch.addmm(heads_bias, heads, Hs[t].t(), out=MTs[t])
                MTs[t][:2].tanh_()
                if plan.loc_range != 1.0:
                    MTs[t][:2].mul_(plan.loc_range)
                if noises is None:
                    As[t + 1].copy_(Ms[t])
                else:
                    torch.add(Ms[t], noises[t], out=As[t + 1]).clamp_(-1.0, 1.0)
        # the locations of every row: the first, then those the glimpse network read
        L = torch.cat([loc0[None], A[first:].view(T - 1, n, 2)]) if T > 1 else loc0[None].clone()
        ctx.plan = plan
        ctx.set_materialize_grads(False)
        ctx.mark_non_differentiable(H, L)
        aux = {"rnn": (), "lstm": (Z, C, K), "gru": (Z, C)}[plan.core]
        ctx.save_for_backward(P, R, Q, G, A, H, M, *aux, *w)
        return H, H[T - 1].clone(), M, L, MT[:, 2].clone()

    @staticmethod
    def backward(
        ctx: Any, _dH: Any, d_last: torch.Tensor | None, dM: torch.Tensor | None, _dL: Any, dB: torch.Tensor | None
    ) -> Any:
        plan: LoopPlan = ctx.plan
        saved = ctx.saved_tensors
        P, R, Q, G, A, H, M = saved[:7]
        Z, C, K = (*saved[7:-15], None, None, None)[:3]
        W1, b1, Wl, bl, W2, b2, Wq, Wih, bih, Whh, bhh, Wloc, bloc, Wb, bb = saved[-15:]
        T, n, hid = H.shape
        first = plan.first_rows(n)
        f32, op = H.dtype, plan.operands or H.dtype  # mixed: bf16 product operands, float32 results

        def cast(x: torch.Tensor) -> torch.Tensor:
            return x.to(op)

        dWloc = dbloc = dMp = dWb = dbb = None
        if dM is not None and T > 1:
            r = plan.loc_range  # through r·tanh: d(r·tanh z)/dz = r·(1 − tanh²) = (r² − M²)/r
            dMp = dM * (1 - M * M) if r == 1.0 else dM * ((r * r - M * M) / r)
        if (dMp is not None or dB is not None) and T > 1:
            # both heads' weight gradients from one pass over the states: [dM' | dB]ᵀ·H
            d_heads = H.new_zeros(T - 1, n, 3)
            if dMp is not None:
                d_heads[..., :2] = dMp
            if dB is not None:
                d_heads[..., 2] = dB
            d_heads = _flat(d_heads)
            dW_heads, db_heads = d_heads.t() @ _flat(H[:-1]), d_heads.sum(0)
            if dMp is not None:
                dWloc, dbloc = dW_heads[:2], db_heads[:2]
            if dB is not None:
                dWb, dbb = dW_heads[2:], db_heads[2:]

        # the recurrence, last glimpse first, on all n rows: dX = dL/d(input projection), dY =
        # dL/d(hidden projection), in the glimpse-network row layout (a shared first step's
        # rows summed over the replicas: they are one computation)
        width, rows = Wih.shape[0], first + (T - 1) * n
        # dL/dh_{t−1} = dY_t·W_hh + dM_{t−1}·W_loc (the policy mean read h_{t−1}): one product per
        # step, the policy-mean gradients riding along as two extra columns of dY (a K = 2
        # product on its own runs at a few GFLOP/s)
        # Mixed: the gate gradients are only ever product operands, so they are written in bf16
        # (the state gradients dh, dc stay float32), contiguous (the bf16 products copy a
        # strided operand first), and the policy-mean term is a float32 product of its own.
        mixed = op != f32
        extra = 0 if dMp is None or mixed else dMp.shape[-1]
        # rows padded to a multiple of 16 floats (64 bytes): the batched products below read dY
        # as a strided view, and misaligned rows (258 floats) slowed them by ~4 %
        padded = width + extra if mixed else _aligned(width + extra)
        dY_wide = H.new_empty(rows, padded, dtype=op)[:, : width + extra]
        dY = dY_wide[:, :width]
        if extra:
            dY_wide[first:, width:].view(T - 1, n, extra).copy_(dMp)
        W_back = cast(torch.cat([Whh, Wloc]) if extra else Whh)
        dX = dY if plan.core != "gru" else H.new_empty(rows, width, dtype=op)
        shared = H.new_empty(2 if plan.core == "gru" else 1, n, width, dtype=op) if first < n else None
        dh, dc = d_last, None  # the classifier reads the last state
        if dh is None:
            dh = H.new_zeros(n, hid)
        for t in range(T - 1, -1, -1):
            r = _segment(t, first, n)
            dXt, dYt = (shared[0], shared[-1]) if t == 0 and shared is not None else (dX[r], dY[r])
            if plan.core == "rnn":
                _relu_grad(dh, H[t], out=dXt)
            elif plan.core == "lstm":
                zi, zf, zg, zo = Z[t].chunk(4, 1)
                di, df, dg, do = dXt.chunk(4, 1)
                tc = K[t]
                # autograd's own one-kernel derivatives: g·σ(1 − σ) and g·(1 − tanh²)
                _sigmoid_grad(dh * tc, zo, out=do)
                dc_t = torch.ops.aten.tanh_backward(dh * zo, tc)
                if dc is not None:
                    dc_t += dc
                _sigmoid_grad(dc_t * zg, zi, out=di)
                _tanh_grad(dc_t * zi, zg, out=dg)
                if t > 0:
                    _sigmoid_grad(dc_t * C[t - 1], zf, out=df)
                else:
                    df.zero_()
                dc = dc_t * zf
            else:  # gru
                zr, zz, zn = Z[t].chunk(3, 1)
                hn = C[t]
                h_prev = H[t - 1] if t > 0 else None
                dxr, dxz, dxn = dXt.chunk(3, 1)
                dyr, dyz, dyn = dYt.chunk(3, 1)
                torch.mul(dh * (1 - zz), 1 - zn * zn, out=dxn)  # through ñ = tanh(·)
                torch.mul(dxn * hn, zr * (1 - zr), out=dxr)
                dxz_ = dh * (-zn if h_prev is None else h_prev - zn)
                torch.mul(dxz_, zz * (1 - zz), out=dxz)
                dyr.copy_(dxr), dyz.copy_(dxz)
                torch.mul(dxn, zr, out=dyn)
                direct = dh * zz
            if t > 0:
                dh = torch.mm(dY_wide[r], W_back).to(f32)
                if mixed and dMp is not None:
                    dh.addmm_(dMp[t - 1], Wloc)
                if plan.core == "gru":
                    dh += direct
        if shared is not None:
            r0 = _segment(0, first, n)
            torch.sum(shared[0].view(first, n // first, width), 1, out=dX[r0])
            if dY is not dX:
                torch.sum(shared[-1].view(first, n // first, width), 1, out=dY[r0])

        # one glimpse: W_hh unused
        dWhh = (dY[first:].t() @ cast(_flat(H[:-1]))).to(f32) if T > 1 else None
        # everything below is batched over all T glimpses (mixed: bf16 products, activation
        # gradients and bias sums, as autocast's backward; the gradients returned in float32.
        # A float32 sum of a bf16 tensor converts a copy first: ~2.5 ms per step here)
        dWih = (dX.t() @ G).to(f32)
        dbih = dX.sum(0).to(f32)
        dbhh = dbih.clone() if dY is dX else dY.sum(0).to(f32)  # a copy: the two .grad must not alias
        # ReLU gradients in place on the fresh products: one 2 MB buffer less per layer
        dA = dX @ cast(Wih)
        _relu_grad(dA, G, out=dA)
        dW2, db2, dWq = (dA.t() @ R).to(f32), dA.sum(0).to(f32), (dA.t() @ Q).to(f32)
        dR, dQ = dA @ cast(W2), dA @ cast(Wq)
        _relu_grad(dR, R, out=dR)
        _relu_grad(dQ, Q, out=dQ)
        dW1, db1 = (dR.t() @ P).to(f32), dR.sum(0).to(f32)
        # this orientation of the skinny product is 3× faster
        dWl, dbl = (A.t() @ dQ.to(f32)).t(), dQ.sum(0).to(f32)
        return (None, None, None, dW1, db1, dWl, dbl, dW2, db2, dWq, dWih, dbih, dWhh, dbhh, dWloc, dbloc, dWb, dbb)
