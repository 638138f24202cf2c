"""`lcdata correct`: a cache store -> a corrected store of training targets, out of core with dask.

A *cache store* holds, sample for sample, the crops, the ignore masks, the ground truth
`gt/*` and the teacher's outputs `teacher/*` (docs/store.md). A *corrected store* holds
`target/heatmaps` and `target/pafs` (the rules of `lcdata.correction.rules`), which `trainer
fit` trains on; its crops, masks and meta are read from the cache store it references (or
copied, `copy_inputs`).

One dask task per block of the source (B samples, one zarr chunk) reads that block of every
input array once, computes the targets and the block's analytics statistics from it, writes
whole blocks, saves the statistics and then marks the block done, so a run is out of core,
resumable block by block and runs on a dask.distributed cluster unchanged. A stored target
is `quantize(targets(stored arrays))`, so anyone can recompute it with numpy.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from lcdata.config import RenderConfig
from lcdata.correction.analytics import AnalyticsSetup, analytics_setup, collect_analytics
from lcdata.correction.rules import (
    DEFAULT_LAMBDA,
    GATED_MODES,
    GRID_MODES,
    KD_MODES,
    KEYPOINT_MODES,
    KeypointMerge,
    check_gates,
    check_options,
    needs_teacher,
    required_arrays,
    targets,
    uses_background,
)
from lcdata.correction.stats import STATS_DIR, block_stats, save_block_stats, sum_stats
from lcdata.errors import ConfigError, LcposeError
from lcdata.labels.decode import DecodeConfig
from lcdata.labels.merge import MergeConfig
from lcdata.labels.skeleton import Skeleton
from lcdata.parallel import compute_with_progress
from lcdata.store.codec import quantize, to_float16, to_float32
from lcdata.store.layout import (
    ATTR_KEY,
    SCHEMA_VERSION,
    StoreInfo,
    create_keypoints,
    create_maps,
    create_progress,
    finalize,
    mark_block_done,
    new_group,
    num_blocks,
    open_store,
    pending_blocks,
    read_attrs,
    stage_complete,
    store_attrs,
    update_attrs,
    write_samples,
)
from lcdata.store.lock import write_lock
from lcdata.store.refs import open_dask, store_fingerprint
from lcdata.store.resume import first_difference, has_content
from lcdata.store.space import check_space, pending_samples, removed_if_refused, write_errors
from lcdata.synth.truth import CleanTruth

INPUT_ARRAYS: tuple[str, ...] = (
    "images", "masks", "meta/image_id", "meta/affine", "meta/flipped", "meta/view",
    "meta/keypoints", "meta/num_persons",
)  # fmt: skip
"""Per-sample arrays a corrected store copies (--copy-inputs) or reads from its source."""

_WRITE_PREFIX = "write-target"
_SUB_BLOCK_ELEMENTS = 1 << 19
"""Map elements (heatmaps + PAFs) per piece of a block in the write tasks: the float32
copies and every temporary of the rules and the statistics then stay in the CPU caches."""


def open_source(path: str | Path, mode: str) -> zarr.Group:
    """Open a cache store for correction: complete, with the arrays `mode` needs."""
    attrs = read_attrs(path)
    if attrs.get("kind") == "corrected":
        raise LcposeError(
            f"{path}: is a corrected store; correct the cache store it was made from instead"
        )
    group = open_store(path, require_complete=True)
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
    gates: tuple[float, float] | None = None,
) -> tuple[da.Array, da.Array]:
    """The stored targets of a cache store as dask arrays, nothing computed yet.

    Args:
        path: a complete cache store.
        mode, lam, background, gates: see `lcdata.correction.rules`.

    Returns:
        heatmaps (N, K+1, h, w) and pafs (N, 2L, h, w), float16 quantised as stored, one
        dask block per store block (each task reads whole blocks).
    """
    lam = check_options(mode, None if mode not in KD_MODES else lam, background)
    gates = check_gates(mode, gates if mode in GATED_MODES else None)
    if mode in KEYPOINT_MODES:
        raise ConfigError(
            "correct_lazy", "mode", f"{mode!r} decodes each sample; write it with lcdata correct"
        )
    open_source(path, mode)
    kw = {"mode": mode, "lam": lam, "background": background, "gates": gates}
    teacher = needs_teacher(mode)

    def lazy(kind: str) -> da.Array:
        gt = open_dask(path, f"gt/{kind}")
        args = (gt, open_dask(path, f"teacher/{kind}")) if teacher else (gt,)

        def one(g: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
            pair = {"heatmaps": (g, None, t, None), "pafs": (None, g, None, t)}[kind]
            return quantize(getattr(targets(*pair, **kw), kind))

        return da.map_blocks(one, *args, dtype=np.float16, token=f"target-{kind}")

    return lazy("heatmaps"), lazy("pafs")


# ---------------------------------------------------------------------------------------
# Writing a corrected store

# attributes a corrected store copies from its cache store (what decides the samples)
_COPIED_ATTRS = (
    "num_samples", "samples_per_shard", "skeleton", "render", "augment", "build", "seed",
    "quant_step", "source", "teacher", "max_persons",
)  # fmt: skip
# correction settings that must agree for --resume to continue
_RESUME_KEYS = ("mode", "lambda", "background", "gates", "merge", "source_sha256", "inputs")


def corrected_attrs(
    source: Path,
    out: Path,
    src_attrs: dict[str, Any],
    *,
    mode: str,
    lam: float,
    background: str,
    copy_inputs: bool,
    gates: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The `lcpose` attributes of a corrected store (before `complete` and analytics)."""
    attrs = {key: src_attrs[key] for key in _COPIED_ATTRS if key in src_attrs}
    km = keypoint_merge(src_attrs) if mode in KEYPOINT_MODES else None
    source_abs = source.resolve()
    attrs.update(
        kind="corrected",
        stages=["target"],
        source_store=str(source_abs),
        correction={
            "mode": mode,
            "lambda": lam if mode in KD_MODES else None,
            "background": background if uses_background(mode) else None,
            "gates": list(gates) if mode in GATED_MODES and gates is not None else None,
            "merge": km.merge.to_attrs() if km is not None else None,
            "decode": km.decode.to_attrs() if km is not None else None,
            "source_store_relative": os.path.relpath(source_abs, out.resolve()),
            "source_sha256": store_fingerprint(source),
            "source_sha256_scope": "zarr.json metadata of the source store (store_fingerprint)",
            "teacher_sha256": src_attrs.get("teacher", {}).get("sha256"),
            "annotations_sha256": src_attrs.get("source", {}).get("annotations_sha256"),
            "inputs": "copied" if copy_inputs else "referenced",
        },
    )
    return attrs


def keypoint_merge(attrs: dict[str, Any]) -> KeypointMerge:
    """The merge of the keypoint modes for a store with these attributes (the defaults of
    `MergeConfig` and `DecodeConfig`; the store's render geometry and skeleton)."""
    info = StoreInfo.from_attrs("", attrs)
    merge = MergeConfig()
    return KeypointMerge(
        merge=merge,
        decode=DecodeConfig(),
        render=info.render,
        skeleton=info.skeleton,
        max_persons=int(attrs.get("max_persons", 0)) + merge.max_added,
    )


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
    """Create the corrected store, or reopen it for --resume after checking its settings."""
    if has_content(out):
        if not resume:
            raise LcposeError(
                f"{out}: output exists; pass --resume to continue an interrupted correction "
                f"or choose another path"
            )
        old = read_attrs(out)
        if old.get("kind") != "corrected":
            raise LcposeError(f"{out}: exists and is not a corrected store; refusing to touch it")
        was, now = old.get("correction", {}), attrs["correction"]
        key = first_difference(was, now, _RESUME_KEYS)
        if key is not None:
            raise LcposeError(
                f"{out}: cannot resume: the existing store was made with a different "
                f"'{key}' ({was.get(key)!r} != {now.get(key)!r})"
            )
        group = open_store(out, mode="r+", require_complete=False)
        if "progress/target" in group:
            if not old.get("complete"):
                update_attrs(group, complete=False)
            return group
        # killed while creating the arrays (progress/target is created last): start afresh
    group = new_group(out)  # keeps our lock file, unlike zarr's mode="w"
    group.attrs[ATTR_KEY] = {**attrs, "schema_version": SCHEMA_VERSION, "complete": False}
    create_maps(group, "target", attrs)
    if attrs["correction"]["mode"] in KEYPOINT_MODES:
        km = keypoint_merge(attrs)
        create_keypoints(
            group, "target", num_samples=attrs["num_samples"], max_persons=km.max_persons,
            num_parts=km.skeleton.num_parts, per_block=attrs["samples_per_shard"],
        )  # fmt: skip
    if copy_inputs:
        for name in INPUT_ARRAYS:
            if name in src:
                _mirror_array(group, name, src[name])
    # last: a store with progress/target has every array it writes into
    create_progress(group, "target", num_blocks(attrs["num_samples"], attrs["samples_per_shard"]))
    return group


@dataclass(frozen=True)
class _BlockJob:
    """What every block task of one `lcdata correct` run shares (small: it travels with
    each task to the workers).

    Attributes:
        out: the corrected store.
        mode, lam, background, gates: the correction (`lcdata.correction.rules`).
        samples_per_block: B; block s holds samples [s * B, (s + 1) * B).
        copy_from: the cache store whose inputs (`INPUT_ARRAYS`) are copied, or None.
        stats_dir: folder for each block's analytics statistics (`save_block_stats`), or
            None to compute none.
        stats_tag, skeleton, cfg: `AnalyticsSetup.tag`, `.skeleton` and `.cfg` (not the
            setup itself: its clean truth is one task argument shared by all tasks).
    """

    out: str
    mode: str
    lam: float
    background: str
    samples_per_block: int
    gates: tuple[float, float] | None = None
    merge: KeypointMerge | None = None
    copy_from: str | None = None
    stats_dir: str | None = None
    stats_tag: str = ""
    skeleton: Skeleton | None = None
    cfg: RenderConfig | None = None


def _write_target_block(
    job: _BlockJob, block: int, arrays: dict[str, np.ndarray], truth: CleanTruth | None = None
) -> int:
    """Compute and write one whole block of both target arrays, then mark it done.

    Runs inside a dask task (threads, or a distributed worker sharing the filesystem). The
    order is what resume relies on: targets and copied inputs first, then the block's
    analytics statistics (computed on the arrays already in memory, saved in
    `job.stats_dir`), then the progress flag, so a block marked done has all of them.

    Args:
        arrays: this block of the cache store arrays `required_arrays(job.mode)` and, with
            analytics, `AnalyticsSetup.arrays`.
        truth: the clean truth, when the analytics have one.
    """
    n = len(arrays["gt/heatmaps"])
    heatmaps = np.empty(arrays["gt/heatmaps"].shape, np.float16)
    pafs = np.empty(arrays["gt/pafs"].shape, np.float16)
    parts: list[dict[str, np.ndarray]] = []
    step = max(1, _SUB_BLOCK_ELEMENTS // (heatmaps[0].size + pafs[0].size))
    kw = {
        "mode": job.mode,
        "lam": job.lam,
        "background": job.background,
        "gates": check_gates(job.mode, job.gates),
        "merge": job.merge,
    }
    merged: list[np.ndarray] = []
    meta = [arrays.get(f"meta/{k}") for k in ("image_id", "affine", "flipped")]
    names = ("gt/heatmaps", "gt/pafs", "teacher/heatmaps", "teacher/pafs")
    for a in range(0, n, step):
        sl = slice(a, a + step)
        # exact float32 copies, shared by the targets and the statistics
        maps = {name: to_float32(arrays[name][sl]) for name in names if name in arrays}
        gt_h, gt_p = maps["gt/heatmaps"], maps["gt/pafs"]
        if job.merge is not None:
            kw["keypoints"] = arrays["meta/keypoints"][sl]
        out = targets(gt_h, gt_p, maps.get("teacher/heatmaps"), maps.get("teacher/pafs"), **kw)
        h32, p32, lengths = out.heatmaps, out.pafs, out.paf_lengths
        if out.keypoints is not None:
            merged.append(out.keypoints)
        # the stored float16 targets, and float32 values equal to them for the statistics;
        # targets of the grid modes are on the store's grid already: a cast, no rounding
        if job.mode in GRID_MODES:
            heatmaps[sl], pafs[sl] = to_float16(h32), to_float16(p32)
        else:
            heatmaps[sl], pafs[sl] = quantize(h32), quantize(p32)
            h32, p32 = to_float32(heatmaps[sl]), to_float32(pafs[sl])
        if job.stats_dir is not None:
            parts.append(
                block_stats(
                    gt_h,
                    gt_p,
                    h32,
                    p32,
                    arrays["masks"][sl],
                    *(None if x is None else x[sl] for x in meta),
                    truth=truth,
                    cfg=job.cfg,
                    skeleton=job.skeleton,
                    paf_lengths=lengths,
                )
            )
    group = zarr.open_group(job.out, mode="r+")
    start = block * job.samples_per_block
    stop = start + len(heatmaps)
    write_samples(group, "target/heatmaps", start, heatmaps)
    write_samples(group, "target/pafs", start, pafs)
    if merged:
        kps = np.concatenate(merged)
        write_samples(group, "target/keypoints", start, kps)
        counts = (kps[..., 2] > 0).any(axis=-1).sum(axis=-1).astype(np.int32)
        write_samples(group, "target/num_persons", start, counts)
    if job.copy_from is not None:
        src = zarr.open_group(job.copy_from, mode="r")
        for name in INPUT_ARRAYS:
            if name in group:
                write_samples(group, name, start, src[name][start:stop])
    if job.stats_dir is not None:
        save_block_stats(job.stats_dir, block, sum_stats(parts), tag=job.stats_tag)
    mark_block_done(group, "target", block)
    return block


def _first_block(
    src: zarr.Group,
    group: zarr.Group,
    block: int,
    per: int,
    *,
    mode: str,
    lam: float,
    background: str,
    copy_inputs: bool,
    gates: tuple[float, float] | None = None,
) -> dict[str, tuple[zarr.Array, np.ndarray]]:
    """One block of what `_write_target_block` writes, for the space estimate."""
    sl = slice(block * per, (block + 1) * per)
    maps = {name: to_float32(src[name][sl]) for name in required_arrays(mode)
            if name.startswith(("gt/", "teacher/"))}  # fmt: skip
    keypoint_kw = {}
    if mode in KEYPOINT_MODES:
        keypoint_kw = {
            "keypoints": src["meta/keypoints"][sl],
            "merge": keypoint_merge(store_attrs(src)),
        }
    out = targets(
        maps["gt/heatmaps"],
        maps["gt/pafs"],
        maps.get("teacher/heatmaps"),
        maps.get("teacher/pafs"),
        mode=mode,
        lam=lam,
        background=background,
        gates=check_gates(mode, gates),
        **keypoint_kw,
    )
    h32, p32 = out.heatmaps, out.pafs
    cast = to_float16 if mode in GRID_MODES else quantize
    block_arrays = {
        "target/heatmaps": (group["target/heatmaps"], cast(h32)),
        "target/pafs": (group["target/pafs"], cast(p32)),
    }
    if out.keypoints is not None:
        block_arrays["target/keypoints"] = (group["target/keypoints"], out.keypoints)
    if copy_inputs:
        block_arrays.update({n: (group[n], src[n][sl]) for n in INPUT_ARRAYS if n in group})
    return block_arrays


def write_tasks(
    source: Path,
    out: Path,
    blocks: list[int],
    *,
    mode: str,
    lam: float,
    background: str,
    copy_inputs: bool,
    samples_per_block: int,
    analytics: AnalyticsSetup | None = None,
    stats_dir: Path | None = None,
    gates: tuple[float, float] | None = None,
) -> list[Any]:
    """One dask.delayed per pending block: compute its targets, write them, save its
    analytics statistics (given `analytics` and `stats_dir`), mark it done.

    Each task takes the block of every cache store array it needs as inputs (one read task
    per array block): the GT blocks feed both the targets and the statistics, so every array
    is read once.
    """
    lam = check_options(mode, None if mode not in KD_MODES else lam, background)
    open_source(source, mode)
    names = list(required_arrays(mode))
    job = _BlockJob(
        out=str(out),
        mode=mode,
        lam=lam,
        background=background,
        samples_per_block=samples_per_block,
        gates=gates,
        merge=keypoint_merge(read_attrs(source)) if mode in KEYPOINT_MODES else None,
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
    delayed = {name: open_dask(source, name).to_delayed().ravel() for name in names}
    write = dask.delayed(_write_target_block, pure=False)
    return [
        write(
            job,
            b,
            {name: delayed[name][b] for name in names},
            truth,
            dask_key_name=f"{_WRITE_PREFIX}-{b}",
        )
        for b in blocks
    ]


def run_correct(
    source: str | Path,
    out: str | Path,
    *,
    mode: str,
    lam: float | None = None,
    background: str = "recompute",
    gates: tuple[float, float] | None = None,
    clean: str | Path | None = None,
    scheduler: str | None = None,
    resume: bool = False,
    copy_inputs: bool = False,
    progress: bool = True,
    num_workers: int | None = None,
    space_check: bool = True,
) -> dict[str, Any]:
    """Write the corrected store `out` of cache store `source`; returns its attributes.

    Targets are written block by block (module docstring). Each block's task also computes
    its correction analytics (`lcdata.correction.stats.block_stats`) from the arrays it
    holds and saves them in `<out>/.lcpose-analytics/` before marking the block done, so
    nothing is read twice and a resumed run reuses them. At the end the totals (blocks
    without saved statistics are computed from the stored arrays) go into the `analytics`
    attribute, `complete` is set last and the per-block files are removed.

    Args:
        source: complete cache store (with teacher arrays unless mode is "gt").
        out: corrected store to create (or finish, with `resume`).
        mode, lam, background: see `lcdata.correction.rules`; lam only for kd modes.
        gates: (tau_h, tau_p) of mode gated (default `DEFAULT_GATES`); gated only.
        clean: the synthetic benchmark's clean annotation file, for recovered-truth analytics.
        scheduler: a dask.distributed scheduler address (its workers must see both stores
            at the same paths), or None for local threads.
        copy_inputs: copy images, masks and meta/* instead of referencing the source.
        num_workers: threads of the local scheduler (default: dask's, the CPU count).
        space_check: refuse before writing when the estimate (the first block corrected and
            encoded, `lcdata.store.space`) exceeds the free space; False only reports it.
        progress: progress bars and the estimate line on stderr.

    Raises:
        LcposeError: bad options or stores, not enough space, or a write error (disk full:
            the store stays incomplete and resumable).
    """
    source, out = Path(source), Path(out)
    lam = check_options(mode, lam, background)
    gates = check_gates(mode, gates) if mode in GATED_MODES or gates is not None else None
    if out.resolve() == source.resolve():
        raise ConfigError("correct", "out", "must differ from the cache store")
    src = open_source(source, mode)
    src_attrs = store_attrs(src)
    attrs = corrected_attrs(
        source, out, src_attrs, mode=mode, lam=lam, background=background,
        copy_inputs=copy_inputs, gates=gates,
    )  # fmt: skip
    # before anything is written: a clean file that does not pair fails now, not at the end
    setup = analytics_setup(source, clean)
    new = not out.exists()
    with write_errors(out, f"correct {mode}"), write_lock(out):
        # a fresh store starts without a stats folder (`new_group` empties the folder); a
        # resumed one keeps the statistics of its written blocks
        group = _prepare_output(out, attrs, src, resume=resume, copy_inputs=copy_inputs)
        stats_dir = out / STATS_DIR
        todo = pending_blocks(group, "target")
        if todo:
            per = attrs["samples_per_shard"]
            first = _first_block(
                src, group, todo[0], per, mode=mode, lam=lam, background=background,
                copy_inputs=copy_inputs, gates=gates,
            )  # fmt: skip
            with removed_if_refused(out, new=new):
                check_space(
                    out,
                    f"correct {mode}",
                    first,
                    pending_samples=pending_samples(todo, attrs["num_samples"], per),
                    check=space_check,
                    report=progress,
                )
        tasks = write_tasks(
            source,
            out,
            todo,
            mode=mode,
            lam=lam,
            background=background,
            copy_inputs=copy_inputs,
            samples_per_block=attrs["samples_per_shard"],
            analytics=setup,
            stats_dir=stats_dir,
            gates=gates,
        )
        compute_with_progress(
            tasks,
            scheduler=scheduler,
            desc=f"correct {mode}",
            prefix=_WRITE_PREFIX,
            progress=progress,
            num_workers=num_workers,
        )
        if not stage_complete(group, "target"):
            raise LcposeError(f"{out}: some target blocks were not written; run with --resume")
        analytics = collect_analytics(
            source, out, setup=setup, saved=stats_dir, scheduler=scheduler, progress=progress
        )
        update_attrs(group, analytics=analytics)
        finalize(group, ("target",))
        # the totals are in the attributes now; a later --resume recomputes them
        shutil.rmtree(stats_dir, ignore_errors=True)
        return store_attrs(group)
