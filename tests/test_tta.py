"""Teacher test-time augmentation: exact flips, zoom averaging, parsing, the store record."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lcdata.build.tta import TTAConfig, flip_outputs, parse_tta, tta_predict
from lcdata.labels.skeleton import CMU_SKELETON

S, STRIDE = 64, 4
H = S // STRIDE
K, P = CMU_SKELETON.num_heatmaps, CMU_SKELETON.num_pafs


def _pooled(images: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) -> (N, H, H, 3) float32 block means (stride x stride pixels per cell)."""
    x = images.astype(np.float32) / 255
    return x.reshape(len(x), H, STRIDE, H, STRIDE, 3).mean(axis=(2, 4))


def _raw_model(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic, not flip-equivariant 'network': fixed random mixes of pooled colours
    and of their x gradient, so mirroring the input changes more than the output's x."""
    rng = np.random.default_rng(0)
    feat = _pooled(images)
    grad = np.diff(feat, axis=2, append=feat[:, :, -1:])
    stack = np.concatenate([feat, grad], axis=-1)  # (N, H, H, 6)
    heat = np.einsum("nijc,kc->nkij", stack, rng.normal(size=(K, 6)))
    paf = np.einsum("nijc,kc->nkij", stack, rng.normal(size=(P, 6)))
    return heat.astype(np.float32), paf.astype(np.float32)


def _equivariant_model(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`_raw_model` symmetrised over the mirror: flip-equivariant by construction."""
    h, p = _raw_model(images)
    fh, fp = flip_outputs(*_raw_model(np.ascontiguousarray(images[:, :, ::-1])), CMU_SKELETON)
    return (h + fh) / 2, (p + fp) / 2


def _images(n: int = 3, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, S, S, 3), dtype=np.uint8)


def test_flip_outputs_is_an_involution_that_swaps_sides_and_negates_x() -> None:
    heat = np.random.default_rng(2).normal(size=(2, K, H, H)).astype(np.float32)
    paf = np.random.default_rng(3).normal(size=(2, P, H, H)).astype(np.float32)
    fh, fp = flip_outputs(heat, paf, CMU_SKELETON)
    np.testing.assert_array_equal(flip_outputs(fh, fp, CMU_SKELETON)[0], heat)
    np.testing.assert_array_equal(flip_outputs(fh, fp, CMU_SKELETON)[1], paf)
    perm = CMU_SKELETON.heatmap_flip_permutation()
    np.testing.assert_array_equal(fh[:, 0, :, 0], heat[:, perm[0], :, -1])
    limb = 0
    other = CMU_SKELETON.limb_flip_permutation()[limb]
    np.testing.assert_array_equal(fp[:, 2 * limb, :, 0], -paf[:, 2 * other, :, -1])
    np.testing.assert_array_equal(fp[:, 2 * limb + 1, :, 0], paf[:, 2 * other + 1, :, -1])


def test_flip_tta_of_a_flip_equivariant_model_equals_its_plain_output() -> None:
    images = _images()
    plain = _equivariant_model(images)
    tta = tta_predict(
        _equivariant_model, images, TTAConfig(flip=True), skeleton=CMU_SKELETON, stride=STRIDE
    )
    for a, b in zip(tta, plain, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # ... while a model that is not equivariant is changed by it (the test can fail)
    raw = tta_predict(
        _raw_model, images, TTAConfig(flip=True), skeleton=CMU_SKELETON, stride=STRIDE
    )
    assert np.abs(raw[0] - _raw_model(images)[0]).max() > 0.05


def test_zoom_views_average_only_the_cells_they_saw() -> None:
    # a model whose outputs are the same everywhere: any weighting error shows at the borders
    def constant(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(images)
        return np.full((n, K, H, H), 0.25, np.float32), np.full((n, P, H, H), 0.5, np.float32)

    cfg = parse_tta("flip,scales=0.7:1.4")
    heat, paf = tta_predict(constant, _images(2), cfg, skeleton=CMU_SKELETON, stride=STRIDE)
    np.testing.assert_allclose(heat, 0.25, atol=1e-5)
    # a mirrored view negates PAF x: half of the 6 views are mirrored, so x averages to 0
    np.testing.assert_allclose(paf[:, 1::2], 0.5, atol=1e-5)
    np.testing.assert_allclose(paf[:, 0::2], 0.0, atol=1e-5)


def test_zoom_tta_of_a_local_model_stays_close_to_plain_on_smooth_crops() -> None:
    # pooled colours commute with zooming up to the resampling: the round trip error is small
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    smooth = np.stack(
        [
            128 + 100 * np.sin(xx / 11),
            128 + 100 * np.cos(yy / 13),
            128 + 60 * np.sin((xx + yy) / 17),
        ],
        axis=-1,
    )
    images = np.repeat(smooth[None].astype(np.uint8), 2, axis=0)

    def colours(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feat = _pooled(images).transpose(0, 3, 1, 2)
        heat = np.concatenate([np.repeat(feat, 6, axis=1), feat[:, :1]], axis=1)[:, :K]
        return heat, np.zeros((len(images), P, H, H), np.float32)

    plain = colours(images)[0]
    tta = tta_predict(
        colours, images, TTAConfig(scales=(0.8, 1.25)), skeleton=CMU_SKELETON, stride=STRIDE
    )[0]
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
    assert np.abs(tta - plain)[inner].max() < 0.05


def test_parse_tta_grammar_and_errors() -> None:
    assert parse_tta("off") == TTAConfig()
    assert parse_tta("flip") == TTAConfig(flip=True)
    assert parse_tta("flip,scales=0.8:1.25") == TTAConfig(flip=True, scales=(0.8, 1.25))
    assert parse_tta("flip,scales=0.8:1.25").describe() == "flip,scales=0.8:1.25"
    assert len(TTAConfig(flip=True, scales=(0.8,)).views) == 4
    with pytest.raises(ValueError, match="bad --tta token 'rotate=10'"):
        parse_tta("flip,rotate=10")
    with pytest.raises(ValueError, match="scale 1 is always included"):
        parse_tta("scales=1")


FIXTURE = Path(__file__).parent / "fixtures" / "teacher_tiny_synth.pt"
"""Weights of a `tiny` Baseline trained at the long schedule with fresh augmentation
(experiments/aug_fresh.toml, seed 1, 16,000 steps; its final.pt)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The trained teacher, exported, and 24 synthetic crops it has not seen."""
    from lcdata.build.gt import BuildConfig, build_gt_store
    from lcdata.build.teacher import load_teacher
    from lcdata.config import SYNTH_RENDER
    from lcdata.synth.scene import SynthConfig, generate_split
    from trainer.checkpoint import model_from_checkpoint
    from trainer.export import export_teacher

    root = tmp_path_factory.mktemp("tta")
    model, info = model_from_checkpoint(FIXTURE)
    export_teacher(model, skeleton=info.skeleton, stride=info.stride,
                   input_size=info.input_size, model_name=info.model_name,
                   out_path=root / "t.pt2")  # fmt: skip
    generate_split(root, "val", 24, cfg=SynthConfig(), seed=11)
    store = root / "s.zarr"
    build_gt_store(root / "annotations" / "person_keypoints_val.json", root / "val", store,
                   render=SYNTH_RENDER, build=BuildConfig(views_per_image=1), workers=0,
                   progress=False)  # fmt: skip
    import zarr

    return load_teacher(root / "t.pt2"), np.asarray(zarr.open_group(str(store))["images"][:])


@pytest.mark.parametrize("spec", ["flip", "flip,scales=0.8:1.25"])
def test_tta_of_a_trained_teacher_keeps_its_confident_peaks(trained, spec: str) -> None:
    """At least 90% of the plain output's peaks above 0.5 have a TTA peak within one cell."""
    from lcdata.labels.decode import DecodeConfig, find_peaks

    teacher, images = trained
    plain, _ = teacher.predict(images)
    tta, _ = tta_predict(teacher.predict, images, parse_tta(spec), skeleton=teacher.skeleton,
                         stride=teacher.stride)  # fmt: skip
    strong, near = 0, 0
    k = teacher.skeleton.num_parts
    for i in range(len(images)):
        ours = find_peaks(plain[i], cfg=DecodeConfig(peak_threshold=0.5), num_parts=k)
        theirs = find_peaks(tta[i], cfg=DecodeConfig(peak_threshold=0.1), num_parts=k)
        for a, b in zip(ours, theirs, strict=True):
            for x, y, _ in a:
                strong += 1
                near += bool(len(b)) and bool(
                    (np.maximum(abs(b[:, 0] - x), abs(b[:, 1] - y)) <= 1.0).any()
                )
    assert strong >= 50, strong  # a trained teacher: many confident peaks to compare
    assert near / strong >= 0.9, (near, strong)
