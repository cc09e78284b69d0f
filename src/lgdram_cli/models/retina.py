"""The glimpse sensor: multi-resolution square patches around a location, by area averaging.

Scale k of a glimpse is a patch P_k = g·f_k pixels wide (g = glimpse_size, f_k = s^k, s =
scale_factor) reduced to g×g by averaging f_k × f_k blocks; pixels outside the image read zero.

Why it is fast: block means do not depend on the location, so `prepare` computes them once
per image batch — for every scale, the stride-1 f × f box mean of the zero-padded images,
for the B distinct images only (not the B·M Monte-Carlo replicas). Scale k is the mean of
s × s means of scale k − 1 shifted by f_(k−1) (two sums of shifted views), about two passes
over its grid. A glimpse then reads, at every scale, a g × g window of cells at stride f.

Phase-split grids: scale k's grid is stored as f × f sub-grids, one per phase (row mod f,
column mod f), so the cells a window reads, f apart, lie next to each other: every row of
every window is g consecutive floats. All grids lie one after another in one flat buffer, and
a glimpse is one `index_select` of N·S·C·g rows from an overlapping-rows view of it (row i =
the g floats from element i): one index per window row instead of one per cell. Measured:
a glimpse of 320 rows 2.2× faster than reading cell by cell (110 vs 242 µs, one thread,
`bench/bench_retina.py`), for a `prepare` about 60 µs slower than the un-split grids' (the
strided phase split): a net gain from two glimpse steps per batch on, at M = 10 Monte-Carlo
replicas ~0.4 ms of a training step.
Graph capture (ONNX, torch.export) knows no overlapping views: there the same buffer is read
cell by cell, with the same numbers. Margins are multiples of f, so scale k's phase-split grid
is built directly from scale k − 1's (strided views of both), never un-split.

The models ask `prepare` to reuse the last state of the same batch shape (`reuse=True`):
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
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from lgdram_cli.errors import UserError
from lgdram_cli.geometry import half_extent

_TIE = 1e-3  # px; see module docstring
#: int32 gather indices: half the memory traffic of int64. Safe while all scales' grids together
#: hold fewer than MAX_CELLS values (checked before anything is allocated).
INDEX = torch.int32
MAX_CELLS = 2**31


@dataclass
class RetinaState:
    """Per-batch precomputation shared by all glimpses (and all Monte-Carlo replicas)."""

    levels: list[torch.Tensor]  # per scale: [B, C, f, f, rows_k, cols_k] block means, phase-split, zero-padded
    flat: torch.Tensor  # the levels one after another, 1-D (the levels are views of it)
    runs: torch.Tensor | None  # [len − g + 1, g] overlapping view of `flat`: runs[i] = flat[i : i + g] (None while exporting)
    rows: torch.Tensor  # int32 [S, C·g]: where a window's rows start in `flat`, from its first cell
    shape: tuple[int, ...]  # (B, C, H, W) of the images
    half: torch.Tensor  # [2]: (W/2, H/2), location units → pixels
    origin: torch.Tensor  # [S, 2]: first window cell (x, y), before flooring, at location (0, 0)
    low: torch.Tensor  # int32 [S, 2] zeros: the smallest first window cell (a tensor bound: one clamp)
    limit: torch.Tensor  # int32 [S, 2]: largest valid first window cell (x, y), in un-split cells
    #: int32: per scale and axis, cell v's offset in the phase-split grid, (v // f)·(block
    #: stride) + (v % f)·(phase stride), for v = 0 … limit; the 2·S tables one after another
    offsets: torch.Tensor
    tables: torch.Tensor  # int32 [S, 2]: where each scale's (x, y) table starts in `offsets`
    image_stride: torch.Tensor  # int32 [S]: elements per image in each level
    sums: list[tuple | None] = field(default_factory=list)  # per scale: `Retina._sum_views` (in-place path)
    _images: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def to(self, dtype: torch.dtype) -> RetinaState:
        """A copy whose pixels are `dtype` (bf16 patches for the mixed-precision fused loop);
        the index tables are shared."""
        flat = self.flat.to(dtype)
        runs = None if self.runs is None else flat.as_strided(self.runs.shape, self.runs.stride())
        return replace(self, levels=[], flat=flat, runs=runs, sums=[])

    def row_offsets(self, n: int, replicas: int) -> torch.Tensor:
        """int32 [n, S, C·g]: where the window rows of row r's image (r // replicas) start in `flat`,
        relative to the window's first cell (cached per batch: one addition per glimpse less)."""
        cacheable = isinstance(n, int)  # not a symbolic batch size (torch.export)
        if cacheable and (n, replicas) in self._images:
            return self._images[(n, replicas)]
        image = torch.arange(n, device=self.image_stride.device, dtype=INDEX) // replicas
        offsets = (image[:, None] * self.image_stride)[:, :, None] + self.rows
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

    Scale k's grid holds the block means at block positions −m_k … with m_k = f_k·max(⌈g/2⌉, s)
    cells of zeros before pixel 0 (a multiple of f_k, at least half a patch, and enough for the
    next scale's sums) and enough after the last pixel that every window and those sums fit.
    """

    def __init__(self, glimpse_size: int, scales: int, scale_factor: int) -> None:
        super().__init__()
        if glimpse_size < 1 or scales < 1:
            raise ValueError(f"glimpse_size ({glimpse_size}) and scales ({scales}) must be >= 1")
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, int) or scale_factor < 1:
            raise ValueError(f"scale_factor must be a positive integer, got {scale_factor!r}")
        self.g, self.scales, self.s = glimpse_size, scales, scale_factor
        self.factors = [scale_factor**k for k in range(scales)]  # block side per scale
        self.margins = [f * max((glimpse_size + 1) // 2, scale_factor) for f in self.factors]
        self._reusable: dict[tuple, RetinaState] = {}  # see `prepare(reuse=True)`
        f = torch.tensor(self.factors, dtype=torch.float32)
        m = torch.tensor(self.margins, dtype=torch.float32)
        # first window cell = floor(c − (P/2 − 1/2 − tie) + m): the per-scale subtrahend
        self.register_buffer("shift", f * (glimpse_size / 2) - 0.5 - _TIE - m, persistent=False)

    def _extent(self, k: int, size: int) -> int:
        """Cells per phase of scale k's grid along an image side of `size` pixels."""
        f, g, s, m = self.factors[k], self.g, self.s, self.margins[k]
        # every window fits: the last one starts at m + size − ⌊f·g/2⌋ and spans (g − 1)·f more
        # (ceilings written as (x + f − 1) // f: under ONNX tracing sizes are traced, and ONNX's
        # integer division truncates, which is the floor only for non-negative operands)
        windows = (m + size - (f * g) // 2 + (g - 1) * f + f) // f
        interior = (m + size - 1) // f + 1  # the image's last pixel (for small g, past the windows)
        if k + 1 == self.scales:
            return max(windows, interior)
        # the next scale's sums read up to row last·s + 2(s − 1) − lead (see `_write_level`)
        last, lead = (self.margins[k + 1] + size - 1) // (s * f), (self.margins[k + 1] - m) // f
        return max(windows, interior, last * s + 2 * s - 1 - lead)

    def prepare(self, images: torch.Tensor, reuse: bool = False) -> RetinaState:
        """Block means of the images at every scale, once per batch: [B, C, H, W] → state.

        `reuse`: rewrite the state (grids, index tables) of this thread's last call with the same
        image shape instead of building a new one; that call's state must no longer be in use (a
        model's forward pass, which holds it only while it runs, may say so). Keyed by thread,
        so that threads sharing a model never share a state.
        """
        with torch.no_grad():
            if exporting():  # graph capture does not follow writes into slices: pure functions
                levels = self._levels(images)
                flat = torch.cat([level.reshape(-1) for level in levels])
                return self._state(images, levels, flat, runs=False)
            key = (threading.get_ident(), images.device, images.dtype)
            state = self._reusable.get(key) if reuse else None
            if state is None or state.shape != tuple(images.shape):
                if reuse:
                    self._reusable.pop(key, None)  # free the old grids before allocating new ones
                shapes = self._shapes(images)
                sizes = [math.prod(shape) for shape in shapes]
                flat = images.new_zeros(sum(sizes))
                levels = [part.view(shape) for part, shape in zip(flat.split(sizes), shapes)]
                state = self._state(images, levels, flat, runs=True)
                if reuse:
                    while len(self._reusable) >= 4:  # a few threads at most
                        self._reusable.pop(next(iter(self._reusable)))
                    self._reusable[key] = state
            H, W = images.shape[-2:]
            m = self.margins[0]
            state.levels[0][:, :, 0, 0, m : m + H, m : m + W].copy_(images)
            for k in range(1, self.scales):
                self._write_level(state, k)
        return state

    def _shapes(self, images: torch.Tensor) -> list[tuple[int, ...]]:
        B, C, H, W = images.shape
        shapes = [(B, C, f, f, self._extent(k, H), self._extent(k, W)) for k, f in enumerate(self.factors)]
        cells = sum(math.prod(shape) for shape in shapes)
        if cells >= MAX_CELLS:
            raise UserError(
                f"the retina's block-mean grids for {B} images of {C}x{H}x{W} would hold {cells:,} "
                f"values, more than {MAX_CELLS - 1:,}; use a smaller --batch-size"
            )
        return shapes

    def _write_level(self, state: RetinaState, k: int) -> None:
        """Scale k's interior from scale k − 1's, phase-split to phase-split, in place."""
        if state.sums[k] is None:
            state.sums[k] = self._sum_views(state, k)
        ys, scratch, xs, out = state.sums[k]
        _shifted_sum(ys, out=scratch).mul_(1.0 / (self.s * self.s))
        _shifted_sum(xs, out=out)

    def _sum_views(self, state: RetinaState, k: int) -> tuple:
        """The strided views `_write_level` sums (made once per state: they only depend on shapes).

        With p = f/s the previous block side, scale k's phase φ = q·p + t (q < s, t < p) at block
        a is the mean over j, j' < s of scale k − 1's phase t at block a·s + q + j − lead
        (lead = (m_k − m_(k−1))/p), in both axes: the sum along y into a scratch buffer (whole
        rows: contiguous runs; the 1/s² here, on contiguous memory), then along x (stride s).
        Rows a_lo … a_hi of every phase cover the interior; the cells of those rows outside it
        sum zeros, so they stay zero.
        """
        B, C, H, W = state.shape
        s, f, p = self.s, self.factors[k], self.factors[k - 1]
        prev, cur = state.levels[k - 1], state.levels[k]
        lead = (self.margins[k] - self.margins[k - 1]) // p
        a_lo = b_lo = self.margins[k] // f - 1
        na, nb = (self.margins[k] + H - 1) // f - a_lo + 1, (self.margins[k] + W - 1) // f - b_lo + 1
        nX = nb * s + s - 1  # columns of scale k − 1 the x-sums read
        pB, pC, pPy, pPx, pR, _ = prev.stride()
        size = (B, C, s, p, p, na, nX)  # y-sums: [image, channel, q_y, t_y, t_x, block y, column]
        corner = prev.storage_offset() + (a_lo * s - lead) * pR + b_lo * s - lead
        ys = [state.flat.as_strided(size, (pB, pC, pR, pPy, pPx, s * pR, 1), corner + j * pR) for j in range(s)]
        scratch = prev.new_empty(size)
        hB, hC, hQ, hPy, hPx, hR, _ = scratch.stride()
        size = (B, C, s, p, s, p, na, nb)  # [image, channel, q_y, t_y, q_x, t_x, block y, block x]
        xs = [scratch.as_strided(size, (hB, hC, hQ, hPy, 1, hPx, hR, s), j) for j in range(s)]
        cB, cC, cPy, cPx, cR, _ = cur.stride()
        out = state.flat.as_strided(
            size, (cB, cC, p * cPy, cPy, p * cPx, cPx, cR, 1), cur.storage_offset() + a_lo * cR + b_lo
        )
        return ys, scratch, xs, out

    def _levels(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Every scale's phase-split grid as new tensors, by pure functions (graph capture): the
        un-split grids by padding and shifted sums, then split by a reshape. The same numbers,
        bit for bit, as `_write_level`: every cell sums the same values in the same order."""
        B, C, H, W = images.shape
        s = self.s
        self._shapes(images)  # the size check
        plain: list[torch.Tensor] = []  # un-split grids
        for k, f in enumerate(self.factors):
            # the non-zero cells of scale k: blocks at positions −(f − 1) … size − 1
            m, lo, rows, cols = self.margins[k], f - 1, H + f - 1, W + f - 1
            if k == 0:  # the images themselves
                inner = images
            else:
                # the mean of s × s means of scale k − 1 at offsets j·p (p = f / s): along y, then x
                prev, p = self.margins[k - 1], f // s
                src = plain[k - 1][..., prev - lo : prev - lo + cols + (s - 1) * p]
                v = _shifted_sum([src[..., prev - lo + j * p : prev - lo + j * p + rows, :] for j in range(s)])
                v = v * (1.0 / (s * s))  # scaled before the x-sums, as `_write_level` does
                inner = _shifted_sum([v[..., j * p : j * p + cols] for j in range(s)])
            down, right = f * self._extent(k, H) - (m - lo + rows), f * self._extent(k, W) - (m - lo + cols)
            plain.append(F.pad(inner, (m - lo, right, m - lo, down)))
        return [
            grid.reshape(B, C, grid.shape[-2] // f, f, grid.shape[-1] // f, f).permute(0, 1, 3, 5, 2, 4)
            for grid, f in zip(plain, self.factors)
        ]

    def _state(self, images: torch.Tensor, levels: list[torch.Tensor], flat: torch.Tensor, runs: bool) -> RetinaState:
        """The state around `levels` (views of `flat`, or its parts): what depends only on the shapes."""
        C, H, W = images.shape[1:]
        g = self.g
        # pixel = (loc + 1)·half (`geometry.loc_to_px`), folded with the patch offset into one
        # addcmul per glimpse: start = loc·half + origin, origin = half − shift
        half = half_extent((H, W), images)

        def ints(values: list) -> torch.Tensor:
            return torch.tensor(values, device=images.device, dtype=INDEX)

        grids = [level.shape[-2:] for level in levels]  # (rows, cols) per phase
        starts = [0]
        for level in levels[:-1]:
            starts.append(starts[-1] + level.numel())
        # row i of channel c of scale k's window: c·(f²·rows·cols) + i·cols past its first cell
        i = torch.arange(g, device=images.device, dtype=INDEX)
        channel = torch.arange(C, device=images.device, dtype=INDEX)[:, None]
        rows = torch.stack([
            (start + channel * (f * f * r * c) + i[None, :] * c).reshape(-1)
            for start, (r, c), f in zip(starts, grids, self.factors)
        ])  # fmt: skip
        tables, firsts, total = [], [], 0
        for (r, c), f in zip(grids, self.factors):
            for cells, block, phase in ((c, 1, r * c), (r, c, f * r * c)):  # x, then y
                v = torch.arange(f * (cells - g + 1), device=images.device, dtype=INDEX)
                tables.append(v // f * block + v % f * phase)
                firsts.append(total)
                total = total + tables[-1].numel()  # not +=: under tracing numel() may be a tensor
        return RetinaState(
            levels=levels,
            flat=flat,
            runs=flat.as_strided((flat.numel() - g + 1, g), (1, 1)) if runs else None,
            rows=rows,
            shape=tuple(images.shape),
            half=half,
            origin=half[None, :] - self.shift.to(images.device, images.dtype)[:, None],
            low=ints([[0, 0]] * len(grids)),
            limit=ints([[f * (c - g + 1) - 1, f * (r - g + 1) - 1] for (r, c), f in zip(grids, self.factors)]),
            offsets=torch.cat(tables),
            tables=ints(firsts).view(-1, 2),
            image_stride=ints([C * f * f * r * c for (r, c), f in zip(grids, self.factors)]),
            sums=[None] * len(levels),
        )

    def glimpse(
        self, state: RetinaState, loc: torch.Tensor, replicas: int = 1, out: torch.Tensor | None = None,
        in_range: bool = False,
    ) -> torch.Tensor:
        """Patches at `loc` [N, 2] (x, y); row r reads image r // replicas. → [N, S·C, g, g]
        (written into `out`, any contiguous tensor of N·S·C·g·g elements, when given).
        `in_range`: the caller guarantees −1 ≤ loc ≤ 1 (or NaN), so the clamp is skipped."""
        with torch.no_grad():
            N, S, g = loc.shape[0], self.scales, self.g
            C = state.shape[1]
            if not in_range:
                loc = loc.clamp(-1.0, 1.0)
            # first window cell (x, y) per scale: ≥ 0.5 for every location in [-1, 1], so the
            # integer conversion's truncation is the floor; the clamp to [low, limit] only guards
            # non-finite locations
            start = torch.addcmul(state.origin, loc[:, None, :], state.half).to(INDEX)
            start = torch.clamp(start, state.low, state.limit).add_(state.tables)
            # → where that cell lies in its phase-split grid (table look-ups), → its window's rows
            cells = torch.index_select(state.offsets, 0, start.view(-1)).view(N, S, 2)
            first = cells.sum(-1, dtype=INDEX)
            index = (first[:, :, None] + state.row_offsets(N, replicas)).reshape(-1)  # [N·S·C·g], scale-major
            if state.runs is None:  # graph capture: cell by cell
                every = (index[:, None] + torch.arange(g, device=index.device, dtype=INDEX)).reshape(-1)
                return torch.index_select(state.flat, 0, every).view(N, S * C, g, g)
            if out is None:
                return torch.index_select(state.runs, 0, index).view(N, S * C, g, g)
            torch.index_select(state.runs, 0, index, out=out.view(-1, g))
        return out.view(N, S * C, g, g)

    def forward(self, images: torch.Tensor, loc: torch.Tensor, replicas: int = 1) -> torch.Tensor:
        """One-shot convenience: `glimpse(prepare(images), loc, replicas)`."""
        return self.glimpse(self.prepare(images), loc, replicas)
