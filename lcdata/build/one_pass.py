"""The one-pass build: GT rendering in worker processes overlapped with the teacher's inference.

`build_teacher_cache` (`lcdata build-teacher-cache ANNOTATIONS IMAGE_DIR --teacher T`)
writes the store that a GT build followed by a teacher pass writes, array for array, in one
pass over the blocks: worker processes render and write the GT of the next blocks while the
teacher infers on the crops of the current one, which come back from the workers in memory
and are never read back from disk.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from lcdata.build.blocks import read_block_images, write_gt_block
from lcdata.build.gt import (
    BuildConfig,
    block_records,
    gt_block_arrays,
    load_build_inputs,
    prepare_store,
    render_samples,
)
from lcdata.build.teacher import Teacher, check_compatible, load_teacher
from lcdata.build.teacher_pass import (
    check_pass_options,
    infer_and_write,
    predict_block,
    prepare_teacher_arrays,
    teacher_block_arrays,
    teacher_blocks_to_write,
)
from lcdata.build.tta import TTAConfig
from lcdata.config import AugmentConfig, RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.coco import ImageRecord
from lcdata.labels.skeleton import CMU_SKELETON, Skeleton
from lcdata.parallel import WORKER_NICENESS, exit_with_parent
from lcdata.store.layout import finalize, pending_blocks, store_attrs
from lcdata.store.lock import write_lock
from lcdata.store.space import (
    SpaceEstimate,
    disk_bytes,
    encoded_bytes,
    free_bytes,
    fs_block_size,
    pending_samples,
    removed_if_refused,
    report_space,
    write_errors,
)


def render_and_write_block(
    out: str,
    block: int,
    records: list[ImageRecord],
    first: int,
    start: int,
    stop: int,
    image_dir: str,
    render: RenderConfig,
    augment: AugmentConfig,
    build: BuildConfig,
    skeleton: Skeleton,
) -> np.ndarray:
    """Render one block, write its GT arrays, mark it done; returns its (B, S, S, 3) crops.

    Runs in a worker process: rendering is mostly small numpy operations that hold the GIL,
    which would stall an inference loop in the same process.
    """
    arrays = render_samples(
        records, first, start, stop, image_dir,
        render=render, augment=augment, build=build, skeleton=skeleton,
    )  # fmt: skip
    write_gt_block(zarr.open_group(out, mode="r+"), block, build.samples_per_shard, arrays)
    return arrays["images"]


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
    work_slice: tuple[int, int] | None = None,
    workers: int = 2,
    batch_size: int = 16,
    device: str = "cpu",
    precision: str = "fp32",
    tta: TTAConfig | None = None,
    space_check: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Build a cache store in one pass: crops, masks, GT and the teacher's outputs.

    Resuming continues every unfinished block: a block whose GT is written but whose teacher
    outputs are not is read back from the store instead of re-rendered.

    Args: as `build_gt_store` and `run_teacher_pass`; `overwrite` replaces the outputs of
    another teacher in an existing store (with `resume`). `workers` is the number of GT
    rendering processes (started with "spawn": a script calling this function needs the
    usual `if __name__ == "__main__":` guard); 0 renders in a thread of this process,
    which shares the GIL with inference and is slower.

    Returns:
        The store attributes afterwards.
    """
    out = Path(out_path)
    check_pass_options(batch_size, overwrite=overwrite, work_slice=work_slice)
    render = render or RenderConfig()
    augment = augment or AugmentConfig()
    build = build or BuildConfig()
    kw = {"render": render, "augment": augment, "build": build, "skeleton": skeleton}
    records, attrs = load_build_inputs(ann_file, image_dir, **kw)
    # checked before anything is written: a wrong teacher must not leave a GT-only store
    teacher = load_teacher(teacher_path, device=device, precision=precision, tta=tta)
    check_compatible(teacher, skeleton=skeleton, render_cfg=render, source=str(out))
    if work_slice is not None and not resume and out.exists():
        resume = True  # slices share one store: the first creates it, the others join
    new = work_slice is None and not out.exists()  # a refusal removes only ours
    with write_errors(out, "build + teacher"), write_lock(out, work_slice=work_slice):
        group = prepare_store(out, attrs, resume=resume, work_slice=work_slice)
        with removed_if_refused(out, new=new):
            _check_space(group, out, records, image_dir, teacher, batch_size, kw, work_slice,
                         overwrite=overwrite, check=space_check, report=progress)  # fmt: skip
        prepare_teacher_arrays(
            group, out, teacher, resume=True, overwrite=overwrite, work_slice=work_slice
        )
        per = attrs["samples_per_shard"]
        gt_todo = set(pending_blocks(group, "gt", work_slice=work_slice))
        todo = sorted(gt_todo | set(pending_blocks(group, "teacher", work_slice=work_slice)))
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

            def submit(block: int) -> Future:
                start, stop, first, chunk = block_records(records, block, build)
                if block not in gt_todo:
                    return pool.submit(read_block_images, str(out), start, stop)
                return pool.submit(
                    render_and_write_block, str(out), block, chunk, first, start, stop,
                    str(image_dir), render, augment, build, skeleton,
                )  # fmt: skip

            try:
                infer_and_write(
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
        finalize(group, tuple(store_attrs(group).get("stages", ("gt", "teacher"))))
        return store_attrs(group)


def _check_space(
    group: zarr.Group,
    out: Path,
    records: list[ImageRecord],
    image_dir: str | Path,
    teacher: Teacher,
    batch_size: int,
    kw: dict[str, Any],
    work_slice: tuple[int, int] | None,
    *,
    overwrite: bool,
    check: bool,
    report: bool,
) -> None:
    """The space estimate of a one-pass build: its first pending block rendered and inferred
    in this process (GT blocks already written count only for their teacher outputs)."""
    attrs = store_attrs(group)
    n, per = attrs["num_samples"], attrs["samples_per_shard"]
    gt_todo = pending_blocks(group, "gt", work_slice=work_slice)
    teacher_todo = teacher_blocks_to_write(group, work_slice=work_slice, overwrite=overwrite)
    if not teacher_todo and not gt_todo:
        return
    block = (gt_todo or teacher_todo)[0]
    start, stop, first, chunk = block_records(records, block, kw["build"])
    arrays = render_samples(chunk, first, start, stop, image_dir, **kw)
    heat, pafs = predict_block(
        teacher, arrays["images"], batch_size=batch_size, where=f"{out}: block {block}"
    )
    fs_block = fs_block_size(out)
    gt_bytes = encoded_bytes(gt_block_arrays(group, arrays), fs_block=fs_block)
    teacher_bytes = encoded_bytes(teacher_block_arrays(group, heat, pafs), fs_block=fs_block)
    gt_n, teacher_n = pending_samples(gt_todo, n, per), pending_samples(teacher_todo, n, per)
    report_space(
        SpaceEstimate(
            store=out,
            stage="gt + teacher",
            total_bytes=(gt_bytes * gt_n + teacher_bytes * teacher_n) // (stop - start),
            samples=max(gt_n, teacher_n),
            free_bytes=free_bytes(out),
            store_bytes=disk_bytes(out),
        ),
        check=check,
        report=report,
    )
