"""Input pipeline benchmark: the store reader against a classic on-the-fly loader.

Also the tiny model's training step with batches from the store against batches already in
memory.

Store reader: `trainer.data.make_loader(StoreStream(spec, batch_size=B, seed=0), workers=W)`
on a GT store: whole shards decompressed by W reader threads (the default) or W DataLoader
worker processes, shuffled within windows, handed over in the stored dtypes (uint8 crops and
masks, float16 maps; the training step casts on its device).

Classic loader (the OpenPose way, built from lcdata's own functions): a map-style torch
Dataset whose `__getitem__` reads and decodes the image file (`read_image`), rasterises the
ignore mask from the annotations (`ignore_mask`), draws the view (`make_view`) and warps and
renders everything (`make_sample`: crop, grid mask, heatmaps, PAFs) into the store reader's
dtypes; `DataLoader(batch_size=B, shuffle=True, num_workers=W, prefetch_factor=4,
persistent_workers=True)`, the same W and prefetch as `make_loader`. Its work is Python-heavy
(rendering's many small numpy calls), so worker processes are its best setting.

Both produce the same batch dict (images uint8 (B, S, S, 3), masks uint8 (B, 1, h, h),
heatmaps and PAFs float16) from the same samples (the store holds exactly the samples the
classic loader renders: same images, views and seed). Throughput is measured after the first
batch (start-up excluded), for at least a few seconds each, interleaved twice.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from benchmarks import Context, Result, Table
from lcdata.build.gt import labelled_records, make_sample, make_view
from lcdata.config import AugmentConfig, RenderConfig
from lcdata.labels.coco import ignore_mask, load_coco, read_image
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.store.layout import read_attrs
from lcdata.store.training import open_training_store
from trainer.data import StoreStream, make_loader, to_device

NAME = "pipeline"
TITLE = "Input pipeline: store reader vs on-the-fly augmentation and rendering"
GOAL = ">= 5"
WORKERS = 2


class ClassicDataset(Dataset):
    """Sample n = view n % K of labelled image n // K, augmented and rendered on the fly."""

    def __init__(self, ann_file: Path, image_dir: Path, store: Path) -> None:
        attrs = read_attrs(store)  # the exact settings the store was built with
        build = attrs["build"]
        self.records = labelled_records(
            load_coco(
                ann_file,
                min_keypoints=build["min_keypoints"],
                keypoint_field=build["keypoint_field"],
            )
        )
        self.image_dir = image_dir
        self.views = build["views_per_image"]
        self.seed = build["seed"]
        self.render = RenderConfig.from_attrs(attrs["render"])
        self.augment = AugmentConfig.from_attrs(attrs["augment"])

    def __len__(self) -> int:
        return len(self.records) * self.views

    def __getitem__(self, n: int) -> dict[str, torch.Tensor]:
        record = self.records[n // self.views]
        image = read_image(self.image_dir, record)
        mask = ignore_mask(record)
        view = make_view(
            record, n % self.views, seed=self.seed, render=self.render, augment=self.augment
        )
        s = make_sample(image, mask, record, view, render=self.render, skeleton=CMU_SKELETON)
        return {  # the store reader's dtypes (float16 maps, uint8 masks)
            "images": torch.from_numpy(s["images"]),
            "masks": torch.from_numpy(s["masks"].astype(np.uint8)[None]),
            "heatmaps": torch.from_numpy(s["heatmaps"].astype(np.float16)),
            "pafs": torch.from_numpy(s["pafs"].astype(np.float16)),
        }


def classic_loader(ds: ClassicDataset, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=True,
        num_workers=WORKERS,
        prefetch_factor=4,
        persistent_workers=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    return itertools.chain.from_iterable(itertools.repeat(loader))


def store_loader(
    store: Path, batch_size: int, reader: str = "threads"
) -> Iterator[dict[str, torch.Tensor]]:
    spec = open_training_store(store)
    stream = StoreStream(spec, batch_size=batch_size, seed=0)
    return make_loader(stream, workers=WORKERS, reader=reader)


def throughput(
    batches: Iterator, batch_size: int, *, min_batches: int, min_seconds: float
) -> float:
    """Samples/s after the first batch (which pays for the workers' start-up)."""
    next(batches)
    t0 = time.perf_counter()
    count = 0
    while count < min_batches or time.perf_counter() - t0 < min_seconds:
        next(batches)
        count += 1
    return count * batch_size / (time.perf_counter() - t0)


def compare(
    ann: Path, image_dir: Path, store: Path, *, batch_size: int, quick: bool
) -> dict[str, float]:
    """Interleaved store (reader threads, reader processes) / classic throughput (two
    rounds, fresh loaders each time)."""
    store_sps, process_sps, classic_sps = [], [], []
    for _ in range(1 if quick else 2):
        it = store_loader(store, batch_size)
        store_sps.append(throughput(it, batch_size, min_batches=10, min_seconds=3))
        del it
        it = store_loader(store, batch_size, reader="processes")
        process_sps.append(throughput(it, batch_size, min_batches=10, min_seconds=3))
        del it
        it = classic_loader(ClassicDataset(ann, image_dir, store), batch_size)
        classic_sps.append(throughput(it, batch_size, min_batches=5, min_seconds=3))
        del it
    classic = np.asarray(classic_sps)
    return {
        "store_sps": float(np.median(store_sps)),
        "process_sps": float(np.median(process_sps)),
        "classic_sps": float(np.median(classic)),
        "ratio": float(np.median(np.asarray(store_sps) / classic)),
        "process_ratio": float(np.median(np.asarray(process_sps) / classic)),
        "samples": read_attrs(store)["num_samples"],
    }


def step_times(
    store: Path,
    *,
    batch_size: int,
    steps: int,
    batches: Callable[[], Iterator[dict[str, torch.Tensor]]] | None = None,
) -> dict[str, float]:
    """Seconds per training step of the default tiny model: batches from the store reader
    (W workers; or from `batches()`) vs the same batches already in memory; interleaved
    memory/real twice."""
    from trainer.losses import stage_losses
    from trainer.models import build_model, preprocess

    spec = open_training_store(store)
    torch.manual_seed(0)
    model = build_model("tiny", spec.skeleton, spec.stride).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = batches() if batches is not None else store_loader(store, batch_size)
    cached = [next(loader) for _ in range(8)]

    def train(batches: Iterator) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            images, masks, heatmaps, pafs = to_device(next(batches))
            stages = model(preprocess(images))
            loss, _ = stage_losses(stages, heatmaps, pafs, masks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - t0) / steps

    train(itertools.cycle(cached))  # warm-up: allocator, oneDNN primitives
    memory, real = [], []
    for _ in range(2):
        memory.append(train(itertools.cycle(cached)))
        real.append(train(loader))
    del loader
    return {
        "memory_s": float(np.median(memory)),
        "real_s": float(np.median(real)),
        "ratio": float(np.median(np.asarray(real) / np.asarray(memory))),
    }


def reader_anatomy(store: Path, work: Path) -> tuple[Table, float, float]:
    """Whole-shard read speed of each array in-process, re-encoded in the first version's
    layout (chunks of 1 sample inside zarr shards of B) and as stored (one chunk per shard of
    B samples), same codec: the per-chunk cost of zarr, the reason for the store layout."""
    import zarr

    table = Table(
        "one process, whole shards of 64 read into memory; samples/s per array",
        ("array", "chunks of 1 sample in shards of 64", "chunks of 64 (store layout)", "ratio"),
    )
    totals = [0.0, 0.0]
    for name in ("images", "masks", "gt/heatmaps", "gt/pafs"):
        arr = zarr.open_array(str(store / name), mode="r")
        per = (arr.shards or arr.chunks)[0]
        n = min(arr.shape[0] // per, 4) * per
        data = arr[:n]
        other = zarr.create_array(
            str(work / name.replace("/", "_")),
            shape=data.shape,
            chunks=(1, *data.shape[1:]),
            shards=(per, *data.shape[1:]),
            dtype=data.dtype,
            compressors=arr.compressors,
            fill_value=0,
        )
        other[:] = data
        speeds = []
        for a in (other, arr):
            t0 = time.perf_counter()
            for _ in range(3):
                for start in range(0, n, per):
                    a[start : start + per]
            speeds.append(3 * n / (time.perf_counter() - t0))
        totals = [t + 1 / sp for t, sp in zip(totals, speeds, strict=True)]
        table.rows.append((name, speeds[0], speeds[1], speeds[1] / speeds[0]))
    all_1, all_64 = 1 / totals[0], 1 / totals[1]
    table.rows.append(("all four", all_1, all_64, all_64 / all_1))
    return table, all_1, all_64


def run(ctx: Context) -> Result:
    threads = torch.get_num_threads()
    table = Table(
        f"samples/s, batches of B, {WORKERS} readers each, after the first batch",
        (
            "data",
            "samples in store",
            "B",
            "store reader (threads, default)",
            "store reader (processes)",
            "classic on-the-fly (processes)",
            "store / classic",
            "store (processes) / classic",
        ),
    )
    rows = {}
    if ctx.coco is not None:
        ann = ctx.coco / "annotations" / "person_keypoints_train2017.json"
        store = ctx.coco_gt_store(views=4, per_shard=16)
        rows["coco"] = compare(ann, ctx.coco / "train2017", store, batch_size=8, quick=ctx.quick)
        label = "COCO-MINI train, 368 px, stride 8, 4 views, shards of 16"
        table.rows.append((label, rows["coco"]["samples"], 8) + _cells(rows["coco"]))
    ann, images = ctx.synth(ctx.synth_images_small)
    synth_store = ctx.synth_gt_store(ctx.synth_images_small)
    rows["synth"] = compare(ann, images, synth_store, batch_size=16, quick=ctx.quick)
    label = "synthetic, 128 px, stride 4, 2 views, shards of 64"
    table.rows.append((label, rows["synth"]["samples"], 16) + _cells(rows["synth"]))

    torch.set_num_threads(1)
    try:
        steps = step_times(synth_store, batch_size=16, steps=10 if ctx.quick else 30)
    finally:
        torch.set_num_threads(threads)
    step_table = Table(
        "tiny (2 stages, width 64) training step, 128 px, batch 16, 1 torch thread, "
        f"{WORKERS} reader workers",
        ("data", "s / step", "samples/s"),
        [
            ("in memory (8 cached batches, cycled)", steps["memory_s"], 16 / steps["memory_s"]),
            ("store reader", steps["real_s"], 16 / steps["real_s"]),
            ("real / in memory", steps["ratio"], ""),
        ],
    )  # fmt: skip
    anatomy, read_1, read_64 = reader_anatomy(synth_store, ctx.dir("pipeline"))
    head = rows.get("coco", rows["synth"])
    met = head["ratio"] >= 5
    state = "met" if met else f"missed: {head['ratio']:.1f}x instead of 5x"
    bottleneck = steps["ratio"] <= 1.1
    notes = (
        f"On {'COCO-MINI crops at 368 px' if 'coco' in rows else 'synthetic crops'} the store "
        f"reader delivers {head['store_sps']:.0f} samples/s and the classic loader "
        f"{head['classic_sps']:.0f}: {head['ratio']:.1f}x (goal 5x: {state}). The classic "
        f"loader decodes a whole JPEG/PNG and rasterises the ignore polygons for every sample "
        f"before it can cut the crop and render 57 maps; the store reader only decompresses a "
        f"crop that is already cut and maps that are mostly zeros. The same store read by "
        f"{WORKERS} DataLoader worker processes (`--reader processes`) delivers "
        f"{head['process_sps']:.0f} samples/s ({head['process_ratio']:.1f}x): every batch "
        f"is written into fresh shared memory for the hand-over, and first touches of fresh "
        f"pages are slow on this VM, while reader threads hand over the arrays they filled "
        f"(zarr decompresses with the GIL released, so two threads use both cores). Crops "
        f"are stored with zstd's fast level (-1) since this version: faster to decompress "
        f"than level 3 for 11% more bytes (size benchmark). On the synthetic 128 px "
        f"set the ratio is {rows['synth']['ratio']:.2f}x ({rows['synth']['store_sps']:.0f} vs "
        f"{rows['synth']['classic_sps']:.0f} samples/s): 128 px PNGs with a few persons are "
        f"cheap to decode and render, so "
        + (
            "the store gains less there. "
            if rows["synth"]["ratio"] >= 1.1
            else "the store reader gains nothing there: at 128 px its cost is dominated by "
            "zarr's per-chunk overhead (see below), about what decoding and rendering a "
            "small synthetic image costs. "
        )
        + f"Training step of the tiny model (batch 16): "
        f"{1e3 * steps['real_s']:.0f} ms with batches from the store reader, "
        f"{1e3 * steps['memory_s']:.0f} ms with the same batches already in memory "
        f"({steps['ratio']:.2f}x): the reader is "
        f"{'not the bottleneck' if bottleneck else 'NOT hidden: it slows the step down'}. "
        f"On this 2-core machine the reader workers and the training thread share the cores, "
        f"so any reader cost shows up as step time; the step uses one torch thread because "
        f"two OpenMP threads stall whenever another process takes a core (see the build "
        f"benchmark). What bounds a zarr reader is its cost per chunk more than the bytes: "
        f"reading whole shards of the four arrays in one process runs at {read_64:.0f} "
        f"samples/s in the store's layout (one chunk per shard of 64 samples) and at "
        f"{read_1:.0f} samples/s when the same data is re-encoded as the first version of the "
        f"store had it, chunks of one sample inside 64-sample zarr shards (last table, "
        f"{read_64 / read_1:.1f}x). Every reader reads whole shards, so the store keeps one "
        f"chunk per shard; the price is a single-sample read (`lcdata show`), which "
        f"decompresses its whole shard."
    )
    return Result(
        NAME,
        TITLE,
        head["ratio"],
        "store reader samples/s / classic loader samples/s"
        + (" (COCO-MINI, 368 px)" if "coco" in rows else " (synthetic)"),
        GOAL,
        met,
        [table, step_table, anatomy],
        notes,
        extra=[
            ("store / classic, synthetic 128 px", rows["synth"]["ratio"], "-", None),
            ("tiny step time, store reader / in memory", steps["ratio"], "<= 1.1", bottleneck),
        ],
    )


def _cells(m: dict[str, float]) -> tuple:
    return (m["store_sps"], m["process_sps"], m["classic_sps"], m["ratio"], m["process_ratio"])
