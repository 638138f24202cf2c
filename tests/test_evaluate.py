"""Evaluation: geometry, flip and multi-scale averaging, tiling, oracle AP, results files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from persons import make_person  # shared with test_decode

from lcdata.config import SYNTH_RENDER, RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.augment import PAD_VALUE, flip_maps
from lcdata.labels.decode import DecodeConfig
from lcdata.labels.scoring import METRIC_NAMES, coco_results, evaluate_results
from lcdata.labels.skeleton import Skeleton
from trainer.cli import cli
from trainer.draw import draw_persons, heatmap_overlay, paf_overlay
from trainer.evaluate import Protocol, oracle_maps, run_oracle, select_records, write_outputs
from trainer.infer import (
    Predictor,
    averaged_maps,
    model_geometry,
    predict_image,
    predict_maps,
    resize_for_model,
)


def coco_file(path: Path, images: list[tuple[int, int]], persons: list[np.ndarray]) -> Path:
    """A COCO keypoints file: images (h, w) with ids 1.., persons[i] (P, 17, 3) on image i+1."""
    anns = []
    for i, kps in enumerate(persons):
        for p in kps:
            on = p[:, 2] > 0
            lo, hi = p[on, :2].min(0), p[on, :2].max(0)
            box = [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": [float(v) for v in p.reshape(-1)],
                    "num_keypoints": int(on.sum()),
                    "bbox": box,
                    "area": box[2] * box[3],
                }
            )
    data = {
        "images": [
            {"id": i + 1, "file_name": f"{i:03d}.png", "height": h, "width": w}
            for i, (h, w) in enumerate(images)
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": [], "skeleton": []}],
    }
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("image_hw", [(480, 640), (427, 640), (640, 361), (100, 37)])
@pytest.mark.parametrize("scale", [0.5, 1.0, 1.5])
def test_resize_for_model(image_hw: tuple[int, int], scale: float) -> None:
    image = np.random.default_rng(0).integers(0, 256, (*image_hw, 3), dtype=np.uint8)
    padded, geo = resize_for_model(image, 368, 8, scale=scale)
    assert geo.resized_hw[0] == round(368 * scale)
    assert padded.shape[0] % 8 == 0 and padded.shape[1] % 8 == 0
    assert padded.shape[:2] == geo.padded_hw
    assert padded.shape[0] - geo.resized_hw[0] < 8 and padded.shape[1] - geo.resized_hw[1] < 8
    assert (padded[geo.resized_hw[0] :] == PAD_VALUE).all()
    assert (padded[:, geo.resized_hw[1] :] == PAD_VALUE).all()
    assert abs(geo.scale_xy[1] - geo.resized_hw[0] / image_hw[0]) < 1e-9
    pts = np.array([[0.0, 0.0], [image_hw[1] - 1, image_hw[0] - 1], [12.3, 7.7]], np.float32)
    np.testing.assert_allclose(geo.to_original(geo.to_input(pts)), pts, atol=1e-3)
    # pixel edges map onto pixel edges: the image's extent is the resized extent
    np.testing.assert_allclose(geo.to_input(np.array([-0.5, -0.5])), [-0.5, -0.5], atol=1e-6)


def test_oracle_flip_path_is_exact(skeleton: Skeleton) -> None:
    """Maps of the mirrored image, unflipped, equal the maps of the image (odd width too)."""
    rng = np.random.default_rng(1)
    kps = np.stack([make_person(rng, (60, 10), 150), make_person(rng, (150, 30), 120)])
    kps[1, 3] = 0  # a left ear missing on one person only: left/right must not be confused
    geo = model_geometry((200, 231), 128, 4)
    heat, paf = oracle_maps(kps, geo, cfg=SYNTH_RENDER, skeleton=skeleton)
    heat_f, paf_f = oracle_maps(kps, geo, cfg=SYNTH_RENDER, skeleton=skeleton, flip=True)
    assert np.abs(heat_f - heat).max() > 0.5  # the mirrored maps really differ
    heat_u, paf_u = flip_maps(heat_f, paf_f, skeleton=skeleton)
    np.testing.assert_allclose(heat_u, heat, atol=1e-6)
    np.testing.assert_allclose(paf_u, paf, atol=1e-6)
    twice = flip_maps(*flip_maps(heat, paf, skeleton=skeleton), skeleton=skeleton)
    np.testing.assert_array_equal(twice[0], heat)
    np.testing.assert_array_equal(twice[1], paf)


@pytest.mark.parametrize("scale", [0.5, 0.75, 1.5])
def test_resample_maps_aligns_cell_centres(scale: float) -> None:
    """A map holding each cell centre's original-image x (and y) is still that after
    resampling onto the grid of another scale (bilinear is exact on linear maps)."""
    from lcdata.labels.grid import cell_centers
    from trainer.infer import resample_maps

    image_hw, stride = (300, 410), 8
    src = model_geometry(image_hw, 368, stride, scale=scale)
    dst = model_geometry(image_hw, 368, stride, scale=1.0)

    def coordinate_maps(geo):
        h, w = geo.padded_hw[0] // stride, geo.padded_hw[1] // stride
        xs, ys = cell_centers(w, stride), cell_centers(h, stride)
        grid = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None]), axis=-1)
        return geo.to_original(grid).transpose(2, 0, 1)  # (2, h, w): original x, y

    ratio = (src.scale_xy[0] / dst.scale_xy[0], src.scale_xy[1] / dst.scale_xy[1])
    out_hw = (dst.padded_hw[0] // stride, dst.padded_hw[1] // stride)
    got = resample_maps(coordinate_maps(src), ratio_xy=ratio, out_hw=out_hw)
    want = coordinate_maps(dst)
    # compare where the target cell lies inside the source grid (the border repeats outside)
    inside = (want[0] < src.padded_hw[1] / src.scale_xy[0] - stride) & (
        want[1] < src.padded_hw[0] / src.scale_xy[1] - stride
    )
    inside &= (want[0] > stride / scale) & (want[1] > stride / scale)
    assert inside.sum() > 100
    np.testing.assert_allclose(got[:, inside], want[:, inside], atol=1e-3)


def test_multiscale_average_keeps_points(skeleton: Skeleton) -> None:
    """Maps from several scales resampled onto one grid decode to the same original points."""
    rng = np.random.default_rng(2)
    kps = make_person(rng, (150, 20), 260)[None]
    cfg = RenderConfig()

    def source(scale, geo, mirrored):
        return oracle_maps(kps, geo, cfg=cfg, skeleton=skeleton, flip=mirrored)

    heat, paf, geo = averaged_maps(
        source,
        (300, 330),
        input_size=cfg.input_size,
        stride=cfg.stride,
        scales=(0.5, 1.0, 1.5),
        flip=True,
        skeleton=skeleton,
    )
    assert geo == model_geometry((300, 330), cfg.input_size, cfg.stride, scale=1.5)
    from trainer.evaluate import decode_image

    (person,) = decode_image(
        heat, paf, geo, skeleton=skeleton, stride=cfg.stride, cfg=DecodeConfig()
    )
    want = skeleton.from_coco(kps[0])
    assert np.abs(person.keypoints[:, :2] - want[:, :2]).max() < 1.0


def _pooling_infer(stride: int, skeleton: Skeleton):
    """A local 'model': every output cell depends on its own stride x stride pixels only."""

    def infer(images: np.ndarray):
        n, h, w, _ = images.shape
        cells = images.reshape(n, h // stride, stride, w // stride, stride, 3).mean((2, 4)) / 255
        heat = np.repeat(cells[:, None, ..., 0], skeleton.num_heatmaps, axis=1)
        paf = np.repeat(cells[:, None, ..., 1], skeleton.num_pafs, axis=1)
        return heat.astype(np.float32), paf.astype(np.float32)

    return infer


@pytest.mark.parametrize("hw", [(64, 200), (48, 40), (128, 72)])
def test_tiled_prediction_equals_whole(hw: tuple[int, int], skeleton: Skeleton) -> None:
    """A teacher taking only T x T tiles sees every cell exactly once in effect."""
    image = np.random.default_rng(3).integers(0, 256, (*hw, 3), dtype=np.uint8)
    whole = Predictor(_pooling_infer(4, skeleton), stride=4, input_size=64, skeleton=skeleton)
    calls = []

    def square_only(images):
        assert images.shape[1:3] == (64, 64), images.shape
        calls.append(len(images))
        return _pooling_infer(4, skeleton)(images)

    tiled = Predictor(
        square_only, stride=4, input_size=64, skeleton=skeleton, tile_size=64, batch_size=2
    )
    want, got = predict_maps(whole, image), predict_maps(tiled, image)
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1], want[1], atol=1e-5)
    assert max(calls) <= 2


def test_predictor_output_shape_checked(skeleton: Skeleton) -> None:
    def bad(images):
        return np.zeros((1, 19, 3, 3)), np.zeros((1, 38, 3, 3))

    predictor = Predictor(bad, stride=8, input_size=64, skeleton=skeleton)
    with pytest.raises(
        LcposeError, match=r"gave heatmaps \(1, 19, 3, 3\).*expected \(1, 19, 8, 8\)"
    ):
        predict_maps(predictor, np.zeros((64, 64, 3), np.uint8))


def test_model_path_with_oracle_infer(skeleton: Skeleton) -> None:
    """A fake model that renders the truth for whatever resized/mirrored image it is given:
    scales, flips and the back-mapping to original pixels all check out."""
    rng = np.random.default_rng(4)
    image_hw = (150, 210)
    kps = np.stack([make_person(rng, (60, 8), 130), make_person(rng, (150, 12), 120)])
    image = np.full((*image_hw, 3), 30, np.uint8)
    cfg = RenderConfig(input_size=128, stride=4, sigma=4.0)

    def infer(images):
        heats, pafs = [], []
        for img in images:
            content = np.nonzero((img != PAD_VALUE[0]).any(-1))
            y1, x0, x1 = content[0].max() + 1, content[1].min(), content[1].max() + 1
            geo = model_geometry(image_hw, cfg.input_size, cfg.stride, scale=y1 / cfg.input_size)
            assert geo.padded_hw == img.shape[:2] and geo.resized_hw == (y1, x1 - x0)
            h, p = oracle_maps(kps, geo, cfg=cfg, skeleton=skeleton, flip=x0 > 0)
            heats.append(h)
            pafs.append(p)
        return np.stack(heats), np.stack(pafs)

    predictor = Predictor(infer, stride=4, input_size=128, skeleton=skeleton)
    persons, heat, paf, geo = predict_image(
        predictor, image, cfg=DecodeConfig(), scales=(1.0, 1.5), flip=True
    )
    assert heat.shape[1:] == (geo.padded_hw[0] // 4, geo.padded_hw[1] // 4)
    assert len(persons) == 2
    want = skeleton.from_coco(kps)
    for p in persons:
        err = min(np.abs(p.keypoints[:, :2] - w[:, :2]).max() for w in want)
        assert err < 1.0


def test_exact_ground_truth_scores_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    kps = [np.stack([make_person(rng, (50, 10), 120), make_person(rng, (150, 20), 100)])]
    ann = coco_file(tmp_path / "gt.json", [(200, 220)], kps)
    results = [
        {"image_id": 1, "category_id": 1, "keypoints": p.reshape(-1).tolist(), "score": 1.0}
        for p in kps[0]
    ]
    metrics = evaluate_results(ann, results)
    assert list(metrics) == list(METRIC_NAMES)
    assert metrics["AP"] == pytest.approx(1.0)
    assert evaluate_results(ann, []) == dict.fromkeys(METRIC_NAMES, 0.0)


def test_oracle_on_clean_synthetic_val_is_near_one(tmp_path: Path, skeleton: Skeleton) -> None:
    """The synthetic benchmark's clean truth, persons not tiny: oracle AP close to 1."""
    from lcdata.synth.scene import SynthConfig, generate_split

    generate_split(tmp_path, "val", 30, cfg=SynthConfig(small_prob=0.0, crowd=0.0), seed=0)
    ann = tmp_path / "annotations" / "person_keypoints_val_clean.json"
    records = select_records(ann, None)
    results = run_oracle(records, render=SYNTH_RENDER, skeleton=skeleton, cfg=DecodeConfig())
    metrics = evaluate_results(ann, results)
    assert metrics["AP"] >= 0.9  # measured 0.922 (occlusion by nearer persons limits it)
    assert metrics["AP50"] >= 0.95


def test_oracle_ap_on_coco_mini_val(coco_mini: Path, skeleton: Skeleton) -> None:
    """The bar of issue 6 is AP >= 0.55 at single scale; we measured 0.911, guard at 0.85."""
    ann = coco_mini / "annotations" / "person_keypoints_val2017.json"
    records = select_records(ann, None)
    results = run_oracle(records, render=RenderConfig(), skeleton=skeleton, cfg=DecodeConfig())
    metrics = evaluate_results(ann, results)
    assert metrics["AP"] >= 0.55
    assert metrics["AP"] >= 0.85


def test_results_file_loads_with_cocotools(tmp_path: Path, skeleton: Skeleton) -> None:
    from pycocotools.coco import COCO

    rng = np.random.default_rng(6)
    kps = [make_person(rng, (100, 10), 150)[None]]
    ann = coco_file(tmp_path / "gt.json", [(180, 200)], kps)
    records = select_records(ann, None)
    results = run_oracle(records, render=SYNTH_RENDER, skeleton=skeleton, cfg=DecodeConfig())
    metrics = evaluate_results(ann, results)
    protocol = Protocol(source="oracle", input_size=128, stride=4, num_images=1)
    metrics_path = write_outputs(tmp_path / "out" / "res.json", results, metrics, protocol)
    assert metrics_path == tmp_path / "out" / "res.metrics.json"
    loaded = COCO(str(ann)).loadRes(str(tmp_path / "out" / "res.json"))
    (det,) = loaded.loadAnns(loaded.getAnnIds())
    assert len(det["keypoints"]) == 51
    np.testing.assert_allclose(
        np.reshape(det["keypoints"], (17, 3))[:, :2], kps[0][0, :, :2], atol=0.1
    )
    body = json.loads(metrics_path.read_text())
    assert body["metrics"]["AP"] == pytest.approx(1.0)
    assert body["protocol"]["stride"] == 4 and body["protocol"]["source"] == "oracle"


def test_coco_results_drop_neck(skeleton: Skeleton) -> None:
    from lcdata.labels.decode import Person

    kps = np.zeros((18, 3), np.float32)
    kps[1] = (5, 6, 1)  # neck only
    kps[0] = (7, 8, 0.9)  # nose
    (entry,) = coco_results(3, [Person(kps, 0.25)], skeleton=skeleton)
    assert entry["image_id"] == 3 and entry["score"] == 0.25
    assert entry["keypoints"][:3] == [7.0, 8.0, 0.9]
    assert sum(entry["keypoints"][3:]) == 0


def test_pictures(skeleton: Skeleton) -> None:
    rng = np.random.default_rng(7)
    kps = make_person(rng, (100, 10), 150)[None]
    image = np.zeros((180, 200, 3), np.uint8)
    geo = model_geometry((180, 200), 128, 4)
    heat, paf = oracle_maps(kps, geo, cfg=SYNTH_RENDER, skeleton=skeleton)
    from trainer.evaluate import decode_image

    persons = decode_image(heat, paf, geo, skeleton=skeleton, stride=4, cfg=DecodeConfig())
    drawn = draw_persons(image, persons, skeleton=skeleton)
    hm = heatmap_overlay(image, heat, geo, stride=4, num_parts=skeleton.num_parts)
    pf = paf_overlay(image, paf, geo, stride=4)
    for picture in (drawn, hm, pf):
        assert picture.shape == image.shape and picture.dtype == np.uint8
    nose = np.round(kps[0, 0, :2]).astype(int)
    assert drawn[nose[1], nose[0]].sum() > 0 and hm[nose[1], nose[0]].sum() > 0
    assert drawn[5, 5].sum() == 0 and hm[5, 5].sum() == 0  # far from the person
    # a forearm pixel of the PAF picture is coloured, a corner is not
    mid = np.round((kps[0, 7, :2] + kps[0, 9, :2]) / 2).astype(int)
    assert pf[mid[1], mid[0]].sum() > 0 and pf[5, 5].sum() == 0


def test_cli_oracle_writes_results_and_metrics(coco_mini: Path, tmp_path: Path) -> None:
    ann = coco_mini / "annotations" / "person_keypoints_val2017.json"
    out = tmp_path / "eval" / "results.json"
    args = ["evaluate", "--oracle", str(ann), str(coco_mini / "val2017"), "--out", str(out)]
    result = CliRunner().invoke(cli, [*args, "--max-images", "5", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "AP " in result.output and "oracle: 5 images" in result.output
    body = json.loads((tmp_path / "eval" / "results.metrics.json").read_text())
    assert list(body["metrics"]) == list(METRIC_NAMES)
    assert body["protocol"]["num_images"] == 5 and body["protocol"]["render"]["stride"] == 8
    ids = {r["image_id"] for r in json.loads(out.read_text())}
    first5 = {img["id"] for img in json.loads(ann.read_text())["images"][:5]}
    assert ids and ids <= first5


def test_cli_usage_errors(tmp_path: Path) -> None:
    ann = coco_file(tmp_path / "gt.json", [(50, 50)], [np.zeros((0, 17, 3))])
    runner = CliRunner()
    result = runner.invoke(cli, ["evaluate", str(ann), str(tmp_path)])
    assert result.exit_code == 2 and "expected MODEL ANNOTATIONS IMAGE_DIR" in result.output
    result = runner.invoke(cli, ["evaluate", "--oracle", str(ann), str(tmp_path / "nope")])
    assert result.exit_code == 1 and "image directory not found" in result.output
    result = runner.invoke(cli, ["evaluate", "--oracle", str(ann), str(tmp_path), "--decode", "x"])
    assert result.exit_code == 1 and "--decode 'x': expected KEY=VALUE" in result.output
    result = runner.invoke(cli, ["evaluate", "--oracle", str(ann), str(tmp_path), "--scales", "0"])
    assert result.exit_code == 1 and "--scales: want positive numbers" in result.output


def test_cli_checkpoint_evaluate_and_predict(tmp_path: Path, skeleton: Skeleton) -> None:
    """A tiny (untrained) checkpoint runs through `evaluate` and `predict` end to end."""
    import torch

    from trainer.models import TinyPose

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = TinyPose(skeleton, 4)
    ckpt = tmp_path / "tiny.ckpt"
    torch.save(
        {
            "model": model.state_dict(),
            "model_name": "tiny",
            "stride": 4,
            "input_size": 64,
            "skeleton": skeleton.to_attrs(),
            "model_kwargs": {},
            "step": 5,
        },
        ckpt,
    )
    rng = np.random.default_rng(8)
    ann = coco_file(tmp_path / "gt.json", [(90, 120)], [make_person(rng, (60, 5), 80)[None]])
    cv2.imwrite(str(tmp_path / "000.png"), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    out = tmp_path / "r.json"
    runner = CliRunner()
    result = runner.invoke(
        cli, ["evaluate", str(ckpt), str(ann), str(tmp_path), "--out", str(out), "--flip"]
    )
    assert result.exit_code == 0, result.output
    body = json.loads((tmp_path / "r.metrics.json").read_text())
    assert body["protocol"]["model"]["step"] == 5 and body["protocol"]["flip"] is True
    assert body["protocol"]["input_size"] == 64 and body["protocol"]["tile_size"] is None
    result = runner.invoke(
        cli,
        ["predict", str(ckpt), str(tmp_path / "000.png"), "--out", str(tmp_path / "p"), "--maps"],
    )
    assert result.exit_code == 0, result.output
    for name in ("000.png", "000.heatmaps.png", "000.pafs.png"):
        assert cv2.imread(str(tmp_path / "p" / name)).shape == (90, 120, 3)
    keypoints = json.loads((tmp_path / "p" / "keypoints.json").read_text())
    assert keypoints["images"][0]["width"] == 120 and keypoints["protocol"]["stride"] == 4


def test_cli_teacher_is_tiled(tmp_path: Path, skeleton: Skeleton) -> None:
    """An exported teacher (square crops only) is evaluated through tiles, recorded as such."""
    import torch

    from trainer.export import export_teacher
    from trainer.models import TinyPose

    torch.manual_seed(0)
    torch.set_num_threads(1)
    teacher = tmp_path / "t.pt2"
    export_teacher(
        TinyPose(skeleton, 4),
        skeleton=skeleton,
        stride=4,
        input_size=64,
        model_name="tiny",
        out_path=teacher,
    )
    rng = np.random.default_rng(9)
    ann = coco_file(tmp_path / "gt.json", [(90, 150)], [make_person(rng, (60, 5), 80)[None]])
    cv2.imwrite(str(tmp_path / "000.png"), rng.integers(0, 256, (90, 150, 3), dtype=np.uint8))
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        cli, ["evaluate", str(teacher), str(ann), str(tmp_path), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    protocol = json.loads((tmp_path / "r.metrics.json").read_text())["protocol"]
    assert protocol["tile_size"] == 64 and protocol["model"]["kind"] == "teacher"
    assert len(protocol["model"]["sha256"]) == 64
