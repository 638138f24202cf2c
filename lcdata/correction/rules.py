"""The correction rules of the paper on plain arrays, and the one switch between its modes.

    gt        y = y_GT                                                 (eq. 1, baseline)
    max       H_k = max(H_GT_k, H_T_k) for every part k                (eq. 2)
              L_l = L_GT_l where ||L_GT_l|| > ||L_T_l||, else L_T_l     (eq. 3)
    heatmaps  H as in `max`, L = L_GT                                  (Table 2 ablation)
    pafs      H = H_GT, L as in `max`                                  (Table 2 ablation)
    kd        y = (1 - lam) y_GT + lam T, every channel                (eq. 5 as a target)
    kd+lc     y = (1 - lam) y_LC + lam T, y_LC = the `max` target      (eq. 6 as a target)
    gated     H_k = max(H_GT_k, H_T_k [H_T_k >= tau_h])                 (not in the paper)
              L_l = L_GT_l where ||L_GT_l|| > ||L_T_l|| or ||L_T_l|| < tau_p, else L_T_l
    keypoints y = render(merge(labelled keypoints, decode(T)))             (not in the paper)
              the teacher's decoded persons complete the labels (`lcdata.labels.merge`)
              and GT-like maps are rendered from the merged keypoints

Letters used in shapes: N samples, K+1 heatmap channels (background last), 2L PAF channels
(2l = x, 2l+1 = y of limb l), h, w the grid in cells.

Rules worth stating (docs/correction.md has the reasoning):
- Eq. 3 compares the *whole* (x, y) vector of a limb: both channels of limb l come from the
  same source. The comparison is strict, so a tie (equal lengths, zero vectors included)
  goes to the teacher. Squared lengths of stored values (multiples of 2^-9 in float16,
  |x| < 4, 11 significant bits) are exact in float32, so ties are real ties.
- Background of a corrected heatmap: "recompute" (default) = 1 - max of the corrected
  parts, the definition the GT uses; "min" and "max" take min / max of the GT and teacher
  backgrounds and reproduce the July and November 2018 versions of the first author's code.
  No clipping: a teacher part above 1 gives a background below 0.
- KD blends whole outputs, background channel included: eq. 5 puts every output channel in
  both loss terms, and only blending every channel keeps the target's gradient equal to
  eq. 5's (tests/test_correct.py proves it on the training loss).
- `gated` is LC with a confidence gate (docs/correction.md): the teacher enters a cell only
  where it is confident there, a heatmap value of at least tau_h (`heat_gate`) or a limb
  vector at least tau_p long (`paf_gate`), so its faint haze leaves the target while its
  peaks and limbs stay. Comparisons use the float32 value (tau_p squared, in float32,
  against the exact squared length); ties at the gate pass. Gates of 0 give `max` exactly.
- Targets are computed everywhere; the ignore mask is applied by the loss (W in eq. 1).
- Everything runs in float32 on the stored float16 values (blend: `(1 - lam) * y + lam * t`
  with lam rounded to float32); float64 inputs stay float64. A stored target is this value
  quantised to the store's grid (`lcdata.store.codec.quantize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lcdata.config import RenderConfig
from lcdata.errors import ConfigError
from lcdata.labels.decode import DecodeConfig, decode
from lcdata.labels.merge import MergeConfig, merge_persons
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import Skeleton
from lcdata.store.codec import as_float32

MODES: tuple[str, ...] = ("gt", "max", "heatmaps", "pafs", "kd", "kd+lc", "gated", "keypoints")
BACKGROUND_RULES: tuple[str, ...] = ("recompute", "min", "max")
DEFAULT_LAMBDA = 0.5
"""The paper's mixing ratio for KD (Table 1: lambda = 0.5 beats lambda = 1)."""
KD_MODES = ("kd", "kd+lc")
GATED_MODES = ("gated",)
KEYPOINT_MODES = ("keypoints",)
"""Modes whose targets are rendered from merged keypoints, which their stores keep."""
DEFAULT_GATES = (0.1, 0.1)
"""(tau_h, tau_p) of mode `gated`, chosen from the analytics of a long-schedule teacher on the
synthetic benchmark (docs/correction.md): against plain LC it keeps 85% of the recovered
heatmap mass and 98% of the recovered PAF mass and removes 59% and 48% of the false
additions; higher gates remove more haze but also more of what the teacher sees."""

_RULES: dict[str, tuple[str, str]] = {
    "gt": ("gt", "gt"),
    "max": ("lc", "lc"),
    "heatmaps": ("lc", "gt"),
    "pafs": ("gt", "lc"),
    "kd": ("kd", "kd"),
    "kd+lc": ("kd+lc", "kd+lc"),
    "gated": ("gate", "gate"),
    "keypoints": ("render", "render"),
}
"""mode -> (rule for the heatmaps, rule for the PAFs): gt, lc (eq. 2 / eq. 3), kd (eq. 5),
kd+lc (eq. 6), gate (the confidence-gated eq. 2 / eq. 3), render (from merged keypoints)."""

GRID_MODES = tuple(m for m, rules in _RULES.items() if not {"kd", "kd+lc", "render"} & set(rules))
"""Modes whose targets are maxima, selections and 1 - max of stored values: on the store's
2^-9 grid already (1 - x of a grid value is exact), so storing them needs no rounding."""


def correct_heatmaps(
    gt: np.ndarray, teacher: np.ndarray, *, background: str = "recompute"
) -> np.ndarray:
    """Eq. 2: per-pixel max of GT and teacher on the part channels.

    Args:
        gt, teacher: (N, K+1, h, w) float, last channel background.
        background: "recompute" = 1 - max over the corrected parts; "min" / "max" of the
            GT and teacher backgrounds.

    Returns:
        (N, K+1, h, w) float32.
    """
    gt = np.asarray(gt, np.float32)
    teacher = np.asarray(teacher, np.float32)
    out = np.maximum(gt, teacher)
    if background == "recompute":
        out[:, -1] = np.float32(1) - out[:, :-1].max(axis=1)
    elif background == "min":
        out[:, -1] = np.minimum(gt[:, -1], teacher[:, -1])
    elif background != "max":
        raise ConfigError("correct", "background", _unknown("rule", background, BACKGROUND_RULES))
    return out


def gate_heatmaps(teacher: np.ndarray, tau: float) -> np.ndarray:
    """(N, K+1, h, w) teacher heatmaps with part values below `tau` set to 0 (float32;
    the background channel is kept, the correction recomputes it)."""
    out = np.array(teacher, np.float32)
    parts = out[:, :-1]
    parts[parts < np.float32(tau)] = 0
    return out


def gated_pafs(gt: np.ndarray, teacher: np.ndarray, tau: float) -> PafCorrection:
    """Eq. 3 with a gate: the GT's limb vector where it is longer than the teacher's or the
    teacher's is shorter than `tau`, else the teacher's (ties pass, as in eq. 3); see
    `PafCorrection`."""
    sq_g, sq_t = _length_pair(gt, teacher)
    tau_sq = np.asarray(tau, sq_t.dtype) ** 2
    keep = (sq_g > sq_t) | (sq_t < tau_sq)
    n, c, h, w = np.shape(gt)
    g = as_float32(gt).reshape(n, c // 2, 2, h, w)
    t = as_float32(teacher).reshape(n, c // 2, 2, h, w)
    out = np.where(keep[:, :, None], g, t).reshape(n, c, h, w)
    return PafCorrection(out, sq_g, np.where(keep, sq_g, sq_t))


def limb_sq_lengths(pafs: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """(N, 2L, h, w) PAFs -> (N, L, h, w) x^2 + y^2 of every limb vector, in `dtype`;
    exact in float32 for stored values (module docstring)."""
    pafs = as_float32(pafs) if dtype == np.float32 else np.asarray(pafs, dtype)
    x, y = pafs[:, 0::2], pafs[:, 1::2]
    return x * x + y * y


def _length_pair(gt: np.ndarray, teacher: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`limb_sq_lengths` of both, in float32, or float64 when either input is float64."""
    gt, teacher = np.asarray(gt), np.asarray(teacher)
    dtype = np.float64 if np.float64 in (gt.dtype, teacher.dtype) else np.float32
    return limb_sq_lengths(gt, dtype), limb_sq_lengths(teacher, dtype)


def paf_keeps_gt(gt: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Eq. 3's choice: (N, L, h, w) bool, True where ||L_GT|| > ||L_T|| (strict: ties -> T)."""
    sq_g, sq_t = _length_pair(gt, teacher)
    return sq_g > sq_t


class PafCorrection(NamedTuple):
    """Eq. 3's target and the squared limb lengths it compared (the statistics reuse them).

    Attributes:
        pafs: (N, 2L, h, w) float32, the corrected field.
        sq_gt: (N, L, h, w) squared lengths of the GT limbs.
        sq_target: (N, L, h, w) squared lengths of the corrected limbs.
    """

    pafs: np.ndarray
    sq_gt: np.ndarray
    sq_target: np.ndarray


def correct_pafs_with_lengths(gt: np.ndarray, teacher: np.ndarray) -> PafCorrection:
    """Eq. 3 on (N, 2L, h, w) fields; see `PafCorrection`."""
    sq_g, sq_t = _length_pair(gt, teacher)
    keep = sq_g > sq_t  # (N, L, h, w), shared by x and y
    n, c, h, w = np.shape(gt)
    g = as_float32(gt).reshape(n, c // 2, 2, h, w)
    t = as_float32(teacher).reshape(n, c // 2, 2, h, w)
    out = np.where(keep[:, :, None], g, t).reshape(n, c, h, w)
    return PafCorrection(out, sq_g, np.where(keep, sq_g, sq_t))


def correct_pafs(gt: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """Eq. 3: each limb's whole (x, y) vector from GT where it is longer, else the teacher's.

    Args:
        gt, teacher: (N, 2L, h, w) float.

    Returns:
        (N, 2L, h, w) float32.
    """
    return correct_pafs_with_lengths(gt, teacher).pafs


def blend(y: np.ndarray, teacher: np.ndarray, lam: float) -> np.ndarray:
    """(1 - lam) * y + lam * teacher in float32, lam rounded to float32 (eq. 5/6 targets)."""
    lam32 = np.float32(lam)
    return (np.float32(1) - lam32) * np.asarray(y, np.float32) + lam32 * np.asarray(
        teacher, np.float32
    )


class Targets(NamedTuple):
    """The training targets of one mode, before they are stored.

    Attributes:
        heatmaps: (N, K+1, h, w) float32 (None when not asked for).
        pafs: (N, 2L, h, w) float32 (None when not asked for).
        paf_lengths: (squared GT limb lengths, squared target limb lengths), each
            (N, L, h, w), when eq. 3 computed them (the PAFs of max and pafs), else None.
        keypoints: (N, M, K, 3) float32 merged keypoints of the keypoint modes (crop
            pixels, v; rows of zeros pad), else None.
    """

    heatmaps: np.ndarray | None
    pafs: np.ndarray | None
    paf_lengths: tuple[np.ndarray, np.ndarray] | None = None
    keypoints: np.ndarray | None = None


def targets(
    gt_heatmaps: np.ndarray | None,
    gt_pafs: np.ndarray | None,
    teacher_heatmaps: np.ndarray | None = None,
    teacher_pafs: np.ndarray | None = None,
    *,
    mode: str,
    lam: float = DEFAULT_LAMBDA,
    background: str = "recompute",
    gates: tuple[float, float] = DEFAULT_GATES,
    keypoints: np.ndarray | None = None,
    merge: KeypointMerge | None = None,
) -> Targets:
    """The targets of `mode` (module docstring) from GT and teacher maps: the only switch
    between the modes, used by the store writer, the lazy dask view and the tests.

    Args:
        gt_heatmaps, teacher_heatmaps: (N, K+1, h, w); gt_pafs, teacher_pafs: (N, 2L, h, w),
            as stored (float16) or float32; the teacher's may be None for mode "gt". Give
            None for a GT map kind to skip it (its target is then None too).
        mode, lam, background: see the module docstring (`check_options` validates them).
        gates: (tau_h, tau_p) of mode `gated` (`check_gates`); unused by the others.
        keypoints: (N, P, K, 3) the labelled keypoints in crop pixels (`meta/keypoints`),
            for the keypoint modes; their GT maps are not read.
        merge: how the keypoint modes decode, merge and render (`KeypointMerge`).
    """
    if mode not in _RULES:
        raise ConfigError("correct", "mode", _unknown("mode", mode, MODES))
    heat_rule, paf_rule = _RULES[mode]
    if heat_rule == "render":
        if keypoints is None or merge is None or teacher_heatmaps is None:
            raise ConfigError(
                "correct", "mode", f"{mode!r} needs keypoints, teacher maps and merge"
            )
        return merged_targets(keypoints, teacher_heatmaps, teacher_pafs, merge)
    heat = pafs = lengths = None
    if gt_heatmaps is not None:
        if heat_rule == "gt":
            heat = np.asarray(gt_heatmaps, np.float32)
        elif heat_rule == "kd":
            heat = blend(gt_heatmaps, teacher_heatmaps, lam)
        elif heat_rule == "gate":
            gated = gate_heatmaps(teacher_heatmaps, gates[0])
            heat = correct_heatmaps(gt_heatmaps, gated, background=background)
        else:
            heat = correct_heatmaps(gt_heatmaps, teacher_heatmaps, background=background)
            if heat_rule == "kd+lc":
                heat = blend(heat, teacher_heatmaps, lam)
    if gt_pafs is not None:
        if paf_rule == "gt":
            pafs = np.asarray(gt_pafs, np.float32)
        elif paf_rule == "kd":
            pafs = blend(gt_pafs, teacher_pafs, lam)
        elif paf_rule in ("lc", "gate"):
            if paf_rule == "lc":
                pafs, sq_gt, sq_target = correct_pafs_with_lengths(gt_pafs, teacher_pafs)
            else:
                pafs, sq_gt, sq_target = gated_pafs(gt_pafs, teacher_pafs, gates[1])
            lengths = (sq_gt, sq_target)
        else:
            pafs = blend(correct_pafs(gt_pafs, teacher_pafs), teacher_pafs, lam)
    return Targets(heat, pafs, lengths)


@dataclass(frozen=True)
class KeypointMerge:
    """Everything the keypoint modes need beside the arrays.

    Attributes:
        merge: thresholds of `lcdata.labels.merge.merge_persons`.
        decode: decoder settings for the teacher's maps.
        render: the store's render geometry (the targets are rendered with it).
        skeleton: the store's skeleton.
        max_persons: rows of the merged keypoints (labelled rows + `merge.max_added`).
    """

    merge: MergeConfig
    decode: DecodeConfig
    render: RenderConfig
    skeleton: Skeleton
    max_persons: int


def merged_targets(
    keypoints: np.ndarray,
    teacher_heatmaps: np.ndarray,
    teacher_pafs: np.ndarray,
    km: KeypointMerge,
) -> Targets:
    """Targets of mode `keypoints`: per sample, decode the teacher's maps, merge its persons
    into the labelled ones (`merge_persons`) and render the merged keypoints.

    Args:
        keypoints: (N, P, K, 3) labelled parts, crop pixels. teacher_heatmaps: (N, K+1, h, h);
        teacher_pafs: (N, 2L, h, h).

    Returns:
        `Targets` with heatmaps, pafs (float32) and keypoints (N, km.max_persons, K, 3).
    """
    n, k = len(keypoints), km.skeleton.num_parts
    heat = np.empty(np.shape(teacher_heatmaps), np.float32)
    pafs = np.empty(np.shape(teacher_pafs), np.float32)
    merged = np.zeros((n, km.max_persons, k, 3), np.float32)
    stride = km.render.stride
    for i in range(n):
        persons = decode(
            as_float32(teacher_heatmaps[i]),
            as_float32(teacher_pafs[i]),
            skeleton=km.skeleton,
            stride=stride,
            cfg=km.decode,
        )
        m = merge_persons(keypoints[i], persons, cfg=km.merge, sigma=km.render.sigma)
        rows = m.keypoints[: km.max_persons]
        merged[i, : len(rows)] = rows
        heat[i], pafs[i] = render_targets(rows, cfg=km.render, skeleton=km.skeleton)
    return Targets(heat, pafs, None, merged)


def uses_background(mode: str) -> bool:
    """Whether the background rule decides anything in `mode` (its heatmaps are corrected)."""
    return _RULES[mode][0] in ("lc", "kd+lc", "gate")


def needs_teacher(mode: str) -> bool:
    """Whether `mode` reads the teacher's maps."""
    return mode != "gt"


def required_arrays(mode: str) -> tuple[str, ...]:
    """Cache store arrays the targets of `mode` are made from (the GT maps always: the
    analytics compare with them)."""
    arrays = ("gt/heatmaps", "gt/pafs")
    if mode in KEYPOINT_MODES:
        arrays += ("meta/keypoints",)
    if needs_teacher(mode):
        arrays += ("teacher/heatmaps", "teacher/pafs")
    return arrays


def check_options(mode: str, lam: float | None, background: str) -> float:
    """Validate mode, lambda and background rule; returns the lambda to use.

    Raises:
        ConfigError: naming the field (`mode`, `lam` or `background`).
    """
    if mode not in MODES:
        raise ConfigError("correct", "mode", _unknown("mode", mode, MODES))
    if background not in BACKGROUND_RULES:
        raise ConfigError("correct", "background", _unknown("rule", background, BACKGROUND_RULES))
    if lam is None:
        return DEFAULT_LAMBDA
    if mode not in KD_MODES:
        raise ConfigError("correct", "lam", f"applies to modes kd and kd+lc only, not {mode!r}")
    if not 0.0 <= lam <= 1.0 or not np.isfinite(lam):
        raise ConfigError("correct", "lam", f"must be in [0, 1], got {lam}")
    return float(lam)


def check_gates(mode: str, gates: tuple[float, float] | None) -> tuple[float, float]:
    """Validate the gates of mode `gated`; returns the gates to use (`DEFAULT_GATES` for
    None).

    Raises:
        ConfigError: gates given for another mode, or outside [0, 4).
    """
    if gates is None:
        return DEFAULT_GATES
    if mode not in GATED_MODES:
        raise ConfigError("correct", "gates", f"apply to mode gated only, not {mode!r}")
    for name, tau in zip(("heat_gate", "paf_gate"), gates, strict=True):
        if not 0.0 <= tau < 4.0 or not np.isfinite(tau):
            raise ConfigError("correct", name, f"must be in [0, 4), got {tau}")
    return (float(gates[0]), float(gates[1]))


def _unknown(what: str, value: str, choices: tuple[str, ...]) -> str:
    return f"unknown {what} {value!r} (choose {', '.join(choices)})"
