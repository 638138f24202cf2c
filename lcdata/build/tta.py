"""Test-time augmentation of the teacher: several views of each crop, mapped back, averaged.

The teacher pass may run the teacher on more than the stored crop: its mirror image and
zooms about the crop centre inside the teacher's fixed input size. Each view's outputs are
mapped back onto the stored crop's grid and the views are averaged, cell by cell, over the
views that saw the cell:

* mirror (`flip`): exact. The crop is flipped with numpy; the outputs are flipped back, the
  left/right part and limb channels swapped (`Skeleton.heatmap_flip_permutation`,
  `Skeleton.paf_flip`) and the PAFs' x negated. Mirroring maps cell centres onto cell
  centres, so nothing is resampled.
* zoom by `s` (`scales`): the crop is resampled about its centre (`lcdata.labels.warp`,
  bilinear, grey outside) and the outputs are warped back with the inverse affine (heatmap
  channels as scalars, background included; PAFs as vector fields). A zoom in (s > 1) sees
  only the middle of the crop: cells outside it take no part in that view's average. The
  round trip resamples the maps twice; docs/correction.md measures that error.

Averaging is a plain mean (the background channel is averaged too, not recomputed), so a
flip-equivariant teacher's flip-TTA output equals its plain output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lcdata.labels.augment import View
from lcdata.labels.skeleton import Skeleton
from lcdata.labels.warp import jitter_affine, warp_crop, warp_maps

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(N, S, S, 3) uint8 crops -> (heatmaps (N, K+1, h, h), pafs (N, 2L, h, h)) float32."""


@dataclass(frozen=True)
class TTAConfig:
    """The views of test-time augmentation.

    Attributes:
        flip: add the mirror image of every view.
        scales: zoom factors besides 1 (> 1 zooms in); each also mirrored with `flip`.
    """

    flip: bool = False
    scales: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if any(not 0.25 <= s <= 4.0 for s in self.scales):
            raise ValueError(f"TTA scales must lie in [0.25, 4], got {self.scales}")
        if 1.0 in self.scales:
            raise ValueError("TTA scale 1 is always included; list only the others")

    @property
    def enabled(self) -> bool:
        return self.flip or bool(self.scales)

    @property
    def views(self) -> list[tuple[float, bool]]:
        """(scale, mirrored) of every view, the plain view first."""
        flips = (False, True) if self.flip else (False,)
        return [(s, f) for s in (1.0, *self.scales) for f in flips]

    def to_attrs(self) -> dict[str, Any]:
        return {"flip": self.flip, "scales": list(self.scales)}

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        parts = ["flip"] if self.flip else []
        if self.scales:
            parts.append("scales=" + ":".join(f"{s:g}" for s in self.scales))
        return ",".join(parts)


def parse_tta(spec: str) -> TTAConfig:
    """`--tta` spec -> config: "off", "flip", "scales=0.8:1.25", "flip,scales=0.8:1.25".

    Raises:
        ValueError: an unknown token or a bad number (the message names the token).
    """
    spec = spec.strip()
    if spec in ("off", ""):
        return TTAConfig()
    flip, scales = False, ()
    for token in (t.strip() for t in spec.split(",")):
        key, _, value = token.partition("=")
        try:
            if key == "flip" and not value:
                flip = True
            elif key == "scales" and value:
                scales = tuple(float(v) for v in value.split(":"))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"bad --tta token {token!r} (use off, flip, scales=S1:S2:..., e.g. "
                "flip,scales=0.8:1.25)"
            ) from None
    return TTAConfig(flip=flip, scales=scales)


def flip_outputs(
    heatmaps: np.ndarray, pafs: np.ndarray, skeleton: Skeleton
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs on a mirrored crop -> outputs on the crop (exact; an involution).

    Args:
        heatmaps: (N, K+1, h, w); pafs: (N, 2L, h, w).

    Returns:
        The same shapes, float32: x reversed, left/right channels swapped, PAF x negated.
    """
    perm, sign = skeleton.paf_flip()
    heat = np.asarray(heatmaps, np.float32)[:, skeleton.heatmap_flip_permutation(), :, ::-1]
    paf = np.asarray(pafs, np.float32)[:, perm, :, ::-1] * sign[None, :, None, None]
    return np.ascontiguousarray(heat), np.ascontiguousarray(paf)


def _zoom_affine(scale: float, flip: bool, input_size: int) -> np.ndarray:
    c = (input_size - 1) / 2
    return jitter_affine(View(flip=flip, angle_deg=0.0, scale=scale, center_xy=(c, c)), input_size)


def tta_predict(
    predict: Predict,
    images: np.ndarray,
    cfg: TTAConfig,
    *,
    skeleton: Skeleton,
    stride: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's outputs on `images`, averaged over the views of `cfg` (module doc).

    Args:
        predict: the plain teacher (`Predict`).
        images: (N, S, S, 3) uint8 crops.
        cfg: the views; a config that is not `enabled` returns `predict(images)`.
        skeleton, stride: the teacher's channel layout and crop pixels per cell.

    Returns:
        heatmaps (N, K+1, h, h) and pafs (N, 2L, h, h), float32.
    """
    heat, pafs = predict(images)
    if not cfg.enabled:
        return heat, pafs
    s = images.shape[1]
    sum_h = heat.astype(np.float64)
    sum_p = pafs.astype(np.float64)
    weight = np.ones((len(images), 1, *heat.shape[2:]), np.float64)
    for scale, mirrored in cfg.views[1:]:
        if scale == 1.0:  # the exact mirror
            vh, vp = flip_outputs(*predict(np.ascontiguousarray(images[:, :, ::-1])), skeleton)
            sum_h += vh
            sum_p += vp
            weight += 1
            continue
        affine = _zoom_affine(scale, mirrored, s)
        inverse = _zoom_affine(1 / scale, mirrored, s)  # view crop -> stored crop
        ones = np.ones(heat.shape[2:], np.uint8)
        crops = np.stack([warp_crop(im, ones, affine, stride=stride)[0] for im in images])
        vh, vp = predict(crops)
        # cells of the stored grid that this view saw (their source on the view's grid)
        _, seen = warp_crop(crops[0], ones, inverse, stride=stride)
        for i in range(len(images)):
            bh, bp = warp_maps(
                vh[i], vp[i], inverse, stride=stride, skeleton=skeleton, background="warp"
            )
            sum_h[i] += bh * seen
            sum_p[i] += bp * seen
        weight += seen
    return (sum_h / weight).astype(np.float32), (sum_p / weight).astype(np.float32)
