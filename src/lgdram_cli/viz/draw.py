"""Drawing canvases, glimpse boxes, target boxes, captions and legends with Pillow (no matplotlib).

Every picture is built from cells: a canvas upscaled (nearest neighbour) to at least
`CELL_MIN` pixels, with a caption band beneath it; cells go in a `grid`, and the grid gets a
one-line `legend` strip at the bottom. Text sizes follow the width they must fit in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lgdram_cli.geometry import loc_to_px

Colour = tuple[int, int, int]

GREEN = (40, 200, 60)  # glimpse boxes and verdicts: prediction right
RED = (230, 40, 40)  # … prediction wrong
YELLOW = (250, 210, 40)
TARGET = YELLOW  # the dashed target box
PATH = (80, 160, 255)  # glimpse centres and the path through them
TEXT = (230, 230, 230)
MUTED = (150, 150, 150)
BAND = (16, 16, 16)  # background of captions and the legend
SHEET = (32, 32, 32)  # background of the grid between cells
#: Colours that must survive a GIF's 256-colour palette exactly.
UI_COLOURS = (GREEN, RED, TARGET, PATH, TEXT, MUTED, BAND, SHEET)
CELL_MIN = 200  # smallest drawn canvas side in pixels: small canvases are upscaled to this
DASH, GAP = 6, 4  # target outline: dash and gap lengths in drawn pixels
LINE = 2  # outline width of every box


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


# ---------------------------------------------------------------- coordinates (the one place)


def to_canvas_px(loc: Sequence[float], size: tuple[int, int], scale: int) -> tuple[float, float]:
    """(x, y) ∈ [-1, 1] → drawn pixel coordinates: `geometry.loc_to_px`, times the upscale."""
    x, y = loc_to_px((float(loc[0]), float(loc[1])), size)
    return (x * scale, y * scale)


def box_px(box: Sequence[float], scale: int) -> tuple[int, int, int, int]:
    """A canvas box (x_min, y_min, x_max, y_max) in pixels, max exclusive → the drawn picture's
    first and last pixel columns and rows it covers, inclusive (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (round(float(v) * scale) for v in box)
    return x0, y0, x1 - 1, y1 - 1


# ---------------------------------------------------------------- text


def text_size(width: int) -> int:
    """Font size (pixel height) for text in a strip `width` pixels wide: 14 px on a 200 px cell."""
    return max(10, min(28, round(width / 14)))


@functools.lru_cache(maxsize=32)
def font(size: int = 14) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` px (FreeType); its fixed ~11 px bitmap font without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: fixed bitmap font
        return ImageFont.load_default_imagefont() if hasattr(ImageFont, "load_default_imagefont") else ImageFont.load_default()


def _bitmap_zoom(size: int) -> int:
    """How much the fixed bitmap font (≈ 11 px) is enlarged to approach `size`."""
    return max(1, round(size / 11))


def text_width(text: str, size: int) -> int:
    """Width in pixels of `text` drawn by `draw_text` at `size`."""
    f = font(size)
    if isinstance(f, ImageFont.FreeTypeFont):  # measured as drawn: monochrome hinting changes the advances
        return math.ceil(f.getlength(text, mode="1"))
    return math.ceil(f.getlength(text)) * _bitmap_zoom(size)


def draw_text(picture: Image.Image, xy: tuple[int, int], text: str, colour: Colour, size: int) -> None:
    """`text` with its top-left at `xy`, `size` px high, not antialiased (crisp, exact colours,
    which a GIF palette keeps). The bitmap fallback font is enlarged by whole pixels."""
    f = font(size)
    if isinstance(f, ImageFont.FreeTypeFont):
        d = ImageDraw.Draw(picture)
        d.fontmode = "1"
        d.text(xy, text, fill=colour, font=f)
        return
    zoom = _bitmap_zoom(size)
    mask = Image.new("L", (max(1, text_width(text, size) // zoom), 14))
    ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=f)
    mask = mask.resize((mask.width * zoom, mask.height * zoom), Image.NEAREST)
    picture.paste(Image.new("RGB", mask.size, colour), xy, mask)


def fit_size(text: str, width: int, size: int, smallest: int = 8) -> int:
    """The largest font size ≤ `size` at which `text` fits in `width` pixels (≥ `smallest`)."""
    while size > smallest and text_width(text, size) > width:
        size -= 1
    return size


# ---------------------------------------------------------------- shapes


def draw_glimpse(
    picture: Image.Image, size: tuple[int, int], scale: int, loc: Sequence[float], patch_widths: Sequence[int],
    colour: Colour, history: Sequence[Sequence[float]] = (),
) -> None:
    """One box per retina scale centred at `loc`, a dot at its centre, and the path through earlier
    glimpses (dots at their centres)."""
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
        d.rectangle([x - half, y - half, x + half - 1, y + half - 1], outline=colour, width=LINE)
    d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=PATH)  # the current centre, over the boxes


def draw_box(
    picture: Image.Image, box: Sequence[float], scale: int, colour: Colour = TARGET, dashed: bool = False
) -> None:
    """The outline of a canvas box (pixels, max exclusive), inside its edge; `dashed`: dashes that
    always cover the four corners."""
    x0, y0, x1, y1 = box_px(box, scale)
    d = ImageDraw.Draw(picture)
    if not dashed:
        d.rectangle([x0, y0, x1, y1], outline=colour, width=LINE)
        return
    w = LINE - 1
    for a, b in _dashes(x0, x1):
        d.rectangle([a, y0, b, y0 + w], fill=colour)
        d.rectangle([a, y1 - w, b, y1], fill=colour)
    for a, b in _dashes(y0, y1):
        d.rectangle([x0, a, x0 + w, b], fill=colour)
        d.rectangle([x1 - w, a, x1, b], fill=colour)


def _dashes(first: int, last: int) -> list[tuple[int, int]]:
    """Dash spans (inclusive) along first … last: the first starts at `first`, the last ends at
    `last`, gaps spread evenly (about DASH on, GAP off)."""
    length = last - first + 1
    n = max(2, round((length + GAP) / (DASH + GAP)))
    if n * DASH >= length:  # too short to dash: solid
        return [(first, last)]
    gap = (length - n * DASH) / (n - 1)
    return [(round(first + k * (DASH + gap)), round(first + k * (DASH + gap)) + DASH - 1) for k in range(n)]


# ---------------------------------------------------------------- layout


def caption(picture: Image.Image, lines: Sequence[tuple[str, Colour]] | str, colour: Colour = TEXT) -> Image.Image:
    """The picture with lines of text on a dark band beneath it. The first line is the headline, at
    the width's text size; later lines are a little smaller. Each line shrinks to fit the width."""
    if isinstance(lines, str):
        lines = [(lines, colour)]
    pad = 4
    room = picture.width - 2 * pad
    base = text_size(picture.width)
    sizes = [fit_size(text, room, base if k == 0 else max(9, round(base * 0.85))) for k, (text, _) in enumerate(lines)]
    heights = [round(s * 1.3) for s in sizes]
    out = Image.new("RGB", (picture.width, picture.height + sum(heights) + 2 * pad), BAND)
    out.paste(picture, (0, 0))
    y = picture.height + pad
    for (text, c), s, h in zip(lines, sizes, heights):
        draw_text(out, (pad, y), text, c, s)
        y += h
    return out


def grid(cells: Sequence[Image.Image], columns: int, pad: int = 4) -> Image.Image:
    """Cells (all the same size) in a grid on a dark background."""
    w, h = cells[0].size
    rows = math.ceil(len(cells) / columns)
    sheet = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), SHEET)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        sheet.paste(cell, (pad + c * (w + pad), pad + r * (h + pad)))
    return sheet


#: Legend entries: (swatch, labels from the longest to the shortest). Swatches: "dashed" (the target
#: outline), "boxes" (a right and a wrong glimpse box), "dot" (a glimpse centre), "tile" (a patch).
LegendItem = tuple[str, tuple[str, ...]]
TARGET_ITEM: LegendItem = ("dashed", ("target digit", "target digit", "target"))
GLIMPSE_ITEMS: tuple[LegendItem, ...] = (
    TARGET_ITEM,
    ("boxes", ("glimpse scales: prediction right / wrong", "glimpse scales", "glimpse")),
    ("dot", ("glimpse centres and path", "glimpse centres", "centre")),
)
PATCH_ITEM: LegendItem = ("tile", ("under each: the retina's patches", "retina patches", "patches"))


def legend(width: int, items: Sequence[LegendItem], size: int | None = None) -> Image.Image:
    """A one-line strip explaining the marks, `width` pixels wide: the longest labels that fit at
    no less than 80 % of `size`, else the shortest, shrinking the font as needed (not below 8 px)."""
    size = size or text_size(min(width, 2 * CELL_MIN))
    pad = 4
    room = width - 2 * pad
    tiers = len(items[0][1])
    for tier in range(tiers):
        labels = [labels[tier] for _, labels in items]
        smallest = 8 if tier == tiers - 1 else max(8, round(0.8 * size))
        s = size
        while s > smallest and _legend_width(items, labels, s) > room:
            s -= 1
        if _legend_width(items, labels, s) <= room:
            break
    strip = Image.new("RGB", (width, round(s * 1.3) + 2 * pad), BAND)
    x, top, h = pad, pad, round(s * 1.3)
    for (kind, _), label in zip(items, labels):
        x += _swatch(strip, kind, x, top, h, s)
        draw_text(strip, (x, top), label, TEXT, s)
        x += text_width(label, s) + 2 * s
    return strip


def _swatch_width(kind: str, s: int) -> int:
    return {"dashed": 2 * s, "boxes": 2 * s}.get(kind, s) + s // 2


def _legend_width(items: Sequence[LegendItem], labels: Sequence[str], s: int) -> int:
    return sum(_swatch_width(k, s) + text_width(t, s) + 2 * s for (k, _), t in zip(items, labels)) - 2 * s


def _swatch(strip: Image.Image, kind: str, x: int, top: int, h: int, s: int) -> int:
    """Draw one legend swatch at x; returns the width it takes (with the space after it)."""
    d = ImageDraw.Draw(strip)
    mid = top + h // 2
    if kind == "dashed":
        for a, b in _dashes(x, x + 2 * s - 1):
            d.rectangle([a, mid - 1, b, mid], fill=TARGET)
    elif kind == "boxes":
        side = max(4, s * 3 // 4)
        y0 = mid - side // 2
        d.rectangle([x, y0, x + side - 1, y0 + side - 1], outline=GREEN, width=LINE)
        d.rectangle([x + s, y0, x + s + side - 1, y0 + side - 1], outline=RED, width=LINE)
    elif kind == "dot":
        r = max(2, s // 4)
        c = x + s // 2
        d.ellipse([c - r, mid - r, c + r, mid + r], fill=PATH)
    elif kind == "tile":
        side = max(4, s * 3 // 4)
        d.rectangle([x, mid - side // 2, x + side - 1, mid - side // 2 + side - 1], fill=MUTED)
    return _swatch_width(kind, s)


def with_legend(sheet: Image.Image, items: Sequence[LegendItem], size: int | None = None) -> Image.Image:
    """The sheet with a legend strip beneath it."""
    strip = legend(sheet.width, items, size)
    out = Image.new("RGB", (sheet.width, sheet.height + strip.height), SHEET)
    out.paste(sheet, (0, 0))
    out.paste(strip, (0, sheet.height))
    return out


# ---------------------------------------------------------------- GIF palette


def gif_frame(picture: Image.Image) -> Image.Image:
    """An RGB picture → a 256-colour palette image in which the UI colours (boxes, text, bands)
    stay exact: the canvas gets the other palette entries (median cut), the UI colours their own."""
    reserved = len(UI_COLOURS)
    free = 256 - reserved
    adaptive = picture.quantize(colors=free, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    index = np.asarray(adaptive).astype(np.uint8)
    rgb = np.asarray(picture)
    for k, colour in enumerate(UI_COLOURS):
        index = np.where((rgb == colour).all(-1), free + k, index).astype(np.uint8)
    palette = (adaptive.getpalette() or [])[: 3 * free]
    palette += [0] * (3 * free - len(palette))
    for colour in UI_COLOURS:
        palette += list(colour)
    out = Image.fromarray(index, "P")
    out.putpalette(palette)
    return out
