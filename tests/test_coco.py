from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from lcdata.errors import LcposeError
from lcdata.labels import coco
from lcdata.labels.coco import ignore_mask, load_coco, read_image


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


# ---------------------------------------------------------------------------------------
# The file is read in chunks and each annotation reduced as soon as it is parsed: the
# records must be what a direct reading of the whole document gives, for any chunk size.

H, W = 48, 64  # image size of the synthetic documents, px


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of an (H, W) 0/1 mask: run lengths in column-major order,
    starting with a run of zeros."""
    flat = mask.ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"counts": ([0] if flat[0] else []) + counts, "size": list(mask.shape)}


def _synthetic_document(seed: int) -> dict:
    """Images holding labelled persons (one without bbox), persons with 0 or 3 labelled
    keypoints, crowd regions (polygons with keypoints, uncompressed and compressed RLE,
    bbox only) and a person of another category; `annotations` comes before `images`."""
    rng = np.random.default_rng(seed)

    def polygon() -> list[float]:
        x0, y0 = rng.uniform(-4, W - 10), rng.uniform(-4, H - 10)
        x1, y1 = x0 + rng.uniform(3, 20), y0 + rng.uniform(3, 20)
        return [x0, y0, x1, y0 + rng.uniform(-2, 2), x1, y1, (x0 + x1) / 2, y1 + 2, x0, y1]

    def keypoints(labelled: int) -> list[float]:
        kps = np.zeros((17, 3))
        kps[:, 0], kps[:, 1] = rng.uniform(0, W, 17), rng.uniform(0, H, 17)
        kps[rng.permutation(17)[:labelled], 2] = rng.choice([1, 2], labelled)
        return [round(v, 3) for v in kps.ravel().tolist()]

    region = np.zeros((H, W), np.uint8)
    region[5:20, 30:50] = 1
    compressed = mask_utils.encode(np.asfortranarray(region))
    annotations = []
    for image_id in range(1, 6):
        kinds = ["labelled", "labelled", "no bbox", "none", "few"]
        kinds += ["crowd polygon", "crowd rle", "crowd compressed", "crowd bbox", "other"][
            image_id - 1 : image_id + 1
        ]
        for kind in kinds:
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 2 if kind == "other" else 1,
                "iscrowd": int(kind.startswith("crowd")),
                "segmentation": [polygon() for _ in range(int(rng.integers(1, 3)))],
                "bbox": [round(v, 2) for v in rng.uniform([0, 0, 2, 2], [W / 2, H / 2, 20, 20])],
                "keypoints": keypoints({"none": 0, "few": 3}.get(kind, 12)),
            }
            if kind == "no bbox":
                del ann["bbox"]
            if kind.startswith("crowd") and kind != "crowd polygon":
                del ann["keypoints"]  # a crowd region may have keypoints or not
            if kind == "crowd rle":
                ann["segmentation"] = _uncompressed_rle(np.roll(region, image_id, axis=1))
            if kind == "crowd compressed":
                ann["segmentation"] = {
                    "counts": compressed["counts"].decode(),
                    "size": compressed["size"],
                }
            if kind == "crowd bbox":
                del ann["segmentation"]
            annotations.append(ann)
    images = [
        {"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in range(1, 7)
    ]  # image 6 has no annotation
    # a number at the top level can be cut by a chunk's end and still parse
    info = {"info": {"note": [1, {"a": None}]}, "version": 20240101.125}
    return {**info, "annotations": annotations, "images": images}


def _reference(document: dict, min_keypoints: int) -> dict[int, tuple]:
    """Per image id: (keypoints (P, 17, 3), boxes (P, 4), ignore mask (H, W)), computed
    directly from the document (pycocotools' annToMask for the segmentations)."""
    out = {}
    for img in document["images"]:
        anns = [
            a
            for a in document["annotations"]
            if a["image_id"] == img["id"] and a["category_id"] == 1
        ]
        kps, boxes = [], []
        mask = np.ones((img["height"], img["width"]), np.uint8)
        for ann in anns:
            points = np.asarray(ann.get("keypoints", [0] * 51), np.float32).reshape(17, 3)
            if not ann["iscrowd"] and (points[:, 2] > 0).sum() >= min_keypoints:
                kps.append(points)
                if "bbox" in ann:
                    boxes.append(np.asarray(ann["bbox"], np.float32))
                else:
                    xy = points[points[:, 2] > 0, :2]
                    boxes.append(np.r_[xy.min(0), xy.max(0) - xy.min(0)].astype(np.float32))
                continue
            seg = ann.get("segmentation")
            if seg is None:  # no segmentation: the bbox is masked
                x, y, bw, bh = ann["bbox"]
                mask[
                    int(np.floor(y)) : int(np.ceil(y + bh)), int(np.floor(x)) : int(np.ceil(x + bw))
                ] = 0
                continue
            if isinstance(seg, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, img["height"], img["width"]))
            elif isinstance(seg["counts"], list):
                rle = mask_utils.frPyObjects(seg, img["height"], img["width"])
            else:
                rle = seg
            mask[mask_utils.decode(rle) > 0] = 0
        shape = (len(kps), 17, 3)
        out[img["id"]] = (
            np.stack(kps) if kps else np.zeros(shape, np.float32),
            np.stack(boxes) if boxes else np.zeros((0, 4)),
            mask,
        )
    return out


@pytest.mark.parametrize("chunk_chars", [1, 7, 1 << 20])
@pytest.mark.parametrize("min_keypoints", [1, 5])
def test_records_match_a_direct_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_chars: int, min_keypoints: int
) -> None:
    monkeypatch.setattr(coco, "CHUNK_CHARS", chunk_chars)  # values cut at every position

    def read_whole(f) -> None:
        raise AssertionError("a valid file was read whole with json.load")

    monkeypatch.setattr(json, "load", read_whole)
    document = _synthetic_document(seed=min_keypoints)
    path = _write(tmp_path, json.dumps(document, indent=1))
    records = load_coco(path, min_keypoints=min_keypoints)
    want = _reference(document, min_keypoints)
    assert [r.image_id for r in records] == [img["id"] for img in document["images"]]
    masked = 0
    for record in records:
        keypoints, boxes, mask = want[record.image_id]
        np.testing.assert_array_equal(record.keypoints, keypoints, strict=True)
        np.testing.assert_array_equal(record.boxes, boxes, strict=True)
        np.testing.assert_array_equal(ignore_mask(record), mask, strict=True)
        masked += int((mask == 0).sum())
    assert masked > 2000  # crowds and unlabelled persons cover real areas
    assert sum(len(r.keypoints) for r in records) == (20 if min_keypoints == 1 else 15)
    # only the regions that are masked are kept, never a labelled person's polygons
    assert sum(len(r.ignore) for r in records) == (12 if min_keypoints == 1 else 17)


@pytest.mark.parametrize("chunk_chars", [1, 7, 1 << 20])
def test_annotations_are_reduced_one_by_one_while_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_chars: int
) -> None:
    monkeypatch.setattr(coco, "CHUNK_CHARS", chunk_chars)
    document = _synthetic_document(seed=0)
    path = _write(tmp_path, json.dumps(document, indent=1))
    with open(path, encoding="utf-8") as f:
        data = coco._read_json_object(f, {"annotations": lambda ann: ("reduced", ann)})
    want = {**document, "annotations": [("reduced", a) for a in document["annotations"]]}
    assert data == want


def test_only_masked_annotations_keep_their_segmentation() -> None:
    """A labelled person's polygons (most of a COCO file) are dropped while reading; the
    regions that `ignore_mask` rasterises keep theirs, polygons as float64 arrays."""
    reduce = partial(
        coco._reduce_annotation, source="ann.json", keypoint_field="keypoints", min_keypoints=5
    )
    kept = 0
    for ann in _synthetic_document(seed=0)["annotations"]:
        fields = reduce(ann).fields
        labelled = sum(v > 0 for v in ann.get("keypoints", [])[2::3])
        masked = ann["category_id"] == 1 and (ann["iscrowd"] == 1 or labelled < 5)
        assert ("segmentation" in fields) == (masked and "segmentation" in ann)
        assert "keypoints" not in fields
        if masked and isinstance(ann.get("segmentation"), list):
            for got, want in zip(fields["segmentation"], ann["segmentation"], strict=True):
                np.testing.assert_array_equal(got, np.asarray(want, np.float64), strict=True)
            kept += 1
    assert kept == 11  # 5 persons without keypoints, 5 with 3 labelled, 1 crowd


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: text[: len(text) * 2 // 3],  # cut inside an annotation
        lambda text: text.replace("]", ",]", 1),  # trailing comma in an array
        lambda text: text + " {}",  # extra data
        lambda text: "\ufeff" + text,  # byte order mark
        lambda text: text.replace('"id"', '"id" 1', 1),
    ],
)
def test_invalid_json_reports_the_json_modules_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage
) -> None:
    monkeypatch.setattr(coco, "CHUNK_CHARS", 5)
    text = damage(json.dumps(_synthetic_document(seed=0), indent=1))
    with pytest.raises(json.JSONDecodeError) as want:
        json.loads(text)
    path = _write(tmp_path, text)
    with pytest.raises(LcposeError) as info:
        load_coco(path)
    assert str(info.value) == f"{path}: not valid JSON ({want.value})"


def test_errors_keep_the_order_of_the_checks(tmp_path: Path) -> None:
    """Annotations are reduced while the file is read (here before the images), but their
    problems are reported as if read after the images, in order."""
    document = _synthetic_document(seed=0)
    document["annotations"][1]["keypoints"] = [1, 1, 7] * 17
    document["annotations"][3]["id"] = "3"
    document["images"][4]["height"] = 0
    path = _write(tmp_path, json.dumps(document))
    with pytest.raises(LcposeError, match=r"images\[4\]: image size 64x0 is not plausible"):
        load_coco(path)
    document["images"][4]["height"] = H
    path = _write(tmp_path, json.dumps(document))
    with pytest.raises(LcposeError, match=r"annotation id=2: 'keypoints' visibility flags"):
        load_coco(path)
    document["annotations"][1]["id"] = 1  # a duplicate id is checked before the keypoints
    path = _write(tmp_path, json.dumps(document))
    with pytest.raises(LcposeError, match=r"annotations\[1\]: duplicate annotation id 1"):
        load_coco(path)
