"""`lcdata correct --mode max` against a plain dask zarr-to-zarr copy of the same arrays.

Data: the teacher cache of the build benchmark (synthetic 128 px crops, stride 4, GT and
the maps of a briefly trained `tiny` teacher). Contenders, interleaved (copy, correct, copy,
correct, ...) on dask's local threaded scheduler with dask's default number of threads:

    correct   `lcdata.correction.write.run_correct(cache, out, mode="max")`, what `lcdata correct`
              runs: reads gt/*, teacher/* and masks, computes eq. 2-3, writes target/* and
              the shard's correction statistics shard by shard (one task per shard, the
              blocks read once), sums the statistics and marks the store complete;
    copy      `da.store` of `da.from_zarr` views (one block per shard) of gt/heatmaps,
              gt/pafs, teacher/heatmaps, teacher/pafs into a new store with the same shapes,
              chunks, shards, dtypes and codecs: the arrays correct reads, moved as they are.

Also reported: a copy of only the two teacher arrays (the same amount of writing as correct,
half its reading) and, for scale, `compute_analytics` alone on the finished store (the
re-reading analytics pass that correct ran after the writes before the statistics moved into
the write tasks; still the path for shards whose statistics are missing).
"""

from __future__ import annotations

import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from benchmarks import Context, Result, Table
from lcdata.correction.analytics import compute_analytics
from lcdata.correction.write import run_correct

NAME = "correct"
TITLE = "lcdata correct --mode max vs a plain dask zarr-to-zarr copy"
GOAL = ">= 0.8"
MAPS = ("gt/heatmaps", "gt/pafs", "teacher/heatmaps", "teacher/pafs")


def dask_copy(source: Path, out: Path, names: tuple[str, ...]) -> float:
    """Seconds to copy `names` from `source` into a new group `out`, same layout and codecs."""
    t0 = time.perf_counter()
    group = zarr.open_group(str(out), mode="w")
    sources, targets = [], []
    for name in names:
        arr = zarr.open_array(str(source / name), mode="r")
        targets.append(
            group.create_array(
                name,
                shape=arr.shape,
                chunks=arr.chunks,
                shards=arr.shards,
                dtype=arr.dtype,
                compressors=arr.compressors,
                fill_value=arr.fill_value,
            )
        )
        sources.append(da.from_zarr(arr, chunks=arr.shards or arr.chunks))
    da.store(sources, targets, lock=False, scheduler="threads")
    return time.perf_counter() - t0


def run(ctx: Context) -> Result:
    import shutil

    from benchmarks.bench_build import ensure_teacher_cache

    cache, _ = ensure_teacher_cache(ctx)
    n = zarr.open_group(str(cache), mode="r")["gt/heatmaps"].shape[0]
    work = ctx.dir("correct")
    rounds = 1 if ctx.quick else 3
    times: dict[str, list[float]] = {"copy4": [], "copy2": [], "correct": [], "analytics": []}
    for r in range(rounds):
        for path in work.iterdir():
            shutil.rmtree(path)
        times["copy4"].append(dask_copy(cache, work / f"copy4-{r}", MAPS))
        t0 = time.perf_counter()
        run_correct(cache, work / f"max-{r}", mode="max", progress=False)
        times["correct"].append(time.perf_counter() - t0)
        times["copy2"].append(dask_copy(cache, work / f"copy2-{r}", MAPS[2:]))
        t0 = time.perf_counter()
        compute_analytics(cache, work / f"max-{r}")
        times["analytics"].append(time.perf_counter() - t0)
    t = {k: np.asarray(v) for k, v in times.items()}
    ratio = float(np.median(t["copy4"] / t["correct"]))
    ratio_copy2 = float(np.median(t["copy2"] / t["correct"]))
    ratio_analytics = float(np.median(t["analytics"] / t["correct"]))

    def sps(x: np.ndarray) -> float:
        return n / float(np.median(x))

    table = Table(
        f"{n} samples (synthetic 128 px, stride 4), dask threads; samples/s from the median "
        f"of {rounds} interleaved round(s)",
        ("what", "reads", "writes", "seconds (each round)", "samples/s"),
    )
    for label, key, reads, writes in (
        ("plain dask copy of gt/* + teacher/*", "copy4", "4 arrays", "4 arrays"),
        ("plain dask copy of teacher/*", "copy2", "2 arrays", "2 arrays"),
        ("lcdata correct --mode max, analytics included", "correct", "5 arrays", "2 arrays"),
        ("compute_analytics alone (re-read pass, for scale)", "analytics", "5 arrays", "-"),
    ):
        table.rows.append(
            (label, reads, writes, " / ".join(f"{x:.2f}" for x in t[key]), sps(t[key]))
        )
    met = ratio >= 0.8
    state = "met" if met else f"missed by {0.8 - ratio:.2f}"
    notes = (
        f"`lcdata correct --mode max` processes {sps(t['correct']):.0f} samples/s against "
        f"{sps(t['copy4']):.0f} samples/s for a plain dask copy of the four map arrays it "
        f"reads: {ratio:.2f}x (goal 0.8: {state}); against a copy of only the two teacher "
        f"arrays (the same writing as correct, half the reading) {ratio_copy2:.2f}x. Each "
        f"shard is one task that reads its GT, teacher and mask blocks once, computes the "
        f"targets and the correction statistics (per-part added mass, changed PAF cells) a "
        f"few samples at a time (float32 copies and temporaries stay in the CPU caches), "
        f"writes the targets, saves the statistics under `.lcpose-analytics/` and only then "
        f"marks the shard done, so a resumed run keeps the statistics of finished shards. "
        f"What made it fast enough (0.58x in the previous version of this report): float16 "
        f"casts through torch (numpy's are not vectorised: 2-5x slower), no second "
        f"quantisation for the max and selection modes (their targets are stored values, "
        f"already on the 2^-9 grid), masked sums as matrix products with the mask, the "
        f"limb lengths of eq. 3 reused by the statistics, and writes without zarr's check "
        f"for all-zero chunks (a full extra pass over every chunk; the plain copy keeps "
        f"zarr's default). The analytics used to be a second pass re-reading "
        f"GT, targets and masks after the writes (0.69x the copy in total when it was); "
        f"that pass alone, timed on the finished store, costs {ratio_analytics:.2f}x the "
        f"whole `correct` run now."
    )
    return Result(
        NAME,
        TITLE,
        ratio,
        "correct samples/s / plain copy samples/s (4 map arrays)",
        GOAL,
        met,
        [table],
        notes,
        extra=[("correct / copy of the 2 teacher arrays", ratio_copy2, "-", None)],
    )
