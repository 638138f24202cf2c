"""Build the GT crop store: COCO images -> K augmented views each -> crops, masks, GT maps.

Sample order is fixed by the annotation file: sample n = r * K + v is view v of the r-th
image that has a labelled person. Each sample draws from its own generator
`default_rng([seed, image_id, v])`, so the store is identical whatever the number of worker
threads, the resume point or the `--slice i/n` split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm

from lcdata.build.blocks import GT_DESTINATIONS, pad_persons, write_gt_block
from lcdata.config import DEFAULT_VIEWS_PER_IMAGE, AugmentConfig, RenderConfig
from lcdata.errors import ConfigError, LcposeError
from lcdata.io import file_sha256
from lcdata.labels.augment import View, sample_view, view_affine, warp_image, warp_mask, warp_parts
from lcdata.labels.coco import ImageRecord, ignore_mask, load_coco, read_image
from lcdata.labels.render import render_mask, render_targets
from lcdata.labels.skeleton import CMU_SKELETON, Skeleton
from lcdata.parallel import iter_threaded
from lcdata.store.codec import QUANT_STEP, quantize
from lcdata.store.layout import (
    DEFAULT_SAMPLES_PER_BLOCK,
    block_range,
    create_cache,
    finalize,
    open_store,
    pending_blocks,
    read_attrs,
    store_attrs,
)
from lcdata.store.lock import write_lock
from lcdata.store.resume import first_difference, has_content
from lcdata.store.space import check_space, pending_samples, removed_if_refused, write_errors


@dataclass(frozen=True)
class BuildConfig:
    """What the GT build does beyond rendering and augmentation.

    Attributes:
        views_per_image: K augmented crops per image.
        seed: root of every sample's random generator.
        samples_per_shard: B, samples per block (one zarr chunk: the unit of writing, resume
            and the --slice work split; the name is the store attribute's).
        min_keypoints: labelled keypoints a person needs to be a target (else it is masked).
        keypoint_field: annotation field with the keypoints ("keypoints_all" renders the
            synthetic benchmark's clean truth including points outside the image).
        use_masks: False supervises everything (no ignore regions).
    """

    views_per_image: int = DEFAULT_VIEWS_PER_IMAGE
    seed: int = 0
    samples_per_shard: int = DEFAULT_SAMPLES_PER_BLOCK
    min_keypoints: int = 1
    keypoint_field: str = "keypoints"
    use_masks: bool = True

    def __post_init__(self) -> None:
        for name in ("views_per_image", "samples_per_shard"):
            if getattr(self, name) < 1:
                raise ConfigError("BuildConfig", name, f"must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ConfigError("BuildConfig", "seed", f"must be >= 0, got {self.seed}")


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
        pafs (2L, h, h) float16, image_id, affine (2, 3) float32, flipped, view (4,) float32,
        keypoints (P, K, 3) float32: the skeleton's parts that were rendered, (x, y) crop
        pixels (outside the crop too) and visibility; num_persons P.
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
        "heatmaps": quantize(heatmaps),
        "pafs": quantize(pafs),
        "image_id": np.int64(record.image_id),
        "affine": affine.astype(np.float32),
        "flipped": np.bool_(view.flip),
        "view": np.array([view.angle_deg, view.scale, *view.center_xy], np.float32),
        "keypoints": parts.astype(np.float32),
        "num_persons": np.int32(len(parts)),
    }


def labelled_records(records: list[ImageRecord]) -> list[ImageRecord]:
    """Images with at least one labelled person, in file order."""
    return [r for r in records if len(r.keypoints)]


def source_attrs(ann_file: str | Path, image_dir: str | Path) -> dict[str, Any]:
    """The `source` attribute: the annotation file (path and sha256) and the image folder."""
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
    max_persons: int | None = None,
) -> dict[str, Any]:
    """The `lcpose` attributes of a GT store (everything that decides its content);
    `max_persons` sizes `meta/keypoints` (the most labelled persons of one image)."""
    extra = {} if max_persons is None else {"max_persons": int(max_persons)}
    return {
        **extra,
        "kind": "cache",
        "num_samples": num_samples,
        "samples_per_shard": build.samples_per_shard,
        "skeleton": skeleton.to_attrs(),
        "render": render.to_attrs(),
        "augment": augment.to_attrs(),
        "build": asdict(build),
        "seed": build.seed,
        "quant_step": QUANT_STEP,
        "source": source,
        "stages": ["gt"],
    }


# Attributes that must agree for --resume to continue a store instead of refusing it.
_RESUME_KEYS = ("num_samples", "samples_per_shard", "skeleton", "render", "augment", "build")


def prepare_store(
    out: str | Path,
    attrs: dict[str, Any],
    *,
    resume: bool,
    work_slice: tuple[int, int] | None = None,
) -> zarr.Group:
    """Create the store, or reopen it for --resume after checking it was built the same way."""
    out = Path(out)
    if not has_content(out):
        return create_cache(out, attrs)
    if not resume:
        raise LcposeError(
            f"{out}: output exists; pass --resume to continue an interrupted build or choose "
            f"another path"
        )
    old = read_attrs(out)
    key = first_difference(old, attrs, _RESUME_KEYS)
    if key is not None:
        raise LcposeError(
            f"{out}: cannot resume: the existing store was built with a different '{key}'"
        )
    if old.get("source", {}).get("annotations_sha256") != attrs["source"]["annotations_sha256"]:
        raise LcposeError(f"{out}: cannot resume: the annotation file changed since the build")
    group = open_store(out, mode="r+", require_complete=False)
    if "progress/gt" not in group:
        # killed while creating the arrays (progress/gt is created last): nothing was written
        if work_slice is not None:
            raise LcposeError(
                f"{out}: store is being created by another slice, or its creation was killed; "
                f"retry, or resume it once without --slice"
            )
        return create_cache(out, attrs)
    return group


def gt_block_arrays(
    group: zarr.Group, arrays: dict[str, np.ndarray]
) -> dict[str, tuple[zarr.Array, np.ndarray]]:
    """A rendered block's arrays, each with the store array it goes to (those it has)."""
    return {
        dest: (group[dest], arrays[key]) for key, dest in GT_DESTINATIONS.items() if dest in group
    }


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
        max_persons=max(len(r.keypoints) for r in records),
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
    stacked = {key: np.stack([s[key] for s in samples]) for key in samples[0] if key != "keypoints"}
    # persons per crop vary: padded to the block's most (`write_gt_block` pads to the store's)
    most = max(len(s["keypoints"]) for s in samples)
    stacked["keypoints"] = np.concatenate(
        [pad_persons(s["keypoints"][None], most) for s in samples]
    )
    return stacked


def block_records(
    records: list[ImageRecord], block: int, build: BuildConfig
) -> tuple[int, int, int, list[ImageRecord]]:
    """(start, stop, first, records[first:...]): a block's sample range and its images."""
    k, per = build.views_per_image, build.samples_per_shard
    start, stop = block_range(block, len(records) * k, per)
    first = start // k
    return start, stop, first, records[first : (stop - 1) // k + 1]


def block_producer(
    records: list[ImageRecord],
    image_dir: str | Path,
    *,
    render: RenderConfig,
    augment: AugmentConfig,
    build: BuildConfig,
    skeleton: Skeleton,
) -> Callable[[int], dict[str, np.ndarray]]:
    """A function block -> that block's stacked samples (see `make_sample`), thread-safe."""
    kw = {"render": render, "augment": augment, "build": build, "skeleton": skeleton}

    def produce(block: int) -> dict[str, np.ndarray]:
        start, stop, first, chunk = block_records(records, block, build)
        return render_samples(chunk, first, start, stop, image_dir, **kw)

    return produce


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
    work_slice: tuple[int, int] | None = None,
    workers: int = 2,
    space_check: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Write (or finish) the GT store of an annotation file. Returns the store attributes.

    Args:
        work_slice: (i, n) to write only blocks s with s % n == i (several processes fill
            one store); the store is marked complete by whichever slice finishes last.
        workers: threads rendering samples (OpenCV and numpy release the GIL).
        space_check: refuse before writing when the estimate (one block rendered and
            encoded, `lcdata.store.space`) exceeds the free space; False only reports it.
        progress: progress bar and the estimate line on stderr.

    Raises:
        LcposeError: bad input, a store that cannot be resumed, not enough space, or a
            write error (disk full: the store stays incomplete and resumable).
    """
    render = render or RenderConfig()
    augment = augment or AugmentConfig()
    build = build or BuildConfig()
    kw = {"render": render, "augment": augment, "build": build, "skeleton": skeleton}
    records, attrs = load_build_inputs(ann_file, image_dir, **kw)
    if work_slice is not None and not resume and Path(out).exists():
        resume = True  # slices share one store: the first creates it, the others join
    new = work_slice is None and not Path(out).exists()  # a refusal removes only ours
    with write_errors(Path(out), "build gt"), write_lock(out, work_slice=work_slice):
        group = prepare_store(out, attrs, resume=resume, work_slice=work_slice)
        per = attrs["samples_per_shard"]
        todo = pending_blocks(group, "gt", work_slice=work_slice)
        produce = block_producer(records, image_dir, **kw)
        if todo:
            with removed_if_refused(Path(out), new=new):
                check_space(
                    Path(out),
                    "gt",
                    gt_block_arrays(group, produce(todo[0])),
                    pending_samples=pending_samples(todo, attrs["num_samples"], per),
                    check=space_check,
                    report=progress,
                )
        # closed on errors too, so an error message starts on a line of its own
        with tqdm(total=len(todo), desc="build gt", unit="block", disable=not progress) as bar:
            for block, arrays in iter_threaded(todo, produce, workers=workers):
                write_gt_block(group, block, per, arrays)
                bar.update()
        # a one-pass sliced build may already have added a teacher stage: all must be done
        finalize(group, tuple(store_attrs(group).get("stages", ["gt"])))
        return store_attrs(group)
