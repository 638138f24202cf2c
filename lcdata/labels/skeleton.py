"""The CMU/OpenPose skeleton: the one definition of parts, limbs, flips and channel layout.

Everything that needs a part index, a limb, a flip permutation or a channel count reads it
from a `Skeleton` (by default `CMU_SKELETON`); stores and checkpoints record it with
`Skeleton.to_attrs()` and readers rebuild it with `Skeleton.from_attrs()`.

Channel layout of the maps (the contract between renderer, stores, models and decoder):
    heatmaps: (K + 1) channels, part k at channel k, background at channel K,
              background = 1 - max over the K part channels.
    pafs:     2L channels, limb l at channels 2l (x component) and 2l + 1 (y component).

With the CMU skeleton K = 18 parts and L = 19 limbs, i.e. 19 heatmap and 38 PAF channels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lcdata.errors import LcposeError

COCO_PART_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
"""The 17 COCO person keypoints in annotation order."""

COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16),
)  # fmt: skip

COCO_SKELETON_EDGES: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
"""COCO's own 0-based skeleton edges, used only for drawing COCO-17 keypoints."""

# Sentinel in `coco_index` for a part that COCO does not label and that is synthesised.
SYNTHESISED = -1


@dataclass(frozen=True)
class Skeleton:
    """Part names, limbs, mirror pairs and the COCO mapping: the only source of channel layout.

    Attributes:
        names: (K,) part names in heatmap channel order.
        limbs: (L,) (from, to) part index pairs in PAF channel order; the PAF of limb l
            points from part `limbs[l][0]` to part `limbs[l][1]`.
        flip_pairs: unordered (left, right) part index pairs swapped by a horizontal flip.
        coco_index: (K,) for every part, its index among the 17 COCO keypoints, or
            `SYNTHESISED` (-1) for the neck, made from both shoulders.
        root: part from which the decoder grows persons (the neck).
    """

    names: tuple[str, ...]
    limbs: tuple[tuple[int, int], ...]
    flip_pairs: tuple[tuple[int, int], ...]
    coco_index: tuple[int, ...]
    root: int = 1

    def __post_init__(self) -> None:
        k = len(self.names)
        if len(self.coco_index) != k:
            raise LcposeError(f"skeleton: coco_index has {len(self.coco_index)} entries, want {k}")
        for a, b in self.limbs:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise LcposeError(f"skeleton: limb ({a}, {b}) is not a pair of distinct parts")
        seen: set[int] = set()
        for a, b in self.flip_pairs:
            if a in seen or b in seen or a == b:
                raise LcposeError(f"skeleton: flip pair ({a}, {b}) repeats a part")
            seen.update((a, b))
        # The limb set must be closed under the flip, or a flipped PAF has nowhere to go.
        self.limb_flip_permutation()

    @property
    def num_parts(self) -> int:
        return len(self.names)

    @property
    def num_limbs(self) -> int:
        return len(self.limbs)

    @property
    def num_heatmaps(self) -> int:
        """Heatmap channels: parts + background."""
        return len(self.names) + 1

    @property
    def num_pafs(self) -> int:
        """PAF channels: an (x, y) pair per limb."""
        return 2 * len(self.limbs)

    def flip_permutation(self) -> np.ndarray:
        """(K,) int: part k of the mirrored image is part perm[k] of the original."""
        perm = np.arange(self.num_parts)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    def limb_flip_permutation(self) -> np.ndarray:
        """(L,) int: limb l of the mirrored image is limb perm[l] of the original.

        Every limb (a, b) maps to the limb (perm[a], perm[b]) with the same direction.
        """
        parts = self.flip_permutation()
        index = {limb: i for i, limb in enumerate(self.limbs)}
        perm = np.empty(self.num_limbs, dtype=np.int64)
        for i, (a, b) in enumerate(self.limbs):
            mirrored = (int(parts[a]), int(parts[b]))
            if mirrored not in index:
                raise LcposeError(f"skeleton: limb ({a}, {b}) has no mirror limb {mirrored}")
            perm[i] = index[mirrored]
        return perm

    def heatmap_flip_permutation(self) -> np.ndarray:
        """(K + 1,) channel permutation of a heatmap tensor under a flip (background fixed)."""
        return np.concatenate([self.flip_permutation(), [self.num_parts]])

    def paf_flip(self) -> tuple[np.ndarray, np.ndarray]:
        """Channel permutation and sign of a PAF tensor under a horizontal flip.

        Returns:
            perm: (2L,) int, flipped[c] = sign[c] * original[perm[c]] after mirroring x.
            sign: (2L,) float32, -1 on x channels (a mirrored vector's x flips), +1 on y.
        """
        limb_perm = self.limb_flip_permutation()
        perm = np.stack([2 * limb_perm, 2 * limb_perm + 1], axis=1).reshape(-1)
        sign = np.tile(np.array([-1.0, 1.0], np.float32), self.num_limbs)
        return perm, sign

    def from_coco(self, keypoints: np.ndarray) -> np.ndarray:
        """Map COCO-17 keypoints to this skeleton's parts.

        Args:
            keypoints: (..., 17, 3) float, (x, y, v) in image pixels, COCO visibility v.

        Returns:
            (..., K, 3) float32. A synthesised part (the neck) is the midpoint of both
            shoulders, present only when both are labelled (v > 0); its visibility is the
            smaller of the two (visible only when both shoulders are visible).
        """
        keypoints = np.asarray(keypoints, np.float32)
        out = np.zeros(keypoints.shape[:-2] + (self.num_parts, 3), np.float32)
        ls, rs = COCO_PART_NAMES.index("left_shoulder"), COCO_PART_NAMES.index("right_shoulder")
        for k, c in enumerate(self.coco_index):
            if c != SYNTHESISED:
                out[..., k, :] = keypoints[..., c, :]
                continue
            a, b = keypoints[..., ls, :], keypoints[..., rs, :]
            both = (a[..., 2] > 0) & (b[..., 2] > 0)
            out[..., k, :2] = np.where(both[..., None], (a[..., :2] + b[..., :2]) / 2, 0)
            out[..., k, 2] = np.where(both, np.minimum(a[..., 2], b[..., 2]), 0)
        return out

    def to_coco(self, parts: np.ndarray) -> np.ndarray:
        """Inverse of `from_coco`: (..., K, 3) parts -> (..., 17, 3) COCO keypoints.

        Synthesised parts are dropped; COCO keypoints with no part stay (0, 0, 0).
        """
        parts = np.asarray(parts, np.float32)
        out = np.zeros(parts.shape[:-2] + (len(COCO_PART_NAMES), 3), np.float32)
        for k, c in enumerate(self.coco_index):
            if c != SYNTHESISED:
                out[..., c, :] = parts[..., k, :]
        return out

    def grouping_order(self) -> list[int]:
        """Limb indices in breadth-first order from `root`, for growing persons limb by limb.

        Each limb in the list touches a part already reached by an earlier limb (or the root),
        so a decoder that walks the list always extends an existing partial person.
        """
        reached = {self.root}
        order: list[int] = []
        remaining = list(range(self.num_limbs))
        while remaining:
            progress = False
            for limb in list(remaining):
                a, b = self.limbs[limb]
                if a in reached or b in reached:
                    order.append(limb)
                    reached.update((a, b))
                    remaining.remove(limb)
                    progress = True
            if not progress:
                # Disconnected limbs still get decoded, after the connected tree.
                order.extend(remaining)
                break
        return order

    def to_attrs(self) -> dict[str, Any]:
        """JSON-safe dict, written into store attributes, checkpoints and exported models."""
        return {
            "names": list(self.names),
            "limbs": [list(limb) for limb in self.limbs],
            "flip_pairs": [list(pair) for pair in self.flip_pairs],
            "coco_index": list(self.coco_index),
            "root": self.root,
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Skeleton:
        try:
            return cls(
                names=tuple(str(n) for n in attrs["names"]),
                limbs=tuple((int(a), int(b)) for a, b in attrs["limbs"]),
                flip_pairs=tuple((int(a), int(b)) for a, b in attrs["flip_pairs"]),
                coco_index=tuple(int(c) for c in attrs["coco_index"]),
                root=int(attrs.get("root", 1)),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise LcposeError(f"skeleton attributes are malformed: {err!r}") from None


CMU_SKELETON = Skeleton(
    names=(
        "nose", "neck", "right_shoulder", "right_elbow", "right_wrist",
        "left_shoulder", "left_elbow", "left_wrist", "right_hip", "right_knee",
        "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye",
        "left_eye", "right_ear", "left_ear",
    ),
    # The 19 limbs of Cao et al. 2017 in their PAF order; the last two (shoulder-ear) are
    # the redundant connections CMU added to make grouping robust to a missing head part.
    limbs=(
        (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
        (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17),
    ),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17)),
    coco_index=(0, SYNTHESISED, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3),
    root=1,
)  # fmt: skip
"""The 18-part, 19-limb CMU-Pose skeleton: 19 heatmap channels, 38 PAF channels."""
