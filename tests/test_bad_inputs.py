"""Bad inputs: malformed and adversarial COCO files, broken images, bad options, fuzzing.

The policy (docs/reliability.md): a problem the user can fix ends the command with exit
status 1 and one line `Error: <file, record or option>: <problem>`; never a traceback, a
hang or a store marked complete with wrong content. A few inputs are accepted on purpose,
each by a documented rule (the "accepted" tests below). Everything runs on two tiny
synthetic images (40x30 px) and 16 px crops, so each case takes a few milliseconds.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zarr
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from lcdata.cli import cli as lcdata_cli
from lcdata.labels.augment import PAD_VALUE
from lcdata.store.layout import read_attrs
from trainer.cli import cli as trainer_cli

W, H = 40, 30  # image size, px
OPTIONS = [
    "--input-size", "16", "--stride", "4", "--sigma", "2", "--samples-per-shard", "2",
    "--workers", "1", "--views-per-image", "1",  # one sample per image: the checks count them
]  # fmt: skip
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,  # nothing to replay: the examples are the same on every run
    suppress_health_check=[HealthCheck.too_slow],
)


def base_document() -> dict[str, Any]:
    """Two images with one fully labelled person each (the valid starting point)."""
    images, annotations = [], []
    for i in range(2):
        images.append({"id": i + 1, "file_name": f"im{i}.png", "height": H, "width": W})
        keypoints = [v for k in range(17) for v in (8 + k, 6 + k % 9, 2)]
        annotations.append(
            {
                "id": 100 + i, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "bbox": [8, 6, 17, 9], "area": 153, "num_keypoints": 17,
                "keypoints": keypoints, "segmentation": [[8, 6, 25, 6, 25, 15, 8, 15]],
            }
        )  # fmt: skip
    return {"images": images, "annotations": annotations, "categories": [{"id": 1}]}


def write_images(folder: Path, size: tuple[int, int] = (W, H)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 3), np.uint8)
        cv2.imwrite(str(folder / f"im{i}.png"), pixels)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


def build(ann: Path, images: Path, out: Path, *extra: str) -> Result:
    args = ["build-teacher-cache", str(ann), str(images), "--out", str(out), *OPTIONS, *extra]
    return CliRunner().invoke(lcdata_cli, args)


def build_document(document: Any, folder: Path, images: Path, *extra: str) -> tuple[Result, Path]:
    """Write `document` (a JSON-able object, or raw text) and build it; (result, store)."""
    ann = folder / "ann.json"
    if isinstance(document, str):
        ann.write_text(document)
    else:
        ann.write_text(json.dumps(document))  # NaN and inf become the NaN/Infinity literals
    out = folder / "out.zarr"
    return build(ann, images, out, *extra), out


def error_line(res: Result) -> str:
    """The one `Error: ...` line of a refused command; fails on anything else."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert res.output.count("Error: ") == 1, res.output
    # a progress bar (on stderr, like the error) may precede it on the same terminal line
    line = res.output[res.output.index("Error: ") :].rstrip("\n")
    assert "\n" not in line and "\r" not in line, res.output
    return line


def check_store(out: Path) -> dict[str, Any]:
    """A store that says it is complete must be whole and finite."""
    attrs = read_attrs(out)
    assert attrs["complete"] is True
    g = zarr.open_group(str(out), mode="r")
    assert np.asarray(g["progress/gt"][:]).all()
    for name in ("gt/heatmaps", "gt/pafs"):
        assert np.isfinite(g[name][:].astype(np.float32)).all(), name
    assert set(np.unique(g["masks"][:])) <= {0, 1}
    return attrs


def check_outcome(res: Result, out: Path) -> None:
    """The invariant for any input: a clean error and no complete store, or a sound store."""
    if res.exit_code == 0:
        assert res.exception is None
        check_store(out)
    else:
        error_line(res)
        if (out / "zarr.json").exists():
            assert read_attrs(out)["complete"] is False


# ---------------------------------------------------------------------------------------
# Malformed and adversarial annotation files: one line naming the file and the field


def _ann(i: int = 0) -> Callable[[dict], dict]:
    return lambda d: d["annotations"][i]


def _set(getter: Callable[[dict], Any], key: str, value: Any) -> Callable[[dict], None]:
    return lambda d: getter(d).__setitem__(key, value)


def _drop(getter: Callable[[dict], Any], key: str) -> Callable[[dict], None]:
    return lambda d: getter(d).pop(key)


def _image(i: int = 0) -> Callable[[dict], dict]:
    return lambda d: d["images"][i]


def _crowd(**fields: Any) -> Callable[[dict], None]:
    """Add a crowd region to image 1 (which keeps its labelled person, so its mask is made)."""
    ann = {"id": 900, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [1, 1, 5, 5]}
    ann.update(fields)
    return lambda d: d["annotations"].append({k: v for k, v in ann.items() if v is not None})


def _many(*steps: Callable[[dict], None]) -> Callable[[dict], None]:
    def run(d: dict) -> None:
        for step in steps:
            step(d)

    return run


ERRORS = [
    # the file
    (
        "empty images and annotations",
        _many(_set(lambda d: d, "images", []), _set(lambda d: d, "annotations", [])),
        "ann.json: no image has a person with labelled keypoints",
    ),
    ("zero persons", _set(lambda d: d, "annotations", []), "no image has a person with labelled"),
    (
        "only other categories",
        _many(_set(_ann(0), "category_id", 2), _set(_ann(1), "category_id", 3)),
        "no image has a person with labelled keypoints",
    ),
    ("images not a list", _set(lambda d: d, "images", {"1": {}}), "field 'images' has type dict"),
    # images[]
    ("image missing width", _drop(_image(), "width"), "images[0]: missing field 'width'"),
    (
        "image width Infinity",
        _set(_image(), "width", math.inf),
        "images[0]: field 'width' has type float",
    ),
    (
        "image height as text",
        _set(_image(), "height", "30"),
        "images[0]: field 'height' has type str",
    ),
    (
        "negative width",
        _set(_image(), "width", -40),
        "images[0]: image size -40x30 is not plausible",
    ),
    ("huge height", _set(_image(), "height", 10**9), "image size 40x1000000000 is not plausible"),
    ("image id as text", _set(_image(), "id", "1"), "images[0]: field 'id' has type str"),
    (
        "negative image id",
        _many(_set(_image(), "id", -1), _set(_ann(), "image_id", -1)),
        "images[0]: image id -1 is not in [0, 2^63)",
    ),
    (
        "image id beyond int64",
        _many(_set(_image(), "id", 2**64), _set(_ann(), "image_id", 2**64)),
        "is not in [0, 2^63)",
    ),
    ("duplicate image id", _set(_image(1), "id", 1), "images[1]: duplicate image id 1"),
    ("file_name a number", _set(_image(), "file_name", 7), "field 'file_name' has type int"),
    # annotations[]
    (
        "annotation null",
        lambda d: d["annotations"].append(None),
        "annotations[2]: missing field 'id'",
    ),
    (
        "duplicate annotation id",
        _set(_ann(1), "id", 100),
        "annotations[1]: duplicate annotation id 100",
    ),
    ("unknown image id", _set(_ann(), "image_id", 77), "id=100 refers to unknown image id 77"),
    ("missing image_id", _drop(_ann(), "image_id"), "annotations[0]: missing field 'image_id'"),
    ("category id as text", _set(_ann(), "category_id", "1"), "field 'category_id' has type str"),
    ("iscrowd as text", _set(_ann(), "iscrowd", "0"), "id=100: 'iscrowd' must be 0 or 1, got '0'"),
    ("iscrowd NaN", _set(_ann(), "iscrowd", math.nan), "'iscrowd' must be 0 or 1, got nan"),
    (
        "keypoints missing",
        _drop(_ann(), "keypoints"),
        "id=100: 'keypoints' must be a list of 51 numbers, got NoneType",
    ),
    (
        "keypoints of 54",
        _set(_ann(), "keypoints", [1, 1, 2] * 18),
        "must be a list of 51 numbers, got 54",
    ),
    (
        "keypoints nested",
        _set(_ann(), "keypoints", [[1, 1, 2]] * 17),
        "must be a list of 51 numbers, got 17",
    ),
    (
        "keypoint NaN",
        _set(_ann(), "keypoints", [math.nan] + [1, 2] + [1, 1, 2] * 16),
        "'keypoints' holds a non-finite",
    ),
    (
        "keypoint Infinity",
        _set(_ann(), "keypoints", [1, -math.inf, 2] * 17),
        "'keypoints' holds a non-finite",
    ),
    (
        "keypoint as text",
        _set(_ann(), "keypoints", ["1"] * 51),
        "'keypoints' holds a non-finite or non-numeric",
    ),
    (
        "keypoints true/false",
        _set(_ann(), "keypoints", [True] * 51),
        "'keypoints' holds a non-finite or non-numeric",
    ),
    (
        "keypoint far away",
        _set(_ann(), "keypoints", [1e300, 1, 2] * 17),
        "'keypoints' has a coordinate beyond +-65536 px",
    ),
    (
        "visibility 3",
        _set(_ann(), "keypoints", [1, 1, 3] * 17),
        "'keypoints' visibility flags must be 0, 1 or 2",
    ),
    (
        "bbox negative",
        _set(_ann(), "bbox", [1, 1, -5, 5]),
        "id=100 has a negative bbox size [1, 1, -5, 5]",
    ),
    (
        "bbox far away",
        _set(_ann(), "bbox", [0, 0, 1e300, 9]),
        "id=100: bbox [0, 0, 1e+300, 9] is beyond +-65536 px",
    ),
    # crowd regions: their segmentation is rasterised into the ignore mask
    (
        "crowd polygon NaN",
        _crowd(segmentation=[[1, 1, math.nan, 1, 5, 5]]),
        "image id=1: annotation id=900: unreadable segmentation (polygon values must be numbers",
    ),
    (
        "crowd polygon huge (would hang pycocotools)",
        _crowd(segmentation=[[1, 1, 1e12, 1, 5, 5]]),
        "annotation id=900: unreadable segmentation (polygon values must be numbers within",
    ),
    (
        "crowd polygon of text",
        _crowd(segmentation=[[1, 1, "x", 1, 5, 5]]),
        "unreadable segmentation",
    ),
    (
        "crowd polygon of 2 points",
        _crowd(segmentation=[[1, 1, 5, 5]]),
        "unreadable segmentation (no polygon with 3 or more points)",
    ),
    (
        "crowd RLE of another size",
        _crowd(segmentation={"counts": [5, 5], "size": [3, 4]}),
        "unreadable segmentation (RLE size [3, 4] is not the image's [30, 40])",
    ),
    (
        "crowd RLE of huge size",
        _crowd(segmentation={"counts": [5], "size": [10**6, 10**6]}),
        "RLE size [1000000, 1000000] is not the image's",
    ),
    (
        "crowd RLE negative counts",
        _crowd(segmentation={"counts": [-5, 10], "size": [H, W]}),
        "annotation id=900: unreadable segmentation",
    ),
    (
        "crowd RLE longer than the image",
        _crowd(segmentation={"counts": [10**5], "size": [H, W]}),
        f"unreadable segmentation (RLE counts sum to 100000, not {H} x {W})",
    ),
    (
        # pycocotools would decode it, leaving the rest of the mask uninitialised memory
        "crowd RLE shorter than the image",
        _crowd(segmentation={"counts": [5, 10], "size": [H, W]}),
        f"unreadable segmentation (RLE counts sum to 15, not {H} x {W})",
    ),
    (
        "crowd RLE fractional counts",
        _crowd(segmentation={"counts": [5.5, H * W - 5.5], "size": [H, W]}),
        "unreadable segmentation (RLE counts must be non-negative integers)",
    ),
    ("crowd without segmentation, bbox of 3", _crowd(bbox=[1, 1, 5]), "unreadable segmentation"),
    (
        "crowd without segmentation, bbox Infinity",
        _crowd(bbox=[1, 1, math.inf, 5]),
        "unreadable segmentation",
    ),
    ("crowd without segmentation or bbox", _crowd(bbox=None), "unreadable segmentation ('bbox')"),
]


@pytest.mark.parametrize(("mutate", "message"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_bad_annotation_file_is_one_clean_error(
    images: Path, tmp_path: Path, mutate: Callable[[dict], None], message: str
) -> None:
    document = base_document()
    mutate(document)
    res, out = build_document(document, tmp_path, images)
    assert message in error_line(res)
    check_outcome(res, out)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "ann.json: not valid JSON (Expecting value: line 1 column 1"),
        ('{"images": [', "ann.json: not valid JSON"),
        ("\xff\xfe\x00garbage", "ann.json: not valid JSON"),
        ("null", "ann.json: top level must be an object, got NoneType"),
        ('{"images": [], "annotations": 5}', "field 'annotations' has type int"),
    ],
)
def test_unreadable_annotation_file(images: Path, tmp_path: Path, text: str, message: str) -> None:
    res, _ = build_document(text, tmp_path, images)
    assert message in error_line(res)


def test_missing_files_and_folders(images: Path, tmp_path: Path) -> None:
    res = build(tmp_path / "nope.json", images, tmp_path / "o.zarr")
    assert "nope.json: file not found" in error_line(res)
    (tmp_path / "ann.json").write_text(json.dumps(base_document()))
    res = build(tmp_path / "ann.json", tmp_path / "no_images", tmp_path / "o.zarr")
    assert "no_images: image folder not found" in error_line(res)
    assert not (tmp_path / "o.zarr").exists()


# ---------------------------------------------------------------------------------------
# Broken image files: found while writing, so a store exists and stays incomplete


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_truncate, "im1.png: not a readable image"),
        (lambda p: p.write_bytes(b""), "im1.png: not a readable image"),
        (lambda p: p.write_text("a text file"), "im1.png: not a readable image"),
        (lambda p: (p.unlink(), p.mkdir()), "im1.png: image listed for id=2 is missing"),
        (lambda p: p.unlink(), "im1.png: image listed for id=2 is missing"),
        (
            lambda p: cv2.imwrite(str(p), np.zeros((H, W + 1, 3), np.uint8)),
            "im1.png: image is 41x30 but the annotations say 40x30",
        ),
    ],
    ids=["truncated PNG", "empty file", "text file", "a folder", "missing", "other size"],
)
def test_broken_image_leaves_an_incomplete_store(tmp_path: Path, damage, message: str) -> None:
    folder = write_images(tmp_path / "images")
    damage(folder / "im1.png")
    res, out = build_document(base_document(), tmp_path, folder, "--samples-per-shard", "1")
    assert message in error_line(res)
    attrs = read_attrs(out)
    assert attrs["complete"] is False
    # the image before the broken one was written; fix the file and --resume finishes
    assert np.asarray(zarr.open_group(str(out), mode="r")["progress/gt"][:]).tolist() == [1, 0]
    if (folder / "im1.png").is_dir():
        (folder / "im1.png").rmdir()
    write_images(folder)
    res = build(tmp_path / "ann.json", folder, out, "--samples-per-shard", "1", "--resume")
    assert res.exit_code == 0, res.output
    check_store(out)


# ---------------------------------------------------------------------------------------
# Accepted on purpose (documented rules)


def _first_store(res: Result, out: Path) -> tuple[dict, zarr.Group]:
    assert res.exit_code == 0, res.output
    return check_store(out), zarr.open_group(str(out), mode="r")


def test_image_smaller_than_the_stride_works(tmp_path: Path) -> None:
    """A 3x3 image (stride 4): the crop is mostly grey padding, the person is still drawn."""
    folder = write_images(tmp_path / "images", size=(3, 3))
    document = base_document()
    for image in document["images"]:
        image.update(width=3, height=3)
    for ann in document["annotations"]:
        ann.update(keypoints=[1, 1, 2] * 17, bbox=[0, 0, 3, 3], segmentation=[[0, 0, 2, 0, 2, 2]])
    attrs, g = _first_store(*build_document(document, tmp_path, folder))
    assert attrs["num_samples"] == 2
    crops = g["images"][:]
    assert crops.shape == (2, 16, 16, 3)
    assert (crops == PAD_VALUE[0]).all(axis=-1).mean() > 0.4  # padding outside the image
    # every part sits on the one labelled point, within half a cell of a cell centre
    assert g["gt/heatmaps"][:, :-1].max(axis=(1, 2, 3)).min() > 0.3


def test_skipped_annotations_follow_the_filtering_rules(images: Path, tmp_path: Path) -> None:
    document = base_document()
    # image 2: its person has no labelled keypoint -> masked, and the image is no sample
    document["annotations"][1]["keypoints"] = [0] * 51
    # image 1: a person of another category is ignored; a crowd whose segmentation has an
    # unusable type masks its bbox instead
    document["annotations"].append(
        {"id": 7, "image_id": 1, "category_id": 2, "keypoints": "not even read"}
    )
    _crowd(segmentation="garbage", bbox=[0, 0, 16, 30])(document)
    # a labelled person's bbox that is not 4 finite numbers: the keypoints' box is used
    document["annotations"][0]["bbox"] = [0, 0, math.nan, 1]
    attrs, g = _first_store(*build_document(document, tmp_path, images, "--no-augment"))
    assert attrs["num_samples"] == 1 and g["meta/image_id"][:].tolist() == [1]
    # no augmentation: the crop spans image x 9.3..22.7 px, the crowd bbox x < 16 px
    mask = g["masks"][0]
    assert mask[:, 0].max() == 0 and mask[:, -1].min() == 1


def test_truncated_jpeg_is_not_detected(tmp_path: Path) -> None:
    """Documented limitation: libjpeg decodes a truncated JPEG, fills the missing rows grey
    and only warns on stderr ("Premature end of JPEG file"); the build accepts it."""
    folder = write_images(tmp_path / "images")
    document = base_document()
    for i, image in enumerate(document["images"]):
        pixels = np.random.default_rng(i).integers(0, 256, (H, W, 3), np.uint8)  # big file
        cv2.imwrite(str(folder / f"im{i}.jpg"), pixels)
        image["file_name"] = f"im{i}.jpg"
    _truncate(folder / "im1.jpg")
    _first_store(*build_document(document, tmp_path, folder))


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((H, W), np.uint8),
        np.full((H, W, 3), 60000, np.uint16),
        np.zeros((H, W, 4), np.uint8),
    ],
    ids=["grey", "16 bit", "RGBA"],
)
def test_other_pixel_formats_become_8_bit_rgb(tmp_path: Path, pixels: np.ndarray) -> None:
    folder = write_images(tmp_path / "images")
    cv2.imwrite(str(folder / "im0.png"), pixels)
    _first_store(*build_document(base_document(), tmp_path, folder))


# ---------------------------------------------------------------------------------------
# Fuzzing: random damage to a valid file never gets past the policy

_IMAGE_FIELDS = ["id", "file_name", "height", "width"]
_ANN_FIELDS = ["id", "image_id", "category_id", "iscrowd", "bbox", "keypoints", "segmentation"]
_NUMBERS = hs.one_of(
    hs.integers(-(2**70), 2**70),
    hs.floats(allow_nan=True, allow_infinity=True),
    hs.sampled_from([0, 1, 2, -1, 3, 30, 40, 65536, 65537, 1e300]),
)
_VALUES = hs.one_of(
    hs.none(),
    hs.booleans(),
    _NUMBERS,
    hs.text(max_size=4),
    hs.lists(_NUMBERS, max_size=60),
    hs.lists(hs.lists(_NUMBERS, max_size=8), max_size=3),
)
# near-valid values with at most one odd entry, so that damage reaches the renderer and the
# mask rasteriser instead of stopping at the first non-finite number
_ODD = hs.sampled_from(
    [math.nan, math.inf, -math.inf, 1e300, 1e12, 65537, 65536, -1, 0, 3, 0.5, "1", None, True]
)


def _poke(flat: list, index: int, odd: Any) -> list:
    if index < len(flat):
        flat[index] = odd
    return flat


_KEYPOINTS = hs.builds(
    _poke,
    hs.lists(
        hs.tuples(hs.floats(-60, 60), hs.floats(-60, 60), hs.sampled_from([0, 1, 2, 2])),
        min_size=17,
        max_size=17,
    ).map(lambda triples: [v for t in triples for v in t]),
    hs.integers(0, 80),
    _ODD,
)
_BBOX = hs.builds(
    _poke, hs.lists(hs.floats(-20, 60), min_size=3, max_size=5), hs.integers(0, 8), _ODD
)
_POLYGON = hs.builds(
    _poke, hs.lists(hs.floats(-20, 60), min_size=4, max_size=14), hs.integers(0, 20), _ODD
)
_SEGMENTATION = hs.one_of(
    _POLYGON.map(lambda p: [p]),
    hs.fixed_dictionaries(
        {
            "counts": hs.one_of(hs.text(max_size=6), hs.lists(hs.integers(-5, 2000), max_size=4)),
            "size": hs.one_of(hs.just([H, W]), hs.lists(hs.integers(-5, 50), max_size=3)),
        }
    ),
    _VALUES,
)
_INDEX = hs.integers(0, 2)  # 2 appends a copy of record 0 (another person or image) first
_STRUCTURE = hs.one_of(
    hs.tuples(
        hs.just("annotations"), _INDEX, hs.sampled_from(_ANN_FIELDS), hs.just("delete") | _VALUES
    ),
    hs.tuples(
        hs.just("images"), _INDEX, hs.sampled_from(_IMAGE_FIELDS), hs.just("delete") | _VALUES
    ),
)
_GEOMETRY = hs.one_of(
    hs.tuples(hs.integers(0, 2), hs.just("keypoints"), _KEYPOINTS),
    hs.tuples(hs.integers(0, 2), hs.just("bbox"), _BBOX),
    hs.tuples(hs.integers(0, 2), hs.just("segmentation"), _SEGMENTATION),
    hs.tuples(hs.just(2), hs.just("segmentation"), _SEGMENTATION),  # the crowd, more often
)


def _apply(document: dict, mutation: tuple) -> None:
    section, index, key, value = mutation
    records = document[section]
    if index == 2:
        records.append(copy.deepcopy(records[0]))
        records[-1]["id"] = 1000 + len(records)  # a fresh id: duplicates are tabled above
        index = len(records) - 1
    if value == "delete":
        records[index].pop(key, None)
    else:
        records[index][key] = value


def _fuzz(document: dict, images: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        res, out = build_document(document, Path(folder), images)
        check_outcome(res, out)


@FUZZ
@given(mutations=hs.lists(_STRUCTURE, min_size=1, max_size=3))
def test_fuzzed_fields_error_cleanly_or_build_a_sound_store(images: Path, mutations: list) -> None:
    document = base_document()
    for mutation in mutations:
        _apply(document, mutation)
    _fuzz(document, images)


@FUZZ
@given(mutations=hs.lists(_GEOMETRY, min_size=1, max_size=3))
def test_fuzzed_geometry_errors_cleanly_or_builds_a_sound_store(
    images: Path, mutations: list
) -> None:
    """Keypoints, boxes and segmentations that are nearly valid reach the renderer and the
    mask rasteriser (NaN, inf and huge polygon values once hung pycocotools)."""
    document = base_document()
    _crowd(segmentation=[[1, 1, 12, 1, 12, 9, 1, 9]])(document)  # annotations[2], image 1
    for index, key, value in mutations:
        document["annotations"][index][key] = value
    _fuzz(document, images)


@FUZZ
@given(cut=hs.integers(0, 10_000), junk=hs.binary(max_size=8))
def test_fuzzed_bytes_of_the_file_error_cleanly(images: Path, cut: int, junk: bytes) -> None:
    text = json.dumps(base_document()).encode()
    data = text[: cut % len(text)] + junk
    with tempfile.TemporaryDirectory() as folder:
        ann = Path(folder) / "ann.json"
        ann.write_bytes(data)
        res = build(ann, images, Path(folder) / "out.zarr")
        assert "ann.json" in error_line(res)


# ---------------------------------------------------------------------------------------
# Bad options of the commands


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sigma", "nan"], "--sigma: must be positive and finite, got nan"),
        (["--sigma", "inf"], "--sigma: must be positive and finite, got inf"),
        (["--sigma", "0"], "--sigma: must be positive and finite, got 0.0"),
        (["--paf-half-width", "nan"], "--paf-half-width: must be positive and finite, got nan"),
        (["--stride", "0"], "--stride: must be positive, got 0"),
        (["--stride", "5"], "--input-size: 16 is not a multiple of the stride 5"),
        (["--input-size", "-16"], "--input-size: must be positive, got -16"),
        (["--seed", "-1"], "--seed: must be >= 0, got -1"),
        (["--views-per-image", "0"], "--views-per-image: must be >= 1, got 0"),
        (["--samples-per-shard", "0"], "--samples-per-shard: must be >= 1, got 0"),
        (["--slice", "2/2"], "--slice 2/2: need 0 <= i < n"),
        (["--slice", "half"], "--slice must look like i/n (e.g. 0/4), got 'half'"),
        (["--shard", "2/2"], "--shard 2/2: need 0 <= i < n"),  # the deprecated alias
        # the teacher is checked before the GT build, not after it
        (["--teacher", "missing.pt2"], "missing.pt2: teacher file not found"),
    ],
)
def test_bad_build_options(images: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    res, out = build_document(base_document(), tmp_path, images, *extra)
    assert message in error_line(res)
    assert not out.exists()


def test_teacher_batch_size_is_checked_before_the_build(images: Path, tmp_path: Path) -> None:
    teacher = tmp_path / "t.pt2"
    teacher.write_bytes(b"not read: the batch size is refused first")
    res, out = build_document(
        base_document(), tmp_path, images, "--teacher", str(teacher), "--batch-size", "0"
    )
    assert "--batch-size: must be >= 1, got 0" in error_line(res)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "0"], "--size: image size must be 32..4096 px, got 0"),
        (["--size", "5000"], "--size: image size must be 32..4096 px, got 5000"),
        (["--crowd", "nan"], "--crowd: rate must be in [0, 1], got nan"),
        (["--missed-visible", "inf"], "--missed-visible: rate must be in [0, 1], got inf"),
        (["--val", "-1"], "--val: number of images must be >= 0, got -1"),
        (["--seed", "-1"], "--seed: must be >= 0, got -1"),
        (["--persons-per-image", "1..99"], "--persons-per-image: want a..b with 0 <= a <= b <= 32"),
    ],
)
def test_bad_synth_options(tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(lcdata_cli, ["synth", str(tmp_path / "s"), "--quiet", *args])
    assert message in error_line(res)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--mode", "kd", "--lam", "1.5"], 1, "--lam: must be in [0, 1], got 1.5"),
        (["--mode", "kd+lc", "--lam", "-0.1"], 1, "--lam: must be in [0, 1], got -0.1"),
        (["--mode", "kd", "--lam", "nan"], 1, "--lam: must be in [0, 1], got nan"),
        (["--mode", "kd", "--lam", "inf"], 1, "--lam: must be in [0, 1], got inf"),
        (["--mode", "max", "--lam", "0.3"], 1, "--lam: applies to modes kd and kd+lc only"),
        # usage errors (exit status 2) come from click's option checking
        (["--mode", "median"], 2, "Invalid value for '--mode': 'median' is not one of"),
        (["--mode", "max", "--background", "mean"], 2, "Invalid value for '--background'"),
    ],
)
def test_bad_correct_options(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    cache = tmp_path / "cache.zarr"
    cache.mkdir()  # options are checked before the store is even opened
    out = tmp_path / "out.zarr"
    res = CliRunner().invoke(lcdata_cli, ["correct", str(cache), "--out", str(out), *args])
    assert res.exit_code == code and message in res.output, res.output
    assert "Traceback" not in res.output and not out.exists()


@FUZZ
@given(lam=hs.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 <= x <= 1))
def test_fuzzed_lambda_outside_0_1_is_refused(lam: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cache, out = Path(folder) / "cache.zarr", Path(folder) / "out.zarr"
        cache.mkdir()
        args = ["correct", str(cache), "--mode", "kd", "--lam", repr(lam), "--out", str(out)]
        res = CliRunner().invoke(lcdata_cli, args)
        assert "--lam: must be in [0, 1]" in error_line(res)
        assert not out.exists()


def test_trainer_missing_and_malformed_inputs(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        trainer_cli, ["fit", "--store", str(tmp_path / "nope.zarr"), "--out", str(tmp_path / "r")]
    )
    assert "nope.zarr: store not found" in error_line(res)
    assert not (tmp_path / "r").exists()
    res = runner.invoke(
        trainer_cli, ["evaluate", "--oracle", str(tmp_path / "nope.json"), str(tmp_path)]
    )
    assert "nope.json: annotation file not found" in error_line(res)
    (tmp_path / "bad.json").write_text('{"images": [{"id": 1}], "annotations": []}')
    res = runner.invoke(
        trainer_cli, ["evaluate", "--oracle", str(tmp_path / "bad.json"), str(tmp_path)]
    )
    assert "bad.json: images[0]: missing field 'file_name'" in error_line(res)
    (tmp_path / "good.json").write_text(json.dumps(base_document()))
    res = runner.invoke(
        trainer_cli,
        ["evaluate", str(tmp_path / "nope.pt"), str(tmp_path / "good.json"), str(tmp_path)],
    )
    assert "nope.pt: checkpoint file not found" in error_line(res)
