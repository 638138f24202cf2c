"""What a correction did to the labels, per block of samples: pure numpy statistics.

Letters used in shapes below:
    N     samples of one block;  K  parts;  L  limbs;  h, w  output grid in cells
    Y     the target maps (`target/*` of a corrected store), G the GT maps, C the clean truth

Every sum runs over supervised cells only (mask = 1): masked cells get no gradient, so what
a target holds there does not matter for training. Heatmap sums cover the K part channels
(the background is derived from them). All sums are float64.

Always (`correction_stats`):
    heatmaps.added[k]    sum max(0, Y_k - G_k): mass the correction added to part k
                         (for mode max: sum max(0, H_T - H_GT), the teacher's contribution)
    heatmaps.removed[k]  sum max(0, G_k - Y_k) (non-zero only for the KD blends)
    pafs.changed[l]      supervised cells where limb l's (x, y) target differs from GT's
    pafs.mass_added[l]   sum max(0, ||Y_l|| - ||G_l||)

With the synthetic benchmark's clean labels (`lcdata.synth.truth.CleanTruth`), C is rendered
for every stored sample by replaying its stored affine and flip (`truth_stats`), and
    missing    sum gap,  gap = max(0, C - G)                      (heatmaps, per cell/part)
               gap = max(0, ||C_l|| - ||G_l||)                     (PAFs, per cell/limb)
    recovered  sum min(gap, max(0, Y - G))                         (heatmaps)
               sum clip(<Y_l - G_l, C_l / ||C_l||>, 0, gap)        (PAFs: only the part of the
               change that points along the true limb counts)
    false      sum max(0, Y - max(C, G))                            (heatmaps)
               sum max(0, ||Y_l|| - max(||C_l||, ||G_l||))         (PAFs)
`missing` and `recovered` are split by the failure that removed the truth (`BUCKETS`): each
cell goes to the failure whose keypoints alone, added to the labelled ones, open the largest
gap there; cells that no single failure explains (e.g. a limb whose two ends were removed by
different failures) go to "mixed".

A block's statistics are saved (`save_block_stats`) by the task that writes its targets and
added up in block order (`sum_stats`), which fixes the rounding.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.io import atomic_path
from lcdata.labels.augment import warp_parts
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import Skeleton
from lcdata.store.codec import as_float32, quantize
from lcdata.synth.truth import BUCKETS, FAILURES, CleanTruth

STATS_DIR = ".lcpose-analytics"
"""Folder inside a corrected store that holds each written block's statistics (`<block>.npz`)
until the store is complete; `lcdata correct` removes it once the totals are in the attributes."""
STATS_VERSION = 2
"""Format of the saved block statistics: bump when `block_stats` changes what it returns
(2: failure causes classified in the generator's order, `lcdata.synth.truth`)."""
_TAG_KEY = "_tag"


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

    f32 = as_float32
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
        return quantize(heat[:-1]).astype(np.float32), quantize(pafs).astype(np.float32)

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
    """Missing truth, its recovery per failure and false additions for one block.

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
            raise LcposeError(f"clean truth: image id {image_id} of the store is not in the file")
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


def block_stats(
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
    """`correction_stats` and, given `truth`, `truth_stats` of one block, in one dict."""
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


def sum_stats(per_block: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Totals of `block_stats` results, added in list order (which fixes the rounding)."""
    return {key: np.sum([r[key] for r in per_block], axis=0) for key in per_block[0]}


def save_block_stats(
    folder: str | Path, block: int, stats: dict[str, np.ndarray], *, tag: str
) -> Path:
    """Store one block's `block_stats` as `<folder>/<block>.npz`, atomically (a reader, or a
    resumed run, sees the whole file or none). `tag` (`AnalyticsSetup.tag`) is stored with it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{block}.npz"
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **stats, **{_TAG_KEY: np.array(tag)})
    return path


def load_block_stats(folder: str | Path, block: int, *, tag: str) -> dict[str, np.ndarray] | None:
    """The statistics `save_block_stats` stored for `block`, or None when there are none
    with this `tag` (absent, another --clean file, another format, or unreadable)."""
    path = Path(folder) / f"{block}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            if _TAG_KEY not in data.files or str(data[_TAG_KEY]) != tag:
                return None
            return {key: data[key] for key in data.files if key != _TAG_KEY}
    except FileNotFoundError:
        return None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return None  # a damaged file: its block is recomputed from the stored arrays
