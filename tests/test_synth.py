from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lcdata.cli import cli
from lcdata.config import RenderConfig
from lcdata.labels.coco import load_coco
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import Skeleton
from lcdata.synth.draw import (
    DARKER_RIGHT,
    LIGHTER_LEFT,
    Appearance,
    draw_figure,
    sample_appearance,
    silhouette,
)
from lcdata.synth.pose import KP, POSE_KINDS, sample_figure
from lcdata.synth.scene import SynthConfig, generate, make_scene
from lcdata.synth.truth import FAILURES, label_mass_report, read_split

ALL_OFF = SynthConfig(
    missed_visible=0.0, unannotated=0.0, drop_out_of_image=False, drop_occluded=False
)
# Busy scenes so that every failure has something to remove in a dozen images.
BUSY = replace(ALL_OFF, persons_per_image=(3, 4), truncated=0.6)
ONLY = {
    "out_of_image": replace(BUSY, drop_out_of_image=True),
    "severely_occluded": replace(BUSY, drop_occluded=True),
    "missed_visible": replace(BUSY, missed_visible=0.3),
    "unannotated": replace(BUSY, unannotated=0.3),
}
ALL_ON = SynthConfig(persons_per_image=(3, 4), truncated=0.6, missed_visible=0.3, unannotated=0.3)
REMOVED_KEY = {name: name for name in FAILURES} | {"unannotated": "unannotated_persons"}


def _ann(root: Path, split: str = "train", clean: bool = False) -> Path:
    return root / "annotations" / f"person_keypoints_{split}{'_clean' if clean else ''}.json"


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_default")
    generate(root, num_train=12, num_val=4, cfg=SynthConfig(), seed=3)
    return root


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(tmp_path / name, num_train=4, num_val=2, cfg=SynthConfig(crowd=0.5), seed=seed)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert len(a) == 4 + 2 + 4 + 1  # images, annotation files, corruption.json
    assert a == b
    assert a.keys() == c.keys()
    assert a["train/000000.png"] != c["train/000000.png"]
    assert (
        a["annotations/person_keypoints_train.json"] != c["annotations/person_keypoints_train.json"]
    )


def test_images_do_not_depend_on_failure_settings(tmp_path: Path) -> None:
    generate(tmp_path / "a", num_train=3, num_val=0, cfg=ALL_OFF, seed=1)
    generate(tmp_path / "b", num_train=3, num_val=0, cfg=SynthConfig(unannotated=0.9), seed=1)
    for i in range(3):
        name = f"train/{i:06d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the clean truth differs only in the recorded config
    a = json.loads(_ann(tmp_path / "a", clean=True).read_text())
    b = json.loads(_ann(tmp_path / "b", clean=True).read_text())
    assert a["annotations"] == b["annotations"]
    assert len(json.loads(_ann(tmp_path / "b").read_text())["annotations"]) < len(b["annotations"])


def test_files_load_in_pycocotools_and_clean_scores_ap_one(default_set: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        noisy = COCO(str(_ann(default_set, "val")))
        gt = COCO(str(_ann(default_set, "val", clean=True)))
        results = [
            {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
            for a in gt.dataset["annotations"]
            if not a["iscrowd"]
        ]
        ev = COCOeval(gt, gt.loadRes(results), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(results) > 0
    assert ev.stats[0] == pytest.approx(1.0)
    assert len(noisy.getAnnIds()) <= len(gt.getAnnIds())
    cat = gt.loadCats(1)[0]
    assert len(cat["keypoints"]) == 17 and len(cat["skeleton"]) == 19
    assert min(min(edge) for edge in cat["skeleton"]) == 1  # COCO's skeleton is 1-based
    for split in ("train", "val"):  # the project's own validating reader accepts them too
        load_coco(_ann(default_set, split))
        load_coco(_ann(default_set, split, clean=True), keypoint_field="keypoints_all")


def test_annotation_fields(default_set: Path) -> None:
    clean = json.loads(_ann(default_set, clean=True).read_text())
    noisy = json.loads(_ann(default_set).read_text())
    noisy_by_id = {a["id"]: a for a in noisy["annotations"]}
    for ann in clean["annotations"]:
        assert ann["category_id"] == 1 and ann["area"] > 0 and len(ann["bbox"]) == 4
        assert ann["segmentation"] and all(len(p) >= 6 for p in ann["segmentation"])
        kps = np.asarray(ann["keypoints"]).reshape(17, 3)
        assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
        if ann["iscrowd"]:
            assert noisy_by_id[ann["id"]] == ann
            continue
        full = np.asarray(ann["keypoints_all"]).reshape(17, 3)
        assert (full[:, 2] > 0).all()
        # out-of-image points: coordinates kept, v=0 in `keypoints` only
        np.testing.assert_array_equal(full[:, :2], kps[:, :2])
        assert ann["num_keypoints"] >= 6
        twin = noisy_by_id.get(ann["id"])
        if twin is not None:
            for key in ("image_id", "segmentation", "area", "bbox", "iscrowd"):
                assert twin[key] == ann[key]
            assert "keypoints_all" not in twin


def _drop_counts(root: Path) -> dict[str, int]:
    counts = dict.fromkeys(FAILURES, 0)
    for item in read_split(root, "train"):
        for ann_id in item.clean_all:
            if ann_id not in item.noisy:
                counts["unannotated"] += 1
                continue
            for name, pts in item.dropped(ann_id).items():
                counts[name] += len(pts)
    return counts


@pytest.mark.parametrize("failure", FAILURES)
def test_each_failure_removes_exactly_what_it_says(tmp_path: Path, failure: str) -> None:
    report = generate(tmp_path, num_train=12, num_val=0, cfg=ONLY[failure], seed=11)
    counts = report["splits"]["train"]
    on_disk = json.loads((tmp_path / "corruption.json").read_text())["splits"]["train"]
    assert on_disk == counts
    found = _drop_counts(tmp_path)
    for name in FAILURES:
        expected = counts["removed"][REMOVED_KEY[name]]
        assert found[name] == expected, name
        assert (expected > 0) == (name == failure), name
    removed = counts["removed"]
    assert (
        counts["keypoints"]
        == counts["noisy_keypoints"]
        + removed["out_of_image"]
        + removed["severely_occluded"]
        + removed["missed_visible"]
        + removed["unannotated_keypoints"]
    )


def test_all_failures_together_are_counted_and_remove_label_mass(tmp_path: Path) -> None:
    report = generate(tmp_path, num_train=12, num_val=0, cfg=ALL_ON, seed=11)
    counts = report["splits"]["train"]
    found = _drop_counts(tmp_path)
    assert found == {name: counts["removed"][REMOVED_KEY[name]] for name in FAILURES}
    assert all(found.values())
    mass = label_mass_report(_ann(tmp_path, clean=True), _ann(tmp_path))
    assert 0.1 < mass["heatmap_missing"] < 0.9 and 0.1 < mass["paf_missing"] < 0.9


def test_all_failures_off_gives_the_truth(tmp_path: Path) -> None:
    generate(tmp_path, num_train=10, num_val=0, cfg=BUSY, seed=2)
    clean = json.loads(_ann(tmp_path, clean=True).read_text())["annotations"]
    noisy = json.loads(_ann(tmp_path).read_text())["annotations"]
    assert [a["id"] for a in clean] == [a["id"] for a in noisy]
    for c, n in zip(clean, noisy, strict=True):
        assert n["keypoints"] == c.get("keypoints_all", c["keypoints"])
    mass = label_mass_report(_ann(tmp_path, clean=True), _ann(tmp_path))
    assert mass["heatmap_missing"] == pytest.approx(0.0, abs=1e-6)
    assert mass["paf_missing"] == pytest.approx(0.0, abs=1e-6)


def test_occlusion_follows_drawing_order() -> None:
    cfg = replace(SynthConfig(), persons_per_image=(4, 4))
    occluded = severe = 0
    for i in range(20):
        scene = make_scene(np.random.default_rng([7, i]), cfg)
        h, w = scene.owner.shape
        for index, person in enumerate(scene.persons):
            kps = person.keypoints_all
            pix = np.floor(kps[person.inside, :2] + 0.5).astype(int)
            owner = scene.owner[pix[:, 1], pix[:, 0]]
            v = kps[person.inside, 2]
            # v=1 exactly where a later-drawn (nearer) person's pixels cover the point
            np.testing.assert_array_equal(v == 1, owner > index)
            assert (kps[~person.inside, 2] == 1).all()
            assert not (person.severe & ~person.inside).any()
            assert (kps[person.severe, 2] == 1).all()
            occluded += int((v == 1).sum())
            severe += int(person.severe.sum())
            # nobody is drawn over the nearest person
            if index == len(scene.persons) - 1:
                assert (v == 2).all()
    assert occluded > severe > 0


def _upright_right(fig) -> np.ndarray:
    """Image direction of the figure's own right-hand side as seen by the viewer."""
    up = fig.up_xy
    return np.array([-up[1], up[0]])


@pytest.mark.parametrize("kind", POSE_KINDS)
def test_left_parts_appear_on_the_viewers_right_of_a_face(kind: str) -> None:
    rng = np.random.default_rng(len(kind))
    for _ in range(50):
        fig = sample_figure(rng, 100.0, (64.0, 64.0), kind=kind)
        kp, right = fig.keypoints_xy, _upright_right(fig)
        for a, b in (("left_shoulder", "right_shoulder"), ("left_eye", "right_eye")):
            assert (kp[KP[a]] - kp[KP[b]]) @ right > 0, (kind, a)
        assert (kp[KP["left_hip"]] - kp[KP["right_hip"]]) @ right > -1.0


def test_left_limbs_are_drawn_lighter_than_right() -> None:
    look = Appearance(
        shirt=(40, 120, 200),
        pants=(90, 60, 30),
        skin=(150, 180, 220),
        hair=(20, 20, 20),
        shoes=(10, 10, 10),
    )
    left = tuple(int(round(c + LIGHTER_LEFT * (255 - c))) for c in look.pants)
    right = tuple(int(round(c * DARKER_RIGHT)) for c in look.pants)
    rng = np.random.default_rng(0)
    for _ in range(10):
        fig = sample_figure(rng, 100.0, (64.0, 64.0), kind="standing")
        canvas = np.zeros((128, 128, 3), np.uint8)
        draw_figure(canvas, fig, appearance=look)
        for side, colour in (("left", left), ("right", right)):
            mid = (fig.keypoints_xy[KP[f"{side}_hip"]] + fig.keypoints_xy[KP[f"{side}_knee"]]) / 2
            x, y = np.floor(mid + 0.5).astype(int)
            assert tuple(int(c) for c in canvas[y, x]) == colour, side


@pytest.mark.parametrize("height", [14.0, 30.0, 110.0])
def test_silhouette_is_the_drawn_footprint(height: float) -> None:
    rng = np.random.default_rng(int(height))
    for _ in range(10):
        # partly outside the 64 px image, so the clipped and the whole silhouette differ
        fig = sample_figure(rng, height, tuple(rng.uniform(-10, 74, 2)))
        drawn = np.zeros((64, 64), bool)
        for fill in (1, 250):  # a pixel painted the fill colour shows up on the other canvas
            canvas = np.full((64, 64, 3), fill, np.uint8)
            draw_figure(canvas, fig, appearance=sample_appearance(rng))
            drawn |= (canvas != fill).any(-1)
        mask, total = silhouette(fig, (64, 64))
        np.testing.assert_array_equal(mask, drawn)
        assert total >= mask.sum()


def test_default_set_renders(
    default_set: Path, skeleton: Skeleton, synth_cfg: RenderConfig
) -> None:
    cfg = synth_cfg
    grid = SynthConfig().image_size // cfg.stride
    for name, field in (("train", "keypoints"), ("train_clean", "keypoints_all")):
        records = load_coco(
            default_set / "annotations" / f"person_keypoints_{name}.json", keypoint_field=field
        )
        assert len(records) == 12
        for rec in records:
            parts = skeleton.from_coco(rec.keypoints)
            heat, paf = render_targets(
                parts, cfg=cfg, skeleton=skeleton, image_hw=(rec.height, rec.width)
            )
            assert heat.shape == (skeleton.num_heatmaps, grid, grid)
            assert paf.shape == (skeleton.num_pafs, grid, grid)
            assert np.isfinite(heat).all() and np.isfinite(paf).all()
            assert heat.min() >= 0 and heat.max() <= 1


def test_cli_writes_dataset_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "set"
    result = CliRunner().invoke(
        cli, ["synth", str(out), "--train", "3", "--val", "2", "--seed", "4", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "removed: out of image" in result.output
    assert len(list((out / "train").glob("*.png"))) == 3
    assert len(list((out / "val").glob("*.png"))) == 2
    report = json.loads((out / "corruption.json").read_text())
    assert report["splits"]["val"]["images"] == 2
    assert report["config"]["missed_visible"] == SynthConfig().missed_visible

    figure = tmp_path / "fig.png"
    result = CliRunner().invoke(cli, ["synth-figure", str(out), "--out", str(figure), "--n", "2"])
    assert result.exit_code == 0, result.output
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--persons-per-image", "3..1"], "--persons-per-image: want a..b with 0 <= a <= b"),
        (["--persons-per-image", "two"], "--persons-per-image: want a..b (e.g. 1..4)"),
        (["--missed-visible", "-0.1"], "--missed-visible: rate must be in [0, 1], got -0.1"),
        (["--unannotated", "1.5"], "--unannotated: rate must be in [0, 1], got 1.5"),
        (["--train", "-3"], "--train: number of images must be >= 0, got -3"),
    ],
)
def test_cli_rejects_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "x"), "--quiet", *args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    assert message in lines[0]
    assert not (tmp_path / "x").exists()
