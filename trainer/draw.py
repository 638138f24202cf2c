"""Pictures of decoded persons and of predicted maps on the original image."""

from __future__ import annotations

import cv2
import numpy as np

from lcdata.labels.decode import Person
from lcdata.labels.grid import cell_offset
from lcdata.labels.skeleton import Skeleton
from lcdata.show import paf_colours
from trainer.infer import Geometry


def maps_to_image(
    maps: np.ndarray, geometry: Geometry, *, stride: int, image_hw: tuple[int, int]
) -> np.ndarray:
    """(C, h, w) maps of `geometry`'s grid -> (C, H, W) on the original image (bilinear).

    Original pixel x reads cell ((x + 0.5) * sx - 0.5 - cell_offset) / stride, the
    input-pixel position of x (`Geometry.to_input`) on the cell grid (`lcdata.labels.grid`).
    """
    sx, sy = geometry.scale_xy
    off = -0.5 - cell_offset(stride)
    m = np.array(
        [[sx / stride, 0, (0.5 * sx + off) / stride], [0, sy / stride, (0.5 * sy + off) / stride]],
        np.float64,
    )
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0), dtype=np.float32)
    out = cv2.warpAffine(
        hwc,
        m,
        (image_hw[1], image_hw[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(image_hw[0], image_hw[1], -1).transpose(2, 0, 1)


def _limb_colours(num_limbs: int) -> np.ndarray:
    """(L, 3) uint8 RGB, hues spread around the circle."""
    hsv = np.stack(
        [
            np.arange(num_limbs) * 180 // max(num_limbs, 1),
            np.full(num_limbs, 255),
            np.full(num_limbs, 255),
        ],
        axis=1,
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_persons(image: np.ndarray, persons: list[Person], *, skeleton: Skeleton) -> np.ndarray:
    """The image with every person's limbs (one colour per limb) and parts drawn on it.

    Args:
        image: (H, W, 3) uint8 RGB.
        persons: keypoints in the image's pixels.

    Returns:
        A new (H, W, 3) uint8 RGB image.
    """
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 300))
    colours = _limb_colours(skeleton.num_limbs)
    for person in persons:
        kps = person.keypoints
        for limb, (a, b) in enumerate(skeleton.limbs):
            if kps[a, 2] > 0 and kps[b, 2] > 0:
                pa = tuple(int(round(v)) for v in kps[a, :2])
                pb = tuple(int(round(v)) for v in kps[b, :2])
                colour = tuple(int(c) for c in colours[limb])
                cv2.line(out, pa, pb, colour, thick, cv2.LINE_AA)
        for x, y, v in kps:
            if v > 0:
                centre = (int(round(x)), int(round(y)))
                cv2.circle(out, centre, thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def heatmap_overlay(
    image: np.ndarray, heatmaps: np.ndarray, geometry: Geometry, *, stride: int, num_parts: int
) -> np.ndarray:
    """The image blended with the max over part heatmaps (JET colours), (H, W, 3) uint8 RGB."""
    peak = heatmaps[:num_parts].max(axis=0, keepdims=True)
    peak = maps_to_image(peak, geometry, stride=stride, image_hw=image.shape[:2])[0]
    colour = cv2.applyColorMap(np.uint8(np.clip(peak, 0, 1) * 255), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    alpha = np.clip(peak, 0, 1)[..., None] * 0.7
    return np.uint8(image * (1 - alpha) + colour * alpha)


def paf_overlay(
    image: np.ndarray, pafs: np.ndarray, geometry: Geometry, *, stride: int
) -> np.ndarray:
    """The image blended with the strongest PAF vector per pixel as colour: hue = direction,
    brightness = length (capped at 1). (H, W, 3) uint8 RGB."""
    vec = maps_to_image(pafs, geometry, stride=stride, image_hw=image.shape[:2])  # (2L, H, W)
    colour = paf_colours(vec) * 255  # the colour wheel of `lcdata show`
    mag = np.clip(np.linalg.norm(vec.reshape(-1, 2, *vec.shape[1:]), axis=1).max(axis=0), 0, 1)
    alpha = mag[..., None] * 0.8
    return np.uint8(image * (1 - alpha) + colour * alpha)
