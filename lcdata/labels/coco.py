"""COCO person-keypoint files: validated reading, per-image records and ignore masks.

Validation happens here, at the boundary: every problem is an `LcposeError` naming the file,
the record and the field, so nothing downstream sees a malformed annotation.

Filtering rules (written down because users keep asking, see docs/store.md):
- a *labelled person* is a non-crowd annotation with at least `min_keypoints` labelled
  (v > 0) keypoints; only images with at least one labelled person become samples;
- the ignore mask (W of eq. 1) is 0 on crowd regions and on persons with fewer labelled
  keypoints than `min_keypoints` (by default: none), from their segmentations, 1 elsewhere.

Memory: the file is read in chunks and each element of `annotations` is reduced to what
the checks and `ignore_mask` need as soon as it is parsed (`_Annotation`), so the tree of
Python objects of the whole file (~7x the file size) never exists at once. Invalid JSON is
read again with `json.load`, whose error message is the one reported.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from lcdata.errors import LcposeError

NUM_COCO_KEYPOINTS = 17
PERSON_CATEGORY = 1
MAX_IMAGE_SIDE = 1 << 15
MAX_COORD = 2 * MAX_IMAGE_SIDE
"""Largest |coordinate| (px) of a keypoint, box or polygon: farther is a broken file, and
pycocotools' polygon rasteriser needs memory in proportion to the polygon's perimeter."""
CHUNK_CHARS = 1 << 20
"""Characters read from the annotation file at a time."""


@dataclass
class ImageRecord:
    """One image and its person annotations.

    Attributes:
        keypoints: (P, 17, 3) float32 of the labelled persons: (x, y) image pixels, COCO v.
        boxes: (P, 4) float32 xywh of the labelled persons, image pixels.
        ignore: annotations whose area is masked out, as dicts of their `id`, `image_id`,
            `category_id`, `iscrowd`, `bbox` and `segmentation` fields (those present in
            the file); polygons that pass `ignore_mask`'s checks are (2n,) float64 arrays.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    keypoints: np.ndarray
    boxes: np.ndarray
    ignore: list[dict[str, Any]] = field(default_factory=list)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_keypoints(ann: dict, key: str, source: str) -> np.ndarray:
    flat = ann.get(key)
    if not isinstance(flat, list) or len(flat) != 3 * NUM_COCO_KEYPOINTS:
        got = len(flat) if isinstance(flat, list) else type(flat).__name__
        raise LcposeError(
            f"{source}: annotation id={ann.get('id')}: '{key}' must be a list of "
            f"{3 * NUM_COCO_KEYPOINTS} numbers, got {got}"
        )
    if not all(_number(v) for v in flat):
        raise LcposeError(
            f"{source}: annotation id={ann.get('id')}: '{key}' holds a non-finite or "
            f"non-numeric value"
        )
    # checked before the float32 cast, which would turn 1e300 into inf
    if any(abs(v) > MAX_COORD for v in flat):
        raise LcposeError(
            f"{source}: annotation id={ann.get('id')}: '{key}' has a coordinate beyond "
            f"+-{MAX_COORD} px"
        )
    kps = np.asarray(flat, np.float32).reshape(NUM_COCO_KEYPOINTS, 3)
    if not np.isin(kps[:, 2], (0, 1, 2)).all():
        raise LcposeError(
            f"{source}: annotation id={ann.get('id')}: '{key}' visibility flags must be 0, 1 or 2"
        )
    return kps


def _require(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise LcposeError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LcposeError(f"{where}: field '{key}' has type {type(value).__name__}")
    return value


def _polygon_ok(poly: Any) -> bool:
    """Whether `ignore_mask` rasterises `poly` (>= 3 points, numbers within +-MAX_COORD)."""
    try:
        return (
            isinstance(poly, list)
            and len(poly) >= 6
            and all(_number(v) and abs(v) <= MAX_COORD for v in poly)
        )
    except OverflowError:  # an int too large for a float: ignore_mask reports it
        return False


@dataclass(frozen=True, slots=True)
class _Annotation:
    """One element of `annotations`, reduced while the file is read to what `load_coco`'s
    checks and `ignore_mask` read.

    Attributes:
        fields: the annotation's `id`, `image_id`, `category_id`, `iscrowd` and `bbox` and,
            where it may become an ignore region, its `segmentation` with each valid polygon
            as a float64 array (4x smaller than a list of floats, and pycocotools converts
            polygons to float64 anyway); the element itself where it is not an object, so
            the checks fail on it as on the file.
        has_keypoints: whether the keypoint field (`keypoint_field` or `keypoints`) is there.
        keypoints: (17, 3) float32 from `_parse_keypoints`, or the exception it raised (raised
            when `load_coco` reaches this element, so errors keep the file's order); None
            for other categories, whose keypoints are never read.
    """

    fields: Any
    has_keypoints: bool
    keypoints: np.ndarray | Exception | None

    def parsed_keypoints(self) -> np.ndarray:
        if isinstance(self.keypoints, Exception):
            raise self.keypoints
        assert self.keypoints is not None, "keypoints are parsed for every person"
        return self.keypoints


_CHECKED_FIELDS = ("id", "image_id", "category_id", "iscrowd", "bbox")


def _reduce_annotation(
    ann: Any, *, source: str, keypoint_field: str, min_keypoints: int
) -> _Annotation:
    """`ann` as `_Annotation`: never raises, `load_coco` checks the result."""
    if not isinstance(ann, dict):
        return _Annotation(ann, False, None)
    fields = {k: ann[k] for k in _CHECKED_FIELDS if k in ann}
    field_name = keypoint_field if keypoint_field in ann else "keypoints"
    keypoints: np.ndarray | Exception | None = None
    if ann.get("category_id", PERSON_CATEGORY) == PERSON_CATEGORY:
        try:
            keypoints = _parse_keypoints(ann, field_name, source)
        except Exception as err:  # raised by load_coco when it gets there, in file order
            # without its traceback, whose frames would keep `ann` alive
            keypoints = err.with_traceback(None)
        iscrowd = ann.get("iscrowd", 0)
        labelled_person = (
            isinstance(keypoints, np.ndarray)
            and isinstance(iscrowd, (int, float))
            and iscrowd == 0
            and int((keypoints[:, 2] > 0).sum()) >= min_keypoints
        )
        # a labelled person's segmentation is never read: drop it (most of the file's size)
        if "segmentation" in ann and not labelled_person:
            seg = ann["segmentation"]
            if isinstance(seg, list):
                seg = [np.asarray(p, np.float64) if _polygon_ok(p) else p for p in seg]
            fields["segmentation"] = seg
    return _Annotation(fields, field_name in ann, keypoints)


_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's, as in json.decoder
_DECODER = json.JSONDecoder()


class _JsonText:
    """The text of a JSON file read in chunks, with a cursor; text before it is dropped.

    Keys and values are parsed by the stdlib decoder; methods raise ValueError on anything
    unexpected, without a useful message (the caller then reads the file with `json.load`).
    """

    def __init__(self, f: TextIO) -> None:
        self.f, self.text, self.pos, self.eof = f, "", 0, False

    def _more(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        # at least doubles the unread text: a huge value is parsed O(log size) times
        chunk = self.f.read(max(CHUNK_CHARS, len(self.text) - self.pos))
        if not chunk:
            self.eof = True
            return False
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next character after whitespace, "" at the end of the file."""
        while True:
            self.pos = _WHITESPACE.match(self.text, self.pos).end()
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self._more():
                return ""

    def take(self, char: str) -> bool:
        """Consume `char` if it comes next (after whitespace)."""
        if self.peek() != char:
            return False
        self.pos += 1
        return True

    def value(self) -> Any:
        """The next JSON value (after whitespace)."""
        self.peek()
        while True:
            try:
                obj, end = _DECODER.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                if self._more():  # the value may only be cut by the chunk's end
                    continue
                raise
            if end == len(self.text) and self._more():
                continue  # a number may go on in the next chunk
            self.pos = end
            return obj

    def array(self, element: Callable[[Any], Any]) -> list:
        """The array starting at the cursor, `element` applied to each item as it is read."""
        if not self.take("["):
            raise ValueError("not an array")
        items: list = []
        if self.take("]"):
            return items
        while True:
            items.append(element(self.value()))
            if self.take("]"):
                return items
            if not self.take(","):
                raise ValueError("expected , or ]")


def _read_json_object(f: TextIO, reducers: dict[str, Callable[[Any], Any]]) -> dict | None:
    """The top-level JSON object of `f`, with `reducers[key]` applied to each element of the
    array under `key` as soon as it is parsed; None where the file is not a valid JSON
    object (or anything else goes wrong): `json.load` then says why."""
    text = _JsonText(f)
    data: dict[str, Any] = {}
    try:
        if not text.take("{"):
            return None
        if not text.take("}"):
            while True:
                if text.peek() != '"':
                    return None
                key = text.value()
                if not text.take(":"):
                    return None
                reducer = reducers.get(key)
                if reducer is not None and text.peek() == "[":
                    data[key] = text.array(reducer)
                else:
                    data[key] = text.value()
                if text.take("}"):
                    break
                if not text.take(","):
                    return None
        return data if text.peek() == "" else None
    except (ValueError, RecursionError):  # JSON or UTF-8 errors, too-long ints, deep nesting
        return None


def _load_json(f: TextIO, reducers: dict[str, Callable[[Any], Any]]) -> Any:
    """`json.load(f)`, reduced as by `_read_json_object` where that can read the file."""
    if f.seekable():  # a pipe cannot be read twice
        data = _read_json_object(f, reducers)
        if data is not None:
            return data
        f.seek(0)
    return json.load(f)


def load_coco(
    ann_file: str | Path,
    *,
    min_keypoints: int = 1,
    keypoint_field: str = "keypoints",
) -> list[ImageRecord]:
    """Read and validate a COCO person-keypoints file.

    Args:
        ann_file: the JSON file.
        min_keypoints: a person needs this many labelled keypoints to be a training target;
            below it (and not crowd) the person is masked out instead.
        keypoint_field: annotation field holding the 51 numbers; the synthetic benchmark's
            clean files also carry `keypoints_all` with points outside the image.

    Returns:
        Records of every image in file order, including images with no labelled person
        (callers decide what to skip).
    """
    source = str(ann_file)
    reduce = partial(
        _reduce_annotation,
        source=source,
        keypoint_field=keypoint_field,
        min_keypoints=min_keypoints,
    )
    try:
        with open(ann_file, encoding="utf-8") as f:
            data = _load_json(f, {"annotations": reduce})
    except FileNotFoundError:
        raise LcposeError(f"{source}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LcposeError(f"{source}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise LcposeError(f"{source}: top level must be an object, got {type(data).__name__}")
    images = _require(data, "images", list, source)
    annotations = _require(data, "annotations", list, source)

    records: dict[int, ImageRecord] = {}
    for i, img in enumerate(images):
        where = f"{source}: images[{i}]"
        image_id = _require(img, "id", int, where)
        if not 0 <= image_id < 1 << 63:
            # ids seed the per-sample generators and are stored as int64
            raise LcposeError(f"{where}: image id {image_id} is not in [0, 2^63)")
        file_name = _require(img, "file_name", str, where)
        height = _require(img, "height", int, where)
        width = _require(img, "width", int, where)
        if not (0 < height <= MAX_IMAGE_SIDE and 0 < width <= MAX_IMAGE_SIDE):
            raise LcposeError(f"{where}: image size {width}x{height} is not plausible")
        if image_id in records:
            raise LcposeError(f"{where}: duplicate image id {image_id}")
        records[image_id] = ImageRecord(
            image_id, file_name, height, width, np.zeros((0, 17, 3), np.float32), np.zeros((0, 4))
        )

    persons: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {k: [] for k in records}
    seen_ids: set[int] = set()
    for i, item in enumerate(annotations):
        where = f"{source}: annotations[{i}]"
        if not isinstance(item, _Annotation):  # read by json.load
            item = reduce(item)
        ann = item.fields
        ann_id = _require(ann, "id", int, where)
        if ann_id in seen_ids:
            raise LcposeError(f"{where}: duplicate annotation id {ann_id}")
        seen_ids.add(ann_id)
        image_id = _require(ann, "image_id", int, where)
        if image_id not in records:
            raise LcposeError(f"{where}: id={ann_id} refers to unknown image id {image_id}")
        if "category_id" in ann:
            _require(ann, "category_id", int, where)
        if ann.get("category_id", PERSON_CATEGORY) != PERSON_CATEGORY:
            continue
        iscrowd = ann.get("iscrowd", 0)
        if not isinstance(iscrowd, (int, float)) or iscrowd not in (0, 1):
            raise LcposeError(f"{where}: id={ann_id}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
        crowd = bool(iscrowd)
        if crowd and not item.has_keypoints:
            records[image_id].ignore.append(ann)
            continue
        kps = item.parsed_keypoints()
        labelled = int((kps[:, 2] > 0).sum())
        if crowd or labelled < min_keypoints:
            if "segmentation" in ann or "bbox" in ann:
                records[image_id].ignore.append(ann)
            continue
        bbox = ann.get("bbox")
        if isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox):
            if max(abs(v) for v in bbox) > MAX_COORD:
                raise LcposeError(f"{where}: id={ann_id}: bbox {bbox} is beyond +-{MAX_COORD} px")
            box = np.asarray(bbox, np.float32)
        else:
            box = _keypoint_box(kps)
        if box[2] < 0 or box[3] < 0:
            raise LcposeError(f"{where}: id={ann_id} has a negative bbox size {bbox}")
        persons[image_id].append((kps, box))

    del data, images, annotations  # before stacking: only the kept arrays are still needed
    for image_id, items in persons.items():
        if items:
            records[image_id].keypoints = np.stack([k for k, _ in items]).astype(np.float32)
            records[image_id].boxes = np.stack([b for _, b in items]).astype(np.float32)
    return list(records.values())


def _keypoint_box(kps: np.ndarray) -> np.ndarray:
    """(4,) xywh box of the labelled keypoints of one person."""
    pts = kps[kps[:, 2] > 0, :2]
    if len(pts) == 0:
        return np.zeros(4, np.float32)
    lo, hi = pts.min(0), pts.max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float32)


def ignore_mask(record: ImageRecord) -> np.ndarray:
    """(H, W) uint8 mask of one image: 1 = supervise, 0 = crowd or unlabelled person.

    Segmentations may be polygons (lists of numbers or float64 arrays), uncompressed or
    compressed RLE; an annotation without a segmentation masks its bbox instead.
    """
    h, w = record.height, record.width
    mask = np.ones((h, w), np.uint8)
    for ann in record.ignore:
        seg = ann.get("segmentation")
        try:
            if isinstance(seg, list) and seg:
                polys = [p for p in seg if isinstance(p, (list, np.ndarray)) and len(p) >= 6]
                if not polys:
                    raise ValueError("no polygon with 3 or more points")
                if not all(_number(v) and abs(v) <= MAX_COORD for p in polys for v in p):
                    # pycocotools hangs on NaN/inf and runs out of memory on huge values
                    raise ValueError(f"polygon values must be numbers within +-{MAX_COORD} px")
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
            elif isinstance(seg, dict) and "counts" in seg:
                if seg.get("size") != [h, w]:
                    # checked before decoding: a huge size would allocate height x width bytes
                    raise ValueError(f"RLE size {seg.get('size')} is not the image's [{h}, {w}]")
                rle = seg if not isinstance(seg["counts"], list) else None
                if rle is None:
                    counts = seg["counts"]
                    if not all(isinstance(c, int) and c >= 0 for c in counts):
                        raise ValueError("RLE counts must be non-negative integers")
                    if sum(counts) != h * w:
                        # pycocotools would leave the rest of the mask uninitialised
                        raise ValueError(f"RLE counts sum to {sum(counts)}, not {h} x {w}")
                    rle = mask_utils.frPyObjects(seg, h, w)
            else:
                x, y, bw, bh = (float(v) for v in ann["bbox"])
                x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
                mask[y0 : int(np.ceil(y + bh)), x0 : int(np.ceil(x + bw))] = 0
                continue
            region = mask_utils.decode(rle)
        except (ValueError, TypeError, KeyError, IndexError, OverflowError) as err:
            raise LcposeError(
                f"image id={record.image_id}: annotation id={ann.get('id')}: unreadable "
                f"segmentation ({err})"
            ) from None
        if region.shape[:2] != (h, w):
            raise LcposeError(
                f"image id={record.image_id}: annotation id={ann.get('id')}: segmentation size "
                f"{region.shape[1]}x{region.shape[0]} differs from the image's {w}x{h}"
            )
        mask[region.reshape(h, w) > 0] = 0
    return mask


def read_image(image_dir: str | Path, record: ImageRecord) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a record's image, checked against its declared size."""
    path = Path(image_dir) / record.file_name
    if not path.is_file():
        raise LcposeError(f"{path}: image listed for id={record.image_id} is missing")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise LcposeError(f"{path}: not a readable image")
    if bgr.shape[:2] != (record.height, record.width):
        raise LcposeError(
            f"{path}: image is {bgr.shape[1]}x{bgr.shape[0]} but the annotations say "
            f"{record.width}x{record.height}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
