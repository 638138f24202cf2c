"""`build-teacher-cache` with a teacher against the teacher's bare batched forward pass.

What `lcdata build-teacher-cache ANN IMAGES --out OUT --teacher T` runs, called the way the
command calls it (`lcdata.build.one_pass.build_teacher_cache`: one pass, GT rendering of the
next blocks overlapped with inference; batch 16, CPU), is timed end to end, and beside it the two
passes a user runs when adding a teacher to an existing GT store (`build_gt_store`, then
`run_teacher_pass`), per stage. The bare forward pass is the exported teacher's `predict`
on the same crops, already decoded in memory, in batches of 16: the throughput the build
would have if reading, rendering, compressing and writing cost nothing. It is timed just
before and just after the build, and the build is compared with the mean of the two, so a
change of load on the shared machine during the run shows up as a gap between them.

Setups: the `tiny` teacher (128 px, stride 4, 2 stages, width 64) briefly trained on
synthetic data, on `lcdata synth` images with 2 views each; in full mode also the paper's
`small` model (368 px, stride 8, random weights: its speed does not depend on them) on
COCO-MINI train crops. Torch runs with one intra-op thread on both sides of every ratio
(the stable setting on a shared 2-core machine; see the generated notes).
"""

from __future__ import annotations

import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from benchmarks import Context, Result, Table, dir_bytes
from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.build.one_pass import build_teacher_cache
from lcdata.build.teacher import load_teacher
from lcdata.build.teacher_pass import run_teacher_pass
from lcdata.config import SYNTH_RENDER, RenderConfig
from lcdata.parallel import WORKER_NICENESS

NAME = "build"
TITLE = "build-teacher-cache vs the teacher's bare forward pass"
GOAL = ">= 0.9"
BATCH = 16
DEFAULT_THREADS = torch.get_num_threads()


def bare_forward(teacher_path: Path, images: np.ndarray, *, batch_size: int) -> tuple[float, float]:
    """(wall s, CPU s) of `predict` over all crops in batches (one untimed warm-up batch)."""
    teacher = load_teacher(teacher_path)
    teacher.predict(images[:batch_size])
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(images), batch_size):
        teacher.predict(images[start : start + batch_size])
    return time.perf_counter() - t0, time.process_time() - c0


def _bare_worker(teacher_path: str, crops_path: str, queue: Any) -> None:
    torch.set_num_threads(1)
    queue.put(bare_forward(Path(teacher_path), np.load(crops_path), batch_size=BATCH)[0])


def parallel_capacity(teacher: Path, crops: np.ndarray, tmp: Path) -> dict[str, float]:
    """Throughput of the bare forward pass in 2 processes at once / in 1 process.

    2.0 would mean two independent cores; on a VM whose two vCPUs share a physical core
    (or with neighbours on the host) it is less, and that bounds any overlap a build can do.
    """
    path = tmp / "capacity-crops.npy"
    np.save(path, crops)
    context = multiprocessing.get_context("spawn")

    def run(copies: int) -> float:
        queue = context.Queue()
        procs = [
            context.Process(target=_bare_worker, args=(str(teacher), str(path), queue))
            for _ in range(copies)
        ]
        for p in procs:
            p.start()
        walls = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        return copies * len(crops) / max(walls)

    one, two, one_again = run(1), run(2), run(1)
    return {"one": (one + one_again) / 2, "two": two, "ratio": two / ((one + one_again) / 2)}


def measure(
    ann: Path,
    image_dir: Path,
    teacher: Path,
    out: Path,
    *,
    render: RenderConfig,
    build: BuildConfig,
    batch_size: int,
    rounds: int,
    threads: int,
) -> dict[str, float]:
    """Bare forward, build, bare forward, build, ... bare forward (`rounds` builds).

    Each build is compared with the mean of the bare passes just before and after it; the
    median over rounds is reported. Wall and process CPU time (all threads) are both kept:
    CPU time is what the work costs whatever the neighbours do, wall time what a user waits.
    """
    torch.set_num_threads(threads)
    try:
        return _measure(ann, image_dir, teacher, out, render, build, batch_size, rounds)
    finally:
        torch.set_num_threads(DEFAULT_THREADS)


def _measure(ann, image_dir, teacher, out, render, build, batch_size, rounds) -> dict[str, float]:
    # the GT stage once, untimed, only to get the crops in memory for the bare passes
    warm = out.with_name(out.name + "-crops")
    for path in (warm, out):
        shutil.rmtree(path, ignore_errors=True)
    build_gt_store(ann, image_dir, warm, render=render, build=build, progress=False)
    images = zarr.open_group(str(warm), mode="r")["images"][:]
    n = len(images)
    bare = [bare_forward(teacher, images, batch_size=batch_size)]
    one, two = [], []  # per round: one-pass build; GT build then teacher pass
    for r in range(rounds):
        target = out if r == rounds - 1 else out.with_name(f"{out.name}-round{r}")
        split = out.with_name(f"{out.name}-two-pass{r}")
        t0, c0 = time.perf_counter(), time.process_time()
        build_gt_store(ann, image_dir, split, render=render, build=build, progress=False)
        t1, c1 = time.perf_counter(), time.process_time()
        run_teacher_pass(split, teacher, batch_size=batch_size, resume=True, progress=False)
        t2, c2 = time.perf_counter(), time.process_time()
        two.append({"gt": t1 - t0, "teacher": t2 - t1, "wall": t2 - t0, "cpu": c2 - c0})
        bare.append(bare_forward(teacher, images, batch_size=batch_size))
        t0, c0 = time.perf_counter(), time.process_time()
        build_teacher_cache(
            ann, image_dir, target, teacher, render=render, build=build,
            batch_size=batch_size, progress=False,
        )  # fmt: skip
        t1, c1 = time.perf_counter(), time.process_time()
        one.append({"wall": t1 - t0, "cpu": c1 - c0})
        bare.append(bare_forward(teacher, images, batch_size=batch_size))
        shutil.rmtree(split)
        if target != out:
            shutil.rmtree(target)

    def vs_bare(i: int, b: dict[str, float]) -> tuple[float, float]:
        """(wall ratio, CPU ratio) of a build against the bare passes just before and after."""
        wall = (bare[i][0] + bare[i + 1][0]) / 2
        cpu = (bare[i][1] + bare[i + 1][1]) / 2
        return wall / b["wall"], cpu / b["cpu"]

    one_r = [vs_bare(2 * r + 1, b) for r, b in enumerate(one)]
    two_r = [vs_bare(2 * r, b) for r, b in enumerate(two)]
    stage_r = [
        ((bare[2 * r][0] + bare[2 * r + 1][0]) / 2) / b["teacher"] for r, b in enumerate(two)
    ]
    k = int(np.argsort([x for x, _ in one_r])[len(one_r) // 2])  # the median round
    walls = [w for w, _ in bare]
    bare_wall = float(np.median(walls))
    return {
        "samples": n,
        "rounds": rounds,
        "bare_walls": walls,
        "bare_sps": n / bare_wall,
        "build_s": one[k]["wall"],
        "build_sps": n / one[k]["wall"],
        "ratio": one_r[k][0],
        "ratio_cpu": float(np.median([c for _, c in one_r])),
        "two_s": two[k]["wall"],
        "two_sps": n / two[k]["wall"],
        "two_ratio": float(np.median([x for x, _ in two_r])),
        "gt_s": two[k]["gt"],
        "gt_sps": n / two[k]["gt"],
        "teacher_sps": n / two[k]["teacher"],
        "ratio_teacher_stage": float(np.median(stage_r)),
        "store_bytes_per_sample": dir_bytes(out) / n,
    }


def ensure_teacher_cache(ctx: Context) -> tuple[Path, Path]:
    """(store, teacher): a synthetic GT store with the briefly trained tiny teacher's maps,
    the one this benchmark builds, or made now (untimed) when it did not run."""

    def make() -> tuple[Path, Path]:
        teacher, _ = ctx.trained_teacher(steps=30 if ctx.quick else 200)
        ann, images = ctx.synth(ctx.synth_images_small)
        out = ctx.fresh("teacher-cache")
        build_gt_store(
            ann,
            images,
            out,
            render=SYNTH_RENDER,
            build=BuildConfig(views_per_image=2),
            progress=False,
        )
        torch.set_num_threads(1)
        try:
            run_teacher_pass(out, teacher, batch_size=BATCH, resume=True, progress=False)
        finally:
            torch.set_num_threads(DEFAULT_THREADS)
        return out, teacher

    return ctx.once("teacher-cache", make)


def small_teacher(ctx: Context) -> Path:
    """The paper's `small` model (368 px, stride 8) with random weights, exported."""

    def make() -> Path:
        import torch

        from lcdata.labels.skeleton import CMU_SKELETON
        from trainer.export import export_teacher
        from trainer.models import build_model

        torch.manual_seed(0)
        model = build_model("small", CMU_SKELETON, 8)
        with torch.no_grad():
            model.layers[-1].conv.weight.normal_(0.0, 0.01)
        path = ctx.tmp / "small-random.pt2"
        export_teacher(
            model.eval(),
            skeleton=CMU_SKELETON,
            stride=8,
            input_size=368,
            model_name="small",
            out_path=path,
        )
        return path

    return ctx.once("small-teacher", make)


def run(ctx: Context) -> Result:
    steps = 30 if ctx.quick else 200
    teacher, train = ctx.trained_teacher(steps=steps)
    # more images than the other benchmarks' set: fixed costs (loading the teacher,
    # starting the rendering processes) must not decide the ratio
    ann, images = ctx.synth(ctx.synth_images_small if ctx.quick else 1500)
    work = ctx.dir("build")
    views, rounds = 2, (1 if ctx.quick else 2)
    runs: dict[str, dict[str, float]] = {}
    for threads in (1,):
        runs[f"tiny-{threads}"] = measure(
            ann,
            images,
            teacher,
            work / f"tiny-{threads}",
            render=SYNTH_RENDER,
            build=BuildConfig(views_per_image=views),
            batch_size=BATCH,
            rounds=rounds,
            threads=threads,
        )
    crops = zarr.open_group(str(work / "tiny-1"), mode="r")["images"][: 64 * 8]
    capacity = parallel_capacity(teacher, crops, ctx.tmp)
    if not ctx.quick and ctx.coco is not None:
        runs["small"] = measure(
            ctx.coco / "annotations" / "person_keypoints_train2017.json",
            ctx.coco / "train2017",
            small_teacher(ctx),
            work / "small",
            render=RenderConfig(),
            build=BuildConfig(views_per_image=1, samples_per_shard=8),
            batch_size=8,
            rounds=1,
            threads=1,
        )

    table = Table(
        "samples/s = N samples / wall seconds; bare = `Teacher.predict` on the same crops, "
        "already in memory; one pass = `build-teacher-cache ANN IMAGES --teacher T`; two "
        "passes = GT build, then the teacher pass over the written store",
        (
            "setup",
            "samples",
            "bare forward",
            "bare passes, s",
            "one pass",
            "one pass / bare",
            "one pass / bare, CPU time",
            "two passes",
            "two passes / bare",
            "GT build alone",
            "teacher pass alone",
            "teacher pass / bare",
        ),
    )
    labels = {
        "tiny": f"tiny 128 px stride 4, synth, {views} views, shards of 64, batch {BATCH}",
        "small": "small 368 px stride 8, COCO-MINI train, 1 view, shards of 8, batch 8",
    }
    for key, m in runs.items():
        table.rows.append(
            (
                labels[key.split("-")[0]],
                int(m["samples"]),
                m["bare_sps"],
                " / ".join(f"{w:.1f}" for w in m["bare_walls"]),
                m["build_sps"],
                m["ratio"],
                m["ratio_cpu"],
                m["two_sps"],
                m["two_ratio"],
                m["gt_sps"],
                m["teacher_sps"],
                m["ratio_teacher_stage"],
            )
        )

    one = runs["tiny-1"]
    met = one["ratio"] >= 0.9
    state = "met" if met else f"missed by {0.9 - one['ratio']:.2f}"
    walls = one["bare_walls"]
    main_ms = 1000 / (one["bare_sps"] * one["ratio_cpu"])  # CPU of the build's own process
    gt_ms = 2 * 1000 / one["gt_sps"]
    notes = (
        f"Teacher: the default `tiny` (2 stages, width 64) trained {train['steps']} steps "
        f"(batch 8, lr 1e-3; loss {train['loss_first']:.0f} -> {train['loss_last']:.0f}) on "
        f"synthetic crops, exported with `trainer export`'s `export_teacher`. Every build is "
        f"compared with the mean of the bare passes just before and after it; median of "
        f"{rounds} round(s). The one-pass build renders and writes the GT of the next shards "
        f"in worker processes (2; threads would hold the GIL through rendering's many small "
        f"numpy calls and stall inference) while the teacher runs on the current shard's crops "
        f"straight from memory; the inference process only quantises the outputs, and the "
        f"worker processes also compress and write them. The workers run at a lower "
        f"scheduling priority (nice {WORKER_NICENESS}): with two of them beside inference on "
        f"two cores, three processes compete for two cores, and inference, which sets the "
        f"pace, must not be the one that waits. With the tiny teacher it delivers "
        f"{one['build_sps']:.0f} samples/s against "
        f"{one['bare_sps']:.0f} for the bare forward pass: {one['ratio']:.2f}x (goal 0.9: "
        f"{state}; in process CPU time {one['ratio_cpu']:.2f}x, worker processes not "
        f"counted). The same work in two passes (GT build, then the teacher over the written "
        f"store) reaches {one['two_ratio']:.2f}x; the GT build alone runs at "
        f"{one['gt_sps']:.0f} samples/s, the teacher pass alone at {one['teacher_sps']:.0f} "
        f"({one['ratio_teacher_stage']:.2f}x bare: its writer thread quantises and compresses "
        f"in the same process). The build's own process spends {main_ms:.1f} ms of CPU per "
        f"sample against {1000 / one['bare_sps']:.1f} ms for the bare pass, while the "
        f"rendering processes need about {gt_ms:.1f} ms per sample of the machine's two cores "
        f"(the GT build's two threads at {one['gt_sps']:.0f} samples/s, an upper bound); two "
        f"processes running the bare forward pass at once deliver {capacity['ratio']:.2f}x "
        f"the throughput of one ({capacity['two']:.0f} vs {capacity['one']:.0f} samples/s). "
        f"The tiny teacher's inference costs about as much CPU per crop as rendering that "
        f"crop's labels, so this is the hard case: one core for inference, the other for "
        f"everything else, with little to spare. A teacher worth distilling from is far "
        f"slower per crop than its labels are to render (next row); on a GPU machine, give "
        f"`--workers` as many rendering processes as the CPU has cores to spare. "
        f"History: 0.53x in the first version (two passes), 0.81x with the one-pass build and "
        f"a writer thread in the inference process, 0.87-0.89x with faster casts and writes, "
        f"then the writes moved to the workers and their priority lowered. "
        f"Everything runs with one intra-op torch thread, the stable setting here: with "
        f"torch's default of two OpenMP threads on this shared 2-core VM, every barrier "
        f"stalls whenever another process takes a core (the tiny teacher's bare passes took "
        f"{min(walls):.1f} to {max(walls):.1f} s in this run)."
    )
    if "small" in runs:
        small = runs["small"]
        notes += (
            f" With the paper's `small` model at 368 px as the teacher "
            f"({small['bare_sps']:.2f} samples/s bare, one thread; only {int(small['samples'])} "
            f"samples, so a single round carries more noise) the one-pass build reaches "
            f"{small['ratio']:.2f}x its bare forward pass (two passes: "
            f"{small['two_ratio']:.2f}x)."
        )
    extra = [("two passes (GT build, then teacher pass) / bare, tiny", one["two_ratio"], "-", None)]
    if "small" in runs:
        small = runs["small"]
        extra.append(
            (
                "one pass / bare, small 368 px (1 round)",
                small["ratio"],
                GOAL,
                small["ratio"] >= 0.9,
            )
        )
    return Result(
        NAME,
        TITLE,
        one["ratio"],
        "one-pass build samples/s / bare forward samples/s (tiny teacher, 128 px, 1 thread)",
        GOAL,
        met,
        [table],
        notes,
        extra=extra,
    )
