"""The experiment's data model: the methods (rows of the paper's tables) and the data sets.

A method differs from the Baseline only in its targets (`lcdata correct --mode`) and, for
the iterations, in its teacher. Everything else about a row (model, schedule, seeds) is the
experiment's config (`experiments.config`); which steps make it is `experiments.plan`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Method:
    """One row of the tables.

    Attributes:
        label: as printed in the report.
        mode: `lcdata correct --mode` of its targets ("gt" for the teacher and the clean bound).
        lam: KD mixing ratio for kd / kd+lc.
        teacher: None = the baseline teacher; else the method whose student is the teacher
            (iteration, "x2").
        tta: the baseline teacher's test-time augmentation in the teacher pass
            (`lcdata build-teacher-cache --tta`), None = none.
        paper_cmu, paper_small: the paper's AP (Table 1/2, CMU-Pose / small NN), if reported.
    """

    label: str
    mode: str
    lam: float | None = None
    teacher: str | None = None
    tta: str | None = None
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
    "gated": Method("LC gated", "gated"),
    "kp": Method("LC keypoints", "keypoints"),
    "lc_tta": Method("LC, flip-TTA teacher", "max", tta="flip"),
    "gated_tta": Method("LC gated, flip-TTA teacher", "gated", tta="flip"),
    "kp_tta": Method("LC keypoints, flip-TTA teacher", "keypoints", tta="flip"),
    "kd05_tta": Method("KD (λ=0.5), flip-TTA teacher", "kd", 0.5, tta="flip"),
    "lc_ttaz": Method("LC, flip+zoom-TTA teacher", "max", tta="flip,scales=0.8:1.25"),
    "kp_ttaz": Method("LC keypoints, flip+zoom-TTA teacher", "keypoints",
                      tta="flip,scales=0.8:1.25"),
    "clean": Method("clean labels (upper bound)", "gt"),
    "baseline_amp": Method("Baseline, precision check", "gt"),  # protocol.precision_check
}  # fmt: skip
"""Method keys used in configs, folder names and the report."""

STUDENTS: tuple[str, ...] = tuple(
    k for k in METHODS if k not in ("baseline", "clean", "baseline_amp")
)
"""Methods that are students of a teacher (the rows a config lists)."""


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
