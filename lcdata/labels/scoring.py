"""COCO keypoint scoring of decoded persons: results entries and COCOeval's 10 numbers.

Used by `trainer evaluate` (whole images) and by the `lcdata` commands that score decoded
label maps crop by crop, so it lives beside the decoder and needs no model.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from pathlib import Path

from lcdata.labels.decode import Person
from lcdata.labels.skeleton import Skeleton

METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
)  # fmt: skip
"""COCOeval keypoint summary, in `COCOeval.stats` order."""


def coco_results(image_id: int, persons: list[Person], *, skeleton: Skeleton) -> list[dict]:
    """COCO keypoint results entries of one image (neck dropped, missing parts at (0, 0, 0))."""
    out = []
    for person in persons:
        kps = skeleton.to_coco(person.keypoints)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": 1,
                "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
                "score": round(float(person.score), 6),
            }
        )
    return out


def evaluate_results(
    ann_file: str | Path | dict,
    results: list[dict],
    *,
    image_ids: Iterable[int] | None = None,
) -> dict[str, float]:
    """COCOeval (keypoints) of results against an annotation file.

    Args:
        ann_file: COCO person-keypoints JSON, or its parsed content (a dict).
        results: COCO results entries (`image_id`, `category_id`, `keypoints`, `score`).
        image_ids: restrict to these images (default: all images of the file).

    Returns:
        The 10 standard numbers, keys `METRIC_NAMES`; all 0 when there is no result.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # pycocotools reports progress with print(); the library stays quiet
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(ann_file, dict):
            gt = COCO()
            gt.dataset = ann_file
            gt.createIndex()
        else:
            gt = COCO(str(ann_file))
        if not results:
            return dict.fromkeys(METRIC_NAMES, 0.0)
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats, strict=True)}
