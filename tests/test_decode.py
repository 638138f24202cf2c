"""Decoder: sub-cell peaks, PAF line integrals, grouping of rendered ground truth into persons."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from persons import make_person  # shared with test_evaluate

from lcdata.config import SYNTH_RENDER, RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.decode import DecodeConfig, decode, find_peaks, score_limb
from lcdata.labels.render import render_heatmaps, render_pafs
from lcdata.labels.skeleton import Skeleton


def render(coco: np.ndarray, cfg: RenderConfig, image_hw: tuple[int, int], sk: Skeleton):
    parts = sk.from_coco(coco)
    heat = render_heatmaps(parts, cfg=cfg, skeleton=sk, image_hw=image_hw)
    paf = render_pafs(parts, cfg=cfg, skeleton=sk, image_hw=image_hw)
    return parts, heat, paf


def match_persons(parts: np.ndarray, persons) -> list[int]:
    """For every true person (P, K, 3) the decoded person nearest on its labelled parts."""
    out = []
    for p in parts:
        on = p[:, 2] > 0
        dist = [np.abs(d.keypoints[on, :2] - p[on, :2]).max() for d in persons]
        out.append(int(np.argmin(dist)))
    return out


@pytest.mark.parametrize("refine, tol", [("log", 1e-3), ("quadratic", 0.15), ("none", 0.5)])
@pytest.mark.parametrize("cfg", [SYNTH_RENDER, RenderConfig()], ids=["128-4", "368-8"])
def test_peaks_sub_cell(cfg: RenderConfig, refine: str, tol: float, skeleton: Skeleton) -> None:
    """A rendered Gaussian comes back at its sub-pixel position; log refinement is exact."""
    rng = np.random.default_rng(0)
    s = cfg.stride
    xy = rng.uniform(3 * s, cfg.input_size - 3 * s, size=(skeleton.num_parts, 2))
    parts = np.concatenate([xy, np.full((skeleton.num_parts, 1), 2)], axis=1)[None]
    heat = render_heatmaps(parts, cfg=cfg, skeleton=skeleton)
    peaks = find_peaks(heat, cfg=DecodeConfig(refine=refine), num_parts=skeleton.num_parts)
    assert all(len(p) == 1 for p in peaks)
    got = np.stack([p[0, :2] for p in peaks]) * s + (s - 1) / 2
    assert np.abs(got - xy).max() <= tol * s


@pytest.mark.parametrize("x", [-0.4, 0.3, 2.0, 365.6])
def test_peak_on_map_border(x: float, skeleton: Skeleton) -> None:
    """Keypoints in the first/last cell: the missing neighbour is not taken as a flat map."""
    cfg = RenderConfig()
    parts = np.zeros((1, skeleton.num_parts, 3), np.float32)
    parts[0, 0] = (x, 100.3, 2)
    heat = render_heatmaps(parts, cfg=cfg, skeleton=skeleton)
    (peak,) = find_peaks(heat, cfg=DecodeConfig(), num_parts=skeleton.num_parts)[0]
    got = peak[:2] * cfg.stride + (cfg.stride - 1) / 2
    assert np.abs(got - (x, 100.3)).max() < 0.05


def _bilinear_at(field: np.ndarray, x: float, y: float) -> np.ndarray:
    """Textbook bilinear interpolation of (C, h, w) at one interior point."""
    x0, y0 = int(np.floor(x)), int(np.floor(y))
    ax, ay = x - x0, y - y0
    return (
        field[:, y0, x0] * (1 - ax) * (1 - ay)
        + field[:, y0, x0 + 1] * ax * (1 - ay)
        + field[:, y0 + 1, x0] * (1 - ax) * ay
        + field[:, y0 + 1, x0 + 1] * ax * ay
    )


def test_score_limb_matches_loop() -> None:
    """The vectorised integral equals a per-pair, per-sample loop (smooth field: the fast
    sampler interpolates at 1/32-cell steps)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:20, 0:30].astype(np.float32)
    paf = np.stack([np.cos(0.3 * xx + 0.2 * yy), np.sin(0.25 * xx - 0.1 * yy)])

    def cands(n: int) -> np.ndarray:
        xy = rng.uniform((0.5, 0.5), (28.5, 18.5), (n, 2))
        return np.concatenate([xy, np.ones((n, 1))], 1).astype(np.float32)

    cand_a, cand_b = cands(4), cands(5)
    cfg = DecodeConfig(paf_samples=7, short_limb=0)
    score, valid = score_limb(paf, cand_a, cand_b, cfg=cfg, map_height=20)
    for i, a in enumerate(cand_a[:, :2]):
        for j, b in enumerate(cand_b[:, :2]):
            d = b - a
            u = d / np.linalg.norm(d)
            vals = np.array([_bilinear_at(paf, *(a + (n + 0.5) / 7 * d)) @ u for n in range(7)])
            want = vals.mean() + min(0.5 * 20 / np.linalg.norm(d) - 1, 0)
            assert score[i, j] == pytest.approx(want, abs=5e-3)
            if np.abs(vals - cfg.paf_threshold).min() > 0.01 and abs(want) > 0.01:
                assert valid[i, j] == (np.mean(vals > cfg.paf_threshold) > 0.8 and want > 0)
    assert valid.any() and not valid.all()


@pytest.mark.parametrize("cfg", [SYNTH_RENDER, RenderConfig()], ids=["128-4", "368-8"])
def test_decode_recovers_rendered_persons(cfg: RenderConfig, skeleton: Skeleton) -> None:
    """Every labelled keypoint of every person comes back within 0.1 px, grouped right."""
    rng = np.random.default_rng(2)
    size = cfg.input_size
    height = 0.55 * size
    tops = [(0.2 * size, 0.05 * size), (0.5 * size, 0.4 * size), (0.8 * size, 0.02 * size)]
    coco = np.stack([make_person(rng, top, height) for top in tops])
    parts, heat, paf = render(coco, cfg, (size, size), skeleton)
    persons = decode(heat, paf, skeleton=skeleton, stride=cfg.stride)
    assert len(persons) == 3
    assert sorted(match_persons(parts, persons)) == [0, 1, 2]
    for p, d in zip(parts, (persons[i] for i in match_persons(parts, persons)), strict=True):
        assert (d.keypoints[:, 2] > 0).all()  # all 18 parts, the neck included
        assert np.abs(d.keypoints[:, :2] - p[:, :2]).max() < 0.1
        assert d.score > 0.8  # mean peak value of cells next to the true points


def test_decode_same_pixels_at_any_stride(skeleton: Skeleton) -> None:
    """Decoded pixels come from the stride argument, not a built-in 8."""
    rng = np.random.default_rng(3)
    coco = make_person(rng, (90, 20), 200)[None]
    got = []
    for stride in (4, 8):
        cfg = RenderConfig(input_size=256, stride=stride, sigma=7.0)
        _, heat, paf = render(coco, cfg, (256, 256), skeleton)
        (person,) = decode(heat, paf, skeleton=skeleton, stride=stride)
        got.append(person.keypoints[:, :2])
    np.testing.assert_allclose(got[0], got[1], atol=0.05)


def test_short_limb_without_field(skeleton: Skeleton) -> None:
    """Parts closer than a cell join although the label's band misses every cell centre."""
    heat = np.zeros((skeleton.num_heatmaps, 10, 10), np.float32)
    pafs = np.zeros((skeleton.num_pafs, 10, 10), np.float32)
    # nose and right eye (limb 0 -> 14) one cell apart, zero PAF everywhere
    heat[0, 5, 5] = heat[14, 5, 6] = 1.0  # one cell apart: no sub-cell neighbours, so exact
    heat[0, 5, 4] = heat[0, 5, 6] = heat[14, 5, 5] = heat[14, 5, 7] = 0.5
    for k in (0, 14):
        peaks = find_peaks(heat, cfg=DecodeConfig(), num_parts=skeleton.num_parts)[k]
        assert len(peaks) == 1
    joined = decode(heat, pafs, skeleton=skeleton, stride=4, cfg=DecodeConfig(short_limb=1.5))
    apart = decode(heat, pafs, skeleton=skeleton, stride=4, cfg=DecodeConfig(short_limb=0.5))
    assert len(joined) == 1 and len(apart) == 2


def test_person_without_neck_is_merged(skeleton: Skeleton) -> None:
    """No shoulders -> no neck -> no PAF reaches the hips; fragment merging joins arms and legs."""
    rng = np.random.default_rng(4)
    coco = make_person(rng, (180, 20), 300)[None]
    coco[0, 5:7] = 0  # both shoulders unlabelled
    cfg = RenderConfig()
    _, heat, paf = render(coco, cfg, (368, 368), skeleton)
    apart = decode(heat, paf, skeleton=skeleton, stride=8, cfg=DecodeConfig(merge_fragments=0))
    merged = decode(heat, paf, skeleton=skeleton, stride=8)
    # head, two forearms, two legs
    assert sorted(int((p.keypoints[:, 2] > 0).sum()) for p in apart) == [2, 2, 3, 3, 5]
    # the forearms and legs join (gaps are small against a leg's extent); the head is far from
    # an elbow compared with its own size and stays apart
    assert sorted(int((p.keypoints[:, 2] > 0).sum()) for p in merged) == [5, 10]
    body = max(merged, key=lambda p: p.score)
    assert body.score > max(p.score for p in apart)


def test_shared_peak_goes_to_both_persons(skeleton: Skeleton) -> None:
    """Two persons' right wrists on one spot make one peak; both persons get it."""
    rng = np.random.default_rng(5)
    a = make_person(rng, (120, 40), 250)
    b = make_person(rng, (250, 40), 250)
    wrist = 10  # COCO right_wrist
    b[wrist, :2] = a[wrist, :2]
    cfg = RenderConfig()
    parts, heat, paf = render(np.stack([a, b]), cfg, (368, 368), skeleton)
    r_wri = skeleton.coco_index.index(wrist)
    assert len(find_peaks(heat, cfg=DecodeConfig(), num_parts=18)[r_wri]) == 1
    shared = decode(heat, paf, skeleton=skeleton, stride=8)
    single = decode(heat, paf, skeleton=skeleton, stride=8, cfg=DecodeConfig(share_parts=False))
    assert sum(p.keypoints[r_wri, 2] > 0 for p in shared[:2]) == 2
    assert sum(p.keypoints[r_wri, 2] > 0 for p in single[:2]) == 1
    for p, d in zip(parts, (shared[i] for i in match_persons(parts, shared)), strict=True):
        assert np.abs(d.keypoints[:, :2] - p[:, :2]).max() < 1.0


def test_min_parts_and_empty_maps(skeleton: Skeleton) -> None:
    heat = np.zeros((skeleton.num_heatmaps, 8, 8), np.float32)
    pafs = np.zeros((skeleton.num_pafs, 8, 8), np.float32)
    assert decode(heat, pafs, skeleton=skeleton, stride=8) == []
    heat[3, 2, 2] = 1.0  # one lone right elbow
    assert len(decode(heat, pafs, skeleton=skeleton, stride=8)) == 1
    assert decode(heat, pafs, skeleton=skeleton, stride=8, cfg=DecodeConfig(min_parts=2)) == []


def test_decode_rejects_wrong_shapes(skeleton: Skeleton) -> None:
    heat = np.zeros((19, 8, 8), np.float32)
    with pytest.raises(LcposeError, match=r"want heatmaps \(19, h, w\) and pafs \(38, h, w\)"):
        decode(heat, np.zeros((38, 8, 9), np.float32), skeleton=skeleton, stride=8)


def test_decode_config_checks_and_round_trip() -> None:
    cfg = DecodeConfig(min_parts=3, share_parts=False)
    assert DecodeConfig.from_attrs(cfg.to_attrs()) == cfg
    with pytest.raises(LcposeError, match="refine must be 'log', 'quadratic' or 'none'"):
        DecodeConfig(refine="cubic")
    with pytest.raises(LcposeError, match="paf_fraction 1.5 not in"):
        dataclasses.replace(cfg, paf_fraction=1.5)
