"""`sum-mnist`: two digits side by side; the label is their sum."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from lgdram.plugin_api import CanvasBatch, CanvasConfig, DatasetGenerator, TranslatedTask, box_centre


class DigitSumConfig(CanvasConfig):
    type: str = "sum-mnist"
    canvas: tuple[int, int] = (60, 80)


class DigitSumTask(DatasetGenerator):
    """Two digits on one canvas, one in each half; label = their sum (0–18); box = both digits."""

    Config: ClassVar[type[DigitSumConfig]] = DigitSumConfig
    config: DigitSumConfig

    def __init__(self, config: DigitSumConfig) -> None:
        super().__init__(config)
        h, w = config.canvas
        if w < 56:
            from lgdram.plugin_api import UserError

            raise UserError(f"sum-mnist needs a canvas at least 56 px wide for two digits, got {w}")
        half = config.model_dump() | {"type": "translated", "canvas": (h, w // 2)}
        # Each half is an ordinary translated/cluttered canvas from lgdram's own generator.
        self.half = TranslatedTask(TranslatedTask.Config.model_validate(half))

    @property
    def channels(self) -> int:
        return self.half.channels

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.config.canvas
        return (h, 2 * (w // 2))

    @property
    def classes(self) -> int:
        return 19

    def generate(
        self, n: int, split: str, seed: int, device: torch.device | str = "cpu", start: int = 0
    ) -> CanvasBatch:
        left = self.half.generate(n, split, 2 * seed, device, start)
        right = self.half.generate(n, split, 2 * seed + 1, device, start)
        H, W = self.size
        shift = torch.tensor([W // 2, 0, W // 2, 0], dtype=torch.float32, device=left.boxes.device)
        rb = right.boxes + shift
        box = torch.stack(
            [torch.minimum(left.boxes[:, 0], rb[:, 0]), torch.minimum(left.boxes[:, 1], rb[:, 1]),
             torch.maximum(left.boxes[:, 2], rb[:, 2]), torch.maximum(left.boxes[:, 3], rb[:, 3])], dim=1
        )
        centers = box_centre(box, (H, W))  # the union box's centre, (x, y) in [-1, 1]
        return CanvasBatch(
            images=torch.cat([left.images, right.images], dim=-1),
            labels=left.labels + right.labels,
            centers=centers,
            boxes=box,
            n_distractors=left.n_distractors + right.n_distractors,
        )

    def resolved_config(self) -> dict[str, Any]:
        out = super().resolved_config()
        out["digits"] = self.half.resolved_config()["digits"]
        return out

    def provenance(self, split: str) -> dict[str, str]:
        return self.half.provenance(split)
