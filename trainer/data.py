"""Training batches streamed from an lcdata store, in a seekable, reproducible order.

Letters used in shapes below:
    B     samples in a batch (per process)
    S     side of the square input crop, in crop pixels
    h     side of the maps in cells = S // stride
    K+1   heatmap channels (last = background), 2L PAF channels (2l = x, 2l + 1 = y)

The store is never loaded into memory: the stream reads whole shards ("blocks" of
`samples_per_shard` samples, the unit zarr stores together) a few at a time.

The order, a pure function of (seed, epoch, position), is defined by `StreamLayout`:

1. Epoch e visits the blocks in the order `default_rng([seed, e]).permutation(num_blocks)`.
2. The blocks are dealt to `num_lanes` = (DDP ranks x DataLoader workers per rank) lanes:
   lane g gets blocks perm[g::num_lanes], so lanes, hence workers and ranks, read disjoint
   blocks and together cover every sample exactly once per epoch.
3. A lane cuts its blocks into windows of `shuffle_blocks` consecutive blocks and shuffles the
   samples inside each window with `default_rng([seed, e, g, window])` (the shuffle buffer).
   Concatenating windows and then epochs gives the lane's endless sample stream; lane batch m
   is samples [m B, (m + 1) B) of it (a batch may straddle two windows or epochs).
4. Training step s of rank r takes lane batch s // W of lane r W + s % W, W = workers (1
   with none), which is exactly the round-robin in which a DataLoader collects from its W
   workers. Resuming at step k therefore only has to tell each worker where its first batch
   lies: the lane position is found by summing block sizes, and only the one window the
   position falls into is read, whatever k is.

Consequence: the batch sequence depends on (seed, batch size, workers, ranks, shuffle_blocks,
flip), and a resumed run must keep them (`trainer.fit` checks).

Targets: `target/*` when the store has them (a corrected store), else `gt/*`; `teacher/*` or
any of them on request. A corrected store may hold only maps and name the store with the
images and masks in its attribute `source_store` (a path, relative to the corrected store or
absolute); arrays the store lacks are read from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lcdata import store as st
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.skeleton import Skeleton

TARGET_KINDS = ("auto", "gt", "teacher", "target")
"""`auto` = `target` when the store has corrected targets, else `gt`."""

_REQUIRED_ATTRS = ("num_samples", "samples_per_shard", "skeleton", "render")


# ---------------------------------------------------------------------------------------------
# The store: checks at the boundary, then plain paths (nothing open crosses a fork)


@dataclass(frozen=True)
class StoreSpec:
    """A checked training store, as picklable paths and numbers (no open zarr objects).

    Attributes:
        path: the store.
        arrays: "images", "masks", "heatmaps", "pafs" -> (store directory, array path); images
            and masks may live in the `source_store`, heatmaps/pafs are `<target>/...`.
        target: the map group trained on: "gt", "teacher" or "target".
        num_samples: N.
        samples_per_shard: samples per block (zarr shard).
        skeleton: channel layout of the maps.
        render: input size, stride, sigma the maps were rendered with.
        attrs: the store's `lcpose` attributes.
    """

    path: Path
    arrays: dict[str, tuple[Path, str]]
    target: str
    num_samples: int
    samples_per_shard: int
    skeleton: Skeleton
    render: RenderConfig
    attrs: dict[str, Any]

    @property
    def input_size(self) -> int:
        return self.render.input_size

    @property
    def stride(self) -> int:
        return self.render.stride

    @property
    def grid_size(self) -> int:
        return self.render.grid_size


def open_training_store(path: str | Path, *, target: str = "auto") -> StoreSpec:
    """Check that a store can be trained on and say where each array is.

    Args:
        path: an lcdata store (GT store, or corrected store).
        target: one of `TARGET_KINDS`.

    Raises:
        LcposeError: not an lcpose store, marked incomplete, missing the requested targets or
            their images/masks, unfinished maps, or arrays whose shapes disagree with the
            store's skeleton and render attributes.
    """
    path = Path(path)
    if not path.exists():
        raise LcposeError(f"{path}: store not found")
    if target not in TARGET_KINDS:
        raise LcposeError(f"--target must be one of {', '.join(TARGET_KINDS)}, got {target!r}")
    group = st.open_store(path)  # foreign / newer / incomplete stores are refused here
    attrs = st.store_attrs(group)
    missing = [key for key in _REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise LcposeError(
            f"{path}: not a training store: attribute(s) {', '.join(missing)} missing"
        )
    if target == "auto":
        target = "target" if "target" in group else "gt"
        if target == "gt" and "gt" not in group:
            raise LcposeError(f"{path}: store has no training targets (neither target/* nor gt/*)")
    for name in ("heatmaps", "pafs"):
        if f"{target}/{name}" not in group:
            raise LcposeError(
                f"{path}: store has no '{target}' targets ({target}/{name} missing); "
                f"choose another --target"
            )
    progress = f"progress/{target}"
    if progress in group and not st.stage_complete(group, target):
        raise LcposeError(f"{path}: the '{target}' maps are unfinished ({progress} has gaps)")

    arrays: dict[str, tuple[Path, str]] = {
        "heatmaps": (path, f"{target}/heatmaps"),
        "pafs": (path, f"{target}/pafs"),
    }
    source: zarr.Group | None = None
    for name in ("images", "masks"):
        if name in group:
            arrays[name] = (path, name)
            continue
        if source is None:
            source_path, source = _open_source(path, attrs)
        if name not in source:
            raise LcposeError(f"{path}: no '{name}' here nor in its source store {source_path}")
        arrays[name] = (source_path, name)

    skeleton = Skeleton.from_attrs(attrs["skeleton"])
    render = RenderConfig.from_attrs(attrs["render"])
    n, s, h = int(attrs["num_samples"]), render.input_size, render.grid_size
    if n < 1:
        raise LcposeError(f"{path}: store holds no samples")
    want = {
        "images": (n, s, s, 3),
        "masks": (n, h, h),
        "heatmaps": (n, skeleton.num_heatmaps, h, h),
        "pafs": (n, skeleton.num_pafs, h, h),
    }
    for name, (where, key) in arrays.items():
        shape = tuple(zarr.open_array(str(where / key), mode="r").shape)
        if shape != want[name]:
            raise LcposeError(
                f"{where}: array {key} has shape {shape}, expected {want[name]} from the store's "
                f"num_samples, skeleton and render attributes"
            )
    return StoreSpec(
        path=path,
        arrays=arrays,
        target=target,
        num_samples=n,
        samples_per_shard=int(attrs["samples_per_shard"]),
        skeleton=skeleton,
        render=render,
        attrs=attrs,
    )


def _open_source(path: Path, attrs: dict[str, Any]) -> tuple[Path, zarr.Group]:
    """The store a corrected store reads its images and masks from, checked."""
    from lcdata.correct import resolve_source_store  # moved pairs, fingerprint check

    ref = attrs.get("source_store")
    if not ref:
        raise LcposeError(f"{path}: store has no images/masks and no 'source_store' attribute")
    if not Path(ref).is_absolute():  # relative to the corrected store
        attrs = {**attrs, "source_store": str((path / ref).resolve())}
    source = resolve_source_store(path, attrs)
    group = st.open_store(source)
    theirs = st.store_attrs(group)
    for key in ("num_samples", "skeleton", "render"):
        if theirs.get(key) != attrs.get(key):
            raise LcposeError(
                f"{path}: source store {source} has a different '{key}' than this store"
            )
    return source, group


# ---------------------------------------------------------------------------------------------
# The order: pure functions of (seed, epoch, lane, position), no I/O


@dataclass(frozen=True)
class Window:
    """One shuffle window of a lane: a few blocks whose samples are served in `order`.

    Attributes:
        epoch: epoch the window belongs to.
        index: window number within the lane's epoch.
        blocks: block (shard) numbers, in the order they are read.
        perm: (n,) int64 positions into the window's samples, concatenated block by block, in
            stream order.
        samples: (n,) int64 store sample index of each stream position (blocks' samples
            permuted by `perm`).
        flips: (n,) bool, per stream position, whether the sample is mirrored.
    """

    epoch: int
    index: int
    blocks: tuple[int, ...]
    perm: np.ndarray
    samples: np.ndarray
    flips: np.ndarray


@dataclass(frozen=True)
class StreamLayout:
    """Everything that decides the sample order (see the module doc), and nothing else.

    Attributes:
        num_samples: N in the store.
        samples_per_shard: samples per block; the last block may be shorter.
        seed: non-negative root of every draw.
        num_lanes: independent readers, = DDP world size x DataLoader workers (or 1).
        shuffle_blocks: blocks per shuffle window.
        flip: draw a random horizontal flip (probability 1/2) per sample.
    """

    num_samples: int
    samples_per_shard: int
    seed: int
    num_lanes: int = 1
    shuffle_blocks: int = 4
    flip: bool = False

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise LcposeError(f"--seed must be >= 0, got {self.seed}")
        if self.shuffle_blocks < 1:
            raise LcposeError(f"--shuffle-blocks must be >= 1, got {self.shuffle_blocks}")
        if self.num_blocks < self.num_lanes:
            raise LcposeError(
                f"store has {self.num_blocks} shard(s) of {self.samples_per_shard} samples but "
                f"{self.num_lanes} readers (ranks x workers) need one each; use fewer --workers"
            )

    @property
    def num_blocks(self) -> int:
        return st.num_shards(self.num_samples, self.samples_per_shard)

    def block_sizes(self, blocks: np.ndarray) -> np.ndarray:
        """(len(blocks),) int64 samples in each block."""
        starts = blocks * self.samples_per_shard
        return np.minimum(starts + self.samples_per_shard, self.num_samples) - starts

    def epoch_blocks(self, epoch: int, lane: int) -> np.ndarray:
        """Blocks of `lane` in `epoch`, in reading order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        return order[lane :: self.num_lanes]

    def window(self, epoch: int, lane: int, index: int, blocks: np.ndarray) -> Window:
        per = self.samples_per_shard
        samples = np.concatenate(
            [np.arange(*st.shard_range(int(b), self.num_samples, per)) for b in blocks]
        )
        rng = np.random.default_rng([self.seed, epoch, lane, index])
        perm = rng.permutation(len(samples))
        flips = rng.random(len(samples)) < 0.5 if self.flip else np.zeros(len(samples), bool)
        return Window(epoch, index, tuple(int(b) for b in blocks), perm, samples[perm], flips)

    def windows(self, lane: int, *, start: int = 0) -> Iterator[tuple[Window, int]]:
        """Endless windows of `lane` from lane sample position `start` on.

        Yields:
            (window, skip): serve the window's stream positions [skip:]; skip > 0 only for
            the first window, where `start` falls inside it.
        """
        assert 0 <= lane < self.num_lanes and start >= 0
        epoch = 0
        while True:  # skip whole epochs: only block sizes are summed, nothing is read
            total = int(self.block_sizes(self.epoch_blocks(epoch, lane)).sum())
            if start < total:
                break
            start -= total
            epoch += 1
        while True:
            blocks = self.epoch_blocks(epoch, lane)
            sizes = self.block_sizes(blocks)
            for index, first in enumerate(range(0, len(blocks), self.shuffle_blocks)):
                size = int(sizes[first : first + self.shuffle_blocks].sum())
                if start >= size:
                    start -= size
                    continue
                chunk = blocks[first : first + self.shuffle_blocks]
                yield self.window(epoch, lane, index, chunk), start
                start = 0
            epoch += 1

    def lane_samples(self, lane: int, *, start: int, count: int) -> np.ndarray:
        """(count,) store indices at lane positions [start, start + count): the plan, no I/O."""
        out: list[np.ndarray] = []
        need = count
        for window, skip in self.windows(lane, start=start):
            take = window.samples[skip : skip + need]
            out.append(take)
            need -= len(take)
            if need == 0:
                break
        return np.concatenate(out) if out else np.zeros(0, np.int64)


def step_lane(step: int, *, rank: int, workers: int) -> tuple[int, int]:
    """(lane, lane batch index) that training step `step` of `rank` reads (module doc, 4)."""
    workers = max(1, workers)
    return rank * workers + step % workers, step // workers


# ---------------------------------------------------------------------------------------------
# Reading and assembling batches


class _Reader:
    """Opens the store's arrays on first use, i.e. inside the process that reads."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self._arrays: dict[str, zarr.Array] | None = None

    def read_blocks(self, blocks: tuple[int, ...]) -> dict[str, np.ndarray]:
        """Every array's samples of `blocks`, concatenated block by block, as stored."""
        if self._arrays is None:
            self._arrays = {
                name: zarr.open_array(str(where / key), mode="r")
                for name, (where, key) in self.spec.arrays.items()
            }
        spec = self.spec
        out = {}
        for name, arr in self._arrays.items():
            parts = [
                arr[slice(*st.shard_range(b, spec.num_samples, spec.samples_per_shard))]
                for b in blocks
            ]
            out[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return out


def flip_arrays(
    images: np.ndarray,
    masks: np.ndarray,
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    *,
    skeleton: Skeleton,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mirror samples horizontally, swapping left/right channels (new arrays).

    Crop pixel x becomes S - 1 - x and grid cell j becomes h - 1 - j, which agree because
    cell j sits at pixel j * stride + (stride - 1) / 2.

    Args:
        images: (B, S, S, 3) uint8. masks: (B, h, h).
        heatmaps: (B, K+1, h, h); channel k of the result is channel perm[k] mirrored
            (`skeleton.heatmap_flip_permutation`), background stays last.
        pafs: (B, 2L, h, h); channel c of the result is sign[c] * channel perm[c] mirrored
            (`skeleton.paf_flip`): limbs swap sides and x components change sign.
    """
    paf_perm, paf_sign = skeleton.paf_flip()
    return (
        images[:, :, ::-1].copy(),
        masks[:, :, ::-1].copy(),
        heatmaps[:, skeleton.heatmap_flip_permutation(), :, ::-1].copy(),
        pafs[:, paf_perm, :, ::-1] * paf_sign[None, :, None, None].astype(pafs.dtype),
    )


def _to_batch(
    data: dict[str, np.ndarray], index: np.ndarray, flips: np.ndarray, skeleton: Skeleton
) -> dict[str, torch.Tensor]:
    images = data["images"]
    masks = data["masks"].astype(np.float32)
    heatmaps = data["heatmaps"].astype(np.float32)
    pafs = data["pafs"].astype(np.float32)
    if flips.any():  # every array here is a fresh gather, safe to modify in place
        f = np.flatnonzero(flips)
        images[f], masks[f], heatmaps[f], pafs[f] = flip_arrays(
            images[f], masks[f], heatmaps[f], pafs[f], skeleton=skeleton
        )
    return {
        "images": torch.from_numpy(np.ascontiguousarray(images)),  # (B, S, S, 3) uint8
        "masks": torch.from_numpy(masks[:, None]),  # (B, 1, h, h) float32
        "heatmaps": torch.from_numpy(heatmaps),  # (B, K+1, h, h) float32
        "pafs": torch.from_numpy(pafs),  # (B, 2L, h, h) float32
        "index": torch.from_numpy(index.astype(np.int64)),  # (B,) store sample index
    }


def lane_batches(
    spec: StoreSpec,
    layout: StreamLayout,
    lane: int,
    *,
    batch_size: int,
    start_batch: int = 0,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of one lane, from lane batch `start_batch` on.

    Yields:
        {"images": (B, S, S, 3) uint8, "masks": (B, 1, h, h) float32, "heatmaps":
        (B, K+1, h, h) float32, "pafs": (B, 2L, h, h) float32, "index": (B,) int64}.
    """
    reader = _Reader(spec)
    pieces: list[dict[str, np.ndarray]] = []  # gathered samples of the batch being filled
    filled = 0
    for window, skip in layout.windows(lane, start=start_batch * batch_size):
        data = reader.read_blocks(window.blocks)
        pos, n = skip, len(window.perm)
        while pos < n:
            # gather batch by batch: a window is never copied whole (it can be ~100 MB at 368 px)
            take = min(batch_size - filled, n - pos)
            sel = window.perm[pos : pos + take]
            piece = {name: arr[sel] for name, arr in data.items()}
            piece["index"] = window.samples[pos : pos + take]
            piece["flips"] = window.flips[pos : pos + take]
            pieces.append(piece)
            filled += take
            pos += take
            if filled == batch_size:
                part = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
                index, flips = part.pop("index"), part.pop("flips")
                yield _to_batch(part, index, flips, spec.skeleton)
                pieces, filled = [], 0


class StoreStream(IterableDataset):
    """Endless training batches of one DDP rank, split over DataLoader workers by lane.

    Use with `DataLoader(stream, batch_size=None, num_workers=W)` (see `make_loader`); the
    stream makes whole batches itself. Each worker opens the store lazily in `__iter__`, so
    nothing open is passed through fork.
    """

    def __init__(
        self,
        spec: StoreSpec,
        *,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_blocks: int = 4,
        flip: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise LcposeError(f"--batch-size must be >= 1, got {batch_size}")
        self.spec = spec
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.shuffle_blocks = shuffle_blocks
        self.flip = flip

    def layout(self, workers: int) -> StreamLayout:
        """The order for `workers` DataLoader workers per rank (0 counts as 1)."""
        return StreamLayout(
            num_samples=self.spec.num_samples,
            samples_per_shard=self.spec.samples_per_shard,
            seed=self.seed,
            num_lanes=self.world_size * max(1, workers),
            shuffle_blocks=self.shuffle_blocks,
            flip=self.flip,
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        # this worker serves steps start_step + worker, + workers, ... (DataLoader round-robin)
        first_step = self.start_step + worker
        lane, start_batch = step_lane(first_step, rank=self.rank, workers=workers)
        yield from lane_batches(
            self.spec,
            self.layout(workers),
            lane,
            batch_size=self.batch_size,
            start_batch=start_batch,
        )


def make_loader(
    stream: StoreStream, *, workers: int, pin_memory: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of batches in step order, decoded in `workers` processes.

    Raises:
        LcposeError: more readers (ranks x workers) than the store has shards.
    """
    if workers < 0:
        raise LcposeError(f"--workers must be >= 0, got {workers}")
    stream.layout(workers)  # validates before any worker starts
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
    )
    return iter(loader)
