"""The glimpse sensor: multi-resolution square patches around a location, by area averaging.

Scale k of a glimpse is a patch P_k = g·s^k pixels wide (g = glimpse_size, s = scale_factor)
reduced to g×g by averaging s^k × s^k blocks; pixels outside the image read zero.

Why it is fast: block means do not depend on the location, so `prepare` computes them once
per image batch — for every scale, the stride-1 s^k × s^k box mean of the zero-padded images,
by a cascade of shifted adds (far cheaper than `avg_pool2d(stride=1)`), for the B distinct
images only (not the B·M Monte-Carlo replicas). Each scale's grid is padded with zeros far
enough that every patch is a whole g×g window of cells at stride s^k, so a glimpse is one
`index_select` per scale of a window *view* (`as_strided`): the index is one number per row and
scale, not one per pixel. Nothing needs a gradient (locations are detached samples), so
everything runs without autograd. While exporting (ONNX, torch.export) the same cells are
gathered by explicit per-pixel indices, which every exporter understands.

Placement: with c = (x + 1)/2 · W the location in pixel units (grid_sample, align_corners=False),
a patch of width P spans [c − P/2, c + P/2), its integer start is round(c − P/2) with ties
rounded up (a 1e-3 px tolerance makes pixel-centre locations immune to float error). So the
pixel containing the location lands at glimpse index (g − 1)//2 at every scale. Locations are
clamped to [-1, 1] first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lgdram_cli.errors import UserError

_TIE = 1e-3  # px; see module docstring
#: int32 gather indices: half the memory traffic of int64. Safe while every scale's grid has
#: fewer than MAX_CELLS elements (checked before anything is allocated).
INDEX = torch.int32
MAX_CELLS = 2**31


@dataclass
class RetinaState:
    """Per-batch precomputation shared by all glimpses (and all Monte-Carlo replicas)."""

    levels: list[torch.Tensor]  # per scale: [B, C, rows_k, cols_k] block means on a zero-padded grid
    half: torch.Tensor  # [2]: (W/2, H/2), location units → pixels
    origin: torch.Tensor  # [S, 2]: first window cell (x, y), before flooring, at location (0, 0)
    limit: torch.Tensor  # int32 [S, 2]: largest valid first window cell (x, y)
    image_stride: torch.Tensor  # int32 [S]: elements per image in each level
    xy_strides: torch.Tensor  # int32 [S, 2]: elements per grid column (1), per grid row
    windows: list[torch.Tensor] = field(default_factory=list)  # per scale: [positions, C, g, g] views
    _images: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def image_offsets(self, n: int, replicas: int) -> torch.Tensor:
        """int32 [n, S]: where row r's image (r // replicas) starts in each level (cached per batch)."""
        cacheable = isinstance(n, int)  # not a symbolic batch size (torch.export)
        if cacheable and (n, replicas) in self._images:
            return self._images[(n, replicas)]
        image = torch.arange(n, device=self.image_stride.device, dtype=INDEX) // replicas
        offsets = image[:, None] * self.image_stride
        if cacheable:
            self._images[(n, replicas)] = offsets
        return offsets


def _embed(core: torch.Tensor, offset: int, rows: int, cols: int, scale: float) -> torch.Tensor:
    """`core` · `scale` [B, C, h, w] placed at (offset, offset) in a zero [B, C, rows, cols] grid
    (cropped where it does not fit). Like `F.pad` after a multiply, but only the border is
    zero-filled and the interior written once: a third of the memory traffic on large canvases."""
    B, C, h, w = core.shape
    if exporting():  # graph capture does not follow writes into slices: the same by `F.pad`
        return F.pad(core * scale, (offset, cols - offset - w, offset, rows - offset - h))
    out = core.new_empty(B, C, rows, cols)
    src_y, src_x = max(0, -offset), max(0, -offset)
    y0, x0 = max(0, offset), max(0, offset)
    y1, x1 = min(rows, offset + h), min(cols, offset + w)
    torch.mul(core[..., src_y : src_y + y1 - y0, src_x : src_x + x1 - x0], scale, out=out[..., y0:y1, x0:x1])
    out[..., :y0, :].zero_()
    out[..., y1:, :].zero_()
    out[..., y0:y1, :x0].zero_()
    out[..., y0:y1, x1:].zero_()
    return out


def exporting() -> bool:
    """True while a graph is being captured (ONNX tracing, torch.export, torch.compile)."""
    return torch.jit.is_tracing() or torch.compiler.is_exporting() or torch.compiler.is_compiling()


class Retina(nn.Module):
    """Glimpses of `scales` square patches, output [N, scales·C, g, g] (scale-major, then channel).

    Scale k's grid holds the block means at block positions −m_k … with m_k = ⌈g·s^k / 2⌉ cells
    of zeros before pixel 0 and enough after the last pixel that every window fits.
    """

    def __init__(self, glimpse_size: int, scales: int, scale_factor: int) -> None:
        super().__init__()
        if glimpse_size < 1 or scales < 1:
            raise ValueError(f"glimpse_size ({glimpse_size}) and scales ({scales}) must be >= 1")
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(f"scale_factor must be a positive integer, got {scale_factor!r}")
        self.g, self.scales, self.s = glimpse_size, scales, scale_factor
        self.factors = [scale_factor**k for k in range(scales)]  # block side per scale
        self.margins = [math.ceil(f * glimpse_size / 2) for f in self.factors]  # zero cells before pixel 0
        f = torch.tensor(self.factors, dtype=torch.float32)
        m = torch.tensor(self.margins, dtype=torch.float32)
        # first window cell = floor(c − (P/2 − 1/2 − tie) + m): the per-scale subtrahend
        self.register_buffer("shift", f * (glimpse_size / 2) - 0.5 - _TIE - m, persistent=False)

    def _extent(self, k: int, size: int) -> int:
        """Cells of scale k's grid along an image side of `size` pixels: every window fits."""
        f, m = self.factors[k], self.margins[k]
        return size + m + (self.g - 1) * f - (f * self.g) // 2 + 1

    def prepare(self, images: torch.Tensor) -> RetinaState:
        """Block means of the images at every scale, once per batch: [B, C, H, W] → state."""
        with torch.no_grad():
            B, C, H, W = images.shape
            F_, s, g = self.factors[-1], self.s, self.g
            grids = [(self._extent(k, H), self._extent(k, W)) for k in range(self.scales)]
            largest = max(B * C * rows * cols for rows, cols in grids)
            if largest >= MAX_CELLS:
                raise UserError(
                    f"the retina's block-mean grid for {B} images of {C}x{H}x{W} would hold {largest:,} "
                    f"values, more than {MAX_CELLS - 1:,}; use a smaller --batch-size"
                )
            x = F.pad(images, (F_ - 1, F_, F_ - 1, F_))  # the cascade eats F − 1 cells
            levels = []
            for k, f in enumerate(self.factors):
                if k > 0:
                    # a block of side f = s blocks of side f/s shifted by f/s, first along x, then y
                    prev = f // s
                    h = x[..., :, : x.shape[-1] - (f - prev)]
                    for j in range(1, s):
                        h = h + x[..., :, j * prev : j * prev + h.shape[-1]]
                    x = h[..., : h.shape[-2] - (f - prev), :]
                    for j in range(1, s):
                        x = x + h[..., j * prev : j * prev + x.shape[-2], :]
                # x[..., i, j] is the block *sum* at position (i − (F − 1), j − (F − 1)), for i ≤ H,
                # j ≤ W; scaled to a mean while it is placed on positions −m … −m + extent − 1
                # (blocks further out are all zero)
                (rows, cols), offset = grids[k], self.margins[k] - (F_ - 1)
                levels.append(_embed(x[..., : H + F_, : W + F_], offset, rows, cols, 1.0 / (f * f)))
            half = images.new_tensor([0.5 * W, 0.5 * H])

            def ints(values: list) -> torch.Tensor:
                return torch.tensor(values, device=images.device, dtype=INDEX)

            state = RetinaState(
                levels=levels,
                half=half,
                origin=half[None, :] - self.shift.to(images.dtype)[:, None],
                limit=ints([[cols - 1 - (g - 1) * f, rows - 1 - (g - 1) * f] for (rows, cols), f in zip(grids, self.factors)]),
                image_stride=ints([C * rows * cols for rows, cols in grids]),
                xy_strides=ints([[1, cols] for _, cols in grids]),
            )
            if not exporting():
                for lv, f in zip(levels, self.factors):
                    rows, cols = lv.shape[-2:]
                    reach = (C - 1) * rows * cols + (g - 1) * f * (cols + 1)  # last cell of a window
                    state.windows.append(lv.as_strided((lv.numel() - reach, C, g, g), (1, rows * cols, f * cols, f)))
        return state

    def glimpse(
        self, state: RetinaState, loc: torch.Tensor, replicas: int = 1, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Patches at `loc` [N, 2] (x, y); row r reads image r // replicas. → [N, S·C, g, g]
        (written into `out`, any contiguous tensor of N·S·C·g·g elements, when given)."""
        with torch.no_grad():
            N, S, g = loc.shape[0], self.scales, self.g
            C = state.levels[0].shape[1]
            # first window cell (x, y) per scale; the clamp only guards non-finite locations
            # (≥ 0.5 for every finite location, so the integer conversion's truncation is the floor)
            start = torch.addcmul(state.origin, loc.clamp(-1.0, 1.0)[:, None, :], state.half).to(INDEX)
            start = torch.minimum(start.clamp_(min=0), state.limit)
            first = state.image_offsets(N, replicas) + (start * state.xy_strides).sum(-1, dtype=INDEX)
            if not state.windows:  # exporting: the same cells by explicit indices, no in-place writes
                return torch.cat([self._gather(state, k, first[:, k]) for k in range(S)], dim=1)
            if out is None:
                out = loc.new_empty(N, S * C, g, g)
            per_scale = out.view(N, S, C, g, g)
            for k in range(S):
                torch.index_select(state.windows[k], 0, first[:, k], out=per_scale[:, k])
        return out.view(N, S * C, g, g)

    def _gather(self, state: RetinaState, k: int, first: torch.Tensor) -> torch.Tensor:
        """Scale k's windows starting at element `first` [N] of its level, by per-pixel indices."""
        level, f, g = state.levels[k], self.factors[k], self.g
        C, rows, cols = level.shape[1:]
        j = torch.arange(g, device=first.device, dtype=INDEX) * f
        cell = (j[:, None] * cols + j[None, :]) + (torch.arange(C, device=first.device, dtype=INDEX) * (rows * cols))[
            :, None, None
        ]  # [C, g, g]
        index = first[:, None, None, None] + cell
        return torch.index_select(level.reshape(-1), 0, index.reshape(-1)).view(-1, C, g, g)

    def forward(self, images: torch.Tensor, loc: torch.Tensor, replicas: int = 1) -> torch.Tensor:
        """One-shot convenience: `glimpse(prepare(images), loc, replicas)`."""
        return self.glimpse(self.prepare(images), loc, replicas)
