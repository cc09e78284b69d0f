"""The glimpse sensor: multi-resolution square patches around a location, by area averaging.

Scale k of a glimpse is a patch P_k = g·s^k pixels wide (g = glimpse_size, s = scale_factor)
reduced to g×g by averaging s^k × s^k blocks; pixels outside the image read zero.

Why it is fast: block means do not depend on the location, so `prepare` computes them once
per image batch — for every scale, the stride-1 s^k × s^k box mean of the zero-padded images,
for the B distinct images only (not the B·M Monte-Carlo replicas). Scale k is the mean of
s × s means of scale k − 1 shifted by s^(k−1) (two sums of shifted views), about two passes
over its grid. Each scale's grid is padded with zeros far enough that every patch is a whole
g×g window of cells at stride s^k, and all grids lie one after another in one flat buffer, so
a glimpse at every scale is one 1-D `index_select` from it: index = the window's first cell
(one number per row and scale) + a fixed table of cell offsets. That gather, into a contiguous
output, measured 15 % faster than one `as_strided` window gather per scale with the grids out of
cache (as they are inside a training step), and every exporter (ONNX, torch.export) understands it, so training, evaluation and export share
it. The models ask `prepare` to reuse the last state of the same batch shape (`reuse=True`):
zero borders and index tables are then made once, not every step, and only the interiors are
rewritten. Nothing needs a gradient (locations are detached samples), so everything runs
without autograd.

Placement: with c = (x + 1)/2 · W the location in pixel units (grid_sample, align_corners=False),
a patch of width P spans [c − P/2, c + P/2), its integer start is round(c − P/2) with ties
rounded up (a 1e-3 px tolerance makes pixel-centre locations immune to float error). So the
pixel containing the location lands at glimpse index (g − 1)//2 at every scale. Locations are
clamped to [-1, 1] first.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lgdram_cli.errors import UserError

_TIE = 1e-3  # px; see module docstring
#: int32 gather indices: half the memory traffic of int64. Safe while all scales' grids together
#: hold fewer than MAX_CELLS values (checked before anything is allocated).
INDEX = torch.int32
MAX_CELLS = 2**31


@dataclass
class RetinaState:
    """Per-batch precomputation shared by all glimpses (and all Monte-Carlo replicas)."""

    levels: list[torch.Tensor]  # per scale: [B, C, rows_k, cols_k] block means on a zero-padded grid
    flat: torch.Tensor  # the levels one after another, 1-D (the levels are views of it)
    cells: torch.Tensor  # int32 [S, C·g·g]: where a window's cells lie in `flat`, from its first cell
    shape: tuple[int, ...]  # (B, C, H, W) of the images
    half: torch.Tensor  # [2]: (W/2, H/2), location units → pixels
    origin: torch.Tensor  # [S, 2]: first window cell (x, y), before flooring, at location (0, 0)
    limit: torch.Tensor  # int32 [S, 2]: largest valid first window cell (x, y)
    image_stride: torch.Tensor  # int32 [S]: elements per image in each level
    xy_strides: torch.Tensor  # int32 [S, 2]: elements per grid column (1), per grid row
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


def _shifted_sum(views: list[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """views[0] + views[1] + …, left to right (into `out` when given: the same bits)."""
    if len(views) == 1:
        return views[0].clone() if out is None else out.copy_(views[0])
    total = torch.add(views[0], views[1], out=out) if out is not None else views[0] + views[1]
    for v in views[2:]:
        total = total.add_(v) if out is not None else total + v
    return total


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
        # zero cells before pixel 0 and after the last one on each scale's grid: enough for every
        # window, and for the next scale's sums, which read s·f − 1 cells before pixel 0 and
        # (s − 1)·f after the last
        self.margins = [max(math.ceil(f * glimpse_size / 2), scale_factor * f - 1) for f in self.factors]
        self.tails = [
            max((glimpse_size - 1) * f - (f * glimpse_size) // 2 + 1, (scale_factor - 1) * f) for f in self.factors
        ]
        self._reusable: dict[tuple, RetinaState] = {}  # see `prepare(reuse=True)`
        f = torch.tensor(self.factors, dtype=torch.float32)
        m = torch.tensor(self.margins, dtype=torch.float32)
        # first window cell = floor(c − (P/2 − 1/2 − tie) + m): the per-scale subtrahend
        self.register_buffer("shift", f * (glimpse_size / 2) - 0.5 - _TIE - m, persistent=False)

    def _extent(self, k: int, size: int) -> int:
        """Cells of scale k's grid along an image side of `size` pixels."""
        return self.margins[k] + size + self.tails[k]

    def prepare(self, images: torch.Tensor, reuse: bool = False) -> RetinaState:
        """Block means of the images at every scale, once per batch: [B, C, H, W] → state.

        `reuse`: rewrite the state (grids, index tables) of this thread's last call with the same
        image shape instead of building a new one; that call's state must no longer be in use (a
        model's forward pass, which holds it only while it runs, may say so). Keyed by thread,
        so that threads sharing a model never share a state.
        """
        with torch.no_grad():
            if exporting():  # graph capture does not follow writes into slices: pure functions
                levels = self._levels(images, None)
                return self._state(images, levels, torch.cat([level.reshape(-1) for level in levels]))
            key = (threading.get_ident(), images.device, images.dtype)
            state = self._reusable.get(key) if reuse else None
            if state is None or state.shape != tuple(images.shape):
                if reuse:
                    self._reusable.pop(key, None)  # free the old grids before allocating new ones
                shapes = self._shapes(images)
                sizes = [math.prod(shape) for shape in shapes]
                flat = images.new_zeros(sum(sizes))
                levels = [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]
                state = self._state(images, levels, flat)
                if reuse:
                    while len(self._reusable) >= 4:  # a few threads at most
                        self._reusable.pop(next(iter(self._reusable)))
                    self._reusable[key] = state
            self._levels(images, state.levels)
        return state

    def _shapes(self, images: torch.Tensor) -> list[tuple[int, int, int, int]]:
        B, C, H, W = images.shape
        shapes = [(B, C, self._extent(k, H), self._extent(k, W)) for k in range(self.scales)]
        cells = sum(math.prod(shape) for shape in shapes)
        if cells >= MAX_CELLS:
            raise UserError(
                f"the retina's block-mean grids for {B} images of {C}x{H}x{W} would hold {cells:,} "
                f"values, more than {MAX_CELLS - 1:,}; use a smaller --batch-size"
            )
        return shapes

    def _levels(self, images: torch.Tensor, grids: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Every scale's block means: written into the interiors of `grids` (zero borders,
        untouched), or, with `grids` None, as new zero-padded tensors (graph capture)."""
        H, W = images.shape[-2:]
        s = self.s
        levels = [] if grids is None else grids
        if grids is None:
            self._shapes(images)  # the size check
        for k, f in enumerate(self.factors):
            # the non-zero cells of scale k: blocks at positions −(f − 1) … size − 1
            m, lo, rows, cols = self.margins[k], f - 1, H + f - 1, W + f - 1
            if k == 0:  # the images themselves
                inner = images if grids is None else grids[0][..., m : m + H, m : m + W].copy_(images)
            else:
                # the mean of s × s means of scale k − 1 at offsets j·p (p = f / s): along x, then y
                prev, p = self.margins[k - 1], f // s
                src = levels[k - 1][..., prev - lo : prev - lo + rows + (s - 1) * p, :]
                h = _shifted_sum([src[..., prev - lo + j * p : prev - lo + j * p + cols] for j in range(s)])
                out = None if grids is None else grids[k][..., m - lo : m - lo + rows, m - lo : m - lo + cols]
                inner = _shifted_sum([h[..., j * p : j * p + rows, :] for j in range(s)], out=out)
                inner = inner * (1.0 / (s * s)) if grids is None else inner.mul_(1.0 / (s * s))
            if grids is None:
                levels.append(F.pad(inner, (m - lo, self.tails[k], m - lo, self.tails[k])))
        return levels

    def _state(self, images: torch.Tensor, levels: list[torch.Tensor], flat: torch.Tensor) -> RetinaState:
        """The state around `levels` (views of `flat`): what depends only on the shapes."""
        C, H, W = images.shape[1:]
        g = self.g
        half = images.new_tensor([0.5 * W, 0.5 * H])

        def ints(values: list) -> torch.Tensor:
            return torch.tensor(values, device=images.device, dtype=INDEX)

        grids = [level.shape[-2:] for level in levels]
        starts = [0]
        for level in levels[:-1]:
            starts.append(starts[-1] + level.numel())
        # cell (channel c, row i, column j) of scale k's window: c·rows·cols + (i·cols + j)·f past its first
        j = torch.arange(g, device=images.device, dtype=INDEX)
        channel = torch.arange(C, device=images.device, dtype=INDEX)[:, None, None]
        cells = torch.stack([
            (start + channel * (rows * cols) + (j[:, None] * cols + j[None, :]) * f).reshape(-1)
            for start, (rows, cols), f in zip(starts, grids, self.factors)
        ])  # fmt: skip
        return RetinaState(
            levels=levels,
            flat=flat,
            cells=cells,
            shape=tuple(images.shape),
            half=half,
            origin=half[None, :] - self.shift.to(images.device, images.dtype)[:, None],
            limit=ints([[cols - 1 - (g - 1) * f, rows - 1 - (g - 1) * f] for (rows, cols), f in zip(grids, self.factors)]),
            image_stride=ints([C * rows * cols for rows, cols in grids]),
            xy_strides=ints([[1, cols] for _, cols in grids]),
        )

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
            index = (first[:, :, None] + state.cells).reshape(-1)  # [N·S·C·g·g], scale-major per row
            if out is None:
                return torch.index_select(state.flat, 0, index).view(N, S * C, g, g)
            torch.index_select(state.flat, 0, index, out=out.view(-1))
        return out.view(N, S * C, g, g)

    def forward(self, images: torch.Tensor, loc: torch.Tensor, replicas: int = 1) -> torch.Tensor:
        """One-shot convenience: `glimpse(prepare(images), loc, replicas)`."""
        return self.glimpse(self.prepare(images), loc, replicas)
