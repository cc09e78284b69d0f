"""The glimpse sensor: multi-resolution square patches around a location, by area averaging.

Scale k of a glimpse is a patch P_k = g·s^k pixels wide (g = glimpse_size, s = scale_factor)
reduced to g×g by averaging s^k × s^k blocks; pixels outside the image read zero.

Why it is fast: block means do not depend on the location, so `prepare` computes them once
per image batch — for every scale, the stride-1 s^k × s^k box mean of the zero-padded images,
by a cascade of shifted adds (far cheaper than `avg_pool2d(stride=1)`), for the B distinct
images only (not the B·M Monte-Carlo replicas). A glimpse is then one `index_select` of g×g
cells at stride s^k per scale from a flat buffer, vectorised over rows and scales. Nothing
needs a gradient (locations are detached samples), so everything runs without autograd, and
every op exports to ONNX (opset 17) and torch.export (no data-dependent control flow).

Placement: with c = (x + 1)/2 · W the location in pixel units (grid_sample, align_corners=False),
a patch of width P spans [c − P/2, c + P/2), its integer start is round(c − P/2) with ties
rounded up (a 1e-3 px tolerance makes pixel-centre locations immune to float error). So the
pixel containing the location lands at glimpse index (g − 1)//2 at every scale. Locations are
clamped to [-1, 1] first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

_TIE = 1e-3  # px; see module docstring
#: int32 gather indices: the index arithmetic is a quarter of a glimpse's cost, and int32 halves
#: its memory traffic. Safe while a batch's block-mean buffer has < 2**31 elements (checked).
INDEX = torch.int32


@dataclass
class RetinaState:
    """Per-batch precomputation shared by all glimpses (and all Monte-Carlo replicas)."""

    flat: torch.Tensor  # [B·S·C·rows·cols]: block means of every scale on one grid, flattened
    channels: int
    rows: int  # grid height: H + margin + 1 (the last row is all zeros)
    cols: int  # grid width: W + margin + 1 (the last column is all zeros)
    half: torch.Tensor  # [2]: (W/2, H/2), location units → pixels
    origin: torch.Tensor  # [S, 2]: first block's grid cell, before flooring, at location (0, 0)
    last: torch.Tensor  # int64 [2, 1]: index of the zero column / row
    _corners: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def corners(self, n: int, replicas: int, scales: int) -> torch.Tensor:
        """int32 [n, S, 1]: where scale k of row r's image starts in `flat` (cached per batch)."""
        cacheable = isinstance(n, int)  # not a symbolic batch size (torch.export)
        if cacheable and (n, replicas) in self._corners:
            return self._corners[(n, replicas)]
        image = torch.arange(n, device=self.flat.device) // replicas
        per_scale = torch.arange(scales, device=self.flat.device)
        corner = ((image[:, None] * scales + per_scale) * (self.channels * self.rows * self.cols))[:, :, None].to(INDEX)
        if cacheable:
            self._corners[(n, replicas)] = corner
        return corner


class Retina(nn.Module):
    """Glimpses of `scales` square patches, output [N, scales·C, g, g] (scale-major, then channel).

    Storage: every scale's block means live on one grid of block positions [−(F−1), H] × [−(F−1), W]
    (F the largest block side): the blocks that can touch the image, plus one all-zero last row
    and column. A glimpse block outside the grid is all zeros, so its index is sent to that zero
    row/column — no mask, no per-pixel work beyond the gather.
    """

    def __init__(self, glimpse_size: int, scales: int, scale_factor: int) -> None:
        super().__init__()
        if glimpse_size < 1 or scales < 1:
            raise ValueError(f"glimpse_size ({glimpse_size}) and scales ({scales}) must be >= 1")
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(f"scale_factor must be a positive integer, got {scale_factor!r}")
        self.g, self.scales, self.s = glimpse_size, scales, scale_factor
        self.factors = [scale_factor**k for k in range(scales)]  # block side per scale
        self.margin = self.factors[-1] - 1  # grid cells before pixel 0
        f = torch.tensor(self.factors, dtype=torch.float32)
        # first block's grid cell = floor(c − (P/2 − 1/2 − tie) + margin): the per-scale subtrahend
        self.register_buffer("shift", f * (glimpse_size / 2) - 0.5 - _TIE - self.margin, persistent=False)
        # block j of a patch starts j·f cells after the first: [S, g]
        self.register_buffer("steps", (f[:, None] * torch.arange(glimpse_size)).to(INDEX), persistent=False)

    def prepare(self, images: torch.Tensor) -> RetinaState:
        """Block means of the images at every scale, once per batch: [B, C, H, W] → state."""
        with torch.no_grad():
            _, C, H, W = images.shape
            m, s = self.margin, self.s
            rows, cols = H + m + 1, W + m + 1  # grid cells = positions −m … H, the last one all zeros
            x = F.pad(images, (m, m + 1, m, m + 1))  # m more cells than the grid: the cascade eats them
            levels = [x[..., :rows, :cols]]
            for f in self.factors[1:]:
                # a block of side f = s blocks of side f/s shifted by f/s, first along x, then y
                prev = f // s
                h = x[..., :, : x.shape[-1] - (f - prev)]
                for j in range(1, s):
                    h = h + x[..., :, j * prev : j * prev + h.shape[-1]]
                x = h[..., : h.shape[-2] - (f - prev), :]
                for j in range(1, s):
                    x = x + h[..., j * prev : j * prev + x.shape[-2], :]
                x = x * (1.0 / (s * s))
                levels.append(x[..., :rows, :cols])
            flat = torch.stack(levels, dim=1).reshape(-1)  # [B, S, C, rows, cols]
            half = images.new_tensor([0.5 * W, 0.5 * H])
            origin = half[None, :] - self.shift.to(images.dtype)[:, None]
            last = torch.tensor([[W + m], [H + m]], device=images.device, dtype=INDEX)
            if flat.numel() >= 2**31:
                raise ValueError(f"retina buffer of {flat.numel()} elements is too large; use a smaller batch")
        return RetinaState(flat, C, rows, cols, half, origin, last)

    def glimpse(self, state: RetinaState, loc: torch.Tensor, replicas: int = 1) -> torch.Tensor:
        """Patches at `loc` [N, 2] (x, y); row r reads image r // replicas. → [N, S·C, g, g]."""
        with torch.no_grad():
            N, S, C, g = loc.shape[0], self.scales, state.channels, self.g
            cols = state.cols
            # first block's grid cell per scale: floor(c − (P/2 − 1/2 − tie)) + margin, c = (x+1)·W/2
            start = torch.floor(torch.addcmul(state.origin, loc.clamp(-1.0, 1.0)[:, None, :], state.half)).to(INDEX)
            cells = start[..., None] + self.steps[None, :, None, :]  # [N, S, (x, y), g]
            cells = torch.minimum(torch.where(cells < 0, state.last, cells), state.last)  # outside → zero row/col
            rows = torch.add(state.corners(N, replicas, S), cells[:, :, 1], alpha=cols)  # [N, S, g]
            index = rows[..., None] + cells[:, :, 0, None, :]  # [N, S, g, g]
            if C > 1:
                plane = state.rows * cols
                index = index[:, :, None] + (torch.arange(C, device=loc.device, dtype=INDEX) * plane)[:, None, None]
            out = torch.index_select(state.flat, 0, index.reshape(-1))
        return out.view(N, S * C, g, g)

    def forward(self, images: torch.Tensor, loc: torch.Tensor, replicas: int = 1) -> torch.Tensor:
        """One-shot convenience: `glimpse(prepare(images), loc, replicas)`."""
        return self.glimpse(self.prepare(images), loc, replicas)
