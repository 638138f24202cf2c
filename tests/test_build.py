"""The GT store: schema, determinism, resume, refusal of bad input and of incomplete stores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import lcdata.build.gt as build_mod
from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.cli import cli
from lcdata.config import DEFAULT_VIEWS_PER_IMAGE, RenderConfig
from lcdata.errors import LcposeError
from lcdata.store.layout import ATTR_KEY, SCHEMA_VERSION, open_store, read_attrs
from lcdata.store.lock import write_lock

RENDER = RenderConfig(input_size=96, stride=8, sigma=4.0)
ARRAYS = [
    "images", "masks", "gt/heatmaps", "gt/pafs",
    "meta/image_id", "meta/affine", "meta/flipped", "meta/view",
]  # fmt: skip


@pytest.fixture
def val(coco_mini: Path) -> tuple[Path, Path]:
    return (
        coco_mini / "annotations" / "person_keypoints_val2017.json",
        coco_mini / "val2017",
    )


def _build(val, out: Path, **kw) -> dict:
    return build_gt_store(
        *val,
        out,
        render=RENDER,
        build=BuildConfig(views_per_image=2, seed=5, samples_per_shard=16),
        progress=False,
        **kw,
    )


def _assert_same(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)


def test_schema_shapes_and_attrs(val, tmp_path: Path) -> None:
    attrs = _build(val, tmp_path / "s.zarr")
    assert attrs["complete"] is True and attrs["schema_version"] == SCHEMA_VERSION
    n = attrs["num_samples"]
    assert n == 2 * 32  # 32 val images have a non-crowd person with labelled keypoints
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    expect = {
        "images": ((n, 96, 96, 3), "uint8"),
        "masks": ((n, 12, 12), "uint8"),
        "gt/heatmaps": ((n, 19, 12, 12), "float16"),
        "gt/pafs": ((n, 38, 12, 12), "float16"),
        "meta/image_id": ((n,), "int64"),
        "meta/affine": ((n, 2, 3), "float32"),
        "meta/flipped": ((n,), "bool"),
    }
    for name, (shape, dtype) in expect.items():
        assert g[name].shape == shape and str(g[name].dtype) == dtype, name
    assert g["images"].chunks == (16, 96, 96, 3) and g["images"].shards is None
    for key in ("skeleton", "render", "augment", "seed", "source", "samples_per_shard"):
        assert key in attrs
    assert attrs["render"]["stride"] == 8 and len(attrs["source"]["annotations_sha256"]) == 64
    # users read it with dask
    heat = da.from_zarr(str(tmp_path / "s.zarr"), component="gt/heatmaps")
    assert heat.shape == (n, 19, 12, 12)
    bg = heat[:, -1].astype(np.float32).compute()
    parts = heat[:, :-1].astype(np.float32).max(axis=1).compute()
    np.testing.assert_allclose(bg, 1 - parts, atol=2**-9)
    # values are on the 2^-9 grid
    h = g["gt/heatmaps"][:4].astype(np.float64)
    np.testing.assert_array_equal(h * 512, np.round(h * 512))


def test_crop_and_keypoints_stay_aligned(val, tmp_path: Path) -> None:
    """Stored affine replays the keypoints: GT peaks sit where the affine puts labelled parts."""
    from lcdata.labels.coco import load_coco
    from lcdata.labels.skeleton import CMU_SKELETON

    _build(val, tmp_path / "s.zarr")
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    records = {r.image_id: r for r in load_coco(val[0])}
    checked = 0
    for i in range(0, 40, 3):
        record = records[int(g["meta/image_id"][i])]
        affine = g["meta/affine"][i].astype(np.float64)
        parts = CMU_SKELETON.from_coco(record.keypoints)
        if g["meta/flipped"][i]:
            parts = parts[:, CMU_SKELETON.flip_permutation()]
        heat = g["gt/heatmaps"][i].astype(np.float32)
        for person in parts:
            for k, (x, y, v) in enumerate(person):
                cx, cy = affine @ [x, y, 1.0]
                cell = (int((cy - 3.5) / 8 + 0.5), int((cx - 3.5) / 8 + 0.5))
                if v > 0 and 8 <= cx < 88 and 8 <= cy < 88:
                    assert heat[k][cell] > 0.3, (i, k)  # within half a cell: >= exp(-1)
                    checked += 1
    assert checked > 20


def test_same_seed_same_store(val, tmp_path: Path) -> None:
    _build(val, tmp_path / "a.zarr")
    _build(val, tmp_path / "b.zarr", workers=1)
    _assert_same(tmp_path / "a.zarr", tmp_path / "b.zarr")


def test_interrupted_build_is_incomplete_then_resumes_identically(
    val, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build(val, tmp_path / "ref.zarr")
    calls = {"n": 0}
    real = build_mod.make_sample

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 40:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(build_mod, "make_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        _build(val, tmp_path / "s.zarr", workers=1)
    monkeypatch.setattr(build_mod, "make_sample", real)

    assert read_attrs(tmp_path / "s.zarr")["complete"] is False
    with pytest.raises(LcposeError, match="marked incomplete"):
        open_store(tmp_path / "s.zarr")
    done = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["progress/gt"][:]
    assert 0 < done.sum() < len(done)
    with pytest.raises(LcposeError, match="pass --resume"):
        _build(val, tmp_path / "s.zarr")
    attrs = _build(val, tmp_path / "s.zarr", resume=True)
    assert attrs["complete"] is True
    _assert_same(tmp_path / "ref.zarr", tmp_path / "s.zarr")


def test_two_slices_fill_one_store(val, tmp_path: Path) -> None:
    _build(val, tmp_path / "ref.zarr")
    first = _build(val, tmp_path / "s.zarr", work_slice=(0, 2))
    assert first["complete"] is False
    second = _build(val, tmp_path / "s.zarr", work_slice=(1, 2))
    assert second["complete"] is True
    _assert_same(tmp_path / "ref.zarr", tmp_path / "s.zarr")


def test_resume_refuses_another_config(val, tmp_path: Path) -> None:
    _build(val, tmp_path / "s.zarr")
    with pytest.raises(LcposeError, match="different 'render'"):
        build_gt_store(
            *val,
            tmp_path / "s.zarr",
            render=RenderConfig(input_size=128, stride=8),
            build=BuildConfig(views_per_image=2, seed=5, samples_per_shard=16),
            resume=True,
            progress=False,
        )


def test_lock_refuses_a_second_writer(val, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    with write_lock(out):
        with pytest.raises(LcposeError, match="another process is writing"):
            with write_lock(out):
                pass
        with pytest.raises(LcposeError, match="another process is writing"):
            with write_lock(out, work_slice=(0, 2)):
                pass
    with write_lock(out):  # released
        pass


def test_readers_refuse_foreign_and_newer_stores(tmp_path: Path) -> None:
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    with pytest.raises(LcposeError, match="not an lcpose store"):
        open_store(tmp_path / "foreign.zarr")
    g = zarr.open_group(str(tmp_path / "new.zarr"), mode="w")
    g.attrs[ATTR_KEY] = {"schema_version": SCHEMA_VERSION + 1, "complete": True}
    with pytest.raises(LcposeError, match="newer than this lcpose"):
        open_store(tmp_path / "new.zarr")
    with pytest.raises(LcposeError, match="not a zarr v3 store"):
        open_store(tmp_path / "missing.zarr")


# ---------------------------------------------------------------------------------------
# The command line


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_build_and_inspect(val, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    res = _cli(
        "build-teacher-cache", str(val[0]), str(val[1]), "--out", str(out),
        "--input-size", "96", "--stride", "8", "--sigma", "4", "--samples-per-shard", "32",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    n = 32 * DEFAULT_VIEWS_PER_IMAGE  # 32 val images with persons, the default K views each
    assert f"{n} samples of 96px" in res.output
    g = open_store(out)
    assert g["images"].shape == (n, 96, 96, 3) and g["images"][:].std() > 10
    assert read_attrs(out)["build"]["views_per_image"] == DEFAULT_VIEWS_PER_IMAGE
    res = _cli("inspect", str(out))
    assert res.exit_code == 0
    assert "gt/heatmaps" in res.output and f"({n}, 19, 12, 12)" in res.output
    res = _cli("inspect", str(out), "--json")
    summary = json.loads(res.output)
    means = summary["channels"]["gt/heatmaps"]["mean"]
    assert len(means) == 19 and means[-1] > 0.9 and max(means[:-1]) < 0.1


def test_cli_slices_and_the_deprecated_shard_alias_fill_the_same_store(val, tmp_path) -> None:
    common = ["--preset", "synth", "--input-size", "64", "--samples-per-shard", "8"]
    want = tmp_path / "whole.zarr"
    assert _cli("build-teacher-cache", *map(str, val), "--out", str(want), *common).exit_code == 0
    out = tmp_path / "sliced.zarr"
    first = _cli(
        "build-teacher-cache", *map(str, val), "--out", str(out), *common, "--slice", "0/2"
    )
    assert first.exit_code == 0 and "incomplete (other slices pending)" in first.output
    second = _cli(
        "build-teacher-cache", *map(str, val), "--out", str(out), *common, "--shard", "1/2"
    )
    assert second.exit_code == 0, second.output
    assert "--shard is deprecated, use --slice" in second.output and "complete" in second.output
    a, b = open_store(want), open_store(out)
    for name in ("images", "gt/heatmaps", "gt/pafs", "masks"):
        np.testing.assert_array_equal(a[name][:], b[name][:])
    assert read_attrs(out)["render"]["stride"] == 4  # the synth preset, input size overridden


def _bad_dataset(tmp_path: Path, val, mutate) -> tuple[Path, Path]:
    data = json.loads(val[0].read_text())
    images = tmp_path / "images"
    images.mkdir()
    data["images"] = data["images"][:6]
    ids = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    for im in data["images"]:
        shutil.copy(val[1] / im["file_name"], images / im["file_name"])
    mutate(data, images)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    return ann, images


def _first_with_keypoints(data: dict) -> dict:
    return next(a for a in data["annotations"] if a["num_keypoints"] > 0)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d, i: d.pop("annotations"), "missing field 'annotations'"),
        (
            lambda d, i: _first_with_keypoints(d).update(keypoints=[1, 2, 2]),
            "'keypoints' must be a list of 51 numbers, got 3",
        ),
        (
            lambda d, i: (i / d["images"][1]["file_name"]).unlink(),
            "is missing",
        ),
        (
            lambda d, i: (i / d["images"][1]["file_name"]).write_bytes(b"\xff\xd8 not a jpeg"),
            "not a readable image",
        ),
        (lambda d, i: d["images"][0].pop("height"), "missing field 'height'"),
    ],
)
def test_cli_bad_input_one_line_no_complete_store(val, tmp_path: Path, mutate, message) -> None:
    ann, images = _bad_dataset(tmp_path, val, mutate)
    out = tmp_path / "bad.zarr"
    res = CliRunner().invoke(
        cli,
        ["build-teacher-cache", str(ann), str(images), "--out", str(out), "--input-size", "96"],
    )
    assert res.exit_code == 1, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
    if out.exists() and (out / "zarr.json").exists():
        assert read_attrs(out)["complete"] is False


def test_cli_refuses_existing_output(val, tmp_path: Path) -> None:
    out = tmp_path / "x.zarr"
    out.mkdir()
    (out / "something").write_text("not a store")
    res = CliRunner().invoke(
        cli, ["build-teacher-cache", str(val[0]), str(val[1]), "--out", str(out)]
    )
    assert res.exit_code == 1 and "output exists" in res.output
    res = CliRunner().invoke(
        cli, ["build-teacher-cache", str(val[0]), str(val[1]), "--out", str(out), "--resume"]
    )
    assert res.exit_code == 1 and "not a zarr v3 store" in res.output
