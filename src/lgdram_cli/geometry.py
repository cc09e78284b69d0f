"""Locations ↔ pixels: the one home of lgdram's coordinate convention.

A location is (x, y) in [-1, 1], x horizontal, in the `grid_sample` convention with
`align_corners=False`: the canvas spans [-1, 1] edge to edge, so pixel column i of W has its
centre at x = (2i + 1)/W − 1, and location x lies at pixel coordinate (x + 1)·W/2 (0 is the
left edge of column 0, W the right edge of column W − 1). Boxes are (x_min, y_min, x_max,
y_max) in pixels, max exclusive.

Every part of lgdram converts through these functions — generators (target centres), the
retina (where a patch is cut), evaluation (location error, glimpses in the box), the pictures
and the conformance checks — so they agree to the bit. Plugins import them from
`lgdram.plugin_api`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union, overload

import torch

#: (H, W) of a canvas, or one side for a single axis.
Size = Union[tuple[int, int], Sequence[int], int]


def half_extent(size: Size, like: torch.Tensor | None = None) -> torch.Tensor:
    """Pixels per location unit along (x, y): the tensor [W/2, H/2] (dtype and device of `like`).
    `loc_to_px` is (loc + 1)·half_extent; the retina folds the same product into one `addcmul`."""
    H, W = _hw(size)
    if like is None:
        return torch.tensor([W / 2, H / 2])
    return like.new_tensor([W / 2, H / 2])


@overload
def loc_to_px(loc: torch.Tensor, size: Size) -> torch.Tensor: ...
@overload
def loc_to_px(loc: Sequence[float], size: Size) -> tuple[float, float]: ...


def loc_to_px(loc, size):
    """Locations (x, y) in [-1, 1] → pixel coordinates ((x + 1)·W/2, (y + 1)·H/2).

    `loc`: a tensor [..., 2] (→ a tensor of the same shape, dtype and device), or one (x, y)
    pair of numbers (→ a pair of floats). `size`: the canvas (H, W)."""
    H, W = _hw(size)
    if isinstance(loc, torch.Tensor):
        return (loc + 1) * half_extent((H, W), loc)
    x, y = loc
    return ((float(x) + 1) * (W / 2), (float(y) + 1) * (H / 2))


@overload
def px_to_loc(px: torch.Tensor, size: Size) -> torch.Tensor: ...
@overload
def px_to_loc(px: Sequence[float], size: Size) -> tuple[float, float]: ...


def px_to_loc(px, size):
    """Pixel coordinates → locations in [-1, 1]: x = px / (W/2) − 1 (the inverse of `loc_to_px`).

    `px`: a tensor [..., 2] of (x, y), or one pair of numbers; with `size` a single int (one
    side), `px` holds coordinates along that one axis (any shape). The centre of a box is
    `px_to_loc(((x_min + x_max) / 2, (y_min + y_max) / 2), size)`."""
    if isinstance(size, int):
        return px / (size / 2) - 1.0
    H, W = _hw(size)
    if isinstance(px, torch.Tensor):
        return px / half_extent((H, W), px) - 1.0
    x, y = px
    return (float(x) / (W / 2) - 1.0, float(y) / (H / 2) - 1.0)


def box_centre(boxes: torch.Tensor, size: Size) -> torch.Tensor:
    """The centres (x, y) in [-1, 1] of pixel boxes [..., 4] (x_min, y_min, x_max, y_max)."""
    return px_to_loc((boxes[..., :2] + boxes[..., 2:]) / 2, size)


def box_contains(boxes: torch.Tensor, px: torch.Tensor, inclusive: bool = False) -> torch.Tensor:
    """Whether pixel points `px` [..., 2] lie in `boxes` [..., 4] (broadcast against each other):
    x_min ≤ x < x_max and y_min ≤ y < y_max (max exclusive); `inclusive`: ≤ at the max too."""
    x, y = px[..., 0], px[..., 1]
    if inclusive:
        return (x >= boxes[..., 0]) & (x <= boxes[..., 2]) & (y >= boxes[..., 1]) & (y <= boxes[..., 3])
    return (x >= boxes[..., 0]) & (x < boxes[..., 2]) & (y >= boxes[..., 1]) & (y < boxes[..., 3])


def _hw(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    H, W = size
    return H, W
