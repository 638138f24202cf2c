"""The Zarr v3 store: layout, attributes, completion, locking and shard-wise progress.

This layout is the public interface (docs/store.md holds the table). N samples, S = input
size, h = S // stride, B = samples per shard:

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
    progress/<stage>  (N / B,)      uint8    1 once shard s of that stage is written

Every per-sample array is chunked by *shards* of B samples: one zarr chunk (one file per
array) holds B consecutive samples. Every reader in the project (trainer, teacher pass,
correct, analytics, dask views) reads whole shards, and zarr's cost is per chunk, so a chunk of
B samples reads about 7x faster than the same data in chunks of one sample inside zarr's
sharding codec (docs/benchmarks.md, pipeline); a single-sample read (`lcdata show`) pays for
decompressing its shard, a few tens of ms. Writers always write whole shards, so a shard is
also the unit of resume and of `--shard i/n` work splitting.

Attributes live under the group attribute `lcpose`; `complete` is false from creation until
every stage written into the store has all of its shards, so a killed build never looks
complete. Map arrays are stored quantised to steps of 2^-9 (`quantize`): the error is at most
2^-10 and the noisy teacher maps compress about twice as well (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.skeleton import Skeleton

SCHEMA_VERSION = 1
ATTR_KEY = "lcpose"
QUANT_STEP = 2.0**-9
DEFAULT_SAMPLES_PER_SHARD = 64
ZSTD_LEVEL = 3
IMAGE_ZSTD_LEVEL = -1
"""zstd's fast mode for the crops: 11% larger than level 3 but decompressed 3.5x faster (whole
shards through zarr: 1.7x), and the training reader decompresses every crop every epoch
(docs/benchmarks.md, size)."""

MAP_GROUPS = ("gt", "teacher", "target")


def quantize(maps: np.ndarray) -> np.ndarray:
    """Round to the nearest multiple of 2^-9 and store as float16.

    float16 holds every multiple of 2^-9 exactly for |x| <= 4 (maps live in about [-1, 1.5]);
    beyond, float16's own spacing (2^-8 up to 8, ...) rounds once more.
    """
    maps = np.asarray(maps, np.float32)
    # torch's casts are faster, but only worth it where torch is loaded anyway: importing it
    # costs a GT rendering process about a second and 200 MB
    if maps.size < _TORCH_MIN_SIZE or "torch" not in sys.modules:
        with np.errstate(over="ignore"):  # beyond float16's range -> inf, by design
            return (np.round(maps / QUANT_STEP) * QUANT_STEP).astype(np.float16)
    return _torch_map(maps, np.float16, lambda t: (t * (1 / QUANT_STEP)).round_().mul_(QUANT_STEP))


def to_float32(maps: np.ndarray) -> np.ndarray:
    """float16 (or any float) maps as a new float32 array, exactly; several times faster
    than numpy's `astype`, whose float16 casts are not vectorised."""
    return _torch_map(np.asarray(maps), np.float32, None)


def as_float32(maps: np.ndarray) -> np.ndarray:
    """`maps` as float32: float16 through `to_float32`, float32 as it is, others cast."""
    maps = np.asarray(maps)
    if maps.dtype == np.float16:
        return to_float32(maps)
    return maps.astype(np.float32, copy=False)


def to_float16(maps: np.ndarray) -> np.ndarray:
    """float32 maps as float16, rounded to nearest even like `astype(np.float16)` (exact for
    values already on the 2^-9 grid below 4 in magnitude), several times faster."""
    return _torch_map(np.asarray(maps, np.float32), np.float16, None)


_TORCH_MIN_SIZE = 1 << 16
_TORCH_CHUNK = 32767
"""Elements per torch call: below torch's parallel grain (32768) every call runs inline on
the calling thread, so dask's worker threads never start OpenMP teams of their own."""


def _torch_map(x: np.ndarray, dtype: type, fn: Any) -> np.ndarray:
    """`fn` (elementwise torch ops, or None) over `x`, cast into a new `dtype` array, in
    chunks below torch's parallel grain."""
    import torch  # lazily: the GT build's rendering processes do not need it

    src = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1)
    out = np.empty(x.shape, dtype)
    dst = torch.from_numpy(out).reshape(-1)
    with torch.no_grad():
        for i in range(0, src.numel(), _TORCH_CHUNK):
            part = src[i : i + _TORCH_CHUNK]
            dst[i : i + _TORCH_CHUNK].copy_(part if fn is None else fn(part))
    return out


def map_shapes(num_samples: int, skeleton: Skeleton, cfg: RenderConfig) -> dict[str, tuple]:
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
    shard: int,
    dims: tuple[str, ...],
    *,
    level: int = ZSTD_LEVEL,
) -> zarr.Array:
    return group.create_array(
        name,
        shape=shape,
        chunks=(shard, *shape[1:]),
        dtype=dtype,
        compressors=ZstdCodec(level=level),
        fill_value=0,
        dimension_names=dims,
    )


def create_maps(group: zarr.Group, prefix: str, attrs: dict[str, Any]) -> None:
    """Create `<prefix>/heatmaps` and `<prefix>/pafs` sized from the store attributes."""
    skeleton = Skeleton.from_attrs(attrs["skeleton"])
    cfg = RenderConfig.from_attrs(attrs["render"])
    shard = attrs["samples_per_shard"]
    for name, shape in map_shapes(attrs["num_samples"], skeleton, cfg).items():
        _create(group, f"{prefix}/{name}", shape, "float16", shard, ("sample", "channel", "y", "x"))


def write_samples(group: zarr.Group, name: str, start: int, data: np.ndarray) -> None:
    """Write `data` into samples [start, start + len(data)) of array `name` (whole shards).

    zarr checks every chunk it writes for being all fill value, a full extra pass over the
    data (a third of the time of writing a teacher PAF shard here); lcpose shards are never
    empty in practice, and an empty one written anyway costs a few bytes.
    """
    arr = group[name].with_config({"write_empty_chunks": True})
    arr[start : start + len(data)] = data


def create_progress(group: zarr.Group, stage: str, num_shards: int) -> None:
    # one chunk per shard flag: parallel writers of different shards touch different files
    group.create_array(
        f"progress/{stage}", shape=(num_shards,), chunks=(1,), dtype="uint8", fill_value=0
    )


def new_group(path: str | Path) -> zarr.Group:
    """An empty zarr group at `path`; whatever was there goes, except writer lock files.

    zarr's mode="w" deletes the whole folder, the caller's `.lcpose-lock*` included, which
    would let a second writer in while this one fills the store.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.name.startswith(".lcpose-lock"):
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
    n, shard = attrs["num_samples"], attrs["samples_per_shard"]
    cfg = RenderConfig.from_attrs(attrs["render"])
    s, h = cfg.input_size, cfg.grid_size
    group = new_group(path)
    group.attrs[ATTR_KEY] = {**attrs, "schema_version": SCHEMA_VERSION, "complete": False}
    if with_images:
        dims = ("sample", "y", "x", "rgb")
        _create(group, "images", (n, s, s, 3), "uint8", shard, dims, level=IMAGE_ZSTD_LEVEL)
    _create(group, "masks", (n, h, h), "uint8", shard, ("sample", "y", "x"))
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
            chunks=(shard, *shape[1:]),
            dtype=dtype,
            compressors=ZstdCodec(level=ZSTD_LEVEL),
            fill_value=0,
        )
    create_progress(group, "gt", num_shards(n, shard))
    return group


def num_shards(num_samples: int, samples_per_shard: int) -> int:
    return -(-num_samples // samples_per_shard)


def shard_range(index: int, num_samples: int, samples_per_shard: int) -> tuple[int, int]:
    """[start, stop) sample indices of shard `index`."""
    start = index * samples_per_shard
    return start, min(start + samples_per_shard, num_samples)


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
    return dict(group.attrs.asdict()[ATTR_KEY])


def update_attrs(group: zarr.Group, **changes: Any) -> None:
    """Merge `changes` into the `lcpose` attributes in one metadata write."""
    attrs = store_attrs(group)
    attrs.update(changes)
    group.attrs[ATTR_KEY] = attrs


def pending_shards(group: zarr.Group, stage: str, *, part: tuple[int, int] = (0, 1)) -> list[int]:
    """Shards of `stage` not yet written that belong to slice `part` = (i, n)."""
    done = np.asarray(group[f"progress/{stage}"][:])
    i, n = part
    return [s for s in range(len(done)) if s % n == i and not done[s]]


def mark_shard_done(group: zarr.Group, stage: str, shard: int) -> None:
    group[f"progress/{stage}"][shard] = 1


def stage_complete(group: zarr.Group, stage: str) -> bool:
    name = f"progress/{stage}"
    return name in group and bool(np.asarray(group[name][:]).all())


def finalize(group: zarr.Group, stages: tuple[str, ...]) -> bool:
    """Mark the store complete when every listed stage has all of its shards; else leave it.

    Returns whether the store is now complete. Safe to call from every slice writer: the
    last one to finish is the one that flips the flag.
    """
    done = all(stage_complete(group, stage) for stage in stages)
    if done:
        update_attrs(group, complete=True)
    return done


# ---------------------------------------------------------------------------------------
# Locking: one writer per store (or per slice with --shard i/n)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def write_lock(path: str | Path, *, part: tuple[int, int] | None = None) -> Iterator[None]:
    """Hold an exclusive writer lock on a store, or on one slice of it.

    A whole-store writer holds `.lcpose-lock`; a slice writer holds `.lcpose-lock-i-of-n` and
    refuses to start while a whole-store writer holds its lock (and vice versa). A lock left
    by a process that died on this host is taken over, so a killed build can be resumed.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    name = ".lcpose-lock" if part is None else f".lcpose-lock-{part[0]}-of-{part[1]}"
    lock = path / name
    for other in path.glob(".lcpose-lock*"):
        if other.name == name:
            continue
        if (part is None or other.name == ".lcpose-lock") and _lock_is_live(other):
            raise LcposeError(f"{path}: another process is writing this store ({other.name})")
    if lock.exists() and not _lock_is_live(lock):
        lock.unlink(missing_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise LcposeError(
            f"{path}: another process is writing this store ({lock.name}); wait for it or, if "
            f"it is gone, delete {lock}"
        ) from None
    with os.fdopen(fd, "w") as f:
        json.dump(me, f)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_is_live(lock: Path) -> bool:
    try:
        owner = json.loads(lock.read_text())
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return True  # cannot check a process on another machine: assume it runs
    return _pid_alive(int(owner.get("pid", -1)))
