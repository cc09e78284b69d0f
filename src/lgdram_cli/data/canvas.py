"""Vectorised canvas composition: digits and distractor patches pasted by index arithmetic.

Every random choice for a batch is drawn up front from one `torch.Generator`, then all
canvases are composed with a few indexed writes — no per-image Python loop. Pixels are
summed in integers and clipped to 255, which is the seed's "add and clip to [0, 1]" on the
uint8 grid and makes the output bit-identical for a given seed on any device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from lgdram_cli.geometry import px_to_loc

DIGIT = 28


@dataclass
class CanvasBatch:
    """A batch of task samples; the tensor layout of the public HDF5 format."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    centers: torch.Tensor  # float32 [N, 2]: target centre (x, y) in [-1, 1], grid_sample convention
    boxes: torch.Tensor  # float32 [N, 4]: target box (x_min, y_min, x_max, y_max) in pixels, max exclusive
    n_distractors: torch.Tensor  # int16 [N]

    def __len__(self) -> int:
        return self.labels.shape[0]

    def to(self, device: torch.device | str) -> CanvasBatch:
        return CanvasBatch(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.images, self.labels, self.centers, self.boxes, self.n_distractors)


def digit_boxes(digits: torch.Tensor) -> torch.Tensor:
    """Tight boxes (x_min, y_min, x_max, y_max) of each 28×28 digit's non-zero pixels."""
    rows = digits.amax(dim=2) > 0  # [D, 28]: which rows hold ink
    cols = digits.amax(dim=1) > 0
    ar = torch.arange(DIGIT, device=digits.device)
    big = torch.full_like(ar, DIGIT)

    def span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lo = torch.where(mask, ar, big).amin(dim=1)
        hi = torch.where(mask, ar + 1, torch.zeros_like(ar)).amax(dim=1)
        empty = ~mask.any(dim=1)  # a blank digit: use its whole frame
        return torch.where(empty, 0, lo), torch.where(empty, DIGIT, hi)

    x0, x1 = span(cols)
    y0, y1 = span(rows)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def compose(
    digits: torch.Tensor,
    labels: torch.Tensor,
    boxes: torch.Tensor,
    n: int,
    size: tuple[int, int],
    distractors: tuple[int, int],
    distractor_size: int,
    colour: bool,
    generator: torch.Generator,
    device: torch.device,
    out: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> CanvasBatch:
    """Compose `n` canvases of `size` (H, W) from `digits` (uint8 [D, 28, 28] on `device`).

    Each canvas holds one target digit at a uniformly random position, fully inside, plus a
    uniformly random number in `distractors` (inclusive) of `distractor_size`² patches cut at
    random from *other* random digits and pasted at random positions. With `colour`, the
    target and each patch get a random RGB colour (3 channels), else 1 channel.

    `out` (uint8 [n, C, H, W]) receives the images when given, saving a copy; `workspace`
    (int16, n·C·H·W elements) is the summing buffer, reused across calls so that its memory
    stays mapped and cached (a fresh buffer per call spent most of the time in page faults).
    """
    H, W = size
    D = digits.shape[0]
    lo, hi = distractors
    ds = distractor_size
    C = 3 if colour else 1
    cpu = dict(generator=generator, device="cpu")

    # ---- every random draw, in a fixed order (the order is part of the determinism contract)
    target = torch.randint(0, D, (n,), **cpu)
    oy = torch.randint(0, H - DIGIT + 1, (n,), **cpu)
    ox = torch.randint(0, W - DIGIT + 1, (n,), **cpu)
    count = torch.randint(lo, hi + 1, (n,), **cpu)
    K = hi
    # other digit: an offset in [1, D) from the target, so never the target digit itself
    src = (target[:, None] + torch.randint(1, max(D, 2), (n, K), **cpu)) % D
    cy = torch.randint(0, DIGIT - ds + 1, (n, K), **cpu)
    cx = torch.randint(0, DIGIT - ds + 1, (n, K), **cpu)
    py = torch.randint(0, H - ds + 1, (n, K), **cpu)
    px = torch.randint(0, W - ds + 1, (n, K), **cpu)
    colours = torch.randint(64, 256, (n, 1 + K, 3), **cpu) if colour else None

    target, oy, ox, count, src, cy, cx, py, px = _to_device(device, target, oy, ox, count, src, cy, cx, py, px)
    flat_digits = digits.reshape(-1)  # uint8 [D*784]
    HW = H * W
    if workspace is not None and workspace.numel() == n * C * HW:
        canvas = workspace.view(-1).zero_()
    else:
        canvas = torch.zeros(n * C * HW, dtype=torch.int16, device=device)
    plane = torch.arange(n, device=device)[:, None] * C + torch.arange(C, device=device)  # [n, C]

    # ---- target digit: written first onto a blank canvas, so a plain scatter suffices
    r = torch.arange(DIGIT, device=device)
    offs = (r[:, None] * W + r[None, :]).reshape(-1)  # [784] offsets inside a canvas
    vals = digits.reshape(D, DIGIT * DIGIT).index_select(0, target)  # whole rows: no pixel index
    vals = vals.view(n, 1, DIGIT * DIGIT).to(torch.int16)  # [n, 1, 784]
    corner = plane * HW + (oy * W + ox)[:, None]  # [n, C]: where each digit's top-left lands
    index = corner[:, :, None] + offs  # [n, C, 784]: one full-size add
    if colour:
        tint = colours[:, 0, :].to(device=device, dtype=torch.int16)  # [n, 3]
        vals = (vals.int() * tint[:, :, None] // 255).to(torch.int16)
    canvas.scatter_(0, index.view(-1), vals.expand(n, C, DIGIT * DIGIT).reshape(-1))

    # ---- distractors: only the active slots, summed onto the canvas
    if K > 0:
        active = torch.arange(K, device=device)[None, :] < count[:, None]  # [n, K]
        q = torch.arange(ds, device=device)
        patch_offs = (q[:, None] * DIGIT + q[None, :]).reshape(-1)  # [ds²] inside a digit
        canvas_offs = (q[:, None] * W + q[None, :]).reshape(-1)  # [ds²] inside a canvas
        img = torch.arange(n, device=device)[:, None].expand(n, K)[active]  # [A]
        start = (src * (DIGIT * DIGIT) + cy * DIGIT + cx)[active]
        pvals = flat_digits.index_select(0, start[:, None].add(patch_offs).view(-1))
        pvals = pvals.view(-1, 1, ds * ds).to(torch.int16)  # [A, 1, ds²]
        pcorner = plane[img] * HW + (py * W + px)[active][:, None]  # [A, C]
        pindex = pcorner[:, :, None] + canvas_offs  # [A, C, ds²]
        if colour:
            tint = colours[:, 1:, :].to(device)[active.to(colours.device)].to(torch.int32)  # [A, 3]
            pvals = (pvals.int() * tint[:, :, None] // 255).to(torch.int16)
        canvas.scatter_add_(0, pindex.view(-1), pvals.expand(-1, C, ds * ds).reshape(-1))

    images = out if out is not None else torch.empty((n, C, H, W), dtype=torch.uint8, device=device)
    images.view(-1).copy_(canvas.clamp_(max=255))
    box = boxes[target] + torch.stack([ox, oy, ox, oy], dim=1).float()
    # centre = (x_min + x_max) / W − 1, read from a table of every possible value
    twice = (box[:, 0::2].sum(1).long(), box[:, 1::2].sum(1).long())
    centers = torch.stack([centre_table(W, device)[twice[0]], centre_table(H, device)[twice[1]]], dim=1)
    return CanvasBatch(images, labels[target], centers, box, count.to(torch.int16))


def _to_device(device: torch.device, *draws: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The CPU-drawn int64 tensors on `device`, in one copy: each copy to a GPU from ordinary
    memory waits for the GPU's queue to drain, so nine copies per chunk were nine waits."""
    if torch.device(device).type == "cpu":
        return draws
    packed = torch.cat([d.reshape(-1) for d in draws]).to(device)
    return tuple(p.view(d.shape) for p, d in zip(packed.split([d.numel() for d in draws]), draws))


@functools.lru_cache(maxsize=64)
def centre_table(side: int, device: torch.device) -> torch.Tensor:
    """k / side − 1 for k = 0 … 2·side (float32), computed on the CPU, cached per device.

    Why a table: a GPU divides a tensor by a scalar through the scalar's reciprocal, which
    rounds differently in the last bit, and the canvases' centres must be bit-identical on
    every device. Entry k is `geometry.px_to_loc(k / 2, side)`, the centre of a box whose
    edges sum to k, on the CPU (bit for bit k / side − 1, the formula centres were always
    computed with). Cached: a copy to the GPU from ordinary memory waits for the GPU's queue
    to drain."""
    return px_to_loc(torch.arange(2 * side + 1, dtype=torch.float32) / 2, side).to(device)
