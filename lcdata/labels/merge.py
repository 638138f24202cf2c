"""Keypoint-level label correction: labelled keypoints completed by a teacher's decoded persons.

Instead of mixing the teacher's maps into the label maps cell by cell (eq. 2 / eq. 3, which
carries the teacher's faint haze along), decode the teacher's maps into persons
(`lcdata.labels.decode`), add what the labels lack, and render GT-like targets from the
merged keypoints: sharp Gaussians and PAF bands, and the merged keypoints themselves, so a
fresh augmentation re-renders them exactly.

`merge_persons` of one crop, parts in crop pixels (skeleton parts, not COCO's 17):
1. a teacher person *matches* the labelled person with which it shares the most parts
   within `radius` pixels (at least one part, each labelled person matched once, best
   pairs first);
2. a matched labelled person gains the teacher's parts it lacks (v = 0) whose peak value
   is at least `min_peak` (a *missed keypoint*);
3. an unmatched teacher person with at least `min_parts` parts of peak `min_peak` or more
   becomes a new person with those parts (an *unannotated person*);
4. an added part is dropped when a labelled keypoint of the same part lies within `radius`
   (that point is labelled already, on someone else).
Added parts get v = 2 (their peak value is kept beside them as the score).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from lcdata.errors import ConfigError
from lcdata.labels.decode import Person


@dataclass(frozen=True)
class MergeConfig:
    """Thresholds of `merge_persons`.

    Attributes:
        min_peak: a teacher part is added only with a peak value at least this.
        min_parts: an unmatched teacher person needs at least this many such parts to be
            added as a new person.
        radius: parts of the same type closer than this many render sigmas are the same
            point.
        max_added: at most this many new persons per crop (the most confident first).
    """

    min_peak: float = 0.5
    min_parts: int = 5
    radius: float = 2.0
    max_added: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.min_peak <= 2 or self.min_parts < 1 or self.radius <= 0:
            raise ConfigError(
                "MergeConfig", "min_peak", f"need 0 < min_peak <= 2, min_parts >= 1, radius > 0: "
                f"{self}",
            )  # fmt: skip
        if self.max_added < 0:
            raise ConfigError("MergeConfig", "max_added", f"must be >= 0, got {self.max_added}")

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any] | None) -> MergeConfig:
        return cls(**(attrs or {}))


class Merged(NamedTuple):
    """What `merge_persons` made of one crop.

    Attributes:
        keypoints: (P', K, 3) float32 merged parts (x, y crop pixels, v); the labelled
            persons first, in their order, then the new ones.
        added: (P', K) float32 peak value of each added part, 0 where nothing was added.
        matched: (P',) int, for each row the teacher person it took parts from, -1 none.
        num_labelled: rows [0, num_labelled) are labelled persons, the rest are new.
    """

    keypoints: np.ndarray
    added: np.ndarray
    matched: np.ndarray
    num_labelled: int


def _shared_parts(label: np.ndarray, teacher: np.ndarray, radius: float) -> np.ndarray:
    """(P, T) number of parts present in both within `radius` pixels."""
    both = (label[:, None, :, 2] > 0) & (teacher[None, :, :, 2] > 0)
    dist = np.linalg.norm(label[:, None, :, :2] - teacher[None, :, :, :2], axis=-1)
    return (both & (dist < radius)).sum(axis=-1)


def merge_persons(
    labelled: np.ndarray, teacher: list[Person], *, cfg: MergeConfig, sigma: float
) -> Merged:
    """Complete one crop's labelled persons with the teacher's (module doc).

    Args:
        labelled: (P, K, 3) labelled parts, crop pixels, v > 0 where labelled (padding rows
            of zeros are dropped).
        teacher: the teacher's decoded persons (`decode`), keypoints (K, 3) = (x, y, peak).
        cfg: thresholds; `cfg.radius` is in units of `sigma`.
        sigma: the render sigma in crop pixels.

    Returns:
        `Merged`.
    """
    labelled = np.asarray(labelled, np.float32)
    k = labelled.shape[1]
    labelled = labelled[(labelled[..., 2] > 0).any(axis=1)]
    radius = cfg.radius * sigma
    t_kps = np.stack([p.keypoints for p in teacher]) if teacher else np.zeros((0, k, 3))
    out = labelled.copy().reshape(-1, k, 3)
    added = np.zeros(out.shape[:2], np.float32)
    matched = np.full(len(out), -1, int)
    taken = np.zeros(len(t_kps), bool)
    if len(out) and len(t_kps):
        shared = _shared_parts(out, t_kps, radius)
        for flat in np.argsort(-shared, axis=None, kind="stable"):
            p, t = np.unravel_index(flat, shared.shape)
            if shared[p, t] == 0:
                break
            if matched[p] >= 0 or taken[t]:
                continue
            matched[p], taken[t] = t, True
    # labelled keypoints of each part type, to refuse adding a point labelled on someone else
    lab_xy = [out[out[:, j, 2] > 0, j, :2] for j in range(k)]

    def free(j: int, xy: np.ndarray) -> bool:
        return not len(lab_xy[j]) or bool(np.linalg.norm(lab_xy[j] - xy, axis=1).min() >= radius)

    for p in np.nonzero(matched >= 0)[0]:
        t = t_kps[matched[p]]
        for j in np.nonzero((out[p, :, 2] == 0) & (t[:, 2] >= cfg.min_peak))[0]:
            if free(j, t[j, :2]):
                out[p, j] = (t[j, 0], t[j, 1], 2)
                added[p, j] = t[j, 2]
    new_rows, new_added, new_from = [], [], []
    order = sorted(np.nonzero(~taken)[0], key=lambda t: -teacher[t].score)
    for t in order:
        if len(new_rows) >= cfg.max_added:
            break
        parts = np.nonzero(t_kps[t, :, 2] >= cfg.min_peak)[0]
        parts = [j for j in parts if free(j, t_kps[t, j, :2])]
        if len(parts) < cfg.min_parts:
            continue
        row = np.zeros((k, 3), np.float32)
        score = np.zeros(k, np.float32)
        row[parts, :2] = t_kps[t, parts, :2]
        row[parts, 2] = 2
        score[parts] = t_kps[t, parts, 2]
        new_rows.append(row)
        new_added.append(score)
        new_from.append(t)
    num_labelled = len(out)
    if new_rows:
        out = np.concatenate([out, np.stack(new_rows)])
        added = np.concatenate([added, np.stack(new_added)])
        matched = np.concatenate([matched, np.asarray(new_from, int)])
    return Merged(out.astype(np.float32), added, matched, num_labelled)
