"""`lcdata audit`: suspected label errors from an oracle teacher, in image coordinates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.cli import cli
from lcdata.config import SYNTH_RENDER
from lcdata.correction.audit import audit_store, evaluate_suspects
from lcdata.synth.scene import SynthConfig, generate_split
from tests.oracle_teacher import add_oracle_teacher


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> dict[str, Path]:
    """40 synthetic images with more unannotated persons than the default, two views each,
    the cache store's teacher maps rendered from the clean (in-image) truth."""
    root = tmp_path_factory.mktemp("audit")
    generate_split(root, "train", 40, cfg=SynthConfig(unannotated=0.3), seed=7)
    ann = root / "annotations"
    files = {"clean": ann / "person_keypoints_train_clean.json",
             "noisy": ann / "person_keypoints_train.json"}  # fmt: skip
    store = root / "cache.zarr"
    build_gt_store(
        files["noisy"], root / "train", store, render=SYNTH_RENDER,
        build=BuildConfig(views_per_image=2, samples_per_shard=16, seed=0), workers=0,
        progress=False,
    )  # fmt: skip
    add_oracle_teacher(store, files["clean"], field="keypoints")
    return files | {"store": store, "root": root}


def test_an_oracle_teacher_finds_the_unannotated_persons(audited) -> None:
    suspects = audit_store(audited["store"], progress=False)
    scores = evaluate_suspects(suspects, audited["clean"], audited["noisy"])
    persons = scores["unannotated_person"]
    assert persons["failures"] >= 8  # enough to mean something
    assert persons["recall"] >= 0.5 and persons["precision"] >= 0.5, scores
    points = scores["missed_keypoint"]
    assert points["precision"] >= 0.5 and points["recall"] >= 0.5, scores
    # records as documented: ranked, COCO order, v = 2 at the proposed points only
    assert [s["score"] for s in suspects] == sorted((s["score"] for s in suspects), reverse=True)
    for s in suspects:
        kps = np.asarray(s["keypoints"]).reshape(17, 3)
        assert set(np.unique(kps[:, 2])) <= {0.0, 2.0} and (kps[:, 2] == 2).any()
        assert (s["annotation_id"] is None) == (s["kind"] == "unannotated_person")
    # the views of one image are merged: one record per completed annotation
    keys = [(s["image_id"], s["annotation_id"]) for s in suspects if s["kind"] == "missed_keypoint"]
    assert len(keys) == len(set(keys))


def test_an_audit_of_a_teacher_that_agrees_with_the_labels_finds_nothing(audited, tmp_path):
    store = tmp_path / "agree.zarr"
    build_gt_store(
        audited["noisy"], audited["root"] / "train", store, render=SYNTH_RENDER,
        build=BuildConfig(views_per_image=1, samples_per_shard=16, seed=0), workers=0,
        progress=False,
    )  # fmt: skip
    add_oracle_teacher(store, audited["noisy"], field="keypoints")
    assert audit_store(store, progress=False) == []


def test_cli_writes_suspects_sheet_and_evaluation(audited, tmp_path: Path) -> None:
    out = tmp_path / "audit"
    result = CliRunner().invoke(
        cli, ["audit", str(audited["store"]), "--out", str(out), "--clean",
              str(audited["clean"]), "--no-progress", "--top", "6"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    suspects = json.loads((out / "suspects.json").read_text())
    assert suspects and (out / "suspects.png").stat().st_size > 1000
    assert "unannotated_person:" in result.output and "precision" in result.output
    assert json.loads((out / "evaluation.json").read_text())["unannotated_person"]["failures"] > 0
