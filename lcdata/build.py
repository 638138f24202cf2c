"""Build the GT crop store: COCO images -> K augmented views each -> crops, masks, GT maps.

Sample order is fixed by the annotation file: sample n = r * K + v is view v of the r-th
image that has a labelled person. Each sample draws from its own generator
`default_rng([seed, image_id, v])`, so the store is identical whatever the number of worker
threads, the resume point or the `--shard i/n` split.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm

from lcdata import store as st
from lcdata.augment import View, sample_view, view_affine, warp_image, warp_mask, warp_parts
from lcdata.coco import ImageRecord, file_sha256, ignore_mask, load_coco, read_image
from lcdata.config import AugmentConfig, RenderConfig
from lcdata.errors import LcposeError
from lcdata.render import render_mask, render_targets
from lcdata.skeleton import CMU_SKELETON, Skeleton


@dataclass(frozen=True)
class BuildConfig:
    """What the GT build does beyond rendering and augmentation.

    Attributes:
        views_per_image: K augmented crops per image.
        seed: root of every sample's random generator.
        samples_per_shard: B, samples per zarr shard (unit of writing, resume and splitting).
        min_keypoints: labelled keypoints a person needs to be a target (else it is masked).
        keypoint_field: annotation field with the keypoints ("keypoints_all" renders the
            synthetic benchmark's clean truth including points outside the image).
        use_masks: False supervises everything (no ignore regions).
    """

    views_per_image: int = 1
    seed: int = 0
    samples_per_shard: int = st.DEFAULT_SAMPLES_PER_SHARD
    min_keypoints: int = 1
    keypoint_field: str = "keypoints"
    use_masks: bool = True

    def __post_init__(self) -> None:
        if self.views_per_image < 1:
            raise LcposeError(f"--views-per-image must be >= 1, got {self.views_per_image}")
        if self.samples_per_shard < 1:
            raise LcposeError(f"--samples-per-shard must be >= 1, got {self.samples_per_shard}")
        if self.seed < 0:
            raise LcposeError(f"--seed must be >= 0, got {self.seed}")


def make_view(
    record: ImageRecord,
    view_index: int,
    *,
    seed: int,
    render: RenderConfig,
    augment: AugmentConfig,
) -> View:
    """The random view `view_index` of an image (replayable from seed and image id)."""
    rng = np.random.default_rng([seed, record.image_id, view_index])
    person = int(rng.integers(len(record.boxes)))
    x, y, w, h = (float(v) for v in record.boxes[person])
    if h <= 1:
        # a box without height: fall back on the labelled keypoints' extent
        pts = record.keypoints[person][record.keypoints[person, :, 2] > 0, :2]
        h = float(np.ptp(pts[:, 1])) if len(pts) else 1.0
    return sample_view(
        rng,
        augment,
        person_center_xy=np.array([x + w / 2, y + h / 2]),
        person_height=h,
        input_size=render.input_size,
    )


def make_sample(
    image: np.ndarray,
    mask: np.ndarray,
    record: ImageRecord,
    view: View,
    *,
    render: RenderConfig,
    skeleton: Skeleton,
) -> dict[str, np.ndarray]:
    """One stored sample: crop, grid mask, GT maps and its augmentation record.

    Args:
        image: (H, W, 3) uint8 RGB. mask: (H, W) uint8, 1 supervise.

    Returns:
        images (S, S, 3) uint8, masks (h, h) uint8, heatmaps (K+1, h, h) float16,
        pafs (2L, h, h) float16, image_id, affine (2, 3) float32, flipped, view (4,) float32.
    """
    s = render.input_size
    affine = view_affine(view, s)
    parts = warp_parts(
        skeleton.from_coco(record.keypoints), affine, flipped=view.flip, skeleton=skeleton
    )
    heatmaps, pafs = render_targets(parts, cfg=render, skeleton=skeleton)
    return {
        "images": warp_image(image, affine, s),
        "masks": render_mask(warp_mask(mask, affine, s), cfg=render),
        "heatmaps": st.quantize(heatmaps),
        "pafs": st.quantize(pafs),
        "image_id": np.int64(record.image_id),
        "affine": affine.astype(np.float32),
        "flipped": np.bool_(view.flip),
        "view": np.array([view.angle_deg, view.scale, *view.center_xy], np.float32),
    }


def labelled_records(records: list[ImageRecord]) -> list[ImageRecord]:
    """Images with at least one labelled person, in file order."""
    return [r for r in records if len(r.keypoints)]


def source_attrs(ann_file: str | Path, image_dir: str | Path) -> dict[str, Any]:
    return {
        "annotations": str(Path(ann_file).resolve()),
        "annotations_sha256": file_sha256(ann_file),
        "image_dir": str(Path(image_dir).resolve()),
    }


def build_attrs(
    *,
    num_samples: int,
    skeleton: Skeleton,
    render: RenderConfig,
    augment: AugmentConfig,
    build: BuildConfig,
    source: dict[str, Any],
) -> dict[str, Any]:
    """The `lcpose` attributes of a GT store (everything that decides its content)."""
    return {
        "kind": "cache",
        "num_samples": num_samples,
        "samples_per_shard": build.samples_per_shard,
        "skeleton": skeleton.to_attrs(),
        "render": render.to_attrs(),
        "augment": augment.to_attrs(),
        "build": asdict(build),
        "seed": build.seed,
        "quant_step": st.QUANT_STEP,
        "source": source,
        "stages": ["gt"],
    }


# Attributes that must agree for --resume to continue a store instead of refusing it.
_RESUME_KEYS = ("num_samples", "samples_per_shard", "skeleton", "render", "augment", "build")


def prepare_store(
    out: str | Path, attrs: dict[str, Any], *, resume: bool, part: tuple[int, int] | None = None
) -> Any:
    """Create the store, or reopen it for --resume after checking it was built the same way."""
    out = Path(out)
    exists = out.exists() and any(not p.name.startswith(".lcpose-lock") for p in out.iterdir())
    if not exists:
        return st.create_cache(out, attrs)
    if not resume:
        raise LcposeError(
            f"{out}: output exists; pass --resume to continue an interrupted build or choose "
            f"another path"
        )
    old = st.read_attrs(out)
    for key in _RESUME_KEYS:
        if old.get(key) != attrs.get(key):
            raise LcposeError(
                f"{out}: cannot resume: the existing store was built with a different '{key}'"
            )
    if old.get("source", {}).get("annotations_sha256") != attrs["source"]["annotations_sha256"]:
        raise LcposeError(f"{out}: cannot resume: the annotation file changed since the build")
    group = st.open_store(out, mode="r+", require_complete=False)
    if "progress/gt" not in group:
        # killed while creating the arrays (progress/gt is created last): nothing was written
        if part is not None:
            raise LcposeError(
                f"{out}: store is being created by another slice, or its creation was killed; "
                f"retry, or resume it once without --shard"
            )
        return st.create_cache(out, attrs)
    return group


def iter_futures(
    shards: list[int], submit: Callable[[int], Future], *, ahead: int = 2
) -> Iterator[tuple[int, Any]]:
    """Yield (shard, result) in order while up to `ahead` later shards are in flight."""
    queue: list[tuple[int, Future]] = []
    todo = iter(shards)
    try:
        for shard in todo:
            queue.append((shard, submit(shard)))
            if len(queue) > ahead:
                break
        while queue:
            shard, future = queue.pop(0)
            result = future.result()
            nxt = next(todo, None)
            if nxt is not None:
                queue.append((nxt, submit(nxt)))
            yield shard, result
    finally:
        for _, future in queue:  # stopped early (error, Ctrl-C): start nothing more
            future.cancel()


def iter_shards(
    shards: list[int],
    produce: Callable[[int], dict[str, np.ndarray]],
    *,
    workers: int,
    ahead: int = 2,
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Yield (shard, produce(shard)) in order, later shards produced by `workers` threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from iter_futures(shards, lambda shard: pool.submit(produce, shard), ahead=ahead)


def load_build_inputs(
    ann_file: str | Path,
    image_dir: str | Path,
    *,
    render: RenderConfig,
    augment: AugmentConfig,
    build: BuildConfig,
    skeleton: Skeleton,
) -> tuple[list[ImageRecord], dict[str, Any]]:
    """The labelled image records of an annotation file and the attributes of its GT store."""
    records = labelled_records(
        load_coco(ann_file, min_keypoints=build.min_keypoints, keypoint_field=build.keypoint_field)
    )
    if not records:
        raise LcposeError(f"{ann_file}: no image has a person with labelled keypoints")
    if not Path(image_dir).is_dir():
        raise LcposeError(f"{image_dir}: image folder not found")
    attrs = build_attrs(
        num_samples=len(records) * build.views_per_image,
        skeleton=skeleton,
        render=render,
        augment=augment,
        build=build,
        source=source_attrs(ann_file, image_dir),
    )
    return records, attrs


def render_samples(
    records: list[ImageRecord],
    first: int,
    start: int,
    stop: int,
    image_dir: str | Path,
    *,
    render: RenderConfig,
    augment: AugmentConfig,
    build: BuildConfig,
    skeleton: Skeleton,
) -> dict[str, np.ndarray]:
    """Samples [start, stop) stacked (see `make_sample`); `records` starts at record `first`
    and covers every image of those samples (sample n is view n % K of record n // K)."""
    image_dir = Path(image_dir)
    k = build.views_per_image
    samples = []
    for r in range(start // k, (stop - 1) // k + 1):
        record = records[r - first]
        image = read_image(image_dir, record)
        if build.use_masks:
            mask = ignore_mask(record)
        else:
            mask = np.ones(image.shape[:2], np.uint8)
        for v in range(k):
            if start <= r * k + v < stop:
                view = make_view(record, v, seed=build.seed, render=render, augment=augment)
                samples.append(
                    make_sample(image, mask, record, view, render=render, skeleton=skeleton)
                )
    return {key: np.stack([s[key] for s in samples]) for key in samples[0]}


def shard_records(
    records: list[ImageRecord], shard: int, build: BuildConfig
) -> tuple[int, int, int, list[ImageRecord]]:
    """(start, stop, first, records[first:...]): a shard's sample range and its images."""
    k, per = build.views_per_image, build.samples_per_shard
    start, stop = st.shard_range(shard, len(records) * k, per)
    first = start // k
    return start, stop, first, records[first : (stop - 1) // k + 1]


def shard_producer(
    records: list[ImageRecord],
    image_dir: str | Path,
    *,
    render: RenderConfig,
    augment: AugmentConfig,
    build: BuildConfig,
    skeleton: Skeleton,
) -> Callable[[int], dict[str, np.ndarray]]:
    """A function shard -> that shard's stacked samples (see `make_sample`), thread-safe."""
    kw = {"render": render, "augment": augment, "build": build, "skeleton": skeleton}

    def produce(shard: int) -> dict[str, np.ndarray]:
        start, stop, first, chunk = shard_records(records, shard, build)
        return render_samples(chunk, first, start, stop, image_dir, **kw)

    return produce


def render_and_write_shard(
    out: str,
    shard: int,
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
    """Render one shard, write its GT arrays, mark it done; returns its (B, S, S, 3) crops.

    Runs in a worker process of the one-pass build (`teacher_pass.build_teacher_cache`):
    rendering is mostly small numpy operations that hold the GIL, which would stall an
    inference loop in the same process.
    """
    arrays = render_samples(
        records, first, start, stop, image_dir,
        render=render, augment=augment, build=build, skeleton=skeleton,
    )  # fmt: skip
    write_gt_shard(zarr.open_group(out, mode="r+"), shard, build.samples_per_shard, arrays)
    return arrays["images"]


def write_teacher_shard(
    group: Any, shard: int, start: int, heatmaps: np.ndarray, pafs: np.ndarray
) -> None:
    """Write one whole shard of quantised teacher outputs (float16), then mark it done in
    progress/teacher.

    Raises:
        LcposeError: values beyond float16's range (inf after quantising) or NaN.
    """
    for name, q in (("heatmaps", heatmaps), ("pafs", pafs)):
        # inf and nan are the float16 values with all exponent bits set (an integer test:
        # numpy's float16 isfinite is not vectorised)
        if ((q.view(np.uint16) & 0x7C00) == 0x7C00).any():
            raise LcposeError(
                f"shard {shard}: teacher {name} exceed the float16 range of the store "
                f"(|x| > {float(np.finfo(np.float16).max):.0f}, or NaN)"
            )
    st.write_samples(group, "teacher/heatmaps", start, heatmaps)
    st.write_samples(group, "teacher/pafs", start, pafs)
    st.mark_shard_done(group, "teacher", shard)


def write_teacher_shard_at(
    out: str, shard: int, start: int, heatmaps: np.ndarray, pafs: np.ndarray
) -> None:
    """`write_teacher_shard` into the store at `out` (a worker process of the one-pass
    build: this module does not load torch)."""
    write_teacher_shard(zarr.open_group(out, mode="r+"), shard, start, heatmaps, pafs)


WORKER_NICENESS = 10
"""Scheduling priority drop of the GT rendering processes of the one-pass build."""


def exit_with_parent(parent_pid: int, niceness: int = 0) -> None:
    """Worker-process initializer: exit when the parent dies (a kill -9 of the build would
    otherwise leave the pool's workers waiting forever on its task queue), and run at
    `niceness` (a lower priority: where inference and rendering compete for the cores,
    inference, the pace of the whole build, goes first and rendering takes what is left)."""
    if niceness:
        os.nice(niceness)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def read_shard_images(out: str, start: int, stop: int) -> np.ndarray:
    """(B, S, S, 3) crops of samples [start, stop) of a written store."""
    return zarr.open_group(out, mode="r")["images"][start:stop]


def build_gt_store(
    ann_file: str | Path,
    image_dir: str | Path,
    out: str | Path,
    *,
    render: RenderConfig | None = None,
    augment: AugmentConfig | None = None,
    build: BuildConfig | None = None,
    skeleton: Skeleton = CMU_SKELETON,
    resume: bool = False,
    part: tuple[int, int] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Write (or finish) the GT store of an annotation file. Returns the store attributes.

    Args:
        part: (i, n) to write only shards s with s % n == i (several processes fill one
            store); the store is marked complete by whichever slice finishes last.
        workers: threads rendering samples (OpenCV and numpy release the GIL).
    """
    render = render or RenderConfig()
    augment = augment or AugmentConfig()
    build = build or BuildConfig()
    kw = {"render": render, "augment": augment, "build": build, "skeleton": skeleton}
    records, attrs = load_build_inputs(ann_file, image_dir, **kw)
    if part is not None and not resume and Path(out).exists():
        resume = True  # slices share one store: the first creates it, the others join
    with st.write_lock(out, part=part):
        group = prepare_store(out, attrs, resume=resume, part=part)
        per = attrs["samples_per_shard"]
        todo = st.pending_shards(group, "gt", part=part or (0, 1))
        produce = shard_producer(records, image_dir, **kw)
        bar = tqdm(total=len(todo), desc="build gt", unit="shard", disable=not progress)
        for shard, arrays in iter_shards(todo, produce, workers=workers):
            write_gt_shard(group, shard, per, arrays)
            bar.update()
        bar.close()
        # a one-pass sliced build may already have added a teacher stage: all must be done
        st.finalize(group, tuple(st.store_attrs(group).get("stages", ["gt"])))
        return st.store_attrs(group)


_DESTINATIONS = {
    "images": "images",
    "masks": "masks",
    "heatmaps": "gt/heatmaps",
    "pafs": "gt/pafs",
    "image_id": "meta/image_id",
    "affine": "meta/affine",
    "flipped": "meta/flipped",
    "view": "meta/view",
}


def write_gt_shard(group: Any, shard: int, per: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one whole shard of every per-sample array, then mark it done in progress/gt.

    Whole shards only: writing part of a chunk would read, modify and rewrite it.
    """
    start = shard * per
    for key, dest in _DESTINATIONS.items():
        if dest in group:
            st.write_samples(group, dest, start, arrays[key])
    st.mark_shard_done(group, "gt", shard)
