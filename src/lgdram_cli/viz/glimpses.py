"""Where a model looks: glimpse GIFs, glimpse sheets with the retina's patches, dataset previews.

Each canvas shows its target box (dashed), the glimpse's boxes (one per retina scale, green when
the prediction after that glimpse is right, red when wrong), the glimpse centres and path, and
beneath it the verdict "true 7 · pred 1 (29 %)" of the final prediction (green right, red wrong)
and the prediction after the glimpse shown; a one-line legend runs along the bottom."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from lgdram_cli.atomic import atomic_path
from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.errors import UserError
from lgdram_cli.viz.draw import (
    BAND, GLIMPSE_ITEMS, GREEN, PATCH_ITEM, RED, TARGET, TARGET_ITEM, TEXT,
    caption, draw_box, draw_glimpse, gif_frame, grid, text_size, to_rgb, upscale_factor, with_legend,
)

FRAME_MS = 600
HOLD_MS = 2400  # the last frame stays up longer


@dataclass
class Trace:
    """One deterministic pass of a model over a batch, with what it saw."""

    locations: torch.Tensor  # [N, T, 2]
    probs: torch.Tensor  # [N, T, classes]: prediction after each glimpse (final one repeated if absent)
    final: torch.Tensor  # [N, classes]: softmax of the final logits, the model's answer
    patches: torch.Tensor | None  # [N, T, S, C, g, g] or None when the model has no retina
    patch_widths: list[int]


@torch.no_grad()
def trace(model: torch.nn.Module, batch: CanvasBatch) -> Trace:
    model.eval()
    images = batch.images.float() / 255
    out = model(images, deterministic=True)
    if out.locations is None:
        raise UserError(f"model '{model.config.type}' takes no glimpses (a whole-image classifier): nothing to visualise")
    T = out.locations.shape[1]
    probs = (out.step_logits if out.step_logits is not None else out.logits[:, None].expand(-1, T, -1)).softmax(-1)
    retina = getattr(model, "retina", None)
    widths = patch_widths(model)
    patches = None
    if retina is not None:
        state = retina.prepare(images)
        per_step = [retina.glimpse(state, out.locations[:, t]) for t in range(T)]  # [N, S·C, g, g] each
        N, C, g = images.shape[0], images.shape[1], per_step[0].shape[-1]
        patches = torch.stack(per_step, 1).reshape(N, T, -1, C, g, g)
    return Trace(out.locations, probs, out.logits.softmax(-1), patches, widths)


def patch_widths(model: torch.nn.Module) -> list[int]:
    """Side in pixels of each retina scale's square patch, from the model's config."""
    c = model.config
    if all(hasattr(c, k) for k in ("glimpse_size", "scales", "scale_factor")):
        return [c.glimpse_size * c.scale_factor**k for k in range(c.scales)]
    return []


def _frame_cell(batch: CanvasBatch, tr: Trace, i: int, t: int, scale: int) -> Image.Image:
    """Canvas i at glimpse t: the glimpse's boxes (green when the prediction after it is right,
    red when wrong), the path so far, the dashed target box; beneath, the verdict of the final
    prediction and the prediction after this glimpse."""
    size = tuple(batch.images.shape[-2:])
    T = tr.locations.shape[1]
    picture = to_rgb(batch.images[i], scale)
    truth = int(batch.labels[i])
    step_p = tr.probs[i, t]
    step = int(step_p.argmax())
    step_colour = GREEN if step == truth else RED
    history = tr.locations[i, :t].tolist()
    draw_glimpse(picture, size, scale, tr.locations[i, t].tolist(), tr.patch_widths or [8], step_colour, history)
    draw_box(picture, batch.boxes[i].tolist(), scale, TARGET, dashed=True)
    pred = int(tr.final[i].argmax())
    return caption(picture, [
        (verdict(truth, tr.final[i]), GREEN if pred == truth else RED),
        (f"after glimpse {t + 1}/{T}: {step} ({100 * float(step_p[step]):.0f} %)", step_colour),
    ])


def verdict(truth: int, probs: torch.Tensor) -> str:
    """'true 7 · pred 1 (29 %)': the label, the predicted class and its probability."""
    pred = int(probs.argmax())
    return f"true {truth} · pred {pred} ({100 * float(probs[pred]):.0f} %)"


def glimpse_frames(model: torch.nn.Module, batch: CanvasBatch, columns: int | None = None) -> list[Image.Image]:
    """The GIF's frames (RGB): one per glimpse, a grid of the canvases with a legend beneath."""
    tr = trace(model, batch)
    N, T = tr.locations.shape[:2]
    columns = columns or math.ceil(math.sqrt(N))
    scale = upscale_factor(tuple(batch.images.shape[-2:]))
    frames = []
    for t in range(T):
        cells = [_frame_cell(batch, tr, i, t, scale) for i in range(N)]
        frames.append(with_legend(grid(cells, columns), GLIMPSE_ITEMS, text_size(cells[0].width)))
    return frames


def glimpse_gif(model: torch.nn.Module, batch: CanvasBatch, path: Path, columns: int | None = None) -> int:
    """An animated GIF, one frame per glimpse, of a grid of canvases; returns the frame count."""
    frames = [gif_frame(f) for f in glimpse_frames(model, batch, columns)]
    durations = [FRAME_MS] * (len(frames) - 1) + [HOLD_MS]
    with atomic_path(path) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0, disposal=1
        )
    return len(frames)


def glimpse_sheet(model: torch.nn.Module, batch: CanvasBatch, path: Path) -> None:
    """A static PNG: each sample a row, each glimpse a column, with the retina patches under it."""
    sheet = glimpse_sheet_image(model, batch)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def glimpse_sheet_image(model: torch.nn.Module, batch: CanvasBatch) -> Image.Image:
    tr = trace(model, batch)
    N, T = tr.locations.shape[:2]
    scale = upscale_factor(tuple(batch.images.shape[-2:]))
    cells = []
    for i in range(N):
        for t in range(T):
            cell = _frame_cell(batch, tr, i, t, scale)
            if tr.patches is not None:
                cell = _with_patches(cell, tr.patches[i, t])
            cells.append(cell)
    items = (*GLIMPSE_ITEMS, PATCH_ITEM) if tr.patches is not None else GLIMPSE_ITEMS
    return with_legend(grid(cells, T), items, text_size(cells[0].width))


def _with_patches(cell: Image.Image, patches: torch.Tensor) -> Image.Image:
    """Append the S retina patches (each g×g, upscaled) under a cell: what the model saw."""
    S = patches.shape[0]
    side = max(8, (cell.width - 4 * (S + 1)) // S)
    strip = Image.new("RGB", (cell.width, side + 8), BAND)
    for k in range(S):
        p = patches[k].clamp(0, 1)
        p = p / p.max().clamp(min=1e-6)  # coarse scales are dim averages: stretch to see them
        tile = to_rgb((p * 255).to(torch.uint8), 1).resize((side, side), Image.NEAREST)
        strip.paste(tile, (4 + k * (side + 4), 4))
    out = Image.new("RGB", (cell.width, cell.height + strip.height), BAND)
    out.paste(cell, (0, 0))
    out.paste(strip, (0, cell.height))
    return out


def dataset_sheet(batch: CanvasBatch, path: Path, columns: int | None = None) -> None:
    """A PNG of generated canvases with their target boxes and labels (the papers' task figures)."""
    sheet = dataset_sheet_image(batch, columns)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def dataset_sheet_image(batch: CanvasBatch, columns: int | None = None) -> Image.Image:
    N = len(batch)
    columns = columns or math.ceil(math.sqrt(N))
    scale = upscale_factor(tuple(batch.images.shape[-2:]))
    cells = []
    for i in range(N):
        picture = to_rgb(batch.images[i], scale)
        draw_box(picture, batch.boxes[i].tolist(), scale, TARGET, dashed=True)
        text = f"label {int(batch.labels[i])} · {int(batch.n_distractors[i])} distractors"
        cells.append(caption(picture, [(text, TEXT)]))
    return with_legend(grid(cells, columns), [TARGET_ITEM], text_size(cells[0].width))
