"""The teacher pass: run an exported teacher over a GT store's crops into `teacher/*`.

Given a cache store whose GT stage is written, `run_teacher_pass` adds
    teacher/heatmaps  (N, K+1, h, h) float16   the teacher's last stage, quantised to 2^-9
    teacher/pafs      (N, 2L, h, h)  float16
    progress/teacher  (N / B,)       uint8     1 once shard s is written
aligned sample for sample with `images`, `masks` and `gt/*`; nothing is re-cropped or
re-rendered, so teacher and student see the identical crop.

Work is done shard by shard (B samples, the unit of writing, resume and `--shard i/n`
splitting). Three things overlap: a reader thread decompresses the next shards' crops, the
calling thread runs batched inference (batches never straddle a shard, so a shard's outputs
do not depend on where a run started), and a writer thread quantises, compresses and writes
the previous shard and then marks it done. A shard marked done is complete on disk, so a
killed pass resumes exactly where it stopped.

`build_teacher_cache` is the one-pass build (`build-teacher-cache ANNOTATIONS IMAGE_DIR
--teacher T`): worker threads render the GT of the next shards while the teacher infers on
the crops of the current one, straight from memory, and the writer thread writes both. The
store it writes is identical, array for array, to a GT build followed by a teacher pass.

One store never mixes two teachers: the teacher's sha256 is recorded in the attributes, a
pass over a store that holds another teacher's outputs is refused unless `overwrite`
(which deletes them first), and resuming is only possible with the same file.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from zarr.errors import ContainsArrayError, ContainsGroupError

from lcdata import store as st
from lcdata.build import (
    WORKER_NICENESS,
    BuildConfig,
    exit_with_parent,
    iter_futures,
    load_build_inputs,
    prepare_store,
    read_shard_images,
    render_and_write_shard,
    shard_records,
    write_teacher_shard,
    write_teacher_shard_at,
)
from lcdata.config import AugmentConfig, RenderConfig
from lcdata.errors import LcposeError
from lcdata.skeleton import CMU_SKELETON, Skeleton
from lcdata.teacher import Teacher, check_compatible, load_teacher

MAX_PENDING_WRITES = 2
"""Shards of outputs waiting for the writer: bounds memory to a few shards of float32 maps."""

READ_AHEAD = 2
"""Shards of crops read ahead of inference."""


def teacher_record(teacher: Teacher) -> dict[str, Any]:
    """What the store attributes say about the teacher (file, content hash, export metadata)."""
    return {
        "path": str(teacher.path.resolve()),
        "sha256": teacher.sha256,
        "model_name": teacher.meta.get("model_name"),
        "meta": teacher.meta,
    }


def _prepare_teacher_arrays(
    group: Any,
    out: Path,
    teacher: Teacher,
    *,
    resume: bool,
    overwrite: bool,
    part: tuple[int, int] | None,
) -> None:
    """Create, keep (resume/join) or replace the teacher arrays, never mixing two teachers."""
    attrs = st.store_attrs(group)
    existing = attrs.get("teacher") or {}
    present = [n for n in ("teacher/heatmaps", "teacher/pafs", "progress/teacher") if n in group]
    if present and overwrite:
        # incomplete first, so a crash between deleting and rewriting never looks complete
        st.update_attrs(group, complete=False)
        for name in present:
            del group[name]
        present = []
    elif present:
        if existing.get("sha256") != teacher.sha256:
            raise LcposeError(
                f"{out}: already holds outputs of teacher {existing.get('path')} (sha256 "
                f"{str(existing.get('sha256'))[:12]}...), not of {teacher.path}; pass "
                f"--overwrite-teacher to replace them, or build a new store"
            )
        if not resume and part is None:
            progress = group["progress/teacher"] if "progress/teacher" in group else None
            done = "?" if progress is None else int(np.asarray(progress[:]).sum())
            total = "?" if progress is None else progress.shape[0]
            raise LcposeError(
                f"{out}: already holds this teacher's outputs ({done}/{total} shards); pass "
                f"--resume to finish an interrupted pass or --overwrite-teacher to recompute"
            )
        if len(present) < 3 and part is None:
            # a pass killed while creating its arrays: nothing in them is marked, start over
            # (only a whole-store writer may: a slice could be watching another create them)
            for name in present:
                del group[name]
            present = []
    stages = list(attrs.get("stages", ["gt"]))
    if "teacher" not in stages:
        stages.append("teacher")
    # the record is written before the arrays, so teacher arrays never exist without it
    st.update_attrs(group, teacher=teacher_record(teacher), stages=stages, complete=False)
    if not present:
        try:
            st.create_maps(group, "teacher", attrs)
            st.create_progress(
                group, "teacher", st.num_shards(attrs["num_samples"], attrs["samples_per_shard"])
            )
        except (ContainsArrayError, ContainsGroupError):
            # another --shard slice created them between our check and now
            if (st.store_attrs(group).get("teacher") or {}).get("sha256") != teacher.sha256:
                raise LcposeError(
                    f"{out}: another process started a different teacher on this store"
                ) from None


def _check_pass_options(batch_size: int, *, overwrite: bool, part: tuple[int, int] | None) -> None:
    """Options every teacher pass (alone or in the one-pass build) refuses."""
    if batch_size < 1:
        raise LcposeError(f"--batch-size must be >= 1, got {batch_size}")
    if overwrite and part is not None:
        raise LcposeError(
            "--overwrite-teacher cannot be combined with --shard (slices would race to "
            "delete the old outputs); replace the teacher in one process, or build a new store"
        )


def predict_shard(
    teacher: Teacher, images: np.ndarray, *, batch_size: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher outputs of one shard's crops, in batches of `batch_size` (float32).

    Args:
        images: (B, S, S, 3) uint8 crops.
        where: names the store and shard in error messages.

    Returns:
        heatmaps (B, K+1, h, h), pafs (B, 2L, h, h) float32.
    """
    heat, pafs = [], []
    for start in range(0, len(images), batch_size):
        try:
            h, p = teacher.predict(images[start : start + batch_size])
        except LcposeError as err:
            raise LcposeError(f"{where}, samples from {start}: {err}") from None
        heat.append(h)
        pafs.append(p)
    return np.concatenate(heat), np.concatenate(pafs)


def _write_shard(group: Any, shard: int, start: int, heat: np.ndarray, pafs: np.ndarray) -> None:
    write_teacher_shard(group, shard, start, st.quantize(heat), st.quantize(pafs))


def run_teacher_pass(
    out_path: str | Path,
    teacher_path: str | Path,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    part: tuple[int, int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Add (or finish) the teacher's outputs for every crop of a GT store.

    Args:
        out_path: a cache store whose GT stage is written (for `part`, at least that
            slice's shards).
        teacher_path: exported teacher (.pt2, `trainer export`).
        batch_size: crops per forward pass.
        device: "cpu", "cuda", "cuda:1", ...
        resume: continue the pending shards of the same teacher (same sha256).
        overwrite: delete existing teacher outputs first (another teacher's or this one's).
        part: (i, n) to process only shards s with s % n == i; several processes fill one
            store and the last to finish marks it complete.

    Returns:
        The store attributes afterwards (`complete` is true only once every stage of the
        store has every shard).

    Raises:
        LcposeError: not a cache store, GT not written, incompatible teacher, existing
            outputs without resume/overwrite, or teacher outputs that are NaN/inf or of the
            wrong shape.
    """
    out = Path(out_path)
    _check_pass_options(batch_size, overwrite=overwrite, part=part)
    attrs = st.read_attrs(out)
    if attrs.get("kind") != "cache":
        raise LcposeError(
            f"{out}: the teacher pass needs a cache store, this is {attrs.get('kind')!r}"
        )
    skeleton = Skeleton.from_attrs(attrs["skeleton"])
    render = RenderConfig.from_attrs(attrs["render"])
    teacher = load_teacher(teacher_path, device=device)
    check_compatible(teacher, skeleton=skeleton, render_cfg=render, source=str(out))
    part_or_all = part or (0, 1)
    with st.write_lock(out, part=part):
        group = st.open_store(out, mode="r+", require_complete=False, require=("images",))
        missing_gt = st.pending_shards(group, "gt", part=part_or_all)
        if missing_gt:
            raise LcposeError(
                f"{out}: GT stage incomplete ({len(missing_gt)} shards of this slice unwritten); "
                f"finish it with build-teacher-cache ANNOTATIONS IMAGE_DIR --resume first"
            )
        _prepare_teacher_arrays(group, out, teacher, resume=resume, overwrite=overwrite, part=part)
        n, per = attrs["num_samples"], attrs["samples_per_shard"]
        todo = st.pending_shards(group, "teacher", part=part_or_all)
        images = group["images"]

        def read(shard: int) -> np.ndarray:
            start, stop = st.shard_range(shard, n, per)
            return images[start:stop]

        with ThreadPoolExecutor(max_workers=1) as reader:
            _infer_and_write(
                todo,
                lambda shard: reader.submit(read, shard),
                group=group,
                out=out,
                teacher=teacher,
                per=per,
                batch_size=batch_size,
                desc="teacher",
                progress=progress,
            )
        st.finalize(group, tuple(st.store_attrs(group).get("stages", ("gt", "teacher"))))
        return st.store_attrs(group)


def _infer_and_write(
    shards: list[int],
    submit: Callable[[int], Future],
    *,
    group: Any,
    out: Path,
    teacher: Teacher,
    per: int,
    batch_size: int,
    desc: str,
    progress: bool,
    write_pool: Executor | None = None,
) -> None:
    """Run the teacher on each shard's crops and write its outputs, in shard order.

    `submit(shard)` starts getting the shard's (B, S, S, 3) crops (reading them, or
    rendering and writing the shard's GT first) and returns a future; up to READ_AHEAD
    shards are in flight while this thread infers. One writer thread quantises, compresses
    and writes the outputs, then marks the shard done in progress/teacher; given
    `write_pool` (the one-pass build's worker processes), this thread quantises and the
    pool's processes compress and write, which keeps this process's core for inference.
    """
    bar = tqdm(total=len(shards), desc=desc, unit="shard", disable=not progress)
    writes: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as writer:
        try:
            for shard, crops in iter_futures(shards, submit, ahead=READ_AHEAD):
                heat, pafs = predict_shard(
                    teacher, crops, batch_size=batch_size, where=f"{out}: shard {shard}"
                )
                if write_pool is not None:
                    qh, qp = st.quantize(heat), st.quantize(pafs)
                    job = write_pool.submit(
                        write_teacher_shard_at, str(out), shard, shard * per, qh, qp
                    )
                else:
                    job = writer.submit(_write_shard, group, shard, shard * per, heat, pafs)
                writes.append(job)
                while len(writes) > MAX_PENDING_WRITES:
                    writes.popleft().result()  # bounded queue; re-raises write errors
                bar.update()
            while writes:
                writes.popleft().result()
        finally:
            bar.close()


def build_teacher_cache(
    ann_file: str | Path,
    image_dir: str | Path,
    out_path: str | Path,
    teacher_path: str | Path,
    *,
    render: RenderConfig | None = None,
    augment: AugmentConfig | None = None,
    build: BuildConfig | None = None,
    skeleton: Skeleton = CMU_SKELETON,
    resume: bool = False,
    part: tuple[int, int] | None = None,
    workers: int = 2,
    batch_size: int = 16,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a cache store in one pass: crops, masks, GT and the teacher's outputs.

    Rendering and writing overlap with inference: `workers` threads prepare the GT of the
    next shards while the teacher runs on the current shard's crops (kept in memory, never
    read back). Resuming continues every unfinished shard: a shard whose GT is written but
    whose teacher outputs are not is read back from the store instead of re-rendered.

    Args: as `build_gt_store` and `run_teacher_pass`; `overwrite` replaces the outputs of
    another teacher in an existing store (with `resume`). `workers` is the number of GT
    rendering processes (started with "spawn": a script calling this function needs the
    usual `if __name__ == "__main__":` guard); 0 renders in a thread of this process,
    which shares the GIL with inference and is slower.

    Returns:
        The store attributes afterwards.
    """
    out = Path(out_path)
    _check_pass_options(batch_size, overwrite=overwrite, part=part)
    render = render or RenderConfig()
    augment = augment or AugmentConfig()
    build = build or BuildConfig()
    kw = {"render": render, "augment": augment, "build": build, "skeleton": skeleton}
    records, attrs = load_build_inputs(ann_file, image_dir, **kw)
    # checked before anything is written: a wrong teacher must not leave a GT-only store
    teacher = load_teacher(teacher_path, device=device)
    check_compatible(teacher, skeleton=skeleton, render_cfg=render, source=str(out))
    if part is not None and not resume and out.exists():
        resume = True  # slices share one store: the first creates it, the others join
    part_or_all = part or (0, 1)
    with st.write_lock(out, part=part):
        group = prepare_store(out, attrs, resume=resume, part=part)
        _prepare_teacher_arrays(group, out, teacher, resume=True, overwrite=overwrite, part=part)
        per = attrs["samples_per_shard"]
        gt_todo = set(st.pending_shards(group, "gt", part=part_or_all))
        todo = sorted(gt_todo | set(st.pending_shards(group, "teacher", part=part_or_all)))
        # GT rendering runs in worker processes: in threads it holds the GIL for long
        # stretches of small numpy calls and starves the inference loop. "spawn", because
        # forking a process that runs torch, zarr's event loop and writer threads is unsafe.
        pool: Executor
        if workers > 0:
            pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent,
                initargs=(os.getpid(), WORKER_NICENESS),
            )
        else:
            pool = ThreadPoolExecutor(max_workers=1)
        with pool:

            def submit(shard: int) -> Future:
                start, stop, first, chunk = shard_records(records, shard, build)
                if shard not in gt_todo:
                    return pool.submit(read_shard_images, str(out), start, stop)
                return pool.submit(
                    render_and_write_shard, str(out), shard, chunk, first, start, stop,
                    str(image_dir), render, augment, build, skeleton,
                )  # fmt: skip

            try:
                _infer_and_write(
                    todo,
                    submit,
                    group=group,
                    out=out,
                    teacher=teacher,
                    per=per,
                    batch_size=batch_size,
                    desc="build + teacher",
                    progress=progress,
                    write_pool=pool if workers > 0 else None,
                )
            except BrokenProcessPool:
                raise LcposeError(
                    f"{out}: a GT rendering process died (killed, out of memory, or a "
                    f"script calling build_teacher_cache without an `if __name__ == "
                    f"'__main__':` guard); rerun with --resume, or with --workers 0"
                ) from None
        st.finalize(group, tuple(st.store_attrs(group).get("stages", ("gt", "teacher"))))
        return st.store_attrs(group)
