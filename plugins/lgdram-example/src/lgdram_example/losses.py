"""`box-hinge`: location guidance that is satisfied anywhere inside the target box."""

from __future__ import annotations

from typing import ClassVar

import torch

from lgdram.plugin_api import Loss, LossBatch, LossConfig, LossTerm, ModelOutput, UserError


class BoxHingeConfig(LossConfig):
    """`margin` shrinks the box (in pixels) so glimpses are pulled a little inside it."""

    margin: float = 0.0


class BoxHingeLoss(Loss):
    """Squared distance of each policy mean to the target box (zero inside), annotated images only."""

    Config: ClassVar[type[BoxHingeConfig]] = BoxHingeConfig
    config: BoxHingeConfig
    name = "box-hinge"

    def __call__(self, out: ModelOutput, batch: LossBatch, step: int) -> LossTerm:
        if out.means is None:
            raise UserError("the box-hinge loss needs an attention model (one with location means)")
        if batch.boxes is None or batch.size is None:
            raise UserError("the box-hinge loss needs target boxes in the batch")
        H, W = batch.size
        m = self.config.margin
        # box edges in the [-1, 1] location convention: pixel edge p ↦ 2p/W − 1
        scale = torch.tensor([2 / W, 2 / H, 2 / W, 2 / H], device=batch.boxes.device)
        edges = batch.boxes * scale - 1 + torch.tensor([m, m, -m, -m], device=scale.device) * scale
        lo, hi = edges[:, None, :2], edges[:, None, 2:]  # [N, 1, 2]
        outside = torch.relu(lo - out.means) + torch.relu(out.means - hi)  # [N, P, 2]
        per_row = (outside**2).sum(dim=(1, 2))
        mask = batch.annotated.to(per_row.dtype)
        value = (per_row * mask).sum() / mask.sum().clamp(min=1.0)
        # share of decisions inside the box (a 1-glimpse RAM makes none: P = 0 counts as inside)
        share = (outside == 0).all(-1).float().mean(-1).nan_to_num(1.0)
        inside = (share * mask).sum() / mask.sum().clamp(min=1.0)
        # metrics as detached scalar tensors: the trainer reads a step's metrics in one go
        return LossTerm(self.config.weight * value, {"hinge": value.detach(), "inside": inside.detach()})
