"""How build (GT stage and teacher stage) and correct time and memory grow with the store size.

Synthetic 128 px data (`lcdata synth`, 2 views per image) at 1k, 4k and 20k samples (quick:
200 and 1000); the smaller sets are the first images of the largest one. Each stage of each
size runs in a fresh process (`python -m benchmarks.bench_scaling STAGE ...`) under a small
wrapper whose `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` is that process's peak
resident memory; the time is measured inside the process around the call (imports
excluded). Stages:

    gt        `build_gt_store` (2 rendering threads), as `build-teacher-cache ANN IMAGES`
    teacher   `run_teacher_pass`, batch 16, one torch thread, with a randomly initialised
              `tiny` of width 16 and 1 stage (chosen for speed: 20k samples must fit the
              time budget; its heads get random weights so the maps are not constant)
    correct   `run_correct(mode="max")` including its analytics pass, dask threads
"""

from __future__ import annotations

import json
import shutil
import sys
import time

from benchmarks import Context, Result, Table, run_child, subset_annotations

NAME = "scaling"
TITLE = "Scaling of build and correct from 1k to 20k samples"
GOAL = "<= 1.25"
STAGES = ("gt", "teacher", "correct")
"""Stages timed; `annotations` (reading the COCO file alone) is run for its memory only."""


def child(argv: list[str]) -> None:
    """Entry point of the measured process: run one stage, print one JSON line."""
    stage = argv[0]
    if stage == "annotations":
        from lcdata.labels.coco import load_coco

        t0 = time.perf_counter()
        n = 2 * len(load_coco(argv[1]))  # 2 views per image, as the build
    elif stage == "gt":
        from lcdata.build.gt import BuildConfig, build_gt_store
        from lcdata.config import SYNTH_RENDER

        ann, images, out = argv[1:4]
        t0 = time.perf_counter()
        attrs = build_gt_store(
            ann,
            images,
            out,
            render=SYNTH_RENDER,
            build=BuildConfig(views_per_image=2),
            progress=False,
        )
        n = attrs["num_samples"]
    elif stage == "teacher":
        import torch

        from lcdata.build.teacher_pass import run_teacher_pass

        out, teacher = argv[1:3]
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        attrs = run_teacher_pass(out, teacher, batch_size=16, resume=True, progress=False)
        n = attrs["num_samples"]
    elif stage == "correct":
        from lcdata.correction.write import run_correct

        cache, out = argv[1:3]
        t0 = time.perf_counter()
        attrs = run_correct(cache, out, mode="max", progress=False)
        n = attrs["num_samples"]
    else:
        raise SystemExit(f"unknown stage {stage}")
    print(json.dumps({"stage": stage, "seconds": time.perf_counter() - t0, "samples": n}))


def run(ctx: Context) -> Result:
    images_per_size = (100, 500) if ctx.quick else (500, 2000, 10000)
    ann_all, image_dir = ctx.synth(images_per_size[-1])
    teacher = ctx.random_teacher(width=16, num_stages=1, head_std=0.01)
    work = ctx.dir("scaling")
    m: dict[tuple[str, int], dict[str, float]] = {}
    samples = {}
    for num_images in images_per_size:
        ann = subset_annotations(ann_all, num_images, work / f"ann-{num_images}.json")
        cache, out = work / f"cache-{num_images}", work / f"max-{num_images}"
        argvs = {
            "annotations": ["annotations", str(ann)],
            "gt": ["gt", str(ann), str(image_dir), str(cache)],
            "teacher": ["teacher", str(cache), str(teacher)],
            "correct": ["correct", str(cache), str(out)],
        }
        for stage in ("annotations", *STAGES):
            report, wall, rss = run_child(["-m", "benchmarks.bench_scaling", *argvs[stage]])
            m[stage, num_images] = {"seconds": report["seconds"], "wall": wall, "rss": rss}
            if stage != "annotations":
                samples[num_images] = report["samples"]
        for path in (cache, out):  # keep /tmp small: the largest stores take gigabytes
            shutil.rmtree(path)

    table = Table(
        "seconds inside the process (imports excluded); peak RSS of the whole process",
        ("stage", "samples", "seconds", "ms / sample", "samples/s", "peak RSS MiB",
         "time/sample vs smallest", "peak RSS vs smallest"),
    )  # fmt: skip
    first = images_per_size[0]
    time_ratio, rss_ratio = {}, {}
    for stage in STAGES:
        base = m[stage, first]
        base_per = base["seconds"] / samples[first]
        for num_images in images_per_size:
            x = m[stage, num_images]
            n = samples[num_images]
            per = x["seconds"] / n
            table.rows.append(
                (
                    stage,
                    n,
                    x["seconds"],
                    1e3 * per,
                    n / x["seconds"],
                    x["rss"] / 2**20,
                    per / base_per,
                    x["rss"] / base["rss"],
                )
            )
        last = m[stage, images_per_size[-1]]
        time_ratio[stage] = (last["seconds"] / samples[images_per_size[-1]]) / base_per
        rss_ratio[stage] = last["rss"] / base["rss"]
    ann_rss = {k: m["annotations", k]["rss"] for k in images_per_size}
    table.rows += [
        (
            "annotations (load_coco only)",
            samples[k],
            m["annotations", k]["seconds"],
            "",
            "",
            ann_rss[k] / 2**20,
            "",
            ann_rss[k] / ann_rss[first],
        )
        for k in images_per_size
    ]
    worst_time = max(time_ratio.values())
    worst_rss = max(rss_ratio.values())
    met = worst_time <= 1.25
    lo, hi = samples[first], samples[images_per_size[-1]]
    last = images_per_size[-1]
    gt_rss = {k: m["gt", k]["rss"] for k in images_per_size}
    excess = (gt_rss[last] - ann_rss[last]) / max(gt_rss[first] - ann_rss[first], 1)
    notes = (
        f"From {lo} to {hi} samples ({hi / lo:.0f}x) the time per sample changes by "
        + ", ".join(f"{time_ratio[s]:.2f}x ({s})" for s in STAGES)
        + " and the peak resident memory by "
        + ", ".join(f"{rss_ratio[s]:.2f}x ({s})" for s in STAGES)
        + " (goals, as read here: time per sample within 1.25x, i.e. roughly linear total "
        "time; peak memory within 1.5x, i.e. flat). The teacher pass and correct stream shard "
        "by shard (64 samples) with a bounded number of shards in flight, so their memory "
        "is set by the shard size, the model and the libraries (torch alone is a few hundred "
        "MiB), not by the store. The GT build is different: it reads the whole COCO file "
        f"first. Reading the annotations alone (`load_coco`) peaks at "
        f"{ann_rss[first] / 2**20:.0f} MiB for {first} images and "
        f"{ann_rss[last] / 2**20:.0f} MiB for {last} images (the synthetic file carries a "
        f"polygon per person), against {gt_rss[first] / 2**20:.0f} and "
        f"{gt_rss[last] / 2**20:.0f} MiB for the whole GT build: beyond the annotations the "
        f"build adds {(gt_rss[first] - ann_rss[first]) / 2**20:.0f} and "
        f"{(gt_rss[last] - ann_rss[last]) / 2**20:.0f} MiB ({excess:.2f}x), so "
        + (
            "rendering and writing are flat and the growth is the parsed JSON"
            if excess <= 1.5
            else "the build's own memory grows too, on top of the parsed JSON"
        )
        + ". `load_coco` reads the file in chunks and reduces each annotation to what the "
        "checks and the ignore masks need as it is parsed (keypoints as a (17, 3) array, "
        "polygons only for regions that become ignore masks), so what remains grows with the "
        "number of images and persons at a fraction of the file size, not with the ~7x of a "
        "whole-file json.load (which peaked at 589 MiB for the 10000-image file when measured "
        "during development, against 92 MiB for the chunked reader). A time per sample below "
        "1x at the larger sizes is the "
        "fixed cost (store creation, teacher loading, the analytics reduction) spread over "
        "more samples; variations of a few tens of percent between sizes are within what "
        "the neighbours on this shared machine cause (see the load averages)."
    )
    return Result(
        NAME,
        TITLE,
        worst_time,
        f"worst time/sample at {hi} / at {lo} samples over gt, teacher, correct",
        GOAL,
        met,
        [table],
        notes,
        extra=[("worst peak RSS at largest / smallest", worst_rss, "<= 1.5", worst_rss <= 1.5)],
    )


if __name__ == "__main__":
    child(sys.argv[1:])
