"""A template person shared by the decoder and evaluation tests."""

from __future__ import annotations

import numpy as np

# A standing person facing the camera, COCO-17 order, (x, y) in units of body height with
# the nose near the top and the ankles at the bottom (the person's left is image right).
TEMPLATE = np.array(
    [
        (0.00, 0.08), (0.02, 0.06), (-0.02, 0.06), (0.05, 0.07), (-0.05, 0.07),
        (0.12, 0.20), (-0.12, 0.20), (0.16, 0.37), (-0.16, 0.37), (0.18, 0.52),
        (-0.18, 0.52), (0.08, 0.53), (-0.08, 0.53), (0.09, 0.75), (-0.09, 0.75),
        (0.10, 0.97), (-0.10, 0.97),
    ],
    np.float32,
)  # fmt: skip


def make_person(rng: np.random.Generator, top_xy: tuple[float, float], height: float) -> np.ndarray:
    """(17, 3) COCO keypoints of one jittered template person, all visible."""
    xy = TEMPLATE * height + np.asarray(top_xy, np.float32)
    xy += rng.normal(0, 0.015 * height, xy.shape).astype(np.float32)
    return np.concatenate([xy, np.full((17, 1), 2, np.float32)], axis=1)
