"""What a correction did to the labels, measured on the stored arrays, out of core.

Letters used in shapes below:
    N     samples of one shard;  K  parts;  L  limbs;  h, w  output grid in cells
    Y     the target maps (`target/*` of a corrected store), G the GT maps, C the clean truth

Every sum runs over supervised cells only (mask = 1): masked cells get no gradient, so what
a target holds there does not matter for training. Heatmap sums cover the K part channels
(the background is derived from them). All sums are float64.

Statistics are computed per shard (`shard_stats`) and added up in shard order. `lcdata
correct` computes a shard's statistics in the task that writes its targets, from the blocks
that task already holds, and saves them as `<out>/.lcpose-analytics/<shard>.npz` before it
marks the shard done; at the end `collect_analytics` adds them up (computing any shard that
has none from the stored arrays) and the folder is removed. `compute_analytics` computes
every shard from the stored arrays, with the same result.

Always (`shard_stats`):
    heatmaps.added[k]    sum max(0, Y_k - G_k): mass the correction added to part k
                         (for mode max: sum max(0, H_T - H_GT), the teacher's contribution)
    heatmaps.removed[k]  sum max(0, G_k - Y_k) (non-zero only for the KD blends)
    pafs.changed[l]      supervised cells where limb l's (x, y) target differs from GT's
    pafs.mass_added[l]   sum max(0, ||Y_l|| - ||G_l||)

With the synthetic benchmark's clean labels (`--clean`, see `load_clean_truth`), C is
rendered for every stored sample by replaying its stored affine and flip, and
    missing    sum gap,  gap = max(0, C - G)                      (heatmaps, per cell/part)
               gap = max(0, ||C_l|| - ||G_l||)                     (PAFs, per cell/limb)
    recovered  sum min(gap, max(0, Y - G))                         (heatmaps)
               sum clip(<Y_l - G_l, C_l / ||C_l||>, 0, gap)        (PAFs: only the part of the
               change that points along the true limb counts)
    false      sum max(0, Y - max(C, G))                            (heatmaps)
               sum max(0, ||Y_l|| - max(||C_l||, ||G_l||))         (PAFs)
`missing` and `recovered` are split by the failure that removed the truth (`FAILURES`): each
cell goes to the failure whose keypoints alone, added to the labelled ones, open the largest
gap there; cells that no single failure explains (e.g. a limb whose two ends were removed by
different failures) go to "mixed".
"""

from __future__ import annotations

import json
import os
import tempfile
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np

from lcdata import store as st
from lcdata.augment import warp_parts
from lcdata.coco import file_sha256, load_coco
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.inspect import open_dask
from lcdata.render import inside_image, render_targets
from lcdata.skeleton import SYNTHESISED, Skeleton

FAILURES: tuple[str, ...] = ("out_of_image", "occluded", "missed_visible", "unannotated")
"""The paper's four label failures (sec. 3.1), in cause-code order 1..4."""
BUCKETS: tuple[str, ...] = (*FAILURES, "mixed")
"""Cause codes 1..5 of a missing cell; 0 = labelled in the noisy file, -1 = not in the truth."""

_PREFIX = "analytics"
STATS_DIR = ".lcpose-analytics"
"""Folder inside a corrected store that holds each written shard's statistics (`<shard>.npz`)
until the store is complete; `lcdata correct` removes it once the totals are in the attributes."""
STATS_VERSION = 1
"""Format of the saved shard statistics: bump when `shard_stats` changes what it returns."""
_TAG_KEY = "_tag"


# ---------------------------------------------------------------------------------------
# The clean truth of the synthetic benchmark


@dataclass
class CleanTruth:
    """Clean persons of every image with, per part, why the noisy labels lack it.

    Attributes:
        parts: image id -> (P, K, 3) float32, clean `keypoints_all` mapped to the skeleton,
            image pixels and COCO v (v > 0 for every true point, in or out of the image).
        causes: image id -> (P, K) int8: -1 not in the truth, 0 labelled in the noisy file,
            1..4 the failure that removed it (`FAILURES`), 5 mixed (a neck whose shoulders
            were removed by different failures).
        keypoints_removed: COCO keypoints removed per failure, over the whole file.
        clean_sha256: of the clean annotation file.
    """

    parts: dict[int, np.ndarray]
    causes: dict[int, np.ndarray]
    keypoints_removed: dict[str, int] = field(default_factory=dict)
    clean_sha256: str = ""


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def keypoint_causes(
    clean_all: np.ndarray, noisy: np.ndarray | None, size_xy: tuple[int, int]
) -> np.ndarray:
    """Why each true keypoint of one person is missing from the noisy labels.

    Args:
        clean_all: (17, 3) clean `keypoints_all` (x, y image pixels, v).
        noisy: (17, 3) the noisy file's keypoints of the same annotation id, or None when
            the person is absent from the noisy file.
        size_xy: (W, H) image size in pixels.

    Returns:
        (17,) int8: -1 not in the truth (v = 0), 0 labelled in the noisy file, else
        1 out_of_image if the true point lies outside the image, 4 unannotated if the
        person is absent from the noisy file, 2 occluded if its true v = 1, 3 missed_visible
        otherwise (checked in that order).
    """
    true = clean_all[:, 2] > 0
    labelled = np.zeros(len(clean_all), bool) if noisy is None else noisy[:, 2] > 0
    outside = ~inside_image(clean_all[:, :2], np.asarray(size_xy, np.float32))
    cause = np.where(noisy is None, 4, np.where(clean_all[:, 2] == 1, 2, 3))
    cause = np.where(outside, 1, cause)
    cause = np.where(labelled, 0, cause)
    return np.where(true, cause, -1).astype(np.int8)


def part_causes(causes17: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(..., 17) COCO keypoint causes -> (..., K) part causes (neck from both shoulders)."""
    from lcdata.skeleton import COCO_PART_NAMES

    ls, rs = COCO_PART_NAMES.index("left_shoulder"), COCO_PART_NAMES.index("right_shoulder")
    out = np.empty(causes17.shape[:-1] + (skeleton.num_parts,), np.int8)
    for k, c in enumerate(skeleton.coco_index):
        if c != SYNTHESISED:
            out[..., k] = causes17[..., c]
            continue
        a, b = causes17[..., ls], causes17[..., rs]
        # the neck exists in the truth iff both shoulders do; it is missing when either is
        combined = np.where(a == 0, b, np.where((b == 0) | (a == b), a, 5))
        out[..., k] = np.where((a < 0) | (b < 0), -1, combined)
    return out


def load_clean_truth(
    clean: str | Path,
    noisy: str | Path,
    *,
    skeleton: Skeleton,
    noisy_field: str = "keypoints",
) -> CleanTruth:
    """Pair the clean truth file with the noisy file a store was built from.

    Args:
        clean: `person_keypoints_*_clean.json` of `lcdata synth`, whose person annotations
            carry `keypoints_all` (every true point, also outside the image).
        noisy: the annotation file the GT store was built from (same annotation ids).
        noisy_field: keypoint field the GT build read from the noisy file.

    Raises:
        LcposeError: malformed files, no `keypoints_all`, or files that do not pair.
    """
    clean, noisy = Path(clean), Path(noisy)
    # validation with the project's reader (one-line errors for malformed files)
    load_coco(clean, keypoint_field="keypoints_all")
    load_coco(noisy, keypoint_field=noisy_field)
    clean_data, noisy_data = _read_json(clean), _read_json(noisy)
    sizes = {img["id"]: (img["width"], img["height"]) for img in clean_data["images"]}
    noisy_kps: dict[int, tuple[int, np.ndarray]] = {}
    for ann in noisy_data["annotations"]:
        if ann.get("iscrowd") or ann.get("category_id", 1) != 1:
            continue
        key = noisy_field if noisy_field in ann else "keypoints"
        noisy_kps[ann["id"]] = (ann["image_id"], np.asarray(ann[key], np.float32).reshape(17, 3))
    persons: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    removed = dict.fromkeys(FAILURES, 0)
    clean_ids = set()
    for ann in clean_data["annotations"]:
        if ann.get("iscrowd") or ann.get("category_id", 1) != 1:
            continue
        if "keypoints_all" not in ann:
            raise LcposeError(
                f"{clean}: annotation id={ann['id']} has no 'keypoints_all' (is this the "
                f"*_clean.json file of lcdata synth?)"
            )
        clean_ids.add(ann["id"])
        kps = np.asarray(ann["keypoints_all"], np.float32).reshape(17, 3)
        pair = noisy_kps.get(ann["id"])
        if pair is not None and pair[0] != ann["image_id"]:
            raise LcposeError(
                f"{noisy}: annotation id={ann['id']} is on image {pair[0]} but on image "
                f"{ann['image_id']} in {clean}: the files do not pair"
            )
        causes = keypoint_causes(kps, None if pair is None else pair[1], sizes[ann["image_id"]])
        for code, name in enumerate(FAILURES, start=1):
            removed[name] += int((causes == code).sum())
        persons.setdefault(ann["image_id"], []).append((kps, causes))
    stray = sorted(set(noisy_kps) - clean_ids)
    if stray:
        raise LcposeError(
            f"{noisy}: annotation id={stray[0]} is not a person of {clean}: the files do not pair"
        )
    parts, causes = {}, {}
    for image_id, items in persons.items():
        kps = np.stack([k for k, _ in items])
        parts[image_id] = skeleton.from_coco(kps)
        causes[image_id] = part_causes(np.stack([c for _, c in items]), skeleton)
    return CleanTruth(parts, causes, removed, file_sha256(clean))


# ---------------------------------------------------------------------------------------
# Per-shard statistics (pure numpy; one dask task per shard)


def _limb_norms(pafs: np.ndarray) -> np.ndarray:
    """(N, 2L, h, w) -> (N, L, h, w) float64 vector lengths."""
    n, c, h, w = pafs.shape
    v = np.asarray(pafs, np.float64).reshape(n, c // 2, 2, h, w)
    return np.sqrt((v * v).sum(axis=2))


def correction_stats(
    gt_h: np.ndarray,
    gt_p: np.ndarray,
    tgt_h: np.ndarray,
    tgt_p: np.ndarray,
    masks: np.ndarray,
    *,
    paf_lengths: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Mass added/removed per part and PAF cells changed per limb, over supervised cells.

    Args:
        gt_h, tgt_h: (N, K+1, h, w) heatmaps; gt_p, tgt_p: (N, 2L, h, w) PAFs; float16 as
            stored, or float32 copies of those values.
        masks: (N, h, w) uint8, 1 = supervised.
        paf_lengths: the squared limb lengths (N, L, h, w) float32 of gt_p and tgt_p, when
            the caller has them (eq. 3 computes them); else computed here.

    Returns:
        float64 arrays: samples (1,), cells (1,) supervised cells, heat_gt (K,),
        heat_target (K,), heat_added (K,), heat_removed (K,), paf_gt_cells (L,),
        paf_target_cells (L,), paf_changed (L,), paf_mass_added (L,).
    """

    # The maps are float16 multiples of 2^-9: their differences (below 2^15 in magnitude,
    # far beyond any map) and products with the 0/1 mask are exact, and so are float64 sums
    # (every partial sum is a multiple of 2^-9 below 2^44), in any order; so all but one
    # value equal a float64 computation bit for bit (hence also removed = added - (target -
    # GT), exactly). The masked sums over samples and cells are matrix products with the
    # mask (BLAS, no (N, C, h, w) temporaries); cell counts are exact in float32 per sample.
    # The exception is `paf_mass_added`: limb lengths come from a float32 sqrt (about 1e-7
    # relative per cell; tests/test_correct.py bounds the sums against float64). The `> 0`
    # tests use squared lengths, zero only for zero vectors.
    n, c, h, w = gt_p.shape
    k = gt_h.shape[1] - 1
    m32 = np.asarray(masks, np.float32).reshape(n, h * w, 1)
    m64 = m32.astype(np.float64)

    def masked_sum(x: np.ndarray, *, exact: bool = True) -> np.ndarray:
        """(N, C, h, w) values -> (C,) float64 sums of value x mask over samples and cells;
        `exact`: the values are on the 2^-9 grid."""
        x = x.reshape(n, -1, h * w)
        # per sample, h*w grid values of magnitude below b sum exactly in float32 (in any
        # order) while h*w*b < 2^15: every partial sum then has at most 24 significant bits
        if exact and x.size and max(-float(x.min()), float(x.max())) * h * w < 2**15:
            return np.matmul(x, m32).sum(axis=(0, 2), dtype=np.float64)
        return np.matmul(x.astype(np.float64), m64).sum(axis=(0, 2))

    def masked_count(flags: np.ndarray) -> np.ndarray:
        """(N, C, h, w) bool -> (C,) float64 counts of supervised True cells."""
        per_sample = np.matmul(flags.reshape(n, -1, h * w).astype(np.float32), m32)
        return per_sample.sum(axis=(0, 2), dtype=np.float64)

    f32 = st.as_float32
    g, y = f32(gt_h)[:, :k], f32(tgt_h)[:, :k]
    heat_gt, heat_target = masked_sum(g), masked_sum(y)
    heat_added = masked_sum(np.maximum(y - g, 0))
    gp, yp = f32(gt_p), f32(tgt_p)
    gx, gy, yx, yy = gp[:, 0::2], gp[:, 1::2], yp[:, 0::2], yp[:, 1::2]  # (N, L, h, w)
    sq_g, sq_y = (gx * gx + gy * gy, yx * yx + yy * yy) if paf_lengths is None else paf_lengths
    growth = np.maximum(np.sqrt(sq_y) - np.sqrt(sq_g), 0)
    return {
        "samples": np.array([n], np.float64),
        "cells": np.array([m64.sum()]),
        "heat_gt": heat_gt,
        "heat_target": heat_target,
        "heat_added": heat_added,
        "heat_removed": heat_added - (heat_target - heat_gt),
        "paf_gt_cells": masked_count(sq_g > 0),
        "paf_target_cells": masked_count(sq_y > 0),
        "paf_changed": masked_count((gx != yx) | (gy != yy)),
        "paf_mass_added": masked_sum(growth, exact=False),
    }


def render_truth(
    parts: np.ndarray,
    causes: np.ndarray,
    affine: np.ndarray,
    flipped: bool,
    *,
    cfg: RenderConfig,
    skeleton: Skeleton,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clean maps of one stored crop and, per cell, the failure that removed them.

    Args:
        parts: (P, K, 3) clean parts, image pixels. causes: (P, K) int8 as in `CleanTruth`.
        affine: (2, 3) image -> crop pixels of the stored sample; flipped: its mirror flag.

    Returns:
        heat (K, h, w) float32 and pafs (2L, h, w) float32 clean maps on the store's 2^-9
        grid; heat_cause (K, h, w) and paf_cause (L, h, w) int8 bucket codes 1..5 (0 where no
        single failure opens a gap, i.e. labelled or mixed; callers map 0-with-gap to mixed).
    """
    k, num_limbs, size = skeleton.num_parts, skeleton.num_limbs, cfg.grid_size
    if len(parts) == 0:
        zeros = np.zeros((k, size, size), np.float32)
        return (
            zeros,
            np.zeros((2 * num_limbs, size, size), np.float32),
            zeros.astype(np.int8),
            np.zeros((num_limbs, size, size), np.int8),
        )
    crop = warp_parts(parts, affine, flipped=flipped, skeleton=skeleton)
    if flipped:
        causes = causes[:, skeleton.flip_permutation()]

    def render(keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sub = crop.copy()
        sub[..., 2] = np.where(keep, sub[..., 2], 0)
        heat, pafs = render_targets(sub, cfg=cfg, skeleton=skeleton)
        return st.quantize(heat[:-1]).astype(np.float32), st.quantize(pafs).astype(np.float32)

    heat, pafs = render(causes >= 0)
    base_h, base_p = render(causes == 0)
    base_pn = _limb_norms(base_p[None])[0]
    best_h = np.zeros_like(heat)
    best_p = np.zeros(base_pn.shape, np.float64)
    heat_cause = np.zeros(heat.shape, np.int8)
    paf_cause = np.zeros(base_pn.shape, np.int8)
    for code in range(1, len(FAILURES) + 1):
        if not (causes == code).any():
            continue
        h_c, p_c = render((causes == 0) | (causes == code))
        gap_h = h_c - base_h
        gap_p = _limb_norms(p_c[None])[0] - base_pn
        better_h, better_p = gap_h > best_h, gap_p > best_p
        heat_cause[better_h], best_h[better_h] = code, gap_h[better_h]
        paf_cause[better_p], best_p[better_p] = code, gap_p[better_p]
    return heat, pafs, heat_cause, paf_cause


def truth_stats(
    gt_h: np.ndarray,
    gt_p: np.ndarray,
    tgt_h: np.ndarray,
    tgt_p: np.ndarray,
    masks: np.ndarray,
    image_ids: np.ndarray,
    affines: np.ndarray,
    flipped: np.ndarray,
    *,
    truth: CleanTruth,
    cfg: RenderConfig,
    skeleton: Skeleton,
) -> dict[str, np.ndarray]:
    """Missing truth, its recovery per failure and false additions for one shard.

    Args:
        gt_h, tgt_h: (N, K+1, h, w); gt_p, tgt_p: (N, 2L, h, w); masks: (N, h, w).
        image_ids: (N,) int64; affines: (N, 2, 3) image -> crop px; flipped: (N,) bool.

    Returns:
        float64 arrays: heat_truth (1,), heat_missing (5,), heat_recovered (5,),
        heat_false (1,), and the same four for paf_ (buckets in `BUCKETS` order).
    """
    clean_h = np.zeros(gt_h[:, :-1].shape, np.float32)
    clean_p = np.zeros(gt_p.shape, np.float32)
    cause_h = np.zeros(clean_h.shape, np.int8)
    cause_p = np.zeros((len(gt_p), gt_p.shape[1] // 2, *gt_p.shape[2:]), np.int8)
    for i, image_id in enumerate(np.asarray(image_ids).tolist()):
        if image_id not in truth.parts:
            raise LcposeError(f"--clean: image id {image_id} of the store is not in the file")
        clean_h[i], clean_p[i], cause_h[i], cause_p[i] = render_truth(
            truth.parts[image_id],
            truth.causes[image_id],
            np.asarray(affines[i], np.float64),
            bool(flipped[i]),
            cfg=cfg,
            skeleton=skeleton,
        )
    m = np.asarray(masks, np.float64)[:, None]
    num = len(BUCKETS)

    def by_bucket(values: np.ndarray, causes: np.ndarray, gap: np.ndarray) -> np.ndarray:
        # a gap no single failure explains is "mixed" (code 5)
        codes = np.where((causes == 0) & (gap > 0), num, causes).astype(np.int64)
        sums = np.bincount(codes.ravel(), weights=(values * m).ravel(), minlength=num + 1)
        return sums[1 : num + 1]

    g = np.asarray(gt_h[:, :-1], np.float64)
    y = np.asarray(tgt_h[:, :-1], np.float64)
    c = clean_h.astype(np.float64)
    gap = np.maximum(c - g, 0)
    rec = np.minimum(gap, np.maximum(y - g, 0))
    out = {
        "heat_truth": np.array([(c * m).sum()]),
        "heat_missing": by_bucket(gap, cause_h, gap),
        "heat_recovered": by_bucket(rec, cause_h, gap),
        "heat_false": np.array([(np.maximum(y - np.maximum(c, g), 0) * m).sum()]),
    }
    n, ch, hh, ww = gt_p.shape
    shape5 = (n, ch // 2, 2, hh, ww)
    gv = np.asarray(gt_p, np.float64).reshape(shape5)
    yv = np.asarray(tgt_p, np.float64).reshape(shape5)
    cv = clean_p.astype(np.float64).reshape(shape5)
    ng, ny, nc = (np.sqrt((v * v).sum(axis=2)) for v in (gv, yv, cv))
    gap = np.maximum(nc - ng, 0)
    unit = np.divide(cv, nc[:, :, None], out=np.zeros_like(cv), where=nc[:, :, None] > 0)
    along = ((yv - gv) * unit).sum(axis=2)
    rec = np.clip(along, 0, gap)
    out.update(
        paf_truth=np.array([(nc * m).sum()]),
        paf_missing=by_bucket(gap, cause_p, gap),
        paf_recovered=by_bucket(rec, cause_p, gap),
        paf_false=np.array([(np.maximum(ny - np.maximum(nc, ng), 0) * m).sum()]),
    )
    return out


def shard_stats(
    gt_h: np.ndarray,
    gt_p: np.ndarray,
    tgt_h: np.ndarray,
    tgt_p: np.ndarray,
    masks: np.ndarray,
    image_ids: np.ndarray | None = None,
    affines: np.ndarray | None = None,
    flipped: np.ndarray | None = None,
    *,
    truth: CleanTruth | None = None,
    cfg: RenderConfig | None = None,
    skeleton: Skeleton | None = None,
    paf_lengths: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """`correction_stats` and, given `truth`, `truth_stats` of one shard, in one dict."""
    out = correction_stats(gt_h, gt_p, tgt_h, tgt_p, masks, paf_lengths=paf_lengths)
    if truth is not None:
        out.update(
            truth_stats(
                gt_h,
                gt_p,
                tgt_h,
                tgt_p,
                masks,
                image_ids,
                affines,
                flipped,
                truth=truth,
                cfg=cfg,
                skeleton=skeleton,
            )
        )
    return out


# ---------------------------------------------------------------------------------------
# The whole store


@dataclass(frozen=True)
class AnalyticsSetup:
    """What every shard's statistics need besides its arrays (see `analytics_setup`).

    Attributes:
        skeleton, cfg: of the cache store.
        truth: the clean truth (`--clean`), or None for the correction statistics only.
        clean: the `truth.file` entry of the analytics (path, sha256, keypoints_removed).
    """

    skeleton: Skeleton
    cfg: RenderConfig
    truth: CleanTruth | None = None
    clean: dict[str, Any] | None = None

    @property
    def arrays(self) -> tuple[str, ...]:
        """Cache store arrays a shard's statistics read besides gt/* (and the targets)."""
        meta = ("meta/image_id", "meta/affine", "meta/flipped") if self.truth is not None else ()
        return ("masks", *meta)

    @property
    def tag(self) -> str:
        """What saved shard statistics hold: their format and the clean file they used."""
        clean = self.truth.clean_sha256 if self.truth is not None else "none"
        return f"stats-v{STATS_VERSION} clean={clean}"

    def task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `shard_stats` in a dask task (the truth is one shared key)."""
        if self.truth is None:
            return {}
        return {"truth": dask.delayed(self.truth), "cfg": self.cfg, "skeleton": self.skeleton}


def analytics_setup(source: str | Path, clean: str | Path | None = None) -> AnalyticsSetup:
    """Read what the analytics of a correction of `source` need, checking `clean` first.

    Args:
        source: the cache store.
        clean: the synthetic benchmark's clean annotation file; its noisy counterpart is
            the annotation file recorded in the source store's attributes.

    Raises:
        LcposeError: the noisy annotation file is missing or changed, or the files do not pair.
    """
    attrs = st.read_attrs(source)
    skeleton = Skeleton.from_attrs(attrs["skeleton"])
    cfg = RenderConfig.from_attrs(attrs["render"])
    if clean is None:
        return AnalyticsSetup(skeleton, cfg)
    noisy = Path(attrs.get("source", {}).get("annotations", ""))
    if not noisy.is_file():
        raise LcposeError(
            f"--clean: the store's annotation file {noisy} is not found; it is needed to "
            f"tell which truth the labels lack"
        )
    if file_sha256(noisy) != attrs["source"].get("annotations_sha256"):
        raise LcposeError(f"--clean: {noisy} changed since the store was built")
    truth = load_clean_truth(
        clean,
        noisy,
        skeleton=skeleton,
        noisy_field=attrs.get("build", {}).get("keypoint_field", "keypoints"),
    )
    info = {
        "path": str(Path(clean).resolve()),
        "sha256": truth.clean_sha256,
        "keypoints_removed": truth.keypoints_removed,
    }
    return AnalyticsSetup(skeleton, cfg, truth, info)


def shard_stats_tasks(
    source: str | Path, corrected: str | Path, shards: list[int], setup: AnalyticsSetup
) -> list[Any]:
    """One dask.delayed `shard_stats` per listed shard, reading the stored arrays."""

    def blocks(path: str | Path, name: str) -> np.ndarray:
        return open_dask(path, name).to_delayed().ravel()

    inputs = [
        blocks(source, "gt/heatmaps"),
        blocks(source, "gt/pafs"),
        blocks(corrected, "target/heatmaps"),
        blocks(corrected, "target/pafs"),
        *(blocks(source, name) for name in setup.arrays),
    ]
    kwargs = setup.task_kwargs()
    task = dask.delayed(shard_stats, pure=True)
    return [
        task(*(arr[s] for arr in inputs), **kwargs, dask_key_name=f"{_PREFIX}-{s}") for s in shards
    ]


def sum_stats(per_shard: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Totals of `shard_stats` results, added in list order (which fixes the rounding)."""
    return {key: np.sum([r[key] for r in per_shard], axis=0) for key in per_shard[0]}


def save_shard_stats(
    folder: str | Path, shard: int, stats: dict[str, np.ndarray], *, tag: str
) -> Path:
    """Store one shard's `shard_stats` as `<folder>/<shard>.npz`, atomically.

    Written under a temporary name and renamed, so a reader (or a resumed run) sees the
    whole file or none. `tag` (`AnalyticsSetup.tag`) is stored with it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{shard}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **stats, **{_TAG_KEY: np.array(tag)})
        path = folder / f"{shard}.npz"
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_shard_stats(folder: str | Path, shard: int, *, tag: str) -> dict[str, np.ndarray] | None:
    """The statistics `save_shard_stats` stored for `shard`, or None when there are none
    with this `tag` (absent, another --clean file, another format, or unreadable)."""
    path = Path(folder) / f"{shard}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            if _TAG_KEY not in data.files or str(data[_TAG_KEY]) != tag:
                return None
            return {key: data[key] for key in data.files if key != _TAG_KEY}
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return None  # a damaged file: its shard is recomputed from the stored arrays


def collect_analytics(
    source: str | Path,
    corrected: str | Path,
    *,
    setup: AnalyticsSetup,
    saved: str | Path | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Analytics of a corrected store from per-shard statistics saved while writing it.

    Shards without statistics in `saved` (with `setup.tag`) are computed from the stored
    arrays, one dask task per shard, so the result is always complete. Totals are added
    in shard order, so they do not depend on which shards were saved and which recomputed.

    Args:
        source: the cache store (gt/*, masks, meta/*).
        corrected: the corrected store (target/*), every shard written.
        setup: `analytics_setup(source, clean)`.
        saved: folder of `save_shard_stats` files, or None to compute every shard.
        scheduler: dask.distributed address, or None for local threads.

    Returns:
        JSON-safe dict (see `summarize_stats`).
    """
    from lcdata.correct import compute_with_progress

    num = open_dask(source, "gt/heatmaps").numblocks[0]
    per_shard: dict[int, dict[str, np.ndarray]] = {}
    if saved is not None:
        for s in range(num):
            stats = load_shard_stats(saved, s, tag=setup.tag)
            if stats is not None:
                per_shard[s] = stats
    missing = [s for s in range(num) if s not in per_shard]
    if missing:
        results = compute_with_progress(
            shard_stats_tasks(source, corrected, missing, setup),
            scheduler=scheduler,
            desc="analytics",
            prefix=_PREFIX,
            progress=progress,
        )
        per_shard.update(zip(missing, results, strict=True))
    totals = sum_stats([per_shard[s] for s in range(num)])
    return summarize_stats(totals, skeleton=setup.skeleton, clean=setup.clean)


def compute_analytics(
    source: str | Path,
    corrected: str | Path,
    *,
    clean: str | Path | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Analytics of a corrected store against its cache store (one dask task per shard).

    `lcdata correct` computes the same statistics inside its write tasks instead (see
    `collect_analytics`); this re-reads every shard.

    Args:
        source: the cache store (gt/*, masks, meta/*).
        corrected: the corrected store (target/*), every shard written.
        clean: the synthetic benchmark's clean annotation file; its noisy counterpart is
            the annotation file recorded in the source store's attributes.
        scheduler: dask.distributed address, or None for local threads.

    Returns:
        JSON-safe dict (see `summarize_stats`).
    """
    return collect_analytics(
        source,
        corrected,
        setup=analytics_setup(source, clean),
        scheduler=scheduler,
        progress=progress,
    )


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def summarize_stats(
    totals: dict[str, np.ndarray], *, skeleton: Skeleton, clean: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Summed shard statistics -> the JSON-safe `analytics` attribute.

    Keys: samples, supervised_cells; heatmaps {parts, gt_mass, target_mass, added, removed
    (per part), added_total, added_fraction (of GT mass)}; pafs {limbs, gt_cells, target_cells,
    changed, changed_fraction (of supervised cells), mass_added (per limb), changed_total};
    and with clean labels: truth {file, heatmaps/pafs {truth_mass, missing, recovered,
    recovered_fraction (per failure and total), false_additions, false_fraction (of truth
    mass)}}.
    """
    cells = float(totals["cells"][0])
    names = list(skeleton.names)
    limbs = [f"{names[a]}-{names[b]}" for a, b in skeleton.limbs]
    added, gt_mass = totals["heat_added"], totals["heat_gt"]
    out: dict[str, Any] = {
        "samples": int(totals["samples"][0]),
        "supervised_cells": int(cells),
        "heatmaps": {
            "parts": names,
            "gt_mass": totals["heat_gt"].tolist(),
            "target_mass": totals["heat_target"].tolist(),
            "added": added.tolist(),
            "removed": totals["heat_removed"].tolist(),
            "added_total": float(added.sum()),
            "removed_total": float(totals["heat_removed"].sum()),
            "added_fraction": _ratio(added.sum(), gt_mass.sum()),
        },
        "pafs": {
            "limbs": limbs,
            "gt_cells": totals["paf_gt_cells"].astype(int).tolist(),
            "target_cells": totals["paf_target_cells"].astype(int).tolist(),
            "changed": totals["paf_changed"].astype(int).tolist(),
            "changed_fraction": (totals["paf_changed"] / max(cells, 1)).tolist(),
            "changed_total": int(totals["paf_changed"].sum()),
            "mass_added": totals["paf_mass_added"].tolist(),
        },
    }
    if clean is not None:
        truth: dict[str, Any] = {"file": clean}
        for kind in ("heat", "paf"):
            missing, recovered = totals[f"{kind}_missing"], totals[f"{kind}_recovered"]
            mass = float(totals[f"{kind}_truth"][0])
            truth["heatmaps" if kind == "heat" else "pafs"] = {
                "truth_mass": mass,
                "missing": dict(zip(BUCKETS, missing.tolist(), strict=True))
                | {"total": float(missing.sum())},
                "recovered": dict(zip(BUCKETS, recovered.tolist(), strict=True))
                | {"total": float(recovered.sum())},
                "recovered_fraction": {
                    b: _ratio(r, m) for b, r, m in zip(BUCKETS, recovered, missing, strict=True)
                }
                | {"total": _ratio(recovered.sum(), missing.sum())},
                "false_additions": float(totals[f"{kind}_false"][0]),
                "false_fraction": _ratio(totals[f"{kind}_false"][0], mass),
            }
        out["truth"] = truth
    return out


def format_analytics(analytics: dict[str, Any]) -> list[str]:
    """Text lines of the `analytics` attribute (for `lcdata inspect` and `lcdata correct`)."""
    lines = [f"correction analytics over {analytics['samples']} samples, supervised cells only"]
    heat = analytics["heatmaps"]
    frac = heat.get("added_fraction")
    lines.append(
        f"  heatmaps: target added {heat['added_total']:.1f} mass to the parts"
        + (f" ({frac:.1%} of GT mass)" if frac is not None else "")
        + f", removed {heat['removed_total']:.1f}"
    )
    per_part = [
        f"{name} +{a:.1f}" for name, a in zip(heat["parts"], heat["added"], strict=True) if a > 0
    ]
    if per_part:
        lines += _wrap("added per part: ", per_part)
    pafs = analytics["pafs"]
    total_frac = pafs["changed_total"] / max(analytics["supervised_cells"] * len(pafs["limbs"]), 1)
    lines.append(
        f"  pafs: {pafs['changed_total']} limb cells differ from GT ({total_frac:.2%} of "
        f"supervised limb cells)"
    )
    per_limb = [
        f"{name} {f:.2%}"
        for name, f in zip(pafs["limbs"], pafs["changed_fraction"], strict=True)
        if f > 0
    ]
    if per_limb:
        lines += _wrap("changed per limb: ", per_limb)
    truth = analytics.get("truth")
    if truth:
        lines.append(f"  against the clean truth {Path(truth['file']['path']).name}:")
        for kind in ("heatmaps", "pafs"):
            t = truth[kind]
            rec = t["recovered_fraction"]
            parts = [
                f"{b.replace('_', ' ')} {_pct(rec[b])} of {t['missing'][b]:.1f}" for b in BUCKETS
            ]
            lines.append(
                f"    {kind}: missing {t['missing']['total']:.1f} of {t['truth_mass']:.1f} truth "
                f"mass, recovered {_pct(rec['total'])}; false additions "
                f"{t['false_additions']:.1f} ({_pct(t['false_fraction'])} of truth)"
            )
            lines += _wrap("  recovered by failure: ", parts)
    return lines


def _wrap(title: str, items: list[str], width: int = 100) -> list[str]:
    return textwrap.wrap(
        ", ".join(items), width, initial_indent="    " + title, subsequent_indent="      "
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
