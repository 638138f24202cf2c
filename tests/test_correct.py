"""Label correction: every mode against numpy, ties, backgrounds, KD gradients, out of core,
resume, refusals, analytics with a clean truth, and the correct/show/inspect CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import dask
import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner

import lcdata.correction.analytics as an
import lcdata.correction.write as cr
from lcdata import parallel
from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.cli import cli
from lcdata.config import AugmentConfig, RenderConfig
from lcdata.correction.analytics import block_stats_tasks
from lcdata.correction.rules import blend, correct_heatmaps, correct_pafs, paf_keeps_gt, targets
from lcdata.correction.stats import STATS_DIR, correction_stats, load_block_stats, save_block_stats
from lcdata.correction.write import _write_target_block, correct_lazy, run_correct
from lcdata.errors import ConfigError, LcposeError
from lcdata.labels.augment import warp_parts
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.show import render_figure
from lcdata.store.codec import _TORCH_MIN_SIZE, QUANT_STEP, quantize, to_float16, to_float32
from lcdata.store.layout import (
    create_cache,
    create_maps,
    create_progress,
    finalize,
    mark_block_done,
    num_blocks,
    read_attrs,
    store_attrs,
    update_attrs,
)
from lcdata.store.refs import resolve_source_store, store_fingerprint
from lcdata.synth.truth import keypoint_causes, load_clean_truth

SK = CMU_SKELETON
RENDER = RenderConfig(input_size=32, stride=4, sigma=3.0)  # 8 x 8 maps
K1, C2 = SK.num_heatmaps, SK.num_pafs


# ---------------------------------------------------------------------------------------
# A cache store with crafted values: ties, zero vectors, teacher values outside [0, 1]


def _q(x: np.ndarray) -> np.ndarray:
    return (np.round(np.asarray(x, np.float64) * 512) / 512).astype(np.float16)


def _crafted(n: int, seed: int, render: RenderConfig) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, size = render.grid_size, render.input_size
    parts = rng.uniform(0, 1, (n, K1 - 1, h, h)) * (rng.uniform(size=(n, K1 - 1, h, h)) < 0.4)
    gt_h = np.concatenate([parts, 1 - parts.max(axis=1, keepdims=True)], axis=1)
    t_h = rng.uniform(-0.1, 1.2, (n, K1, h, h))
    equal = rng.uniform(size=t_h.shape) < 0.1
    t_h[equal] = gt_h[equal]  # ties of eq. 2 are harmless but present
    angle = rng.uniform(0, 2 * np.pi, (n, C2 // 2, h, h))
    on = rng.uniform(size=angle.shape) < 0.5
    gt_v = np.stack([np.cos(angle), np.sin(angle)], axis=2) * on[:, :, None]
    gt_v = _q(gt_v).astype(np.float64)
    t_v = rng.normal(0, 0.7, gt_v.shape)
    kind = rng.integers(0, 5, angle.shape)
    # 1: exact tie, rotated by 90 degrees (same length, other direction): teacher wins
    rot = np.stack([-gt_v[:, :, 1], gt_v[:, :, 0]], axis=2)
    t_v = np.where((kind == 1)[:, :, None], rot, t_v)
    t_v = np.where((kind == 2)[:, :, None], 0.0, t_v)  # teacher zero vector
    # 3: x of GT longer but y of teacher longer: the vector moves as a whole
    t_v[:, :, 0] = np.where(kind == 3, 0.5 * gt_v[:, :, 0], t_v[:, :, 0])
    t_v[:, :, 1] = np.where(kind == 3, 2.0 * gt_v[:, :, 1] + 0.25, t_v[:, :, 1])
    return {
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "masks": (rng.uniform(size=(n, h, h)) < 0.7).astype(np.uint8),
        "gt/heatmaps": _q(gt_h),
        "gt/pafs": _q(gt_v.reshape(n, C2, h, h)),
        "teacher/heatmaps": _q(t_h),
        "teacher/pafs": _q(t_v.reshape(n, C2, h, h)),
        "meta/image_id": np.arange(n, dtype=np.int64),
        "meta/affine": np.tile(np.eye(2, 3, dtype=np.float32), (n, 1, 1)),
        "meta/flipped": np.zeros(n, bool),
        "meta/view": np.zeros((n, 4), np.float32),
    }


def make_cache(
    path: Path,
    *,
    n: int = 20,
    per: int = 8,
    seed: int = 0,
    teacher: bool = True,
    render: RenderConfig = RENDER,
) -> Path:
    """A complete cache store written array by array (no COCO, no model)."""
    attrs = {
        "kind": "cache",
        "num_samples": n,
        "samples_per_shard": per,
        "skeleton": SK.to_attrs(),
        "render": render.to_attrs(),
        "quant_step": QUANT_STEP,
        "source": {"annotations": "none.json", "annotations_sha256": "0" * 64},
        "stages": ["gt", "teacher"] if teacher else ["gt"],
    }
    group = create_cache(path, attrs)
    data = _crafted(n, seed, render)
    if teacher:
        create_maps(group, "teacher", attrs)
        create_progress(group, "teacher", num_blocks(n, per))
        update_attrs(group, teacher={"path": "t.pt2", "sha256": "f" * 64})
    for name, values in data.items():
        if name in group:
            group[name][:] = values
    for stage in attrs["stages"]:
        group[f"progress/{stage}"][:] = 1
    assert finalize(group, tuple(attrs["stages"]))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("cache") / "cache.zarr")


# ---------------------------------------------------------------------------------------
# The independent reference: plain float64 numpy, loops over limbs


def _ref_heat_lc(gt: np.ndarray, t: np.ndarray, background: str) -> np.ndarray:
    out = np.maximum(gt, t)
    if background == "recompute":
        out[:, -1] = 1.0 - out[:, :-1].max(axis=1)
    elif background == "min":
        out[:, -1] = np.minimum(gt[:, -1], t[:, -1])
    return out


def _ref_paf_lc(gt: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = np.empty_like(gt)
    for limb in range(gt.shape[1] // 2):
        x, y = 2 * limb, 2 * limb + 1
        from_gt = np.hypot(gt[:, x], gt[:, y]) > np.hypot(t[:, x], t[:, y])
        out[:, x] = np.where(from_gt, gt[:, x], t[:, x])
        out[:, y] = np.where(from_gt, gt[:, y], t[:, y])
    return out


def _ref_paf_gated(gt: np.ndarray, t: np.ndarray, tau: float) -> np.ndarray:
    out = np.empty_like(gt)
    for limb in range(gt.shape[1] // 2):
        x, y = 2 * limb, 2 * limb + 1
        len_t = np.hypot(t[:, x], t[:, y])
        # as in eq. 3, a tie goes to the teacher (when it passes the gate)
        from_t = ~(np.hypot(gt[:, x], gt[:, y]) > len_t) & (len_t >= tau)
        out[:, x] = np.where(from_t, t[:, x], gt[:, x])
        out[:, y] = np.where(from_t, t[:, y], gt[:, y])
    return out


def reference_targets(
    path: Path,
    mode: str,
    lam: float,
    background: str,
    *,
    float32_blend: bool = True,
    gates: tuple[float, float] = (0.3, 0.3),
) -> tuple[np.ndarray, np.ndarray]:
    g = zarr.open_group(str(path), mode="r")
    gh, gp = (g[f"gt/{n}"][:].astype(np.float64) for n in ("heatmaps", "pafs"))
    th, tp = (g[f"teacher/{n}"][:].astype(np.float64) for n in ("heatmaps", "pafs"))
    lc_h, lc_p = _ref_heat_lc(gh, th, background), _ref_paf_lc(gp, tp)

    def mix(y: np.ndarray, t: np.ndarray) -> np.ndarray:
        if not float32_blend:
            return (1 - lam) * y + lam * t
        # the documented formula: float32 arithmetic, lambda rounded to float32
        lam32 = np.float32(lam)
        return (np.float32(1) - lam32) * y.astype(np.float32) + lam32 * t.astype(np.float32)

    heat, pafs = {
        "gt": (gh, gp),
        "max": (lc_h, lc_p),
        "heatmaps": (lc_h, gp),
        "pafs": (gh, lc_p),
        "kd": (mix(gh, th), mix(gp, tp)),
        "kd+lc": (mix(lc_h, th), mix(lc_p, tp)),
        "gated": (
            _ref_heat_lc(gh, np.where(th >= gates[0], th, 0.0), background),
            _ref_paf_gated(gp, tp, gates[1]),
        ),
    }[mode]
    return _q(heat), _q(pafs)


CASES = [
    ("gt", None, "recompute"),
    ("max", None, "recompute"),
    ("max", None, "min"),
    ("max", None, "max"),
    ("heatmaps", None, "recompute"),
    ("pafs", None, "recompute"),
    ("kd", None, "recompute"),
    ("kd", 0.3, "recompute"),
    ("kd+lc", None, "recompute"),
    ("kd+lc", 0.25, "min"),
]


@pytest.mark.parametrize(("mode", "lam", "background"), CASES)
def test_every_mode_matches_numpy(cache: Path, tmp_path: Path, mode, lam, background) -> None:
    out = tmp_path / "c.zarr"
    attrs = run_correct(cache, out, mode=mode, lam=lam, background=background, progress=False)
    g = zarr.open_group(str(out), mode="r")
    heat, pafs = g["target/heatmaps"][:], g["target/pafs"][:]
    lam = 0.5 if lam is None else lam
    want_h, want_p = reference_targets(cache, mode, lam, background)
    assert heat.dtype == pafs.dtype == np.float16
    np.testing.assert_array_equal(heat, want_h)
    np.testing.assert_array_equal(pafs, want_p)
    # the blend in float64 differs only where the exact value sits on a half-step of the
    # 2^-9 grid (float32 and float64 round lambda differently), and then by one step
    loose = reference_targets(cache, mode, lam, background, float32_blend=False)
    for got, want in zip((heat, pafs), loose, strict=True):
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        assert diff.max() <= 2**-9
        if lam in (0.5, 0.25) or mode not in ("kd", "kd+lc"):
            assert diff.max() == 0  # blends with these lambdas are exact in both
    assert g["target/heatmaps"].chunks == (8, K1, 8, 8) and g["target/heatmaps"].shards is None
    assert attrs["complete"] is True and attrs["kind"] == "corrected"
    c = attrs["correction"]
    assert c["mode"] == mode and c["inputs"] == "referenced"
    assert c["lambda"] == (lam if mode in ("kd", "kd+lc") else None)
    assert attrs["source_store"] == str(cache.resolve())
    assert c["source_sha256"] == store_fingerprint(cache)
    assert attrs["skeleton"] == SK.to_attrs() and attrs["render"] == RENDER.to_attrs()


@pytest.mark.parametrize("gates", [(0.3, 0.3), (0.15, 0.45), (0.0, 0.0)])
def test_gated_mode_matches_numpy(cache: Path, tmp_path: Path, gates) -> None:
    out = tmp_path / "g.zarr"
    attrs = run_correct(cache, out, mode="gated", gates=gates, progress=False)
    g = zarr.open_group(str(out), mode="r")
    heat, pafs = g["target/heatmaps"][:], g["target/pafs"][:]
    want_h, want_p = reference_targets(cache, "gated", 0.5, "recompute", gates=gates)
    np.testing.assert_array_equal(heat, want_h)
    np.testing.assert_array_equal(pafs, want_p)
    assert attrs["correction"]["gates"] == list(gates)
    lc_h, lc_p = reference_targets(cache, "max", 0.5, "recompute")
    if gates == (0.0, 0.0):  # no gate: plain LC
        np.testing.assert_array_equal(heat, lc_h)
        np.testing.assert_array_equal(pafs, lc_p)
    else:  # the gate removed some of the teacher's faint values
        assert (heat[:, :-1] < lc_h[:, :-1]).any() and not np.array_equal(pafs, lc_p)
    # the lazy view gives the same targets
    lazy_h, lazy_p = correct_lazy(cache, mode="gated", gates=gates)
    np.testing.assert_array_equal(lazy_h.compute(), heat)
    np.testing.assert_array_equal(lazy_p.compute(), pafs)


def test_gates_belong_to_mode_gated(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="apply to mode gated only"):
        run_correct(cache, tmp_path / "x.zarr", mode="max", gates=(0.3, 0.3), progress=False)
    with pytest.raises(ConfigError, match="paf_gate.*must be in"):
        run_correct(cache, tmp_path / "x.zarr", mode="gated", gates=(0.3, -1), progress=False)


def test_ties_and_zero_vectors_follow_the_strict_inequality() -> None:
    # one limb, five pixels: (GT vector, teacher vector) -> expected target
    gt = np.array([[0.6, 0.8], [0.0, 0.0], [0.5, 0.0], [0.0, 0.0], [0.8, 0.2]], np.float16)
    te = np.array([[0.8, -0.6], [0.0, 0.0], [0.0, 0.0], [0.0, 0.25], [0.1, 0.9]], np.float16)
    want = np.array([te[0], [0, 0], gt[2], te[3], te[4]], np.float32)
    got = correct_pafs(gt.T.reshape(1, 2, 1, 5), te.T.reshape(1, 2, 1, 5))
    # tie (both length 1) -> teacher; both zero -> zero; teacher zero -> GT; GT zero -> teacher;
    # GT longer in x but shorter overall -> the teacher's whole vector, never a mix of x and y
    np.testing.assert_array_equal(got.reshape(2, 5).T, want)


def test_background_rules() -> None:
    gt = np.array([0.2, 0.5, 0.5], np.float32).reshape(1, 3, 1, 1)  # parts 0.2, 0.5; bg 0.5
    te = np.array([0.9, 0.1, 0.3], np.float32).reshape(1, 3, 1, 1)
    for rule, bg in (("recompute", 1 - 0.9), ("min", 0.3), ("max", 0.5)):
        out = correct_heatmaps(gt, te, background=rule).ravel()
        np.testing.assert_allclose(out, [0.9, 0.5, bg], rtol=0, atol=1e-7)
    with pytest.raises(LcposeError, match="correct.background: unknown rule 'mean'"):
        correct_heatmaps(gt, te, background="mean")


def test_targets_are_computed_under_the_mask_too(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    run_correct(cache, out, mode="max", progress=False)
    g, src = zarr.open_group(str(out), mode="r"), zarr.open_group(str(cache), mode="r")
    masked = src["masks"][:] == 0
    changed = (g["target/heatmaps"][:] != src["gt/heatmaps"][:]).any(axis=1)
    assert masked.any() and (changed & masked).any()  # the loss, not the target, masks


# ---------------------------------------------------------------------------------------
# Eq. 5 as a target: the same gradients


def _local_masked_l2(pred, target, mask):
    return 0.5 * ((pred - target) * mask).square().sum() / pred.shape[0]


def _loss_functions():
    funcs = [_local_masked_l2]
    try:
        from trainer.losses import masked_l2
    except ImportError:  # pragma: no cover - the trainer ships it
        return funcs
    return [*funcs, masked_l2]


@pytest.mark.parametrize("loss", _loss_functions(), ids=lambda f: f.__module__)
@pytest.mark.parametrize("lam", [0.5, 0.3, 1.0])
def test_kd_target_gives_the_gradients_of_eq5(loss, lam: float) -> None:
    rng = np.random.default_rng(7)
    shape = (3, 6, 5, 4)
    y = rng.uniform(-0.2, 1, shape).astype(np.float32)
    t = rng.uniform(-0.2, 1, shape).astype(np.float32)
    mask = torch.from_numpy((rng.uniform(size=(3, 1, 5, 4)) < 0.6).astype(np.float32))
    target = torch.from_numpy(blend(y, t, lam))  # the function `lcdata correct` uses
    y, t = torch.from_numpy(y), torch.from_numpy(t)
    gaps = []
    for _ in range(2):  # two different predictions P
        p = torch.from_numpy(rng.normal(size=shape).astype(np.float32)).requires_grad_()
        eq5 = (1 - lam) * loss(p, y, mask) + lam * loss(p, t, mask)
        (g5,) = torch.autograd.grad(eq5, p)
        as_target = loss(p, target, mask)
        (gt,) = torch.autograd.grad(as_target, p)
        torch.testing.assert_close(gt, g5, rtol=1e-5, atol=1e-6)
        assert (g5 != 0).any()
        gaps.append((eq5 - as_target).item())
    # the difference is a constant, lam (1 - lam) / 2 * sum(mask (y - T)^2) / B, free of P
    const = lam * (1 - lam) * loss(y, t, mask).item()
    assert gaps == pytest.approx([const, const], rel=1e-4, abs=1e-4)


# ---------------------------------------------------------------------------------------
# Out of core: one task per shard, memory of a few shards


def _fail_on_compute(dsk, keys, **kwargs):
    raise AssertionError("graph was computed while it should only have been built")


def test_correct_lazy_builds_one_task_per_shard_and_computes_nothing(cache: Path) -> None:
    with dask.config.set(scheduler=_fail_on_compute):
        heat, pafs = correct_lazy(cache, mode="kd+lc", lam=0.5)
    assert heat.chunks[0] == (8, 8, 4) and pafs.chunks[0] == (8, 8, 4)
    assert heat.numblocks == (3, 1, 1, 1)
    layer = [k for k in dict(heat.__dask_graph__()) if str(k[0]).startswith("target-heatmaps")]
    assert len(layer) == 3
    got = heat[8:16].compute(scheduler="sync")
    want = reference_targets(cache, "kd+lc", 0.5, "recompute")[0][8:16]
    np.testing.assert_array_equal(got, want)


def test_out_of_core_holds_a_few_shards_at_a_time(tmp_path: Path) -> None:
    n, per = 96, 4
    big = make_cache(tmp_path / "big.zarr", n=n, per=per, seed=3)
    shard_bytes = per * (K1 + C2) * 64 * 2  # GT (or teacher, or target) maps of one shard
    peaks = {"live": 0, "result": 0}

    class Track(dask.callbacks.Callback):
        """Watch the local scheduler's cache of finished results that are still needed."""

        def _posttask(self, key, result, dsk, state, id):
            # numpy blocks only: the cache also holds the zarr.Array handles, whose
            # `nbytes` is the size of the whole (unread) array
            live = sum(v.nbytes for v in state["cache"].values() if isinstance(v, np.ndarray))
            peaks["live"] = max(peaks["live"], live)
            if isinstance(result, np.ndarray):
                peaks["result"] = max(peaks["result"], result.nbytes)

    with Track(), dask.config.set({"array.chunk-size": "16KiB"}):
        run_correct(big, tmp_path / "out.zarr", mode="kd+lc", progress=False, num_workers=2)
    # no task ever returns more than one shard of one array ...
    assert per * C2 * 64 * 2 <= peaks["result"] <= per * C2 * 64 * 4
    # ... and the scheduler never holds more than a few shards (the store holds 24)
    assert 0 < peaks["live"] <= 8 * shard_bytes, peaks
    assert peaks["live"] < (n // per) * shard_bytes / 3


# ---------------------------------------------------------------------------------------
# Refusals and resume


def test_refuses_an_incomplete_source(cache: Path, tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    make_cache(src)
    update_attrs(zarr.open_group(str(src), mode="r+"), complete=False)
    with pytest.raises(LcposeError, match="store is marked incomplete"):
        run_correct(src, tmp_path / "out.zarr", mode="gt", progress=False)
    assert not (tmp_path / "out.zarr").exists()


def test_teacher_modes_need_teacher_arrays(tmp_path: Path) -> None:
    src = make_cache(tmp_path / "gt_only.zarr", teacher=False)
    with pytest.raises(LcposeError, match=r"mode 'max' needs teacher/heatmaps, teacher/pafs"):
        run_correct(src, tmp_path / "out.zarr", mode="max", progress=False)
    attrs = run_correct(src, tmp_path / "out.zarr", mode="gt", progress=False)
    got = zarr.open_group(str(tmp_path / "out.zarr"))["target/pafs"][:]
    np.testing.assert_array_equal(got, zarr.open_group(str(src))["gt/pafs"][:])
    assert attrs["correction"]["teacher_sha256"] is None


def test_bad_options_are_one_line_errors(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(LcposeError, match="correct.lam: applies to modes kd and kd\\+lc only"):
        run_correct(cache, tmp_path / "o.zarr", mode="max", lam=0.3, progress=False)
    with pytest.raises(LcposeError, match=r"correct.lam: must be in \[0, 1\], got 1.5"):
        run_correct(cache, tmp_path / "o.zarr", mode="kd", lam=1.5, progress=False)
    with pytest.raises(LcposeError, match="correct.mode: unknown mode 'median'"):
        run_correct(cache, tmp_path / "o.zarr", mode="median", progress=False)
    with pytest.raises(LcposeError, match="correct.out: must differ"):
        run_correct(cache, cache, mode="gt", progress=False)


def test_resume_after_an_interrupted_correction(cache: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "c.zarr"
    real = _write_target_block

    def dying(job, shard, *args):
        if shard == 1:
            raise KeyboardInterrupt
        return real(job, shard, *args)

    monkeypatch.setattr(cr, "_write_target_block", dying)
    with pytest.raises(KeyboardInterrupt):
        run_correct(cache, out, mode="kd+lc", progress=False, num_workers=1)
    monkeypatch.setattr(cr, "_write_target_block", real)
    assert read_attrs(out)["complete"] is False
    assert not np.asarray(zarr.open_group(str(out))["progress/target"][:]).all()
    with pytest.raises(LcposeError, match="output exists; pass --resume"):
        run_correct(cache, out, mode="kd+lc", progress=False)
    with pytest.raises(LcposeError, match="cannot resume: .* different 'mode'"):
        run_correct(cache, out, mode="max", resume=True, progress=False)
    attrs = run_correct(cache, out, mode="kd+lc", resume=True, progress=False)
    assert attrs["complete"] is True
    want = reference_targets(cache, "kd+lc", 0.5, "recompute")
    g = zarr.open_group(str(out))
    np.testing.assert_array_equal(g["target/heatmaps"][:], want[0])
    np.testing.assert_array_equal(g["target/pafs"][:], want[1])


def test_distributed_scheduler_gives_the_same_store(
    cache: Path, tmp_path: Path, monkeypatch
) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        attrs = run_correct(
            cache,
            tmp_path / "d.zarr",
            mode="max",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    local = run_correct(cache, tmp_path / "l.zarr", mode="max", progress=False)
    assert attrs["analytics"] == local["analytics"]
    a, b = zarr.open_group(str(tmp_path / "d.zarr")), zarr.open_group(str(tmp_path / "l.zarr"))
    for name in ("target/heatmaps", "target/pafs"):
        np.testing.assert_array_equal(a[name][:], b[name][:])
    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(LcposeError, match="--scheduler tcp://127.0.0.1:9: cannot connect"):
        run_correct(cache, tmp_path / "x.zarr", mode="gt", scheduler="tcp://127.0.0.1:9")


# ---------------------------------------------------------------------------------------
# Analytics


def test_analytics_count_added_mass_and_replaced_cells(cache: Path, tmp_path: Path) -> None:
    attrs = run_correct(cache, tmp_path / "c.zarr", mode="max", progress=False)
    a = attrs["analytics"]
    g = zarr.open_group(str(cache), mode="r")
    m = g["masks"][:].astype(np.float64)[:, None]
    gh, th = g["gt/heatmaps"][:].astype(np.float64), g["teacher/heatmaps"][:].astype(np.float64)
    added = (np.maximum(th - gh, 0) * m)[:, :-1].sum(axis=(0, 2, 3))
    np.testing.assert_allclose(a["heatmaps"]["added"], added, rtol=1e-9)
    assert a["heatmaps"]["removed_total"] == 0
    tgt = zarr.open_group(str(tmp_path / "c.zarr"))["target/pafs"][:]
    gp = g["gt/pafs"][:]
    diff = (tgt != gp).reshape(20, C2 // 2, 2, 8, 8).any(axis=2) * m
    assert a["pafs"]["changed"] == diff.sum(axis=(0, 2, 3)).astype(int).tolist()
    assert a["samples"] == 20 and a["supervised_cells"] == int(m.sum())
    gt_only = run_correct(cache, tmp_path / "g.zarr", mode="gt", progress=False)["analytics"]
    assert gt_only["heatmaps"]["added_total"] == 0 and gt_only["pafs"]["changed_total"] == 0


def _float64_correction_stats(gt_h, gt_p, tgt_h, tgt_p, masks) -> dict[str, np.ndarray]:
    """`correction_stats` as it was before it moved to float32: everything in float64."""
    m = np.asarray(masks, np.float64)[:, None]
    g, y = np.asarray(gt_h[:, :-1], np.float64), np.asarray(tgt_h[:, :-1], np.float64)
    n, c, h, w = gt_p.shape
    gv = np.asarray(gt_p, np.float64).reshape(n, c // 2, 2, h, w)
    yv = np.asarray(tgt_p, np.float64).reshape(n, c // 2, 2, h, w)
    ng, ny = np.sqrt((gv * gv).sum(axis=2)), np.sqrt((yv * yv).sum(axis=2))
    changed = (np.asarray(gt_p) != np.asarray(tgt_p)).reshape(n, c // 2, 2, h, w).any(axis=2)
    axes = (0, 2, 3)
    return {
        "samples": np.array([len(masks)], np.float64),
        "cells": np.array([m.sum()]),
        "heat_gt": (g * m).sum(axes),
        "heat_target": (y * m).sum(axes),
        "heat_added": (np.maximum(y - g, 0) * m).sum(axes),
        "heat_removed": (np.maximum(g - y, 0) * m).sum(axes),
        "paf_gt_cells": ((ng > 0) * m).sum(axes),
        "paf_target_cells": ((ny > 0) * m).sum(axes),
        "paf_changed": (changed * m).sum(axes),
        "paf_mass_added": (np.maximum(ny - ng, 0) * m).sum(axes),
    }


@pytest.mark.parametrize(("mode", "scale"), [("max", 1), ("kd+lc", 1), ("gt", 1), ("max", 256)])
def test_correction_stats_in_float32_equal_float64(mode: str, scale: int) -> None:
    """Everything but the limb lengths is exact in float32; those stay within 1e-6. With
    `scale`, the maps are too large for exact per-sample float32 sums (the float64 path)."""
    data = _crafted(64, 5, RenderConfig(input_size=64, stride=4, sigma=3.0))
    gh, gp = (data[k] * np.float16(scale) for k in ("gt/heatmaps", "gt/pafs"))
    th, tp = (data[k] * np.float16(scale) for k in ("teacher/heatmaps", "teacher/pafs"))
    y = targets(gh, gp, th, tp, mode=mode, lam=0.3)
    yh, yp = quantize(y.heatmaps), quantize(y.pafs)
    want = _float64_correction_stats(gh, gp, yh, yp, data["masks"])
    for inputs in ((gh, gp), (gh.astype(np.float32), gp.astype(np.float32))):
        got = correction_stats(*inputs, yh, yp, data["masks"])
        assert got.keys() == want.keys()
        for key in want:
            assert got[key].dtype == np.float64 and got[key].shape == want[key].shape, key
            if key == "paf_mass_added":
                np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=0)
            else:
                np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    if mode == "gt":
        assert not want["paf_mass_added"].any() and not want["heat_added"].any()
    else:
        assert want["paf_mass_added"].min() > 0 and want["paf_changed"].min() > 0
    if mode == "kd+lc":
        assert want["heat_removed"].min() > 0  # the blend lowers GT somewhere


def test_correction_stats_stay_exact_when_float32_sums_would_round() -> None:
    """Large values beside a 2^-9 step in one sample: a float32 sum would need 25 bits."""
    n, h = 2, 46
    gh = np.zeros((n, 19, h, h), np.float16)
    yh = np.full((n, 19, h, h), 16.0, np.float16)
    yh[:, :, 0, 0] = 2**-9
    gp = np.zeros((n, 38, h, h), np.float16)
    masks = np.ones((n, h, h), np.uint8)
    want = _float64_correction_stats(gh, gp, yh, gp, masks)
    got = correction_stats(gh, gp, yh, gp, masks)
    for key in ("heat_target", "heat_added"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert want["heat_target"][0] == n * ((h * h - 1) * 16 + 2**-9)


@pytest.mark.parametrize("low, high", [(-3.99, 3.99), (4.0, 7.5), (-70.0, 70.0)])
def test_stored_values_in_float32_equal_the_float16_ones(low: float, high: float) -> None:
    """The write tasks take the targets' float32 values as `to_float32(quantize(x))`."""
    x = np.random.default_rng(3).uniform(low, high, (4, 5, 8, 8)).astype(np.float32)
    x[0, 0, 0, :3] = [0.0, -1e-4, 2**-10]  # signed zeros and a half step
    stored = quantize(x)
    values = to_float32(stored)
    assert stored.dtype == np.float16 and values.dtype == np.float32
    np.testing.assert_array_equal(stored.view(np.uint16), quantize(x).view(np.uint16))
    np.testing.assert_array_equal(
        values.view(np.uint32), stored.astype(np.float32).view(np.uint32)
    )  # bit for bit, -0.0 included


def test_torch_casts_and_quantize_equal_numpy_bit_for_bit() -> None:
    """`st.to_float32`, `st.to_float16` and the torch path of `st.quantize` (used on large
    arrays once torch is loaded) against numpy, ties, signed zeros, overflow and NaN included."""
    import sys

    import torch  # noqa: F401  (loaded: quantize takes its torch path)

    assert "torch" in sys.modules
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 40, 33, 17)) * 3).astype(np.float32)  # > 65536 elements
    x.flat[:8] = [np.nan, np.inf, -np.inf, 7e4, -0.0, 1e-8, 2**-10, 3 * 2**-10]  # ties at 2^-10
    with np.errstate(over="ignore", invalid="ignore"):
        want_q = (np.round(x / QUANT_STEP) * QUANT_STEP).astype(np.float16)
        want_h = x.astype(np.float16)
    assert x.size >= _TORCH_MIN_SIZE
    np.testing.assert_array_equal(quantize(x).view(np.uint16), want_q.view(np.uint16))
    np.testing.assert_array_equal(to_float16(x).view(np.uint16), want_h.view(np.uint16))
    back = to_float32(want_h)
    assert back.dtype == np.float32 and back.shape == x.shape
    np.testing.assert_array_equal(back.view(np.uint32), want_h.astype(np.float32).view(np.uint32))
    strided = want_h[:, ::3]  # not contiguous
    np.testing.assert_array_equal(to_float32(strided), strided.astype(np.float32))


def test_saved_shard_stats_round_trip(tmp_path: Path) -> None:
    stats = {"samples": np.array([8.0]), "heat_added": np.arange(18, dtype=np.float64) / 7}
    path = save_block_stats(tmp_path / "s", 3, stats, tag="a")
    assert path == tmp_path / "s" / "3.npz" and [p.name for p in path.parent.iterdir()] == ["3.npz"]
    got = load_block_stats(tmp_path / "s", 3, tag="a")
    assert got.keys() == stats.keys()
    for key in stats:
        np.testing.assert_array_equal(got[key], stats[key])
    assert load_block_stats(tmp_path / "s", 3, tag="b") is None  # another --clean
    assert load_block_stats(tmp_path / "s", 4, tag="a") is None
    path.write_bytes(path.read_bytes()[:40])  # damaged: recomputed, not trusted
    assert load_block_stats(tmp_path / "s", 3, tag="a") is None


@pytest.fixture
def recomputed(monkeypatch) -> list[int]:
    """Shards whose analytics get computed by re-reading the stores, not by their write task."""
    shards: list[int] = []
    real = block_stats_tasks

    def recording(source, corrected, todo, setup):
        shards.extend(todo)
        return real(source, corrected, todo, setup)

    monkeypatch.setattr(an, "block_stats_tasks", recording)
    return shards


@pytest.mark.parametrize("mode", ["max", "kd+lc"])
def test_write_tasks_give_the_analytics_of_a_second_pass(
    cache: Path, tmp_path: Path, mode: str, recomputed: list[int]
) -> None:
    out = tmp_path / "c.zarr"
    attrs = run_correct(cache, out, mode=mode, progress=False)
    assert recomputed == []  # every shard's statistics came from its write task
    assert not (out / STATS_DIR).exists()  # removed once the totals are stored
    assert attrs["analytics"] == an.compute_analytics(cache, out)
    assert recomputed == [0, 1, 2]
    assert attrs["analytics"]["samples"] == 20


def _interrupted(cache: Path, out: Path, monkeypatch) -> np.ndarray:
    """Run `lcdata correct --mode max` on one thread and kill it in its second shard task;
    returns the progress flags it left (one shard done)."""
    real = _write_target_block
    started = []

    def dying(job, shard, *args):
        started.append(shard)
        if len(started) == 2:
            raise KeyboardInterrupt
        return real(job, shard, *args)

    monkeypatch.setattr(cr, "_write_target_block", dying)
    with pytest.raises(KeyboardInterrupt):
        run_correct(cache, out, mode="max", progress=False, num_workers=1)
    monkeypatch.setattr(cr, "_write_target_block", real)
    done = np.asarray(zarr.open_group(str(out))["progress/target"][:]).astype(bool)
    assert done.sum() == 1
    return done


@pytest.mark.parametrize("older_store", [False, True])
def test_resume_reuses_saved_stats_and_computes_missing_ones(
    cache: Path, tmp_path: Path, monkeypatch, recomputed: list[int], older_store: bool
) -> None:
    out = tmp_path / "c.zarr"
    done = _interrupted(cache, out, monkeypatch)
    saved = out / STATS_DIR
    # a shard marked done has its statistics on disk, a pending one has none
    assert [(saved / f"{s}.npz").is_file() for s in range(3)] == done.tolist()
    # a leftover of a dead task for a pending shard must not count
    pending = int(np.flatnonzero(~done)[0])
    tag = an.analytics_setup(cache).tag
    save_block_stats(saved, pending, {"samples": np.array([1e9])}, tag=tag)
    if older_store:  # written by an lcpose that saved no statistics
        shutil.rmtree(saved)
    attrs = run_correct(cache, out, mode="max", resume=True, progress=False)
    assert attrs["complete"] is True and not saved.exists()
    assert recomputed == (np.flatnonzero(done).tolist() if older_store else [])
    fresh = run_correct(cache, tmp_path / "fresh.zarr", mode="max", progress=False)
    assert attrs["analytics"] == fresh["analytics"]
    assert attrs["analytics"] == an.compute_analytics(cache, out)


def test_a_restarted_store_drops_stale_stats(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.zarr"
    run_correct(cache, out, mode="max", progress=False)
    # as if killed while creating the arrays: no progress record, so --resume starts afresh
    shutil.rmtree(out / "progress" / "target")
    update_attrs(zarr.open_group(str(out), mode="r+"), complete=False)
    tag = an.analytics_setup(cache).tag
    for shard in range(3):
        save_block_stats(out / STATS_DIR, shard, {"samples": np.array([1e9])}, tag=tag)
    attrs = run_correct(cache, out, mode="max", resume=True, progress=False)
    assert attrs["analytics"]["samples"] == 20
    assert attrs["analytics"] == an.compute_analytics(cache, out)


def test_resume_with_another_clean_file_recomputes_done_shards(
    synthetic, tmp_path: Path, monkeypatch, recomputed: list[int]
) -> None:
    out = tmp_path / "lc.zarr"
    done = _interrupted(synthetic["cache"], out, monkeypatch)  # without --clean
    clean = synthetic["clean"]
    attrs = run_correct(
        synthetic["cache"], out, mode="max", clean=clean, resume=True, progress=False
    )
    assert recomputed == np.flatnonzero(done).tolist()  # saved without the truth
    assert attrs["analytics"] == an.compute_analytics(synthetic["cache"], out, clean=clean)
    fresh = run_correct(
        synthetic["cache"], tmp_path / "fresh.zarr", mode="max", clean=clean, progress=False
    )
    assert attrs["analytics"] == fresh["analytics"]
    assert fresh["analytics"]["truth"]["heatmaps"]["recovered"]["total"] > 0


def test_keypoint_causes_follow_the_documented_order() -> None:
    clean = np.array([[10, 10, 2], [70, 10, 1], [10, 20, 1], [20, 20, 2], [30, 30, 2]], float)
    clean = np.concatenate([clean, np.tile([[5, 5, 2]], (12, 1))])
    noisy = clean.copy()
    noisy[1:4] = 0  # out of image (x=70 in a 64 px image), occluded (v=1), missed (v=2)
    got = keypoint_causes(clean, noisy, (64, 64))
    assert got[:5].tolist() == [0, 1, 2, 3, 0]
    # unannotated person: failure 4 is the generator's first, it takes the outside point too
    gone = keypoint_causes(clean, None, (64, 64))
    assert gone[:5].tolist() == [4, 4, 4, 4, 4]
    clean[4, 2] = 0
    assert keypoint_causes(clean, noisy, (64, 64))[4] == -1  # not in the truth


def _person(cx: float, cy: float, s: float) -> np.ndarray:
    """(17, 3) COCO keypoints of an upright stick person, all visible."""
    xy = np.array([
        [0, -1.6], [-0.1, -1.7], [0.1, -1.7], [-0.2, -1.65], [0.2, -1.65],
        [-0.4, -1.2], [0.4, -1.2], [-0.5, -0.6], [0.5, -0.6], [-0.55, -0.1], [0.55, -0.1],
        [-0.25, 0], [0.25, 0], [-0.25, 0.8], [0.25, 0.8], [-0.25, 1.6], [0.25, 1.6],
    ])  # fmt: skip
    kps = np.concatenate([xy * s + [cx, cy], np.full((17, 1), 2.0)], axis=1)
    return np.round(kps, 2)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    """A clean/noisy pair with all four failures and a cache store built from the noisy file."""
    root = tmp_path_factory.mktemp("synth")
    (root / "img").mkdir()
    cv2.imwrite(str(root / "img" / "a.png"), np.full((64, 64, 3), 90, np.uint8))
    a = _person(30, 30, 11)
    a[15:17, 1] = 65.0  # ankles just below the 64 px image, inside the crop
    a[15:17, 2] = 1  # outside points carry v = 1 in keypoints_all
    a[7, 2] = 1  # left elbow occluded
    b = _person(46, 34, 9)  # a second person, left unannotated
    clean_anns, noisy_anns = [], []
    for ann_id, kps in ((1, a), (2, b)):
        inside = (kps[:, 0] < 63.5) & (kps[:, 1] < 63.5)
        visible = kps.copy()
        visible[~inside, 2] = 0
        base = {
            "id": ann_id,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [float(kps[:, 0].min()), 20.0, 20.0, 40.0],
        }  # bbox centre y = 40 = crop centre
        clean_anns.append(
            base | {"keypoints": visible.ravel().tolist(), "keypoints_all": kps.ravel().tolist()}
        )
    noisy = a.copy()
    noisy[15:17] = 0  # failure 1
    noisy[7] = 0  # failure 2
    noisy[10] = 0  # failure 3: right wrist, visible, missed
    noisy_anns.append(clean_anns[0] | {"keypoints": noisy.ravel().tolist()})
    del noisy_anns[0]["keypoints_all"]
    image = {"id": 1, "file_name": "a.png", "width": 64, "height": 64}
    files = {}
    for name, anns in (("clean", clean_anns), ("noisy", noisy_anns)):
        files[name] = root / f"{name}.json"
        files[name].write_text(json.dumps({"images": [image], "annotations": anns}))
    render = RenderConfig(input_size=64, stride=4, sigma=3.0)
    cache = root / "cache.zarr"
    build_gt_store(
        files["noisy"],
        root / "img",
        cache,
        render=render,
        augment=AugmentConfig(
            flip_prob=1.0, max_rotate_deg=0, scale_min=1, scale_max=1, center_jitter=0
        ),
        build=BuildConfig(views_per_image=2, samples_per_shard=1),
        progress=False,
    )
    # a perfect teacher: the clean truth rendered into each stored crop
    group = zarr.open_group(str(cache), mode="r+")
    attrs = store_attrs(group)
    create_maps(group, "teacher", attrs)
    create_progress(group, "teacher", 2)
    clean_parts = SK.from_coco(np.stack([a, b]))
    for i in range(2):
        crop = warp_parts(
            clean_parts,
            group["meta/affine"][i],
            flipped=bool(group["meta/flipped"][i]),
            skeleton=SK,
        )
        heat, pafs = render_targets(crop, cfg=render, skeleton=SK)
        group["teacher/heatmaps"][i : i + 1] = quantize(heat[None])
        group["teacher/pafs"][i : i + 1] = quantize(pafs[None])
        mark_block_done(group, "teacher", i)
    update_attrs(group, stages=["gt", "teacher"])
    return files | {"cache": cache}


def test_clean_truth_pairs_files_and_refuses_others(synthetic) -> None:
    truth = load_clean_truth(synthetic["clean"], synthetic["noisy"], skeleton=SK)
    assert truth.keypoints_removed == {
        "out_of_image": 2,
        "severely_occluded": 1,
        "missed_visible": 1,
        "unannotated": 17,
    }
    causes = truth.causes[1]
    assert causes.shape == (2, 18) and (causes[1] == 4).all()
    with pytest.raises(LcposeError, match="has no 'keypoints_all'"):
        load_clean_truth(synthetic["noisy"], synthetic["noisy"], skeleton=SK)


def test_recovery_per_failure_with_a_perfect_teacher(synthetic, tmp_path: Path) -> None:
    flipped = zarr.open_group(str(synthetic["cache"]))["meta/flipped"][:]
    assert flipped.all()  # the replay goes through the flip
    attrs = run_correct(
        synthetic["cache"],
        tmp_path / "lc.zarr",
        mode="max",
        clean=synthetic["clean"],
        progress=False,
    )
    truth = attrs["analytics"]["truth"]
    assert truth["file"]["sha256"] and truth["file"]["keypoints_removed"]["severely_occluded"] == 1
    for kind in ("heatmaps", "pafs"):
        t = truth[kind]
        for failure in ("out_of_image", "severely_occluded", "missed_visible", "unannotated"):
            assert t["missing"][failure] > 1.0, (kind, failure)
            assert t["recovered_fraction"][failure] == pytest.approx(1.0), (kind, failure)
        assert t["false_additions"] == 0.0
        assert sum(v for k, v in t["missing"].items() if k != "total") == pytest.approx(
            t["missing"]["total"]
        )
    base = run_correct(
        synthetic["cache"],
        tmp_path / "gt.zarr",
        mode="gt",
        clean=synthetic["clean"],
        progress=False,
    )["analytics"]["truth"]
    assert base["heatmaps"]["recovered"]["total"] == 0 and base["pafs"]["recovered"]["total"] == 0
    assert base["heatmaps"]["missing"] == truth["heatmaps"]["missing"]


def test_false_additions_count_mass_the_truth_lacks(synthetic, tmp_path: Path) -> None:
    src = tmp_path / "src.zarr"
    shutil.copytree(synthetic["cache"], src)
    g = zarr.open_group(str(src), mode="r+")
    heat = g["teacher/heatmaps"][:]
    heat[:, 0, 0, 0] = 0.5  # a nose in the top-left corner, where nobody is
    g["teacher/heatmaps"][:] = heat
    attrs = run_correct(
        src, tmp_path / "lc.zarr", mode="max", clean=synthetic["clean"], progress=False
    )
    masks = g["masks"][:]
    assert attrs["analytics"]["truth"]["heatmaps"]["false_additions"] == pytest.approx(
        0.5 * masks[:, 0, 0].sum()
    )


# ---------------------------------------------------------------------------------------
# CLI: correct, inspect, show; referenced and copied inputs; the trainer reads both


@pytest.mark.parametrize("copy", [False, True])
def test_cli_correct_inspect_show(synthetic, tmp_path: Path, copy: bool) -> None:
    runner = CliRunner()
    out = tmp_path / "lc.zarr"
    args = [
        "correct",
        str(synthetic["cache"]),
        "--mode",
        "kd+lc",
        "--lam",
        "0.5",
        "--out",
        str(out),
        "--clean",
        str(synthetic["clean"]),
        "--no-progress",
    ]
    result = runner.invoke(cli, args + (["--copy-inputs"] if copy else []))
    assert result.exit_code == 0, result.output
    assert "mode kd+lc" in result.output and "recovered by failure" in result.output
    attrs = read_attrs(out)
    assert attrs["complete"] is True
    group = zarr.open_group(str(out), mode="r")
    assert ("images" in group) == copy and ("masks" in group) == copy
    if copy:
        src = zarr.open_group(str(synthetic["cache"]), mode="r")
        for name in cr.INPUT_ARRAYS:
            np.testing.assert_array_equal(group[name][:], src[name][:])
    result = runner.invoke(cli, ["inspect", str(out)])
    assert result.exit_code == 0, result.output
    assert "correction analytics over 2 samples" in result.output
    assert "target/heatmaps" in result.output
    png = tmp_path / "show.png"
    result = runner.invoke(cli, ["show", str(out), "--index", "1", "--out", str(png)])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(png))
    assert image is not None and image.shape[1] > 3 * image.shape[0] / 2  # 4 panels wide
    result = runner.invoke(cli, ["show", str(out), "--index", "2", "--out", str(png)])
    assert result.exit_code == 1 and "--index 2: the store has samples 0..1" in result.output
    from lcdata.store.training import open_training_store

    spec = open_training_store(out)
    assert spec.target == "target"
    assert spec.arrays["images"][0] == (out if copy else synthetic["cache"].resolve())


def test_show_on_a_cache_store_and_a_moved_pair(synthetic, tmp_path: Path) -> None:
    png = render_figure(synthetic["cache"], 0, tmp_path / "cache.png")
    assert cv2.imread(str(png)).shape[1] > 2 * cv2.imread(str(png)).shape[0] / 2  # 3 panels
    shutil.copytree(synthetic["cache"], tmp_path / "a" / "cache.zarr")
    run_correct(
        tmp_path / "a" / "cache.zarr", tmp_path / "a" / "lc.zarr", mode="max", progress=False
    )
    shutil.move(tmp_path / "a", tmp_path / "b")  # the pair moves together
    # the absolute path is gone; the relative one finds the source next to the store
    assert resolve_source_store(tmp_path / "b" / "lc.zarr") == (tmp_path / "b" / "cache.zarr")
    assert cv2.imread(str(render_figure(tmp_path / "b" / "lc.zarr", 1, png))) is not None
    update_attrs(zarr.open_group(str(tmp_path / "b" / "cache.zarr"), mode="r+"), seed=99)
    with pytest.raises(LcposeError, match="changed since the correction"):
        resolve_source_store(tmp_path / "b" / "lc.zarr")
    shutil.rmtree(tmp_path / "b" / "cache.zarr")
    with pytest.raises(LcposeError, match="not found .*use --copy-inputs"):
        render_figure(tmp_path / "b" / "lc.zarr", 1, png)


def test_paf_choice_in_float32_equals_float64_on_the_stored_grid() -> None:
    """Eq. 3's comparison runs in float32 on stored values; it must match float64 exactly,
    near-ties included (lengths differing by one grid step)."""
    rng = np.random.default_rng(0)
    n, c, h, w = 64, 38, 8, 8
    gt = quantize(rng.uniform(-3.9, 3.9, (n, c, h, w)))
    teacher = gt.copy()
    # nudge some teacher components by one 2^-9 step (near-ties), keep others exactly equal
    nudge = rng.integers(-1, 2, gt.shape) * QUANT_STEP
    teacher = quantize(teacher.astype(np.float32) + nudge)
    swap = rng.random((n, c // 2, h, w)) < 0.3  # (x, y) -> (y, x): same length, other vector
    tr = np.moveaxis(teacher.reshape(n, c // 2, 2, h, w), 2, -1)  # a view: (n, L, h, w, 2)
    tr[swap] = tr[swap][:, ::-1]
    fast = paf_keeps_gt(gt.astype(np.float32), teacher.astype(np.float32))
    exact = paf_keeps_gt(gt.astype(np.float64), teacher.astype(np.float64))
    np.testing.assert_array_equal(fast, exact)
    assert 0 < fast.mean() < 1
