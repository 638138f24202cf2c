"""docs/results.md and its figures, written from the saved runs of `experiments.run`.

    python -m experiments.report [OUT] [--report-dir DIR] [--smoke-run DIR]

Everything here reads the step markers (`OUT/steps/*.json`) and the files they name; nothing
is trained or evaluated. Numbers are COCO keypoint AP x 100 (as in the paper's tables), mean
+- sample standard deviation over seeds. A difference between two methods is computed per
seed (both trained on the same data with the same initialisation) and called a gain or a
loss only when its mean exceeds twice the standard deviation of the per-seed differences
(`CLAIM_SD`); with one seed nothing is claimed.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from experiments.analysis import LEVEL_GAIN, LEVEL_TAIL, levelling, rank_correlation
from experiments.config import RESOLVED, ExperimentConfig, load_resolved, resolve_path
from experiments.plan import datasets
from experiments.protocol import METHODS, Dataset
from experiments.schedule import read_markers
from lcdata.synth.truth import canonical_keys

CLAIM_SD = 2.0
"""A mean paired difference is called a gain/loss only beyond this many standard deviations."""
METRICS = ("AP", "AP50", "AP75", "APm", "APl")
FIG5 = "results_fig5_curves.png"
SWEEP_FIG = "results_sweep.png"
FIG3 = "results_fig3_{}.png"
PROBE_FIG = "results_probe.png"
QUALITY_FIG = "results_quality.png"
PAPER_ROWS = ("baseline", "kd05", "kd1", "lc", "lc_hm", "lc_paf", "kd05_lc", "lc_x2",
              "kd05_lc_x2", "clean")  # fmt: skip
"""Rows of the paper's tables; the others are the corrections beyond the paper (issue 17)."""


# ---------------------------------------------------------------------------------------------
# Reading the runs


@dataclass
class Runs:
    """An experiment folder: its resolved config and every finished step's marker."""

    out: Path
    cfg: ExperimentConfig
    markers: dict[str, dict[str, Any]]

    @property
    def primary(self) -> str:
        """The annotation file models are ranked on: the clean truth, or COCO's val labels."""
        return "clean" if self.cfg.data.source == "synth" else "val"

    def file(self, relative: str) -> Path | None:
        """A run's file: in OUT, else among the committed summaries (`results_dir`)."""
        for root in (self.out, *([resolve_path(self.cfg.results_dir)] if self.cfg.results_dir
                                 else [])):  # fmt: skip
            if (root / relative).is_file():
                return root / relative
        return None

    def outputs(self, name: str) -> dict[str, Any] | None:
        body = self.markers.get(name)
        return None if body is None else body["outputs"]

    def metric(
        self, ds: str, method: str, key: str = "AP", labels: str | None = None
    ) -> float | None:
        """COCO metric x 100 of one model, None when not evaluated (or undefined, -1)."""
        body = self.outputs(f"{ds}/eval/{method}")
        if body is None:
            return None
        value = body["metrics"].get(labels or self.primary, {}).get(key)
        return None if value is None or value < 0 else 100.0 * value


def load_runs(out: Path) -> Runs:
    """The markers of OUT, and of the config's `results_dir` (committed summaries of
    archived groups, `experiments.archive`) where OUT has none: a clean clone writes the
    report of the runs that finished on other machines."""
    cfg = load_resolved(out)
    folders = [out] + ([resolve_path(cfg.results_dir)] if cfg.results_dir else [])
    return Runs(out=out, cfg=cfg, markers=read_markers(folders))


def main_datasets(runs: Runs) -> list[Dataset]:
    return [d for d in datasets(runs.cfg) if d.main]


def sweep_datasets(runs: Runs) -> list[tuple[str, float | None, list[Dataset]]]:
    """The sweep's levels as (label, p = q or None for 'all failures off', data sets on the
    sweep's seeds): all failures off first, then every level in rising order, the main level
    included (its data sets are the main ones of those seeds)."""
    sweep = runs.cfg.sweep
    if not sweep.levels and not sweep.all_off:
        return []
    seeds = set(sweep.seeds)
    off = [d for d in datasets(runs.cfg) if d.name.startswith("none_") and d.seed in seeds]
    out: list[tuple[str, float | None, list[Dataset]]] = (
        [("all failures off", None, off)] if off else []
    )
    for level, sets in sorted(levels(runs).items()):  # 'all failures off' has no level
        if picked := [d for d in sets if d.seed in seeds]:
            out.append((f"{level:.2f}", level, picked))
    return out


# ---------------------------------------------------------------------------------------------
# Statistics and formatting


@dataclass(frozen=True)
class Stat:
    """Values over seeds: mean, sample std (0 for one value), count."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    @property
    def sd(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    def fmt(self, digits: int = 1, *, sign: bool = False) -> str:
        if not self.values:
            return "n/a"
        mean = f"{self.mean:+.{digits}f}" if sign else f"{self.mean:.{digits}f}"
        return mean if self.n == 1 else f"{mean} ± {self.sd:.{digits}f}"


def stat(values: list[float | None]) -> Stat:
    return Stat(tuple(v for v in values if v is not None))


def method_stat(runs: Runs, method: str, key: str = "AP", labels: str | None = None) -> Stat:
    return stat([runs.metric(d.name, method, key, labels) for d in main_datasets(runs)])


def paired(runs: Runs, method: str, other: str, key: str = "AP", labels: str | None = None) -> Stat:
    """Per-seed differences method - other on the main data sets (where both were evaluated)."""
    return paired_over(runs, main_datasets(runs), method, other, key, labels)


def paired_over(
    runs: Runs,
    sets: list[Dataset],
    method: str,
    other: str,
    key: str = "AP",
    labels: str | None = None,
) -> Stat:
    """Per-seed differences method - other over the data sets `sets` (one level, its seeds),
    where both were evaluated."""
    return differences(
        (runs.metric(d.name, method, key, labels), runs.metric(d.name, other, key, labels))
        for d in sets
    )


def differences(pairs: Iterable[tuple[float | None, float | None]]) -> Stat:
    """The differences a - b of the (a, b) pairs (one per seed) where both are measured."""
    return Stat(tuple(a - b for a, b in pairs if a is not None and b is not None))


def levels(runs: Runs) -> dict[float, list[Dataset]]:
    """Data sets by p = q (the main level first, then the sweep's), all their seeds."""
    out: dict[float, list[Dataset]] = {}
    for d in datasets(runs.cfg):
        if d.level is not None:
            out.setdefault(d.level, []).append(d)
    return out


def verdict(diff: Stat) -> str:
    """'gain', 'loss', 'no clear difference' (2-sd rule) or 'single seed'."""
    if diff.n == 0:
        return "not measured"
    if diff.n == 1:
        return "single seed, no claim"
    if diff.mean > CLAIM_SD * diff.sd:
        return "gain"
    if diff.mean < -CLAIM_SD * diff.sd:
        return "loss"
    return "no clear difference"


def pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f}%"


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


# ---------------------------------------------------------------------------------------------
# Sections


def _amp_name(amp: str) -> str:
    """A `train.amp` value as the report names it ('off' trains in fp32)."""
    return "fp32" if amp == "off" else amp


def _precision(history: list[dict[str, Any]] | None, default: str) -> str:
    """'bf16', 'fp32', or 'bf16 to step 3000, then fp32' from a fit's amp_history."""
    if not history:
        history = [{"from_step": 0, "amp": default}]
    parts = [_amp_name(h["amp"]) for h in history]
    if len(set(parts)) == 1:
        return parts[0]
    return ", then ".join(
        f"{p} to step {history[i + 1]['from_step']:,}" if i + 1 < len(history) else p
        for i, p in enumerate(parts)
    )


def row_training(runs: Runs, name: str) -> dict[str, Any] | None:
    """The marker of the training that a row's evaluation scored (`name`: a fit step). A
    training that ran again after its row was evaluated (its weights were lost and a later
    row needed them: the x2 rows' teacher) keeps the first one's marker as `replaced`."""
    body = runs.markers.get(name)
    if body is None or "replaced" not in body:
        return body
    evaluated = runs.markers.get(name.replace("/fit/", "/eval/"))
    if evaluated is not None and evaluated["finished"] < body["finished"]:
        return body["replaced"]
    return body


def fit_precisions(runs: Runs) -> dict[str, list[str]]:
    """The trainings by precision: {'bf16': ['p0.10_q0.10_s0 baseline', ...], ...}; a
    training that ran again as the x2 rows' teacher is listed twice, the second time as
    'again'. A fit whose marker predates `amp_history` ran in the config's `train.amp`."""
    default = str(runs.cfg.train.get("amp", "off"))
    out: dict[str, list[str]] = {}
    for name, body in sorted(runs.markers.items()):
        if body.get("kind") != "fit":
            continue
        group, _, method = name.split("/")
        row = row_training(runs, name)
        for training, tag in ((row, ""), (body, " again")) if row is not body else ((body, ""),):
            mode = _precision(training["outputs"].get("amp_history"), default)
            out.setdefault(mode, []).append(f"{group} {method}{tag}")
    return out


def teacher_check_text(runs: Runs) -> str:
    """The x2 rows' teacher (`eval/<first>_teacher`, its exported model) against its own
    row, seed by seed: the same training where its weights were kept (a check of the
    export), a training again in another precision where they were lost."""
    default = str(runs.cfg.train.get("amp", "off"))
    parts = []
    # the plan evaluates `eval/<first>_teacher` for each iterated row's teacher (plan.py)
    teachers = dict.fromkeys(METHODS[m].teacher for m in runs.cfg.protocol.iterate)
    for d in main_datasets(runs):
        for method in teachers:
            again, first = runs.metric(d.name, f"{method}_teacher"), runs.metric(d.name, method)
            body = runs.markers.get(f"{d.name}/fit/{method}")
            row = row_training(runs, f"{d.name}/fit/{method}")
            if again is None or first is None or body is None or row is None:
                continue
            label = METHODS[method].label if method in METHODS else method
            if row is body:
                parts.append(f"seed {d.seed}, {label} exported as the x2 teacher: {again:.1f} "
                             f"against {first:.1f}, the same training")  # fmt: skip
                continue
            now = _precision(body["outputs"].get("amp_history"), default)
            was = _precision(row["outputs"].get("amp_history"), default)
            parts.append(f"seed {d.seed}, {label} trained again in {now} as the x2 teacher "
                         f"(its weights were lost): {again:.1f} against {first:.1f} ({was}), "
                         f"{again - first:+.1f}")  # fmt: skip
    return ("The x2 rows' teacher evaluated: " + "; ".join(parts) + ".") if parts else ""


def precision_check_text(runs: Runs) -> str:
    """What retraining the Baseline in another precision changed (`protocol.precision_check`),
    seed by seed, or what is not measured yet."""
    mode = runs.cfg.protocol.precision_check
    if not mode:
        return "Not measured (`protocol.precision_check`)."
    name = _amp_name(mode)
    default = str(runs.cfg.train.get("amp", "off"))
    parts = []
    for d in main_datasets(runs):
        again, first = runs.metric(d.name, "baseline_amp"), runs.metric(d.name, "baseline")
        body = runs.markers.get(f"{d.name}/fit/baseline")
        if again is None or first is None or body is None:
            continue
        was = _precision(body["outputs"].get("amp_history"), default)
        parts.append(f"seed {d.seed}: {again:.1f} in {name} against {first:.1f} ({was}), "
                     f"{again - first:+.1f}")  # fmt: skip
    if not parts:
        return f"The Baseline trained again in {name} (the precision check) has not finished yet."
    spread = method_stat(runs, "baseline")
    return (
        f"The Baseline trained again in {name}, same seed and batches: " + "; ".join(parts)
        + (f" (the Baselines' seed spread: {spread.sd:.1f} std)." if spread.n > 1 else ".")
    )  # fmt: skip


def setup_section(runs: Runs) -> list[str]:
    cfg = runs.cfg
    data, render, train = cfg.data, cfg.store.render, cfg.train
    mains = main_datasets(runs)
    lines = ["## Setup", ""]
    if data.source == "synth":
        removed = []
        for d in mains:
            body = runs.outputs(f"{d.name}/data")
            if body:
                split = body["corruption"]["splits"]["train"]
                removed.append(1 - split["noisy_keypoints"] / max(split["keypoints"], 1))
        lines.append(
            f"- **Data** (`lcdata synth`, one data set per seed, seeds {list(cfg.seeds)}): "
            f"{data.train_images} training and {data.val_images} validation images of "
            f"{data.synth.get('image_size', 128)} px; missed visible keypoints p = "
            f"{data.missed_visible}, unannotated "
            f"persons q = {data.unannotated}, out-of-image and severely occluded keypoints "
            f"unlabelled (COCO's habits). The noisy training labels lack "
            f"{pct(float(np.mean(removed))) if removed else 'n/a'} of the true keypoints."
        )
    else:
        lines.append(
            f"- **Data**: {data.train_annotations} -> {data.val_annotations}, "
            f"seeds {list(cfg.seeds)}."
        )
    samples = [runs.outputs(f"{d.name}/gt_store") for d in mains]
    n_samples = [s["num_samples"] for s in samples if s]
    lines.append(
        f"- **Stores**: {render.input_size} px crops, stride {render.stride}, sigma "
        f"{render.sigma} px, PAF half-width {render.paf_half_width} cell, "
        f"{cfg.store.views_per_image} augmented view(s) per image"
        + (f" ({min(n_samples)}-{max(n_samples)} samples)" if n_samples else "")
        + "."
    )
    params = None
    for d in mains:
        body = runs.outputs(f"{d.name}/export/baseline")
        if body:
            params = body["num_params"]
            break
    kwargs = train.get("model_kwargs") or {}
    augment = str(train.get("augment", "off"))
    lines.append(
        f"- **Model and training**, identical for every model: `{train.get('model')}`"
        + (f" {kwargs}" if kwargs else "")
        + (f" ({params:,} parameters)" if params else "")
        + f", {cfg.train_steps} steps of batch {train.get('batch_size')}"
        + (
            f" (about {cfg.train_steps * int(train.get('batch_size', 1)) / np.mean(n_samples):.0f}"
            f" passes over the stored samples)"
            if n_samples
            else ""
        )
        + (
            f", a fresh jitter of every sample at every step (`--augment {augment}`, "
            f"docs/augmentation.md)"
            if augment != "off"
            else ", the stored views as they are (no `--augment`)"
        )
        + ", Adam lr "
        f"{train.get('lr')} then x{train.get('lr_decay')} after "
        f"{float(train.get('lr_decay_at', 0.5)):.0%} of the steps. The teacher is the "
        f"Baseline model (as in the paper); each student starts from the same initialisation "
        f"(the seed) and sees the same batches, only the targets differ."
    )
    decode = None
    for d in mains:
        body = runs.outputs(f"{d.name}/oracle")
        if body:
            decode = body["decode"]
            break
    if decode:
        text = ", ".join(f"{k}={v}" for k, v in decode.items())
        lines.append(
            f"- **Decoding**, fixed once for every evaluation of this experiment "
            f"(`lcdata.labels.decode.DecodeConfig`): {text}. Single scale, no flip."
        )
    by_precision = fit_precisions(runs)
    if len(by_precision) > 1:
        parts = [f"{mode} for {', '.join(names)}" for mode, names in by_precision.items()]
        lines.append(
            "- **Precision** differs between trainings (they ran on machines with and without "
            "bf16 units): " + "; ".join(parts) + ". At 200 steps bf16 ended within 0.2% of "
            "fp32's loss (docs/training.md); a paired difference between rows of different "
            "precision includes that effect. "
            + precision_check_text(runs)
            + (f" {text}" if (text := teacher_check_text(runs)) else "")
        )
    elif by_precision:
        lines.append(f"- **Precision**: every training in {next(iter(by_precision))}.")
    fits = [b for n, b in runs.markers.items() if b["kind"] == "fit"]
    again = [b["replaced"] for b in fits if "replaced" in b]  # trainings run twice: both
    fits += again
    step_s = [b["outputs"]["step_s"] for b in fits if b["outputs"].get("step_s")]
    total = sum(b["seconds"] for b in [*runs.markers.values(), *again])
    lines.append(
        f"- **Compute**: {len(runs.markers)} steps, {len(fits)} trainings, {total / 3600:.2f} h "
        f"of step time in all (summed over parallel processes)"
        + (f"; {np.mean(step_s):.2f} s per training step on average" if step_s else "")
        + f"; {cfg.parallel} process(es) at a time, {cfg.threads} thread(s) each."
    )
    return lines + [""]


def oracle_section(runs: Runs) -> list[str]:
    mains = main_datasets(runs)
    rows = []
    labels_sets = ["clean", "noisy"] if runs.primary == "clean" else ["val"]
    for labels in labels_sets:
        cells = []
        for scored in labels_sets:
            for key in ("AP", "AP50"):
                values = []
                for d in mains:
                    body = runs.outputs(f"{d.name}/oracle")
                    if body and labels in body["oracle"]:
                        values.append(100 * body["oracle"][labels][scored][key])
                cells.append(stat(values).fmt())
        name = {"clean": "clean labels", "noisy": "corrupted labels", "val": "val labels"}[labels]
        rows.append([name, *cells])
    header = ["maps rendered from"]
    for scored in labels_sets:
        header += [f"AP ({scored} val)", f"AP50 ({scored} val)"]
    return [
        "### Oracle AP of the validation labels",
        "",
        "Ground-truth maps rendered at the training geometry from each validation annotation "
        "file and decoded with the experiment's decoder (`trainer evaluate --oracle`), scored "
        "against each file: the ceiling of label representation plus decoder, and how much "
        "the defects alone cost.",
        "",
        *table(header, rows),
        "",
    ]


BUCKET_LABELS = {
    "labelled": "labelled (reference)",
    "out_of_image": "1 out of image",
    "severely_occluded": "2 severely occluded",
    "missed_visible": "3 missed visible",
    "unannotated": "4 unannotated person",
    "mixed": "mixed",
    "all_missing": "all missing",
}


def _analytics_truth(runs: Runs, ds: str, method: str) -> dict[str, Any] | None:
    body = runs.outputs(f"{ds}/target/{method}")
    if not body or not body.get("analytics"):
        return None
    truth = body["analytics"].get("truth")
    if not truth:
        return None
    # older runs spell failure 2 "occluded"
    return {
        kind: {k: canonical_keys(v) if isinstance(v, dict) else v for k, v in t.items()}
        if isinstance(t, dict) and kind in ("heatmaps", "pafs")
        else t
        for kind, t in truth.items()
    }


def _coverage(runs: Runs, ds: str) -> dict[str, Any] | None:
    body = runs.outputs(f"{ds}/coverage")
    if not body:
        return None
    return {k: canonical_keys(v) if k in ("keypoints", "paf_cells") else v for k, v in body.items()}


def coverage_section(runs: Runs) -> list[str]:
    mains = [d for d in main_datasets(runs) if runs.outputs(f"{d.name}/coverage")]
    if not mains:
        return []
    covs = [_coverage(runs, d.name) for d in mains]
    truths = [_analytics_truth(runs, d.name, "lc") for d in mains]
    truths = [t for t in truths if t]
    rows = []
    for bucket, label in BUCKET_LABELS.items():
        kp = [c["keypoints"][bucket] for c in covs]
        pc = [c["paf_cells"][bucket] for c in covs]
        n_kp, n_pc = sum(k["n"] for k in kp), sum(p["n"] for p in pc)
        cells = [
            label,
            str(n_kp),
            pct(_ratio(sum(k["teacher"] for k in kp), n_kp)),
            pct(_ratio(sum(k["gt"] for k in kp), n_kp)),
            str(n_pc),
            pct(_ratio(sum(p["teacher"] for p in pc), n_pc)),
        ]
        key = "total" if bucket == "all_missing" else bucket
        for kind in ("heatmaps", "pafs"):
            if bucket == "labelled" or not truths:
                cells.append("")
                continue
            missing = sum(t[kind]["missing"][key] for t in truths)
            recovered = sum(t[kind]["recovered"][key] for t in truths)
            cells.append(pct(_ratio(recovered, missing)))
        rows.append(cells)
    threshold = covs[0]["threshold"]
    samples = sum(c["samples"] for c in covs)
    return [
        "### How much of the missing truth the teacher covers",
        "",
        f"Over {samples} stored training crops ({len(covs)} seed(s)), supervised cells only. "
        f"*Keypoints*: true parts in the crop, by why the labels lack them; covered when the "
        f"teacher's heatmap of that part exceeds {threshold} within one cell (the GT column: "
        f"the same test on the GT maps, which reach a dropped part only through a neighbour's "
        f"Gaussian). *PAF cells*: cells of a true limb where the GT field is zero; covered "
        f"when the teacher's vector along the true limb exceeds {threshold}. *Mass recovered*: "
        f"`lcdata correct --mode max --clean` analytics, the share of the missing heatmap / "
        f"PAF mass that the LC targets put back (summed over seeds).",
        "",
        *table(
            [
                "truth",
                "keypoints",
                f"teacher > {threshold}",
                f"GT > {threshold}",
                "PAF cells",
                f"teacher > {threshold}",
                "heatmap mass recovered",
                "PAF mass recovered",
            ],
            rows,
        ),
        "",
    ]


def _table1_rows(runs: Runs, methods: list[str], *, paper_small: bool = True) -> list[list[str]]:
    rows = []
    labels_noisy = "noisy" if runs.primary == "clean" else None
    for method in methods:
        m = METHODS[method]
        s = method_stat(runs, method)
        if s.n == 0:
            continue
        cells = [m.label, str(s.n)] + [method_stat(runs, method, key).fmt() for key in METRICS]
        if labels_noisy:
            cells.append(method_stat(runs, method, "AP", labels_noisy).fmt())
        if method == "baseline":
            cells += ["", ""]
        else:
            diff = paired(runs, method, "baseline")
            cells += [diff.fmt(sign=True), verdict(diff)]
        cells.append(f"{m.paper_cmu['AP']:.1f}" if m.paper_cmu else "")
        if paper_small:
            cells.append(f"{m.paper_small['AP']:.1f}" if m.paper_small else "")
        rows.append(cells)
    return rows


def table1_section(runs: Runs) -> list[str]:
    methods = ["baseline", "kd05", "kd1", "lc", "lc_x2", "kd05_lc", "kd05_lc_x2", "clean"]
    header = ["method", "seeds", *METRICS]
    if runs.primary == "clean":
        header.append("AP (noisy val)")
    header += ["ΔAP vs Baseline", "verdict", "paper CMU-Pose AP", "paper small NN AP"]
    n = method_stat(runs, "baseline").n  # seeds evaluated so far
    synth = runs.primary == "clean"
    return [
        "## Table 1 analogue: AP on the "
        + ("clean validation labels" if synth else "validation labels"),
        "",
        f"COCO keypoint metrics x 100, mean ± std over the seeds of each row ({n} for the "
        f"Baseline). ΔAP: per-seed difference "
        f"to the Baseline of the same seed, mean ± std; verdict by the {CLAIM_SD:g}-std rule "
        f"(a gain only when the mean difference exceeds {CLAIM_SD:g} standard deviations of "
        f"the per-seed differences). "
        + (
            "APl is n/a: no synthetic person reaches COCO's large area (96² px) in 128 px images. "
            if synth
            else ""
        )
        + "The paper's columns are its Table 1 (COCO val, CMU-Pose "
        "52.3M and small NN 5.2M parameters); they are there for the ordering, not the level. "
        "×2 rows: the LC student is the next teacher of both (a second teacher pass into a "
        "copy of the cache store).",
        "",
        *table(header, _table1_rows(runs, methods)),
        "",
    ]


def table2_section(runs: Runs) -> list[str]:
    methods = ["baseline", "lc_hm", "lc_paf", "lc"]
    if not any(method_stat(runs, m).n for m in methods[1:3]):
        return []
    header = ["method", "seeds", *METRICS]
    if runs.primary == "clean":
        header.append("AP (noisy val)")
    header += ["ΔAP vs Baseline", "verdict", "paper CMU-Pose AP"]
    rows = _table1_rows(runs, methods, paper_small=False)
    for row in rows:
        if row[0] == METHODS["lc"].label:
            row[0] = "LC (both)"
    return [
        "## Table 2 analogue: which maps to correct",
        "",
        *table(header, rows),
        "",
    ]


def analytics_section(runs: Runs) -> list[str]:
    methods = [m for m in METHODS if m not in ("baseline", "clean", "baseline_amp")]
    rows = []
    for method in methods:
        found = []
        for d in main_datasets(runs):
            body = runs.outputs(f"{d.name}/target/{method}")
            if body and body.get("analytics"):
                found.append(body["analytics"])
        if not found:
            continue
        heat_added = stat([a["heatmaps"]["added_fraction"] for a in found])
        changed = stat(
            [a["pafs"]["changed_total"] / max(a["supervised_cells"] * len(a["pafs"]["limbs"]), 1)
             for a in found]
        )  # fmt: skip
        cells = [METHODS[method].label, _pct_stat(heat_added), _pct_stat(changed)]
        truths = [a.get("truth") for a in found if a.get("truth")]
        for kind in ("heatmaps", "pafs"):
            if truths:
                cells.append(
                    _pct_stat(stat([t[kind]["recovered_fraction"]["total"] for t in truths]))
                )
                cells.append(_pct_stat(stat([t[kind]["false_fraction"] for t in truths])))
            else:
                cells += ["n/a", "n/a"]
        rows.append(cells)
    if not rows:
        return []
    return [
        "### What each target store changed (training crops, supervised cells)",
        "",
        "`lcdata correct` analytics, mean ± std over seeds: heatmap mass the targets add "
        "(share of the GT mass), PAF limb cells that differ from GT, and against the clean "
        "truth the share of the missing heatmap / PAF mass recovered and the mass added where "
        "the truth has none (false additions, share of the truth mass). KD blends also "
        "*remove* GT mass (λ x GT where the teacher is low), which this table does not show.",
        "",
        *table(
            [
                "targets",
                "heatmap mass added",
                "PAF cells changed",
                "missing heatmap mass recovered",
                "heatmap false additions",
                "missing PAF mass recovered",
                "PAF false additions",
            ],
            rows,
        ),
        "",
    ]


def _pct_stat(s: Stat) -> str:
    if s.n == 0:
        return "n/a"
    scaled = Stat(tuple(100 * v for v in s.values))
    return scaled.fmt() + "%"


def sweep_rows(runs: Runs) -> list[dict[str, Any]]:
    """One row per sweep level (`sweep_datasets`): Stats over its seeds of the training
    labels' missing share, the oracle AP of the corrupted val (x 100), the teacher's coverage
    of the dropped keypoints, the LC heatmap mass recovered (fractions), the Baseline and LC
    AP (x 100), and LC's gain in AP and AP50 paired per seed."""
    rows = []
    for label, level, sets in sweep_datasets(runs):
        missing, oracle, coverage, recovered = [], [], [], []
        for d in sets:
            corruption = runs.outputs(f"{d.name}/data")
            if corruption:
                split = corruption["corruption"]["splits"]["train"]
                missing.append(1 - split["noisy_keypoints"] / max(split["keypoints"], 1))
            body = runs.outputs(f"{d.name}/oracle")
            if body and "noisy" in body["oracle"]:
                oracle.append(100 * body["oracle"]["noisy"]["clean"]["AP"])
            if cov := runs.outputs(f"{d.name}/coverage"):
                kp = cov["keypoints"]["all_missing"]
                coverage.append(_ratio(kp["teacher"], kp["n"]))
            if truth := _analytics_truth(runs, d.name, "lc"):
                recovered.append(truth["heatmaps"]["recovered_fraction"]["total"])
        rows.append(
            {
                "label": label,
                "level": level,
                "all_off": level is None,
                "seeds": [d.seed for d in sets],
                "missing": stat(missing),
                "oracle_noisy": stat(oracle),
                "coverage": stat(coverage),
                "recovered": stat(recovered),
                "baseline": stat([runs.metric(d.name, "baseline") for d in sets]),
                "lc": stat([runs.metric(d.name, "lc") for d in sets]),
                "gain": paired_over(runs, sets, "lc", "baseline"),
                "gain50": paired_over(runs, sets, "lc", "baseline", "AP50"),
            }
        )
    return rows


def _num(value: float | None, digits: int = 1, *, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def sweep_section(runs: Runs, report_dir: Path) -> list[str]:
    rows = sweep_rows(runs)
    if not rows:
        return []
    body = []
    for r in rows:
        gain = r["gain"].fmt(sign=True)
        if r["gain"].n > 1:
            gain += f" ({verdict(r['gain'])})"
        body.append(
            [
                r["label"],
                ", ".join(map(str, r["seeds"])),
                _pct_stat(r["missing"]),
                r["oracle_noisy"].fmt(),
                _pct_stat(r["coverage"]),
                _pct_stat(r["recovered"]),
                r["baseline"].fmt(),
                r["lc"].fmt(),
                gain,
                r["gain50"].fmt(sign=True),
            ]
        )
    seeds = runs.cfg.sweep.seeds
    spread = (
        "One seed per level: read the trend, not single differences (the seed spread of the "
        "main table is the yardstick)."
        if len(seeds) == 1
        else f"Mean ± std over the seeds; LC's gain paired per seed, with the {CLAIM_SD:g}-std "
        "verdict."
    )
    _sweep_figure(rows, report_dir / SWEEP_FIG)
    return [
        "## Defect sweep: LC gain as the labels get worse",
        "",
        f"Seed(s) {', '.join(map(str, seeds))}, one data set per level and seed (the images "
        f"are the same at every level: the scene and the failures draw from separate "
        f"generators), a teacher (= Baseline) and an LC student on each, everything else as "
        f"above. p = q is the rate of missed visible keypoints and of unannotated persons; "
        f"out-of-image and severely occluded keypoints stay unlabelled at every level. " + spread,
        "",
        *table(
            [
                "p = q",
                "seeds",
                "train keypoints missing",
                "oracle AP of corrupted val",
                "teacher covers dropped keypoints",
                "heatmap mass recovered",
                "Baseline AP",
                "LC AP",
                "LC gain",
                "LC gain AP50",
            ],
            body,
        ),
        "",
        f"![AP against the defect rate]({SWEEP_FIG})",
        "",
    ]


def _axes(figsize: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib figure (Agg, no display) and its one axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Any, ax: Any, path: Path, *, xlabel: str, ylabel: str, legend: int = 10) -> None:
    """Label, grid and legend (font size `legend`) the axes, then write the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def _sweep_figure(rows: list[dict[str, Any]], path: Path) -> None:
    """Baseline and LC AP against p = q: the mean over seeds, the std as error bars."""
    pts = [r for r in rows if not r["all_off"]]
    fig, ax = _axes((5, 3.4))
    for key, label, style in (("baseline", "Baseline", "o-"), ("lc", "LC", "s-")):
        have = [r for r in pts if r[key].n]
        ax.errorbar(
            [r["level"] for r in have],
            [r[key].mean for r in have],
            yerr=[r[key].sd for r in have],
            fmt=style,
            capsize=3,
            label=label,
        )
    _save(fig, ax, path, xlabel="p = q (missed visible, unannotated)",
          ylabel="AP x 100 (clean val)")  # fmt: skip


def curves_section(runs: Runs, report_dir: Path) -> list[str]:
    series: dict[str, dict[int, list[float]]] = {}
    for method in runs.cfg.protocol.curves:
        for points in _curve_points(runs, method):
            for point in points:
                value = point["metrics"][runs.primary]["AP"]
                series.setdefault(method, {}).setdefault(point["step"], []).append(100 * value)
    if not series:
        return []
    fig, ax = _axes((5.5, 3.6))
    rows = []
    steps_all = sorted({s for pts in series.values() for s in pts})
    for method, pts in series.items():
        steps = sorted(pts)
        means = [float(np.mean(pts[s])) for s in steps]
        sds = [float(np.std(pts[s], ddof=1)) if len(pts[s]) > 1 else 0.0 for s in steps]
        ax.errorbar(steps, means, yerr=sds, marker="o", capsize=3, label=METHODS[method].label)
        rows.append(
            [METHODS[method].label] + [Stat(tuple(pts.get(s, []))).fmt() for s in steps_all]
        )
    _save(fig, ax, report_dir / FIG5, xlabel="training step", ylabel="AP x 100 (clean val)")
    return [
        "## Fig. 5 analogue: validation AP during training",
        "",
        "AP of the checkpoints every `checkpoint_every` steps (kept by the experiment runner), "
        "mean ± std over seeds; the learning rate drops at "
        f"{float(runs.cfg.train.get('lr_decay_at', 0.5)):.0%} of the steps.",
        "",
        *table(["method", *[f"step {s}" for s in steps_all]], rows),
        "",
        f"![validation AP against training steps]({FIG5})",
        "",
        *levelling_lines(runs),
        *probe_section(runs, report_dir),
    ]


def _curve_points(runs: Runs, method: str) -> list[list[dict[str, Any]]]:
    """The learning-curve points of `method` on each main data set that has them."""
    found = []
    for d in main_datasets(runs):
        body = runs.outputs(f"{d.name}/curve/{method}")
        if body and body["points"]:
            found.append(body["points"])
    return found


def levelling_lines(runs: Runs) -> list[str]:
    """The levelling-off check (`experiments.analysis.levelling`) of every curve."""
    out = []
    for method in runs.cfg.protocol.curves:
        curves = [
            {p["step"]: 100 * p["metrics"][runs.primary]["AP"] for p in points}
            for points in _curve_points(runs, method)
        ]
        check = levelling(curves)
        if check is None:
            continue
        out.append(
            f"- {METHODS[method].label}: {check.gain:+.1f} AP from step {check.start} to "
            f"{check.end} (mean of {check.seeds} seed(s)): "
            + ("levelled off." if check.levelled else "**still rising**.")
        )
    if not out:
        return []
    return [
        f"Levelling off (the long schedule's definition, docs/augmentation.md): less than "
        f"{LEVEL_GAIN:g} AP gained over the last {LEVEL_TAIL:.0%} of the steps, on the mean "
        f"curve of the seeds.",
        "",
        *out,
        "",
    ]


PROBE_FLAT = 0.01
"""A clean probe loss within this fraction of its lowest value at the end is called flat."""


def _probe_trend(lowest: float, end: float, *, at_end: bool) -> str:
    """How the clean probe loss ended against its lowest point, in words."""
    if at_end:
        return "(still falling)."
    rise = end - lowest
    if rise <= PROBE_FLAT * lowest:
        return (f"({rise:+.1f} since, within {PROBE_FLAT:.0%}: flat, no sign of fitting the "
                "defects).")  # fmt: skip
    return f"(+{rise:.0f} since: it fits what the clean truth does not say)."


def probe_section(runs: Runs, report_dir: Path) -> list[str]:
    """Each curve's losses on the clean probe (`trainer.probe`), mean over seeds, by step."""
    series: dict[str, dict[str, dict[int, list[float]]]] = {}
    for method in runs.cfg.protocol.curves:
        for points in _curve_points(runs, method):
            for point in points:
                if "probe" not in point:
                    continue
                for key, value in point["probe"].items():
                    slot = series.setdefault(method, {}).setdefault(key, {})
                    slot.setdefault(point["step"], []).append(value)
    if not series:
        return []
    fig, ax = _axes((5.5, 3.6))
    steps_all = sorted({s for m in series.values() for s in m.get("loss_clean", {})})
    rows, notes = [], []
    for k, (method, losses) in enumerate(series.items()):
        colour = f"C{k}"
        clean = losses.get("loss_clean", {})
        for key, style in (("loss_clean", "-"), ("loss_train", "--")):
            pts = losses.get(key, {})
            xs = sorted(pts)
            ax.plot(xs, [np.mean(pts[x]) for x in xs], style, color=colour,
                    label=METHODS[method].label if key == "loss_clean" else None)  # fmt: skip
        rows.append(
            [METHODS[method].label, "clean"]
            + [Stat(tuple(clean.get(s, []))).fmt(0) for s in steps_all]
        )
        train = losses.get("loss_train", {})
        rows.append(["", "own targets"] + [Stat(tuple(train.get(s, []))).fmt(0) for s in steps_all])
        means = {s: float(np.mean(v)) for s, v in clean.items()}
        if means:
            best = min(means, key=means.get)
            last = max(means)
            seeds = min(len(v) for v in clean.values())
            notes.append(
                f"- {METHODS[method].label} ({seeds} seed(s)): lowest clean loss at step {best} "
                f"({means[best]:.0f}); at the end {means[last]:.0f} "
                + _probe_trend(means[best], means[last], at_end=last == best)
            )
    _save(fig, ax, report_dir / PROBE_FIG, xlabel="training step",
          ylabel="probe loss (solid: clean truth, dashed: own targets)", legend=8)  # fmt: skip
    size = runs.cfg.protocol.probe_samples
    return [
        "### Loss against the clean truth during training",
        "",
        f"Every checkpoint's loss (eq. 4, per sample, `trainer.probe`) on a fixed probe of "
        f"{size} training samples, unaugmented: against the targets it trained on and against "
        f"the clean truth rendered into the same crops through `meta/affine`; mean ± std over "
        f"seeds. A student that keeps lowering the first while the second rises is fitting "
        f"the label defects.",
        "",
        *table(["method", "targets", *[f"step {s}" for s in steps_all]], rows),
        "",
        *notes,
        "",
        f"![probe losses against training steps]({PROBE_FIG})",
        "",
    ]


def new_methods(runs: Runs) -> list[str]:
    """The corrections beyond the paper that this config trains (main rows, then the sweep's)."""
    both = (*runs.cfg.protocol.methods, *runs.cfg.sweep.methods)
    return [m for m in dict.fromkeys(both) if m not in PAPER_ROWS]


def _quality(runs: Runs, ds: str, name: str) -> float | None:
    """Label-quality AP x 100 of one store (`score_labels` step), None when not scored."""
    body = runs.outputs(f"{ds}/quality/{name}")
    if body is None:
        return None
    value = body["metrics"].get("AP")
    return None if value is None or value < 0 else 100.0 * value


def _trained(runs: Runs, d: Dataset) -> list[str]:
    """The rows trained on a data set: the teacher, the students, the clean bound."""
    return ["baseline", *d.methods, *d.iterate, *(["clean"] if d.clean_bound else [])]


def corrections_section(runs: Runs) -> list[str]:
    """LC and the corrections beyond the paper at every level, against Baseline and LC."""
    new = new_methods(runs)
    if not new:
        return []
    rows = []
    for level, sets in levels(runs).items():
        for method in ("baseline", "lc", *new):
            ap = stat([runs.metric(d.name, method) for d in sets])
            if ap.n == 0:
                continue
            cells = [f"{level:.2f}", METHODS[method].label, str(ap.n), ap.fmt()]
            for other in ("baseline", "lc"):
                if method in ("baseline", other) or (method == "lc" and other == "lc"):
                    cells.append("")
                    continue
                diff = paired_over(runs, sets, method, other)
                cells.append(f"{diff.fmt(sign=True)} ({verdict(diff)})" if diff.n else "n/a")
            # over the seeds whose student finished, as the AP beside it (a store is scored
            # as soon as it exists, its student hours later)
            trained = [d for d in sets if runs.metric(d.name, method) is not None]
            cells.append(stat([_quality(runs, d.name, method) for d in trained]).fmt())
            rows.append(cells)
    if not rows:
        return []
    return [
        "## The corrections beyond the paper",
        "",
        "Students of the corrections of docs/correction.md beside LC and the Baseline, at each "
        "defect level (p = q; 0.00: only out-of-image and severely occluded points unlabelled, "
        "as in COCO). AP on the clean validation labels, mean ± std over seeds; differences "
        f"per seed with the {CLAIM_SD:g}-std verdict; label-quality AP: `lcdata score-labels` "
        "of the store the row trained on (no training).",
        "",
        *table(
            ["p = q", "method", "seeds", "AP", "ΔAP vs Baseline", "ΔAP vs LC", "label-quality AP"],
            rows,
        ),  # fmt: skip
        "",
    ]


def quality_pairs(runs: Runs) -> list[dict[str, Any]]:
    """(label-quality AP, student AP) of every trained store that has both."""
    pairs = []
    for d in datasets(runs.cfg):
        for method in _trained(runs, d):
            q, a = _quality(runs, d.name, method), runs.metric(d.name, method)
            if q is not None and a is not None:
                pairs.append({"data": d.name, "level": d.level, "method": method,
                              "quality": q, "student": a})  # fmt: skip
    return pairs


def quality_section(runs: Runs, report_dir: Path) -> list[str]:
    pairs = quality_pairs(runs)
    if not pairs:
        return []
    overall = rank_correlation([p["quality"] for p in pairs], [p["student"] for p in pairs])
    within = []
    for name in dict.fromkeys(p["data"] for p in pairs):
        group = [p for p in pairs if p["data"] == name]
        rho = rank_correlation([p["quality"] for p in group], [p["student"] for p in group])
        if rho is not None:
            within.append(rho.rho)
    rows = []
    for method in dict.fromkeys(p["method"] for p in pairs):
        for level in dict.fromkeys(p["level"] for p in pairs if p["method"] == method):
            mine = [p for p in pairs if p["method"] == method and p["level"] == level]
            rows.append([
                METHODS[method].label, "n/a" if level is None else f"{level:.2f}",
                str(len(mine)), stat([p["quality"] for p in mine]).fmt(),
                stat([p["student"] for p in mine]).fmt(),
            ])  # fmt: skip
    fig, ax = _axes((5.5, 3.8))
    for k, method in enumerate(dict.fromkeys(p["method"] for p in pairs)):
        for level, marker in ((lv, "o" if i == 0 else "^") for i, lv in
                              enumerate(dict.fromkeys(p["level"] for p in pairs))):  # fmt: skip
            mine = [p for p in pairs if p["method"] == method and p["level"] == level]
            if mine:
                ax.scatter([p["quality"] for p in mine], [p["student"] for p in mine],
                           color=f"C{k}", marker=marker,
                           label=f"{METHODS[method].label} (p = q = {level})")  # fmt: skip
    _save(fig, ax, report_dir / QUALITY_FIG, xlabel="label-quality AP x 100 (lcdata score-labels)",
          ylabel="student AP x 100 (clean val)", legend=6)  # fmt: skip
    text = (
        f"Spearman's rank correlation over all {overall.n} target stores: ρ = "
        f"{overall.rho:+.2f} (p = {overall.p_value:.2g})"
        if overall
        else f"{len(pairs)} store(s) with both numbers: no rank correlation (it needs three or "
        f"more, and values that differ on both sides)"
    )
    if within:
        text += (
            f"; within one data set (same seed and level, {len(within)} data sets), mean ρ = "
            f"{np.mean(within):+.2f}"
        )
    return [
        "## Does label-quality AP predict the student?",
        "",
        "Each store a student trained on: its label-quality AP (`lcdata score-labels`: its "
        "targets decoded and scored against the clean truth, a minute, no training) beside the "
        "AP of the student it led to, mean ± std over seeds.",
        "",
        *table(["targets", "p = q", "stores", "label-quality AP", "student AP"], rows),
        "",
        text + ".",
        "",
        f"![label-quality AP against student AP]({QUALITY_FIG})",
        "",
    ]


def figures_section(runs: Runs, report_dir: Path) -> list[str]:
    lines: list[str] = []
    for d in main_datasets(runs):
        body = runs.outputs(f"{d.name}/figures")
        if not body or not body["pictures"]:
            continue
        lines += [
            "## Fig. 3 analogue: GT, teacher and corrected maps",
            "",
            f"`lcdata show` of the training crops (seed {d.seed}) where the LC targets added the "
            "most heatmap mass among the first 256: the crop with its ignore mask, then for GT, "
            "teacher and LC target the part heatmaps (top) and the PAFs (bottom; hue = "
            "direction, brightness = length).",
            "",
        ]
        for k, pic in enumerate(body["pictures"]):
            name, found = FIG3.format(k + 1), runs.file(pic["png"])
            if found is None:  # a picture not archived: the section says so
                lines += [f"(sample {pic['index']}: {pic['png']} is not in this checkout)", ""]
                continue
            report_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found, report_dir / name)
            lines += [f"![sample {pic['index']}]({name})", ""]
        break
    return lines


def noisy_eval_section(runs: Runs) -> list[str]:
    if runs.primary != "clean":
        return []
    methods = [m for m in METHODS if m != "baseline_amp" and method_stat(runs, m).n]
    if not methods:
        return []
    rows = []
    for m in methods:
        clean, noisy = method_stat(runs, m), method_stat(runs, m, "AP", "noisy")
        delta = stat(
            [
                None if (a := runs.metric(d.name, m)) is None else
                (runs.metric(d.name, m, "AP", "noisy") or 0.0) - a
                for d in main_datasets(runs)
            ]
        )  # fmt: skip
        rows.append([METHODS[m].label, clean.fmt(), noisy.fmt(), delta.fmt(sign=True)])
    order_clean = sorted(methods, key=lambda m: -method_stat(runs, m).mean)
    order_noisy = sorted(methods, key=lambda m: -method_stat(runs, m, "AP", "noisy").mean)
    same = order_clean == order_noisy
    return [
        "## Evaluating against the noisy validation labels",
        "",
        "The same predictions scored against the corrupted validation file: unannotated "
        "persons become false positives and missing keypoints change the OKS.",
        "",
        *table(["method", "AP (clean val)", "AP (noisy val)", "noisy - clean"], rows),
        "",
        "Ranking by mean AP is "
        + ("the same on both files." if same else "different on the two files: ")
        + (
            ""
            if same
            else "on the clean file, "
            + " > ".join(METHODS[m].label for m in order_clean)
            + "; on the noisy file, "
            + " > ".join(METHODS[m].label for m in order_noisy)
            + "."
        ),
        "",
    ]


# ---------------------------------------------------------------------------------------------
# Discussion, written from the numbers


def _claim(runs: Runs, a: str, b: str, key: str = "AP") -> tuple[Stat, str]:
    diff = paired(runs, a, b, key)
    return diff, verdict(diff)


def _state(ok: bool | None) -> str:
    return "not measured yet" if ok is None else ("met" if ok else "not met")


def goal_bullet(runs: Runs) -> str | None:
    """The goal of the corrections beyond the paper (issue 17), criterion by criterion, for
    each correction this config trains: (1) label-quality AP above LC's (mean of the per-seed
    differences at the main level > 0); (2) students above LC beyond the 2-std rule at the main
    level; (3) students not below the Baseline at p = q = 0 (no 'loss' by the same rule).
    None when no correction has a result."""
    new = new_methods(runs)
    by_level = levels(runs)
    main_level = next(iter(by_level), None)
    if not new or main_level is None:
        return None
    main = by_level[main_level]
    parts, reached, open_ = [], [], False
    for method in new:
        q = differences(
            (_quality(runs, d.name, method), _quality(runs, d.name, "lc")) for d in main
        )
        s = paired_over(runs, main, method, "lc")
        z = paired_over(runs, by_level.get(0.0, []), method, "baseline")
        if q.n == 0 and s.n == 0:
            continue
        checks = [  # (met?, what, the 2-std verdict or "")
            (q.mean > 0 if q.n else None, ("label quality", q, "LC"), ""),
            (verdict(s) == "gain" if s.n > 1 else None, ("students", s, "LC"), verdict(s)),
            (verdict(z) != "loss" if z.n > 1 and main_level != 0.0 else None,
             ("at p = q = 0", z, "Baseline"), verdict(z)),
        ]  # fmt: skip
        oks = [ok for ok, _, _ in checks]
        if all(oks):
            reached.append(METHODS[method].label)
        open_ |= False not in oks and None in oks
        texts = []
        for ok, (what, diff, other), word in checks:
            if diff.n == 0:
                texts.append(f"{what} vs {other} not measured yet")
            else:
                said = f"{word}: {_state(ok)}" if word else _state(ok)
                texts.append(f"{what} {diff.fmt(sign=True)} vs {other} ({said})")
        parts.append(f"{METHODS[method].label}: " + ", ".join(texts))
    if not parts:
        return None
    if reached:
        end = f"reached by {', '.join(reached)}"
    elif open_:
        end = "not reached yet; open until the missing rows finish"
    else:
        end = "no correction reaches it"
    return (
        f"**Goal of the corrections** (label-quality AP above LC's, students above LC beyond "
        f"{CLAIM_SD:g} std at p = q = {main_level:.2f}, and not below the Baseline at p = q = 0):"
        f" {end}. " + "; ".join(parts) + "."
    )


def discussion_section(runs: Runs) -> list[str]:
    n = method_stat(runs, "baseline").n  # seeds evaluated so far
    lines = ["## Discussion", ""]
    base = method_stat(runs, "baseline")
    if base.n == 0:
        return lines + ["No model has been evaluated yet.", ""]
    label = {m: METHODS[m].label for m in METHODS}
    bullets = []
    # 1. the headline comparison
    for method in ("lc", "kd05", "kd05_lc", "kd1"):
        if method_stat(runs, method).n == 0:
            continue
        diff, word = _claim(runs, method, "baseline")
        diff50, word50 = _claim(runs, method, "baseline", "AP50")
        bullets.append(
            f"**{label[method]} vs Baseline**: ΔAP {diff.fmt(sign=True)} ({word}), ΔAP50 "
            f"{diff50.fmt(sign=True)} ({word50}), over {diff.n} seed(s)."
        )
    # 2. the paper's ordering, claim by claim
    checks = [
        ("lc", "baseline", "LC > Baseline"),
        ("lc", "kd05", "LC > KD (λ=0.5)"),
        ("kd05", "baseline", "KD (λ=0.5) > Baseline"),
        ("kd05", "kd1", "KD (λ=0.5) > KD (λ=1)"),
        ("lc", "lc_hm", "LC (both) > LC (confidence maps)"),
        ("lc", "lc_paf", "LC (both) > LC (PAFs)"),
    ]
    held, resolved, parts = 0, 0, []
    for a, b, text in checks:
        diff = paired(runs, a, b)
        if diff.n == 0:
            continue
        ok = diff.mean > 0
        held += ok
        word = verdict(diff)
        resolved += word in ("gain", "loss")
        state = "holds" if ok else ("tie" if diff.mean == 0 else "does not hold")
        parts.append(f"{text}: {state} ({diff.fmt(sign=True)}, {word})")
    if parts:
        bullets.append(
            f"**The paper's ordering** (CMU-Pose: LC > KD (λ=0.5) > Baseline > KD (λ=1); both "
            f"maps > either alone): {held} of {len(parts)} pairwise claims hold in sign, "
            f"{resolved} of them are resolved by the {CLAIM_SD:g}-std rule. "
            + "; ".join(parts)
            + "."
        )
    for method, first in (("lc_x2", "lc"), ("kd05_lc_x2", "kd05_lc")):
        diff = paired(runs, method, first)
        if diff.n:
            bullets.append(
                f"**Iteration** ({label[method]} vs {label[first]}): {diff.fmt(sign=True)} "
                f"({verdict(diff)}); the paper saw no gain from a second round either."
            )
    # on the seeds that have the bound and the Baseline (the bound may run on fewer seeds):
    # how much of the gap between them each correction closes, as mean gain over mean gap
    # (a ratio per seed would swing with the seeds whose gap is small)
    new = new_methods(runs)
    gaps, seeds, pairs = [], [], {}
    for d in main_datasets(runs):
        c, b = runs.metric(d.name, "clean"), runs.metric(d.name, "baseline")
        if c is None or b is None:
            continue
        gaps.append(c - b)
        seeds.append(d.seed)
        for method in ("lc", *new):
            if (y := runs.metric(d.name, method)) is not None:
                pairs.setdefault(method, []).append((y - b, c - b))
    if gaps and "lc" in pairs:
        shares = []
        for m, v in pairs.items():
            gain, gap = np.mean(v, axis=0)
            if gap > 0:
                few = f" ({len(v)} seed(s))" if len(v) != len(gaps) else ""
                shares.append(f"{label[m]} {gain / gap:.0%}{few}")
        bullets.append(
            f"**Room to improve** (seed(s) {', '.join(map(str, seeds))}, where the clean "
            f"bound was trained): clean training labels give {Stat(tuple(gaps)).fmt(sign=True)}"
            f" AP over the Baseline of the same seed. Share of that gap each target closes "
            f"(its mean gain over the mean gap; above 100%: better than the clean-label "
            f"student): " + "; ".join(shares) + "."
        )
    covs = [runs.outputs(f"{d.name}/coverage") for d in main_datasets(runs)]
    covs = [c for c in covs if c and c["keypoints"]["all_missing"]["n"]]  # 0: not measured
    if covs:
        kp_missing = [c["keypoints"]["all_missing"] for c in covs]
        kp_lab = [c["keypoints"]["labelled"] for c in covs]
        cov_missing = _ratio(sum(k["teacher"] for k in kp_missing), sum(k["n"] for k in kp_missing))
        cov_lab = _ratio(sum(k["teacher"] for k in kp_lab), sum(k["n"] for k in kp_lab))
        truths = [_analytics_truth(runs, d.name, "lc") for d in main_datasets(runs)]
        truths = [t for t in truths if t]

        def share(kind: str, key: str) -> float | None:
            if not truths:
                return None
            total = sum(t[kind]["truth_mass"] for t in truths)
            if key == "recovered":
                return _ratio(
                    sum(t[kind]["recovered"]["total"] for t in truths),
                    sum(t[kind]["missing"]["total"] for t in truths),
                )
            return _ratio(sum(t[kind]["false_additions"] for t in truths), total)

        bullets.append(
            f"**What the teacher could give**: its heatmap exceeds "
            f"{covs[0]['threshold']} at {pct(cov_missing)} of the true keypoints the labels "
            f"lack (at {pct(cov_lab)} of the labelled ones). The LC targets recover "
            f"{pct(share('heatmaps', 'recovered'))} of the missing heatmap mass and "
            f"{pct(share('pafs', 'recovered'))} of the missing PAF mass, but also add mass "
            f"where the truth has none: {pct(share('heatmaps', 'false'))} (heatmaps) and "
            f"{pct(share('pafs', 'false'))} (PAFs) of the truth's mass. LC can only add what "
            f"the teacher predicts, and it takes the teacher's errors with it: every cell where "
            f"the teacher is above an empty label is overwritten."
        )
    # the corrections beyond the paper: against LC at the main level, against the Baseline
    # at p = q = 0 over every seed of that level
    by_level = levels(runs)
    main_level = next(iter(by_level), None)
    for method in new:
        diff = paired_over(runs, by_level.get(main_level, []), method, "lc")
        if diff.n:
            bullets.append(
                f"**{label[method]} vs LC** (p = q = {main_level:.2f}): ΔAP "
                f"{diff.fmt(sign=True)} ({verdict(diff)}) over {diff.n} seed(s)."
            )
    zero_said = False  # the cost at p = q = 0 over seeds, in its own bullet
    if 0.0 in by_level and main_level != 0.0:
        parts = []
        for method in ("lc", *new):
            diff = paired_over(runs, by_level[0.0], method, "baseline")
            if diff.n:
                parts.append(f"{label[method]} {diff.fmt(sign=True)} ({verdict(diff)})")
        if parts and len(by_level[0.0]) > 1:
            zero_said = True
            bullets.append(
                f"**At 0% defects** (p = q = 0, {len(by_level[0.0])} seeds, each with its own "
                f"teacher; only out-of-image and occluded points unlabelled): ΔAP against the "
                f"Baseline: " + "; ".join(parts) + "."
            )
    if (goal := goal_bullet(runs)) is not None:
        bullets.append(goal)
    pts = [r for r in sweep_rows(runs) if not r["all_off"] and r["gain"].n]
    if len(pts) >= 2:
        gains = ", ".join(f"{r['label']}: {r['gain'].fmt(sign=True)}" for r in pts)
        seeds = sorted({seed for r in pts for seed in r["seeds"]})
        which = f"seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else "one seed"
        text = f"**Sweep** (LC - Baseline AP by p = q, {which}): {gains}."
        zero = [] if zero_said else [r for r in pts if r["level"] == 0.0]
        if zero and zero[0]["gain"].n > 1:
            z = zero[0]["gain"]
            text += (
                f" At p = q = 0 (only out-of-image and occlusion drops) LC "
                f"{'costs' if z.mean < 0 else 'changes'} {z.fmt(sign=True)} AP ({verdict(z)})."
            )
        elif zero:
            g = zero[0]["gain"].mean
            sd = paired(runs, "lc", "baseline").sd
            hurt = g < -CLAIM_SD * sd if sd else g < 0
            text += (
                " At p = q = 0 (only out-of-image and occlusion drops) LC "
                + ("costs" if g < 0 else "changes")
                + f" {g:+.1f} AP on one seed, "
                + ("beyond" if hurt else "within")
                + " the seed spread of the main comparison"
                + (f" ({CLAIM_SD:g} x {sd:.1f})." if sd else ".")
            )
        bullets.append(text)
    if (grown := schedule_bullet(runs)) is not None:
        bullets.append(grown)
    if n < 3:
        bullets.append(f"**Seeds**: {n} seed(s) only; differences are reported, not claimed.")
    else:
        bullets.append(
            f"**What the spread allows**: with {n} seeds the Baseline's AP varies by "
            f"{base.sd:.1f} (std); a paired difference is called a gain only beyond "
            f"{CLAIM_SD:g} std of the per-seed differences, so effects of the paper's size "
            f"(1-2 AP) can be resolved only where the runs agree closely."
        )
    if runs.primary == "clean":
        bullets.append(
            f"**Scope**: a 0.3M-parameter model trained for {runs.cfg.train_steps:,} steps on "
            "128 px synthetic figures is far from CMU-Pose on COCO; the experiment tests the "
            "mechanism (does correcting defective labels with a teacher's outputs help, when "
            "the defects are known), not the paper's absolute numbers."
        )
    return lines + [f"- {b}" for b in bullets] + [""]


@dataclass(frozen=True)
class Headline:
    """The three numbers a user asks for first, as paired per-seed AP differences."""

    lc_vs_baseline: Stat  # at the main defect level
    best: str | None  # the correction beyond the paper with the highest mean AP there
    best_vs_lc: Stat
    zero_lc: Stat  # LC - Baseline at p = q = 0
    zero_best: Stat  # best - Baseline at p = q = 0
    main_level: float | None


def headline(runs: Runs) -> Headline:
    """LC against the Baseline, the best new correction against LC (both at the main defect
    level) and what each costs at p = q = 0. The best correction is picked by its mean AP on
    the same seeds that then compare it with LC, so its verdict leans optimistic."""
    by_level = levels(runs)
    main_level = next(iter(by_level), None)
    sets = by_level.get(main_level, []) if main_level is not None else []
    new = new_methods(runs)
    means = {m: s.mean for m in new if (s := stat([runs.metric(d.name, m) for d in sets])).n}
    best = max(means, key=means.__getitem__) if means else None
    zero = by_level.get(0.0, []) if main_level != 0.0 else []
    return Headline(
        lc_vs_baseline=paired_over(runs, sets, "lc", "baseline"),
        best=best,
        best_vs_lc=paired_over(runs, sets, best, "lc") if best else Stat(()),
        zero_lc=paired_over(runs, zero, "lc", "baseline"),
        zero_best=paired_over(runs, zero, best, "baseline") if best else Stat(()),
        main_level=main_level,
    )


def headline_section(runs: Runs) -> list[str]:
    """Three lines at the top of the report (the README quotes them)."""
    h = headline(runs)
    if h.main_level is None:
        return []

    def claim(diff: Stat) -> str:
        if diff.n == 0:
            return "not measured yet"
        return f"{diff.fmt(sign=True)} AP ({verdict(diff)}, {diff.n} seed(s))"

    best = METHODS[h.best].label if h.best else "The best correction"
    mixed = []
    if len(fit_precisions(runs)) > 1:
        mixed = ["", "Not every training ran in the same precision: Setup, Precision."]
    zero = claim(h.zero_lc)
    if h.best and h.zero_best.n:
        zero += f"; {best}: {claim(h.zero_best)}"
    return [
        "## In three numbers",
        "",
        "Paired per-seed differences of student AP on the clean validation labels, mean ± "
        f"std, with the {CLAIM_SD:g}-std verdict:",
        "",
        f"- **LC vs Baseline** (p = q = {h.main_level:.2f}): {claim(h.lc_vs_baseline)}",
        f"- **{best} vs LC** (p = q = {h.main_level:.2f}; picked as the correction with the "
        f"highest mean AP on these seeds): {claim(h.best_vs_lc)}",
        f"- **Cost at 0% defects** (LC vs Baseline at p = q = 0): {zero}",
        *mixed,
        "",
    ]


def _compared(runs: Runs) -> dict[str, Any] | None:
    """The recorded summary of the experiment named by `compare_with`, if this checkout has it."""
    if not runs.cfg.compare_with:
        return None
    path = resolve_path(runs.cfg.compare_with)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def growth_text(before: tuple[float, float | None, int], after: Stat) -> str:
    """How a gain (AP difference, mean ± std over seeds) changed between two experiments.

    `before` is (mean, std, seeds) from another experiment's summary, `after` this one's
    per-seed differences. The two were not paired with each other, so a change counts only
    beyond CLAIM_SD x sqrt(std_before^2 + std_after^2); with one seed on either side it is
    reported, not claimed.
    """
    mean, sd, n = before
    change = after.mean - mean
    head = f"{mean:+.1f} -> {after.mean:+.1f} AP ({change:+.1f})"
    if n < 2 or after.n < 2 or sd is None:
        return f"{head}; one seed on a side, no claim"
    spread = CLAIM_SD * float(np.hypot(sd, after.sd))
    if change > spread:
        word = "grew"
    elif change < -spread:
        word = "shrank"
    else:
        word = "no clear change"
    return f"{head}: {word} (threshold {spread:.1f})"


def schedule_bullet(runs: Runs) -> str | None:
    """Discussion: whether the gains over the Baseline grew with this experiment's schedule."""
    other = _compared(runs)
    if other is None:
        return None
    parts = []
    for method in ("lc", "kd05", "clean"):
        row = other["rows"].get(method)
        here = paired(runs, method, "baseline")
        if row is None or "dAP" not in row or here.n == 0:
            continue
        mean, sd = row["dAP"]
        parts.append(f"{METHODS[method].label} {growth_text((mean, sd, row['seeds']), here)}")
    if not parts:
        return None
    sched = other["schedule"]
    return (
        f"**With the schedule** (gain over the Baseline, {sched['steps']:,} steps -> "
        f"{runs.cfg.train_steps:,} steps; the two experiments are not paired, so a change "
        f"counts beyond a threshold of {CLAIM_SD:g} x their combined std): "
        + "; ".join(parts)
        + "."
    )


def comparison_section(runs: Runs) -> list[str]:
    """This experiment beside another one's recorded summary (`compare_with`): what changed."""
    if not runs.cfg.compare_with:
        return []
    other = _compared(runs)
    if other is None:
        return [f"(`compare_with`: {runs.cfg.compare_with} is not in this checkout)", ""]
    sched = other["schedule"]

    def cell(mean: float | None, sd: float | None, *, sign: bool = False) -> str:
        if mean is None:
            return "n/a"
        m = f"{mean:+.1f}" if sign else f"{mean:.1f}"
        return m if sd is None else f"{m} ± {sd:.1f}"

    rows = []
    for method, row in other["rows"].items():
        here = method_stat(runs, method)
        diff = paired(runs, method, "baseline") if method != "baseline" else None
        rows.append([
            METHODS[method].label,
            f"{row['seeds']}", cell(*row["AP"]),
            "" if "dAP" not in row else f"{cell(*row['dAP'], sign=True)} ({row['verdict']})",
            str(here.n) if here.n else "", here.fmt(),
            "" if diff is None else f"{diff.fmt(sign=True)} ({verdict(diff)})" if diff.n else "",
        ])  # fmt: skip
    train = runs.cfg.train
    passes = ""
    samples = [
        b["num_samples"] for d in main_datasets(runs) if (b := runs.outputs(f"{d.name}/gt_store"))
    ]
    if samples:
        seen = runs.cfg.train_steps * int(train.get("batch_size", 1))
        passes = f", {seen / np.mean(samples):.0f} passes"
    return [
        "## The short regime, for comparison",
        "",
        f"The same benchmark and model at {sched['steps']:,} steps of batch "
        f"{sched['batch_size']} ({sched['passes']} passes, {sched['views_per_image']} stored "
        f"view, augment {sched['augment']}), from {other['source']}; this experiment: "
        f"{runs.cfg.train_steps:,} steps of batch {train.get('batch_size')}{passes}, augment "
        f"{train.get('augment', 'off')}. AP on the clean validation labels; ΔAP: paired to the "
        f"Baseline of the same seed.",
        "",
        *table(
            ["method", "seeds (short)", "AP (short)", "ΔAP (short)", "seeds", "AP", "ΔAP"], rows
        ),  # fmt: skip
        "",
    ]


def smoke_section(smoke: Path | None) -> list[str]:
    if smoke is None or not (smoke / RESOLVED).is_file():
        return []
    runs = load_runs(smoke)
    mains = main_datasets(runs)
    if not mains:
        return []
    d = mains[0]
    rows = []
    oracle = runs.outputs(f"{d.name}/oracle")
    if oracle:
        o = oracle["oracle"]["val"]["val"]
        rows.append(
            ["oracle (val labels rendered and decoded)", _num(100 * o["AP"]), _num(100 * o["AP50"])]
        )
    for method in ["baseline", *runs.cfg.protocol.methods, *runs.cfg.protocol.iterate]:
        ap, ap50 = runs.metric(d.name, method), runs.metric(d.name, method, "AP50")
        if ap is not None:
            rows.append([METHODS[method].label, _num(ap), _num(ap50)])
    cfg = runs.cfg
    store = runs.outputs(f"{d.name}/gt_store")
    fits = [b["outputs"] for k, b in runs.markers.items() if b["kind"] == "fit"]
    return [
        "## COCO-MINI: a smoke run on real photos",
        "",
        f"**A smoke run, not a result.** The same chain on `{cfg.data.train_annotations}`"
        f" (80 images) -> `{cfg.data.val_annotations}` (79 images): "
        f"{store['num_samples'] if store else '?'} training crops of "
        f"{cfg.store.render.input_size} px, stride {cfg.store.render.stride}, "
        f"`{cfg.train.get('model')}` trained "
        f"{cfg.train_steps} steps from scratch, {len(fits)} trainings. It shows that "
        f"the teacher pass, correction, training and evaluation run on real images; the AP of "
        f"such a model says nothing about label correction.",
        "",
        *table(["model", "AP x 100 (val2017 subset)", "AP50"], rows),
        "",
    ]


# ---------------------------------------------------------------------------------------------
# The whole report


def write_report(out: Path, report_dir: Path, *, smoke_run: Path | None = None) -> Path:
    """Write results.md (and its PNGs) into `report_dir` from the runs in `out`."""
    out, report_dir = Path(out).resolve(), Path(report_dir)
    runs = load_runs(out)
    report_dir.mkdir(parents=True, exist_ok=True)
    title = (
        "# Results: label correction on the synthetic benchmark"
        if runs.primary == "clean"
        else f"# Results: {runs.cfg.name}"
    )
    try:
        where = out.relative_to(resolve_path("."))
    except ValueError:
        where = out
    lines = [
        title,
        "",
        f"Written by `python -m experiments.report` from the runs in `{where}` "
        f"(config `{Path(runs.cfg.config_file).name}`), "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Regenerate it rather than editing it; how to run "
        f"the experiment: [experiments.md](experiments.md).",
        "",
        *headline_section(runs),
        *setup_section(runs),
        "## Before training students",
        "",
        *oracle_section(runs),
        *coverage_section(runs),
        *table1_section(runs),
        *table2_section(runs),
        *analytics_section(runs),
        *corrections_section(runs),
        *quality_section(runs, report_dir),
        *curves_section(runs, report_dir),
        *sweep_section(runs, report_dir),
        *noisy_eval_section(runs),
        *figures_section(runs, report_dir),
        *discussion_section(runs),
        *comparison_section(runs),
        *smoke_section(smoke_run),
    ]
    path = report_dir / "results.md"
    path.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    return path


@click.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where results.md goes [default: the run's report_dir, else OUT/report].",
)
@click.option(
    "--smoke-run",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Experiment folder of the COCO-MINI smoke run [default: the config's].",
)
def main(out: Path | None, report_dir: Path | None, smoke_run: Path | None) -> None:
    """Write the report of the experiment in OUT [default: runs/lc_synth]."""
    out = out or resolve_path("runs/lc_synth")
    if not (out / RESOLVED).is_file():
        raise click.ClickException(f"{out}: no {RESOLVED} (run python -m experiments.run first)")
    cfg = load_resolved(out)
    if report_dir is None:
        report_dir = resolve_path(cfg.report_dir) if cfg.report_dir else out / "report"
    if smoke_run is None and cfg.smoke_run:
        smoke_run = resolve_path(cfg.smoke_run)
    path = write_report(out, report_dir, smoke_run=smoke_run)
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
