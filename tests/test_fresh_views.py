"""Fresh views in training: GT re-rendered from the stored keypoints, corrections applied per
view, version-1 stores warped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.build.teacher_pass import run_teacher_pass
from lcdata.config import RenderConfig
from lcdata.correction.rules import targets
from lcdata.correction.write import run_correct
from lcdata.labels.augment import warp_parts
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.labels.warp import JitterConfig, jitter_affine, sample_jitter, warp_sample
from lcdata.store.codec import quantize
from lcdata.store.layout import read_attrs
from lcdata.store.training import open_training_store
from tests.test_teacher_pass import make_teacher
from trainer.data import JITTER_STREAM, StoreStream, make_loader

RENDER = RenderConfig(input_size=64, stride=4, sigma=3.0)
JITTER = JitterConfig(flip=True, max_rotate_deg=30, min_scale=0.8, max_scale=1.25, max_shift=0.05)
FIXTURE = Path(__file__).parent / "fixtures" / "store_v1_cache.zarr"


@pytest.fixture(scope="module")
def stores(tmp_path_factory, request) -> dict[str, Path]:
    coco = request.getfixturevalue("coco_mini_module")
    root = tmp_path_factory.mktemp("fresh")
    gt = root / "gt.zarr"
    build_gt_store(
        coco / "annotations" / "person_keypoints_val2017.json",
        coco / "val2017",
        gt,
        render=RENDER,
        build=BuildConfig(views_per_image=1, seed=3, samples_per_shard=8),
        progress=False,
    )
    cache = root / "cache.zarr"
    shutil.copytree(gt, cache)
    run_teacher_pass(cache, make_teacher(root / "t.pt2", 1, bias=0.05), progress=False)
    lc = root / "lc.zarr"
    run_correct(cache, lc, mode="max", progress=False, num_workers=1)
    return {"gt": gt, "cache": cache, "lc": lc}


@pytest.fixture(scope="module")
def coco_mini_module() -> Path:
    from tests.test_data import coco_mini_root

    return coco_mini_root()


def test_stored_keypoints_render_the_stored_gt(stores) -> None:
    g = zarr.open_group(str(stores["gt"]), mode="r")
    kp, count = g["meta/keypoints"][:], g["meta/num_persons"][:]
    assert read_attrs(stores["gt"])["schema_version"] == 2
    assert kp.shape == (32, read_attrs(stores["gt"])["max_persons"], CMU_SKELETON.num_parts, 3)
    for n in range(len(kp)):
        assert not kp[n, count[n] :].any()  # padding rows are zero (v = 0: never drawn)
        h, p = render_targets(kp[n, : count[n]], cfg=RENDER, skeleton=CMU_SKELETON)
        np.testing.assert_array_equal(quantize(h), g["gt/heatmaps"][n])
        np.testing.assert_array_equal(quantize(p), g["gt/pafs"][n])


def _batches(store: Path, steps: int = 3) -> list[dict[str, torch.Tensor]]:
    spec = open_training_store(store, augment=True)
    stream = StoreStream(spec, batch_size=4, seed=2, jitter=JITTER, lanes=1)
    return [next(it) for it in [iter(make_loader(stream, workers=0))] for _ in range(steps)]


def _views(store: Path, index: list[int], epoch: int = 0):
    for n in index:
        rng = np.random.default_rng([2, epoch, n, JITTER_STREAM])
        view = sample_jitter(rng, JITTER, RENDER.input_size)
        yield n, view, jitter_affine(view, RENDER.input_size)


def test_augmented_gt_equals_rendering_the_augmented_keypoints(stores) -> None:
    g = zarr.open_group(str(stores["gt"]), mode="r")
    assert open_training_store(stores["gt"], augment=True).online.kind == "render"
    for batch in _batches(stores["gt"]):
        for i, (n, view, affine) in enumerate(_views(stores["gt"], batch["index"].tolist())):
            parts = warp_parts(g["meta/keypoints"][n], affine, flipped=view.flip,
                               skeleton=CMU_SKELETON)  # fmt: skip
            h, p = render_targets(parts, cfg=RENDER, skeleton=CMU_SKELETON)
            np.testing.assert_array_equal(batch["heatmaps"][i].numpy(), h.astype(np.float16))
            np.testing.assert_array_equal(batch["pafs"][i].numpy(), p.astype(np.float16))
            image, mask, _, _ = warp_sample(
                g["images"][n], g["masks"][n], g["gt/heatmaps"][n], g["gt/pafs"][n], affine,
                stride=RENDER.stride, skeleton=CMU_SKELETON,
            )  # fmt: skip
            np.testing.assert_array_equal(batch["images"][i].numpy(), image)
            np.testing.assert_array_equal(batch["masks"][i, 0].numpy(), mask)


def _view_maps(c: zarr.Group, n: int, view, affine: np.ndarray):
    """GT re-rendered from the moved keypoints and the warped teacher maps of one view."""
    _, _, th, tp = warp_sample(
        c["images"][n], c["masks"][n], c["teacher/heatmaps"][n], c["teacher/pafs"][n],
        affine, stride=RENDER.stride, skeleton=CMU_SKELETON,
    )  # fmt: skip
    parts = warp_parts(c["meta/keypoints"][n], affine, flipped=view.flip, skeleton=CMU_SKELETON)
    gh, gp = render_targets(parts, cfg=RENDER, skeleton=CMU_SKELETON)
    return gh, gp, th, tp


def test_corrected_targets_are_the_rule_applied_per_view(stores) -> None:
    spec = open_training_store(stores["lc"], augment=True)
    assert spec.online.kind == "correct" and spec.online.mode == "max"
    c = zarr.open_group(str(stores["cache"]), mode="r")
    for batch in _batches(stores["lc"], steps=2):
        for i, (n, view, affine) in enumerate(_views(stores["lc"], batch["index"].tolist())):
            gh, gp, th, tp = _view_maps(c, n, view, affine)
            want = targets(gh[None], gp[None], th[None], tp[None], mode="max", lam=0.0,
                           background="recompute")  # fmt: skip
            h, p = want.heatmaps, want.pafs
            np.testing.assert_array_equal(batch["heatmaps"][i].numpy(), h[0].astype(np.float16))
            np.testing.assert_array_equal(batch["pafs"][i].numpy(), p[0].astype(np.float16))


def test_version_1_store_trains_with_warped_maps(tmp_path: Path) -> None:
    store = tmp_path / "v1.zarr"
    shutil.copytree(FIXTURE, store)
    spec = open_training_store(store, augment=True)
    assert spec.online is None and "keypoints" not in spec.arrays
    stream = StoreStream(spec, batch_size=2, seed=0, jitter=JITTER, lanes=1)
    batch = next(iter(make_loader(stream, workers=0)))
    assert batch["heatmaps"].shape[0] == 2 and torch.isfinite(batch["heatmaps"].float()).all()


def test_gated_and_keypoint_targets_follow_each_view(stores, tmp_path: Path) -> None:
    """A gated store applies its recorded gates per view; a keypoint store re-renders its
    merged keypoints."""
    gated = tmp_path / "gated.zarr"
    run_correct(stores["cache"], gated, mode="gated", gates=(0.2, 0.1), progress=False,
                num_workers=1)  # fmt: skip
    spec = open_training_store(gated, augment=True)
    assert spec.online.kind == "correct" and spec.online.gates == (0.2, 0.1)
    c = zarr.open_group(str(stores["cache"]), mode="r")
    for batch in _batches(gated, steps=1):
        for i, (n, view, affine) in enumerate(_views(gated, batch["index"].tolist())):
            gh, gp, th, tp = _view_maps(c, n, view, affine)
            want = targets(gh[None], gp[None], th[None], tp[None], mode="gated", gates=(0.2, 0.1))
            np.testing.assert_array_equal(batch["heatmaps"][i].numpy(),
                                          want.heatmaps[0].astype(np.float16))  # fmt: skip
    kp = tmp_path / "kp.zarr"
    run_correct(stores["cache"], kp, mode="keypoints", progress=False, num_workers=1)
    g = zarr.open_group(str(kp), mode="r")
    for batch in _batches(kp, steps=1):
        for i, (n, view, affine) in enumerate(_views(kp, batch["index"].tolist())):
            parts = warp_parts(g["target/keypoints"][n], affine, flipped=view.flip,
                               skeleton=CMU_SKELETON)  # fmt: skip
            h, _ = render_targets(parts, cfg=RENDER, skeleton=CMU_SKELETON)
            np.testing.assert_array_equal(batch["heatmaps"][i].numpy(), h.astype(np.float16))
