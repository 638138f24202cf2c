"""The teacher pass: aligned outputs, resume after a kill, slices, refusals, overwrite, CLI."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

import lcdata.build.teacher_pass as tp
from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.build.one_pass import build_teacher_cache
from lcdata.build.teacher import load_teacher
from lcdata.build.teacher_pass import predict_block, run_teacher_pass
from lcdata.cli import cli
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.skeleton import CMU_SKELETON, Skeleton
from lcdata.store.codec import quantize
from lcdata.store.layout import open_store, read_attrs, update_attrs
from trainer.export import export_teacher
from trainer.models import TinyPose

RENDER = RenderConfig(input_size=64, stride=4, sigma=3.0)
PER = 8  # samples per shard: COCO-MINI val gives 32 samples, 4 shards
BUILD = BuildConfig(views_per_image=1, samples_per_shard=PER)  # one view: samples = crops


def make_teacher(
    path: Path,
    seed: int,
    *,
    stride: int = 4,
    skeleton: Skeleton = CMU_SKELETON,
    nan: bool = False,
    bias: float = 0.0,
) -> Path:
    """Export a tiny teacher whose heads have random weights (zero heads would be trivial)."""
    torch.manual_seed(seed)
    model = TinyPose(skeleton, stride, num_stages=1, width=16).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stage in model.stages:
            for name in ("heatmaps", "pafs"):
                head = stage[name]
                head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.3)
                if nan:
                    head.bias.fill_(float("nan"))
                elif bias:
                    head.bias.fill_(bias)
    export_teacher(
        model,
        skeleton=skeleton,
        stride=stride,
        input_size=RENDER.input_size,
        model_name="tiny",
        out_path=path,
        extra={"seed": seed},
    )
    return path


@pytest.fixture(scope="module")
def val_files() -> tuple[Path, Path]:
    # module-scoped twin of conftest's `coco_mini` fixture (which is function-scoped)
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
    if not (root / "annotations").is_dir():
        message = f"COCO-MINI not found at {root}"
        if os.environ.get("LC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(message + " and LC_REQUIRE_SHARED_DATA=1")
        pytest.skip(message)
    return root / "annotations" / "person_keypoints_val2017.json", root / "val2017"


@pytest.fixture(scope="module")
def gt_store(tmp_path_factory, val_files) -> Path:
    out = tmp_path_factory.mktemp("gt") / "gt.zarr"
    build_gt_store(*val_files, out, render=RENDER, build=BUILD, progress=False)
    return out


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    return {"a": make_teacher(root / "a.pt2", 1), "b": make_teacher(root / "b.pt2", 2)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, gt_store: Path, teachers) -> Path:
    """An uninterrupted single-process pass of teacher a."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    shutil.copytree(gt_store, out)
    run_teacher_pass(out, teachers["a"], batch_size=3, progress=False)
    return out


def _copy(src: Path, tmp_path: Path, name: str = "s.zarr") -> Path:
    out = tmp_path / name
    shutil.copytree(src, out)
    return out


def _teacher_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    return g["teacher/heatmaps"][:], g["teacher/pafs"][:]


def _assert_same_teacher(a: Path, b: Path) -> None:
    for x, y in zip(_teacher_arrays(a), _teacher_arrays(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_outputs_are_the_quantised_predictions_of_each_crop(reference: Path, teachers) -> None:
    attrs = read_attrs(reference)
    assert attrs["complete"] is True and attrs["stages"] == ["gt", "teacher"]
    teacher = load_teacher(teachers["a"])
    assert attrs["teacher"]["sha256"] == teacher.sha256
    assert attrs["teacher"]["model_name"] == "tiny"
    assert attrs["teacher"]["meta"]["extra"] == {"seed": 1}
    assert attrs["teacher"]["path"] == str(teachers["a"].resolve())
    g = zarr.open_group(str(reference), mode="r")
    assert g["teacher/heatmaps"].chunks == (PER, 19, 16, 16)  # one chunk per shard
    assert g["teacher/heatmaps"].shards is None
    assert np.asarray(g["progress/teacher"][:]).tolist() == [1, 1, 1, 1]
    heat, pafs = _teacher_arrays(reference)
    images = g["images"][:]
    # batches of 3 within each shard, as the pass ran them
    for s in range(4):
        crops = images[s * PER : (s + 1) * PER]
        want_h, want_p = predict_block(teacher, crops, batch_size=3, where="test")
        np.testing.assert_array_equal(heat[s * PER : (s + 1) * PER], quantize(want_h))
        np.testing.assert_array_equal(pafs[s * PER : (s + 1) * PER], quantize(want_p))
    assert np.abs(pafs.astype(np.float32)).max() > 0.1  # not a comparison between zeros
    assert len(np.unique(heat)) > 100


def _interrupt_inference_at(monkeypatch, call: int) -> None:
    """Ctrl-C (KeyboardInterrupt) during the `call`-th block inference of a teacher pass."""
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return predict_block(*args, **kwargs)

    monkeypatch.setattr(tp, "predict_block", dying)


def test_resume_after_a_kill_equals_an_uninterrupted_pass(
    gt_store: Path, teachers, reference: Path, tmp_path: Path, monkeypatch
) -> None:
    out = _copy(gt_store, tmp_path)
    # the first call measures one block for the space estimate; Ctrl-C during the third
    # block's inference
    _interrupt_inference_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        run_teacher_pass(out, teachers["a"], batch_size=3, progress=False)
    monkeypatch.setattr(tp, "predict_block", predict_block)
    attrs = read_attrs(out)
    assert attrs["complete"] is False and "teacher" in attrs["stages"]
    done = np.asarray(zarr.open_group(str(out), mode="r")["progress/teacher"][:])
    assert done.tolist() == [1, 1, 0, 0]  # the two shards inferred before the kill were written
    assert not list(out.glob(".lcpose-lock*"))
    with pytest.raises(LcposeError, match=r"this teacher's outputs \(2/4 blocks\); pass --resume"):
        run_teacher_pass(out, teachers["a"], progress=False)
    attrs = run_teacher_pass(out, teachers["a"], batch_size=3, resume=True, progress=False)
    assert attrs["complete"] is True
    _assert_same_teacher(out, reference)


def test_two_slices_fill_one_store(gt_store: Path, teachers, reference: Path, tmp_path) -> None:
    out = _copy(gt_store, tmp_path)
    attrs = run_teacher_pass(out, teachers["a"], batch_size=3, work_slice=(1, 2), progress=False)
    assert attrs["complete"] is False
    done = np.asarray(zarr.open_group(str(out), mode="r")["progress/teacher"][:])
    assert done.tolist() == [0, 1, 0, 1]
    with pytest.raises(LcposeError, match="incomplete"):
        open_store(out)
    # the second slice joins the store without --resume (slices share it)
    attrs = run_teacher_pass(out, teachers["a"], batch_size=3, work_slice=(0, 2), progress=False)
    assert attrs["complete"] is True
    _assert_same_teacher(out, reference)
    g = zarr.open_group(str(reference), mode="r")
    np.testing.assert_array_equal(zarr.open_group(str(out))["gt/pafs"][:], g["gt/pafs"][:])


def test_a_slice_cannot_join_with_another_teacher(gt_store: Path, teachers, tmp_path) -> None:
    out = _copy(gt_store, tmp_path)
    run_teacher_pass(out, teachers["a"], work_slice=(0, 2), progress=False)
    with pytest.raises(LcposeError, match="already holds outputs of teacher .*a.pt2"):
        run_teacher_pass(out, teachers["b"], work_slice=(1, 2), progress=False)


def test_refuses_teacher_of_another_stride_or_skeleton(gt_store: Path, tmp_path: Path) -> None:
    out = _copy(gt_store, tmp_path)
    stride8 = make_teacher(tmp_path / "s8.pt2", 3, stride=8)
    with pytest.raises(LcposeError, match=r"does not fit .*: stride 8 != .* stride 4"):
        run_teacher_pass(out, stride8, progress=False)
    # drop the two redundant shoulder-ear limbs (a mirror pair, so the skeleton stays valid)
    short = dataclasses.replace(CMU_SKELETON, limbs=CMU_SKELETON.limbs[:-2])
    other = make_teacher(tmp_path / "sk.pt2", 4, skeleton=short)
    with pytest.raises(LcposeError, match=r"skeleton differs \(teacher 18 parts/17 limbs"):
        run_teacher_pass(out, other, progress=False)
    g = zarr.open_group(str(out), mode="r")
    assert "teacher" not in g and read_attrs(out)["complete"] is True  # untouched


def test_refuses_a_store_whose_gt_is_unfinished(gt_store: Path, teachers, tmp_path) -> None:
    out = _copy(gt_store, tmp_path)
    group = zarr.open_group(str(out), mode="r+")
    group["progress/gt"][2] = 0
    update_attrs(group, complete=False)
    with pytest.raises(LcposeError, match=r"GT stage incomplete \(1 blocks"):
        run_teacher_pass(out, teachers["a"], progress=False)
    # the slice that does not contain shard 2 may run
    attrs = run_teacher_pass(out, teachers["a"], work_slice=(1, 2), progress=False)
    assert attrs["complete"] is False


def test_overwrite_teacher_semantics(
    gt_store: Path, teachers, reference: Path, tmp_path: Path
) -> None:
    out = _copy(reference, tmp_path)  # holds teacher a's outputs
    with pytest.raises(LcposeError, match="pass --overwrite-teacher to replace them"):
        run_teacher_pass(out, teachers["b"], progress=False)
    with pytest.raises(LcposeError, match="pass --overwrite-teacher"):
        run_teacher_pass(out, teachers["b"], resume=True, progress=False)
    with pytest.raises(LcposeError, match="overwrite_teacher: cannot be combined with a work"):
        run_teacher_pass(out, teachers["b"], overwrite=True, work_slice=(0, 2), progress=False)
    _assert_same_teacher(out, reference)  # refusals changed nothing
    attrs = run_teacher_pass(out, teachers["b"], batch_size=3, overwrite=True, progress=False)
    assert attrs["complete"] is True
    assert attrs["teacher"]["sha256"] == load_teacher(teachers["b"]).sha256
    only_b = _copy(gt_store, tmp_path, "b.zarr")
    run_teacher_pass(only_b, teachers["b"], batch_size=3, progress=False)
    _assert_same_teacher(out, only_b)
    assert not np.array_equal(_teacher_arrays(out)[0], _teacher_arrays(reference)[0])


def test_nan_outputs_stop_the_pass(gt_store: Path, tmp_path: Path) -> None:
    out = _copy(gt_store, tmp_path)
    broken = make_teacher(tmp_path / "nan.pt2", 5, nan=True)
    with pytest.raises(LcposeError, match=r"block 0, samples from 0: .*NaN/inf"):
        run_teacher_pass(out, broken, progress=False)
    # caught on the block measured for the space estimate: the GT store is left as it was
    assert read_attrs(out)["complete"] is True and "teacher" not in read_attrs(out)["stages"]
    assert "progress/teacher" not in zarr.open_group(str(out), mode="r")


def test_outputs_beyond_float16_stop_the_pass(gt_store: Path, tmp_path: Path) -> None:
    out = _copy(gt_store, tmp_path)
    huge = make_teacher(tmp_path / "huge.pt2", 5, bias=1e5)
    with pytest.raises(LcposeError, match=r"block 0: teacher heatmaps exceed the float16 range"):
        run_teacher_pass(out, huge, progress=False)
    assert read_attrs(out)["complete"] is False
    assert not np.asarray(zarr.open_group(str(out))["progress/teacher"][:]).any()


def test_cli_adds_a_teacher_and_builds_in_one_pass(
    gt_store: Path, val_files, teachers, reference: Path, tmp_path: Path
) -> None:
    out = _copy(gt_store, tmp_path)
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "build-teacher-cache",
            "--out",
            str(out),
            "--teacher",
            str(teachers["a"]),
            "--batch-size",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "teacher a.pt2 written; store complete" in result.output
    _assert_same_teacher(out, reference)
    one = tmp_path / "one.zarr"
    result = runner.invoke(
        cli,
        [
            "build-teacher-cache",
            *map(str, val_files),
            "--out",
            str(one),
            "--teacher",
            str(teachers["a"]),
            "--input-size",
            "64",
            "--stride",
            "4",
            "--sigma",
            "3",
            "--samples-per-shard",
            str(PER),
            "--views-per-image",
            "1",
            "--batch-size",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert read_attrs(one)["complete"] is True
    _assert_same_teacher(one, reference)
    result = runner.invoke(
        cli, ["build-teacher-cache", "--out", str(out), "--teacher", str(teachers["b"])]
    )
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "--overwrite-teacher" in result.output


def _assert_same_store(a: Path, b: Path) -> None:
    """Every per-sample array and progress record equal (the attributes' paths differ)."""
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names = ["images", "masks", "gt/heatmaps", "gt/pafs", "teacher/heatmaps", "teacher/pafs"]
    names += ["meta/image_id", "meta/affine", "meta/flipped", "meta/view"]
    names += ["progress/gt", "progress/teacher"]
    for name in names:
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)
    assert read_attrs(a)["complete"] is True and read_attrs(b)["complete"] is True


@pytest.mark.parametrize("killed", ["nothing", "gt_half", "teacher_half"])
def test_one_pass_build_equals_gt_build_then_teacher_pass(
    val_files, teachers, reference: Path, tmp_path: Path, killed: str
) -> None:
    """The fused build writes the same store as the two passes, also when resuming a store
    killed in the GT stage or between GT and teacher outputs."""
    kw = {"render": RENDER, "build": BUILD, "batch_size": 3}
    out = tmp_path / "one.zarr"
    if killed == "nothing":
        attrs = build_teacher_cache(*val_files, out, teachers["a"], progress=False, **kw)
    else:
        attrs = build_teacher_cache(*val_files, out, teachers["a"], progress=False, **kw)
        group = zarr.open_group(str(out), mode="r+")
        stage = "gt" if killed == "gt_half" else "teacher"
        for shard in (1, 3):  # unmark and scribble: resuming must rewrite these shards
            group[f"progress/{stage}"][shard] = 0
            if stage == "teacher":
                group["teacher/heatmaps"][shard * PER : (shard + 1) * PER] = 7.0
            else:
                group["gt/heatmaps"][shard * PER : (shard + 1) * PER] = 7.0
                group["progress/teacher"][shard] = 0
        update_attrs(group, complete=False)
        with pytest.raises(LcposeError, match="output exists; pass --resume"):
            build_teacher_cache(*val_files, out, teachers["a"], progress=False, **kw)
        attrs = build_teacher_cache(
            *val_files, out, teachers["a"], progress=False, resume=True, **kw
        )
    assert attrs["stages"] == ["gt", "teacher"] and attrs["teacher"]["model_name"] == "tiny"
    _assert_same_store(out, reference)


def test_one_pass_build_checks_the_teacher_before_writing(val_files, tmp_path: Path) -> None:
    wrong = make_teacher(tmp_path / "s8.pt2", 3, stride=8)
    out = tmp_path / "one.zarr"
    with pytest.raises(LcposeError, match="stride"):
        build_teacher_cache(*val_files, out, wrong, render=RENDER, build=BUILD)
    assert not out.exists()


def test_bf16_teacher_pass_is_recorded_close_to_fp32_and_never_mixed(
    gt_store: Path, teachers, reference: Path, tmp_path: Path, monkeypatch
) -> None:
    out = _copy(gt_store, tmp_path)
    _interrupt_inference_at(monkeypatch, 2)  # after the space estimate, in the first block
    with pytest.raises(KeyboardInterrupt):
        run_teacher_pass(out, teachers["a"], batch_size=3, precision="bf16", progress=False)
    monkeypatch.setattr(tp, "predict_block", predict_block)
    assert read_attrs(out)["teacher"]["precision"] == "bf16"
    # resuming in another precision would mix two kinds of maps in one array
    with pytest.raises(LcposeError, match="computed in bf16, this pass runs in fp32"):
        run_teacher_pass(out, teachers["a"], resume=True, progress=False)
    run_teacher_pass(
        out, teachers["a"], batch_size=3, precision="bf16", resume=True, progress=False
    )
    assert read_attrs(out)["complete"] is True
    (h16, p16), (h32, p32) = _teacher_arrays(out), _teacher_arrays(reference)
    assert read_attrs(reference)["teacher"]["precision"] == "fp32"
    assert not np.array_equal(h16, h32)  # the forward really ran in bfloat16 ...
    for a, b in ((h16, h32), (p16, p32)):  # ... and stays within its 8-bit mantissa
        a, b = a.astype(np.float32), b.astype(np.float32)
        assert np.abs(a - b).max() <= 0.02 * np.abs(b).max() + 1e-3


def test_unknown_teacher_precision_is_refused(teachers) -> None:
    with pytest.raises(LcposeError, match="teacher precision 'fp8' unknown"):
        load_teacher(teachers["a"], precision="fp8")


def test_tta_pass_stores_the_averaged_views_and_is_never_mixed(
    gt_store: Path, teachers, reference: Path, tmp_path: Path, monkeypatch
) -> None:
    from lcdata.build.tta import TTAConfig, tta_predict

    out = _copy(gt_store, tmp_path)
    cfg = TTAConfig(flip=True)
    _interrupt_inference_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_teacher_pass(out, teachers["a"], batch_size=3, tta=cfg, progress=False)
    monkeypatch.setattr(tp, "predict_block", predict_block)
    assert read_attrs(out)["teacher"]["tta"] == {"flip": True, "scales": []}
    with pytest.raises(LcposeError, match="made with --tta flip, this pass uses --tta off"):
        run_teacher_pass(out, teachers["a"], resume=True, progress=False)
    run_teacher_pass(out, teachers["a"], batch_size=3, tta=cfg, resume=True, progress=False)
    teacher = load_teacher(teachers["a"])
    images = np.asarray(open_store(out)["images"][:])
    want = tta_predict(teacher.predict, images, cfg, skeleton=teacher.skeleton, stride=4)
    got = _teacher_arrays(out)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, quantize(b))
    # a random-weight teacher is not flip-equivariant: TTA changed what was stored
    assert not np.array_equal(got[0], _teacher_arrays(reference)[0])
