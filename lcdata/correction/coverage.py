"""How much of the truth the labels lack the teacher's outputs cover.

Keypoint by keypoint and limb cell by limb cell, by the failure that removed it (the
synthetic benchmark's clean truth, `lcdata.synth.truth`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from lcdata.correction.stats import render_truth
from lcdata.labels.augment import warp_parts
from lcdata.labels.grid import nearest_cell
from lcdata.store.layout import StoreInfo
from lcdata.synth.truth import BUCKETS, load_clean_truth


def teacher_coverage(
    cache: str | Path, clean: str | Path, *, max_samples: int, threshold: float = 0.5
) -> dict[str, Any]:
    """How much of the truth missing from the labels the teacher's outputs cover.

    Keypoints: every true part of the clean file that lies in a supervised cell of a stored
    crop, by why the noisy labels lack it (`lcdata.synth.truth.BUCKETS`; "labelled" for parts
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
    info = StoreInfo.read(cache)
    attrs, skeleton, render = info.attrs, info.skeleton, info.render
    truth = load_clean_truth(
        clean,
        attrs["source"]["annotations"],
        skeleton=skeleton,
        noisy_field=attrs.get("build", {}).get("keypoint_field", "keypoints"),
    )
    group = zarr.open_group(str(cache), mode="r")
    n = min(int(max_samples), info.num_samples)
    per = info.samples_per_block
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
            cells = nearest_cell(crop[..., :2], stride)
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
            # a missing cell no single failure explains is "mixed" (as in lcdata.correction.stats)
            codes = np.where(paf_cause == 0, len(BUCKETS), paf_cause)
            for code in range(1, len(BUCKETS) + 1):
                cells_c = missing & (codes == code)
                paf[names[code]]["n"] += int(cells_c.sum())
                paf[names[code]]["teacher"] += int((cells_c & (along > threshold)).sum())
    for table in (kp, paf):
        dropped = {key: sum(table[b][key] for b in BUCKETS) for key in table["labelled"]}
        table["all_missing"] = dropped
    return {"samples": n, "threshold": threshold, "keypoints": kp, "paf_cells": paf}
