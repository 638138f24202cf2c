"""Reliability: kill -9 and resume, completion and refusals, one writer per store, determinism.

The kill tests run the real command lines in subprocesses and send SIGKILL once the store's
progress flags (or the run's log) show some work done, at a seeded-random point. Then they
check what a killed store must look like (not complete, refused by readers, a stale lock),
resume, and compare with an uninterrupted run: every array with np.array_equal (meta and
progress included) and the attributes; checkpoints tensor by tensor, optimizer state and step
included. If a process happens to finish before the kill lands, the comparison still holds.

All runs use one thread (OMP_NUM_THREADS=1 in subprocesses, torch.set_num_threads(1) here) so
that in-process references and subprocess runs do the same float operations in the same order.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

from lcdata.cli import cli as lcdata_cli
from lcdata.correction.write import run_correct
from lcdata.errors import LcposeError
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.store.inspect import array_paths
from lcdata.store.layout import SCHEMA_VERSION, finalize, open_store, read_attrs, update_attrs
from lcdata.store.lock import write_lock
from lcdata.store.training import open_training_store
from trainer.cli import cli as trainer_cli
from trainer.config import TrainConfig
from trainer.export import export_teacher
from trainer.fit import fit
from trainer.models import TinyPose

COCO_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"
# 32 labelled val images x 8 views = 256 samples in 64 shards of 4: a few seconds of work
VIEWS, PER = 8, 4
NUM_SAMPLES, NUM_SHARDS = 32 * VIEWS, 32 * VIEWS // PER
RENDER_ARGS = ["--input-size", "64", "--stride", "4", "--sigma", "3"]
BUILD_ARGS = [
    *RENDER_ARGS, "--samples-per-shard", str(PER), "--views-per-image", str(VIEWS),
    "--seed", "3", "--workers", "1",
]  # fmt: skip
FIT_ARGS = [
    "--steps", "24", "--checkpoint-every", "2", "--log-every", "1", "--workers", "0",
    "--batch-size", "4", "--lr", "1e-3", "--device", "cpu", "--model-kwarg", "num_stages=1",
    "--model-kwarg", "width=16", "--seed", "5", "--quiet",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# how long a killed-run test waits for its child to reach the kill point: generous, so that
# a machine busy with other work (a training beside the tests: the one-pass build got no
# block done in 120 s there) does not fail it; a child that hangs still fails, later
KILL_TIMEOUT_S = 600


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Refs:
    """Inputs and uninterrupted reference outputs shared by the tests of this module."""

    ann: Path
    images: Path
    teacher_file: Path
    gt: Path  # complete GT store
    cache: Path  # gt + teacher pass
    corrected: Path  # lcdata correct --mode max of `cache`
    run: Path  # trainer fit on `gt`


def _lcdata(*args: str) -> Any:
    return CliRunner().invoke(lcdata_cli, list(args), catch_exceptions=False)


def _trainer(*args: str) -> Any:
    return CliRunner().invoke(trainer_cli, list(args), catch_exceptions=False)


def make_teacher(path: Path, seed: int) -> Path:
    """A tiny exported teacher with random heads (zero heads would make `max` a no-op)."""
    torch.manual_seed(seed)
    model = TinyPose(CMU_SKELETON, 4, num_stages=1, width=16).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stage in model.stages:
            for name in ("heatmaps", "pafs"):
                head = stage[name]
                head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.3)
    export_teacher(
        model, skeleton=CMU_SKELETON, stride=4, input_size=64, model_name="tiny", out_path=path
    )
    return path


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> Refs:
    # module-scoped twin of conftest's `coco_mini` fixture (which is function-scoped)
    if not (COCO_MINI / "annotations").is_dir():
        if os.environ.get("LC_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"COCO-MINI not found at {COCO_MINI} and LC_REQUIRE_SHARED_DATA=1")
        pytest.skip(f"COCO-MINI not found at {COCO_MINI}")
    root = tmp_path_factory.mktemp("refs")
    ann = COCO_MINI / "annotations" / "person_keypoints_val2017.json"
    images = COCO_MINI / "val2017"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        teacher_file = make_teacher(root / "teacher.pt2", seed=7)
        gt, cache, corrected = root / "gt.zarr", root / "cache.zarr", root / "corrected.zarr"
        res = _lcdata("build-teacher-cache", str(ann), str(images), "--out", str(gt), *BUILD_ARGS)
        assert res.exit_code == 0, res.output
        shutil.copytree(gt, cache)
        res = _lcdata(
            "build-teacher-cache", "--out", str(cache), "--teacher", str(teacher_file),
            "--batch-size", "4",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        res = _lcdata("correct", str(cache), "--mode", "max", "--out", str(corrected))
        assert res.exit_code == 0, res.output
        run = root / "run"
        res = _trainer("fit", "--store", str(gt), "--out", str(run), *FIT_ARGS)
        assert res.exit_code == 0, res.output
    finally:
        torch.set_num_threads(threads)
    return Refs(ann, images, teacher_file, gt, cache, corrected, run)


# ---------------------------------------------------------------------------------------
# Helpers: kill at a point, compare stores and checkpoints


def _flags(store: Path, stage: str) -> int:
    """Shards of `stage` marked done: each progress flag is its own chunk file, written once
    the shard's arrays are (zarr writes files atomically: temporary file, then rename)."""
    try:
        return sum(name.isdigit() for name in os.listdir(store / "progress" / stage / "c"))
    except FileNotFoundError:
        return 0


def _log_rows(run: Path) -> int:
    try:
        return max(len((run / "log.csv").read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def _start(module: str, args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # the child gets its own copy of the file descriptor
        return subprocess.Popen(
            [sys.executable, "-m", module, *args], env=ENV, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_until(proc: subprocess.Popen, ready: Callable[[], bool], log: Path) -> None:
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while proc.poll() is None and not ready():
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"gave up waiting after {KILL_TIMEOUT_S} s:\n{log.read_text()[-2000:]}")
        time.sleep(0.002)


def run_and_kill(module: str, args: list[str], ready: Callable[[], bool], log: Path) -> bool:
    """Run `python -m module args`, SIGKILL it as soon as `ready()`; True if the kill landed
    (False when the process finished first, which must then have succeeded)."""
    proc = _start(module, args, log)
    _wait_until(proc, ready, log)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    assert rc in (0, -signal.SIGKILL), log.read_text()[-2000:]
    return rc == -signal.SIGKILL


def assert_same_store(a: Path, b: Path, *, ignore_attrs: tuple[str, ...] = ()) -> None:
    """Same arrays (names, shapes, dtypes, chunks, shards, values) and same attributes."""
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names = array_paths(ga)
    assert names == array_paths(gb)
    assert any(name.startswith("progress/") for name in names)
    for name in names:
        x, y = ga[name], gb[name]
        assert (x.shape, x.dtype, x.chunks, x.shards) == (y.shape, y.dtype, y.chunks, y.shards)
        assert np.array_equal(x[...], y[...]), name
    attrs_a, attrs_b = read_attrs(a), read_attrs(b)
    for key in ignore_attrs:
        attrs_a.get("correction", {}).pop(key, None)
        attrs_b.get("correction", {}).pop(key, None)
    assert attrs_a == attrs_b


def assert_same_tree(x: Any, y: Any, where: str = "") -> None:
    """Recursive equality: tensors with torch.equal (dtype and shape included)."""
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype, where
        assert torch.equal(x, y), where
    elif isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys(), where
        for key in x:
            assert_same_tree(x[key], y[key], f"{where}/{key}")
    elif isinstance(x, (list, tuple)):
        assert type(x) is type(y) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            assert_same_tree(u, v, f"{where}[{i}]")
    else:
        assert x == y, (where, x, y)


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _losses(run: Path) -> list[dict[str, str]]:
    """log.csv rows without the timing columns (data_s, step_s, wait_share: wall-clock)."""
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    timing = ("_s", "wait_share")
    return [{k: v for k, v in r.items() if not k.endswith(timing)} for r in rows]


def check_killed_store(out: Path, stage: str, *, total: int = NUM_SHARDS) -> None:
    """What a SIGKILLed writer leaves: not complete, refused by readers, a stale lock."""
    attrs = read_attrs(out)
    assert attrs["complete"] is False
    assert stage in attrs["stages"]
    done = int(np.asarray(zarr.open_group(str(out), mode="r")[f"progress/{stage}"][:]).sum())
    assert 0 < done < total
    with pytest.raises(LcposeError, match="store is marked incomplete"):
        open_store(out)
    with pytest.raises(LcposeError, match="store is marked incomplete"):
        open_training_store(out)
    lock = out / ".lcpose-lock"
    owner = json.loads(lock.read_text())  # the dead writer's lock is still there ...
    with pytest.raises(ProcessLookupError):
        os.kill(owner["pid"], 0)  # ... and names a process that no longer exists


# ---------------------------------------------------------------------------------------
# 1. Kill -9 at a random point, resume, compare with an uninterrupted run


def test_kill_gt_build_twice_then_resume(refs: Refs, tmp_path: Path) -> None:
    out, log = tmp_path / "gt.zarr", tmp_path / "log.txt"
    args = ["build-teacher-cache", str(refs.ann), str(refs.images), "--out", str(out)]
    args += BUILD_ARGS
    rng = np.random.default_rng(11)
    # killed, then killed again while resuming (the resume takes over the stale lock)
    for extra in ([], ["--resume"]):
        at = _flags(out, "gt") + int(rng.integers(3, 20))
        if run_and_kill("lcdata", args + extra, lambda at=at: _flags(out, "gt") >= at, log):
            check_killed_store(out, "gt")
    res = _lcdata(*args)  # without --resume an interrupted store is not touched
    assert res.exit_code == 1 and "output exists; pass --resume" in res.output
    # resumed in this process: the lock names the killed one, so it is stale and taken over
    res = _lcdata(*args, "--resume")
    assert res.exit_code == 0, res.output
    assert not list(out.glob(".lcpose-lock*"))
    assert read_attrs(out)["complete"] is True
    assert_same_store(out, refs.gt)


def test_kill_teacher_pass_then_resume(refs: Refs, tmp_path: Path) -> None:
    out, log = tmp_path / "cache.zarr", tmp_path / "log.txt"
    shutil.copytree(refs.gt, out)
    args = ["build-teacher-cache", "--out", str(out), "--teacher", str(refs.teacher_file)]
    args += ["--batch-size", "4"]
    at = int(np.random.default_rng(12).integers(2, NUM_SHARDS // 2))
    if run_and_kill("lcdata", args, lambda: _flags(out, "teacher") >= at, log):
        check_killed_store(out, "teacher")
        assert "teacher" in zarr.open_group(str(out), mode="r")
    res = _lcdata(*args, "--resume")
    assert res.exit_code == 0, res.output
    assert not list(out.glob(".lcpose-lock*"))
    assert read_attrs(out)["complete"] is True
    assert_same_store(out, refs.cache)


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (Linux /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_one_pass_build_then_resume(refs: Refs, tmp_path: Path) -> None:
    """Kill -9 the one-pass build (GT in worker processes, teacher in the main one): the
    workers exit with it, and the resumed store equals GT build + teacher pass."""
    out, log = tmp_path / "cache.zarr", tmp_path / "log.txt"
    args = ["build-teacher-cache", str(refs.ann), str(refs.images), "--out", str(out)]
    args += [*BUILD_ARGS, "--teacher", str(refs.teacher_file), "--batch-size", "4"]
    at = int(np.random.default_rng(14).integers(2, NUM_SHARDS // 2))
    proc = _start("lcdata", args, log)
    _wait_until(proc, lambda: _flags(out, "teacher") >= at, log)
    workers = _children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    rc = proc.wait()
    assert rc in (0, -signal.SIGKILL), log.read_text()[-2000:]
    if rc == -signal.SIGKILL:
        assert workers, "the one-pass build renders in worker processes"
        check_killed_store(out, "teacher")
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        alive = [w for w in workers if Path(f"/proc/{w}").exists()]
        assert not alive, f"worker processes outlived the killed build: {alive}"
    res = _lcdata(*args, "--resume")
    assert res.exit_code == 0, res.output
    assert read_attrs(out)["complete"] is True
    assert_same_store(out, refs.cache)


def test_kill_correct_then_resume(refs: Refs, tmp_path: Path) -> None:
    out, log = tmp_path / "corrected.zarr", tmp_path / "log.txt"
    args = ["correct", str(refs.cache), "--mode", "max", "--out", str(out), "--no-progress"]
    at = int(np.random.default_rng(13).integers(2, NUM_SHARDS // 2))
    if run_and_kill("lcdata", args, lambda: _flags(out, "target") >= at, log):
        check_killed_store(out, "target")
    res = _lcdata(*args, "--resume")
    assert res.exit_code == 0, res.output
    assert not list(out.glob(".lcpose-lock*"))
    assert read_attrs(out)["complete"] is True
    # the relative path to the source depends on where the output folder is
    assert_same_store(out, refs.corrected, ignore_attrs=("source_store_relative",))


def test_kill_fit_then_resume(refs: Refs, tmp_path: Path) -> None:
    run, log = tmp_path / "run", tmp_path / "log.txt"
    args = ["fit", "--store", str(refs.gt), "--out", str(run), *FIT_ARGS]
    at = int(np.random.default_rng(14).integers(4, 16))
    if run_and_kill("trainer", args, lambda: _log_rows(run) >= at, log):
        assert not (run / "final.pt").exists()
        assert 2 <= _load(run / "checkpoint.pt")["step"] < 24
        res = _trainer(*args)
        assert res.exit_code == 1 and "already holds a training run" in res.output
    res = _trainer(*args, "--resume")
    assert res.exit_code == 0, res.output
    for name in ("checkpoint.pt", "final.pt"):
        # weights, BatchNorm statistics, Adam moments, step, RNG states, config, store attrs
        assert_same_tree(_load(run / name), _load(refs.run / name), name)
    assert _load(run / "checkpoint.pt")["step"] == 24
    assert _losses(run) == _losses(refs.run)
    assert [int(r["step"]) for r in _losses(run)] == list(range(1, 25))


def _small_set(tmp_path: Path, num_images: int = 3) -> Path:
    data = json.loads((COCO_MINI / "annotations" / "person_keypoints_val2017.json").read_text())
    data["images"] = data["images"][:num_images]
    ids = {im["id"] for im in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in ids]
    ann = tmp_path / "small.json"
    ann.write_text(json.dumps(data))
    return ann


def test_kill_while_creating_the_arrays_is_resumable(refs: Refs, tmp_path: Path) -> None:
    """The worst moment: killed after the store exists but before its progress array does
    (progress is created last). A resume starts that store afresh instead of failing."""
    ann = _small_set(tmp_path)
    args = ["build-teacher-cache", str(ann), str(refs.images), *BUILD_ARGS]
    assert _lcdata(*args, "--out", str(tmp_path / "ref.zarr")).exit_code == 0
    out = tmp_path / "s.zarr"
    assert _lcdata(*args, "--out", str(out)).exit_code == 0
    shutil.rmtree(out / "progress")
    shutil.rmtree(out / "meta")
    update_attrs(zarr.open_group(str(out), mode="r+"), complete=False)
    res = _lcdata(*args, "--out", str(out), "--slice", "0/2")
    assert res.exit_code == 1 and "being created by another slice" in res.output
    res = _lcdata(*args, "--out", str(out), "--resume")
    assert res.exit_code == 0, res.output
    assert_same_store(out, tmp_path / "ref.zarr")

    # the same for a corrected store (inputs copied: those arrays are created before progress)
    ref_c, c = tmp_path / "ref_c.zarr", tmp_path / "c.zarr"
    for path in (ref_c, c):
        run_correct(out, path, mode="gt", copy_inputs=True, progress=False)
    shutil.rmtree(c / "progress")
    update_attrs(zarr.open_group(str(c), mode="r+"), complete=False)
    res = _lcdata("correct", str(out), "--mode", "gt", "--out", str(c), "--copy-inputs")
    assert res.exit_code == 1 and "pass --resume" in res.output
    run_correct(out, c, mode="gt", copy_inputs=True, resume=True, progress=False)
    assert_same_store(c, ref_c, ignore_attrs=("source_store_relative",))


# ---------------------------------------------------------------------------------------
# 5. One writer per store: a second writer is refused, not interleaved


def test_second_writer_is_refused_while_a_build_runs(refs: Refs, tmp_path: Path) -> None:
    out, log = tmp_path / "gt.zarr", tmp_path / "log.txt"
    build = ["build-teacher-cache", str(refs.ann), str(refs.images), "--out", str(out)]
    build += BUILD_ARGS
    proc = _start("lcdata", build, log)
    try:
        # the lock must survive the creation of the store (zarr's mode="w" used to delete it)
        _wait_until(proc, lambda: (out / ".lcpose-lock").exists() and _flags(out, "gt") >= 1, log)
        assert proc.poll() is None, "the first build finished before the second could start"
        owner = json.loads((out / ".lcpose-lock").read_text())
        assert owner["pid"] == proc.pid
        for second in (
            build + ["--resume"],
            build,
            build + ["--slice", "1/2"],
            ["build-teacher-cache", "--out", str(out), "--teacher", str(refs.teacher_file)],
        ):
            res = _lcdata(*second)
            assert res.exit_code == 1, res.output
            assert res.output.startswith("Error: ") and "another process is writing" in res.output
        assert proc.poll() is None, "the refusals must have happened while the first ran"
    finally:
        rc = proc.wait(timeout=KILL_TIMEOUT_S)
    assert rc == 0, log.read_text()[-2000:]
    assert not list(out.glob(".lcpose-lock*"))
    assert_same_store(out, refs.gt)


def test_correct_refuses_a_second_writer(refs: Refs, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    with write_lock(out):  # this process is writing `out`
        res = _lcdata("correct", str(refs.cache), "--mode", "gt", "--out", str(out))
        assert res.exit_code == 1 and "another process is writing this store" in res.output
        assert (out / ".lcpose-lock").exists()  # the refused writer left our lock alone
    assert not out.exists() or not list(out.glob(".lcpose-lock*"))


# ---------------------------------------------------------------------------------------
# 2. Complete only at the end; readers refuse incomplete, foreign and newer-schema stores


def _foreign(path: Path) -> Path:
    zarr.open_group(str(path), mode="w").attrs["something"] = {"else": 1}
    return path


def _newer(refs: Refs, path: Path) -> Path:
    shutil.copytree(refs.cache, path)
    group = zarr.open_group(str(path), mode="r+")
    update_attrs(group, schema_version=SCHEMA_VERSION + 1)
    return path


def _incomplete(refs: Refs, path: Path) -> Path:
    """The GT store with its last shard unwritten, as a killed build leaves it."""
    shutil.copytree(refs.gt, path)
    group = zarr.open_group(str(path), mode="r+")
    group["progress/gt"][NUM_SHARDS - 1] = 0
    update_attrs(group, complete=False)
    return path


def _readers(refs: Refs, store: Path, tmp_path: Path) -> dict[str, Callable[[], Any]]:
    out = str(tmp_path / "out")
    return {
        "lcdata correct": lambda: _lcdata("correct", str(store), "--mode", "max", "--out", out),
        "teacher pass": lambda: _lcdata(
            "build-teacher-cache", "--out", str(store), "--teacher", str(refs.teacher_file)
        ),
        "build --resume": lambda: _lcdata(
            "build-teacher-cache",
            str(refs.ann),
            str(refs.images),
            "--out",
            str(store),
            *BUILD_ARGS,
            "--resume",
        ),  # fmt: skip
        "lcdata inspect": lambda: _lcdata("inspect", str(store), "--no-stats"),
        "lcdata show": lambda: _lcdata("show", str(store), "--out", out + ".png"),
        "trainer fit": lambda: _trainer("fit", "--store", str(store), "--out", out, "--quiet"),
    }


@pytest.mark.parametrize(
    ("kind", "message"),
    [("foreign", "not an lcpose store (no 'lcpose' attributes)"), ("newer", "newer than this")],
)
def test_every_reader_refuses_foreign_and_newer_stores(
    refs: Refs, tmp_path: Path, kind: str, message: str
) -> None:
    store = (
        _foreign(tmp_path / "s.zarr") if kind == "foreign" else _newer(refs, tmp_path / "s.zarr")
    )
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    for name, call in _readers(refs, store, tmp_path).items():
        res = call()
        lines = res.output.strip().splitlines()
        assert res.exit_code == 1 and lines == [lines[0]], (name, res.output)
        assert lines[0].startswith("Error: ") and message in lines[0], (name, res.output)
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # untouched
    with pytest.raises(LcposeError, match=re.escape(message)):
        open_training_store(store)
    assert not (tmp_path / "out").exists()


def test_incomplete_store_refused_shown_and_inspected(refs: Refs, tmp_path: Path) -> None:
    store = _incomplete(refs, tmp_path / "s.zarr")
    readers = _readers(refs, store, tmp_path)
    for name, message in (
        ("lcdata correct", "store is marked incomplete"),
        ("trainer fit", "store is marked incomplete"),
        ("teacher pass", "GT stage incomplete (1 blocks of this slice unwritten)"),
    ):
        res = readers[name]()
        assert res.exit_code == 1 and message in res.output, (name, res.output)
    # inspect describes an incomplete store but says so
    res = readers["lcdata inspect"]()
    assert res.exit_code == 0 and "complete False" in res.output
    summary = json.loads(_lcdata("inspect", str(store), "--no-stats", "--json").output)
    assert summary["attrs"]["complete"] is False
    # show draws a written sample and refuses an unwritten one (it would read as zeros)
    png = tmp_path / "ok.png"
    assert _lcdata("show", str(store), "--index", "0", "--out", str(png)).exit_code == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    res = _lcdata("show", str(store), "--index", str(NUM_SAMPLES - 1), "--out", str(png))
    assert res.exit_code == 1
    assert f"sample {NUM_SAMPLES - 1} is not written yet (block {NUM_SHARDS - 1} of stage gt" in (
        res.output
    )
    # and --resume finishes it (only the missing shard is written) into the reference
    assert readers["build --resume"]().exit_code == 0
    assert_same_store(store, refs.gt)


def test_corrected_store_marked_complete_only_after_every_shard(refs: Refs, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    run_correct(refs.cache, out, mode="gt", progress=False)
    group = zarr.open_group(str(out), mode="r+")
    group["progress/target"][3] = 0
    # finalize never flips a store with a missing shard, and readers keep refusing it
    update_attrs(group, complete=False)
    assert finalize(group, ("target",)) is False
    assert read_attrs(out)["complete"] is False
    with pytest.raises(LcposeError, match="marked incomplete"):
        open_training_store(out)


# ---------------------------------------------------------------------------------------
# 3. Determinism


def test_correct_is_deterministic_across_thread_counts(refs: Refs, tmp_path: Path) -> None:
    """The reference ran on dask's default thread pool (2 threads here); one thread gives the
    same targets, progress and analytics."""
    out = tmp_path / "c.zarr"
    run_correct(refs.cache, out, mode="max", num_workers=1, progress=False)
    assert_same_store(out, refs.corrected, ignore_attrs=("source_store_relative",))


def test_same_seed_same_curve_other_seed_differs(refs: Refs, tmp_path: Path) -> None:
    cfg = TrainConfig(
        model="tiny", model_kwargs={"num_stages": 1, "width": 16}, steps=4, batch_size=4,
        lr=1e-3, workers=0, log_every=1, checkpoint_every=4, device="cpu", seed=5,
    )  # fmt: skip
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        fit(replace(cfg, seed=seed), refs.gt, tmp_path / name, progress=False)
        runs[name] = (_losses(tmp_path / name), _load(tmp_path / name / "final.pt")["model"])
    assert runs["a"][0] == runs["b"][0]
    assert_same_tree(runs["a"][1], runs["b"][1])
    # another seed: other initial weights and another batch order
    assert [r["loss"] for r in runs["a"][0]] != [r["loss"] for r in runs["c"][0]]
    assert not torch.equal(
        runs["a"][1]["stages.0.heatmaps.weight"], runs["c"][1]["stages.0.heatmaps.weight"]
    )
