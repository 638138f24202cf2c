"""Training batches streamed from an lcdata store, in a seekable, reproducible order.

Letters used in shapes below:
    B     samples in a batch (per process)
    S     side of the square input crop, in crop pixels
    h     side of the maps in cells = S // stride
    K+1   heatmap channels (last = background), 2L PAF channels (2l = x, 2l + 1 = y)

The store is never loaded into memory: batches are gathered from whole blocks (B samples,
one zarr chunk, `lcdata.store.layout`), each read once and kept while it is in use.

The order, a pure function of (seed, epoch, position), is defined by `StreamLayout`:

1. Epoch e visits the blocks in the order `default_rng([seed, e]).permutation(num_blocks)`.
2. The blocks are dealt to `num_lanes` = DDP ranks x `lanes` lanes: lane g gets blocks
   perm[g::num_lanes], so lanes, hence ranks, read disjoint blocks and together cover every
   sample exactly once per epoch.
3. A lane cuts its blocks into windows of `shuffle_blocks` consecutive blocks and shuffles the
   samples inside each window with `default_rng([seed, e, g, window])` (the shuffle buffer).
   Concatenating windows and then epochs gives the lane's endless sample stream; lane batch m
   is samples [m B, (m + 1) B) of it (a batch may straddle two windows or epochs).
4. Training step s of rank r takes lane batch s // Lr of lane r Lr + s % Lr, Lr = lanes per
   rank (`effective_lanes`: the run's `lanes`, fewer only for a store with fewer blocks).

The readers only decide who makes a batch (`BatchMaker.make(step)`), never what it holds:
threads or DataLoader worker processes, any number of them, give the same batches, and a run
resumed on a machine with other cores continues the same sequence. Resuming at step k reads
only the windows that step k's batch falls into: the lane position is found by summing block
sizes.

Consequence: the batch sequence depends on (seed, batch size, lanes, ranks, shuffle_blocks,
flip), and a resumed run must keep them (`trainer.checkpoint.check_resume`).

Targets: `target/*` when the store has them (a corrected store), else `gt/*`; `teacher/*` or
any of them on request. A corrected store may hold only maps and name the store with the
images and masks in its attribute `source_store`; arrays the store lacks are read from there.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lcdata.correction.rules import targets
from lcdata.errors import ConfigError, LcposeError
from lcdata.labels.augment import flip_maps, warp_parts
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import Skeleton
from lcdata.labels.warp import JitterConfig, jitter_affine, sample_jitter, warp_crop, warp_maps
from lcdata.store.layout import block_range, num_blocks
from lcdata.store.training import StoreSpec
from trainer.config import READERS

# ---------------------------------------------------------------------------------------------
# The order: pure functions of (seed, epoch, lane, position), no I/O


@dataclass(frozen=True)
class Window:
    """One shuffle window of a lane: a few blocks whose samples are served in `order`.

    Attributes:
        epoch: epoch the window belongs to.
        index: window number within the lane's epoch.
        blocks: block numbers, in the order they are read.
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
        samples_per_block: samples per block; the last block may be shorter.
        seed: non-negative root of every draw.
        num_lanes: disjoint sample streams, = DDP world size x lanes per rank.
        shuffle_blocks: blocks per shuffle window.
        flip: draw a random horizontal flip (probability 1/2) per sample.
        jitter: a fresh affine of every sample it serves (`lcdata.labels.warp`), drawn
            from `default_rng([seed, epoch, sample, JITTER_STREAM])`, or None.
    """

    num_samples: int
    samples_per_block: int
    seed: int
    num_lanes: int = 1
    shuffle_blocks: int = 4
    flip: bool = False
    jitter: JitterConfig | None = None

    def __post_init__(self) -> None:
        if self.seed < 0:
            raise ConfigError("StreamLayout", "seed", f"must be >= 0, got {self.seed}")
        if self.shuffle_blocks < 1:
            raise ConfigError(
                "StreamLayout", "shuffle_blocks", f"must be >= 1, got {self.shuffle_blocks}"
            )
        if self.num_blocks < self.num_lanes:
            raise LcposeError(
                f"store has {self.num_blocks} block(s) of {self.samples_per_block} samples but "
                f"{self.num_lanes} lanes (ranks x lanes per rank) need one each"
            )

    @property
    def num_blocks(self) -> int:
        return num_blocks(self.num_samples, self.samples_per_block)

    def block_sizes(self, blocks: np.ndarray) -> np.ndarray:
        """(len(blocks),) int64 samples in each block."""
        starts = blocks * self.samples_per_block
        return np.minimum(starts + self.samples_per_block, self.num_samples) - starts

    def epoch_blocks(self, epoch: int, lane: int) -> np.ndarray:
        """Blocks of `lane` in `epoch`, in reading order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_blocks)
        return order[lane :: self.num_lanes]

    def window(self, epoch: int, lane: int, index: int, blocks: np.ndarray) -> Window:
        per = self.samples_per_block
        samples = np.concatenate(
            [np.arange(*block_range(int(b), self.num_samples, per)) for b in blocks]
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


def effective_lanes(lanes: int, *, num_blocks: int, world_size: int = 1) -> int:
    """Lanes per rank a run uses: `lanes`, fewer when the store has fewer blocks than
    world size x lanes (every lane needs a block of its own).

    Raises:
        LcposeError: fewer blocks than ranks.
    """
    if lanes < 1:
        raise ConfigError("effective_lanes", "lanes", f"must be >= 1, got {lanes}")
    if num_blocks < world_size:
        raise LcposeError(
            f"store has {num_blocks} block(s) but {world_size} ranks need one each; rebuild "
            f"it with a smaller --samples-per-shard"
        )
    return max(1, min(lanes, num_blocks // world_size))


def step_lane(step: int, *, rank: int, lanes: int) -> tuple[int, int]:
    """(lane, lane batch index) that training step `step` of `rank` reads (module doc, 4)."""
    return rank * lanes + step % lanes, step // lanes


# ---------------------------------------------------------------------------------------------
# Reading and assembling batches


class _Reader:
    """Opens the store's arrays on first use, i.e. inside the process that reads."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self._arrays: dict[str, zarr.Array] | None = None
        self._lock = threading.Lock()

    def read_block(self, block: int) -> dict[str, np.ndarray]:
        """Every array's samples of one block, as stored."""
        with self._lock:
            if self._arrays is None:
                self._arrays = {
                    name: zarr.open_array(str(where / key), mode="r")
                    for name, (where, key) in self.spec.arrays.items()
                }
        spec = self.spec
        rows = slice(*block_range(block, spec.num_samples, spec.samples_per_block))
        out: dict[str, np.ndarray] = {}
        for name, arr in self._arrays.items():
            try:
                out[name] = arr[rows]
            except Exception as err:  # a damaged chunk: say which one
                where, key = spec.arrays[name]
                raise LcposeError(f"{where / key}: cannot read block {block} ({err})") from err
        return out


class BlockCache:
    """Blocks of the store, each read once while it is in use (least recently used go).

    Thread-safe: a block asked for by several threads is read by one of them. With a thread
    `pool`, reads run there and can be started ahead of need (`prefetch`).
    """

    def __init__(
        self, spec: StoreSpec, *, capacity: int, pool: ThreadPoolExecutor | None = None
    ) -> None:
        self._reader = _Reader(spec)
        self._capacity = max(1, capacity)
        self._pool = pool
        self._lock = threading.Lock()
        self._blocks: OrderedDict[int, Future] = OrderedDict()

    def _future(self, block: int) -> Future:
        with self._lock:
            future = self._blocks.get(block)
            if future is not None:
                self._blocks.move_to_end(block)
                return future
            if self._pool is not None:
                future = self._pool.submit(self._reader.read_block, block)
            else:
                future = Future()
                future.set_running_or_notify_cancel()
                try:
                    future.set_result(self._reader.read_block(block))
                except BaseException as err:  # handed to whoever waits on it
                    future.set_exception(err)
            self._blocks[block] = future
            while len(self._blocks) > self._capacity:
                self._blocks.popitem(last=False)
            return future

    def get(self, block: int) -> dict[str, np.ndarray]:
        return self._future(block).result()

    def prefetch(self, blocks: Iterable[int]) -> None:
        """Start reading `blocks` (with a pool; without one this does nothing)."""
        if self._pool is not None:
            for block in blocks:
                self._future(block)


class _LaneCursor:
    """The windows of one lane around the positions asked for lately, found once."""

    def __init__(self, layout: StreamLayout, lane: int) -> None:
        self.layout, self.lane = layout, lane
        self._windows: list[tuple[int, Window]] = []  # (first lane position, window)
        self._next: Iterator[tuple[Window, int]] | None = None
        self._end = 0

    def _restart(self, position: int) -> None:
        self._next = self.layout.windows(self.lane, start=position)
        window, skip = next(self._next)
        self._windows = [(position - skip, window)]
        self._end = position - skip + len(window.samples)

    def windows(self, start: int, stop: int) -> list[tuple[int, Window]]:
        """(first position, window) of the windows that lane positions [start, stop) meet,
        plus the window after them (to read ahead)."""
        if not self._windows or start < self._windows[0][0]:
            self._restart(start)
        while self._end <= stop:
            window, _ = next(self._next)
            self._windows.append((self._end, window))
            self._end += len(window.samples)
        # forget windows entirely before `start` (steps come roughly in order)
        while (
            len(self._windows) > 1
            and self._windows[0][0] + len(self._windows[0][1].samples) <= start
        ):
            self._windows.pop(0)
        return [(first, w) for first, w in self._windows if first < stop + len(w.samples)]


def _gather(
    blocks: dict[int, dict[str, np.ndarray]],
    samples: np.ndarray,
    per_block: int,
    name: str,
    *,
    shared: bool = False,
) -> torch.Tensor:
    """Samples `samples` (store indices) of array `name` from their blocks, into a new tensor.

    Args:
        blocks: block number -> {array name: (n_b, ...) the block's samples}.
        shared: allocate the result in shared memory. In a DataLoader worker this saves a
            copy: torch would otherwise copy every batch tensor into shared memory to hand it
            to the main process (a third of a worker's time at 368 px).
    """
    first = blocks[int(samples[0]) // per_block][name]
    shape = (len(samples), *first.shape[1:])
    if shared:
        tensor = torch.empty(shape, dtype=torch.from_numpy(first[:0]).dtype).share_memory_()
    else:
        tensor = torch.from_numpy(np.empty(shape, first.dtype))
    out = tensor.numpy()
    for i, sample in enumerate(samples.tolist()):
        block, offset = divmod(sample, per_block)
        out[i] = blocks[block][name][offset]
    return tensor


class BatchMaker:
    """Makes the batch of any training step of one rank (module doc); thread-safe.

    Args:
        spec: the checked store.
        layout: the order (`StreamLayout`, with num_lanes = ranks x `lanes`).
        batch_size: B.
        rank: this process's DDP rank.
        lanes: lanes per rank (`effective_lanes`).
        pool: threads that read blocks (ahead of need); None reads in the calling thread.
        shared: gather batches into shared memory (inside DataLoader worker processes).
    """

    def __init__(
        self,
        spec: StoreSpec,
        layout: StreamLayout,
        *,
        batch_size: int,
        rank: int,
        lanes: int,
        pool: ThreadPoolExecutor | None = None,
        shared: bool = False,
    ) -> None:
        self.spec, self.layout, self.batch_size = spec, layout, batch_size
        self.rank, self.lanes, self.shared = rank, lanes, shared
        # the current and the next window of every lane, with room for batches in flight
        workers = pool._max_workers if pool is not None else 1  # noqa: SLF001
        self.cache = BlockCache(
            spec, capacity=lanes * layout.shuffle_blocks * 2 + 2 * workers + 2, pool=pool
        )
        self._cursors = {
            lane: _LaneCursor(layout, lane) for lane in range(rank * lanes, (rank + 1) * lanes)
        }
        self._locks = {lane: threading.Lock() for lane in self._cursors}

    def make(self, step: int) -> dict[str, torch.Tensor]:
        """The batch of training step `step` (0-based, this rank's steps)."""
        lane, m = step_lane(step, rank=self.rank, lanes=self.lanes)
        start, stop = m * self.batch_size, (m + 1) * self.batch_size
        with self._locks[lane]:
            windows = self._cursors[lane].windows(start, stop)
        samples, flips, epochs, ahead = [], [], [], []
        for first, window in windows:
            lo, hi = max(start - first, 0), min(stop - first, len(window.samples))
            if lo < hi:
                samples.append(window.samples[lo:hi])
                flips.append(window.flips[lo:hi])
                epochs.append(np.full(hi - lo, window.epoch))
            else:
                ahead.extend(window.blocks)
        index, flip = np.concatenate(samples), np.concatenate(flips)
        self.cache.prefetch(ahead)
        per = self.spec.samples_per_block
        blocks = {b: self.cache.get(b) for b in np.unique(index // per).tolist()}
        data = {
            name: _gather(blocks, index, per, name, shared=self.shared) for name in self.spec.arrays
        }
        if self.layout.jitter is not None:
            _jitter_batch(data, index, np.concatenate(epochs), self.layout, self.spec)
        return _to_batch(data, index, flip, self.spec.skeleton)


JITTER_STREAM = 0x6A17
"""Last key of the jitter draws, so they never coincide with another stream's."""


def _jitter_batch(
    data: dict[str, torch.Tensor],
    index: np.ndarray,
    epochs: np.ndarray,
    layout: StreamLayout,
    spec: StoreSpec,
) -> None:
    """Give every sample of a gathered batch its own fresh view, in place.

    Sample n of epoch e draws from `default_rng([seed, e, n, JITTER_STREAM])`, so its view
    depends only on the run's seed and where it is in the stream, never on the readers.
    Crop, mask and maps are warped together (`lcdata.labels.warp`); with
    `spec.online` the targets are rebuilt for the view: GT rendered from the moved
    keypoints, and for a corrected store the store's rule applied to that GT and the warped
    teacher maps. Maps stay float16.
    """
    images, masks = data["images"].numpy(), data["masks"].numpy()
    # float16 <-> float32 through torch: numpy's casts of float16 are not vectorised
    heat32, paf32 = data["heatmaps"].float().numpy(), data["pafs"].float().numpy()
    online = spec.online
    keypoints = data["keypoints"].numpy() if online is not None else None
    skeleton, render = spec.skeleton, spec.render
    size, stride = images.shape[1], render.stride
    for i, (n, e) in enumerate(zip(index.tolist(), epochs.tolist(), strict=True)):
        rng = np.random.default_rng([layout.seed, int(e), int(n), JITTER_STREAM])
        view = sample_jitter(rng, layout.jitter, size)
        affine = jitter_affine(view, size)
        images[i], masks[i] = warp_crop(images[i], masks[i], affine, stride=stride)
        if online is None or online.kind == "correct":  # stored (or teacher) maps move
            h, p = warp_maps(heat32[i], paf32[i], affine, stride=stride, skeleton=skeleton)
        if online is not None:
            parts = warp_parts(keypoints[i], affine, flipped=view.flip, skeleton=skeleton)
            gt_h, gt_p = render_targets(parts, cfg=render, skeleton=skeleton)
            if online.kind == "render":
                h, p = gt_h, gt_p
            else:
                out = targets(gt_h[None], gt_p[None], h[None], p[None], **online.kwargs())
                h, p = out.heatmaps, out.pafs
                h, p = h[0], p[0]
        heat32[i], paf32[i] = h, p
    data["heatmaps"].copy_(torch.from_numpy(heat32))
    data["pafs"].copy_(torch.from_numpy(paf32))


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
    heat, paf = flip_maps(heatmaps, pafs, skeleton=skeleton)
    return images[:, :, ::-1].copy(), masks[:, :, ::-1].copy(), heat, paf


def _to_batch(
    data: dict[str, torch.Tensor], index: np.ndarray, flips: np.ndarray, skeleton: Skeleton
) -> dict[str, torch.Tensor]:
    # dtypes stay as stored (uint8 images and masks, float16 maps): half the bytes through the
    # worker queues and no casts on the reader's CPU; `to_device` casts on the device
    if flips.any():  # every tensor here is a fresh gather, safe to modify in place
        f = np.flatnonzero(flips)
        images, masks, heatmaps, pafs = (
            data[k].numpy() for k in ("images", "masks", "heatmaps", "pafs")
        )
        images[f], masks[f], heatmaps[f], pafs[f] = flip_arrays(
            images[f], masks[f], heatmaps[f], pafs[f], skeleton=skeleton
        )
    return {
        "images": data["images"],  # (B, S, S, 3) uint8
        "masks": data["masks"].unsqueeze(1),  # (B, 1, h, h) uint8
        "heatmaps": data["heatmaps"],  # (B, K+1, h, h) float16
        "pafs": data["pafs"],  # (B, 2L, h, h) float16
        "index": torch.from_numpy(index.astype(np.int64)),  # (B,) store sample index
    }


def to_device(
    batch: dict[str, torch.Tensor], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A reader batch on `device`, maps and masks cast to float32 there.

    Returns:
        images (B, S, S, 3) uint8 (for `trainer.models.preprocess`), masks (B, 1, h, h),
        heatmaps (B, K+1, h, h), pafs (B, 2L, h, h), all three float32.
    """
    images = batch["images"].to(device, non_blocking=True)
    masks, heatmaps, pafs = (
        batch[k].to(device, non_blocking=True).float() for k in ("masks", "heatmaps", "pafs")
    )
    return images, masks, heatmaps, pafs


class StoreStream(IterableDataset):
    """Endless training batches of one DDP rank, from step `start_step` on.

    Read it with `make_loader` (reader threads, or `DataLoader(stream, batch_size=None,
    num_workers=W)` worker processes); the stream makes whole batches itself. Every reader
    opens the store lazily, so nothing open is passed through fork.
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
        lanes: int = 2,
        shuffle_blocks: int = 4,
        flip: bool = False,
        jitter: JitterConfig | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ConfigError("StoreStream", "batch_size", f"must be >= 1, got {batch_size}")
        self.spec = spec
        self.batch_size = batch_size
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.lanes = effective_lanes(
            lanes, num_blocks=num_blocks(spec.num_samples, spec.samples_per_block),
            world_size=world_size,
        )  # fmt: skip
        self.shuffle_blocks = shuffle_blocks
        self.flip = flip
        self.jitter = jitter

    def layout(self) -> StreamLayout:
        """The order of the samples (the same for every reader)."""
        return StreamLayout(
            num_samples=self.spec.num_samples,
            samples_per_block=self.spec.samples_per_block,
            seed=self.seed,
            num_lanes=self.world_size * self.lanes,
            shuffle_blocks=self.shuffle_blocks,
            flip=self.flip,
            jitter=self.jitter,
        )

    def maker(self, *, pool: ThreadPoolExecutor | None = None, shared: bool = False) -> BatchMaker:
        return BatchMaker(
            self.spec,
            self.layout(),
            batch_size=self.batch_size,
            rank=self.rank,
            lanes=self.lanes,
            pool=pool,
            shared=shared,
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        # worker w of W makes steps start + w, start + w + W, ...: a DataLoader collects from
        # its workers round-robin, so the batches arrive in step order
        maker = self.maker(shared=info is not None)
        for step in itertools.count(self.start_step + worker, workers):
            yield maker.make(step)


PREFETCH = 4
"""Batches each reader (thread or worker process) keeps ready."""


def make_loader(
    stream: StoreStream, *, workers: int, reader: str = "threads", pin_memory: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of batches in step order, made by `workers` readers.

    Args:
        workers: readers; 0 makes each batch in the caller's thread, between steps.
        reader: "threads" (default): reader threads in this process, batches handed over
            without a copy; zarr decompresses and OpenCV warps with the GIL released, so a
            few threads keep several cores busy. "processes": DataLoader worker processes;
            every batch crosses to this process through shared memory (/dev/shm, which
            containers often keep small), and each process reads the blocks of the lanes its
            steps fall on (with `lanes` a multiple of `workers`, each lane in one process).
            The batches are the same either way, whatever `workers` is.
        pin_memory: pin batches for fast copies to a CUDA device.

    Raises:
        LcposeError: an unknown reader or a negative number of workers.
    """
    if workers < 0:
        raise ConfigError("make_loader", "workers", f"must be >= 0, got {workers}")
    if reader not in READERS:
        raise ConfigError(
            "make_loader", "reader", f"must be one of {', '.join(READERS)}, got {reader!r}"
        )
    if reader == "threads" and workers > 0:
        return ThreadedBatches(stream, workers=workers, prefetch=PREFETCH, pin_memory=pin_memory)
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=PREFETCH if workers else None,
    )
    return iter(loader)


class ThreadedBatches(Iterator[dict[str, torch.Tensor]]):
    """Batches made by `workers` threads, `workers` + `prefetch` steps ahead, handed over in
    step order. A reader's exception is raised by `__next__`; `close` stops the threads."""

    def __init__(
        self, stream: StoreStream, *, workers: int, prefetch: int = 4, pin_memory: bool = False
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lcpose-batch")
        self._io = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lcpose-read")
        self._maker = stream.maker(pool=self._io)
        self._pin = pin_memory
        self._next_step = stream.start_step
        self._queue: deque[Future] = deque()
        self._ahead = workers + prefetch
        self._closed = False
        for _ in range(self._ahead):
            self._submit()

    def _make(self, step: int) -> dict[str, torch.Tensor]:
        batch = self._maker.make(step)
        return {k: v.pin_memory() for k, v in batch.items()} if self._pin else batch

    def _submit(self) -> None:
        self._queue.append(self._pool.submit(self._make, self._next_step))
        self._next_step += 1

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._closed:
            raise LcposeError("batch reader is closed")
        try:
            batch = self._queue.popleft().result()
        except BaseException:
            self.close()
            raise
        self._submit()
        return batch

    def close(self) -> None:
        """Stop the reader threads (they finish the batch they are making)."""
        if not self._closed:
            self._closed = True
            for pool in (self._pool, self._io):
                pool.shutdown(wait=False, cancel_futures=True)

    def __del__(self) -> None:
        self.close()


def close_loader(batches: Iterator[dict[str, torch.Tensor]]) -> None:
    """Stop the readers of a `make_loader` iterator (threads, or DataLoader worker processes)."""
    if isinstance(batches, ThreadedBatches):
        batches.close()
    else:
        shutdown = getattr(batches, "_shutdown_workers", None)  # torch's DataLoader iterator
        if shutdown is not None:
            shutdown()
