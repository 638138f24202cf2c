"""What each kind of experiment step does, and the step markers it writes.

Each kind is a function of (config, OUT, its arguments) returning JSON-safe outputs, which
`execute_step` writes as the step's marker.
Relative paths in a step's arguments are relative to OUT.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from experiments.config import ExperimentConfig, train_config
from experiments.plan import Step
from experiments.schedule import marker_path, replaced_path
from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.correction.coverage import teacher_coverage
from lcdata.correction.write import run_correct
from lcdata.errors import LcposeError
from lcdata.io import read_json, write_json_atomic
from lcdata.labels.decode import DecodeConfig
from lcdata.labels.scoring import evaluate_results
from lcdata.labels.skeleton import CMU_SKELETON
from lcdata.show import render_figure
from lcdata.store.lock import LOCK_PREFIX
from lcdata.store.refs import resolve_source_store
from lcdata.synth.scene import SynthConfig, generate
from trainer.config import KEPT_DIR, TrainConfig
from trainer.evaluate import Protocol, run_oracle, select_records
from trainer.infer import load_predictor, run_model


def _p(out: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else out / path


def _decode_config(cfg: ExperimentConfig) -> DecodeConfig:
    try:
        return DecodeConfig(**cfg.eval.decode)
    except TypeError as err:
        raise LcposeError(f"{cfg.config_file or 'config'}: [eval.decode]: {err}") from None


def run_synth(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
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


def run_gt_store(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    s = cfg.store
    attrs = build_gt_store(
        _p(out, args["ann"]),
        _p(out, args["images"]),
        _p(out, args["out"]),
        render=s.render,
        build=BuildConfig(
            views_per_image=int(s.views_per_image),
            seed=int(args["seed"]),
            samples_per_shard=int(s.samples_per_shard),
        ),
        resume=True,  # finishes an interrupted build; a fresh path is simply built
        workers=int(cfg.threads),
        progress=False,
    )
    return {"store": args["out"], "num_samples": attrs["num_samples"]}


def _score(
    results: list[dict], annotations: dict[str, str], out: Path, image_ids: list[int]
) -> dict[str, dict[str, float]]:
    return {
        key: evaluate_results(_p(out, ann), results, image_ids=image_ids)
        for key, ann in annotations.items()
    }


def run_oracle_step(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Oracle AP: maps rendered from each validation annotation file, decoded and scored
    against every file (the clean truth first)."""
    val = args["val"]
    decode = _decode_config(cfg)
    render = cfg.store.render
    max_images = int(cfg.eval.max_images) or None
    oracle: dict[str, Any] = {}
    for labels, ann in val["annotations"].items():
        records = select_records(_p(out, ann), max_images)
        results = run_oracle(records, render=render, skeleton=CMU_SKELETON, cfg=decode)
        oracle[labels] = _score(results, val["annotations"], out, [r.image_id for r in records])
    return {"oracle": oracle, "render": render.to_attrs(), "decode": decode.to_attrs()}


def _mean_step_s(log_csv: Path) -> float | None:
    """Mean wall seconds per training step over the rows of a `trainer fit` log."""
    if not log_csv.is_file():
        return None
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    values = [float(r["step_s"]) for r in rows if r.get("step_s")]
    return float(np.mean(values)) if values else None


AMP_ENV = "LCPOSE_EXPERIMENT_AMP"
"""Set by `experiments.run --amp`: this machine's training precision, whatever the config's
`train.amp` (a CPU without native bf16 trains bf16 about 9x slower than fp32)."""

CHANNELS_LAST_ENV = "LCPOSE_EXPERIMENT_CHANNELS_LAST"
"""Set to "1" by `experiments.run --channels-last`: every fit keeps model and batches in NHWC
memory order, a speed path that changes results only by float rounding (not a resume key, so
a parked fit continues in it); the marker records it."""


def fit_train_config(cfg: ExperimentConfig, args: dict[str, Any]) -> tuple[TrainConfig, bool]:
    """The `TrainConfig` a fit step trains with on this machine (the config's, with this
    run's --amp and --channels-last), and whether it may continue a checkpoint trained in
    another precision (only under --amp, and never for a row whose point is its precision)."""
    tc = train_config(cfg, seed=args["seed"], target=args["target"])
    if args.get("curve"):  # the learning curve evaluates every checkpoint
        tc = replace(tc, keep_checkpoints=True)
    override = os.environ.get(AMP_ENV)
    if override:  # a parked fit continues in this precision; run.json keeps the switch
        tc = replace(tc, amp=override)
    if args.get("amp"):  # a row whose point is its precision (protocol.precision_check)
        tc, override = replace(tc, amp=args["amp"]), None
    if os.environ.get(CHANNELS_LAST_ENV) == "1":
        tc = replace(tc, channels_last=True)
    return tc, bool(override)


def check_unfinished_fits(cfg: ExperimentConfig, out: Path, steps: list[Step]) -> None:
    """Refuse, before any step runs, an unfinished fit whose checkpoint this run cannot
    continue (another precision without --amp, another schedule or batch size): otherwise
    the runner would spend the store rebuilds ahead of it (40 minutes on two cores for
    experiment v2) and only then stop at the fit.

    Raises:
        LcposeError: one line naming the checkpoint, the difference and the way out.
    """
    from trainer.checkpoint import config_difference, load_training_checkpoint

    for step in steps:
        if step.kind != "fit" or marker_path(out, step.name).is_file():
            continue
        path = _p(out, step.args["run"]) / "checkpoint.pt"
        if not path.is_file():
            continue
        tc, allow_amp_change = fit_train_config(cfg, step.args)
        saved = load_training_checkpoint(path)["config"]
        problem = config_difference(saved, tc, allow_amp_change=allow_amp_change)
        if problem is None:
            continue
        if problem.startswith("checkpoint has amp="):
            way_out = (
                f"run with --amp {tc.amp} to continue it in {tc.amp} (recorded in its "
                f"amp_history), or --amp {saved.get('amp', 'off')} to keep its precision"
            )
        else:
            way_out = "delete it to train this step from scratch, or restore the config"
        raise LcposeError(
            f"{path}: {step.name} cannot continue: {problem.split(';')[0]}; {way_out}"
        )


def run_fit(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from trainer.fit import fit

    tc, allow_amp_change = fit_train_config(cfg, args)
    run = _p(out, args["run"])
    t0 = time.perf_counter()
    result = fit(
        tc, _p(out, args["store"]), run, resume=True, progress=False,
        allow_amp_change=allow_amp_change,
    )  # fmt: skip
    return {
        "run": args["run"],
        "steps": result.step,
        "last_row": result.last_row,
        "step_s": _mean_step_s(run / "log.csv"),
        "amp_history": read_json(run / "run.json").get("amp_history"),
        "channels_last": tc.channels_last,
        "wall_s": time.perf_counter() - t0,
    }


def run_export(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from trainer.checkpoint import model_from_checkpoint
    from trainer.export import export_teacher

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


def run_teacher_pass_step(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    from lcdata.build.teacher_pass import run_teacher_pass

    store = _p(out, args["store"])
    overwrite = False
    if args.get("copy_of"):
        # a second cache: the first one's crops and GT (identical for the same build), with
        # the next teacher's outputs; an interrupted attempt is simply redone
        if store.exists():
            shutil.rmtree(store)
        shutil.copytree(
            _p(out, args["copy_of"]), store, ignore=shutil.ignore_patterns(f"{LOCK_PREFIX}*")
        )
        overwrite = True
    from lcdata.build.tta import parse_tta

    attrs = run_teacher_pass(
        store,
        _p(out, args["teacher"]),
        tta=parse_tta(args.get("tta") or "off"),
        batch_size=int(cfg.protocol.teacher_batch),
        device="cpu",
        resume=not overwrite,
        overwrite=overwrite,
        progress=False,
    )
    return {"store": args["store"], "complete": bool(attrs.get("complete"))}


def run_correct_step(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    attrs = run_correct(
        _p(out, args["cache"]),
        _p(out, args["out"]),
        mode=args["mode"],
        lam=args["lam"],
        clean=_p(out, args["clean"]) if args.get("clean") else None,
        resume=True,  # continues an interrupted correction; a fresh path is simply created
        progress=False,
        num_workers=int(cfg.threads),
    )
    return {"store": args["out"], "analytics": attrs.get("analytics")}


def evaluate_model(
    cfg: ExperimentConfig, out: Path, model: Path, val: dict[str, Any], *, max_images: int | None
) -> tuple[list[dict], dict[str, dict[str, float]], dict[str, Any]]:
    """Run a model once over the validation images; COCO metrics against every annotation
    file of `val`. Returns (results, metrics per file, protocol)."""
    decode = _decode_config(cfg)
    predictor, info = load_predictor(model, device="cpu", batch_size=8)  # as `trainer evaluate`
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


def run_evaluate(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    max_images = int(cfg.eval.max_images) or None
    results, metrics, protocol = evaluate_model(
        cfg, out, _p(out, args["model"]), args["val"], max_images=max_images
    )
    target = _p(out, args["out"])
    write_json_atomic(target.with_suffix(".results.json"), results)
    write_json_atomic(target.with_suffix(".json"), {"metrics": metrics, "protocol": protocol})
    return {"metrics": metrics, "persons": len(results)}


CURVE_DIR = "curve"
"""A run's learning-curve points, one JSON per kept checkpoint (`curve_points`): once a
point is there its checkpoint is no longer needed, so a parked fit keeps points, not
checkpoints (`experiments.archive.park`)."""


def _step_of(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def curve_points(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> list[dict[str, Any]]:
    """COCO metrics of every kept checkpoint of a run (`args` of its curve step), by step,
    each cached as `RUN/curve/step_NNNNNNN.json` with the settings it was computed under and
    the checkpoint's SHA-256: a checkpoint with a cached point of the same settings and hash
    is not evaluated again (a fit retrained in place is), and a point whose checkpoint is
    gone (a parked fit) still counts. With `clean` and `store`,
    also its losses on the clean probe (`trainer.probe`) of the store it trained on."""
    from lcdata.correction.clean import clean_probe
    from trainer.checkpoint import model_from_checkpoint
    from trainer.probe import probe_losses

    run = _p(out, args["run"])
    max_images = int(cfg.eval.curve_max_images) or int(cfg.eval.max_images) or None
    size = int(cfg.protocol.probe_samples) if args.get("clean") else 0
    key = {
        "val": args["val"], "max_images": max_images, "decode": _decode_config(cfg).to_attrs(),
        "probe_samples": size, "store": args.get("store"), "clean": args.get("clean"),
    }  # fmt: skip
    key = json.loads(json.dumps(key))  # as it reads back (tuples become lists)
    kept = {_step_of(f): f for f in (run / KEPT_DIR).glob("step_*.pt")}
    points: dict[int, dict[str, Any]] = {}
    for path in (run / CURVE_DIR).glob("step_*.json"):
        body, step = read_json(path), _step_of(path)
        if body.get("key") == key and (step not in kept or body.get("sha256") == _sha(kept[step])):
            points[step] = body["point"]
        elif step not in kept:
            raise LcposeError(
                f"{path}: computed with other evaluation settings ({body.get('key')}) and its "
                f"checkpoint is gone; delete the point or run the fit again"
            )
    probe = None
    for step in sorted(set(kept) - set(points)):
        if probe is None and size:
            probe = clean_probe(_p(out, args["store"]), _p(out, args["clean"]), size=size)
        _, metrics, _ = evaluate_model(cfg, out, kept[step], args["val"], max_images=max_images)
        point: dict[str, Any] = {"step": step, "metrics": metrics}
        if probe is not None:
            point["probe"] = probe_losses(model_from_checkpoint(kept[step])[0], probe)
        cached = {"key": key, "sha256": _sha(kept[step]), "point": point}
        write_json_atomic(run / CURVE_DIR / f"step_{step:07d}.json", cached)
        points[step] = point
    return [points[s] for s in sorted(points)]


def cache_curve_points(cfg: ExperimentConfig, out: Path, steps: list[Step]) -> list[str]:
    """Evaluate the kept checkpoints of every unfinished fit that has a learning curve in
    `steps` (`curve_points`), so that parking it need not keep them; returns the fits."""
    import torch

    torch.set_num_threads(int(cfg.threads))
    done = []
    for step in steps:
        if step.kind != "curve" or all(marker_path(out, d).is_file() for d in step.deps):
            continue
        if (_p(out, step.args["run"]) / KEPT_DIR).is_dir():
            curve_points(cfg, out, step.args)
            done.extend(d for d in step.deps if not marker_path(out, d).is_file())
    return done


def run_curve(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """The learning curve of a finished fit (`curve_points`), also written to `args["out"]`."""
    points = curve_points(cfg, out, args)
    write_json_atomic(_p(out, args["out"]), points)
    return {"points": points}


def run_figures(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Fig. 3 analogue: `lcdata show` of the samples where the correction added the most."""
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


def run_coverage(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    result = teacher_coverage(
        _p(out, args["store"]),
        _p(out, args["clean"]),
        max_samples=int(args["max_samples"]),
        threshold=float(args["threshold"]),
    )
    write_json_atomic(_p(out, args["out"]), result)
    return result


def run_score_labels(cfg: ExperimentConfig, out: Path, args: dict[str, Any]) -> dict[str, Any]:
    """Label-quality AP of one store's maps (`lcdata score-labels`)."""
    from lcdata.correction.quality import score_labels

    report = score_labels(
        _p(out, args["store"]),
        _p(out, args["clean"]),
        target=args["target"],
        max_samples=int(args["max_samples"]) or None,
        cfg=_decode_config(cfg),
        progress=False,
    )
    return {k: v for k, v in report.items() if k != "decode"}


KINDS: dict[str, Callable[[ExperimentConfig, Path, dict[str, Any]], dict[str, Any]]] = {
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
    "score_labels": run_score_labels,
}


def execute_step(cfg: ExperimentConfig, out: Path, step: Step) -> dict[str, Any]:
    """Run one step in this process and write its marker; returns the marker body."""
    import torch

    torch.set_num_threads(int(cfg.threads))
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
    replaced = replaced_path(out, step.name)
    if replaced.is_file():  # a training again: its row's results are the first training's
        first = json.loads(replaced.read_text(encoding="utf-8"))
        body["replaced"] = first.get("replaced", first)
    write_json_atomic(marker_path(out, step.name), body)
    replaced.unlink(missing_ok=True)
    return body
