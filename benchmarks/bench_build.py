"""`build-teacher-cache` with a teacher against the teacher's bare batched forward pass.

What `lcdata build-teacher-cache ANN IMAGES --out OUT --teacher T` runs, called the way the
command calls it (`build_gt_store`, then `run_teacher_pass` with resume, batch 16, CPU), is
timed end to end and per stage. The bare forward pass is the exported teacher's `predict`
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

import shutil
import time
from pathlib import Path

import numpy as np
import torch
import zarr

from benchmarks import Context, Result, Table, dir_bytes
from lcdata.build import BuildConfig, build_gt_store
from lcdata.config import SYNTH_RENDER, RenderConfig
from lcdata.teacher import load_teacher
from lcdata.teacher_pass import run_teacher_pass

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
    builds = []
    for r in range(rounds):
        target = out if r == rounds - 1 else out.with_name(f"{out.name}-round{r}")
        t0, c0 = time.perf_counter(), time.process_time()
        build_gt_store(ann, image_dir, target, render=render, build=build, progress=False)
        t1, c1 = time.perf_counter(), time.process_time()
        run_teacher_pass(target, teacher, batch_size=batch_size, resume=True, progress=False)
        t2, c2 = time.perf_counter(), time.process_time()
        builds.append(
            {"gt": t1 - t0, "teacher": t2 - t1, "gt_cpu": c1 - c0, "teacher_cpu": c2 - c1}
        )
        bare.append(bare_forward(teacher, images, batch_size=batch_size))
        if target != out:
            shutil.rmtree(target)
    ratios, stage_ratios, cpu_ratios = [], [], []
    for r, b in enumerate(builds):
        wall = (bare[r][0] + bare[r + 1][0]) / 2
        cpu = (bare[r][1] + bare[r + 1][1]) / 2
        ratios.append(wall / (b["gt"] + b["teacher"]))
        stage_ratios.append(wall / b["teacher"])
        cpu_ratios.append(cpu / (b["gt_cpu"] + b["teacher_cpu"]))
    k = int(np.argsort(ratios)[len(ratios) // 2])  # the median round
    b = builds[k]
    bare_wall = (bare[k][0] + bare[k + 1][0]) / 2
    build_s = b["gt"] + b["teacher"]
    return {
        "samples": n,
        "rounds": rounds,
        "bare_walls": [w for w, _ in bare],
        "bare_sps": n / bare_wall,
        "gt_s": b["gt"],
        "teacher_s": b["teacher"],
        "build_s": build_s,
        "build_sps": n / build_s,
        "teacher_sps": n / b["teacher"],
        "gt_sps": n / b["gt"],
        "ratio": ratios[k],
        "ratio_teacher_stage": stage_ratios[k],
        "ratio_cpu": float(np.median(cpu_ratios)),
        "gt_cpu_share": b["gt_cpu"] / (b["gt_cpu"] + b["teacher_cpu"]),
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

        from lcdata.skeleton import CMU_SKELETON
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
    ann, images = ctx.synth(ctx.synth_images_small)
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
    # the other benchmarks reuse this store (GT + teacher maps of a briefly trained tiny)
    ctx._cache["teacher-cache"] = (work / "tiny-1", teacher)
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
        "already in memory",
        (
            "setup",
            "torch threads",
            "samples",
            "bare forward",
            "bare passes, s",
            "build total",
            "GT stage",
            "teacher stage",
            "build / bare",
            "teacher stage / bare",
            "build / bare, CPU time",
        ),
    )
    labels = {
        "tiny": f"tiny 128 px stride 4, synth, {views} views, shards of 64, batch {BATCH}",
        "small": "small 368 px stride 8, COCO-MINI train, 1 view, shards of 8, batch 8",
    }
    for key, m in runs.items():
        threads = 1
        table.rows.append(
            (
                labels[key.split("-")[0]],
                threads,
                int(m["samples"]),
                m["bare_sps"],
                " / ".join(f"{w:.1f}" for w in m["bare_walls"]),
                m["build_sps"],
                m["gt_sps"],
                m["teacher_sps"],
                m["ratio"],
                m["ratio_teacher_stage"],
                m["ratio_cpu"],
            )
        )

    one = runs["tiny-1"]
    met = one["ratio"] >= 0.9
    state = "met" if met else f"missed by {0.9 - one['ratio']:.2f}"
    walls = one["bare_walls"]
    notes = (
        f"Teacher: the default `tiny` (2 stages, width 64) trained {train['steps']} steps "
        f"(batch 8, lr 1e-3; loss {train['loss_first']:.0f} -> {train['loss_last']:.0f}) on "
        f"synthetic crops, exported with `trainer export`'s `export_teacher`. Each build is "
        f"compared with the mean of the bare passes just before and after it, median of "
        f"{rounds} round(s). With one torch thread the build delivers "
        f"{one['build_sps']:.0f} samples/s against {one['bare_sps']:.0f} for the bare forward "
        f"pass: {one['ratio']:.2f}x (goal 0.9: {state}); in process CPU time, which the "
        f"neighbours disturb less, {one['ratio_cpu']:.2f}x. Where the time goes: the GT stage "
        f"(read PNGs, ignore masks, augment, render, quantise, compress, write) runs first and "
        f"alone at {one['gt_sps']:.0f} samples/s, {100 * one['gt_s'] / one['build_s']:.0f}% of "
        f"the build; it is not overlapped with inference at all. The teacher stage alone "
        f"reaches {one['ratio_teacher_stage']:.2f}x the bare pass: loading the exported "
        f"program (about 0.2-1 s, a fixed cost that weighs on a small store), plus the reader "
        f"and writer threads, which share the GIL with the inference loop. Both points are "
        f"design limits of the current `build-teacher-cache`, not of the hardware: rendering "
        f"shard s + 1 while the teacher infers shard s would hide the GT stage wherever a core "
        f"is free (on a GPU machine, always). "
        f"Everything runs with one intra-op torch thread, the stable setting here: with "
        f"torch's default of two OpenMP threads on this shared 2-core VM, every barrier "
        f"stalls whenever another process takes a core, and repeated bare passes over the "
        f"same crops varied several-fold during development (with one thread, the tiny "
        f"teacher's bare passes took {min(walls):.1f} to {max(walls):.1f} s in this run)."
    )
    if "small" in runs:
        small = runs["small"]
        notes += (
            f" With the paper's `small` model at 368 px as the teacher "
            f"({small['bare_sps']:.2f} samples/s bare, one thread; only {int(small['samples'])} "
            f"samples, so a single round carries more noise) inference "
            f"dominates: the build reaches {small['ratio']:.2f}x its bare forward pass, the GT "
            f"stage taking {100 * small['gt_s'] / small['build_s']:.0f}% of the time."
        )
    extra = [("teacher stage alone / bare (tiny, 1 thread)", one["ratio_teacher_stage"], "-", None)]
    if "small" in runs:
        small = runs["small"]
        extra.append(
            ("build / bare, small 368 px (1 round)", small["ratio"], GOAL, small["ratio"] >= 0.9)
        )
    return Result(
        NAME,
        TITLE,
        one["ratio"],
        "build samples/s / bare forward samples/s (tiny teacher, 128 px, 1 torch thread)",
        GOAL,
        met,
        [table],
        notes,
        extra=extra,
    )
