"""The label-correction experiment of the paper (Table 1, Table 2, Fig. 3, Fig. 5) in miniature.

    python -m experiments.run [--config experiments/lc_synth.toml] [--quick] [--out DIR]
                              [--only STEP...] [--report-only] [--list]

For every seed: synthetic train/val sets (label defects on train, the truth kept), the GT
store, a teacher trained on the defective labels (it is also the Baseline row: a student
trained on `gt` targets with the same settings would be the same run), its export and one
teacher pass, the teacher's coverage of the missing truth, one corrected store per method
(`lcdata correct`), one student per method with identical settings except the targets, the
iteration (the LC student as the next teacher, on a copy of the cache store), a clean-label
upper bound, and COCO evaluation of every model on the clean and on the noisy validation
labels. A defect sweep repeats Baseline and LC at several failure rates. docs/experiments.md
describes the steps, the layout of OUT and the budget.

Every step is a node of a dependency graph, runs as a function of (config, OUT, its
arguments) and, when it finishes, writes `OUT/steps/<name>.json` (its outputs, seconds). A
step with that file is skipped on the next run, and every step that writes a store or a
training run resumes what an interrupted attempt left, so a killed experiment continues where
it stopped. With `parallel` > 1 the ready steps run as child processes
(`python -m experiments.run --exec STEP`), each with `threads` torch/OpenMP threads: on a
2-core machine two single-threaded trainings give more steps per second than one with two
threads.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np
import tomllib

from lcdata.errors import LcposeError

ROOT = Path(__file__).resolve().parents[1]
"""Repository root: relative paths in a config are relative to it."""
DEFAULT_CONFIG = ROOT / "experiments" / "lc_synth.toml"
QUICK_CONFIG = ROOT / "experiments" / "lc_quick.toml"
RESOLVED = "experiment.json"
"""The resolved config of a run, written into OUT; child processes and the report read it."""


# ---------------------------------------------------------------------------------------------
# Methods: what differs between the students is only the target store


@dataclass(frozen=True)
class Method:
    """One row of the tables.

    Attributes:
        label: as printed in the report.
        mode: `lcdata correct --mode` of its targets ("gt" for the teacher and the clean bound).
        lam: KD mixing ratio for kd / kd+lc.
        teacher: None = the baseline teacher; else the method whose student is the teacher
            (iteration, "x2").
        paper_cmu, paper_small: the paper's AP (Table 1/2, CMU-Pose / small NN), if reported.
    """

    label: str
    mode: str
    lam: float | None = None
    teacher: str | None = None
    paper_cmu: dict[str, float] | None = None
    paper_small: dict[str, float] | None = None


def _paper(ap: float, ap50: float, ap75: float, apm: float, apl: float) -> dict[str, float]:
    return {"AP": ap, "AP50": ap50, "AP75": ap75, "APm": apm, "APl": apl}


METHODS: dict[str, Method] = {
    "baseline": Method(
        "Baseline", "gt", paper_cmu=_paper(54.6, 80.9, 56.4, 51.7, 60.9),
        paper_small=_paper(44.0, 76.0, 44.5, 41.8, 49.3),
    ),
    "kd05": Method(
        "KD (λ=0.5)", "kd", 0.5, paper_cmu=_paper(55.6, 82.0, 59.3, 51.7, 63.1),
        paper_small=_paper(44.5, 76.6, 41.7, 43.2, 48.5),
    ),
    "kd1": Method("KD (λ=1)", "kd", 1.0, paper_cmu=_paper(54.3, 80.1, 58.2, 51.1, 60.9)),
    "lc": Method(
        "LC", "max", paper_cmu=_paper(56.9, 82.8, 58.9, 53.9, 63.1),
        paper_small=_paper(45.4, 76.3, 44.5, 43.1, 50.2),
    ),
    "lc_hm": Method(
        "LC (confidence maps)", "heatmaps", paper_cmu=_paper(55.5, 80.6, 56.9, 52.4, 62.4)
    ),
    "lc_paf": Method("LC (PAFs)", "pafs", paper_cmu=_paper(55.5, 81.9, 57.3, 52.0, 62.7)),
    "kd05_lc": Method(
        "KD (λ=0.5) + LC", "kd+lc", 0.5, paper_cmu=_paper(56.8, 81.9, 59.8, 53.7, 63.0),
        paper_small=_paper(45.8, 77.4, 45.2, 43.8, 51.2),
    ),
    "lc_x2": Method("LC ×2", "max", teacher="lc", paper_cmu=_paper(56.9, 83.8, 57.9, 53.5, 63.5)),
    "kd05_lc_x2": Method(
        "KD (λ=0.5) + LC ×2", "kd+lc", 0.5, teacher="lc",
        paper_cmu=_paper(56.3, 82.0, 57.7, 52.8, 63.2),
    ),
    "clean": Method("clean labels (upper bound)", "gt"),
}  # fmt: skip
"""Method keys used in configs, folder names and the report."""


# ---------------------------------------------------------------------------------------------
# Configuration: TOML, optionally on top of a `base` file, checked against DEFAULTS

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "out": "runs/experiment",
    "seeds": [0],
    "parallel": 1,
    "threads": 1,
    "report_dir": "",
    "smoke_run": "",
    "data": {
        "source": "synth",  # "synth" or "coco"
        "train_images": 3000,
        "val_images": 500,
        "missed_visible": 0.1,
        "unannotated": 0.1,
        "synth": {},  # other SynthConfig fields
        "train_annotations": "",  # source = "coco"
        "train_dir": "",
        "val_annotations": "",
        "val_dir": "",
    },
    "store": {
        "input_size": 128,
        "stride": 4,
        "sigma": 4.0,
        "paf_half_width": 1.0,
        "views_per_image": 2,
        "samples_per_shard": 64,
    },
    "train": {},  # TrainConfig fields, the same for every model of the experiment
    "protocol": {
        "methods": ["kd05", "kd1", "lc", "lc_hm", "lc_paf", "kd05_lc"],
        "iterate": ["lc_x2", "kd05_lc_x2"],
        "clean_bound": True,
        "iterate_seeds": None,  # seeds that get the iterate rows; None = every seed
        "clean_bound_seeds": None,  # seeds that get the clean-label bound; None = every seed
        "curves": ["baseline", "kd05", "lc"],
        "coverage_samples": 1024,
        "coverage_threshold": 0.5,
        "figure_samples": 3,
        "teacher_batch": 16,
    },
    "eval": {"max_images": 0, "curve_max_images": 0, "decode": {}},
    "sweep": {"levels": [], "seeds": [0], "methods": ["lc"], "all_off": False},
}
_FREE_TABLES = {("train",), ("data", "synth"), ("eval", "decode")}
"""Tables whose keys are checked by the code they configure (TrainConfig, SynthConfig, ...)."""


def _merge(base: dict[str, Any], over: dict[str, Any], where: tuple[str, ...], file: Path) -> None:
    """Deep-merge `over` into `base` in place, refusing keys DEFAULTS does not know."""
    for key, value in over.items():
        path = (*where, key)
        if not any(where[: len(t)] == t for t in _FREE_TABLES) and key not in base:
            raise LcposeError(f"{file}: unknown key {'.'.join(path)!r}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, path, file)
        else:
            base[key] = copy.deepcopy(value)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise LcposeError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise LcposeError(f"{path}: not valid TOML ({err})") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a config file (and its `base` chain) into a complete, checked dict.

    Paths stay as written; `resolve_path` makes them absolute (relative to the repo root).
    """
    path = Path(path)
    raw = _read_toml(path)
    base_name = raw.pop("base", None)
    if base_name:
        cfg = load_config(path.parent / base_name)
    else:
        cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, raw, (), path)
    for key in cfg["protocol"]["methods"] + cfg["protocol"]["iterate"] + cfg["sweep"]["methods"]:
        if key not in METHODS or key in ("baseline", "clean"):
            raise LcposeError(f"{path}: unknown student method {key!r} (choose from {_students()})")
    for key in cfg["protocol"]["curves"]:
        if key not in METHODS:
            raise LcposeError(f"{path}: protocol.curves: unknown method {key!r}")
    for key in cfg["protocol"]["iterate"]:
        teacher = METHODS[key].teacher
        if teacher is None or teacher not in cfg["protocol"]["methods"]:
            raise LcposeError(
                f"{path}: protocol.iterate: {key!r} needs its teacher {teacher!r} in "
                f"protocol.methods"
            )
    if cfg["data"]["source"] not in ("synth", "coco"):
        raise LcposeError(f"{path}: data.source must be 'synth' or 'coco'")
    if cfg["data"]["source"] == "coco" and (cfg["sweep"]["levels"] or cfg["sweep"]["all_off"]):
        raise LcposeError(f"{path}: a defect sweep needs data.source = 'synth'")
    if int(cfg["parallel"]) < 1 or int(cfg["threads"]) < 1:
        raise LcposeError(f"{path}: parallel and threads must be >= 1")
    if not cfg["seeds"]:
        raise LcposeError(f"{path}: seeds must list at least one seed")
    # fail now, not in the first training step, on a TrainConfig field that does not exist
    train_config(cfg, seed=0, target="gt")
    cfg["config_file"] = str(path.resolve())
    return cfg


def _students() -> str:
    return ", ".join(k for k in METHODS if k not in ("baseline", "clean"))


def resolve_path(value: str) -> Path:
    """A config path: absolute as written, else relative to the repository root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else ROOT / path


def train_config(cfg: dict[str, Any], *, seed: int, target: str):
    """The `TrainConfig` of every model of the experiment (only seed and target group vary)."""
    from trainer.fit import TrainConfig

    fields = dict(cfg["train"])
    fields.update(seed=int(seed), target=target)
    try:
        return TrainConfig(**fields)
    except TypeError as err:
        raise LcposeError(f"{cfg.get('config_file', 'config')}: [train]: {err}") from None


# ---------------------------------------------------------------------------------------------
# The plan: steps and their dependencies


@dataclass(frozen=True)
class Step:
    """One unit of work. `args` are JSON-safe; relative paths in them are relative to OUT."""

    name: str
    kind: str
    deps: tuple[str, ...] = ()
    args: dict[str, Any] = field(default_factory=dict)
    cost: float = 1.0
    """Rough duration in training-step units, for scheduling the longest chains first."""


def dataset_name(p: float, q: float, seed: int, *, all_off: bool = False) -> str:
    """Folder of one synthetic data set: failure rates and seed (shared by main and sweep)."""
    return f"none_s{seed}" if all_off else f"p{p:.2f}_q{q:.2f}_s{seed}"


@dataclass(frozen=True)
class Dataset:
    """One data set of the experiment and which students are trained on it."""

    name: str
    seed: int
    synth: dict[str, Any] | None  # SynthConfig fields, None for a given COCO data set
    methods: tuple[str, ...]
    iterate: tuple[str, ...] = ()
    clean_bound: bool = False
    main: bool = False
    level: float | None = None


def datasets(cfg: dict[str, Any]) -> list[Dataset]:
    """Main data sets (one per seed), then the sweep's; a sweep level equal to the main rates
    shares the main data set of its seed (and its teacher and LC student)."""
    data, proto = cfg["data"], cfg["protocol"]
    out: dict[str, Dataset] = {}
    if data["source"] == "coco":
        for seed in cfg["seeds"]:
            # real labels: no truth to train a clean bound on or to measure recovery against
            name = f"coco_s{seed}"
            out[name] = Dataset(
                name, int(seed), None, tuple(proto["methods"]), tuple(proto["iterate"]), main=True
            )
        return list(out.values())
    p, q = float(data["missed_visible"]), float(data["unannotated"])

    def chosen(key: str, seed: int) -> bool:
        return proto.get(key) is None or seed in proto[key]

    for seed in cfg["seeds"]:
        name = dataset_name(p, q, seed)
        synth = {**data["synth"], "missed_visible": p, "unannotated": q}
        out[name] = Dataset(
            name,
            int(seed),
            synth,
            tuple(proto["methods"]),
            tuple(proto["iterate"]) if chosen("iterate_seeds", seed) else (),
            bool(proto["clean_bound"]) and chosen("clean_bound_seeds", seed),
            main=True,
            level=p if p == q else None,
        )
    sweep = cfg["sweep"]
    levels = [(float(v), False) for v in sweep["levels"]]
    if sweep["all_off"]:
        levels.append((0.0, True))
    for seed in sweep["seeds"]:
        for level, all_off in levels:
            name = dataset_name(level, level, seed, all_off=all_off)
            if name in out:
                continue
            synth = {**data["synth"], "missed_visible": level, "unannotated": level}
            if all_off:
                synth.update(drop_out_of_image=False, drop_occluded=False)
            out[name] = Dataset(
                name,
                int(seed),
                synth,
                tuple(sweep["methods"]),
                level=None if all_off else level,
            )
    return list(out.values())


def val_spec(cfg: dict[str, Any], ds: Dataset) -> dict[str, Any]:
    """Validation images and the annotation files to score against, primary (clean) first."""
    if ds.synth is None:
        data = cfg["data"]
        return {
            "images": str(resolve_path(data["val_dir"])),
            "annotations": {"val": str(resolve_path(data["val_annotations"]))},
        }
    ann = f"{ds.name}/data/annotations"
    return {
        "images": f"{ds.name}/data/val",
        "annotations": {
            "clean": f"{ann}/person_keypoints_val_clean.json",
            "noisy": f"{ann}/person_keypoints_val.json",
        },
    }


def plan(cfg: dict[str, Any]) -> list[Step]:
    """Every step of the experiment, each after its dependencies."""
    steps: dict[str, Step] = {}
    train_steps = float(cfg["train"].get("steps", 1000))

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
                        "train": cfg["data"]["train_images"],
                        "val": cfg["data"]["val_images"],
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
            train_ann = str(resolve_path(cfg["data"]["train_annotations"]))
            train_dir = str(resolve_path(cfg["data"]["train_dir"]))
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
            method: str, store: str, store_dep: str, target: str, d=d, ds=ds, val=val
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
                        "curve": ds.main and method in cfg["protocol"]["curves"],
                    },
                    cost=train_steps,
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
            if ds.main and method in cfg["protocol"]["curves"]:
                add(
                    Step(
                        f"{d}/curve/{method}",
                        "curve",
                        (fit_name,),
                        {"run": run, "val": val, "out": f"{d}/eval/curve_{method}.json"},
                        cost=120,
                    )
                )
            return fit_name

        teacher_fit = student("baseline", f"{d}/gt.zarr", gt, "gt")
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
                    {"store": f"{d}/gt.zarr", "clean": clean_ann, "out": f"{d}/coverage.json"},
                    cost=30,
                )
            )
        corrected: dict[str, str] = {}
        for method in ds.methods:
            m = METHODS[method]
            corrected[method] = add(
                Step(
                    f"{d}/target/{method}",
                    "correct",
                    (cache,),
                    {
                        "cache": f"{d}/gt.zarr",
                        "out": f"{d}/targets/{method}.zarr",
                        "mode": m.mode,
                        "lam": m.lam,
                        "clean": clean_ann,
                    },
                    cost=40,
                )
            )
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
            student("clean", f"{d}/clean.zarr", clean_store, "gt")
        if ds.main and ds.seed == cfg["seeds"][0] and "lc" in ds.methods:
            add(
                Step(
                    f"{d}/figures",
                    "figures",
                    (corrected["lc"],),
                    {
                        "store": f"{d}/targets/lc.zarr",
                        "out": f"{d}/figures",
                        "n": cfg["protocol"]["figure_samples"],
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


# ---------------------------------------------------------------------------------------------
# Markers


def marker_path(out: Path, name: str) -> Path:
    return out / "steps" / (name.replace("/", "__") + ".json")


def read_marker(out: Path, name: str) -> dict[str, Any] | None:
    path = marker_path(out, name)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, body: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Step implementations: kind -> function(cfg, out, args) -> JSON-safe outputs


def _p(out: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else out / path


def _render_config(cfg: dict[str, Any]):
    from lcdata.config import RenderConfig

    s = cfg["store"]
    return RenderConfig(
        input_size=int(s["input_size"]),
        stride=int(s["stride"]),
        sigma=float(s["sigma"]),
        paf_half_width=float(s["paf_half_width"]),
    )


def _decode_config(cfg: dict[str, Any]):
    from trainer.decode import DecodeConfig

    try:
        return DecodeConfig(**cfg["eval"]["decode"])
    except TypeError as err:
        raise LcposeError(f"{cfg.get('config_file', 'config')}: [eval.decode]: {err}") from None


def run_synth(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from lcdata.synth import SynthConfig, generate

    fields = dict(args["synth"])
    for key in ("persons_per_image", "height_range", "small_range"):
        if key in fields:
            fields[key] = tuple(fields[key])
    report = generate(
        _p(out, args["dir"]),
        num_train=int(args["train"]),
        num_val=int(args["val"]),
        cfg=SynthConfig(**fields),
        seed=int(args["seed"]),
        progress=False,
    )
    return {"corruption": report}


def run_gt_store(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from lcdata.build import BuildConfig, build_gt_store

    s = cfg["store"]
    attrs = build_gt_store(
        _p(out, args["ann"]),
        _p(out, args["images"]),
        _p(out, args["out"]),
        render=_render_config(cfg),
        build=BuildConfig(
            views_per_image=int(s["views_per_image"]),
            seed=int(args["seed"]),
            samples_per_shard=int(s["samples_per_shard"]),
        ),
        resume=True,  # finishes an interrupted build; a fresh path is simply built
        workers=int(cfg["threads"]),
        progress=False,
    )
    return {"store": args["out"], "num_samples": attrs["num_samples"]}


def _score(
    results: list[dict], annotations: dict[str, str], out: Path, image_ids: list[int]
) -> dict[str, dict[str, float]]:
    from trainer.evaluate import evaluate_results

    return {
        key: evaluate_results(_p(out, ann), results, image_ids=image_ids)
        for key, ann in annotations.items()
    }


def run_oracle_step(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Oracle AP: maps rendered from each validation annotation file, decoded and scored
    against every file (the clean truth first)."""
    from lcdata.skeleton import CMU_SKELETON
    from trainer.evaluate import run_oracle, select_records

    val = args["val"]
    decode = _decode_config(cfg)
    render = _render_config(cfg)
    max_images = int(cfg["eval"]["max_images"]) or None
    oracle: dict[str, Any] = {}
    for labels, ann in val["annotations"].items():
        records = select_records(_p(out, ann), max_images)
        results = run_oracle(records, render=render, skeleton=CMU_SKELETON, cfg=decode)
        oracle[labels] = _score(results, val["annotations"], out, [r.image_id for r in records])
    return {"oracle": oracle, "render": render.to_attrs(), "decode": decode.to_attrs()}


class CheckpointKeeper:
    """Keeps a copy of every `checkpoint.pt` a training run writes, as steps/step_NNNNNNN.pt.

    `trainer fit` overwrites one checkpoint file (atomically, with os.replace); a thread
    polls it and saves each new step without the optimizer state, for the learning curves.
    """

    def __init__(self, run: Path, *, interval_s: float = 0.2) -> None:
        self.run = run
        self.interval_s = interval_s
        self._stamp: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def poll(self) -> None:
        import torch

        path = self.run / "checkpoint.pt"
        try:
            stamp = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if stamp == self._stamp:
            return
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # replaced while opening; the next poll reads the new file
            return
        self._stamp = stamp
        target = self.run / "steps" / f"step_{int(ckpt['step']):07d}.pt"
        if not target.exists():
            ckpt.pop("optimizer", None)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            torch.save(ckpt, tmp)
            os.replace(tmp, target)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def __enter__(self) -> CheckpointKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()


def _mean_step_s(log_csv: Path) -> float | None:
    """Mean wall seconds per training step over the rows of a `trainer fit` log."""
    import csv

    if not log_csv.is_file():
        return None
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    values = [float(r["step_s"]) for r in rows if r.get("step_s")]
    return float(np.mean(values)) if values else None


def run_fit(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from trainer.fit import fit

    tc = train_config(cfg, seed=args["seed"], target=args["target"])
    run = _p(out, args["run"])
    t0 = time.perf_counter()
    if args.get("curve"):
        with CheckpointKeeper(run):
            result = fit(tc, _p(out, args["store"]), run, resume=True, progress=False)
    else:
        result = fit(tc, _p(out, args["store"]), run, resume=True, progress=False)
    return {
        "run": args["run"],
        "steps": result.step,
        "last_row": result.last_row,
        "step_s": _mean_step_s(run / "log.csv"),
        "wall_s": time.perf_counter() - t0,
    }


def run_export(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from trainer.export import export_teacher, model_from_checkpoint

    checkpoint = _p(out, args["checkpoint"])
    model, info = model_from_checkpoint(checkpoint)
    target = _p(out, args["out"])
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = export_teacher(
        model,
        skeleton=info.skeleton,
        stride=info.stride,
        input_size=info.input_size,
        model_name=info.model_name,
        out_path=target,
        extra={"checkpoint": args["checkpoint"], "step": info.step},
    )
    return {"teacher": args["out"], "num_params": meta["num_params"], "step": info.step}


def run_teacher_pass_step(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from lcdata.teacher_pass import run_teacher_pass

    store = _p(out, args["store"])
    overwrite = False
    if args.get("copy_of"):
        # a second cache: the first one's crops and GT (identical for the same build), with
        # the next teacher's outputs; an interrupted attempt is simply redone
        if store.exists():
            shutil.rmtree(store)
        shutil.copytree(
            _p(out, args["copy_of"]), store, ignore=shutil.ignore_patterns(".lcpose-lock*")
        )
        overwrite = True
    attrs = run_teacher_pass(
        store,
        _p(out, args["teacher"]),
        batch_size=int(cfg["protocol"]["teacher_batch"]),
        device="cpu",
        resume=not overwrite,
        overwrite=overwrite,
        progress=False,
    )
    return {"store": args["store"], "complete": bool(attrs.get("complete"))}


def run_correct_step(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from lcdata.correct import run_correct

    attrs = run_correct(
        _p(out, args["cache"]),
        _p(out, args["out"]),
        mode=args["mode"],
        lam=args["lam"],
        clean=_p(out, args["clean"]) if args.get("clean") else None,
        resume=True,  # continues an interrupted correction; a fresh path is simply created
        progress=False,
        num_workers=int(cfg["threads"]),
    )
    return {"store": args["out"], "analytics": attrs.get("analytics")}


def _predictor(model: Path):
    from trainer.cli.evaluate import load_predictor  # the path `trainer evaluate` takes

    return load_predictor(model, device="cpu", batch_size=8)


def evaluate_model(
    cfg: dict[str, Any], out: Path, model: Path, val: dict[str, Any], *, max_images: int | None
) -> tuple[list[dict], dict[str, dict[str, float]], dict[str, Any]]:
    """Run a model once over the validation images; COCO metrics against every annotation
    file of `val`. Returns (results, metrics per file, protocol)."""
    from trainer.evaluate import Protocol, run_model, select_records

    decode = _decode_config(cfg)
    predictor, info = _predictor(model)
    primary = next(iter(val["annotations"].values()))
    records = select_records(_p(out, primary), max_images)
    results = run_model(predictor, records, _p(out, val["images"]), cfg=decode)
    metrics = _score(results, val["annotations"], out, [r.image_id for r in records])
    protocol = Protocol(
        source=str(model),
        input_size=predictor.input_size,
        stride=predictor.stride,
        tile_size=predictor.tile_size,
        model=info,
        decode=decode.to_attrs(),
        num_images=len(records),
        annotations=str(_p(out, primary)),
    )
    return results, metrics, protocol.to_attrs()


def run_evaluate(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    max_images = int(cfg["eval"]["max_images"]) or None
    results, metrics, protocol = evaluate_model(
        cfg, out, _p(out, args["model"]), args["val"], max_images=max_images
    )
    target = _p(out, args["out"])
    _write_json(target.with_suffix(".results.json"), results)
    _write_json(target.with_suffix(".json"), {"metrics": metrics, "protocol": protocol})
    return {"metrics": metrics, "persons": len(results)}


def run_curve(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """COCO metrics of every kept checkpoint of a run (and its final model), by step."""
    run = _p(out, args["run"])
    max_images = int(cfg["eval"]["curve_max_images"]) or int(cfg["eval"]["max_images"]) or None
    files = sorted((run / "steps").glob("step_*.pt"))
    points = []
    for path in files:
        _, metrics, _ = evaluate_model(cfg, out, path, args["val"], max_images=max_images)
        points.append({"step": int(path.stem.split("_")[1]), "metrics": metrics})
    _write_json(_p(out, args["out"]), points)
    return {"points": points}


def run_figures(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Fig. 3 analogue: `lcdata show` of the samples where the correction added the most."""
    import zarr

    from lcdata.correct import resolve_source_store
    from lcdata.show import render_figure

    store = _p(out, args["store"])
    source = resolve_source_store(store)
    n_scan = min(256, int(zarr.open_array(str(store / "target" / "heatmaps"), mode="r").shape[0]))
    target = np.asarray(zarr.open_array(str(store / "target/heatmaps"), mode="r")[:n_scan])
    gt = np.asarray(zarr.open_array(str(source / "gt/heatmaps"), mode="r")[:n_scan])
    masks = np.asarray(zarr.open_array(str(source / "masks"), mode="r")[:n_scan])
    added = (np.maximum(target[:, :-1].astype(np.float32) - gt[:, :-1], 0) * masks[:, None]).sum(
        axis=(1, 2, 3)
    )
    indices = [int(i) for i in np.argsort(-added, kind="stable")[: int(args["n"])]]
    pictures = []
    for i in indices:
        png = _p(out, args["out"]) / f"lc_sample{i:05d}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        render_figure(store, i, png)
        pictures.append(
            {"index": i, "added_mass": float(added[i]), "png": str(png.relative_to(out))}
        )
    return {"pictures": pictures}


def teacher_coverage(
    cache: str | Path, clean: str | Path, *, max_samples: int, threshold: float = 0.5
) -> dict[str, Any]:
    """How much of the truth missing from the labels the teacher's outputs cover.

    Keypoints: every true part of the clean file that lies in a supervised cell of a stored
    crop, by why the noisy labels lack it (`lcdata.analytics.BUCKETS`; "labelled" for parts
    the labels have). A part counts as covered when the max of the teacher's heatmap of that
    part over the 3 x 3 cells around it exceeds `threshold` (the same for the GT maps, which
    cover a dropped part only through a neighbour's Gaussian).
    PAF cells: supervised cells where the clean limb field is non-zero and the GT field is
    zero (missing) or non-zero (labelled); covered when the teacher's vector projected on the
    true limb direction exceeds `threshold`.

    Returns:
        {"samples", "threshold", "keypoints": {bucket: {"n", "teacher", "gt"}},
         "paf_cells": {bucket: {"n", "teacher"}}} with counts (teacher, gt = covered).
    """
    import zarr

    from lcdata import store as st
    from lcdata.analytics import BUCKETS, load_clean_truth, render_truth
    from lcdata.augment import warp_parts
    from lcdata.config import RenderConfig
    from lcdata.skeleton import Skeleton

    attrs = st.read_attrs(cache)
    skeleton = Skeleton.from_attrs(attrs["skeleton"])
    render = RenderConfig.from_attrs(attrs["render"])
    truth = load_clean_truth(
        clean,
        attrs["source"]["annotations"],
        skeleton=skeleton,
        noisy_field=attrs.get("build", {}).get("keypoint_field", "keypoints"),
    )
    group = zarr.open_group(str(cache), mode="r")
    n = min(int(max_samples), int(attrs["num_samples"]))
    per = int(attrs["samples_per_shard"])
    names = ["labelled", *BUCKETS]
    kp = {b: {"n": 0, "teacher": 0, "gt": 0} for b in names}
    paf = {b: {"n": 0, "teacher": 0} for b in names}
    stride, grid = render.stride, render.grid_size
    perm = skeleton.flip_permutation()
    for start in range(0, n, per):
        stop = min(start + per, n)
        th = np.asarray(group["teacher/heatmaps"][start:stop], np.float32)
        tp = np.asarray(group["teacher/pafs"][start:stop], np.float32)
        gh = np.asarray(group["gt/heatmaps"][start:stop], np.float32)
        gp = np.asarray(group["gt/pafs"][start:stop], np.float32)
        masks = np.asarray(group["masks"][start:stop])
        ids = np.asarray(group["meta/image_id"][start:stop])
        affines = np.asarray(group["meta/affine"][start:stop], np.float64)
        flipped = np.asarray(group["meta/flipped"][start:stop])
        for i in range(stop - start):
            parts = truth.parts.get(int(ids[i]))
            if parts is None or len(parts) == 0:
                continue
            causes = truth.causes[int(ids[i])]
            crop = warp_parts(parts, affines[i], flipped=bool(flipped[i]), skeleton=skeleton)
            crop_causes = causes[:, perm] if flipped[i] else causes
            # nearest cell: cell j is centred on crop pixel j * stride + (stride - 1) / 2
            cells = np.rint((crop[..., :2] - (stride - 1) / 2) / stride).astype(int)
            for p, k in zip(*np.nonzero(crop_causes >= 0), strict=True):
                cx, cy = cells[p, k]
                if not (0 <= cx < grid and 0 <= cy < grid) or masks[i, cy, cx] == 0:
                    continue
                bucket = names[int(crop_causes[p, k])]
                window = np.s_[k, max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2]
                kp[bucket]["n"] += 1
                kp[bucket]["teacher"] += int(th[i][window].max() > threshold)
                kp[bucket]["gt"] += int(gh[i][window].max() > threshold)
            _, clean_p, _, paf_cause = render_truth(
                parts, causes, affines[i], bool(flipped[i]), cfg=render, skeleton=skeleton
            )
            c = clean_p.reshape(-1, 2, grid, grid).astype(np.float64)
            g = gp[i].reshape(-1, 2, grid, grid)
            t = tp[i].reshape(-1, 2, grid, grid)
            nc = np.sqrt((c * c).sum(axis=1))
            ng = np.sqrt((g * g).sum(axis=1))
            along = (t * c).sum(axis=1) / np.maximum(nc, 1e-12)
            sup = (masks[i] > 0)[None] & (nc > 0)
            missing = sup & (ng == 0)
            labelled = sup & (ng > 0)
            paf["labelled"]["n"] += int(labelled.sum())
            paf["labelled"]["teacher"] += int((labelled & (along > threshold)).sum())
            # a missing cell no single failure explains is "mixed" (as in lcdata.analytics)
            codes = np.where(paf_cause == 0, len(BUCKETS), paf_cause)
            for code in range(1, len(BUCKETS) + 1):
                cells_c = missing & (codes == code)
                paf[names[code]]["n"] += int(cells_c.sum())
                paf[names[code]]["teacher"] += int((cells_c & (along > threshold)).sum())
    for table in (kp, paf):
        dropped = {key: sum(table[b][key] for b in BUCKETS) for key in table["labelled"]}
        table["all_missing"] = dropped
    return {"samples": n, "threshold": threshold, "keypoints": kp, "paf_cells": paf}


def run_coverage(cfg: dict[str, Any], out: Path, args: dict[str, Any]) -> dict[str, Any]:
    result = teacher_coverage(
        _p(out, args["store"]),
        _p(out, args["clean"]),
        max_samples=int(cfg["protocol"]["coverage_samples"]),
        threshold=float(cfg["protocol"]["coverage_threshold"]),
    )
    _write_json(_p(out, args["out"]), result)
    return result


KINDS: dict[str, Callable[[dict[str, Any], Path, dict[str, Any]], dict[str, Any]]] = {
    "synth": run_synth,
    "gt_store": run_gt_store,
    "oracle": run_oracle_step,
    "fit": run_fit,
    "export": run_export,
    "teacher_pass": run_teacher_pass_step,
    "correct": run_correct_step,
    "coverage": run_coverage,
    "evaluate": run_evaluate,
    "curve": run_curve,
    "figures": run_figures,
}


def execute_step(cfg: dict[str, Any], out: Path, step: Step) -> dict[str, Any]:
    """Run one step in this process and write its marker; returns the marker body."""
    import torch

    torch.set_num_threads(int(cfg["threads"]))
    t0 = time.perf_counter()
    outputs = KINDS[step.kind](cfg, out, step.args)
    body = {
        "step": step.name,
        "kind": step.kind,
        "args": step.args,
        "outputs": outputs,
        "seconds": time.perf_counter() - t0,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    _write_json(marker_path(out, step.name), body)
    return body


# ---------------------------------------------------------------------------------------------
# Running the plan


def _priorities(steps: list[Step]) -> dict[str, float]:
    """Longest chain of `cost` from each step to the end of the plan (list scheduling)."""
    children: dict[str, list[str]] = {s.name: [] for s in steps}
    for s in steps:
        for d in s.deps:
            if d in children:
                children[d].append(s.name)
    cost = {s.name: s.cost for s in steps}
    prio: dict[str, float] = {}
    for s in reversed(steps):  # the plan lists every step after its dependencies
        prio[s.name] = cost[s.name] + max((prio[c] for c in children[s.name]), default=0.0)
    return prio


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    # the child imports `experiments` from the repository like the parent does
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_plan(
    cfg: dict[str, Any],
    out: Path,
    steps: list[Step],
    *,
    parallel: int,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Run every unfinished step of `steps` once its dependencies are done.

    parallel = 1 runs the steps in this process; otherwise up to `parallel` child processes
    run at once, longest remaining chain first. A failure stops new launches, waits for the
    running steps and raises. Returns the names of the steps run.
    """
    known = {s.name for s in steps}
    done = {s.name for s in steps if marker_path(out, s.name).is_file()}
    pending = [s for s in steps if s.name not in done]
    prio = _priorities(steps)
    ran: list[str] = []
    if not pending:
        return ran
    total = len(pending)

    def ready(s: Step) -> bool:
        # a dependency outside `steps` (an --only selection) must already be done
        return all(d in done or (d not in known and marker_path(out, d).is_file()) for d in s.deps)

    if parallel <= 1:
        while pending:
            runnable = [s for s in pending if ready(s)]
            if not runnable:
                missing = sorted({d for s in pending for d in s.deps if d not in done})
                raise LcposeError(f"steps wait for unfinished dependencies: {', '.join(missing)}")
            step = max(runnable, key=lambda s: prio[s.name])
            echo(f"[{len(ran) + 1}/{total}] {step.name} ...")
            body = execute_step(cfg, out, step)
            echo(f"[{len(ran) + 1}/{total}] {step.name} done in {body['seconds']:.1f} s")
            done.add(step.name)
            pending.remove(step)
            ran.append(step.name)
        return ran

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    failed: list[str] = []
    env = _child_env(int(cfg["threads"]))

    def stop_children(*_: object) -> None:
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()
        raise SystemExit(130)

    old_term = signal.signal(signal.SIGTERM, stop_children)
    try:
        while pending or running:
            if not failed:
                runnable = sorted((s for s in pending if ready(s)), key=lambda s: -prio[s.name])
                for step in runnable[: parallel - len(running)]:
                    log = open(logs / (step.name.replace("/", "__") + ".log"), "a")  # noqa: SIM115
                    cmd = [sys.executable, "-m", "experiments.run", "--out", str(out)]
                    cmd += ["--exec", step.name]
                    proc = subprocess.Popen(
                        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
                    )
                    running[step.name] = (proc, time.perf_counter(), log)
                    pending.remove(step)
                    echo(f"[start] {step.name}")
                if not running and pending:
                    missing = sorted({d for s in pending for d in s.deps if d not in done})
                    raise LcposeError(
                        f"steps wait for unfinished dependencies: {', '.join(missing)}"
                    )
            if not running:
                break
            time.sleep(0.2)
            for name, (proc, t0, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                seconds = time.perf_counter() - t0
                if proc.returncode == 0 and marker_path(out, name).is_file():
                    done.add(name)
                    ran.append(name)
                    echo(f"[done {len(ran)}/{total}] {name} in {seconds:.1f} s")
                else:
                    failed.append(name)
                    echo(f"[FAILED] {name} (exit {proc.returncode}); see {logs}")
    except KeyboardInterrupt:
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if failed:
        tails = []
        for name in failed:
            log_file = logs / (name.replace("/", "__") + ".log")
            lines = log_file.read_text(errors="replace").strip().splitlines()
            tails.append(f"{name}: {lines[-1] if lines else 'no output'}")
        raise LcposeError("steps failed: " + " | ".join(tails))
    return ran


# ---------------------------------------------------------------------------------------------
# Command line


def _prepare_out(cfg: dict[str, Any], out: Path) -> None:
    """Write the resolved config into OUT, refusing one whose protocol differs."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESOLVED
    body = {k: v for k, v in cfg.items() if k != "config_file"}
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        keep = ("parallel", "threads", "report_dir", "smoke_run", "sweep", "protocol", "seeds")
        fixed = [k for k in body if k not in keep and old.get(k) != body[k]]
        if fixed:
            raise LcposeError(
                f"{path}: this folder holds runs of a different config (key {fixed[0]!r} "
                f"differs); choose another --out"
            )
    _write_json(path, {**body, "config_file": cfg.get("config_file", "")})


def load_resolved(out: Path) -> dict[str, Any]:
    path = out / RESOLVED
    if not path.is_file():
        raise LcposeError(f"{out}: no {RESOLVED} (not an experiment folder)")
    return json.loads(path.read_text(encoding="utf-8"))


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Experiment config (TOML) [default: {DEFAULT_CONFIG.relative_to(ROOT)}].",
)
@click.option("--quick", is_flag=True, help=f"Use {QUICK_CONFIG.relative_to(ROOT)} (minutes).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: the config's `out`].")  # fmt: skip
@click.option("--only", "only_flag", is_flag=True,
              help="Run only the STEPs given (names or globs, see --list) and their "
              "unfinished dependencies.")  # fmt: skip
@click.option("--report-only", is_flag=True, help="Write the report from the saved runs only.")
@click.option("--no-report", is_flag=True, help="Do not write the report afterwards.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results.md and its PNGs go [default: the config's report_dir, "
              "else OUT/report].")  # fmt: skip
@click.option("--parallel", type=int, default=None, help="Concurrent steps [config's].")
@click.option("--list", "list_steps", is_flag=True, help="Print the plan and what is done.")
@click.option("--exec", "exec_step", default=None, hidden=True)
@click.argument("only", nargs=-1, metavar="[STEP]...")
def main(
    config_path: Path | None,
    quick: bool,
    out: Path | None,
    only_flag: bool,
    only: tuple[str, ...],
    report_only: bool,
    no_report: bool,
    report_dir: Path | None,
    parallel: int | None,
    list_steps: bool,
    exec_step: str | None,
) -> None:
    """Run the label-correction experiment (resumable) and write its report."""
    if bool(only) != only_flag:
        raise click.UsageError("give step names after --only, e.g. --only '*/fit/lc'")
    try:
        _main(
            config_path, quick, out, list(only), report_only, no_report, report_dir, parallel,
            list_steps, exec_step,
        )  # fmt: skip
    except LcposeError as err:
        raise click.ClickException(str(err)) from None


def _main(
    config_path: Path | None,
    quick: bool,
    out: Path | None,
    only: list[str],
    report_only: bool,
    no_report: bool,
    report_dir: Path | None,
    parallel: int | None,
    list_steps: bool,
    exec_step: str | None,
) -> None:
    if exec_step is not None:  # a child process of run_plan: one step, config from OUT
        if out is None:
            raise LcposeError("--exec needs --out")
        cfg = load_resolved(out)
        by_name = {s.name: s for s in plan(cfg)}
        if exec_step not in by_name:
            raise LcposeError(f"--exec: no step {exec_step!r} in the plan")
        execute_step(cfg, out.resolve(), by_name[exec_step])
        return
    if quick and config_path is not None:
        raise click.UsageError("--quick selects experiments/lc_quick.toml; give one of the two")
    cfg = load_config(QUICK_CONFIG if quick else (config_path or DEFAULT_CONFIG))
    out = (out or resolve_path(cfg["out"])).resolve()
    if report_dir is None:
        report_dir = resolve_path(cfg["report_dir"]) if cfg["report_dir"] else out / "report"
    steps = plan(cfg)
    if list_steps:
        for s in steps:
            state = "done" if marker_path(out, s.name).is_file() else "todo"
            click.echo(f"{state}  {s.name}")
        fits = [s for s in steps if s.kind == "fit"]
        click.echo(
            f"{len(steps)} steps, {len(fits)} trainings of {cfg['train'].get('steps')} steps"
        )
        return
    if not report_only:
        _prepare_out(cfg, out)
        done = {s.name for s in steps if marker_path(out, s.name).is_file()}
        chosen = select(steps, only, done)
        t0 = time.perf_counter()
        ran = run_plan(cfg, out, chosen, parallel=parallel or int(cfg["parallel"]), echo=click.echo)
        click.echo(
            f"{len(ran)} steps run, {len(chosen) - len(ran)} already done, "
            f"{time.perf_counter() - t0:.0f} s; outputs in {out}"
        )
    if not no_report:
        from experiments.report import write_report

        smoke = resolve_path(cfg["smoke_run"]) if cfg["smoke_run"] else None
        path = write_report(out, report_dir, smoke_run=smoke)
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
