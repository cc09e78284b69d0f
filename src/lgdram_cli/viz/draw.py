"""Drawing canvases, glimpse boxes and labels with Pillow (no matplotlib needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

GREEN = (40, 200, 60)
RED = (230, 40, 40)
YELLOW = (250, 210, 40)
PATH = (80, 160, 255)
CELL_MIN = 168  # smallest drawn canvas side in pixels: small canvases are upscaled to this


def upscale_factor(size: tuple[int, int]) -> int:
    return max(1, math.ceil(CELL_MIN / max(size)))


def to_rgb(image: torch.Tensor, scale: int) -> Image.Image:
    """uint8 [C, H, W] (C = 1 or 3) → an RGB image upscaled by `scale`, nearest neighbour."""
    array = image.detach().cpu().numpy()
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    array = np.repeat(array, 3, axis=0) if array.shape[0] == 1 else array[:3]
    picture = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)), "RGB")
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    return picture


def font() -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def to_canvas_px(loc: Sequence[float], size: tuple[int, int], scale: int) -> tuple[float, float]:
    """(x, y) ∈ [-1, 1] → drawn pixel coordinates (grid_sample convention)."""
    H, W = size
    return ((loc[0] + 1) / 2 * W * scale, (loc[1] + 1) / 2 * H * scale)


def draw_glimpse(
    picture: Image.Image, size: tuple[int, int], scale: int, loc: Sequence[float], patch_widths: Sequence[int],
    colour: tuple[int, int, int], history: Sequence[Sequence[float]] = (),
) -> None:
    """One box per retina scale centred at `loc`, plus the path through earlier glimpses."""
    d = ImageDraw.Draw(picture)
    points = [to_canvas_px(p, size, scale) for p in [*history, loc]]
    if len(points) > 1:
        d.line(points, fill=PATH, width=2)
    for x, y in points[:-1]:
        d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=PATH)
    x, y = points[-1]
    for width in patch_widths:
        half = width * scale / 2
        # Pillow's rectangle includes both end points: end one pixel early for a `width`·scale box
        d.rectangle([x - half, y - half, x + half - 1, y + half - 1], outline=colour, width=2)


def draw_box(picture: Image.Image, box: Sequence[float], scale: int, colour: tuple[int, int, int] = YELLOW) -> None:
    x0, y0, x1, y1 = (v * scale for v in box)
    ImageDraw.Draw(picture).rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=2)


def caption(picture: Image.Image, text: str, colour: tuple[int, int, int]) -> Image.Image:
    """The picture with a line of text on a dark band beneath it."""
    band = 20
    out = Image.new("RGB", (picture.width, picture.height + band), (16, 16, 16))
    out.paste(picture, (0, 0))
    ImageDraw.Draw(out).text((4, picture.height + 3), text, fill=colour, font=font())
    return out


def grid(cells: Sequence[Image.Image], columns: int, pad: int = 4) -> Image.Image:
    """Cells (all the same size) in a grid on a dark background."""
    w, h = cells[0].size
    rows = math.ceil(len(cells) / columns)
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), (32, 32, 32))
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        sheet.paste(cell, (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet
