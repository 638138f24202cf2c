"""Fresh per-step views of a stored sample: one affine applied to crop, mask and every map.

A stored sample is a crop of S x S pixels with maps on an h x h grid (cell j at pixel
j * stride + (stride - 1) / 2, `lcdata.labels.grid`). A *jitter* is a small affine of the
crop about its centre (mirror, rotation, scale, shift) drawn afresh at every step; this
module applies it consistently:

* the crop: `cv2.warpAffine`, bilinear, grey (`PAD_VALUE`) where the source is outside;
* the maps: the same affine on the grid (`cell_affine`), bilinear; part heatmaps warped as
  scalars and the background recomputed as 1 - max over parts (as the renderer defines it);
  PAFs warped as vector fields: resampled, then each vector turned by the affine's rotation
  (and mirror), so a limb's field still points along the limb;
* after a mirror, left and right channels swap (`Skeleton.flip_permutation`, limbs too);
* the mask: cells whose source lies outside the stored grid get mask 0. The stored crop
  does not know what was there, so a zero target would supervise "nothing here" where the
  truth is unknown, the missing-label defect that label correction exists to remove.

Flips and quarter turns map cell centres onto cell centres, so they are exact
permutations of the stored values (tested against re-rendering the moved keypoints).
Arbitrary angles and scales resample: a Gaussian peak keeps its shape under rotation, and
is widened or narrowed by the scale, while the renderer's sigma is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lcdata.labels.augment import PAD_VALUE, View, view_affine
from lcdata.labels.grid import cell_offset
from lcdata.labels.skeleton import Skeleton

VALID_CELL = 0.999
"""A warped cell is supervised only if at least this share of its bilinear source lies on
the stored grid (1 up to float rounding)."""


@dataclass(frozen=True)
class JitterConfig:
    """Ranges of the per-step jitter (uniform draws).

    Attributes:
        flip: mirror with probability 1/2.
        max_rotate_deg: angle in [-max, max] degrees.
        min_scale, max_scale: zoom factor (log-uniform between them); > 1 enlarges.
        max_shift: shift of the centre in [-max, max] x S pixels, per axis.
    """

    flip: bool = True
    max_rotate_deg: float = 0.0
    min_scale: float = 1.0
    max_scale: float = 1.0
    max_shift: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.min_scale <= self.max_scale:
            raise ValueError(
                f"need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}"
            )
        if self.max_rotate_deg < 0 or self.max_shift < 0:
            raise ValueError("max_rotate_deg and max_shift must be >= 0")


JITTER_PRESETS: dict[str, str] = {
    "fresh": "flip,rotate=30,scale=0.75:1.25,shift=0.05",
}
"""Named jitter specs (`parse_jitter`). "fresh" is provisional: a mirror, +-30 degrees,
x0.75-1.25 and +-5% shift, the ranges of common bottom-up pose pipelines, until the
consistency-error measurements of docs/augmentation.md choose them."""


def parse_jitter(spec: str) -> JitterConfig | None:
    """A jitter spec -> its config; "off" -> None.

    Grammar: comma-separated `flip`, `rotate=DEG`, `scale=MIN:MAX`, `shift=FRACTION`, or a
    name of `JITTER_PRESETS`; e.g. "flip,rotate=30,scale=0.75:1.25,shift=0.05".

    Raises:
        ValueError: an unknown token or a bad number (the message names the token).
    """
    spec = JITTER_PRESETS.get(spec.strip(), spec.strip())
    if spec in ("off", ""):
        return None
    fields: dict[str, object] = {"flip": False}
    for token in (t.strip() for t in spec.split(",")):
        key, _, value = token.partition("=")
        try:
            if key == "flip" and not value:
                fields["flip"] = True
            elif key == "rotate":
                fields["max_rotate_deg"] = float(value)
            elif key == "scale":
                lo, _, hi = value.partition(":")
                fields["min_scale"], fields["max_scale"] = float(lo), float(hi or lo)
            elif key == "shift":
                fields["max_shift"] = float(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"bad augment token {token!r} (use flip, rotate=DEG, scale=MIN:MAX, "
                f"shift=FRACTION, or one of: off, {', '.join(JITTER_PRESETS)})"
            ) from None
    return JitterConfig(**fields)  # type: ignore[arg-type]


def sample_jitter(rng: np.random.Generator, cfg: JitterConfig, input_size: int) -> View:
    """One jitter as a `View` of the crop: `center_xy` is the crop point that lands on the
    new crop's centre. Always draws the same four numbers, so a stream of draws does not
    depend on the ranges' being zero."""
    flip, angle, log_scale, shift = (
        rng.random(),
        rng.uniform(-1, 1),
        rng.random(),
        rng.uniform(-1, 1, 2),
    )
    c = (input_size - 1) / 2
    lo, hi = np.log(cfg.min_scale), np.log(cfg.max_scale)
    return View(
        center_xy=(
            c + shift[0] * cfg.max_shift * input_size,
            c + shift[1] * cfg.max_shift * input_size,
        ),
        flip=bool(cfg.flip and flip < 0.5),
        angle_deg=float(angle * cfg.max_rotate_deg),
        scale=float(np.exp(lo + log_scale * (hi - lo))),
    )


def jitter_affine(view: View, input_size: int) -> np.ndarray:
    """(2, 3) float64 affine: stored crop pixels -> jittered crop pixels (the same formula
    as the build's image -> crop affine, `view_affine`, applied to the crop)."""
    return view_affine(view, input_size)


def cell_affine(affine: np.ndarray, stride: int) -> np.ndarray:
    """The pixel affine `affine` expressed on the map grid (cell centres at integers).

    Pixel p = stride * c + o (o = `cell_offset`), so the cell affine is T^-1 A T with
    T: c -> stride * c + o.
    """
    o = cell_offset(stride)
    t = np.array([[stride, 0, o], [0, stride, o], [0, 0, 1]], np.float64)
    a = np.vstack([np.asarray(affine, np.float64), [0, 0, 1]])
    return (np.linalg.inv(t) @ a @ t)[:2]


def _warp_channels(maps: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """(C, h, w) float32 -> (C, size, size), bilinear, 0 outside (cv2 takes <= 4 channels
    per call reliably; planes are warped in groups of 4)."""
    out = np.empty((maps.shape[0], size, size), np.float32)
    for c in range(0, maps.shape[0], 4):
        group = np.ascontiguousarray(maps[c : c + 4].transpose(1, 2, 0))
        warped = cv2.warpAffine(
            group, affine, (size, size), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        )  # fmt: skip
        out[c : c + 4] = warped.reshape(size, size, -1).transpose(2, 0, 1)
    return out


def warp_crop(
    image: np.ndarray, mask: np.ndarray, affine: np.ndarray, *, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """The crop and its mask under one affine (`warp_sample` without the maps).

    Returns:
        image (S, S, 3) uint8, grey where the source is outside; mask (h, h) uint8, 0 where
        the source cell was ignored or lies outside the stored grid.
    """
    s, h = image.shape[0], mask.shape[0]
    affine = np.asarray(affine, np.float64)
    new_image = cv2.warpAffine(
        image, affine, (s, s), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=PAD_VALUE,
    )  # fmt: skip
    planes = np.stack([np.asarray(mask, np.float32), np.ones((h, h), np.float32)])
    warped = _warp_channels(planes, cell_affine(affine, stride), h)
    return new_image, ((warped[0] >= 0.5) & (warped[1] >= VALID_CELL)).astype(np.uint8)


def warp_maps(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    affine: np.ndarray,
    *,
    stride: int,
    skeleton: Skeleton,
    background: str = "recompute",
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps and PAFs under one crop affine (module doc).

    Args:
        heatmaps: (K+1, h, h), last channel background. pafs: (2L, h, h), (x, y) per limb.
        affine: (2, 3) stored crop pixels -> new crop pixels.
        background: "recompute" (1 - max of the warped parts, as the renderer defines it)
            or "warp" (resampled like a part: a model's own background output, for TTA).

    Returns:
        heatmaps (K+1, h, h) and pafs (2L, h, h), float32.
    """
    h = heatmaps.shape[-1]
    affine = np.asarray(affine, np.float64)
    k = skeleton.num_parts
    n_heat = k + 1 if background == "warp" else k
    planes = np.concatenate(
        [np.asarray(heatmaps[:n_heat], np.float32), np.asarray(pafs, np.float32)]
    )
    warped = _warp_channels(planes, cell_affine(affine, stride), h)
    parts, vec = warped[:k], warped[n_heat:]
    # PAF vectors turn with the crop: the affine's linear part without its scale
    lin = affine[:, :2]
    rot = lin / np.sqrt(abs(np.linalg.det(lin)))
    x, y = vec[0::2], vec[1::2]
    vec = np.stack([rot[0, 0] * x + rot[0, 1] * y, rot[1, 0] * x + rot[1, 1] * y], axis=1)
    if np.linalg.det(lin) < 0:  # mirrored: the new left arm is the old right arm
        parts = parts[skeleton.flip_permutation()]
        vec = vec[skeleton.limb_flip_permutation()]
    bg = warped[k : k + 1] if background == "warp" else 1.0 - parts.max(axis=0, keepdims=True)
    new_heat = np.concatenate([parts, bg])
    return new_heat, np.ascontiguousarray(vec.reshape(pafs.shape[0], h, h))


def warp_sample(
    image: np.ndarray,
    mask: np.ndarray,
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    affine: np.ndarray,
    *,
    stride: int,
    skeleton: Skeleton,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Apply one crop affine to a stored sample (`warp_crop` and `warp_maps`).

    Args:
        image: (S, S, 3) uint8 crop. mask: (h, h) {0, 1} (1 = supervised).
        heatmaps: (K+1, h, h), last channel background. pafs: (2L, h, h), (x, y) per limb.
        affine: (2, 3) stored crop pixels -> new crop pixels (`jitter_affine`).
        stride: crop pixels per cell.

    Returns:
        image (S, S, 3) uint8, mask (h, h) uint8 (0 where the source left the stored grid
        or was ignored), heatmaps (K+1, h, h) and pafs (2L, h, h) float32.
    """
    new_image, new_mask = warp_crop(image, mask, affine, stride=stride)
    new_heat, new_paf = warp_maps(heatmaps, pafs, affine, stride=stride, skeleton=skeleton)
    return new_image, new_mask, new_heat, new_paf
