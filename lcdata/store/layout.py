"""The Zarr v3 store: array layout, the typed header, creation, opening, and block-wise progress.

This layout is the public interface (docs/store.md holds the table). N samples, S = input
size, h = S // stride, B = samples per block (attribute `samples_per_shard`):

    images            (N, S, S, 3)  uint8    augmented RGB crop
    masks             (N, h, h)     uint8    1 = supervise, 0 = ignore (W of eq. 1)
    gt/heatmaps       (N, K+1, h, h) float16 ground truth, last channel background
    gt/pafs           (N, 2L, h, h) float16  ground truth, channel 2l = x, 2l+1 = y
    teacher/heatmaps  (N, K+1, h, h) float16 teacher's last stage (teacher pass)
    teacher/pafs      (N, 2L, h, h) float16
    target/heatmaps   (N, K+1, h, h) float16 training targets (corrected stores)
    target/pafs       (N, 2L, h, h) float16
    meta/image_id     (N,)          int64    COCO image id
    meta/affine       (N, 2, 3)     float32  original image px -> crop px
    meta/flipped      (N,)          bool
    meta/view         (N, 4)        float32  angle_deg, scale, center_x, center_y
    progress/<stage>  (N / B,)      uint8    1 once block s of that stage is written

A *block* is B consecutive samples, stored as one zarr chunk (one file per array). Every
reader in the project (trainer, teacher pass, correct, analytics, dask views) reads whole
blocks, and zarr's cost is per chunk (docs/benchmarks.md, pipeline); a single-sample read
(`lcdata show`) pays for decompressing its block. Writers always write whole blocks, so a
block is also the unit of resume and of the `--slice i/n` work split.

Attributes live under the group attribute `lcpose` (`StoreInfo` reads them once); `complete`
is false from creation until every stage written into the store has all of its blocks, so a
killed build never looks complete. Map arrays are stored quantised (`lcdata.store.codec`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.skeleton import Skeleton
from lcdata.store.lock import LOCK_PREFIX

SCHEMA_VERSION = 2
"""2: cache stores also hold each sample's rendered keypoints (`meta/keypoints`, padded,
with `meta/num_persons`), so a fresh view can re-render its GT exactly. Version-1 stores
read as before (their GT maps are warped instead)."""
ATTR_KEY = "lcpose"
DEFAULT_SAMPLES_PER_BLOCK = 64
ZSTD_LEVEL = 3
IMAGE_ZSTD_LEVEL = -1
"""zstd's fast mode for the crops: larger than level 3 but decompressed several times faster,
and the training reader decompresses every crop every epoch (docs/benchmarks.md, size)."""

MAP_GROUPS = ("gt", "teacher", "target")


@dataclass(frozen=True)
class StoreInfo:
    """The `lcpose` header of a store, read and checked once.

    Attributes:
        path: the store folder.
        kind: "cache" (crops, GT, teacher) or "corrected" (training targets).
        num_samples: N.
        samples_per_block: B; block s holds samples [s * B, (s + 1) * B).
        skeleton: channel layout of every map array.
        render: input size, stride, sigma and PAF width the maps were made with.
        attrs: every attribute as written (stages, source, teacher, correction, ...).
    """

    path: Path
    kind: str
    num_samples: int
    samples_per_block: int
    skeleton: Skeleton
    render: RenderConfig
    attrs: dict[str, Any]

    @property
    def num_blocks(self) -> int:
        return num_blocks(self.num_samples, self.samples_per_block)

    @classmethod
    def from_attrs(cls, path: str | Path, attrs: dict[str, Any]) -> StoreInfo:
        """Build from already-read `lcpose` attributes (see `read_attrs`)."""
        missing = [
            k for k in ("num_samples", "samples_per_shard", "skeleton", "render") if k not in attrs
        ]
        if missing:
            raise LcposeError(f"{path}: store attributes lack {', '.join(missing)}")
        return cls(
            path=Path(path),
            kind=str(attrs.get("kind", "")),
            num_samples=int(attrs["num_samples"]),
            samples_per_block=int(attrs["samples_per_shard"]),
            skeleton=Skeleton.from_attrs(attrs["skeleton"]),
            render=RenderConfig.from_attrs(attrs["render"]),
            attrs=dict(attrs),
        )

    @classmethod
    def read(cls, path: str | Path) -> StoreInfo:
        """Read the header of the store at `path` (`read_attrs`' checks included)."""
        return cls.from_attrs(path, read_attrs(path))


def map_shapes(num_samples: int, skeleton: Skeleton, cfg: RenderConfig) -> dict[str, tuple]:
    """Shapes of `<group>/heatmaps` (N, K+1, h, h) and `<group>/pafs` (N, 2L, h, h)."""
    h = cfg.grid_size
    return {
        "heatmaps": (num_samples, skeleton.num_heatmaps, h, h),
        "pafs": (num_samples, skeleton.num_pafs, h, h),
    }


def _create(
    group: zarr.Group,
    name: str,
    shape: tuple,
    dtype: str,
    per_block: int,
    dims: tuple[str, ...],
    *,
    level: int = ZSTD_LEVEL,
) -> zarr.Array:
    """A per-sample array chunked by blocks of `per_block` samples, zstd-compressed."""
    return group.create_array(
        name,
        shape=shape,
        chunks=(per_block, *shape[1:]),
        dtype=dtype,
        compressors=ZstdCodec(level=level),
        fill_value=0,
        dimension_names=dims,
    )


def create_maps(group: zarr.Group, prefix: str, attrs: dict[str, Any]) -> None:
    """Create `<prefix>/heatmaps` and `<prefix>/pafs` sized from the store attributes."""
    info = StoreInfo.from_attrs(str(group.store_path), attrs)
    for name, shape in map_shapes(info.num_samples, info.skeleton, info.render).items():
        _create(
            group,
            f"{prefix}/{name}",
            shape,
            "float16",
            info.samples_per_block,
            ("sample", "channel", "y", "x"),
        )


def create_keypoints(
    group: zarr.Group, prefix: str, *, num_samples: int, max_persons: int, num_parts: int,
    per_block: int,
) -> None:  # fmt: skip
    """`<prefix>/keypoints` (N, max_persons, K, 3) float32 (crop pixels, v; zero rows pad) and
    `<prefix>/num_persons` (N,) int32, chunked by blocks like the maps."""
    for name, shape, dtype in (
        ("keypoints", (num_samples, max_persons, num_parts, 3), "float32"),
        ("num_persons", (num_samples,), "int32"),
    ):
        group.create_array(
            f"{prefix}/{name}",
            shape=shape,
            chunks=(per_block, *shape[1:]),
            dtype=dtype,
            compressors=ZstdCodec(level=ZSTD_LEVEL),
            fill_value=0,
        )


def write_samples(group: zarr.Group, name: str, start: int, data: np.ndarray) -> None:
    """Write `data` into samples [start, start + len(data)) of array `name` (whole blocks).

    zarr checks every chunk it writes for being all fill value, a full extra pass over the
    data; lcpose blocks are never empty in practice, and an empty one written anyway costs a
    few bytes.
    """
    arr = group[name].with_config({"write_empty_chunks": True})
    arr[start : start + len(data)] = data


def create_progress(group: zarr.Group, stage: str, count: int) -> None:
    """`progress/<stage>`: one uint8 flag per block, 0 until the block is written."""
    # one chunk per flag: parallel writers of different blocks touch different files
    group.create_array(
        f"progress/{stage}", shape=(count,), chunks=(1,), dtype="uint8", fill_value=0
    )


def new_group(path: str | Path) -> zarr.Group:
    """An empty zarr group at `path`; whatever was there goes, except writer lock files.

    zarr's mode="w" deletes the whole folder, the caller's `.lcpose-lock*` included, which
    would let a second writer in while this one fills the store.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.name.startswith(LOCK_PREFIX):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    return zarr.open_group(str(path), mode="a")


def create_cache(
    path: str | Path, attrs: dict[str, Any], *, with_images: bool = True
) -> zarr.Group:
    """Create an empty store with the per-sample arrays and a `gt` progress record.

    Args:
        attrs: the `lcpose` attributes; must hold num_samples, samples_per_shard, skeleton,
            render. `complete` is forced to False.
    """
    info = StoreInfo.from_attrs(path, attrs)
    n, per = info.num_samples, info.samples_per_block
    s, h = info.render.input_size, info.render.grid_size
    group = new_group(path)
    group.attrs[ATTR_KEY] = {**attrs, "schema_version": SCHEMA_VERSION, "complete": False}
    if with_images:
        dims = ("sample", "y", "x", "rgb")
        _create(group, "images", (n, s, s, 3), "uint8", per, dims, level=IMAGE_ZSTD_LEVEL)
    _create(group, "masks", (n, h, h), "uint8", per, ("sample", "y", "x"))
    create_maps(group, "gt", attrs)
    for name, shape, dtype in (
        ("image_id", (n,), "int64"),
        ("affine", (n, 2, 3), "float32"),
        ("flipped", (n,), "bool"),
        ("view", (n, 4), "float32"),
    ):
        group.create_array(
            f"meta/{name}",
            shape=shape,
            chunks=(per, *shape[1:]),
            dtype=dtype,
            compressors=ZstdCodec(level=ZSTD_LEVEL),
            fill_value=0,
        )
    if "max_persons" in attrs:
        create_keypoints(
            group, "meta", num_samples=n, max_persons=attrs["max_persons"],
            num_parts=info.skeleton.num_parts, per_block=per,
        )  # fmt: skip
    create_progress(group, "gt", num_blocks(n, per))
    return group


def num_blocks(num_samples: int, samples_per_block: int) -> int:
    """Blocks of `samples_per_block` samples that hold `num_samples` (the last may be short)."""
    return -(-num_samples // samples_per_block)


def block_range(index: int, num_samples: int, samples_per_block: int) -> tuple[int, int]:
    """[start, stop) sample indices of block `index`."""
    start = index * samples_per_block
    return start, min(start + samples_per_block, num_samples)


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The `lcpose` attributes of a store, with clear errors for what is not one of ours."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise LcposeError(f"{path}: not a zarr v3 store (no zarr.json)")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:  # zarr raises several types for a broken store
        raise LcposeError(f"{path}: cannot open as a zarr group ({err})") from None
    attrs = group.attrs.asdict().get(ATTR_KEY)
    if not isinstance(attrs, dict):
        raise LcposeError(f"{path}: not an lcpose store (no '{ATTR_KEY}' attributes)")
    version = attrs.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise LcposeError(
            f"{path}: store schema version {version} is newer than this lcpose understands "
            f"({SCHEMA_VERSION}); upgrade lcpose"
        )
    return attrs


def open_store(
    path: str | Path,
    *,
    mode: str = "r",
    require_complete: bool = True,
    require: tuple[str, ...] = (),
) -> zarr.Group:
    """Open an lcpose store after checking schema, completion and required arrays.

    Args:
        mode: "r" to read, "r+" to add or replace arrays.
        require_complete: refuse a store whose `complete` attribute is not true.
        require: array paths that must exist, e.g. ("teacher/heatmaps",).
    """
    attrs = read_attrs(path)
    if require_complete and attrs.get("complete") is not True:
        raise LcposeError(
            f"{path}: store is marked incomplete (an interrupted or unfinished build); "
            f"finish it with --resume before using it"
        )
    group = zarr.open_group(str(path), mode=mode)
    for name in require:
        if name not in group:
            raise LcposeError(f"{path}: store has no '{name}' array")
    return group


def store_attrs(group: zarr.Group) -> dict[str, Any]:
    """The `lcpose` attributes of an open store group (a copy)."""
    return dict(group.attrs.asdict()[ATTR_KEY])


def update_attrs(group: zarr.Group, **changes: Any) -> None:
    """Merge `changes` into the `lcpose` attributes in one metadata write."""
    attrs = store_attrs(group)
    attrs.update(changes)
    group.attrs[ATTR_KEY] = attrs


def pending_blocks(
    group: zarr.Group, stage: str, *, work_slice: tuple[int, int] | None = None
) -> list[int]:
    """Blocks of `stage` not yet written that belong to `work_slice` = (i, n) (block s is
    slice s % n's); every pending block when `work_slice` is None."""
    done = np.asarray(group[f"progress/{stage}"][:])
    i, n = work_slice or (0, 1)
    return [s for s in range(len(done)) if s % n == i and not done[s]]


def mark_block_done(group: zarr.Group, stage: str, block: int) -> None:
    """Flag block `block` of `stage` written (after all of its arrays are on disk)."""
    group[f"progress/{stage}"][block] = 1


def stage_complete(group: zarr.Group, stage: str) -> bool:
    name = f"progress/{stage}"
    return name in group and bool(np.asarray(group[name][:]).all())


def finalize(group: zarr.Group, stages: tuple[str, ...]) -> bool:
    """Mark the store complete when every listed stage has all of its blocks; else leave it.

    Returns whether the store is now complete. Safe to call from every slice writer: the
    last one to finish is the one that flips the flag.
    """
    done = all(stage_complete(group, stage) for stage in stages)
    if done:
        update_attrs(group, complete=True)
    return done
