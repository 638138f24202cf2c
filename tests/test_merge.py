"""Keypoint-level correction: merging decoded persons into labels, mode `keypoints` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from lcdata.config import SYNTH_RENDER
from lcdata.correction.quality import score_labels
from lcdata.correction.write import run_correct
from lcdata.labels.decode import Person, decode
from lcdata.labels.merge import MergeConfig, merge_persons
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.store.training import open_training_store
from tests.oracle_teacher import add_oracle_teacher, clean_and_noisy_stores
from tests.persons import make_person

K = CMU_SKELETON.num_parts
SIGMA = 4.0


def _parts(top, height, seed=0) -> np.ndarray:
    return CMU_SKELETON.from_coco(make_person(np.random.default_rng(seed), top, height))


def _as_teacher(parts: np.ndarray, peak: float = 0.9) -> Person:
    kps = parts.copy()
    kps[:, 2] = np.where(parts[:, 2] > 0, peak, 0)
    return Person(kps, float(peak))


def test_a_matched_person_gains_the_parts_it_lacks() -> None:
    a = _parts((40, 10), 80)
    label = a.copy()
    label[4] = 0  # right wrist missed by the annotator
    teacher = a.copy()
    teacher[:, :2] += 1.0  # the teacher is a pixel off everywhere
    m = merge_persons(label[None], [_as_teacher(teacher)], cfg=MergeConfig(), sigma=SIGMA)
    assert m.keypoints.shape == (1, K, 3) and m.num_labelled == 1
    np.testing.assert_allclose(m.keypoints[0, 4], [*teacher[4, :2], 2])
    labelled = label[:, 2] > 0
    np.testing.assert_array_equal(m.keypoints[0, labelled], label[labelled])  # labels kept
    assert m.added[0, 4] == pytest.approx(0.9) and (m.added[0, labelled] == 0).all()


def test_an_unmatched_confident_person_is_added_and_a_faint_one_is_not() -> None:
    a, b, c = _parts((30, 10), 80), _parts((90, 10), 80, 1), _parts((60, 60), 60, 2)
    teacher = [_as_teacher(a), _as_teacher(b), _as_teacher(c, peak=0.3)]
    m = merge_persons(a[None], teacher, cfg=MergeConfig(), sigma=SIGMA)
    assert len(m.keypoints) == 2 and m.num_labelled == 1  # b added, c too faint
    np.testing.assert_allclose(m.keypoints[1, :, :2][b[:, 2] > 0], b[b[:, 2] > 0, :2])
    assert m.matched.tolist() == [0, 1]
    # too few confident parts: not a person
    few = b.copy()
    few[5:, 2] = 0
    m = merge_persons(a[None], [_as_teacher(few)], cfg=MergeConfig(min_parts=6), sigma=SIGMA)
    assert len(m.keypoints) == 1


def test_a_point_labelled_on_someone_else_is_not_added_twice() -> None:
    a = _parts((40, 10), 80)
    other = np.zeros_like(a)
    other[4] = a[4]  # a wrist labelled on a second (partial) person
    label = np.stack([a, other])
    label[0, 4] = 0
    m = merge_persons(label, [_as_teacher(a)], cfg=MergeConfig(), sigma=SIGMA)
    assert m.keypoints[0, 4, 2] == 0


def test_decoding_and_rerendering_a_gt_store_reproduces_it(tmp_path: Path) -> None:
    """The documented tolerance (docs/correction.md): re-rendered clean labels differ from
    the stored GT maps by less than 0.1 on 99% of heatmap cells and 0.1 on 99% of PAF cells."""
    bench = clean_and_noisy_stores(tmp_path, seed=5)
    g = zarr.open_group(str(bench["clean_store"]), mode="r")
    heat, pafs = g["gt/heatmaps"][:].astype(np.float32), g["gt/pafs"][:].astype(np.float32)
    dh, dp = [], []
    for i in range(len(heat)):
        persons = decode(heat[i], pafs[i], skeleton=CMU_SKELETON, stride=SYNTH_RENDER.stride)
        kps = np.stack([p.keypoints for p in persons]) if persons else np.zeros((0, K, 3))
        kps[..., 2] = (kps[..., 2] > 0) * 2.0
        rh, rp = render_targets(kps, cfg=SYNTH_RENDER, skeleton=CMU_SKELETON)
        dh.append(np.abs(rh - heat[i]).ravel())
        dp.append(np.abs(rp - pafs[i]).ravel())
    dh, dp = np.concatenate(dh), np.concatenate(dp)
    assert np.quantile(dh, 0.99) < 0.1 and np.quantile(dp, 0.99) < 0.1, (
        np.quantile(dh, 0.99),
        np.quantile(dp, 0.99),
    )


@pytest.fixture(scope="module")
def oracle_bench(tmp_path_factory) -> dict[str, Path]:
    bench = clean_and_noisy_stores(tmp_path_factory.mktemp("merge"), seed=5)
    add_oracle_teacher(bench["noisy_store"], bench["clean"], field="keypoints")
    return bench


def test_keypoint_mode_with_an_oracle_teacher_recovers_the_clean_labels(
    oracle_bench, tmp_path: Path
) -> None:
    src = oracle_bench["noisy_store"]
    out = tmp_path / "kp.zarr"
    attrs = run_correct(src, out, mode="keypoints", progress=False)
    c = attrs["correction"]
    assert c["mode"] == "keypoints" and c["merge"] == MergeConfig().to_attrs()
    g = zarr.open_group(str(out), mode="r")
    kps, counts = g["target/keypoints"][:], g["target/num_persons"][:]
    assert kps.shape[1] == attrs["max_persons"] + MergeConfig().max_added
    labelled = zarr.open_group(str(src), mode="r")["meta/num_persons"][:]
    assert (counts >= labelled).all() and counts.sum() > labelled.sum()  # persons were added
    # the stored maps are the rendering of the stored keypoints
    i = int(np.argmax(counts - labelled))
    want_h, _ = render_targets(kps[i], cfg=SYNTH_RENDER, skeleton=CMU_SKELETON)
    np.testing.assert_allclose(g["target/heatmaps"][i].astype(np.float32), want_h, atol=2**-9)
    # better labels than the noisy ones, close to the clean ones
    score = {
        name: score_labels(store, oracle_bench["clean"], progress=False)["metrics"]["AP"]
        for name, store in (("noisy", src), ("keypoints", out),
                            ("clean", oracle_bench["clean_store"]))
    }  # fmt: skip
    assert score["keypoints"] > score["noisy"] + 0.05, score
    assert score["keypoints"] > score["clean"] - 0.1, score
    # fresh augmentation renders the merged keypoints
    spec = open_training_store(out, augment=True)
    assert spec.online is not None and spec.online.kind == "render"
    assert spec.arrays["keypoints"] == (out, "target/keypoints")
