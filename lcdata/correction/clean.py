"""The clean truth rendered into stored crops: targets a student's labels should have had.

A store's crops were cut from the training images by `meta/affine` (mirrored where
`meta/flipped`); the clean annotation file of the same images (the synthetic benchmark's
`*_clean.json`) rendered through the same affine gives the targets without the label defects,
crop by crop, on the store's own grid and render geometry. `trainer.probe` measures a
student's loss against them on a fixed probe of training samples, so that a learning curve
shows the moment the student starts fitting the defects of its labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from lcdata.config import RenderConfig
from lcdata.correction.quality import read_truth
from lcdata.errors import LcposeError
from lcdata.labels.augment import warp_parts
from lcdata.labels.coco import NUM_COCO_KEYPOINTS
from lcdata.labels.render import render_targets
from lcdata.labels.skeleton import Skeleton
from lcdata.store.training import open_training_store


def render_clean(
    anns: list[dict[str, Any]],
    affine: np.ndarray,
    flipped: bool,
    *,
    render: RenderConfig,
    skeleton: Skeleton,
) -> tuple[np.ndarray, np.ndarray]:
    """The clean maps of one crop, as the GT builder renders a label.

    Args:
        anns: the image's clean annotations (`read_truth`), keypoints in image pixels;
            crowd annotations carry no keypoints and are skipped.
        affine: (2, 3) image -> crop pixels. flipped: whether the crop is mirrored.
        render: the store's geometry (stride, sigma, crop size). skeleton: the store's.

    Returns:
        heatmaps (K + 1, h, h) and PAFs (2L, h, h), float32.
    """
    kps = [
        np.asarray(a["keypoints"], np.float32).reshape(NUM_COCO_KEYPOINTS, 3)
        for a in anns
        if not a.get("iscrowd") and "keypoints" in a
    ]
    coco = np.stack(kps) if kps else np.zeros((0, NUM_COCO_KEYPOINTS, 3), np.float32)
    parts = warp_parts(
        skeleton.from_coco(coco), np.asarray(affine, np.float64), flipped=flipped,
        skeleton=skeleton,
    )  # fmt: skip
    return render_targets(parts, cfg=render, skeleton=skeleton)


def probe_indices(num_samples: int, size: int) -> np.ndarray:
    """`size` sample indices spread evenly over a store (all of them if it is smaller):
    a fixed probe that needs no seed and covers every block's images."""
    if num_samples < 1 or size < 1:
        raise LcposeError(f"a probe needs samples (store has {num_samples}, asked {size})")
    return np.unique(np.linspace(0, num_samples - 1, min(size, num_samples)).round().astype(int))


def clean_probe(
    store: str | Path, clean: str | Path, *, size: int = 256, target: str = "auto"
) -> dict[str, np.ndarray]:
    """A fixed probe of a training store's samples, unaugmented, with clean and stored maps.

    Args:
        store: a training store (cache, GT or corrected). clean: the clean annotation file
            of its images. size: samples in the probe (`probe_indices`).
        target: which stored maps the student trained on (`lcdata.store.training`).

    Returns:
        index (N,) int, images (N, S, S, 3) uint8, masks (N, 1, h, h) float32, and float32
        maps: clean_heatmaps / clean_pafs (the truth through meta/affine) and heatmaps /
        pafs (the store's training targets of the same samples), (N, C, h, h).

    Raises:
        LcposeError: a store without the meta arrays that place the truth, or a bad file.
    """
    spec = open_training_store(store, target=target)
    truth = read_truth(clean)
    meta_path = spec.arrays["masks"][0]
    meta = zarr.open_group(str(meta_path), mode="r")
    for name in ("meta/image_id", "meta/affine", "meta/flipped"):
        if name not in meta:
            raise LcposeError(f"{meta_path}: {name} missing; cannot place the clean truth")
    arrays = {}
    for k in ("images", "masks", "heatmaps", "pafs"):
        where, name = spec.arrays[k]
        arrays[k] = zarr.open_array(str(where / name), mode="r")
    index = probe_indices(spec.num_samples, size)
    ids = np.asarray(meta["meta/image_id"][:])[index]
    affines = np.asarray(meta["meta/affine"][:], np.float64)[index]
    flips = np.asarray(meta["meta/flipped"][:])[index]
    truth_maps = [
        render_clean(
            truth.get(int(ids[j]), []), affines[j], bool(flips[j]),
            render=spec.render, skeleton=spec.skeleton,
        )
        for j in range(len(index))
    ]  # fmt: skip
    stored = {k: a.get_orthogonal_selection((index,)) for k, a in arrays.items()}
    return {
        "index": index,
        "images": np.asarray(stored["images"]),
        "masks": np.asarray(stored["masks"], np.float32)[:, None],
        "heatmaps": np.asarray(stored["heatmaps"], np.float32),
        "pafs": np.asarray(stored["pafs"], np.float32),
        "clean_heatmaps": np.stack([h for h, _ in truth_maps]),
        "clean_pafs": np.stack([p for _, p in truth_maps]),
    }
