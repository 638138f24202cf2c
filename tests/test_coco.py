from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from lcdata.coco import ignore_mask, load_coco, read_image
from lcdata.errors import LcposeError


def _minimal(**ann_changes) -> dict:
    ann = {
        "id": 1,
        "image_id": 10,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": [10, 10, 40, 80],
        "keypoints": [20, 20, 2] * 17,
        "num_keypoints": 17,
    }
    ann.update(ann_changes)
    return {
        "images": [{"id": 10, "file_name": "a.png", "height": 100, "width": 120}],
        "annotations": [ann],
    }


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "ann.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_reads_minimal_file(tmp_path: Path) -> None:
    (record,) = load_coco(_write(tmp_path, _minimal()))
    assert record.keypoints.shape == (1, 17, 3) and record.boxes.shape == (1, 4)
    assert (record.height, record.width) == (100, 120)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "top level must be an object"),
        ({"images": []}, "missing field 'annotations'"),
        (_minimal(keypoints=[0] * 50), r"id=1: 'keypoints' must be a list of 51 numbers, got 50"),
        (_minimal(keypoints="abc"), "got str"),
        (_minimal(keypoints=[float("nan")] * 51), "non-finite"),
        (_minimal(keypoints=[1, 1, 7] * 17), "visibility flags"),
        (_minimal(image_id=99), "unknown image id 99"),
        (_minimal(bbox=[0, 0, -5, 10]), "negative bbox"),
    ],
)
def test_bad_annotations_give_one_line_errors(tmp_path: Path, data, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(LcposeError, match=message) as info:
        load_coco(path)
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_duplicate_and_implausible_images(tmp_path: Path) -> None:
    data = _minimal()
    data["images"].append(dict(data["images"][0]))
    with pytest.raises(LcposeError, match="duplicate image id 10"):
        load_coco(_write(tmp_path, data))
    data = _minimal()
    data["images"][0]["height"] = -3
    with pytest.raises(LcposeError, match="not plausible"):
        load_coco(_write(tmp_path, data))
    data = _minimal()
    data["annotations"].append(dict(data["annotations"][0]))
    with pytest.raises(LcposeError, match="duplicate annotation id 1"):
        load_coco(_write(tmp_path, data))


def test_missing_file_and_missing_image(tmp_path: Path) -> None:
    with pytest.raises(LcposeError, match="file not found"):
        load_coco(tmp_path / "nope.json")
    (record,) = load_coco(_write(tmp_path, _minimal()))
    with pytest.raises(LcposeError, match="a.png: image listed for id=10 is missing"):
        read_image(tmp_path, record)
    (tmp_path / "a.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(LcposeError, match="not a readable image"):
        read_image(tmp_path, record)


def test_person_without_keypoints_is_masked(tmp_path: Path) -> None:
    data = _minimal()
    data["annotations"].append(
        {
            "id": 2,
            "image_id": 10,
            "category_id": 1,
            "iscrowd": 0,
            "bbox": [60, 20, 20, 30],
            "segmentation": [[60, 20, 80, 20, 80, 50, 60, 50]],
            "keypoints": [0] * 51,
            "num_keypoints": 0,
        }
    )
    (record,) = load_coco(_write(tmp_path, data))
    assert len(record.keypoints) == 1 and len(record.ignore) == 1
    mask = ignore_mask(record)
    assert mask[30:45, 62:78].max() == 0 and mask[:15].min() == 1 and mask[:, :55].min() == 1


def test_crowd_mask_matches_pycocotools_on_coco_mini(coco_mini: Path) -> None:
    ann_file = coco_mini / "annotations" / "person_keypoints_val2017.json"
    records = {r.image_id: r for r in load_coco(ann_file)}
    record = records[217285]  # the val image with a crowd annotation
    coco = COCO(str(ann_file))
    want = np.ones((record.height, record.width), np.uint8)
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[217285])):
        if ann["iscrowd"] or ann["num_keypoints"] == 0:
            want[coco.annToMask(ann) > 0] = 0
    got = ignore_mask(record)
    assert (got == 0).sum() > 1000  # the crowd covers a real area
    np.testing.assert_array_equal(got, want)
    image = read_image(coco_mini / "val2017", record)
    assert image.shape == (record.height, record.width, 3) and image.dtype == np.uint8
