"""Label-quality AP (`lcdata score-labels`): the truth in each crop, and scores that mean it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lcdata.cli import cli
from lcdata.config import SYNTH_RENDER
from lcdata.correction.quality import crop_truth, score_labels
from lcdata.labels.decode import DecodeConfig
from lcdata.labels.scoring import evaluate_results
from lcdata.labels.skeleton import CMU_SKELETON, COCO_PART_NAMES
from tests.oracle_teacher import clean_and_noisy_stores
from tests.persons import make_person
from trainer.evaluate import run_oracle, select_records


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> dict[str, Path]:
    """40 synthetic training images, GT stores built from the clean and the noisy labels."""
    return clean_and_noisy_stores(tmp_path_factory.mktemp("quality"), seed=3)


def _ann(kps: np.ndarray, **extra) -> dict:
    return {"keypoints": kps.reshape(-1).tolist(), "area": 400.0, "bbox": [0, 0, 20, 20],
            "iscrowd": 0, **extra}  # fmt: skip


def test_crop_truth_moves_masks_and_ignores() -> None:
    rng = np.random.default_rng(0)
    kps = make_person(rng, (32, 32), 40)  # (17, 3) COCO keypoints, all labelled
    h = 16
    affine = np.array([[2.0, 0, -10], [0, 2.0, -20]])  # zoom x2 and shift
    [moved] = crop_truth([_ann(kps)], affine, False, np.ones((h, h), np.uint8), stride=8,
                         skeleton=CMU_SKELETON)  # fmt: skip
    got = np.asarray(moved["keypoints"]).reshape(17, 3)
    want = kps[:, :2] * 2 + [-10, -20]
    on = got[:, 2] > 0
    np.testing.assert_allclose(got[on, :2], want[on], atol=0.01)
    assert moved["area"] == pytest.approx(400 * 4) and moved["iscrowd"] == 0
    assert moved["num_keypoints"] == int(on.sum())
    # the mirror swaps left and right: the left wrist lands where the right one was drawn
    mirror = np.array([[-1.0, 0, 127], [0, 1.0, 0]])
    [flipped] = crop_truth([_ann(kps)], mirror, True, np.ones((h, h), np.uint8), stride=8,
                           skeleton=CMU_SKELETON)  # fmt: skip
    fk = np.asarray(flipped["keypoints"]).reshape(17, 3)
    lw, rw = COCO_PART_NAMES.index("left_wrist"), COCO_PART_NAMES.index("right_wrist")
    np.testing.assert_allclose(fk[lw, :2], [127 - kps[rw, 0], kps[rw, 1]], atol=0.01)
    # only the head's cells supervised: fewer than half of the keypoints count, an ignore region
    mask = np.zeros((h, h), np.uint8)
    mask[: int(kps[0, 1] // 8) + 1] = 1
    [ignored] = crop_truth([_ann(kps)], np.eye(2, 3), False, mask, stride=8,
                           skeleton=CMU_SKELETON)  # fmt: skip
    assert ignored["iscrowd"] == 1 and 0 < ignored["num_keypoints"] < 17 / 2
    # no keypoint in a supervised cell: not in the crop's truth at all
    assert crop_truth([_ann(kps)], np.eye(2, 3), False, 0 * mask, stride=8,
                      skeleton=CMU_SKELETON) == []  # fmt: skip
    assert crop_truth([_ann(np.zeros((17, 3)))], np.eye(2, 3), False, mask, stride=8,
                      skeleton=CMU_SKELETON) == []  # fmt: skip


def test_a_clean_label_store_scores_near_the_full_image_oracle(bench) -> None:
    report = score_labels(bench["clean_store"], bench["clean"], progress=False)
    records = select_records(bench["clean"], None)
    oracle = evaluate_results(
        bench["clean"],
        run_oracle(records, render=SYNTH_RENDER, skeleton=CMU_SKELETON, cfg=DecodeConfig()),
    )
    assert abs(report["metrics"]["AP"] - oracle["AP"]) <= 0.05, (report["metrics"], oracle)
    assert report["samples"] == 40 and report["truth_persons"] > 40


def test_noisy_labels_score_below_clean_ones(bench) -> None:
    clean = score_labels(bench["clean_store"], bench["clean"], progress=False)["metrics"]
    noisy = score_labels(bench["noisy_store"], bench["clean"], progress=False)["metrics"]
    assert noisy["AP"] < clean["AP"] - 0.05
    assert noisy["AR"] < clean["AR"]


def test_cli_prints_the_protocol_and_writes_json(bench, tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    result = CliRunner().invoke(
        cli,
        ["score-labels", str(bench["clean_store"]), "--clean", str(bench["clean"]),
         "--max-samples", "16", "--out", str(out), "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "scored by COCOeval, crop by crop" in result.output
    assert "label-quality AP" in result.output and out.exists()
