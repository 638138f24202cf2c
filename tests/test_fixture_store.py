"""A store written by an older lcpose (commit 15edbee, before the sub-package redesign) still
inspects, corrects and trains: the committed fixture `fixtures/store_v1_cache.zarr`.

It was made by the old code from 6 synthetic 64 px images, 2 views each (12 samples of 32 px,
stride 4, blocks of 4), with a random tiny teacher's outputs; nothing here rewrites it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from lcdata.cli import cli as lcdata_cli
from lcdata.correction.rules import targets
from lcdata.store.codec import quantize
from lcdata.store.layout import StoreInfo
from trainer.cli import cli as trainer_cli

FIXTURE = Path(__file__).parent / "fixtures" / "store_v1_cache.zarr"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "cache.zarr"))


def test_old_store_header_reads(store: Path) -> None:
    info = StoreInfo.read(store)
    assert (info.kind, info.num_samples, info.samples_per_block, info.num_blocks) == (
        "cache",
        12,
        4,
        3,
    )
    assert info.attrs["schema_version"] == 1 and info.attrs["complete"] is True
    assert info.attrs["stages"] == ["gt", "teacher"]


def test_old_store_inspects(store: Path) -> None:
    res = CliRunner().invoke(lcdata_cli, ["inspect", str(store)])
    assert res.exit_code == 0, res.output
    for name in ("images", "gt/heatmaps", "teacher/pafs", "meta/affine"):
        assert name in res.output


def test_old_store_corrects_exactly(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "lc.zarr"
    args = ["correct", str(store), "--mode", "max", "--out", str(out)]
    res = CliRunner().invoke(lcdata_cli, args)
    assert res.exit_code == 0, res.output
    src, dst = zarr.open_group(str(store), mode="r"), zarr.open_group(str(out), mode="r")
    want = targets(
        src["gt/heatmaps"][:],
        src["gt/pafs"][:],
        src["teacher/heatmaps"][:],
        src["teacher/pafs"][:],
        mode="max",
    )
    np.testing.assert_array_equal(dst["target/heatmaps"][:], quantize(want.heatmaps))
    np.testing.assert_array_equal(dst["target/pafs"][:], quantize(want.pafs))


@pytest.mark.parametrize("which", ["cache", "corrected"])
def test_old_store_trains(store: Path, tmp_path: Path, which: str) -> None:
    train_on = store
    if which == "corrected":
        train_on = tmp_path / "lc.zarr"
        res = CliRunner().invoke(
            lcdata_cli, ["correct", str(store), "--mode", "max", "--out", str(train_on)]
        )
        assert res.exit_code == 0, res.output
    run = tmp_path / "run"
    args = ["fit", "--store", str(train_on), "--out", str(run), "--steps", "2", "--batch-size", "2"]
    args += ["--model-kwarg", "width=8", "--model-kwarg", "num_stages=1", "--quiet"]
    res = CliRunner().invoke(trainer_cli, args)
    assert res.exit_code == 0, res.output
    assert (run / "final.pt").is_file() and "2 steps" in res.output
