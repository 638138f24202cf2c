"""The teacher pass: run an exported teacher over a GT store's crops into `teacher/*`.

Given a cache store whose GT stage is written, `run_teacher_pass` adds
    teacher/heatmaps  (N, K+1, h, h) float16   the teacher's last stage, quantised to 2^-9
    teacher/pafs      (N, 2L, h, h)  float16
    progress/teacher  (N / B,)       uint8     1 once block s is written
aligned sample for sample with `images`, `masks` and `gt/*`; nothing is re-cropped or
re-rendered, so teacher and student see the identical crop.

Work is done block by block (B samples, the unit of writing, resume and the `--slice i/n`
split). Three things overlap: a reader thread decompresses the next blocks' crops, the
calling thread runs batched inference (batches never straddle a block, so a block's outputs
do not depend on where a run started), and a writer thread quantises, compresses and writes
the previous block and then marks it done. A block marked done is complete on disk, so a
killed pass resumes exactly where it stopped. The one-pass build (`lcdata.build.one_pass`)
uses the same inference loop with GT rendering in worker processes.

One store never mixes two teachers: the teacher's sha256 is recorded in the attributes, a
pass over a store that holds another teacher's outputs is refused unless `overwrite`
(which deletes them first), and resuming is only possible with the same file.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm
from zarr.errors import ContainsArrayError, ContainsGroupError

from lcdata.build.blocks import write_teacher_block, write_teacher_block_at
from lcdata.build.teacher import Teacher, check_compatible, load_teacher
from lcdata.build.tta import TTAConfig
from lcdata.errors import ConfigError, LcposeError
from lcdata.parallel import iter_futures
from lcdata.store.codec import quantize
from lcdata.store.layout import (
    StoreInfo,
    block_range,
    create_maps,
    create_progress,
    finalize,
    num_blocks,
    open_store,
    pending_blocks,
    store_attrs,
    update_attrs,
)
from lcdata.store.lock import write_lock
from lcdata.store.space import check_space, pending_samples, write_errors

MAX_PENDING_WRITES = 2
"""Blocks of outputs waiting for the writer: bounds memory to a few blocks of float32 maps."""

READ_AHEAD = 2
"""Blocks of crops read ahead of inference."""


def teacher_record(teacher: Teacher) -> dict[str, Any]:
    """What the store attributes say about the teacher (file, content hash, export metadata)."""
    return {
        "path": str(teacher.path.resolve()),
        "sha256": teacher.sha256,
        "model_name": teacher.meta.get("model_name"),
        "meta": teacher.meta,
        "precision": teacher.precision,
        "tta": teacher.tta.to_attrs(),
    }


def prepare_teacher_arrays(
    group: zarr.Group,
    out: Path,
    teacher: Teacher,
    *,
    resume: bool,
    overwrite: bool,
    work_slice: tuple[int, int] | None,
) -> None:
    """Create, keep (resume/join) or replace the teacher arrays, never mixing two teachers."""
    attrs = store_attrs(group)
    existing = attrs.get("teacher") or {}
    present = [n for n in ("teacher/heatmaps", "teacher/pafs", "progress/teacher") if n in group]
    if present and overwrite:
        # incomplete first, so a crash between deleting and rewriting never looks complete
        update_attrs(group, complete=False)
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
        # stores written before the option existed ran the teacher in fp32
        if existing.get("precision", "fp32") != teacher.precision:
            raise LcposeError(
                f"{out}: holds teacher outputs computed in {existing.get('precision', 'fp32')}, "
                f"this pass runs in {teacher.precision}; resume with --teacher-precision "
                f"{existing.get('precision', 'fp32')}, or pass --overwrite-teacher to recompute"
            )
        # stores written before the option existed ran no TTA
        was_tta = existing.get("tta") or TTAConfig().to_attrs()
        if was_tta != teacher.tta.to_attrs():
            was = TTAConfig(was_tta["flip"], tuple(was_tta["scales"])).describe()
            raise LcposeError(
                f"{out}: holds teacher outputs made with --tta {was}, this pass uses --tta "
                f"{teacher.tta.describe()}; resume with --tta {was}, or pass "
                f"--overwrite-teacher to recompute"
            )
        if not resume and work_slice is None:
            progress = group["progress/teacher"] if "progress/teacher" in group else None
            done = "?" if progress is None else int(np.asarray(progress[:]).sum())
            total = "?" if progress is None else progress.shape[0]
            raise LcposeError(
                f"{out}: already holds this teacher's outputs ({done}/{total} blocks); pass "
                f"--resume to finish an interrupted pass or --overwrite-teacher to recompute"
            )
        if len(present) < 3 and work_slice is None:
            # a pass killed while creating its arrays: nothing in them is marked, start over
            # (only a whole-store writer may: a slice could be watching another create them)
            for name in present:
                del group[name]
            present = []
    stages = list(attrs.get("stages", ["gt"]))
    if "teacher" not in stages:
        stages.append("teacher")
    # the record is written before the arrays, so teacher arrays never exist without it
    update_attrs(group, teacher=teacher_record(teacher), stages=stages, complete=False)
    if not present:
        try:
            create_maps(group, "teacher", attrs)
            create_progress(
                group, "teacher", num_blocks(attrs["num_samples"], attrs["samples_per_shard"])
            )
        except (ContainsArrayError, ContainsGroupError):
            # another slice created them between our check and now
            if (store_attrs(group).get("teacher") or {}).get("sha256") != teacher.sha256:
                raise LcposeError(
                    f"{out}: another process started a different teacher on this store"
                ) from None


def teacher_blocks_to_write(
    group: zarr.Group, *, work_slice: tuple[int, int] | None, overwrite: bool
) -> list[int]:
    """Blocks of this slice a teacher pass will write, known before its arrays exist: the
    pending ones of an existing pass, or every block when there is none or it is replaced."""
    if "progress/teacher" in group and not overwrite:
        return pending_blocks(group, "teacher", work_slice=work_slice)
    attrs = store_attrs(group)
    i, k = work_slice or (0, 1)
    return [b for b in range(num_blocks(attrs["num_samples"], attrs["samples_per_shard"]))
            if b % k == i]  # fmt: skip


def teacher_block_arrays(
    group: zarr.Group, heatmaps: np.ndarray, pafs: np.ndarray
) -> dict[str, tuple[zarr.Array, np.ndarray]]:
    """One block of teacher outputs as `lcdata.store.space.encoded_bytes` measures it: the
    quantised maps, laid out as the store's GT maps (the teacher arrays may not exist yet)."""
    return {
        "teacher/heatmaps": (group["gt/heatmaps"], quantize(heatmaps)),
        "teacher/pafs": (group["gt/pafs"], quantize(pafs)),
    }


def check_pass_options(
    batch_size: int, *, overwrite: bool, work_slice: tuple[int, int] | None
) -> None:
    """Options every teacher pass (alone or in the one-pass build) refuses."""
    if batch_size < 1:
        raise ConfigError("run_teacher_pass", "batch_size", f"must be >= 1, got {batch_size}")
    if overwrite and work_slice is not None:
        raise ConfigError(
            "run_teacher_pass",
            "overwrite_teacher",
            "cannot be combined with a work slice (--slice: slices would race to delete the "
            "old outputs); replace the teacher in one process, or build a new store",
        )


def predict_block(
    teacher: Teacher, images: np.ndarray, *, batch_size: int, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Teacher outputs of one block's crops, in batches of `batch_size` (float32).

    Args:
        images: (B, S, S, 3) uint8 crops.
        where: names the store and block in error messages.

    Returns:
        heatmaps (B, K+1, h, h), pafs (B, 2L, h, h) float32.
    """
    heat, pafs = [], []
    for start in range(0, len(images), batch_size):
        try:
            h, p = teacher.predict_views(images[start : start + batch_size])
        except LcposeError as err:
            raise LcposeError(f"{where}, samples from {start}: {err}") from None
        heat.append(h)
        pafs.append(p)
    return np.concatenate(heat), np.concatenate(pafs)


def _quantize_and_write(
    group: zarr.Group, block: int, start: int, heat: np.ndarray, pafs: np.ndarray
) -> None:
    write_teacher_block(group, block, start, quantize(heat), quantize(pafs))


def run_teacher_pass(
    out_path: str | Path,
    teacher_path: str | Path,
    *,
    batch_size: int = 16,
    device: str = "cpu",
    precision: str = "fp32",
    tta: TTAConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    work_slice: tuple[int, int] | None = None,
    space_check: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Add (or finish) the teacher's outputs for every crop of a GT store.

    Args:
        out_path: a cache store whose GT stage is written (for `work_slice`, at least that
            slice's blocks).
        teacher_path: exported teacher (.pt2, `trainer export`).
        batch_size: crops per forward pass.
        device: "cpu", "cuda", "cuda:1", ...
        precision: "fp32" (default), "bf16" or "fp16": autocast for the forward; recorded
            in the store's teacher attributes, since it changes the stored maps.
        tta: test-time augmentation of the teacher (`lcdata.build.tta`; default none),
            recorded as `teacher.tta`.
        resume: continue the pending blocks of the same teacher (same sha256).
        overwrite: delete existing teacher outputs first (another teacher's or this one's).
        work_slice: (i, n) to process only blocks s with s % n == i; several processes fill one
            store and the last to finish marks it complete.
        space_check: refuse before writing when the estimate (the teacher run on one block,
            encoded, `lcdata.store.space`) exceeds the free space; False only reports it.
        progress: progress bar and the estimate line on stderr.

    Returns:
        The store attributes afterwards (`complete` is true only once every stage of the
        store has every block).

    Raises:
        LcposeError: not a cache store, GT not written, incompatible teacher, existing
            outputs without resume/overwrite, or teacher outputs that are NaN/inf or of the
            wrong shape.
    """
    out = Path(out_path)
    check_pass_options(batch_size, overwrite=overwrite, work_slice=work_slice)
    info = StoreInfo.read(out)
    if info.kind != "cache":
        raise LcposeError(f"{out}: the teacher pass needs a cache store, this is {info.kind!r}")
    teacher = load_teacher(teacher_path, device=device, precision=precision, tta=tta)
    check_compatible(teacher, skeleton=info.skeleton, render_cfg=info.render, source=str(out))
    with write_errors(out, "teacher pass"), write_lock(out, work_slice=work_slice):
        group = open_store(out, mode="r+", require_complete=False, require=("images",))
        missing_gt = pending_blocks(group, "gt", work_slice=work_slice)
        if missing_gt:
            raise LcposeError(
                f"{out}: GT stage incomplete ({len(missing_gt)} blocks of this slice unwritten); "
                f"finish it with build-teacher-cache ANNOTATIONS IMAGE_DIR --resume first"
            )
        n, per = info.num_samples, info.samples_per_block
        images = group["images"]

        def read(block: int) -> np.ndarray:
            start, stop = block_range(block, n, per)
            return images[start:stop]

        # measured before the teacher arrays exist: a refused pass leaves the store as it was
        todo = teacher_blocks_to_write(group, work_slice=work_slice, overwrite=overwrite)
        if todo:
            heat, pafs = predict_block(
                teacher, read(todo[0]), batch_size=batch_size, where=f"{out}: block {todo[0]}"
            )
            check_space(
                out,
                "teacher",
                teacher_block_arrays(group, heat, pafs),
                pending_samples=pending_samples(todo, n, per),
                check=space_check,
                report=progress,
            )
        prepare_teacher_arrays(
            group, out, teacher, resume=resume, overwrite=overwrite, work_slice=work_slice
        )
        todo = pending_blocks(group, "teacher", work_slice=work_slice)

        with ThreadPoolExecutor(max_workers=1) as reader:
            infer_and_write(
                todo,
                lambda block: reader.submit(read, block),
                group=group,
                out=out,
                teacher=teacher,
                per=per,
                batch_size=batch_size,
                desc="teacher",
                progress=progress,
            )
        finalize(group, tuple(store_attrs(group).get("stages", ("gt", "teacher"))))
        return store_attrs(group)


def infer_and_write(
    blocks: list[int],
    submit: Callable[[int], Future],
    *,
    group: zarr.Group,
    out: Path,
    teacher: Teacher,
    per: int,
    batch_size: int,
    desc: str,
    progress: bool,
    write_pool: Executor | None = None,
) -> None:
    """Run the teacher on each block's crops and write its outputs, in block order.

    `submit(block)` starts getting the block's (B, S, S, 3) crops (reading them, or
    rendering and writing the block's GT first) and returns a future; up to READ_AHEAD
    blocks are in flight while this thread infers. One writer thread quantises, compresses
    and writes the outputs, then marks the block done in progress/teacher; given
    `write_pool` (the one-pass build's worker processes), this thread quantises and the
    pool's processes compress and write, which keeps this process's core for inference.
    """
    bar = tqdm(total=len(blocks), desc=desc, unit="block", disable=not progress)
    writes: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as writer:
        try:
            for block, crops in iter_futures(blocks, submit, ahead=READ_AHEAD):
                heat, pafs = predict_block(
                    teacher, crops, batch_size=batch_size, where=f"{out}: block {block}"
                )
                if write_pool is not None:
                    qh, qp = quantize(heat), quantize(pafs)
                    job = write_pool.submit(
                        write_teacher_block_at, str(out), block, block * per, qh, qp
                    )
                else:
                    job = writer.submit(_quantize_and_write, group, block, block * per, heat, pafs)
                writes.append(job)
                while len(writes) > MAX_PENDING_WRITES:
                    writes.popleft().result()  # bounded queue; re-raises write errors
                bar.update()
            while writes:
                writes.popleft().result()
        finally:
            bar.close()
