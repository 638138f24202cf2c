"""Consistency error of warped teacher maps (the table quoted in docs/augmentation.md).

    python benchmarks/warp_consistency.py CACHE.zarr TEACHER.pt2 [--samples 256]

For stored samples of a cache store with teacher maps, and for each transform: the stored
teacher maps warped with the crop (`lcdata.labels.warp.warp_sample`) against the exported
teacher run on the warped crop. Reported over the supervised cells of the warped view:
mean |difference| of the part heatmaps and of the PAF vectors, each relative to the mean
of the teacher's own map on the warped crop, and the share of cells whose heatmap differs
by more than 0.1, and the peak-area ratio: cells at or above half of their channel's maximum
(channels whose maximum exceeds 0.5), in the warped maps over the teacher's maps of the
warped crop. Half of each map's own maximum, so that resampling, which lowers peaks, does
not count as narrowing. A zoom by s widens a warped peak by s, its area by s^2: a teacher
that keeps its peak width whatever the scale (as the fixed-sigma GT it learned) gives a
ratio near s^2, one whose peaks scale with the crop gives 1. "identity" measures
the float16 storage alone; a flip measures how far the teacher is from mirror-equivariant,
which no warp can remove.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import zarr

from lcdata.build.teacher import load_teacher
from lcdata.labels.augment import View
from lcdata.labels.skeleton import Skeleton
from lcdata.labels.warp import jitter_affine, warp_sample
from lcdata.store.layout import read_attrs

TRANSFORMS = [
    ("identity", dict()),
    ("flip", dict(flip=True)),
    ("rotate 10", dict(angle_deg=10.0)),
    ("rotate 20", dict(angle_deg=20.0)),
    ("rotate 30", dict(angle_deg=30.0)),
    ("rotate 45", dict(angle_deg=45.0)),
    ("scale 0.75", dict(scale=0.75)),
    ("scale 0.9", dict(scale=0.9)),
    ("scale 1.1", dict(scale=1.1)),
    ("scale 1.25", dict(scale=1.25)),
    ("shift 5%", dict(shift=0.05)),
    ("flip + rotate 30 + scale 1.25", dict(flip=True, angle_deg=30.0, scale=1.25)),
]


def half_max_area(maps: np.ndarray, valid: np.ndarray) -> int:
    """Supervised cells at or above half of their channel's maximum, over the channels whose
    maximum exceeds 0.5. maps (N, K, h, w), valid (N, 1, h, w) bool."""
    peak = maps.max(axis=(2, 3), keepdims=True)
    return int(((maps >= 0.5 * peak) & (peak > 0.5) & valid).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache")
    parser.add_argument("teacher")
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    attrs = read_attrs(args.cache)
    skeleton = Skeleton.from_attrs(attrs["skeleton"])
    stride, size = attrs["render"]["stride"], attrs["render"]["input_size"]
    g = zarr.open_group(args.cache, mode="r")
    n = min(args.samples, g["images"].shape[0])
    images, masks = g["images"][:n], g["masks"][:n]
    t_heat, t_paf = g["teacher/heatmaps"][:n], g["teacher/pafs"][:n]
    teacher = load_teacher(args.teacher)
    k, c = skeleton.num_parts, (size - 1) / 2
    print(f"{args.cache}: {n} samples of {size} px, stride {stride}; teacher {args.teacher}")
    header = ("transform", "heatmap mean abs diff / mean", "PAF mean abs diff / mean",
              "cells with heatmap diff > 0.1", "peak area, warped / teacher")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---|")
    for name, t in TRANSFORMS:
        shift = t.get("shift", 0.0) * size
        view = View(
            center_xy=(c + shift, c + shift), flip=t.get("flip", False),
            angle_deg=t.get("angle_deg", 0.0), scale=t.get("scale", 1.0),
        )  # fmt: skip
        affine = jitter_affine(view, size)
        warped = [
            warp_sample(images[i], masks[i], t_heat[i], t_paf[i], affine, stride=stride,
                        skeleton=skeleton)
            for i in range(n)
        ]  # fmt: skip
        crops = np.stack([w[0] for w in warped])
        valid = np.stack([w[1] for w in warped]).astype(bool)
        heat_w = np.stack([w[2] for w in warped])[:, :k]
        paf_w = np.stack([w[3] for w in warped])
        heat_t, paf_t = [], []
        for s in range(0, n, 32):
            h, p = teacher.predict(crops[s : s + 32])
            heat_t.append(h[:, :k])
            paf_t.append(p)
        heat_t, paf_t = np.concatenate(heat_t), np.concatenate(paf_t)
        v = valid[:, None]
        dh = np.abs(heat_w - heat_t)
        dp = np.abs(paf_w - paf_t)
        rel_h = (dh * v).sum() / max((np.abs(heat_t) * v).sum(), 1e-9)
        rel_p = (dp * v).sum() / max((np.abs(paf_t) * v).sum(), 1e-9)
        big = ((dh > 0.1) & v).sum() / max(v.sum() * k, 1)
        area = half_max_area(heat_w, v) / max(half_max_area(heat_t, v), 1)
        print(f"| {name} | {rel_h:.3f} | {rel_p:.3f} | {big:.2%} | {area:.2f} |")


if __name__ == "__main__":
    main()
