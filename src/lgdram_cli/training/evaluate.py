"""Held-out evaluation: accuracy and where the model looked, with a deterministic policy.

Location metrics are in pixels of the canvas: a glimpse at (x, y) ∈ [-1, 1]² is at pixel
((x + 1) W / 2, (y + 1) H / 2), the grid_sample convention the generators use for centres
(`lgdram_cli.geometry`).
"""

from __future__ import annotations

from typing import Any

import torch

from lgdram_cli.data.canvas import CanvasBatch
from lgdram_cli.geometry import box_contains, loc_to_px

#: lgdram 0.1's name of `geometry.loc_to_px`
to_pixels = loc_to_px


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: CanvasBatch, device: torch.device, mc: int = 0, chunk: int = 500
) -> dict[str, Any]:
    """Metrics of `model` on `data`. mc=0: mean locations; mc=K: average of K sampled trajectories."""
    was_training = model.training
    model.eval()
    n = len(data)
    size = tuple(data.images.shape[-2:])
    correct = 0
    step_correct: torch.Tensor | None = None
    loc_err_sum, in_box_sum, glimpse_count = 0.0, 0.0, 0
    for lo in range(0, n, chunk):
        images = data.images[lo : lo + chunk].to(device).float().div_(255)
        labels = data.labels[lo : lo + chunk].to(device)
        if mc > 0:
            probs = sum(model(images, deterministic=False).logits.softmax(-1) for _ in range(mc))
            out = model(images, deterministic=True)
        else:
            out = model(images, deterministic=True)
            probs = out.logits
        correct += int((probs.argmax(-1) == labels).sum())
        if out.step_logits is not None:
            c = (out.step_logits.argmax(-1) == labels[:, None]).sum(0).double().cpu()
            step_correct = c if step_correct is None else step_correct + c
        if out.locations is not None:
            loc_px = loc_to_px(out.locations, size)  # [b, T, 2]
            centre_px = loc_to_px(data.centers[lo : lo + chunk].to(device), size)[:, None, :]
            loc_err_sum += float((loc_px - centre_px).norm(dim=-1).sum())
            inside = box_contains(data.boxes[lo : lo + chunk].to(device)[:, None, :], loc_px)
            in_box_sum += float(inside.sum())
            glimpse_count += inside.numel()
    model.train(was_training)
    accuracy = correct / n
    result: dict[str, Any] = {"n": n, "accuracy": accuracy, "error": 100.0 * (1 - accuracy)}
    if step_correct is not None:
        result["per_glimpse_accuracy"] = [float(c) / n for c in step_correct]
    if glimpse_count:
        result["location_error_px"] = loc_err_sum / glimpse_count
        result["glimpses_in_box"] = in_box_sum / glimpse_count
    return result
