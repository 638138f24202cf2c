from __future__ import annotations

import numpy as np
import pytest

from lcdata.config import RenderConfig
from lcdata.labels.grid import cell_centers
from lcdata.labels.render import render_heatmaps, render_mask, render_pafs
from lcdata.labels.skeleton import Skeleton


def _person(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    xy = rng.uniform(lo, hi, size=(1, 18, 2))
    return np.concatenate([xy, np.full((1, 18, 1), 2.0)], -1).astype(np.float32)


@pytest.mark.parametrize("stride", [4, 8])
def test_heatmap_peak_lands_within_one_cell(stride: int, skeleton: Skeleton) -> None:
    cfg = RenderConfig(input_size=96, stride=stride, sigma=4.0)
    parts = _person(np.random.default_rng(stride), 10, 86)
    maps = render_heatmaps(parts, cfg=cfg, skeleton=skeleton)
    assert maps.shape == (19, 96 // stride, 96 // stride)
    iy, ix = np.unravel_index(maps[:-1].reshape(18, -1).argmax(1), maps.shape[1:])
    centers = cell_centers(96 // stride, stride)
    peak_xy = np.stack([centers[ix], centers[iy]], axis=1)
    assert np.abs(peak_xy - parts[0, :, :2]).max() <= stride / 2 + 1e-4


def test_heatmap_value_is_gaussian_of_distance(skeleton: Skeleton) -> None:
    cfg = RenderConfig(input_size=64, stride=8, sigma=5.0)
    parts = np.zeros((1, 18, 3), np.float32)
    parts[0, 0] = (20.0, 33.0, 1)  # occluded but labelled: drawn
    maps = render_heatmaps(parts, cfg=cfg, skeleton=skeleton)
    c = cell_centers(8, 8)
    want = np.exp(-((c[:, None] - 33.0) ** 2 + (c[None, :] - 20.0) ** 2) / (2 * 25.0))
    np.testing.assert_allclose(maps[0], want, atol=1e-6)
    np.testing.assert_allclose(maps[-1], 1 - want, atol=1e-6)
    assert maps[1:-1].max() == 0


def test_heatmaps_merge_by_max_and_skip_unlabelled_and_outside(skeleton: Skeleton) -> None:
    cfg = RenderConfig(input_size=64, stride=4, sigma=4.0)
    parts = np.zeros((3, 18, 3), np.float32)
    parts[0, 3] = (20, 20, 2)
    parts[1, 3] = (22, 20, 2)
    parts[2, 3] = (30, 30, 0)  # unlabelled
    parts[2, 4] = (70, 30, 2)  # outside the 64 px crop
    both = render_heatmaps(parts, cfg=cfg, skeleton=skeleton)
    one = render_heatmaps(parts[:1], cfg=cfg, skeleton=skeleton)
    two = render_heatmaps(parts[1:2], cfg=cfg, skeleton=skeleton)
    np.testing.assert_allclose(both[3], np.maximum(one[3], two[3]))
    assert both[4].max() == 0


def test_paf_is_unit_along_limb_and_zero_across(skeleton: Skeleton) -> None:
    cfg = RenderConfig(input_size=128, stride=4, sigma=4.0, paf_half_width=1.0)
    parts = np.zeros((1, 18, 3), np.float32)
    a, b = skeleton.limbs[2]  # right shoulder -> right elbow
    parts[0, a] = (20.0, 30.0, 2)
    parts[0, b] = (100.0, 90.0, 2)
    pafs = render_pafs(parts, cfg=cfg, skeleton=skeleton)
    assert pafs.shape == (38, 32, 32)
    field = np.stack([pafs[4], pafs[5]], -1)  # limb 2 -> channels 4, 5
    unit = np.array([80.0, 60.0]) / 100.0
    # sample the field at cell resolution along the segment: the line integral is ~1
    t = np.linspace(0.05, 0.95, 25)
    pts = np.array([20.0, 30.0]) + t[:, None] * np.array([80.0, 60.0])
    cells = np.clip(np.round((pts - 1.5) / 4).astype(int), 0, 31)
    along = field[cells[:, 1], cells[:, 0]] @ unit
    assert along.mean() > 0.95
    # perpendicular offset of 3 cells is outside the band
    normal = np.array([-0.6, 0.8])
    off = pts + 12.0 * normal
    cells = np.clip(np.round((off - 1.5) / 4).astype(int), 0, 31)
    assert np.abs(field[cells[:, 1], cells[:, 0]]).max() == 0
    others = np.delete(pafs, [4, 5], axis=0)
    assert others.max() == 0 and others.min() == 0


def test_overlapping_limbs_average(skeleton: Skeleton) -> None:
    cfg = RenderConfig(input_size=64, stride=4, sigma=4.0)
    parts = np.zeros((2, 18, 3), np.float32)
    a, b = skeleton.limbs[0]
    parts[0, a], parts[0, b] = (10, 30, 2), (50, 30, 2)  # pointing +x
    parts[1, a], parts[1, b] = (30, 10, 2), (30, 50, 2)  # pointing +y, crossing
    pafs = render_pafs(parts, cfg=cfg, skeleton=skeleton)
    i = j = 7  # cell centre (29.5, 29.5), on both limbs
    np.testing.assert_allclose(pafs[0:2, i, j], (0.5, 0.5), atol=1e-6)


def test_limb_with_end_outside_crop_is_drawn_inside(skeleton: Skeleton) -> None:
    cfg = RenderConfig(input_size=64, stride=4, sigma=4.0)
    parts = np.zeros((1, 18, 3), np.float32)
    a, b = skeleton.limbs[6]
    parts[0, a], parts[0, b] = (30, 30, 2), (30, 200, 2)
    pafs = render_pafs(parts, cfg=cfg, skeleton=skeleton)
    assert pafs[13, 15:, 7].min() > 0.99  # y component all the way to the border


def test_non_square_image_grid(skeleton: Skeleton) -> None:
    cfg = RenderConfig(input_size=64, stride=8)
    parts = _person(np.random.default_rng(1), 5, 60)
    h = render_heatmaps(parts, cfg=cfg, skeleton=skeleton, image_hw=(48, 80))
    p = render_pafs(parts, cfg=cfg, skeleton=skeleton, image_hw=(48, 80))
    assert h.shape == (19, 6, 10) and p.shape == (38, 6, 10)


def test_mask_pools_by_majority() -> None:
    cfg = RenderConfig(input_size=16, stride=4)
    crop = np.ones((16, 16), np.float32)
    crop[:, :6] = 0  # columns 0-5: cell 0 fully ignored, cell 1 half ignored
    mask = render_mask(crop, cfg=cfg)
    assert mask.dtype == np.uint8 and mask.shape == (4, 4)
    assert (mask[:, 0] == 0).all() and (mask[:, 1] == 1).all() and (mask[:, 2:] == 1).all()
