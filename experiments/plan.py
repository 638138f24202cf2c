"""The experiment's plan: data sets and every step with its dependencies, no I/O.

A pure function of the config: `experiments.schedule` runs the plan, `experiments.steps`
does each step.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from experiments.config import ExperimentConfig, resolve_path
from experiments.protocol import METHODS, Dataset, dataset_name
from lcdata.errors import LcposeError


@dataclass(frozen=True)
class Step:
    """One unit of work. `args` are JSON-safe; relative paths in them are relative to OUT."""

    name: str
    kind: str
    deps: tuple[str, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)
    cost: float = 1.0
    """Rough duration in training-step units, for scheduling the longest chains first."""
    rank: int | None = None
    """A training's row priority (lower runs first, `row_rank`); None for the other steps,
    which take the rank of the trainings they lead to (`experiments.schedule`)."""


def row_rank(cfg: ExperimentConfig, ds: Dataset, method: str) -> int:
    """The order in which trainings run when several are ready: the main rows (the teacher,
    then `protocol.methods` in their order, then the clean bound), then the sweep's rows,
    then the iterations; within a row, seed by seed. So an experiment cut short has whole
    rows, in the config's order of importance, rather than a little of everything."""
    proto = cfg.protocol
    if not ds.main:
        tier, order, seeds = 1, ["baseline", *cfg.sweep.methods], list(cfg.sweep.seeds)
    elif method in ds.iterate:
        tier, order, seeds = 2, list(proto.iterate), list(cfg.seeds)
    else:
        tier, order, seeds = 0, ["baseline", *proto.methods, "clean"], list(cfg.seeds)
    pos = order.index(method) if method in order else len(order)
    return tier * 10_000 + pos * 100 + (seeds.index(ds.seed) if ds.seed in seeds else 99)


def datasets(cfg: ExperimentConfig) -> list[Dataset]:
    """Main data sets (one per seed), then the sweep's; a sweep level equal to the main rates
    shares the main data set of its seed (and its teacher and LC student)."""
    data, proto = cfg.data, cfg.protocol
    out: dict[str, Dataset] = {}
    if data.source == "coco":
        for seed in cfg.seeds:
            # real labels: no truth to train a clean bound on or to measure recovery against
            name = f"coco_s{seed}"
            out[name] = Dataset(
                name, int(seed), None, tuple(proto.methods), tuple(proto.iterate), main=True
            )
        return list(out.values())
    p, q = float(data.missed_visible), float(data.unannotated)

    def chosen(seeds: tuple[int, ...] | None, seed: int) -> bool:
        return seeds is None or seed in seeds

    for seed in cfg.seeds:
        name = dataset_name(p, q, seed)
        synth = {**data.synth, "missed_visible": p, "unannotated": q}
        out[name] = Dataset(
            name,
            int(seed),
            synth,
            tuple(proto.methods),
            tuple(proto.iterate) if chosen(proto.iterate_seeds, seed) else (),
            bool(proto.clean_bound) and chosen(proto.clean_bound_seeds, seed),
            main=True,
            level=p if p == q else None,
        )
    sweep = cfg.sweep
    levels = [(float(v), False) for v in sweep.levels]
    if sweep.all_off:
        levels.append((0.0, True))
    for seed in sweep.seeds:
        for level, all_off in levels:
            name = dataset_name(level, level, seed, all_off=all_off)
            if name in out:
                continue
            synth = {**data.synth, "missed_visible": level, "unannotated": level}
            if all_off:
                synth.update(drop_out_of_image=False, drop_occluded=False)
            out[name] = Dataset(
                name,
                int(seed),
                synth,
                tuple(sweep.methods),
                level=None if all_off else level,
            )
    return list(out.values())


def val_spec(cfg: ExperimentConfig, ds: Dataset) -> dict[str, Any]:
    """Validation images and the annotation files to score against, primary (clean) first."""
    if ds.synth is None:
        return {
            "images": str(resolve_path(cfg.data.val_dir)),
            "annotations": {"val": str(resolve_path(cfg.data.val_annotations))},
        }
    ann = f"{ds.name}/data/annotations"
    return {
        "images": f"{ds.name}/data/val",
        "annotations": {
            "clean": f"{ann}/person_keypoints_val_clean.json",
            "noisy": f"{ann}/person_keypoints_val.json",
        },
    }


def plan(cfg: ExperimentConfig) -> list[Step]:
    """Every step of the experiment, each after its dependencies."""
    steps: dict[str, Step] = {}
    train_steps = float(cfg.train_steps)

    def add(step: Step) -> str:
        steps.setdefault(step.name, step)
        return step.name

    for ds in datasets(cfg):
        d = ds.name
        val = val_spec(cfg, ds)
        if ds.synth is not None:
            data = add(
                Step(
                    f"{d}/data",
                    "synth",
                    args={
                        "dir": f"{d}/data",
                        "seed": ds.seed,
                        "train": cfg.data.train_images,
                        "val": cfg.data.val_images,
                        "synth": ds.synth,
                    },
                    cost=60,
                )
            )
            train_ann = f"{d}/data/annotations/person_keypoints_train.json"
            clean_ann = f"{d}/data/annotations/person_keypoints_train_clean.json"
            train_dir = f"{d}/data/train"
            deps: tuple[str, ...] = (data,)
        else:
            train_ann = str(resolve_path(cfg.data.train_annotations))
            train_dir = str(resolve_path(cfg.data.train_dir))
            clean_ann = None
            deps = ()
        add(Step(f"{d}/oracle", "oracle", deps, {"val": val}, cost=20))
        gt = add(
            Step(
                f"{d}/gt_store",
                "gt_store",
                deps,
                {"ann": train_ann, "images": train_dir, "out": f"{d}/gt.zarr", "seed": ds.seed},
                cost=40,
            )
        )

        def student(
            method: str,
            store: str,
            store_dep: str,
            target: str,
            d=d,
            ds=ds,
            val=val,
            clean=clean_ann,
            amp: str = "",
        ) -> str:
            run = f"{d}/runs/{method}"
            fit_name = add(
                Step(
                    f"{d}/fit/{method}",
                    "fit",
                    (store_dep,),
                    {
                        "store": store,
                        "run": run,
                        "seed": ds.seed,
                        "target": target,
                        "curve": ds.main and method in cfg.protocol.curves,
                        **({"amp": amp} if amp else {}),  # this precision, whatever --amp says
                    },
                    cost=train_steps,
                    rank=row_rank(cfg, ds, method),
                )
            )
            add(
                Step(
                    f"{d}/eval/{method}",
                    "evaluate",
                    (fit_name,),
                    {"model": f"{run}/final.pt", "val": val, "out": f"{d}/eval/{method}"},
                    cost=30,
                )
            )
            if ds.main and method in cfg.protocol.curves:
                add(
                    Step(
                        f"{d}/curve/{method}",
                        "curve",
                        (fit_name,),
                        {
                            "run": run,
                            "val": val,
                            "out": f"{d}/eval/curve_{method}.json",
                            "store": store,
                            "clean": clean,
                        },
                        cost=120,
                    )
                )
            return fit_name

        teacher_fit = student("baseline", f"{d}/gt.zarr", gt, "gt")
        check, check_seeds = cfg.protocol.precision_check, cfg.protocol.precision_check_seeds
        if ds.main and check and (check_seeds is None or ds.seed in check_seeds):
            student("baseline_amp", f"{d}/gt.zarr", gt, "gt", amp=check)
        export = add(
            Step(
                f"{d}/export/baseline",
                "export",
                (teacher_fit,),
                {"checkpoint": f"{d}/runs/baseline/final.pt", "out": f"{d}/models/baseline.pt2"},
                cost=10,
            )
        )
        cache = add(
            Step(
                f"{d}/teacher_pass",
                "teacher_pass",
                (export, gt),
                {"store": f"{d}/gt.zarr", "teacher": f"{d}/models/baseline.pt2"},
                cost=60,
            )
        )
        if clean_ann is not None:
            add(
                Step(
                    f"{d}/coverage",
                    "coverage",
                    (cache,),
                    {
                        "store": f"{d}/gt.zarr",
                        "clean": clean_ann,
                        "out": f"{d}/coverage.json",
                        "max_samples": int(cfg.protocol.coverage_samples),
                        "threshold": float(cfg.protocol.coverage_threshold),
                    },
                    cost=30,
                )
            )
        quality = bool(cfg.protocol.quality) and clean_ann is not None

        def score(
            name: str, store: str, dep: str, target: str, d=d, quality=quality, clean=clean_ann
        ) -> None:
            if quality:
                add(
                    Step(
                        f"{d}/quality/{name}",
                        "score_labels",
                        (dep,),
                        {
                            "store": store,
                            "clean": clean,
                            "target": target,
                            "max_samples": int(cfg.protocol.quality_samples),
                        },
                        cost=20,
                    )
                )

        score("baseline", f"{d}/gt.zarr", gt, "gt")
        score("teacher", f"{d}/gt.zarr", cache, "teacher")
        caches = {None: (f"{d}/gt.zarr", cache)}
        # rows whose targets are only scored (main data sets, with the quality analysis)
        scored_only = tuple(
            m for m in cfg.protocol.score_only if quality and ds.main and m not in ds.methods
        )
        for spec in sorted({METHODS[m].tta for m in (*ds.methods, *scored_only)} - {None}):
            tag = spec.replace(",", "_").replace("=", "").replace(":", "-")
            caches[spec] = (
                f"{d}/cache_tta_{tag}.zarr",
                add(
                    Step(
                        f"{d}/teacher_pass/tta_{tag}",
                        "teacher_pass",
                        (export, cache),
                        {
                            "store": f"{d}/cache_tta_{tag}.zarr",
                            "copy_of": f"{d}/gt.zarr",
                            "teacher": f"{d}/models/baseline.pt2",
                            "tta": spec,
                        },
                        cost=120,
                    )
                ),
            )
            score(f"teacher_tta_{tag}", caches[spec][0], caches[spec][1], "teacher")
        corrected: dict[str, str] = {}
        for method in (*ds.methods, *scored_only):
            m = METHODS[method]
            source_store, source_step = caches[m.tta]
            corrected[method] = add(
                Step(
                    f"{d}/target/{method}",
                    "correct",
                    (source_step,),
                    {
                        "cache": source_store,
                        "out": f"{d}/targets/{method}.zarr",
                        "mode": m.mode,
                        "lam": m.lam,
                        "clean": clean_ann,
                    },
                    cost=40,
                )
            )
            score(method, f"{d}/targets/{method}.zarr", corrected[method], "target")
            if method in ds.methods:
                student(method, f"{d}/targets/{method}.zarr", corrected[method], "target")
        for method in ds.iterate:
            m = METHODS[method]
            first = m.teacher
            exp2 = add(
                Step(
                    f"{d}/export/{first}",
                    "export",
                    (f"{d}/fit/{first}",),
                    {"checkpoint": f"{d}/runs/{first}/final.pt", "out": f"{d}/models/{first}.pt2"},
                    cost=10,
                )
            )
            # The x2 rows' teacher evaluated like a student: where its weights were kept it is
            # the training of its own row (a check of the export); where they were lost it
            # trained again, in this machine's precision (a second precision check).
            add(
                Step(
                    f"{d}/eval/{first}_teacher",
                    "evaluate",
                    (exp2,),
                    {
                        "model": f"{d}/models/{first}.pt2",
                        "val": val,
                        "out": f"{d}/eval/{first}_teacher",
                    },
                    cost=30,
                )
            )
            cache2 = add(
                Step(
                    f"{d}/teacher_pass/{first}",
                    "teacher_pass",
                    (exp2, cache),
                    {
                        "store": f"{d}/cache_{first}.zarr",
                        "copy_of": f"{d}/gt.zarr",
                        "teacher": f"{d}/models/{first}.pt2",
                    },
                    cost=60,
                )
            )
            tgt = add(
                Step(
                    f"{d}/target/{method}",
                    "correct",
                    (cache2,),
                    {
                        "cache": f"{d}/cache_{first}.zarr",
                        "out": f"{d}/targets/{method}.zarr",
                        "mode": m.mode,
                        "lam": m.lam,
                        "clean": clean_ann,
                    },
                    cost=40,
                )
            )
            score(method, f"{d}/targets/{method}.zarr", tgt, "target")
            student(method, f"{d}/targets/{method}.zarr", tgt, "target")
        if ds.clean_bound and clean_ann is not None:
            clean_store = add(
                Step(
                    f"{d}/gt_store/clean",
                    "gt_store",
                    deps,
                    {
                        "ann": clean_ann,
                        "images": train_dir,
                        "out": f"{d}/clean.zarr",
                        "seed": ds.seed,
                    },
                    cost=40,
                )
            )
            score("clean", f"{d}/clean.zarr", clean_store, "gt")
            student("clean", f"{d}/clean.zarr", clean_store, "gt")
        if ds.main and ds.seed == cfg.seeds[0] and "lc" in ds.methods:
            add(
                Step(
                    f"{d}/figures",
                    "figures",
                    (corrected["lc"],),
                    {
                        "store": f"{d}/targets/lc.zarr",
                        "out": f"{d}/figures",
                        "n": cfg.protocol.figure_samples,
                    },
                    cost=10,
                )
            )
    return list(steps.values())


def select(steps: list[Step], patterns: list[str], done: set[str]) -> list[Step]:
    """Steps matching any pattern (fnmatch on the name), plus their unfinished dependencies."""
    if not patterns:
        return steps
    by_name = {s.name: s for s in steps}
    chosen: set[str] = set()
    todo = [s.name for s in steps if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
    if not todo:
        raise LcposeError(f"--only {' '.join(patterns)}: no step matches (see --list)")
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        chosen.add(name)
        todo += [d for d in by_name[name].deps if d not in done]
    return [s for s in steps if s.name in chosen]
