from __future__ import annotations

import numpy as np
import pytest

from lcdata.config import AugmentConfig, RenderConfig
from lcdata.labels.augment import View, sample_view, view_affine, warp_image, warp_parts
from lcdata.labels.render import render_heatmaps, render_pafs
from lcdata.labels.skeleton import Skeleton


def _parts(rng: np.random.Generator, num: int = 3) -> np.ndarray:
    xy = rng.uniform(40, 260, size=(num, 18, 2))
    v = rng.integers(0, 3, size=(num, 18, 1))
    return np.concatenate([xy, v], -1).astype(np.float32)


def test_identity_view_maps_center_to_crop_center() -> None:
    view = View(flip=False, angle_deg=0.0, scale=1.0, center_xy=(100.0, 50.0))
    affine = view_affine(view, 64)
    np.testing.assert_allclose(affine @ [100.0, 50.0, 1.0], (31.5, 31.5))
    np.testing.assert_allclose(affine[:, :2], np.eye(2))


def test_sample_view_is_seeded_and_in_range() -> None:
    cfg = AugmentConfig()
    views = [
        sample_view(
            np.random.default_rng([3, i]),
            cfg,
            person_center_xy=np.array([100.0, 100.0]),
            person_height=200.0,
            input_size=368,
        )
        for i in range(200)
    ]
    again = sample_view(
        np.random.default_rng([3, 0]),
        cfg,
        person_center_xy=np.array([100.0, 100.0]),
        person_height=200.0,
        input_size=368,
    )
    assert again == views[0]
    base = 0.6 * 368 / 200
    assert all(-40 <= v.angle_deg <= 40 for v in views)
    assert all(0.5 * base - 1e-9 <= v.scale <= 1.1 * base + 1e-9 for v in views)
    assert 0.3 < np.mean([v.flip for v in views]) < 0.7


@pytest.mark.parametrize("stride", [4, 8])
def test_flipped_view_renders_the_mirrored_maps(stride: int, skeleton: Skeleton) -> None:
    """Rendering a flipped view equals flipping the rendered maps with the channel
    permutation and the x-sign of the PAFs."""
    cfg = RenderConfig(input_size=96, stride=stride, sigma=5.0)
    parts = _parts(np.random.default_rng(stride))
    angle = 17.0
    plain = View(False, -angle, 0.35, (150.0, 140.0))
    mirrored = View(True, angle, 0.35, (150.0, 140.0))  # mirror o R(a) = R(-a) o mirror
    pa = warp_parts(parts, view_affine(plain, 96), flipped=False, skeleton=skeleton)
    pb = warp_parts(parts, view_affine(mirrored, 96), flipped=True, skeleton=skeleton)

    ha = render_heatmaps(pa, cfg=cfg, skeleton=skeleton)
    hb = render_heatmaps(pb, cfg=cfg, skeleton=skeleton)
    np.testing.assert_allclose(hb, ha[skeleton.heatmap_flip_permutation()][..., ::-1], atol=1e-5)

    fa = render_pafs(pa, cfg=cfg, skeleton=skeleton)
    fb = render_pafs(pb, cfg=cfg, skeleton=skeleton)
    perm, sign = skeleton.paf_flip()
    np.testing.assert_allclose(fb, sign[:, None, None] * fa[perm][..., ::-1], atol=1e-5)
    assert np.abs(fa).max() > 0.5  # the comparison is not between empty maps


def test_flipped_image_is_the_mirrored_crop() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    plain = View(False, -10.0, 0.8, (80.0, 60.0))
    mirrored = View(True, 10.0, 0.8, (80.0, 60.0))
    a = warp_image(image, view_affine(plain, 64), 64).astype(int)
    b = warp_image(image, view_affine(mirrored, 64), 64).astype(int)
    assert np.abs(b - a[:, ::-1]).max() <= 1  # bilinear rounding only


def test_points_follow_the_pixels() -> None:
    """A bright dot in the image lands where warp_parts puts its keypoint."""
    image = np.zeros((200, 300, 3), np.uint8)
    image[120, 210] = (255, 0, 0)
    view = View(True, 25.0, 0.7, (150.0, 100.0))
    affine = view_affine(view, 128)
    warped = warp_image(image, affine, 128).astype(float)
    crop = warped[..., 0] - warped[..., 1]  # the grey padding cancels out
    ys, xs = np.nonzero(crop)
    centroid = np.array(
        [np.average(xs, weights=crop[ys, xs]), np.average(ys, weights=crop[ys, xs])]
    )
    np.testing.assert_allclose(affine @ [210.0, 120.0, 1.0], centroid, atol=0.35)
