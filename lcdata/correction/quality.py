"""Label-quality AP: how well the stored targets of a store describe the clean truth.

`score_labels` decodes the target maps of every sample with the project's decoder, as if they
were a model's outputs, and scores the decoded persons with COCOeval against a clean
annotation file mapped into each crop; no model is trained. It is a minute-long proxy for
"did this correction make the labels better" (docs/correction.md compares it with the AP
of the students the targets train).

The protocol (`PROTOCOL`, printed beside the numbers):
* each sample is one COCO image of S x S pixels; its truth is the clean file's persons of
  the sample's `meta/image_id`, moved into the crop by `meta/affine` (left and right swapped
  where `meta/flipped`), with `area` scaled by the affine's |det|;
* a truth keypoint counts only where it lies on the crop and in a supervised cell (mask 1):
  the targets say nothing about the rest;
* a truth person with fewer than half of its labelled keypoints counted is an ignore
  region (iscrowd = 1): detections that match it neither score nor cost; a person with none
  is dropped. Crowd regions of the clean file are moved into the crop as ignore regions;
* decoding uses `DecodeConfig()` unless another is given, on maps at the store's stride.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from tqdm import tqdm

from lcdata.errors import LcposeError
from lcdata.labels.augment import warp_parts
from lcdata.labels.coco import NUM_COCO_KEYPOINTS
from lcdata.labels.decode import DecodeConfig, decode
from lcdata.labels.grid import nearest_cell
from lcdata.labels.scoring import coco_results, evaluate_results
from lcdata.labels.skeleton import Skeleton
from lcdata.store.training import open_training_store

PROTOCOL = (
    "label-quality AP: each sample's {target} maps decoded (DecodeConfig {decode}) and scored "
    "by COCOeval, crop by crop, against {clean} moved into the crop by meta/affine; truth "
    "keypoints off the crop or in ignored cells are not scored, a person with fewer than half "
    "of its labelled keypoints left is an ignore region"
)
MIN_SHARE = 0.5
"""A truth person needs at least this share of its labelled keypoints in supervised cells of
the crop to be scored; below it, it is an ignore region."""


def read_truth(path: str | Path) -> dict[int, list[dict[str, Any]]]:
    """A COCO keypoint file's annotations by image id (`keypoints`, `area`, `iscrowd`,
    `bbox`), for `crop_truth`.

    Raises:
        LcposeError: a missing file or one that is not a COCO annotation file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        anns = data["annotations"]
    except FileNotFoundError:
        raise LcposeError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise LcposeError(f"{path}: not a COCO annotation file ({err})") from None
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in anns:
        by_image[int(ann["image_id"])].append(ann)
    return dict(by_image)


def _box_in_crop(bbox: list[float], affine: np.ndarray) -> list[float]:
    """xywh image box -> the xywh box around its four corners in the crop."""
    x, y, w, h = bbox
    corners = np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], np.float64)
    moved = corners @ affine[:, :2].T + affine[:, 2]
    lo, hi = moved.min(axis=0), moved.max(axis=0)
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def crop_truth(
    anns: list[dict[str, Any]],
    affine: np.ndarray,
    flipped: bool,
    mask: np.ndarray,
    *,
    stride: int,
    skeleton: Skeleton,
) -> list[dict[str, Any]]:
    """The clean annotations of one image as COCO annotations of one crop (module doc).

    Args:
        anns: the image's annotations (`read_truth`), image pixels.
        affine: (2, 3) image -> crop pixels. flipped: whether it mirrors.
        mask: (h, h) the crop's supervision mask (1 = supervised).
        stride: crop pixels per cell; skeleton: the store's (for the mirror's swap).

    Returns:
        Annotations without `id` / `image_id` (the caller numbers them): `keypoints` (51
        numbers, crop pixels), `num_keypoints`, `area`, `bbox`, `iscrowd`.
    """
    affine = np.asarray(affine, np.float64)
    det = abs(float(np.linalg.det(affine[:, :2])))
    h = mask.shape[0]
    out = []
    for ann in anns:
        bbox = _box_in_crop(ann.get("bbox", [0, 0, 0, 0]), affine)
        area = float(ann.get("area", 0.0)) * det
        if ann.get("iscrowd"):
            out.append({"keypoints": [0] * 3 * NUM_COCO_KEYPOINTS, "num_keypoints": 0,
                        "area": area, "bbox": bbox, "iscrowd": 1})  # fmt: skip
            continue
        kps = np.asarray(ann["keypoints"], np.float32).reshape(1, NUM_COCO_KEYPOINTS, 3)
        labelled = int((kps[0, :, 2] > 0).sum())
        if labelled == 0:
            continue
        # through the skeleton's parts: the mirror's left/right swap is defined there
        parts = warp_parts(skeleton.from_coco(kps), affine, flipped=flipped, skeleton=skeleton)
        moved = skeleton.to_coco(parts)[0]
        cells = nearest_cell(moved[:, :2], stride)
        on_grid = np.all((cells >= 0) & (cells < h), axis=1)
        counted = moved[:, 2] > 0
        counted[on_grid] &= mask[cells[on_grid, 1], cells[on_grid, 0]] > 0
        counted &= on_grid
        moved[~counted] = 0
        n = int(counted.sum())
        if n == 0:
            continue
        out.append({
            "keypoints": [round(float(v), 2) for v in moved.reshape(-1)],
            "num_keypoints": n,
            "area": area,
            "bbox": bbox,
            "iscrowd": int(n < MIN_SHARE * labelled),
        })  # fmt: skip
    return out


def score_labels(
    store: str | Path,
    clean: str | Path,
    *,
    target: str = "auto",
    max_samples: int | None = None,
    cfg: DecodeConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Label-quality AP of a store's target maps against a clean annotation file.

    Args:
        store: a cache store (its `gt` maps by default, or `teacher`) or a corrected store
            (its `target` maps); see `lcdata.store.training.TARGET_KINDS`.
        clean: a COCO keypoint file of the same images (the synthetic benchmark's
            `*_clean.json`, or any reference labels).
        target: which maps to score.
        max_samples: score the first N samples only (default all).
        cfg: decoder settings (default `DecodeConfig()`).

    Returns:
        {"metrics": the 10 COCOeval numbers, "samples", "truth_persons", "ignored_persons",
         "detections", "protocol"}.
    """
    spec = open_training_store(store, target=target)
    info = spec.info
    cfg = cfg or DecodeConfig()
    truth = read_truth(clean)
    n = spec.num_samples if max_samples is None else min(int(max_samples), spec.num_samples)
    if n < 1:
        raise LcposeError(f"{store}: no samples to score")
    meta_from = zarr.open_group(str(spec.arrays["masks"][0]), mode="r")
    for name in ("meta/image_id", "meta/affine", "meta/flipped"):
        if name not in meta_from:
            raise LcposeError(f"{spec.arrays['masks'][0]}: {name} missing; cannot place the truth")
    arrays = {k: zarr.open_array(str(w / p), mode="r") for k, (w, p) in spec.arrays.items()}
    skeleton, stride, s = info.skeleton, info.render.stride, info.render.input_size
    images, annotations, results = [], [], []
    per = spec.samples_per_block
    for start in tqdm(range(0, n, per), desc="score-labels", unit="block", disable=not progress):
        stop = min(start + per, n)
        heat = np.asarray(arrays["heatmaps"][start:stop], np.float32)
        pafs = np.asarray(arrays["pafs"][start:stop], np.float32)
        masks = np.asarray(arrays["masks"][start:stop])
        ids = np.asarray(meta_from["meta/image_id"][start:stop])
        affines = np.asarray(meta_from["meta/affine"][start:stop], np.float64)
        flips = np.asarray(meta_from["meta/flipped"][start:stop])
        for j in range(stop - start):
            sample = start + j
            images.append({"id": sample, "width": s, "height": s})
            for ann in crop_truth(
                truth.get(int(ids[j]), []), affines[j], bool(flips[j]), masks[j],
                stride=stride, skeleton=skeleton,
            ):  # fmt: skip
                annotations.append({**ann, "id": len(annotations) + 1, "image_id": sample,
                                    "category_id": 1})  # fmt: skip
            persons = decode(heat[j], pafs[j], skeleton=skeleton, stride=stride, cfg=cfg)
            results.extend(coco_results(sample, persons, skeleton=skeleton))
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}],
    }
    metrics = evaluate_results(gt, results)
    scored = [a for a in annotations if not a["iscrowd"]]
    return {
        "metrics": metrics,
        "samples": n,
        "target": spec.target,
        "truth_persons": len(scored),
        "ignored_persons": len(annotations) - len(scored),
        "detections": len(results),
        "decode": cfg.to_attrs(),
        "protocol": PROTOCOL.format(
            target=spec.target,
            decode="default" if cfg == DecodeConfig() else "custom",
            clean=Path(clean).name,
        ),
    }
