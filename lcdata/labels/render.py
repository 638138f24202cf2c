"""Encoders: keypoints -> part heatmaps and part affinity fields (PAFs); image masks -> grid masks.

The decoder that inverts these lives beside it, in `lcdata.labels.decode` (mmpose's codec
pairs, as neighbouring modules); a round-trip test ties them.

Letters used in shapes below:
    P     persons in one crop
    K     parts (18 for the CMU skeleton)
    L     limbs (19); PAFs carry 2L channels, channel 2l = x and 2l+1 = y of limb l
    h, w  output grid in cells = crop size // stride

Coordinates: points are (x, y) in crop pixels with pixel centres at integers (OpenCV's
convention, so `cv2.warpAffine` moves pixels and points alike); cells sit on the grid of
`lcdata.labels.grid` (cell (i, j) at pixel (j * stride + (stride - 1) / 2, ...)), so
rendering commutes with flips.
"""

from __future__ import annotations

import cv2
import numpy as np

from lcdata.config import RenderConfig
from lcdata.labels.grid import cell_centers, grid_hw_for, inside_image
from lcdata.labels.skeleton import Skeleton


def render_heatmaps(
    parts: np.ndarray,
    *,
    cfg: RenderConfig,
    skeleton: Skeleton,
    image_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """One unnormalised Gaussian per labelled keypoint inside the crop, evaluated at cell centres.

    Args:
        parts: (P, K, 3) float, (x, y) in crop pixels and COCO visibility v; every v > 0 is
            drawn (occluded-but-labelled keypoints are drawn like visible ones), sub-pixel
            positions are kept exactly. Keypoints outside the crop are not drawn.
        cfg: stride, sigma (crop pixels) and crop size.
        skeleton: gives K.
        image_hw: (H, W) pixels of a non-square image to render instead of the S x S crop
            (evaluation renders whole images); the grid is (H // stride, W // stride).

    Returns:
        (K + 1, h, w) float32 in [0, 1]. Overlapping persons merge by per-pixel max (the
        same rule label correction uses); channel K is background = 1 - max over parts.
    """
    h, w = grid_hw_for(cfg, image_hw)
    k = skeleton.num_parts
    maps = np.zeros((k + 1, h, w), np.float32)
    parts = np.asarray(parts, np.float32).reshape(-1, k, 3)
    if len(parts):
        xs, ys = cell_centers(w, cfg.stride), cell_centers(h, cfg.stride)
        size_xy = np.array([w, h], np.float32) * cfg.stride
        drawn = (parts[..., 2] > 0) & inside_image(parts[..., :2], size_xy)  # (P, K)
        two_var = 2.0 * cfg.sigma**2
        # separable Gaussian: outer product of a column profile and a row profile
        gx = np.exp(-((xs[None, None, :] - parts[..., 0:1]) ** 2) / two_var)  # (P, K, w)
        gy = np.exp(-((ys[None, None, :] - parts[..., 1:2]) ** 2) / two_var)  # (P, K, h)
        gx = np.where(drawn[..., None], gx, 0.0).astype(np.float32)
        peaks = gy[..., :, None] * gx[..., None, :]  # (P, K, h, w)
        maps[:k] = peaks.max(axis=0)
    maps[k] = 1.0 - maps[:k].max(axis=0)
    return maps


def render_pafs(
    parts: np.ndarray,
    *,
    cfg: RenderConfig,
    skeleton: Skeleton,
    image_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Part affinity fields: the limb's unit vector on cells within a band around the segment.

    A limb is drawn when both of its parts are labelled (v > 0), also when an end lies
    outside the crop: the part of the segment that crosses the crop is a real limb in the
    pixels. A cell is on the limb when its centre's projection falls on the segment and its
    distance from the segment is at most `cfg.paf_half_width * cfg.stride` crop pixels.

    Args:
        parts: (P, K, 3) float, (x, y) in crop pixels and COCO visibility v.
        image_hw: as in `render_heatmaps`.

    Returns:
        (2L, h, w) float32; channel 2l is x and 2l+1 is y of limb l. Where several persons'
        same limb covers a cell the vectors are averaged (CMU's rule), so the length there
        can be below 1.
    """
    h, w = grid_hw_for(cfg, image_hw)
    num_limbs = skeleton.num_limbs
    pafs = np.zeros((num_limbs, 2, h, w), np.float32)
    parts = np.asarray(parts, np.float32).reshape(-1, skeleton.num_parts, 3)
    if len(parts) == 0:
        return pafs.reshape(2 * num_limbs, h, w)
    limbs = np.asarray(skeleton.limbs)
    a = parts[:, limbs[:, 0]]  # (P, L, 3)
    b = parts[:, limbs[:, 1]]
    vec = b[..., :2] - a[..., :2]  # (P, L, 2)
    length = np.linalg.norm(vec, axis=-1)  # (P, L)
    # a limb shorter than a hundredth of a pixel has no direction
    drawn = (a[..., 2] > 0) & (b[..., 2] > 0) & (length > 1e-2)
    unit = vec / np.maximum(length, 1e-2)[..., None]

    xs, ys = cell_centers(w, cfg.stride), cell_centers(h, cfg.stride)
    dx = xs[None, None, None, :] - a[..., 0, None, None]  # (P, L, 1, w)
    dy = ys[None, None, :, None] - a[..., 1, None, None]  # (P, L, h, 1)
    along = dx * unit[..., 0, None, None] + dy * unit[..., 1, None, None]  # (P, L, h, w)
    across = np.abs(dx * unit[..., 1, None, None] - dy * unit[..., 0, None, None])
    band = cfg.paf_half_width * cfg.stride
    on = (along >= 0) & (along <= length[..., None, None]) & (across <= band)
    on &= drawn[..., None, None]

    count = on.sum(axis=0).astype(np.float32)  # (L, h, w)
    total = np.einsum("plhw,plc->lchw", on.astype(np.float32), unit)  # (L, 2, h, w)
    np.divide(total, count[:, None], out=pafs, where=count[:, None] > 0)
    return pafs.reshape(2 * num_limbs, h, w)


def render_mask(crop_mask: np.ndarray, *, cfg: RenderConfig) -> np.ndarray:
    """Pool a crop-resolution supervision mask to the output grid.

    Args:
        crop_mask: (S, S) float or uint8 in [0, 1], 1 = supervise, 0 = ignore, crop pixels.

    Returns:
        (h, h) uint8: 1 where at least half of the cell's pixels are supervised, else 0.
    """
    h = cfg.grid_size
    pooled = cv2.resize(crop_mask.astype(np.float32), (h, h), interpolation=cv2.INTER_AREA)
    return (pooled >= 0.5).astype(np.uint8)


def render_targets(
    parts: np.ndarray,
    *,
    cfg: RenderConfig,
    skeleton: Skeleton,
    image_hw: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(K + 1, h, w) heatmaps and (2L, h, w) PAFs of one crop or image, both float32."""
    return (
        render_heatmaps(parts, cfg=cfg, skeleton=skeleton, image_hw=image_hw),
        render_pafs(parts, cfg=cfg, skeleton=skeleton, image_hw=image_hw),
    )
