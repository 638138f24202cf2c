"""Label correction: training targets from a teacher cache, computed out of core with dask.

A *cache store* holds, sample for sample, the crops, the ignore masks, the ground truth
`gt/*` and the teacher's outputs `teacher/*` (docs/store.md). `lcdata correct` turns them
into a *corrected store* with `target/heatmaps` and `target/pafs`, which `trainer fit`
trains on. Every variant of the paper is one mode:

    gt        y = y_GT                                                 (eq. 1, baseline)
    max       H_k = max(H_GT_k, H_T_k) for every part k                (eq. 2)
              L_l = L_GT_l where ||L_GT_l|| > ||L_T_l||, else L_T_l     (eq. 3)
    heatmaps  H as in `max`, L = L_GT                                  (Table 2 ablation)
    pafs      H = H_GT, L as in `max`                                  (Table 2 ablation)
    kd        y = (1 - lam) y_GT + lam T, every channel                (eq. 5 as a target)
    kd+lc     y = (1 - lam) y_LC + lam T, y_LC = the `max` target      (eq. 6 as a target)

Letters used in shapes below:
    N     samples;  B  samples per shard (one dask block = one zarr shard)
    K+1   heatmap channels, parts first, background last
    2L    PAF channels, channel 2l = x and 2l+1 = y of limb l
    h, w  output grid in cells

Rules worth stating (docs/correction.md has the reasoning):
- Eq. 3 compares the *whole* (x, y) vector of a limb: both channels of limb l come from the
  same source. The comparison is strict, so a tie (equal lengths, zero vectors included)
  goes to the teacher. Lengths are compared as squared norms computed in float32, which is
  exact for the stored values (multiples of 2^-9 in float16, |x| < 4), so ties are real ties.
- Background of a corrected heatmap (`background`): "recompute" (default) = 1 - max of the
  corrected parts, the definition the GT uses; "min" and "max" take min / max of the GT and
  teacher backgrounds and reproduce the July and November 2018 versions of the first
  author's code. No clipping: a teacher part above 1 gives a background below 0.
- KD blends whole outputs, background channel included: (5) puts every output channel in
  both loss terms, and only blending every channel keeps the target's gradient equal to
  eq. 5's (tests/test_correct.py proves it on the training loss).
- Targets are computed everywhere; the ignore mask is applied by the loss (W in eq. 1), so
  masked pixels of a target hold well-defined values that simply get no gradient.
- A target is `quantize(f(stored arrays))`: f runs in float32 on the float16 values read
  from the store (blend: `(1 - lam) * y + lam * t` with lam rounded to float32), then is
  rounded to the 2^-9 grid like every map in the store. Anyone can recompute it exactly
  with numpy from the arrays (see `correct_heatmaps`, `correct_pafs`, `blend`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr
from tqdm import tqdm

from lcdata import store as st
from lcdata.analytics import (
    STATS_DIR,
    AnalyticsSetup,
    CleanTruth,
    analytics_setup,
    collect_analytics,
    save_shard_stats,
    shard_stats,
    sum_stats,
)
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.inspect import open_dask
from lcdata.skeleton import Skeleton

MODES: tuple[str, ...] = ("gt", "max", "heatmaps", "pafs", "kd", "kd+lc")
BACKGROUND_RULES: tuple[str, ...] = ("recompute", "min", "max")
DEFAULT_LAMBDA = 0.5
"""The paper's mixing ratio for KD (Table 1: lambda = 0.5 beats lambda = 1)."""

KD_MODES = ("kd", "kd+lc")
GRID_MODES = ("gt", "max", "heatmaps", "pafs")
"""Modes whose targets are maxima, selections and 1 - max of stored values: on the store's
2^-9 grid already (the inputs are, and 1 - x of a grid value is exact), so they are cast to
float16 without quantising again; the KD blends are quantised."""
INPUT_ARRAYS: tuple[str, ...] = (
    "images", "masks", "meta/image_id", "meta/affine", "meta/flipped", "meta/view",
)  # fmt: skip
"""Per-sample arrays a corrected store copies (--copy-inputs) or reads from its source."""

_WRITE_PREFIX = "write-target"
_BLOCK_ELEMENTS = 1 << 19
"""Map elements (heatmaps + PAFs) per sub-block of a shard in the write tasks."""
CONNECT_TIMEOUT_S = 10
"""Seconds to wait for a --scheduler to answer (distributed retries until then)."""


# ---------------------------------------------------------------------------------------
# The correction rules on plain arrays (exact, float32, no I/O)


def correct_heatmaps(
    gt: np.ndarray, teacher: np.ndarray, *, background: str = "recompute"
) -> np.ndarray:
    """Eq. 2: per-pixel max of GT and teacher on the part channels.

    Args:
        gt, teacher: (N, K+1, h, w) float, last channel background.
        background: "recompute" = 1 - max over the corrected parts; "min" / "max" of the
            GT and teacher backgrounds.

    Returns:
        (N, K+1, h, w) float32.
    """
    gt = np.asarray(gt, np.float32)
    teacher = np.asarray(teacher, np.float32)
    out = np.maximum(gt, teacher)
    if background == "recompute":
        out[:, -1] = np.float32(1) - out[:, :-1].max(axis=1)
    elif background == "min":
        out[:, -1] = np.minimum(gt[:, -1], teacher[:, -1])
    elif background != "max":
        raise LcposeError(
            f"--background: unknown rule {background!r} (choose {', '.join(BACKGROUND_RULES)})"
        )
    return out


def squared_lengths(pafs: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """(N, 2L, h, w) PAFs -> (N, L, h, w) x^2 + y^2 of every limb vector, in `dtype`.

    Stored values are multiples of 2^-9 below 4 in magnitude (11 significant bits): their
    squares and the sum of two squares fit float32's 24 bits exactly, so equal lengths
    compare equal in float32.
    """
    pafs = st.as_float32(pafs) if dtype == np.float32 else np.asarray(pafs, dtype)
    x, y = pafs[:, 0::2], pafs[:, 1::2]
    return x * x + y * y


def paf_keeps_gt(gt: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Eq. 3's choice: (N, L, h, w) bool, True where ||L_GT|| > ||L_T|| (strict: ties -> T).

    Args:
        gt, teacher: (N, 2L, h, w) float, channel 2l = x and 2l+1 = y of limb l; compared
            in float32 (exact on the store's grid, `squared_lengths`), in float64 when either
            is float64.
    """
    sq_g, sq_t = _squared_length_pair(gt, teacher)
    return sq_g > sq_t


def _squared_length_pair(gt: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`squared_lengths` of both, in float32, or float64 when either input is float64."""
    gt, teacher = np.asarray(gt), np.asarray(teacher)
    dtype = np.float64 if np.float64 in (gt.dtype, teacher.dtype) else np.float32
    return squared_lengths(gt, dtype), squared_lengths(teacher, dtype)


def correct_pafs(gt: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Eq. 3: each limb's whole (x, y) vector from GT where it is longer, else the teacher's.

    Args:
        gt, teacher: (N, 2L, h, w) float.

    Returns:
        (N, 2L, h, w) float32.
    """
    return _correct_pafs_lengths(gt, teacher)[0]


def _correct_pafs_lengths(
    gt: np.ndarray, teacher: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`correct_pafs`, plus the squared limb lengths of GT and of the result (N, L, h, w),
    which the statistics need too."""
    sq_g, sq_t = _squared_length_pair(gt, teacher)
    keep = sq_g > sq_t  # (N, L, h, w), shared by x and y
    n, c, h, w = gt.shape
    g = st.as_float32(gt).reshape(n, c // 2, 2, h, w)
    t = st.as_float32(teacher).reshape(n, c // 2, 2, h, w)
    out = np.where(keep[:, :, None], g, t).reshape(n, c, h, w)
    return out, sq_g, np.where(keep, sq_g, sq_t)


def blend(y: np.ndarray, teacher: np.ndarray, lam: float) -> np.ndarray:
    """(1 - lam) * y + lam * teacher in float32, lam rounded to float32 (eq. 5/6 targets)."""
    lam32 = np.float32(lam)
    return (np.float32(1) - lam32) * np.asarray(y, np.float32) + lam32 * np.asarray(
        teacher, np.float32
    )


def target_heatmaps(
    gt: np.ndarray,
    teacher: np.ndarray | None = None,
    *,
    mode: str,
    lam: float = DEFAULT_LAMBDA,
    background: str = "recompute",
) -> np.ndarray:
    """(N, K+1, h, w) float16 heatmap targets of `mode`, quantised to the store's 2^-9 grid."""
    return st.quantize(_heatmaps_f32(gt, teacher, mode=mode, lam=lam, background=background))


def target_pafs(
    gt: np.ndarray,
    teacher: np.ndarray | None = None,
    *,
    mode: str,
    lam: float = DEFAULT_LAMBDA,
) -> np.ndarray:
    """(N, 2L, h, w) float16 PAF targets of `mode`, quantised to the store's 2^-9 grid."""
    return st.quantize(_pafs_f32(gt, teacher, mode=mode, lam=lam))


def _heatmaps_f32(
    gt: np.ndarray, teacher: np.ndarray | None, *, mode: str, lam: float, background: str
) -> np.ndarray:
    """`target_heatmaps` before quantisation: (N, K+1, h, w) float32."""
    if mode in ("gt", "pafs"):
        return np.asarray(gt, np.float32)
    if mode in ("max", "heatmaps"):
        return correct_heatmaps(gt, teacher, background=background)
    if mode == "kd":
        return blend(gt, teacher, lam)
    if mode == "kd+lc":
        return blend(correct_heatmaps(gt, teacher, background=background), teacher, lam)
    raise LcposeError(f"--mode: unknown mode {mode!r} (choose {', '.join(MODES)})")


def _pafs_f32(gt: np.ndarray, teacher: np.ndarray | None, *, mode: str, lam: float) -> np.ndarray:
    """`target_pafs` before quantisation: (N, 2L, h, w) float32."""
    if mode in ("gt", "heatmaps"):
        return np.asarray(gt, np.float32)
    if mode in ("max", "pafs"):
        return correct_pafs(gt, teacher)
    if mode == "kd":
        return blend(gt, teacher, lam)
    if mode == "kd+lc":
        return blend(correct_pafs(gt, teacher), teacher, lam)
    raise LcposeError(f"--mode: unknown mode {mode!r} (choose {', '.join(MODES)})")


def _quantize_both(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`st.quantize(maps)` (float16) and the same values in float32."""
    stored = st.quantize(maps)
    return stored, st.to_float32(stored)


def needs_teacher(mode: str) -> bool:
    return mode != "gt"


def check_options(mode: str, lam: float | None, background: str) -> float:
    """Validate mode, lambda and background rule; returns the lambda to use."""
    if mode not in MODES:
        raise LcposeError(f"--mode: unknown mode {mode!r} (choose {', '.join(MODES)})")
    if background not in BACKGROUND_RULES:
        raise LcposeError(
            f"--background: unknown rule {background!r} (choose {', '.join(BACKGROUND_RULES)})"
        )
    if lam is None:
        return DEFAULT_LAMBDA
    if mode not in KD_MODES:
        raise LcposeError(f"--lam applies to modes kd and kd+lc only, not {mode!r}")
    if not 0.0 <= lam <= 1.0 or not np.isfinite(lam):
        raise LcposeError(f"--lam must be in [0, 1], got {lam}")
    return float(lam)


# ---------------------------------------------------------------------------------------
# Lazy targets over a store


def required_arrays(mode: str) -> tuple[str, ...]:
    arrays = ("gt/heatmaps", "gt/pafs")
    if needs_teacher(mode):
        arrays += ("teacher/heatmaps", "teacher/pafs")
    return arrays


def open_source(path: str | Path, mode: str) -> zarr.Group:
    """Open a cache store for correction: complete, with the arrays `mode` needs."""
    attrs = st.read_attrs(path)
    if attrs.get("kind") == "corrected":
        raise LcposeError(
            f"{path}: is a corrected store; correct the cache store it was made from instead"
        )
    group = st.open_store(path, require_complete=True)
    missing = [name for name in required_arrays(mode) if name not in group]
    if missing:
        hint = " (run build-teacher-cache --teacher first)" if "teacher/heatmaps" in missing else ""
        raise LcposeError(
            f"{path}: mode {mode!r} needs {', '.join(missing)}, which the store lacks{hint}"
        )
    return group


def correct_lazy(
    path: str | Path,
    *,
    mode: str,
    lam: float = DEFAULT_LAMBDA,
    background: str = "recompute",
) -> tuple[da.Array, da.Array]:
    """The target maps of a cache store as dask arrays, nothing computed yet.

    Args:
        path: a complete cache store.
        mode, lam, background: see the module docstring.

    Returns:
        heatmaps (N, K+1, h, w) and pafs (N, 2L, h, w), float16, one block per zarr shard of
        the source (so each task reads whole shards and memory stays at a few shards).
    """
    lam = check_options(mode, None if mode not in KD_MODES else lam, background)
    open_source(path, mode)
    gt_h, gt_p = open_dask(path, "gt/heatmaps"), open_dask(path, "gt/pafs")
    teacher = (
        (open_dask(path, "teacher/heatmaps"), open_dask(path, "teacher/pafs"))
        if needs_teacher(mode)
        else ()
    )
    kw_h = {"mode": mode, "lam": lam, "background": background}
    kw_p = {"mode": mode, "lam": lam}
    heat = da.map_blocks(
        target_heatmaps, gt_h, *teacher[:1], dtype=np.float16, token="target-heatmaps", **kw_h
    )
    pafs = da.map_blocks(
        target_pafs, gt_p, *teacher[1:], dtype=np.float16, token="target-pafs", **kw_p
    )
    return heat, pafs


# ---------------------------------------------------------------------------------------
# Source identity and the source_store reference


def store_fingerprint(path: str | Path) -> str:
    """SHA-256 of a store's metadata: every zarr.json, canonical JSON, in path order.

    The metadata holds the shapes, codecs and `lcpose` attributes, which record the
    annotation file's sha256, every render/augment/build setting, the seed and the teacher
    file's sha256: everything that determines the arrays' content, without reading the
    (possibly huge) chunks. Lock files and chunk data are not hashed.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for meta in sorted(root.rglob("zarr.json"), key=lambda p: p.relative_to(root).as_posix()):
        rel = meta.relative_to(root).as_posix()
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LcposeError(f"{meta}: unreadable zarr metadata ({err})") from None
        digest.update(rel.encode() + b"\0")
        digest.update(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    return digest.hexdigest()


def resolve_source_store(path: str | Path, attrs: dict[str, Any] | None = None) -> Path:
    """The cache store a corrected store reads its inputs (images, masks, gt/*, teacher/*) from.

    Tries `source_store` (absolute), then `correction.source_store_relative` (relative to
    the corrected store's own folder, for a pair of stores moved together), then checks the
    source's fingerprint against the one recorded at correction time.

    Raises:
        LcposeError: no source recorded, source not found, or source changed since.
    """
    path = Path(path)
    attrs = attrs if attrs is not None else st.read_attrs(path)
    absolute = attrs.get("source_store")
    if absolute is None:
        raise LcposeError(f"{path}: store records no source_store")
    info = attrs.get("correction", {})
    candidates = [Path(absolute)]
    if info.get("source_store_relative"):
        candidates.append((path / info["source_store_relative"]).resolve())
    for cand in candidates:
        if (cand / "zarr.json").is_file():
            want = info.get("source_sha256")
            if want and store_fingerprint(cand) != want:
                raise LcposeError(
                    f"{path}: source store {cand} changed since the correction (fingerprint "
                    f"differs); re-run lcdata correct"
                )
            return cand
    raise LcposeError(
        f"{path}: source store {absolute} not found (moved or deleted?); the corrected store "
        f"reads images, masks and meta from it (use --copy-inputs for a self-contained store)"
    )


def input_store(path: str | Path, name: str) -> Path:
    """The store holding array `name` for store `path`: itself, or its source store."""
    path = Path(path)
    group = zarr.open_group(str(path), mode="r")
    if name in group:
        return path
    attrs = st.read_attrs(path)
    if attrs.get("source_store") is None:
        raise LcposeError(f"{path}: store has no '{name}' array")
    src = resolve_source_store(path, attrs)
    if name not in zarr.open_group(str(src), mode="r"):
        raise LcposeError(f"{src}: store has no '{name}' array")
    return src


# ---------------------------------------------------------------------------------------
# Writing a corrected store

# attributes a corrected store copies from its cache store (what decides the samples)
_COPIED_ATTRS = (
    "num_samples", "samples_per_shard", "skeleton", "render", "augment", "build", "seed",
    "quant_step", "source", "teacher",
)  # fmt: skip
# correction settings that must agree for --resume to continue
_RESUME_KEYS = ("mode", "lambda", "background", "source_sha256", "inputs")


def corrected_attrs(
    source: Path,
    out: Path,
    src_attrs: dict[str, Any],
    *,
    mode: str,
    lam: float,
    background: str,
    copy_inputs: bool,
) -> dict[str, Any]:
    """The `lcpose` attributes of a corrected store (before `complete` and analytics)."""
    attrs = {key: src_attrs[key] for key in _COPIED_ATTRS if key in src_attrs}
    source_abs = source.resolve()
    attrs.update(
        kind="corrected",
        stages=["target"],
        source_store=str(source_abs),
        correction={
            "mode": mode,
            "lambda": lam if mode in KD_MODES else None,
            "background": background if mode not in ("gt", "pafs", "kd") else None,
            "source_store_relative": os.path.relpath(source_abs, out.resolve()),
            "source_sha256": store_fingerprint(source),
            "source_sha256_scope": "zarr.json metadata of the source store (store_fingerprint)",
            "teacher_sha256": src_attrs.get("teacher", {}).get("sha256"),
            "annotations_sha256": src_attrs.get("source", {}).get("annotations_sha256"),
            "inputs": "copied" if copy_inputs else "referenced",
        },
    )
    return attrs


def _mirror_array(group: zarr.Group, name: str, like: zarr.Array) -> None:
    """Create `name` in `group` with the layout (shape, chunks, shards, codecs) of `like`."""
    group.create_array(
        name,
        shape=like.shape,
        chunks=like.chunks,
        shards=like.shards,
        dtype=like.dtype,
        compressors=like.compressors,
        fill_value=like.fill_value,
        dimension_names=like.metadata.dimension_names,
    )


def _prepare_output(
    out: Path, attrs: dict[str, Any], src: zarr.Group, *, resume: bool, copy_inputs: bool
) -> zarr.Group:
    exists = out.exists() and any(not p.name.startswith(".lcpose-lock") for p in out.iterdir())
    if exists:
        if not resume:
            raise LcposeError(
                f"{out}: output exists; pass --resume to continue an interrupted correction "
                f"or choose another path"
            )
        old = st.read_attrs(out)
        if old.get("kind") != "corrected":
            raise LcposeError(f"{out}: exists and is not a corrected store; refusing to touch it")
        for key in _RESUME_KEYS:
            if old.get("correction", {}).get(key) != attrs["correction"].get(key):
                raise LcposeError(
                    f"{out}: cannot resume: the existing store was made with a different "
                    f"'{key}' ({old.get('correction', {}).get(key)!r} != "
                    f"{attrs['correction'].get(key)!r})"
                )
        group = st.open_store(out, mode="r+", require_complete=False)
        if "progress/target" in group:
            if old.get("complete"):
                return group
            st.update_attrs(group, complete=False)
            return group
        # killed while creating the arrays (progress/target is created last): start afresh
    group = st.new_group(out)  # keeps our lock file, unlike zarr's mode="w"
    group.attrs[st.ATTR_KEY] = {**attrs, "schema_version": st.SCHEMA_VERSION, "complete": False}
    st.create_maps(group, "target", attrs)
    if copy_inputs:
        for name in INPUT_ARRAYS:
            if name in src:
                _mirror_array(group, name, src[name])
    # last: a store with progress/target has every array it writes into
    st.create_progress(
        group, "target", st.num_shards(attrs["num_samples"], attrs["samples_per_shard"])
    )
    return group


@dataclass(frozen=True)
class _ShardJob:
    """What every shard task of one `lcdata correct` run shares (small: it travels with
    each task to the workers).

    Attributes:
        out: the corrected store.
        mode, lam, background: the correction (module docstring).
        samples_per_shard: B; shard s holds samples [s * B, (s + 1) * B).
        copy_from: the cache store whose inputs (`INPUT_ARRAYS`) are copied, or None.
        stats_dir: folder for each shard's analytics statistics (`save_shard_stats`), or
            None to compute none.
        stats_tag, skeleton, cfg: `AnalyticsSetup.tag`, `.skeleton` and `.cfg` (not the
            setup itself: its clean truth is one task argument shared by all tasks).
    """

    out: str
    mode: str
    lam: float
    background: str
    samples_per_shard: int
    copy_from: str | None = None
    stats_dir: str | None = None
    stats_tag: str = ""
    skeleton: Skeleton | None = None
    cfg: RenderConfig | None = None


def _write_target_shard(
    job: _ShardJob, shard: int, blocks: dict[str, np.ndarray], truth: CleanTruth | None = None
) -> int:
    """Compute and write one whole shard of both target arrays, then mark it done.

    Runs inside a dask task (threads, or a distributed worker sharing the filesystem). The
    order is what resume relies on: targets and copied inputs first, then the shard's
    analytics statistics (computed on the blocks already in memory, saved in
    `job.stats_dir`), then the progress flag, so a shard marked done has all of them.

    Args:
        blocks: this shard's blocks of the cache store arrays `required_arrays(job.mode)`
            and, with analytics, `AnalyticsSetup.arrays`.
        truth: the clean truth, when the analytics have one.
    """
    n = len(blocks["gt/heatmaps"])
    heatmaps = np.empty(blocks["gt/heatmaps"].shape, np.float16)
    pafs = np.empty(blocks["gt/pafs"].shape, np.float16)
    parts: list[dict[str, np.ndarray]] = []
    # a few samples at a time: the float32 copies and every temporary of the rules and the
    # statistics then stay in the CPU caches, twice as fast as whole-shard arrays
    step = max(1, _BLOCK_ELEMENTS // (heatmaps[0].size + pafs[0].size))
    kw = {"mode": job.mode, "lam": job.lam}
    meta = [blocks.get(f"meta/{k}") for k in ("image_id", "affine", "flipped")]
    for a in range(0, n, step):
        sl = slice(a, a + step)
        maps = {
            name: st.to_float32(blocks[name][sl])  # exact; shared by targets and statistics
            for name in ("gt/heatmaps", "gt/pafs", "teacher/heatmaps", "teacher/pafs")
            if name in blocks
        }
        gt_h, gt_p = maps["gt/heatmaps"], maps["gt/pafs"]
        h32 = _heatmaps_f32(gt_h, maps.get("teacher/heatmaps"), background=job.background, **kw)
        lengths = None
        if job.mode in ("max", "pafs"):  # eq. 3 computes the lengths the statistics need
            p32, *lengths = _correct_pafs_lengths(gt_p, maps["teacher/pafs"])
        else:
            p32 = _pafs_f32(gt_p, maps.get("teacher/pafs"), **kw)
        # the stored float16 targets; float32 values equal to them for the statistics
        if job.mode in GRID_MODES:
            heatmaps[sl], pafs[sl] = st.to_float16(h32), st.to_float16(p32)
        else:
            (heatmaps[sl], h32), (pafs[sl], p32) = _quantize_both(h32), _quantize_both(p32)
        if job.stats_dir is not None:
            parts.append(
                shard_stats(
                    gt_h,
                    gt_p,
                    h32,
                    p32,
                    blocks["masks"][sl],
                    *(None if x is None else x[sl] for x in meta),
                    truth=truth,
                    cfg=job.cfg,
                    skeleton=job.skeleton,
                    paf_lengths=lengths,
                )
            )
    group = zarr.open_group(job.out, mode="r+")
    start = shard * job.samples_per_shard
    stop = start + len(heatmaps)
    st.write_samples(group, "target/heatmaps", start, heatmaps)
    st.write_samples(group, "target/pafs", start, pafs)
    if job.copy_from is not None:
        src = zarr.open_group(job.copy_from, mode="r")
        for name in INPUT_ARRAYS:
            if name in group:
                st.write_samples(group, name, start, src[name][start:stop])
    if job.stats_dir is not None:
        save_shard_stats(job.stats_dir, shard, sum_stats(parts), tag=job.stats_tag)
    st.mark_shard_done(group, "target", shard)
    return shard


def write_tasks(
    source: Path,
    out: Path,
    shards: list[int],
    *,
    mode: str,
    lam: float,
    background: str,
    copy_inputs: bool,
    samples_per_shard: int,
    analytics: AnalyticsSetup | None = None,
    stats_dir: Path | None = None,
) -> list[Any]:
    """One dask.delayed per pending shard: compute its targets, write them, save its
    analytics statistics (given `analytics` and `stats_dir`), mark it done.

    Each task takes the shard's blocks of the cache store arrays as inputs (one read task
    per block, one block per zarr shard): the GT blocks feed both the targets and the
    statistics, so every array is read once.
    """
    lam = check_options(mode, None if mode not in KD_MODES else lam, background)
    open_source(source, mode)
    names = list(required_arrays(mode))
    job = _ShardJob(
        out=str(out),
        mode=mode,
        lam=lam,
        background=background,
        samples_per_shard=samples_per_shard,
        copy_from=str(source) if copy_inputs else None,
    )
    truth = None
    if analytics is not None and stats_dir is not None:
        names += analytics.arrays
        job = replace(
            job,
            stats_dir=str(stats_dir),
            stats_tag=analytics.tag,
            skeleton=analytics.skeleton,
            cfg=analytics.cfg,
        )
        truth = analytics.task_kwargs().get("truth")
    blocks = {name: open_dask(source, name).to_delayed().ravel() for name in names}
    write = dask.delayed(_write_target_shard, pure=False)
    return [
        write(
            job,
            s,
            {name: blocks[name][s] for name in names},
            truth,
            dask_key_name=f"{_WRITE_PREFIX}-{s}",
        )
        for s in shards
    ]


class _TqdmCallback(dask.callbacks.Callback):
    """Advance a tqdm bar whenever a task whose key starts with `prefix` finishes."""

    def __init__(self, bar: tqdm, prefix: str) -> None:
        super().__init__()
        self._bar = bar
        self._prefix = prefix

    def _posttask(self, key, result, dsk, state, id) -> None:  # dask's signature
        name = key[0] if isinstance(key, tuple) else key
        if str(name).startswith(self._prefix):
            self._bar.update()


def compute_with_progress(
    tasks: list[Any],
    *,
    scheduler: str | None,
    desc: str,
    prefix: str,
    progress: bool,
    num_workers: int | None = None,
) -> list[Any]:
    """Compute dask objects on local threads or a dask.distributed scheduler, with a tqdm bar.

    Args:
        scheduler: None for the local threaded scheduler, else a distributed scheduler
            address such as "tcp://10.0.0.5:8786".
        prefix: key prefix of the tasks the bar counts (one per unit of work).
    """
    bar = tqdm(total=len(tasks), desc=desc, unit="shard", disable=not progress)
    try:
        if not tasks:
            return []
        if scheduler is None:
            with _TqdmCallback(bar, prefix):
                return list(dask.compute(*tasks, scheduler="threads", num_workers=num_workers))
        client = connect(scheduler)
        try:
            from distributed import as_completed

            futures = client.compute(tasks)
            for _ in as_completed(futures, loop=client.loop):
                bar.update()
            return client.gather(futures)
        finally:
            client.close()
    finally:
        bar.close()


def connect(address: str) -> Any:
    """A dask.distributed Client for `address`, with one-line errors."""
    try:
        from distributed import Client
    except ImportError:
        raise LcposeError(
            "--scheduler needs dask.distributed: pip install 'lcpose[distributed]'"
        ) from None
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise LcposeError(f"--scheduler {address}: cannot connect ({err})") from None


def run_correct(
    source: str | Path,
    out: str | Path,
    *,
    mode: str,
    lam: float | None = None,
    background: str = "recompute",
    clean: str | Path | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    copy_inputs: bool = False,
    progress: bool = True,
    num_workers: int | None = None,
) -> dict[str, Any]:
    """Write the corrected store `out` of cache store `source`; returns its attributes.

    Targets are written shard by shard (one dask task per shard, each writing whole
    shards), so the run is out of core, resumable (`resume`: only unwritten shards are
    computed) and runs on a dask.distributed cluster when `scheduler` is an address (the
    workers must see both stores at the same paths). Each shard's task also computes that
    shard's correction analytics (`lcdata.analytics.shard_stats`) from the blocks it holds
    and saves them in `<out>/.lcpose-analytics/` before marking the shard done, so nothing
    is read twice and a resumed run reuses them. At the end the totals (shards without saved
    statistics, e.g. written by an older lcpose, are computed from the stored arrays) go into
    the `analytics` attribute, `complete` is set last and the per-shard files are removed.

    Args:
        source: complete cache store (with teacher arrays unless mode is "gt").
        out: corrected store to create (or finish, with `resume`).
        mode, lam, background: see the module docstring; lam only for kd modes.
        clean: the synthetic benchmark's clean annotation file, for recovered-truth analytics.
        copy_inputs: copy images, masks and meta/* instead of referencing the source.
        num_workers: threads of the local scheduler (default: dask's, the CPU count).
    """
    source, out = Path(source), Path(out)
    lam = check_options(mode, lam, background)
    if out.resolve() == source.resolve():
        raise LcposeError(f"{out}: --out must differ from the cache store")
    src = open_source(source, mode)
    src_attrs = st.store_attrs(src)
    attrs = corrected_attrs(
        source, out, src_attrs, mode=mode, lam=lam, background=background, copy_inputs=copy_inputs
    )
    # before anything is written: a --clean that does not pair fails now, not at the end
    setup = analytics_setup(source, clean)
    with st.write_lock(out):
        # a fresh store starts without a stats folder (`st.new_group` empties the folder);
        # a resumed one keeps the statistics of its written shards
        group = _prepare_output(out, attrs, src, resume=resume, copy_inputs=copy_inputs)
        stats_dir = out / STATS_DIR
        todo = st.pending_shards(group, "target")
        tasks = write_tasks(
            source,
            out,
            todo,
            mode=mode,
            lam=lam,
            background=background,
            copy_inputs=copy_inputs,
            samples_per_shard=attrs["samples_per_shard"],
            analytics=setup,
            stats_dir=stats_dir,
        )
        compute_with_progress(
            tasks,
            scheduler=scheduler,
            desc=f"correct {mode}",
            prefix=_WRITE_PREFIX,
            progress=progress,
            num_workers=num_workers,
        )
        if not st.stage_complete(group, "target"):
            raise LcposeError(f"{out}: some target shards were not written; run with --resume")
        analytics = collect_analytics(
            source, out, setup=setup, saved=stats_dir, scheduler=scheduler, progress=progress
        )
        st.update_attrs(group, analytics=analytics)
        st.finalize(group, ("target",))
        # the totals are in the attributes now; a later --resume recomputes them
        shutil.rmtree(stats_dir, ignore_errors=True)
        return st.store_attrs(group)
