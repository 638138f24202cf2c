"""Augmentation as data: a seeded sampler of views, each one 2x3 affine, and the warps it drives.

A view is (flip, rotation, scale, centre). It becomes one affine matrix A (2, 3) that maps
original-image pixels to crop pixels: crop_xy = A @ (x, y, 1). The image, the ignore mask and
the keypoints all go through the same A, and the parameters are stored per sample, so any
crop can be replayed from the original image.

Pixel convention: pixel centres at integers in both spaces (OpenCV's), so a point at the
centre of image pixel (x, y) lands at the centre of the crop pixel `cv2.warpAffine` fills
from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lcdata.config import AugmentConfig
from lcdata.labels.skeleton import Skeleton

PAD_VALUE = (128, 128, 128)
"""Grey fill outside the image, as CMU's trainer (the network sees it as 'no image')."""


@dataclass(frozen=True)
class View:
    """Everything needed to replay one augmentation.

    Attributes:
        flip: mirror horizontally (after which left and right parts swap names).
        angle_deg: rotation, counter-clockwise in the displayed image, degrees.
        scale: crop pixels per image pixel.
        center_xy: image-pixel point that lands on the crop centre.
    """

    flip: bool
    angle_deg: float
    scale: float
    center_xy: tuple[float, float]


def sample_view(
    rng: np.random.Generator,
    cfg: AugmentConfig,
    *,
    person_center_xy: np.ndarray,
    person_height: float,
    input_size: int,
) -> View:
    """Draw one random view centred (with jitter) on a person.

    Args:
        rng: the sample's own generator, e.g. `np.random.default_rng([seed, image_id, view])`.
        person_center_xy: (2,) image pixels, centre of the chosen person.
        person_height: the person's height in image pixels (bbox height); sets the base scale
            so that the person fills `cfg.target_fraction` of the crop.
        input_size: S, crop side in pixels.
    """
    # Draw every variable every time, so that the stream of random numbers does not depend
    # on which branch was taken (replays stay aligned when a config changes one range).
    u_flip, u_angle, u_scale, u_dx, u_dy = rng.random(5)
    base = cfg.target_fraction * input_size / max(float(person_height), 1.0)
    base = min(base, cfg.max_base_scale)
    scale = base * (cfg.scale_min + (cfg.scale_max - cfg.scale_min) * u_scale)
    jitter_img = cfg.center_jitter * input_size / scale  # jitter is given in crop sizes
    center = np.asarray(person_center_xy, np.float64) + jitter_img * (
        2 * np.array([u_dx, u_dy]) - 1
    )
    return View(
        flip=bool(u_flip < cfg.flip_prob),
        angle_deg=float(cfg.max_rotate_deg * (2 * u_angle - 1)),
        scale=float(scale),
        center_xy=(float(center[0]), float(center[1])),
    )


def view_affine(view: View, input_size: int) -> np.ndarray:
    """(2, 3) float64 affine: original-image pixels -> crop pixels for this view.

    Order: move `center_xy` to the origin, mirror x if flipped, rotate, scale, move the
    origin to the crop centre ((S - 1) / 2, (S - 1) / 2).
    """
    cx, cy = view.center_xy
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], np.float64)
    mirror = np.diag([-1.0 if view.flip else 1.0, 1.0, 1.0])
    t = np.deg2rad(view.angle_deg)
    # image y points down, so this matrix turns the picture counter-clockwise on screen
    rotate = np.array([[np.cos(t), np.sin(t), 0], [-np.sin(t), np.cos(t), 0], [0, 0, 1]])
    scale = np.diag([view.scale, view.scale, 1.0])
    c = (input_size - 1) / 2
    to_crop = np.array([[1, 0, c], [0, 1, c], [0, 0, 1]], np.float64)
    return (to_crop @ scale @ rotate @ mirror @ to_origin)[:2]


def warp_image(image: np.ndarray, affine: np.ndarray, input_size: int) -> np.ndarray:
    """(H, W, 3) uint8 image -> (S, S, 3) uint8 crop, bilinear, grey outside the image."""
    return cv2.warpAffine(
        image,
        affine,
        (input_size, input_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=PAD_VALUE,
    )


def warp_mask(mask: np.ndarray, affine: np.ndarray, input_size: int) -> np.ndarray:
    """(H, W) uint8 mask (1 supervise, 0 ignore) -> (S, S) float32 crop mask in [0, 1].

    Outside the image counts as supervised: nobody is there, and the padding is what the
    network must learn to call background.
    """
    return cv2.warpAffine(
        mask.astype(np.float32),
        affine,
        (input_size, input_size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=1.0,
    )


def warp_parts(
    parts: np.ndarray, affine: np.ndarray, *, flipped: bool, skeleton: Skeleton
) -> np.ndarray:
    """Move keypoints into the crop and, after a mirror, swap left and right part names.

    Args:
        parts: (P, K, 3) float, (x, y) image pixels and COCO visibility.
        affine: (2, 3) image -> crop pixels.
        flipped: whether the affine mirrors.

    Returns:
        (P, K, 3) float32, (x, y) crop pixels, visibility unchanged (points that left the crop
        keep their flag: the renderer decides what to draw).
    """
    parts = np.asarray(parts, np.float32)
    out = parts.copy()
    out[..., :2] = parts[..., :2] @ affine[:, :2].T.astype(np.float32) + affine[:, 2].astype(
        np.float32
    )
    if flipped:
        # the mirrored image's left arm is the original's right arm
        out = out[:, skeleton.flip_permutation()]
    return out


def flip_maps(
    heatmaps: np.ndarray, pafs: np.ndarray, *, skeleton: Skeleton
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror maps about the vertical axis of their grid, swapping left/right channels.

    Cell j of a grid of w cells becomes cell w - 1 - j, which is pixel x -> W - 1 - x of an
    image of W = w * stride pixels (cell centres land on cell centres). The mirror is an
    involution, so the same call also undoes it.

    Args:
        heatmaps: (..., K+1, h, w); channel k of the result is channel perm[k] mirrored
            (`skeleton.heatmap_flip_permutation`), background stays last.
        pafs: (..., 2L, h, w); channel c of the result is sign[c] * channel perm[c] mirrored
            (`skeleton.paf_flip`): limbs swap sides and x components change sign.

    Returns:
        New contiguous arrays of the input shapes and dtypes.
    """
    perm, sign = skeleton.paf_flip()
    heat = heatmaps[..., skeleton.heatmap_flip_permutation(), :, ::-1]
    paf = pafs[..., perm, :, ::-1] * sign[:, None, None].astype(pafs.dtype)
    return np.ascontiguousarray(heat), np.ascontiguousarray(paf)
