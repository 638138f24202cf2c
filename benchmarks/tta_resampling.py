"""Resampling error of the teacher TTA's zoom views (the table quoted in docs/correction.md).

    python benchmarks/tta_resampling.py STORE.zarr [--samples 256]

A zoom view of TTA resamples the crop and then maps the teacher's outputs back with the
inverse affine (`lcdata.build.tta`). This measures what the mapping back alone costs, with
maps whose truth is known: the stored GT maps of a store are warped by the zoom and back
(`warp_maps` twice, the background warped, as TTA does), and compared with themselves on the
cells the view saw. Reported per zoom: mean |difference| of the part heatmaps and of the
PAF vectors relative to their mean over cells where they are non-zero, the largest heatmap
difference, and the change of the peak values (max of each part channel). The teacher's own
behaviour under zoom (its peaks are as wide as the person is large) comes on top of it.
"""

from __future__ import annotations

import argparse

import numpy as np
import zarr

from lcdata.build.tta import _zoom_affine
from lcdata.labels.skeleton import Skeleton
from lcdata.labels.warp import warp_crop, warp_maps
from lcdata.store.layout import read_attrs

SCALES = (0.7, 0.8, 0.9, 1.1, 1.25, 1.4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    attrs = read_attrs(args.store)
    skeleton = Skeleton.from_attrs(attrs["skeleton"])
    stride, size = attrs["render"]["stride"], attrs["render"]["input_size"]
    g = zarr.open_group(args.store, mode="r")
    n = min(args.samples, g["gt/heatmaps"].shape[0])
    heat = np.asarray(g["gt/heatmaps"][:n], np.float32)
    pafs = np.asarray(g["gt/pafs"][:n], np.float32)
    k, h = skeleton.num_parts, heat.shape[-1]
    ones = np.ones((h, h), np.uint8)
    blank = np.zeros((size, size, 3), np.uint8)
    print(f"{args.store}: {n} samples of {size} px, stride {stride}, GT maps round-tripped")
    print("| zoom | heatmap mean abs err (rel.) | heatmap max abs err | PAF mean abs err (rel.) "
          "| peak value change (mean) | cells seen |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for scale in SCALES:
        fwd, inv = _zoom_affine(scale, False, size), _zoom_affine(1 / scale, False, size)
        _, seen = warp_crop(blank, ones, inv, stride=stride)
        seen = seen.astype(bool)
        dh, dp, ref_h, ref_p, peaks = [], [], [], [], []
        for i in range(n):
            vh, vp = warp_maps(heat[i], pafs[i], fwd, stride=stride, skeleton=skeleton,
                               background="warp")  # fmt: skip
            bh, bp = warp_maps(vh, vp, inv, stride=stride, skeleton=skeleton, background="warp")
            m = seen
            dh.append(np.abs(bh[:k] - heat[i, :k])[:, m].ravel())
            ref_h.append(heat[i, :k][:, m][heat[i, :k][:, m] > 0.01])
            vec = np.abs(bp - pafs[i])[:, m].ravel()
            dp.append(vec)
            ref_p.append(np.abs(pafs[i])[:, m][np.abs(pafs[i])[:, m] > 0.01])
            on = heat[i, :k][:, m].max(axis=1) > 0.5 if m.any() else np.zeros(k, bool)
            before = heat[i, :k][:, m].max(axis=1)
            peaks.append((bh[:k][:, m].max(axis=1) - before)[on])
        dh, dp = np.concatenate(dh), np.concatenate(dp)
        mh, mp = np.concatenate(ref_h).mean(), np.concatenate(ref_p).mean()
        print(
            f"| {scale:g} | {dh.mean():.4f} ({dh.mean() / mh:.1%}) | {dh.max():.3f} | "
            f"{dp.mean():.4f} ({dp.mean() / mp:.1%}) | {np.concatenate(peaks).mean():+.3f} | "
            f"{seen.mean():.0%} |"
        )


if __name__ == "__main__":
    main()
