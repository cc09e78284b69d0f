"""Reference canvas generator: a straightforward per-image numpy loop (the seed's way).

Same algorithm as lgdram's vectorised generator (target digit at a random position, then
`k` distractor patches cut from other random digits, pixel values added and clipped), one
canvas at a time. It exists only to be measured against in `bench_gen.py`.
"""

from __future__ import annotations

import numpy as np


def reference_canvases(
    digits: np.ndarray, labels: np.ndarray, n: int, size: tuple[int, int], distractors: tuple[int, int],
    distractor_size: int = 8, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    H, W = size
    ds = distractor_size
    images = np.zeros((n, 1, H, W), dtype=np.uint8)
    out_labels = np.zeros(n, dtype=np.int64)
    centers = np.zeros((n, 2), dtype=np.float32)
    for i in range(n):
        canvas = np.zeros((H, W), dtype=np.float32)
        t = rng.integers(len(digits))
        y, x = rng.integers(0, H - 28 + 1), rng.integers(0, W - 28 + 1)
        canvas[y : y + 28, x : x + 28] += digits[t] / 255.0
        for _ in range(rng.integers(distractors[0], distractors[1] + 1)):
            d = digits[rng.integers(len(digits))]
            cy, cx = rng.integers(0, 28 - ds + 1, size=2)
            py, px = rng.integers(0, H - ds + 1), rng.integers(0, W - ds + 1)
            canvas[py : py + ds, px : px + ds] += d[cy : cy + ds, cx : cx + ds] / 255.0
        np.clip(canvas, 0.0, 1.0, out=canvas)
        images[i, 0] = (canvas * 255).astype(np.uint8)
        out_labels[i] = labels[t]
        centers[i] = ((x + 14) / W * 2 - 1, (y + 14) / H * 2 - 1)
    return images, out_labels, centers
