"""Disk planning and disk-full safety: estimates within 15%, refusal, ENOSPC mid-stage, resume."""

from __future__ import annotations

import errno
import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import lcdata.build.gt as gt_mod
import lcdata.build.one_pass as one_pass_mod
import lcdata.correction.write as write_mod
import lcdata.store.space as space
from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.build.one_pass import build_teacher_cache
from lcdata.cli import cli
from lcdata.config import PRESETS
from lcdata.correction.write import run_correct
from lcdata.errors import LcposeError
from lcdata.store.layout import read_attrs
from lcdata.store.space import SpaceEstimate, disk_bytes, human_bytes, pending_samples
from lcdata.synth.scene import SynthConfig, generate

SYNTH = PRESETS["synth"]
COCO = PRESETS["coco"]


def record_estimates(monkeypatch) -> list[SpaceEstimate]:
    """Collect every estimate the stages make (they report through `report_space`)."""
    seen: list[SpaceEstimate] = []
    real = space.report_space

    def recording(estimate: SpaceEstimate, **kw):
        seen.append(estimate)
        return real(estimate, **kw)

    for module in (space, one_pass_mod):
        monkeypatch.setattr(module, "report_space", recording)
    return seen


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, num_train=48, num_val=4, cfg=SynthConfig(), seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def synth_teacher(tmp_path_factory) -> Path:
    import torch

    from lcdata.labels.skeleton import CMU_SKELETON
    from trainer.export import export_teacher
    from trainer.models import TinyPose

    torch.manual_seed(0)
    model = TinyPose(CMU_SKELETON, SYNTH.stride, num_stages=1, width=16).eval()
    path = tmp_path_factory.mktemp("teacher") / "t.pt2"
    export_teacher(
        model,
        skeleton=CMU_SKELETON,
        stride=SYNTH.stride,
        input_size=SYNTH.input_size,
        model_name="tiny",
        out_path=path,
    )
    return path


def _train(data: Path) -> tuple[Path, Path]:
    return data / "annotations" / "person_keypoints_train.json", data / "train"


def test_pending_samples_counts_a_short_last_block() -> None:
    assert pending_samples([0, 1, 2], 20, 8) == 20
    assert pending_samples([0, 1], 20, 8) == 16
    assert pending_samples([2], 20, 8) == 4
    assert pending_samples([], 20, 8) == 0
    assert pending_samples([1], 16, 8) == 8


def test_human_bytes() -> None:
    assert human_bytes(999) == "999 B"
    assert human_bytes(1234567) == "1.2 MB"
    assert human_bytes(3.2e12) == "3.2 TB"


def test_estimates_within_15_percent(
    synth_data: Path, synth_teacher: Path, coco_mini: Path, tmp_path: Path, monkeypatch
) -> None:
    seen = record_estimates(monkeypatch)
    build = BuildConfig(views_per_image=2, samples_per_shard=16)
    # a synthetic 128 px cache with teacher, in one pass
    cache = tmp_path / "cache.zarr"
    build_teacher_cache(
        *_train(synth_data), cache, synth_teacher, render=SYNTH, build=build, workers=0,
        progress=False,
    )  # fmt: skip
    # a corrected store of it
    lc = tmp_path / "lc.zarr"
    run_correct(cache, lc, mode="max", progress=False, num_workers=1)
    # a COCO-MINI 368 px GT store
    gt = tmp_path / "gt.zarr"
    build_gt_store(
        coco_mini / "annotations" / "person_keypoints_val2017.json",
        coco_mini / "val2017",
        gt,
        render=COCO,
        build=BuildConfig(views_per_image=1, samples_per_shard=8),
        workers=1,
        progress=False,
    )
    assert [e.stage for e in seen] == ["gt + teacher", "correct max", "gt"]
    before_lc = {p for p in lc.rglob("*")}  # a corrected store references its inputs
    assert not any(p.name == "images" for p in before_lc)
    for estimate, store in zip(seen, (cache, lc, gt), strict=True):
        actual = disk_bytes(store)
        assert estimate.final_bytes == pytest.approx(actual, rel=0.15), (store, actual)
        assert estimate.samples == read_attrs(store)["num_samples"]


def test_refuses_when_it_will_not_fit(synth_data: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "s.zarr"
    monkeypatch.setattr(space, "free_bytes", lambda path: 10_000)
    build = BuildConfig(samples_per_shard=16)
    with pytest.raises(LcposeError, match=r"s\.zarr: not enough disk space for gt: needs about"):
        build_gt_store(*_train(synth_data), out, render=SYNTH, build=build, progress=False)
    assert not out.exists()  # a refused new store is removed: the disk is as it was
    # the CLI: one line, exit 1; --no-space-check writes anyway (and prints the estimate)
    args = [
        "build-teacher-cache", *map(str, _train(synth_data)), "--out", str(tmp_path / "c.zarr"),
        "--preset", "synth", "--samples-per-shard", "16", "--workers", "1",
    ]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1
    assert "not enough disk space for gt" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, [*args, "--no-space-check"])
    assert res.exit_code == 0, res.output
    assert "gt needs about" in res.output and "10.0 kB free" in res.output


def _enospc_at(monkeypatch, module, name: str, k: int) -> None:
    """Make the k-th call (0-based) of `module.name` raise ENOSPC, as a full disk would."""
    real = getattr(module, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == k + 1:
            raise OSError(errno.ENOSPC, "No space left on device", "/fake/c/0")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_disk_full_mid_build_then_resume_equals_uninterrupted(
    synth_data: Path, synth_teacher: Path, tmp_path: Path, monkeypatch
) -> None:
    build = BuildConfig(samples_per_shard=16)
    kw = {"render": SYNTH, "build": build, "progress": False}
    ref = tmp_path / "ref.zarr"
    build_gt_store(*_train(synth_data), ref, **kw)
    out = tmp_path / "s.zarr"
    _enospc_at(monkeypatch, gt_mod, "write_gt_block", 1)
    with pytest.raises(LcposeError) as err:
        build_gt_store(*_train(synth_data), out, **kw)
    msg = str(err.value)
    assert msg.startswith(f"{out}: build gt stopped, disk full: No space left on device")
    assert "resumable" in msg and "--resume" in msg and "\n" not in msg
    assert read_attrs(out)["complete"] is False
    monkeypatch.undo()
    build_gt_store(*_train(synth_data), out, resume=True, **kw)
    assert_same_store(out, ref)
    # the corrected store, disk full at its second block
    lc_ref, lc = tmp_path / "lc_ref.zarr", tmp_path / "lc.zarr"
    run_correct(ref, lc_ref, mode="gt", progress=False, num_workers=1)
    _enospc_at(monkeypatch, write_mod, "mark_block_done", 1)
    with pytest.raises(LcposeError, match=r"lc\.zarr: correct gt stopped, disk full"):
        run_correct(ref, lc, mode="gt", progress=False, num_workers=1)
    assert read_attrs(lc)["complete"] is False
    monkeypatch.undo()
    run_correct(ref, lc, mode="gt", resume=True, progress=False, num_workers=1)
    assert_same_store(lc, lc_ref)


def test_disk_full_in_the_teacher_pass_then_resume(
    synth_data: Path, synth_teacher: Path, tmp_path: Path, monkeypatch
) -> None:
    import lcdata.build.teacher_pass as tp
    from lcdata.build.teacher_pass import run_teacher_pass

    build = BuildConfig(samples_per_shard=16)
    ref = tmp_path / "ref.zarr"
    build_gt_store(*_train(synth_data), ref, render=SYNTH, build=build, progress=False)
    out = tmp_path / "s.zarr"
    shutil.copytree(ref, out)
    run_teacher_pass(ref, synth_teacher, progress=False)
    _enospc_at(monkeypatch, tp, "write_teacher_block", 1)
    with pytest.raises(LcposeError, match=r"s\.zarr: teacher pass stopped, disk full"):
        run_teacher_pass(out, synth_teacher, progress=False)
    assert read_attrs(out)["complete"] is False
    monkeypatch.undo()
    run_teacher_pass(out, synth_teacher, resume=True, progress=False)
    assert_same_store(out, ref)


def assert_same_store(a: Path, b: Path) -> None:
    """Same arrays, same values, same attributes except paths."""
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names_a = sorted(name for name, _ in ga.arrays()) + sorted(
        f"{g}/{n}" for g, sub in ga.groups() for n, _ in sub.arrays()
    )
    names_b = sorted(name for name, _ in gb.arrays()) + sorted(
        f"{g}/{n}" for g, sub in gb.groups() for n, _ in sub.arrays()
    )
    assert names_a == names_b
    for name in names_a:
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)
    attrs_a, attrs_b = read_attrs(a), read_attrs(b)
    assert attrs_a["complete"] is True and attrs_b["complete"] is True
    assert attrs_a.get("analytics") == attrs_b.get("analytics")


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 2 MB tmpfs mounted for the test (root only), grown later by `remount`."""
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_real_disk_full_on_a_small_tmpfs(synth_data: Path, tmp_path: Path, small_tmpfs) -> None:
    args = [
        "build-teacher-cache", *map(str, _train(synth_data)), "--preset", "synth",
        "--samples-per-shard", "8", "--views-per-image", "2", "--workers", "1",
    ]  # fmt: skip
    ref = tmp_path / "ref.zarr"
    assert CliRunner().invoke(cli, [*args, "--out", str(ref)]).exit_code == 0
    assert disk_bytes(ref) > 2_000_000  # it cannot fit in the tmpfs
    out = small_tmpfs / "s.zarr"
    # the estimate refuses up front ...
    res = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert res.exit_code == 1 and "not enough disk space for gt" in res.output
    # ... and forced, the disk fills up mid-build: one line, exit 1, resumable
    res = CliRunner().invoke(cli, [*args, "--out", str(out), "--no-space-check"])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if "Error" in line]
    assert len(lines) == 1 and lines[0].startswith(f"Error: {out}: build gt stopped, disk full")
    assert "Traceback" not in res.output
    assert read_attrs(out)["complete"] is False
    done = np.asarray(zarr.open_group(str(out), mode="r")["progress/gt"][:])
    assert 0 < done.sum() < len(done)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    res = CliRunner().invoke(cli, [*args, "--out", str(out), "--resume"])
    assert res.exit_code == 0, res.output
    assert_same_store(out, ref)


def test_estimate_line_names_store_and_free_space() -> None:
    e = SpaceEstimate(Path("c.zarr"), "gt", 2_500_000_000, 1000, 40_100_000_000)
    assert e.line() == (
        "c.zarr: gt needs about 2.5 GB for 1000 samples (2.5 MB each, measured on one block); "
        "40.1 GB free"
    )
    assert e.fits and not SpaceEstimate(Path("c"), "gt", 100, 1, 101).fits
