"""Training batches streamed from an lcdata store, in a seekable, reproducible order.

Letters used in shapes below:
    B     samples in a batch (per process)
    S     side of the square input crop, in crop pixels
    h     side of the maps in cells = S // stride
    K+1   heatmap channels (last = background), 2L PAF channels (2l = x, 2l + 1 = y)

The store is never loaded into memory: the stream reads whole blocks (B samples, one zarr
chunk, `lcdata.store.layout`) a few at a time.

The order, a pure function of (seed, epoch, position), is defined by `StreamLayout`:

1. Epoch e visits the blocks in the order `default_rng([seed, e]).permutation(num_blocks)`.
2. The blocks are dealt to `num_lanes` = (DDP ranks x readers per rank) lanes:
   lane g gets blocks perm[g::num_lanes], so lanes, hence workers and ranks, read disjoint
   blocks and together cover every sample exactly once per epoch.
3. A lane cuts its blocks into windows of `shuffle_blocks` consecutive blocks and shuffles the
   samples inside each window with `default_rng([seed, e, g, window])` (the shuffle buffer).
   Concatenating windows and then epochs gives the lane's endless sample stream; lane batch m
   is samples [m B, (m + 1) B) of it (a batch may straddle two windows or epochs).
4. Training step s of rank r takes lane batch s // W of lane r W + s % W, W = workers (1
   with none), which is exactly the round-robin in which a DataLoader collects from its W
   workers, and in which `ThreadedBatches` collects from its W reader threads. Resuming at
   step k therefore only has to tell each reader where its first batch lies: the lane
   position is found by summing block sizes, and only the one window the position falls
   into is read, whatever k is.

Consequence: the batch sequence depends on (seed, batch size, workers, ranks, shuffle_blocks,
flip), and a resumed run must keep them (`trainer.fit` checks).

Targets: `target/*` when the store has them (a corrected store), else `gt/*`; `teacher/*` or
any of them on request. A corrected store may hold only maps and name the store with the
images and masks in its attribute `source_store` (a path, relative to the corrected store or
absolute); arrays the store lacks are read from there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import zarr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lcdata.errors import ConfigError, LcposeError
from lcdata.labels.augment import flip_maps
from lcdata.labels.skeleton import Skeleton
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
        num_lanes: independent readers, = DDP world size x DataLoader workers (or 1).
        shuffle_blocks: blocks per shuffle window.
        flip: draw a random horizontal flip (probability 1/2) per sample.
    """

    num_samples: int
    samples_per_block: int
    seed: int
    num_lanes: int = 1
    shuffle_blocks: int = 4
    flip: bool = False

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
                f"{self.num_lanes} readers (ranks x workers) need one each; use fewer --workers"
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

    def read_blocks(self, blocks: tuple[int, ...]) -> dict[str, list[np.ndarray]]:
        """Every array's samples of `blocks`, one array per block, as stored.

        The blocks are not concatenated: a window of four 368 px blocks is ~100 MB, and
        copying it costs about as much as decompressing it; batches gather from the parts.
        """
        if self._arrays is None:
            self._arrays = {
                name: zarr.open_array(str(where / key), mode="r")
                for name, (where, key) in self.spec.arrays.items()
            }
        spec = self.spec
        out: dict[str, list[np.ndarray]] = {}
        for name, arr in self._arrays.items():
            out[name] = []
            for b in blocks:
                try:
                    out[name].append(
                        arr[slice(*block_range(b, spec.num_samples, spec.samples_per_block))]
                    )
                except Exception as err:  # a damaged chunk: say which one
                    where, key = spec.arrays[name]
                    raise LcposeError(f"{where / key}: cannot read block {b} ({err})") from err
        return out


def _gather(
    parts: list[np.ndarray], starts: np.ndarray, sel: np.ndarray, *, shared: bool = False
) -> torch.Tensor:
    """Samples `sel` (positions in the blocks laid end to end) of `parts`, into a new tensor.

    Args:
        parts: per-block arrays, (n_b, ...) each. starts: (len(parts),) first position of
            each block. sel: (n,) positions.
        shared: allocate the result in shared memory. In a DataLoader worker this saves a
            copy: torch would otherwise copy every batch tensor into shared memory to hand it
            to the main process (a third of a worker's time at 368 px).
    """
    block = np.searchsorted(starts, sel, side="right") - 1
    local = sel - starts[block]
    shape = (len(sel), *parts[0].shape[1:])
    if shared:
        dtype = torch.from_numpy(parts[0][:0]).dtype
        tensor = torch.empty(shape, dtype=dtype).share_memory_()
    else:
        tensor = torch.from_numpy(np.empty(shape, parts[0].dtype))
    out = tensor.numpy()
    for i, (b, j) in enumerate(zip(block.tolist(), local.tolist(), strict=True)):
        out[i] = parts[b][j]
    return tensor


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
        {"images": (B, S, S, 3) uint8, "masks": (B, 1, h, h) uint8, "heatmaps":
        (B, K+1, h, h) float16, "pafs": (B, 2L, h, h) float16, "index": (B,) int64}, the
        stored dtypes; `to_device` moves and casts them.
    """
    reader = _Reader(spec)
    shared = get_worker_info() is not None  # batches go to the main process through shm
    pieces: list[dict[str, Any]] = []  # gathered samples of the batch being filled
    filled = 0
    for window, skip in layout.windows(lane, start=start_batch * batch_size):
        data = reader.read_blocks(window.blocks)
        starts = np.concatenate([[0], np.cumsum(layout.block_sizes(np.asarray(window.blocks)))])
        pos, n = skip, len(window.perm)
        while pos < n:
            take = min(batch_size - filled, n - pos)
            sel = window.perm[pos : pos + take]
            share = shared and take == batch_size  # a straddling batch is concatenated anyway
            piece = {name: _gather(p, starts, sel, shared=share) for name, p in data.items()}
            piece["index"] = window.samples[pos : pos + take]
            piece["flips"] = window.flips[pos : pos + take]
            pieces.append(piece)
            filled += take
            pos += take
            if filled == batch_size:
                if len(pieces) == 1:
                    part = pieces[0]
                else:  # the batch straddles two windows or epochs
                    part = {
                        k: (torch.cat if k in data else np.concatenate)([p[k] for p in pieces])
                        for k in pieces[0]
                    }
                index, flips = part.pop("index"), part.pop("flips")
                yield _to_batch(part, index, flips, spec.skeleton)
                pieces, filled = [], 0


class StoreStream(IterableDataset):
    """Endless training batches of one DDP rank, split over readers by lane.

    Read it with `make_loader` (reader threads, or `DataLoader(stream, batch_size=None,
    num_workers=W)` worker processes); the stream makes whole batches itself. Each reader
    opens the store lazily (`worker_batches`), so nothing open is passed through fork.
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
            raise ConfigError("StoreStream", "batch_size", f"must be >= 1, got {batch_size}")
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
            samples_per_block=self.spec.samples_per_block,
            seed=self.seed,
            num_lanes=self.world_size * max(1, workers),
            shuffle_blocks=self.shuffle_blocks,
            flip=self.flip,
        )

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        return self.worker_batches(worker, workers)

    def worker_batches(self, worker: int, workers: int) -> Iterator[dict[str, torch.Tensor]]:
        """The batches reader `worker` of `workers` (0 counts as 1) serves, in order."""
        # this worker serves steps start_step + worker, + workers, ... (round-robin collection)
        first_step = self.start_step + worker
        lane, start_batch = step_lane(first_step, rank=self.rank, workers=workers)
        yield from lane_batches(
            self.spec,
            self.layout(workers),
            lane,
            batch_size=self.batch_size,
            start_batch=start_batch,
        )


PREFETCH = 4
"""Batches each reader (thread or worker process) keeps ready."""


def make_loader(
    stream: StoreStream, *, workers: int, reader: str = "threads", pin_memory: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of batches in step order, read by `workers` readers.

    Args:
        workers: readers; 0 reads in the caller's thread, between steps.
        reader: "threads" (default): reader threads in this process, batches handed over
            without a copy; zarr decompresses with the GIL released, so a few threads keep
            several cores busy. "processes": DataLoader worker processes; every batch crosses
            to this process through shared memory (/dev/shm, which containers often keep
            small). Both give the same batches in the same order.
        pin_memory: pin batches for fast copies to a CUDA device.

    Raises:
        LcposeError: more readers (ranks x workers) than the store has blocks, or an unknown
            reader.
    """
    if workers < 0:
        raise ConfigError("make_loader", "workers", f"must be >= 0, got {workers}")
    if reader not in READERS:
        raise ConfigError(
            "make_loader", "reader", f"must be one of {', '.join(READERS)}, got {reader!r}"
        )
    stream.layout(workers)  # validates before any worker starts
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


class _Failed:
    """What a reader thread hands over instead of a batch when it fails."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _serve(
    stream: StoreStream,
    worker: int,
    workers: int,
    out: queue.Queue,
    stop: threading.Event,
    pin_memory: bool,
) -> None:
    """Body of reader thread `worker`: its batches into `out` until `stop` is set."""

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for batch in stream.worker_batches(worker, workers):
            if pin_memory:
                batch = {k: v.pin_memory() for k, v in batch.items()}
            if not put(batch):
                return
    except BaseException as error:  # handed to the consumer, which raises it
        put(_Failed(error))


class ThreadedBatches(Iterator[dict[str, torch.Tensor]]):
    """Batches of W reader threads, taken round-robin as a DataLoader takes them from its W
    worker processes, so the order is the same (`StoreStream.worker_batches`).

    The threads stop when this object is closed or garbage-collected; they hold no reference
    to it. A reader's exception is raised by `__next__`.
    """

    def __init__(
        self, stream: StoreStream, *, workers: int, prefetch: int = 4, pin_memory: bool = False
    ) -> None:
        self._stop = threading.Event()
        self._queues: list[queue.Queue] = [queue.Queue(prefetch) for _ in range(workers)]
        self._threads = [
            threading.Thread(
                target=_serve,
                args=(stream, w, workers, self._queues[w], self._stop, pin_memory),
                name=f"lcpose-reader-{w}",
                daemon=True,
            )
            for w in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        self._turn = 0

    def __next__(self) -> dict[str, torch.Tensor]:
        w = self._turn % len(self._queues)
        while True:
            try:
                item = self._queues[w].get(timeout=1.0)
                break
            except queue.Empty:
                if not self._threads[w].is_alive():
                    raise LcposeError(f"reader thread {w} stopped without a batch") from None
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        self._turn += 1
        return item

    def close(self) -> None:
        """Stop the reader threads (they finish the batch they are reading)."""
        self._stop.set()

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
