"""The synthetic benchmark's scenes, label failures and COCO files.

Each image is a cluttered background, optionally a crowd region of tiny figures, and a..b
posed stick figures (`lcdata.synth.pose`) drawn back to front (`lcdata.synth.draw`). From the
geometry every person gets its true 17 keypoints and COCO visibility; the *noisy* labels are
the truth after the failures of Kato et al. (sec. 3), each with its own switch or rate:

1. out_of_image: keypoints outside the image are unlabelled (0, 0, 0), as in COCO.
2. severely_occluded: keypoints buried under a nearer person are unlabelled.
3. missed_visible: each still-labelled visible (v=2) keypoint is dropped with probability p.
4. unannotated: each person is dropped from the noisy file with probability q, with no
   crowd/ignore region in its place.
Failure 4 is decided first and takes all of a dropped person's keypoints; failures 1-3
then apply in order to the annotated persons, so each removed keypoint is counted once
(`lcdata.synth.truth` reads the cause of each back from the files, in the same order).

Definitions (in image pixels, pixel centres at integers):
    in image:   `lcdata.labels.grid.inside_image`, i.e. (x, y) in [-0.5, W - 0.5) x [-0.5, H - 0.5).
    occluded:   the keypoint's pixel belongs to a person drawn later (nearer); v=1, else v=2.
                Self-occlusion (a figure's own arm over its own hip) is not modelled.
    severely occluded: every in-image pixel within `severe_radius(H)` of the keypoint's pixel
                belongs to nearer persons (the point is buried inside another body, not
                merely under a thin limb).

Randomness: image i of split s (train 0, val 1) draws its scene from
`SeedSequence([seed, s, i]).spawn(2)[0]` and its label failures from `[1]`, so images do not
depend on the failure settings, and failure draws are made whether or not a failure is on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from lcdata.errors import ConfigError, LcposeError
from lcdata.labels.grid import inside_image
from lcdata.labels.skeleton import COCO_PART_NAMES, COCO_SKELETON_EDGES
from lcdata.synth.draw import background, draw_figure, finish, sample_appearance, silhouette
from lcdata.synth.pose import NUM_KEYPOINTS, Figure, sample_figure, standing_nose_ankle
from lcdata.synth.truth import FAILURES

SPLITS: tuple[str, ...] = ("train", "val")

COCO_AREA_PER_NOSE_ANKLE2 = 0.3
"""COCO `area` / (nose-to-ankle distance)^2 of upright persons. Measured on the 14 upright,
straight-legged, fully labelled persons of COCO-MINI (train + val 2017): median 0.315,
quartiles 0.275-0.439; rounded down to 0.3."""

AREA_PER_HEIGHT2 = COCO_AREA_PER_NOSE_ANKLE2 * standing_nose_ankle() ** 2
"""`area` of a whole figure = this * H^2 (H = standing height, px); 0.3 * 0.894^2 = 0.240."""

MIN_KEYPOINTS_IN_IMAGE = 6  # a placement is retried until this many keypoints are in the image
MIN_VISIBLE_FRACTION = 0.3  # of a person's in-image silhouette left visible by nearer persons
MIN_VISIBLE_PX = 16
PLACEMENT_TRIES = 30
SEVERE_RADIUS = 0.04  # of H
SEVERE_MIN_RADIUS = 2.0  # px


def severe_radius(height: float) -> float:
    """Radius (px) of the disc that must be fully covered for 'severely occluded'."""
    return max(SEVERE_MIN_RADIUS, SEVERE_RADIUS * height)


@dataclass(frozen=True)
class SynthConfig:
    """What `lcdata synth` generates. Sizes are in pixels of the square image.

    Attributes:
        image_size: side of the square images, px.
        persons_per_image: (a, b): a..b persons are attempted per image, uniformly; a
            placement that would leave an earlier person less than `MIN_VISIBLE_FRACTION`
            visible is retried and, after `PLACEMENT_TRIES`, skipped.
        height_range: standing height of ordinary persons as fractions of `image_size`,
            log-uniform (40-120 px at 128 px).
        small_prob: probability that a person is small instead, `small_range` fractions
            (24-40 px at 128 px).
        truncated: probability that a person is placed anywhere in [-0.1, 1.1] * size
            (so possibly partly outside the image) rather than wholly inside it; persons too
            large to fit are always placed that way.
        crowd: probability that an image holds a crowd region (iscrowd=1).
        missed_visible: p, failure 3 rate.
        unannotated: q, failure 4 rate.
        drop_out_of_image: failure 1 switch.
        drop_occluded: failure 2 switch.
    """

    image_size: int = 128
    persons_per_image: tuple[int, int] = (1, 4)
    height_range: tuple[float, float] = (40 / 128, 120 / 128)
    small_prob: float = 0.1
    small_range: tuple[float, float] = (24 / 128, 40 / 128)
    truncated: float = 0.3
    crowd: float = 0.1
    missed_visible: float = 0.1
    unannotated: float = 0.1
    drop_out_of_image: bool = True
    drop_occluded: bool = True

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 4096:
            raise ConfigError(
                "SynthConfig",
                "image_size",
                f"image size must be 32..4096 px, got {self.image_size}",
            )
        a, b = self.persons_per_image
        if not 0 <= a <= b <= 32:
            raise ConfigError(
                "SynthConfig",
                "persons_per_image",
                f"want a..b with 0 <= a <= b <= 32, got {a}..{b}",
            )
        for name in ("small_prob", "truncated", "crowd", "missed_visible", "unannotated"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError("SynthConfig", name, f"rate must be in [0, 1], got {value}")
        for name in ("height_range", "small_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError("SynthConfig", name, f"must satisfy 0 < lo <= hi, got {lo, hi}")

    def to_attrs(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("persons_per_image", "height_range", "small_range"):
            out[key] = list(out[key])
        return out


# ---------------------------------------------------------------------------------------------
# One image: geometry, pixels, true labels.


@dataclass
class Person:
    """One drawn person of a scene.

    Attributes:
        figure: pose and placement, image pixels.
        mask: (H, W) bool silhouette inside the image (before occlusion by nearer persons).
        total_px: silhouette pixels including those outside the image.
        keypoints_all: (17, 3) float64 (x, y, v): v=2 visible, v=1 occluded or outside.
        inside: (17,) bool, keypoint inside the image.
        severe: (17,) bool, severely occluded (only ever for in-image points).
    """

    figure: Figure
    mask: np.ndarray
    total_px: int
    keypoints_all: np.ndarray = field(default_factory=lambda: np.zeros((NUM_KEYPOINTS, 3)))
    inside: np.ndarray = field(default_factory=lambda: np.zeros(NUM_KEYPOINTS, bool))
    severe: np.ndarray = field(default_factory=lambda: np.zeros(NUM_KEYPOINTS, bool))


@dataclass
class Scene:
    """A generated image with its persons (back to front) and crowd regions.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        owner: (H, W) int16: index of the person whose pixel it is, -1 background, -2 crowd.
        persons: in drawing order (index = depth rank, 0 farthest).
        crowd_boxes: xywh boxes (image pixels) of the crowd regions.
    """

    image: np.ndarray
    owner: np.ndarray
    persons: list[Person]
    crowd_boxes: list[tuple[float, float, float, float]]


def _sample_height(rng: np.random.Generator, cfg: SynthConfig) -> float:
    lo, hi = cfg.small_range if rng.random() < cfg.small_prob else cfg.height_range
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))) * cfg.image_size)


def _place_person(
    rng: np.random.Generator, cfg: SynthConfig, height: float, placed: list[Person]
) -> Person | None:
    """Sample pose and position until enough keypoints are inside and earlier persons stay
    visible enough; None after `PLACEMENT_TRIES`."""
    s = cfg.image_size
    for _ in range(PLACEMENT_TRIES):
        fig = sample_figure(rng, height, (0.0, 0.0))
        x0, y0, x1, y1 = fig.bounds()
        half = np.array([x1 - x0, y1 - y0]) / 2
        if rng.random() < cfg.truncated or (2 * half > s).any():
            centre = rng.uniform(-0.1 * s, 1.1 * s, 2)
        else:  # the whole figure fits in the image
            centre = rng.uniform(half - 0.5, s - 0.5 - half)
        fig = fig.translated(centre)
        if inside_image(fig.keypoints_xy, (s, s)).sum() < MIN_KEYPOINTS_IN_IMAGE:
            continue
        mask, total = silhouette(fig, (s, s))
        visible_after = _visible_masks(placed + [Person(fig, mask, total)])
        ok = all(
            v.sum() >= max(MIN_VISIBLE_PX, MIN_VISIBLE_FRACTION * p.mask.sum())
            for v, p in zip(visible_after[:-1], placed, strict=True)
        )
        if ok and mask.sum() >= MIN_VISIBLE_PX:
            return Person(fig, mask, total)
    return None


def _visible_masks(persons: list[Person]) -> list[np.ndarray]:
    """(H, W) bool per person: its silhouette minus those of the persons drawn after it."""
    out: list[np.ndarray] = []
    covered = None
    for p in reversed(persons):
        out.append(p.mask if covered is None else p.mask & ~covered)
        covered = p.mask if covered is None else covered | p.mask
    return out[::-1]


def _crowd(
    rng: np.random.Generator, cfg: SynthConfig, image: np.ndarray, owner: np.ndarray
) -> tuple[float, float, float, float] | None:
    """Draw a crowd of tiny figures into `image` (in place); its xywh box, None if off-image."""
    s = cfg.image_size
    w, h = rng.uniform(0.3, 0.6) * s, rng.uniform(0.12, 0.22) * s
    x0, y0 = rng.uniform(-0.1 * s, 1.1 * s - w), rng.uniform(-0.05 * s, s - h)
    union = np.zeros((s, s), bool)
    n = int(rng.integers(8, 20))
    centres = np.stack([rng.uniform(x0, x0 + w, n), rng.uniform(y0, y0 + h, n)], 1)
    for cx, cy in centres[np.argsort(centres[:, 1])]:  # lower in the image = nearer
        height = rng.uniform(0.06, 0.11) * s
        fig = sample_figure(rng, height, (cx, cy), kind="standing", max_roll_deg=10.0)
        draw_figure(image, fig, appearance=sample_appearance(rng))
        union |= silhouette(fig, (s, s))[0]
    if not union.any():
        return None
    owner[union] = -2
    ys, xs = np.nonzero(union)
    return (xs.min() - 0.5, ys.min() - 0.5, xs.max() - xs.min() + 1.0, ys.max() - ys.min() + 1.0)


def _label(person: Person, index: int, owner: np.ndarray) -> None:
    """Fill the person's true keypoints, in-image flags and severe-occlusion flags."""
    h, w = owner.shape
    kp = person.figure.keypoints_xy
    inside = inside_image(kp, (w, h))
    pix = np.clip(np.floor(kp + 0.5).astype(int), 0, [w - 1, h - 1])
    nearer = owner > index
    occluded = inside & nearer[pix[:, 1], pix[:, 0]]
    r = severe_radius(person.figure.height)
    ri = int(np.floor(r))
    dy, dx = np.mgrid[-ri : ri + 1, -ri : ri + 1]
    disc = dy**2 + dx**2 <= r * r
    severe = np.zeros(NUM_KEYPOINTS, bool)
    for k in np.nonzero(occluded)[0]:
        x, y = pix[k]
        ys, xs = y + dy[disc], x + dx[disc]
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        severe[k] = bool(nearer[ys[keep], xs[keep]].all())
    person.keypoints_all = np.concatenate([kp, np.where(occluded | ~inside, 1, 2)[:, None]], 1)
    person.inside = inside
    person.severe = severe


def make_scene(rng: np.random.Generator, cfg: SynthConfig) -> Scene:
    """Generate one image and its persons' true labels from `rng`."""
    s = cfg.image_size
    image = background(rng, (s, s))
    owner = np.full((s, s), -1, np.int16)
    crowd_boxes = []
    if rng.random() < cfg.crowd:
        box = _crowd(rng, cfg, image, owner)
        if box is not None:
            crowd_boxes.append(box)
    a, b = cfg.persons_per_image
    # smaller persons are farther away: drawn first, so larger ones occlude them
    heights = sorted(_sample_height(rng, cfg) for _ in range(int(rng.integers(a, b + 1))))
    persons: list[Person] = []
    for height in heights:
        person = _place_person(rng, cfg, height, persons)
        if person is not None:
            persons.append(person)
    for i, person in enumerate(persons):
        owner[person.mask] = i
        draw_figure(image, person.figure, appearance=sample_appearance(rng))
    for i, person in enumerate(persons):
        _label(person, i, owner)
    return Scene(finish(rng, image), owner, persons, crowd_boxes)


# ---------------------------------------------------------------------------------------------
# Label failures and COCO records.


@dataclass(frozen=True)
class Noisy:
    """One person's labels after the failures.

    Attributes:
        keypoints: (17, 3) float64 noisy (x, y, v); dropped points are (0, 0, 0).
        removed: keypoints removed per failure 1-3 (name -> count).
        unannotated: the person is missing from the noisy file (failure 4).
    """

    keypoints: np.ndarray
    removed: dict[str, int]
    unannotated: bool


def corrupt(person: Person, rng: np.random.Generator, cfg: SynthConfig) -> Noisy:
    """Apply the four failures to one person's true labels.

    Failure 4 is decided first: an unannotated person loses all its keypoints to it, so
    every removed keypoint is attributed to exactly one failure and the attribution can be
    read back from the files (`lcdata.synth.truth.keypoint_causes`). Otherwise failures 1,
    2, 3 apply in that order. Both random draws (17 uniforms for failure 3, one for failure
    4) are always made, so switching one failure does not change which points another
    removes. With failure 1
    off, points outside the image keep their coordinates and v=1 (as in `keypoints_all`).
    """
    u_missed = rng.random(NUM_KEYPOINTS)
    u_person = rng.random()
    removed = dict.fromkeys(FAILURES[:3], 0)
    if u_person < cfg.unannotated:
        return Noisy(np.zeros_like(person.keypoints_all), removed, True)
    kps = person.keypoints_all.copy()
    for name, drop in (
        ("out_of_image", ~person.inside if cfg.drop_out_of_image else None),
        ("severely_occluded", person.severe if cfg.drop_occluded else None),
        ("missed_visible", (u_missed < cfg.missed_visible) & (kps[:, 2] == 2)),
    ):
        if drop is None:
            continue
        drop = drop & (kps[:, 2] > 0)
        removed[name] = int(drop.sum())
        kps[drop] = 0.0
    return Noisy(kps, removed, False)


def _polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons of a bool (H, W) mask, image pixels.

    Traced on the mask upsampled x2, so a polygon runs a quarter pixel inside the region's
    boundary rather than through the centres of its border pixels (one-pixel-wide limbs
    keep a non-zero area).
    """
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3:
            xy = c.reshape(-1, 2) / 2.0 - 0.25
            polys.append([round(float(v), 2) for v in xy.reshape(-1)])
    return polys


def _flat(kps: np.ndarray) -> list[float]:
    out = []
    for x, y, v in kps:
        out += [round(float(x), 2), round(float(y), 2), int(v)]
    return out


def person_records(
    person: Person, visible: np.ndarray, noisy: Noisy, *, ann_id: int, image_id: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(clean, noisy) COCO annotations of one person; noisy is None when unannotated.

    `area` = AREA_PER_HEIGHT2 * H^2 * (in-image share of the silhouette), so that OKS
    tolerances match those COCO gives a real person of the same height, and a truncated
    person's area shrinks as COCO's (in-image) segmentation area would.
    """
    ys, xs = np.nonzero(visible)
    bbox = [float(xs.min() - 0.5), float(ys.min() - 0.5)]
    bbox += [float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    share = person.mask.sum() / max(person.total_px, 1)
    base = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "segmentation": _polygons(visible),
        "area": round(float(AREA_PER_HEIGHT2 * person.figure.height**2 * share), 2),
        "bbox": [round(v, 2) for v in bbox],
    }
    clean_kps = person.keypoints_all.copy()
    clean_kps[~person.inside, 2] = 0  # COCOeval ignores v=0; coordinates kept
    clean = dict(base, num_keypoints=int((clean_kps[:, 2] > 0).sum()), keypoints=_flat(clean_kps))
    clean["keypoints_all"] = _flat(person.keypoints_all)
    if noisy.unannotated:
        return clean, None
    kps = noisy.keypoints
    return clean, dict(base, num_keypoints=int((kps[:, 2] > 0).sum()), keypoints=_flat(kps))


def crowd_record(box: tuple[float, ...], *, ann_id: int, image_id: int) -> dict[str, Any]:
    x, y, w, h = (round(float(v), 2) for v in box)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 1,
        "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
        "area": round(w * h, 2),
        "bbox": [x, y, w, h],
        "num_keypoints": 0,
        "keypoints": [0] * (3 * NUM_KEYPOINTS),
    }


def person_category() -> dict[str, Any]:
    """COCO's person category, keypoint names and 1-based skeleton."""
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO_PART_NAMES),
        "skeleton": [[a + 1, b + 1] for a, b in COCO_SKELETON_EDGES],
    }


# ---------------------------------------------------------------------------------------------
# Whole dataset.


def _empty_counts() -> dict[str, Any]:
    return {
        "images": 0,
        "persons": 0,
        "crowd_regions": 0,
        "keypoints": 0,
        "keypoints_in_image": 0,
        "keypoints_visible": 0,
        "keypoints_occluded": 0,
        "keypoints_severely_occluded": 0,
        "removed": {
            "out_of_image": 0,
            "severely_occluded": 0,
            "missed_visible": 0,
            "unannotated_persons": 0,
            "unannotated_keypoints": 0,
        },
        "noisy_persons": 0,
        "noisy_keypoints": 0,
    }


def generate_split(
    out_dir: str | Path,
    split: str,
    num_images: int,
    *,
    cfg: SynthConfig,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Write `out_dir/<split>/*.png` and both annotation files of one split; return counts.

    Counts (see `docs/synthetic.md`): `keypoints` = 17 per person (every true point,
    in and out of the image); `removed` per failure; the identity
    keypoints = noisy_keypoints + out_of_image + severely_occluded + missed_visible +
    unannotated_keypoints holds exactly.
    """
    if split not in SPLITS:
        raise LcposeError(f"synth: unknown split {split!r}, want one of {SPLITS}")
    if num_images < 0:
        raise ConfigError("generate_split", "num_images", f"must be >= 0, got {num_images}")
    out = Path(out_dir)
    image_dir = out / split
    image_dir.mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    split_id = SPLITS.index(split)
    images, clean_anns, noisy_anns = [], [], []
    counts = _empty_counts()
    ann_id = 0
    for i in tqdm(range(num_images), desc=f"synth {split}", disable=not progress):
        scene_seq, label_seq = np.random.SeedSequence([seed, split_id, i]).spawn(2)
        scene = make_scene(np.random.default_rng(scene_seq), cfg)
        label_rng = np.random.default_rng(label_seq)
        image_id = i + 1
        file_name = f"{i:06d}.png"
        cv2.imwrite(str(image_dir / file_name), scene.image)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": cfg.image_size,
                "height": cfg.image_size,
            }
        )
        visible = _visible_masks(scene.persons)
        for person, vis in zip(scene.persons, visible, strict=True):
            ann_id += 1
            noisy = corrupt(person, label_rng, cfg)
            clean, noisy_ann = person_records(person, vis, noisy, ann_id=ann_id, image_id=image_id)
            clean_anns.append(clean)
            _count(counts, person, noisy)
            if noisy_ann is not None:
                noisy_anns.append(noisy_ann)
        for box in scene.crowd_boxes:
            ann_id += 1
            record = crowd_record(box, ann_id=ann_id, image_id=image_id)
            clean_anns.append(record)
            noisy_anns.append(record)
            counts["crowd_regions"] += 1
    counts["images"] = num_images
    for suffix, anns in (("_clean", clean_anns), ("", noisy_anns)):
        data = {
            "info": {
                "description": f"lcpose synthetic person keypoints, {split}"
                + (" (clean truth)" if suffix else " (with label failures)"),
                "seed": seed,
                "config": cfg.to_attrs(),
            },
            "licenses": [],
            "images": images,
            "annotations": anns,
            "categories": [person_category()],
        }
        path = out / "annotations" / f"person_keypoints_{split}{suffix}.json"
        path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    return counts


def _count(counts: dict[str, Any], person: Person, noisy: Noisy) -> None:
    v = person.keypoints_all[:, 2]
    counts["persons"] += 1
    counts["keypoints"] += NUM_KEYPOINTS
    counts["keypoints_in_image"] += int(person.inside.sum())
    counts["keypoints_visible"] += int((person.inside & (v == 2)).sum())
    counts["keypoints_occluded"] += int((person.inside & (v == 1)).sum())
    counts["keypoints_severely_occluded"] += int(person.severe.sum())
    for name, n in noisy.removed.items():
        counts["removed"][name] += n
    kept = int((noisy.keypoints[:, 2] > 0).sum())
    if noisy.unannotated:
        counts["removed"]["unannotated_persons"] += 1
        counts["removed"]["unannotated_keypoints"] += int((person.keypoints_all[:, 2] > 0).sum())
    else:
        counts["noisy_persons"] += 1
        counts["noisy_keypoints"] += kept


def generate(
    out_dir: str | Path,
    *,
    num_train: int,
    num_val: int,
    cfg: SynthConfig,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """Write the whole benchmark and `corruption.json`; returns what that file holds."""
    if seed < 0:
        raise ConfigError("generate", "seed", f"must be >= 0, got {seed}")  # numpy's rule
    report: dict[str, Any] = {"seed": seed, "config": cfg.to_attrs(), "splits": {}}
    for split, n in (("train", num_train), ("val", num_val)):
        report["splits"][split] = generate_split(
            out_dir, split, n, cfg=cfg, seed=seed, progress=progress
        )
    path = Path(out_dir) / "corruption.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def format_summary(report: dict[str, Any]) -> str:
    """Human-readable lines of a `generate` report (what `lcdata synth` prints)."""
    lines = []
    for split, c in report["splits"].items():
        r = c["removed"]
        total = max(c["keypoints"], 1)
        lines.append(
            f"{split}: {c['images']} images, {c['persons']} persons, {c['crowd_regions']} crowd "
            f"regions; {c['keypoints']} true keypoints ({c['keypoints_in_image']} in image: "
            f"{c['keypoints_visible']} visible, {c['keypoints_occluded']} occluded)"
        )
        lines.append(
            f"  removed: out of image {r['out_of_image']} ({r['out_of_image'] / total:.1%}), "
            f"severely occluded {r['severely_occluded']} ({r['severely_occluded'] / total:.1%}), "
            f"missed visible {r['missed_visible']} ({r['missed_visible'] / total:.1%}), "
            f"unannotated persons {r['unannotated_persons']} "
            f"({r['unannotated_keypoints']} keypoints)"
        )
        lines.append(
            f"  noisy labels keep {c['noisy_keypoints']} of {c['keypoints']} keypoints "
            f"({c['noisy_keypoints'] / total:.1%}) and {c['noisy_persons']} of "
            f"{c['persons']} persons"
        )
    return "\n".join(lines)
