"""Export round trip (exported == eager), teacher metadata, compatibility checks, bad files."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lcdata.build.teacher import META_FILE, check_compatible, load_teacher
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.skeleton import CMU_SKELETON
from trainer.checkpoint import model_from_checkpoint
from trainer.cli import cli
from trainer.export import export_teacher
from trainer.models import TinyPose, num_params, preprocess

SIZE, STRIDE = 64, 4  # tiny at 64 px, stride 4: 16 x 16 maps, exports in about a second


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial weights and BatchNorm statistics (zero heads would make any test pass)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
    return model


def _tiny(seed: int = 0) -> TinyPose:
    return _randomise(TinyPose(CMU_SKELETON, STRIDE), seed).eval()


def _crops(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _export(model, path: Path, **extra) -> dict:
    return export_teacher(
        model,
        skeleton=CMU_SKELETON,
        stride=STRIDE,
        input_size=SIZE,
        model_name="tiny",
        out_path=path,
        extra=extra or None,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[TinyPose, Path]:
    torch.manual_seed(0)
    model = _tiny()
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt2"
    _export(model, path, step=7)
    return model, path


@pytest.mark.parametrize("batch", [1, 3])
def test_exported_equals_eager(exported, batch: int) -> None:
    model, path = exported
    teacher = load_teacher(path)
    images = _crops(batch, seed=batch)
    heatmaps, pafs = teacher.predict(images)
    with torch.no_grad():
        want_hm, want_paf = model(preprocess(torch.from_numpy(images)))[-1]
    assert heatmaps.dtype == pafs.dtype == np.float32
    assert heatmaps.shape == (batch, 19, SIZE // STRIDE, SIZE // STRIDE)
    assert pafs.shape == (batch, 38, SIZE // STRIDE, SIZE // STRIDE)
    assert np.abs(want_paf.numpy()).max() > 0.1  # the comparison is not between zeros
    np.testing.assert_allclose(heatmaps, want_hm.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(pafs, want_paf.numpy(), atol=1e-5, rtol=0)


def test_teacher_reads_metadata(exported) -> None:
    model, path = exported
    teacher = load_teacher(path)
    assert teacher.skeleton == CMU_SKELETON
    assert (teacher.stride, teacher.input_size, teacher.grid_size) == (STRIDE, SIZE, 16)
    assert teacher.meta["model_name"] == "tiny"
    assert teacher.meta["num_params"] == num_params(model)
    assert teacher.meta["model_kwargs"] == {"num_stages": 2, "width": 64}
    assert teacher.meta["extra"] == {"step": 7}
    assert teacher.meta["format_version"] == 1
    assert teacher.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_predict_validates_input(exported) -> None:
    teacher = load_teacher(exported[1])
    with pytest.raises(LcposeError, match=r"expects crops of shape \(N, 64, 64, 3\), got"):
        teacher.predict(_crops(1, 0, size=32))
    with pytest.raises(LcposeError, match="expects uint8 crops, got float32"):
        teacher.predict(_crops(1, 0).astype(np.float32))
    heatmaps, pafs = teacher.predict(_crops(0, 0))
    assert heatmaps.shape == (0, 19, 16, 16) and pafs.shape == (0, 38, 16, 16)


def test_export_restores_training_mode(tmp_path) -> None:
    model = _tiny().train()
    _export(model, tmp_path / "t.pt2")
    assert model.training
    assert not list(tmp_path.glob("*.tmp*"))  # the temporary file was renamed


def test_export_refuses_size_not_multiple_of_stride(tmp_path) -> None:
    with pytest.raises(LcposeError, match="input size 66 is not a multiple of stride 4"):
        export_teacher(
            _tiny(),
            skeleton=CMU_SKELETON,
            stride=4,
            input_size=66,
            model_name="tiny",
            out_path=tmp_path / "t.pt2",
        )


def test_check_compatible_accepts_the_matching_store(exported) -> None:
    teacher = load_teacher(exported[1])
    cfg = RenderConfig(input_size=SIZE, stride=STRIDE, sigma=4.0)
    check_compatible(teacher, skeleton=CMU_SKELETON, render_cfg=cfg, source="store.zarr")


def test_check_compatible_refuses_another_stride(exported) -> None:
    teacher = load_teacher(exported[1])
    cfg = RenderConfig(input_size=SIZE, stride=8)
    with pytest.raises(
        LcposeError, match=r"does not fit store.zarr: stride 4 != store.zarr stride 8$"
    ):
        check_compatible(teacher, skeleton=CMU_SKELETON, render_cfg=cfg, source="store.zarr")


def test_check_compatible_refuses_another_skeleton_and_size(exported) -> None:
    teacher = load_teacher(exported[1])
    fewer_limbs = dataclasses.replace(CMU_SKELETON, limbs=CMU_SKELETON.limbs[:-2])
    cfg = RenderConfig(input_size=128, stride=STRIDE)
    with pytest.raises(LcposeError) as err:
        check_compatible(teacher, skeleton=fewer_limbs, render_cfg=cfg, source="s.zarr")
    message = str(err.value)
    assert "\n" not in message
    assert "skeleton differs (teacher 18 parts/19 limbs, s.zarr 18 parts/17 limbs" in message
    assert "different limbs" in message
    assert "input size 64 != s.zarr input size 128" in message


def test_nan_output_is_refused(tmp_path) -> None:
    model = _tiny()
    with torch.no_grad():
        model.stages[-1]["pafs"].bias[3] = float("nan")
    _export(model, tmp_path / "nan.pt2")
    teacher = load_teacher(tmp_path / "nan.pt2")
    with pytest.raises(LcposeError, match=r"nan.pt2: pafs contain \d+ NaN/inf values"):
        teacher.predict(_crops(2, 0))


def test_missing_and_garbage_files(tmp_path) -> None:
    with pytest.raises(LcposeError, match="absent.pt2: teacher file not found"):
        load_teacher(tmp_path / "absent.pt2")
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(np.random.default_rng(0).bytes(1000))
    with pytest.raises(LcposeError, match="garbage.pt2: not an exported torch program"):
        load_teacher(garbage)


def test_program_without_metadata_is_refused(exported, tmp_path) -> None:
    program = torch.export.load(exported[1])
    torch.export.save(program, tmp_path / "bare.pt2")
    with pytest.raises(LcposeError, match=f"bare.pt2: exported program has no {META_FILE}"):
        load_teacher(tmp_path / "bare.pt2")
    torch.export.save(program, tmp_path / "other.pt2", extra_files={META_FILE: '{"format": 2}'})
    with pytest.raises(LcposeError, match="does not describe an lcpose teacher"):
        load_teacher(tmp_path / "other.pt2")


def _checkpoint(model: TinyPose, path: Path, **changes) -> Path:
    ckpt = {
        "model": model.state_dict(),
        "model_name": "tiny",
        "stride": STRIDE,
        "input_size": SIZE,
        "skeleton": CMU_SKELETON.to_attrs(),
        "model_kwargs": dict(model.model_kwargs),
        "step": 12,
        "optimizer": {},
    }
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


def test_model_from_checkpoint_round_trip(tmp_path) -> None:
    model = _tiny(seed=3)
    rebuilt, info = model_from_checkpoint(_checkpoint(model, tmp_path / "c.pt"))
    assert not rebuilt.training
    assert (info.model_name, info.stride, info.input_size, info.step) == ("tiny", 4, 64, 12)
    assert info.skeleton == CMU_SKELETON
    x = preprocess(torch.from_numpy(_crops(2, 1)))
    with torch.no_grad():
        for (h0, p0), (h1, p1) in zip(model(x), rebuilt(x), strict=True):
            assert torch.equal(h0, h1) and torch.equal(p0, p1)


def test_model_from_checkpoint_errors(tmp_path) -> None:
    model = _tiny()
    with pytest.raises(LcposeError, match="absent.pt: checkpoint file not found"):
        model_from_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage")
    with pytest.raises(LcposeError, match="garbage.pt: not a readable checkpoint"):
        model_from_checkpoint(tmp_path / "garbage.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(LcposeError, match=r"list.pt: not a checkpoint \(a list, not a dict\)"):
        model_from_checkpoint(tmp_path / "list.pt")
    torch.save({"model": {}}, tmp_path / "keys.pt")
    with pytest.raises(LcposeError, match="keys.pt: not a checkpoint: missing keys model_name"):
        model_from_checkpoint(tmp_path / "keys.pt")
    _checkpoint(model, tmp_path / "huge.pt", model_name="huge")
    with pytest.raises(LcposeError, match="checkpoint of unknown model 'huge'"):
        model_from_checkpoint(tmp_path / "huge.pt")
    _checkpoint(model, tmp_path / "stages.pt", model_kwargs={"num_stages": 3, "width": 64})
    with pytest.raises(LcposeError, match=r"weights do not fit model 'tiny'.*missing stages\.2"):
        model_from_checkpoint(tmp_path / "stages.pt")
    _checkpoint(model, tmp_path / "width.pt", model_kwargs={"num_stages": 2, "width": 32})
    with pytest.raises(LcposeError, match=r"weights do not fit model 'tiny'.*size mismatch"):
        model_from_checkpoint(tmp_path / "width.pt")


def test_export_cli_writes_a_teacher(tmp_path) -> None:
    model = _tiny(seed=5)
    ckpt = _checkpoint(model, tmp_path / "run.pt")
    out = tmp_path / "teacher.pt2"
    result = CliRunner().invoke(cli, ["export", str(ckpt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "model tiny" in result.output
    teacher = load_teacher(out)
    assert teacher.meta["extra"] == {"checkpoint": "run.pt", "step": 12}
    assert (teacher.stride, teacher.input_size, teacher.skeleton) == (4, 64, CMU_SKELETON)
    images = _crops(3, 2)
    with torch.no_grad():
        want = model(preprocess(torch.from_numpy(images)))[-1][0].numpy()
    np.testing.assert_allclose(teacher.predict(images)[0], want, atol=1e-5, rtol=0)


def test_export_cli_reports_a_bad_checkpoint(tmp_path) -> None:
    result = CliRunner().invoke(
        cli, ["export", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "t.pt2")]
    )
    assert result.exit_code == 1
    assert "Error: " in result.output and "absent.pt: checkpoint file not found" in result.output


def test_lcdata_teacher_does_not_import_trainer() -> None:
    import subprocess
    import sys

    code = (
        "import sys, lcdata.build.teacher; "
        "print([m for m in sys.modules if m.startswith('trainer')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
