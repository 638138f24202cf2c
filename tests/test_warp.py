"""Fresh-view warps of stored samples: exact flips and quarter turns, PAF directions, borders."""

from __future__ import annotations

import numpy as np
import pytest

from lcdata.config import RenderConfig
from lcdata.labels.augment import View, flip_maps
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.labels.warp import JitterConfig, cell_affine, jitter_affine, sample_jitter, warp_sample
from tests.persons import make_person

CFG = RenderConfig(input_size=64, stride=4, sigma=3.0)
S, H = CFG.input_size, CFG.grid_size
C = (S - 1) / 2


def _parts(seed: int = 0) -> np.ndarray:
    """(2, K, 3) CMU parts of two persons in crop pixels, one partly outside the crop."""
    rng = np.random.default_rng(seed)
    coco = np.stack([make_person(rng, (14, 6), 44), make_person(rng, (40, 30), 50)])
    return np.stack([CMU_SKELETON.from_coco(p) for p in coco])


def _move(parts: np.ndarray, affine: np.ndarray, *, mirrored: bool) -> np.ndarray:
    out = parts.copy()
    out[..., :2] = parts[..., :2] @ affine[:, :2].T + affine[:, 2]
    return out[:, CMU_SKELETON.flip_permutation()] if mirrored else out


def _sample(parts: np.ndarray):
    heat, paf = render_targets(parts, cfg=CFG, skeleton=CMU_SKELETON)
    image = np.random.default_rng(1).integers(0, 255, (S, S, 3), dtype=np.uint8)
    return image, np.ones((H, H), np.uint8), heat, paf


@pytest.mark.parametrize(
    "view",
    [
        View(center_xy=(C, C), flip=True, angle_deg=0.0, scale=1.0),
        View(center_xy=(C, C), flip=False, angle_deg=90.0, scale=1.0),
        View(center_xy=(C, C), flip=False, angle_deg=-90.0, scale=1.0),
        View(center_xy=(C, C), flip=True, angle_deg=180.0, scale=1.0),
    ],
    ids=["flip", "rot90", "rot-90", "flip+rot180"],
)
def test_flips_and_quarter_turns_equal_rendering_the_moved_keypoints(view: View) -> None:
    parts = _parts()
    image, mask, heat, paf = _sample(parts)
    affine = jitter_affine(view, S)
    new_image, new_mask, new_heat, new_paf = warp_sample(
        image, mask, heat, paf, affine, stride=CFG.stride, skeleton=CMU_SKELETON
    )
    want_heat, want_paf = render_targets(
        _move(parts, affine, mirrored=view.flip), cfg=CFG, skeleton=CMU_SKELETON
    )
    np.testing.assert_allclose(new_heat, want_heat, atol=1e-5)
    np.testing.assert_allclose(new_paf, want_paf, atol=1e-5)
    assert new_mask.all()  # a quarter turn keeps every cell on the grid
    # the crop moves with the maps: pixel (x, y) goes to affine @ (x, y)
    x, y = 5, 17
    nx, ny = np.rint(affine @ [x, y, 1]).astype(int)
    np.testing.assert_array_equal(new_image[ny, nx], image[y, x])


def test_flip_matches_the_stored_flip() -> None:
    _, mask, heat, paf = _sample(_parts(3))
    image = np.zeros((S, S, 3), np.uint8)
    affine = jitter_affine(View(center_xy=(C, C), flip=True, angle_deg=0.0, scale=1.0), S)
    _, _, h2, p2 = warp_sample(image, mask, heat, paf, affine, stride=4, skeleton=CMU_SKELETON)
    h1, p1 = flip_maps(heat, paf, skeleton=CMU_SKELETON)
    np.testing.assert_array_equal(h2, h1)
    np.testing.assert_array_equal(p2, p1)


def test_paf_vectors_turn_with_the_crop() -> None:
    # one horizontal limb (neck -> right shoulder pointing +x); after a quarter turn its
    # field points along the turned limb
    parts = np.zeros((1, CMU_SKELETON.num_parts, 3), np.float32)
    a, b = CMU_SKELETON.limbs[0]
    parts[0, a] = (16, 32, 2)
    parts[0, b] = (48, 32, 2)
    _, mask, heat, paf = _sample(parts)
    view = View(center_xy=(C, C), flip=False, angle_deg=30.0, scale=1.0)
    affine = jitter_affine(view, S)
    _, _, _, new_paf = warp_sample(
        np.zeros((S, S, 3), np.uint8), mask, heat, paf, affine, stride=4, skeleton=CMU_SKELETON
    )
    moved = _move(parts, affine, mirrored=False)[0]
    d = moved[b, :2] - moved[a, :2]
    d /= np.linalg.norm(d)
    vx, vy = new_paf[0], new_paf[1]
    # bilinear resampling mixes the limb's vectors with zeros: lengths shrink at the band's
    # edges, directions do not
    on = np.hypot(vx, vy) > 0.3
    assert on.sum() > 15
    np.testing.assert_allclose(vx[on] / np.hypot(vx, vy)[on], d[0], atol=1e-3)
    np.testing.assert_allclose(vy[on] / np.hypot(vx, vy)[on], d[1], atol=1e-3)


def test_cells_from_outside_the_stored_grid_are_ignored() -> None:
    _, mask, heat, paf = _sample(_parts())
    mask[:, :3] = 0  # an ignore region of the store stays ignored where it lands
    view = View(center_xy=(C + 10, C), flip=False, angle_deg=0.0, scale=1.0)  # shift 10 px
    affine = jitter_affine(view, S)
    _, new_mask, new_heat, _ = warp_sample(
        np.zeros((S, S, 3), np.uint8), mask, heat, paf, affine, stride=4, skeleton=CMU_SKELETON
    )
    cells = cell_affine(affine, 4)
    # source x of new cell j is j + 2.5 cells: the last 3 columns come from outside
    np.testing.assert_allclose(cells[0, 2], -2.5)
    assert not new_mask[:, -3:].any() and new_mask[:, :-3].all()
    # background recomputed after the warp
    np.testing.assert_allclose(new_heat[-1], 1 - new_heat[:-1].max(axis=0), atol=1e-6)


def test_scale_zooms_about_the_centre_and_masks_the_border() -> None:
    _, mask, heat, paf = _sample(_parts())
    view = View(center_xy=(C, C), flip=False, angle_deg=0.0, scale=0.5)  # zoom out
    _, new_mask, _, _ = warp_sample(
        np.zeros((S, S, 3), np.uint8), mask, heat, paf, jitter_affine(view, S), stride=4,
        skeleton=CMU_SKELETON,
    )  # fmt: skip
    assert new_mask[H // 2, H // 2] == 1 and new_mask[0, 0] == 0
    assert 0.2 < new_mask.mean() < 0.35  # about a quarter of the crop has a source


def test_jitter_draws_are_in_range_and_reproducible() -> None:
    cfg = JitterConfig(flip=True, max_rotate_deg=30, min_scale=0.8, max_scale=1.25, max_shift=0.1)
    views = [sample_jitter(np.random.default_rng([7, i]), cfg, S) for i in range(200)]
    again = [sample_jitter(np.random.default_rng([7, i]), cfg, S) for i in range(200)]
    assert views == again
    assert all(abs(v.angle_deg) <= 30 and 0.8 <= v.scale <= 1.25 for v in views)
    assert all(abs(v.center_xy[0] - C) <= 0.1 * S for v in views)
    assert 70 < sum(v.flip for v in views) < 130
    ident = sample_jitter(np.random.default_rng(0), JitterConfig(flip=False), S)
    assert ident == View(center_xy=(C, C), flip=False, angle_deg=0.0, scale=1.0)
    np.testing.assert_allclose(jitter_affine(ident, S), [[1, 0, 0], [0, 1, 0]], atol=1e-12)
