"""Reading the synthetic benchmark back: paired labels and why each keypoint is missing.

`keypoint_causes` is the one classifier of the failures; every report and analytic uses it.

The failures are those of Kato et al. (sec. 3), in cause-code order 1..4 (`FAILURES`). The
generator (`lcdata.synth.scene.corrupt`) decides failure 4 first and applies 1-3 in order to
the annotated persons, so every removed keypoint has exactly one cause, and the files alone
tell which: `keypoint_causes` checks in the generator's order (unannotated person, outside
the image, occluded, else missed), which makes the read-back agree with the generator's own
counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lcdata.config import SYNTH_RENDER, RenderConfig
from lcdata.errors import LcposeError
from lcdata.io import file_sha256, read_json
from lcdata.labels.coco import NUM_COCO_KEYPOINTS, load_coco
from lcdata.labels.grid import inside_image
from lcdata.labels.render import render_heatmaps, render_pafs
from lcdata.labels.skeleton import CMU_SKELETON, COCO_PART_NAMES, SYNTHESISED, Skeleton

FAILURES: tuple[str, ...] = ("out_of_image", "severely_occluded", "missed_visible", "unannotated")
"""The paper's four label failures (sec. 3.1), in cause-code order 1..4."""
BUCKETS: tuple[str, ...] = (*FAILURES, "mixed")
"""Cause codes 1..5 of a missing cell; 0 = labelled in the noisy file, -1 = not in the truth."""
FAILURE_ALIASES: dict[str, str] = {"occluded": "severely_occluded"}
"""Older spellings found in stored analytics and experiment outputs -> the current name."""


def canonical_failure(name: str) -> str:
    """The current name of a failure or bucket, whichever spelling a stored record used."""
    return FAILURE_ALIASES.get(name, name)


def canonical_keys(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with failure names among its keys spelled as today (other keys unchanged)."""
    return {canonical_failure(k): v for k, v in record.items()}


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
        (17,) int8: -1 not in the truth (v = 0), 0 labelled in the noisy file, else in the
        generator's order 4 unannotated (the person is absent from the noisy file), 1
        out_of_image (the true point lies outside the image), 2 severely_occluded (true
        v = 1: failure 3 only removes visible points), 3 missed_visible.
    """
    true = clean_all[:, 2] > 0
    if noisy is None:
        return np.where(true, 4, -1).astype(np.int8)
    labelled = noisy[:, 2] > 0
    outside = ~inside_image(clean_all[:, :2], np.asarray(size_xy, np.float32))
    cause = np.where(outside, 1, np.where(clean_all[:, 2] == 1, 2, 3))
    cause = np.where(labelled, 0, cause)
    return np.where(true, cause, -1).astype(np.int8)


def part_causes(causes17: np.ndarray, skeleton: Skeleton) -> np.ndarray:
    """(..., 17) COCO keypoint causes -> (..., K) part causes (neck from both shoulders:
    missing when either shoulder is, 5 = mixed when they are missing for different causes)."""
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


# ---------------------------------------------------------------------------------------------
# Pairing the clean and the noisy file


@dataclass
class PairedImage:
    """One image with its clean and noisy person labels, paired by annotation id.

    Attributes:
        image: the COCO image entry.
        image_path: path of the PNG (when the image folder is known).
        clean_all: ann id -> (17, 3) `keypoints_all` of every person (clean file order).
        noisy: ann id -> (17, 3) noisy keypoints of the annotated persons.
        bboxes: ann id -> xywh bbox.
        crowd_boxes: xywh boxes of the crowd regions.
    """

    image: dict[str, Any]
    image_path: Path | None = None
    clean_all: dict[int, np.ndarray] = field(default_factory=dict)
    noisy: dict[int, np.ndarray] = field(default_factory=dict)
    bboxes: dict[int, list[float]] = field(default_factory=dict)
    crowd_boxes: list[list[float]] = field(default_factory=list)

    @property
    def size_xy(self) -> tuple[int, int]:
        return int(self.image["width"]), int(self.image["height"])

    def causes(self, ann_id: int) -> np.ndarray:
        """(17,) `keypoint_causes` of one person (coordinates compared in float32)."""
        noisy = self.noisy.get(ann_id)
        return keypoint_causes(
            self.clean_all[ann_id].astype(np.float32),
            None if noisy is None else noisy.astype(np.float32),
            self.size_xy,
        )

    def dropped(self, ann_id: int) -> dict[str, np.ndarray]:
        """Failure name -> (n, 2) true positions of the points it removed (failures 1-3)."""
        causes = self.causes(ann_id)
        pts = self.clean_all[ann_id]
        return {name: pts[causes == code, :2] for code, name in enumerate(FAILURES[:3], start=1)}

    def num_failure_kinds(self) -> int:
        kinds = set()
        for ann_id in self.clean_all:
            if ann_id not in self.noisy:
                kinds.add("unannotated")
            kinds.update(k for k, pts in self.dropped(ann_id).items() if len(pts))
        return len(kinds)


def _kps(ann: dict[str, Any], key: str) -> np.ndarray:
    return np.asarray(ann[key], np.float64).reshape(NUM_COCO_KEYPOINTS, 3)


def _persons(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in data["annotations"] if not a.get("iscrowd") and a.get("category_id", 1) == 1]


def read_pairs(
    clean: str | Path,
    noisy: str | Path,
    *,
    noisy_field: str = "keypoints",
    image_dir: str | Path | None = None,
) -> dict[int, PairedImage]:
    """Pair the clean truth file of `lcdata synth` with a noisy file of the same images.

    Args:
        clean: `person_keypoints_*_clean.json`, whose persons carry `keypoints_all` (every
            true point, also outside the image).
        noisy: the noisy annotation file (same annotation ids for the annotated persons).
        noisy_field: keypoint field read from the noisy file ("keypoints" where absent).
        image_dir: folder of the images, for `PairedImage.image_path`.

    Returns:
        image id -> its `PairedImage`, in the clean file's image order.

    Raises:
        LcposeError: a person without `keypoints_all`, or files that do not pair.
    """
    clean, noisy = Path(clean), Path(noisy)
    clean_data, noisy_data = read_json(clean), read_json(noisy)
    folder = Path(image_dir) if image_dir is not None else None
    by_id = {
        img["id"]: PairedImage(img, folder / img["file_name"] if folder else None)
        for img in clean_data["images"]
    }
    for ann in clean_data["annotations"]:
        if ann.get("category_id", 1) != 1:
            continue
        item = by_id[ann["image_id"]]
        if ann.get("iscrowd"):
            item.crowd_boxes.append(ann["bbox"])
            continue
        if "keypoints_all" not in ann:
            raise LcposeError(
                f"{clean}: annotation id={ann['id']} has no 'keypoints_all' (is this the "
                f"*_clean.json file of lcdata synth?)"
            )
        item.clean_all[ann["id"]] = _kps(ann, "keypoints_all")
        item.bboxes[ann["id"]] = ann["bbox"]
    owner = {ann_id: image_id for image_id, it in by_id.items() for ann_id in it.clean_all}
    for ann in _persons(noisy_data):
        if ann["id"] not in owner:
            raise LcposeError(
                f"{noisy}: annotation id={ann['id']} is not a person of {clean}: the files do "
                f"not pair"
            )
        if owner[ann["id"]] != ann["image_id"]:
            raise LcposeError(
                f"{noisy}: annotation id={ann['id']} is on image {ann['image_id']} but on image "
                f"{owner[ann['id']]} in {clean}: the files do not pair"
            )
        key = noisy_field if noisy_field in ann else "keypoints"
        by_id[ann["image_id"]].noisy[ann["id"]] = _kps(ann, key)
    return by_id


def read_split(data_dir: str | Path, split: str) -> list[PairedImage]:
    """The paired images of one split of an `lcdata synth` folder, in file order."""
    root = Path(data_dir)
    ann = root / "annotations"
    pairs = read_pairs(
        ann / f"person_keypoints_{split}_clean.json",
        ann / f"person_keypoints_{split}.json",
        image_dir=root / split,
    )
    return list(pairs.values())


# ---------------------------------------------------------------------------------------------
# The clean truth as the analytics use it


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


def load_clean_truth(
    clean: str | Path,
    noisy: str | Path,
    *,
    skeleton: Skeleton,
    noisy_field: str = "keypoints",
) -> CleanTruth:
    """Pair the clean truth file with the noisy file a store was built from.

    Raises:
        LcposeError: malformed files, no `keypoints_all`, or files that do not pair.
    """
    # validation with the project's reader (one-line errors for malformed files)
    load_coco(clean, keypoint_field="keypoints_all")
    load_coco(noisy, keypoint_field=noisy_field)
    pairs = read_pairs(clean, noisy, noisy_field=noisy_field)
    removed = dict.fromkeys(FAILURES, 0)
    parts, causes = {}, {}
    for image_id, item in pairs.items():
        if not item.clean_all:
            continue
        per_person = [item.causes(ann_id) for ann_id in item.clean_all]
        for c in per_person:
            for code, name in enumerate(FAILURES, start=1):
                removed[name] += int((c == code).sum())
        parts[image_id] = skeleton.from_coco(
            np.stack(list(item.clean_all.values())).astype(np.float32)
        )
        causes[image_id] = part_causes(np.stack(per_person), skeleton)
    return CleanTruth(parts, causes, removed, file_sha256(clean))


def label_mass_report(
    clean_json: str | Path,
    noisy_json: str | Path,
    *,
    cfg: RenderConfig = SYNTH_RENDER,
    skeleton: Skeleton = CMU_SKELETON,
    progress: bool = False,
) -> dict[str, float]:
    """Share of the truth's label mass that the noisy labels lack, on whole images.

    The truth is rendered from the clean `keypoints_all` (so truncated limbs have PAFs), the
    noisy labels from their `keypoints`, both by `lcdata.labels.render` at `cfg` with
    `image_hw` = the image size. Heatmap mass = sum of the part channels; PAF mass = sum over
    cells and limbs of the vector length. Crowd regions are not rendered in either.

    Returns:
        {"heatmap_missing": 1 - noisy/truth heatmap mass, "paf_missing": same for PAFs,
         "images": number of images}.
    """
    pairs = read_pairs(clean_json, noisy_json)
    mass = np.zeros((2, 2))  # (truth, noisy) x (heatmap, paf)
    for item in tqdm(pairs.values(), desc="label mass", disable=not progress):
        image_hw = (int(item.image["height"]), int(item.image["width"]))
        for which, kps in enumerate((list(item.clean_all.values()), list(item.noisy.values()))):
            if not kps:
                continue
            parts = skeleton.from_coco(np.stack(kps))
            heat = render_heatmaps(parts, cfg=cfg, skeleton=skeleton, image_hw=image_hw)
            paf = render_pafs(parts, cfg=cfg, skeleton=skeleton, image_hw=image_hw)
            mass[which, 0] += heat[:-1].sum()
            mass[which, 1] += np.linalg.norm(paf.reshape(-1, 2, *paf.shape[1:]), axis=1).sum()
    missing = 1.0 - mass[1] / np.maximum(mass[0], 1e-9)
    return {
        "heatmap_missing": float(missing[0]),
        "paf_missing": float(missing[1]),
        "images": len(pairs),
    }
