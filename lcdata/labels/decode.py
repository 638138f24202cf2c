"""Decoder: part heatmaps and part affinity fields (PAFs) -> people (Cao et al. 2017, refined).

Pure numpy/OpenCV, no model: the inverse of `lcdata.labels.render`, beside it as an encoder
and its decoder. docs/decoding.md gives the algorithm, the measured effect of every step on
COCO-MINI and the speed.

Coordinates: the maps are a grid of `stride` input pixels per cell, cell (i, j) standing for
input pixel (j * stride + (stride - 1) / 2, i * stride + (stride - 1) / 2) as in
`lcdata.labels.grid`. Inside this module candidates live in continuous cell
coordinates (cell centres at integers); `decode` returns (x, y) in input pixels (pixel
centres at integers) and the caller maps them back to the original image.

Steps of `decode`:
1. peaks (`find_peaks`): per part, local maxima of the heatmap above a threshold, refined to
   sub-cell precision by a parabola through the log values of the centre and its 4
   neighbours (exact for a sampled Gaussian, which is what the labels are);
2. limbs (`score_limb`): for every candidate pair of every limb, the PAF line integral
   (bilinear samples at the midpoints of equal pieces of the segment, dotted with its
   direction), CMU's criteria (more than a fraction of samples above a threshold, a prior
   against limbs longer than half the map height); pairs shorter than a cell, which the
   label's band may not cover at all, pass unless the field opposes them. Vectorised over
   pairs and samples;
3. matching (`match_limb`): greedy one-to-one per limb in decreasing score;
4. assembly (`assemble`): the accepted connections of all limbs, best first, join the
   persons of their two ends unless both hold a part of the same type: a constrained
   union-find, the order-free form of CMU's per-limb subset merging;
5. part sharing (`share_parts`): a person grown from the root takes a part that another
   person already holds when a valid limb connects them (one peak for the same part of two
   close people);
6. fragment merging (`merge_fragments`): pieces without the root part (a person whose neck
   is missing falls apart into head, arms and legs) that hold disjoint part types and lie
   close are joined;
7. scoring: person score = mean peak value x fraction of the skeleton found, so fragments
   rank after whole persons (COCO AP sorts detections by score).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import cv2
import numpy as np

from lcdata.errors import LcposeError
from lcdata.labels.grid import cells_to_pixels
from lcdata.labels.skeleton import Skeleton


@dataclass(frozen=True)
class DecodeConfig:
    """Thresholds and switches of `decode`.

    Chosen on oracle maps of COCO-MINI *train* (docs/decoding.md); the PAF thresholds are
    CMU's, which the oracle cannot tune (its fields are exact).

    Attributes:
        peak_threshold: a heatmap local maximum is a part candidate above this (CMU: 0.1).
        max_peaks: at most this many candidates per part, the highest; bounds the time on
            noisy maps (an untrained model's) where every cell can be a local maximum.
        smooth_sigma: Gaussian blur of the heatmaps before peak finding, in cells (0 = none).
            Predicted maps may want a little; rendered labels need none.
        upsample: cubic upsampling factor of the heatmaps before peak finding (1 = none).
            CMU upsamples to image size; with "log" refinement it gains nothing and costs
            time, so it is off.
        refine: sub-cell peak refinement: "log" (parabola through log values, exact for
            Gaussians), "quadratic" (through the values) or "none" (cell centre).
        paf_samples: points sampled along each candidate limb for the PAF line integral.
        paf_threshold: a sample supports the limb when PAF . direction exceeds this (CMU: 0.05).
        paf_fraction: a candidate limb needs more than this fraction of supporting samples
            (CMU: 0.8).
        distance_prior: a limb longer than this fraction of the map height loses
            (fraction * height / length - 1) from its score (CMU: 0.5).
        short_limb: candidate pairs closer than this many cells are accepted without PAF
            support (unless the mean field opposes them) and ranked after supported pairs;
            the label's band misses every cell centre of such a limb. 0 = off.
        share_parts: let persons that hold the root share a part candidate (step 5).
        merge_fragments: join root-less fragments whose gap / extent is below this (step 6);
            0 = off.
        min_parts: persons with fewer parts are dropped. 1 keeps everything: fragments get
            low scores, and COCO's AP is not hurt by low-scored false positives.
        min_person_score: persons with a lower score are dropped.
    """

    peak_threshold: float = 0.1
    max_peaks: int = 100
    smooth_sigma: float = 0.0
    upsample: int = 1
    refine: str = "log"
    paf_samples: int = 10
    paf_threshold: float = 0.05
    paf_fraction: float = 0.8
    distance_prior: float = 0.5
    short_limb: float = 1.0
    share_parts: bool = True
    merge_fragments: float = 0.5
    min_parts: int = 1
    min_person_score: float = 0.0

    def __post_init__(self) -> None:
        if self.refine not in ("log", "quadratic", "none"):
            raise LcposeError(
                f"decode config: refine must be 'log', 'quadratic' or 'none', got {self.refine!r}"
            )
        if self.upsample < 1 or self.paf_samples < 2 or self.min_parts < 1 or self.max_peaks < 1:
            raise LcposeError(
                "decode config: need upsample >= 1, paf_samples >= 2, min_parts >= 1, "
                f"max_peaks >= 1: {self}"
            )
        if not 0 <= self.paf_fraction < 1:
            raise LcposeError(f"decode config: paf_fraction {self.paf_fraction} not in [0, 1)")
        if self.smooth_sigma < 0 or self.short_limb < 0 or self.merge_fragments < 0:
            raise LcposeError(
                f"decode config: smooth_sigma, short_limb, merge_fragments must be >= 0: {self}"
            )

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> DecodeConfig:
        return cls(**{f.name: attrs[f.name] for f in fields(cls) if f.name in attrs})


class Person(NamedTuple):
    """One decoded person; unpacks as `keypoints, score = person`.

    Attributes:
        keypoints: (K, 3) float32 (x, y, peak value) per part, (x, y) in input pixels (or
            original pixels after `trainer.evaluate.decode_image`); missing parts (0, 0, 0).
        score: in [0, 1], mean peak value x fraction of the K parts found.
    """

    keypoints: np.ndarray
    score: float


# ------------------------------------------------------------------------------------------
# 1. peaks


def _smooth_upsample(maps: np.ndarray, sigma: float, factor: int) -> np.ndarray:
    """(C, h, w) -> (C, h * factor, w * factor) float32, blurred first (sigma in cells)."""
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0), dtype=np.float32)
    if sigma > 0:
        hwc = cv2.GaussianBlur(hwc, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    if factor > 1:
        h, w = maps.shape[1:]
        hwc = cv2.resize(hwc, (w * factor, h * factor), interpolation=cv2.INTER_CUBIC)
    return hwc.reshape(hwc.shape[0], hwc.shape[1], -1).transpose(2, 0, 1)


def find_peaks(heatmaps: np.ndarray, *, cfg: DecodeConfig, num_parts: int) -> list[np.ndarray]:
    """Part candidates of every part channel.

    Args:
        heatmaps: (K + 1, h, w) or (K, h, w) float, part k at channel k.
        cfg: threshold, smoothing, upsampling and refinement.
        num_parts: K; channels from K on (the background) are ignored.

    Returns:
        K arrays of shape (n_k, 3) float32: (x, y) in continuous cells of the input grid and
        the peak value.
    """
    maps = _smooth_upsample(heatmaps[:num_parts], cfg.smooth_sigma, cfg.upsample)
    _, h, w = maps.shape
    pad = np.pad(maps, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    centre = pad[:, 1:-1, 1:-1]
    is_peak = centre > cfg.peak_threshold
    # > against the earlier half of the neighbourhood and >= against the later half, so a
    # plateau of equal cells yields exactly one peak
    for dy, dx in ((-1, -1), (-1, 0), (-1, 1), (0, -1)):
        is_peak &= centre > pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):
        is_peak &= centre >= pad[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    part, iy, ix = np.nonzero(is_peak)
    value = maps[part, iy, ix]
    fx, fy = ix.astype(np.float32), iy.astype(np.float32)
    if cfg.refine != "none" and len(part):
        dx, dy = _refine(maps, part, iy, ix, log=cfg.refine == "log")
        fx, fy = fx + dx, fy + dy
    if cfg.upsample > 1:
        # cv2.resize aligns pixel centres: upsampled index q <-> input cell (q + 0.5) / f - 0.5
        fx = (fx + 0.5) / cfg.upsample - 0.5
        fy = (fy + 0.5) / cfg.upsample - 0.5
    cand = np.stack([fx, fy, value], axis=1).astype(np.float32)
    out = []
    for p in range(num_parts):
        mine = cand[part == p]
        if len(mine) > cfg.max_peaks:
            mine = mine[np.argsort(-mine[:, 2], kind="stable")[: cfg.max_peaks]]
        out.append(mine)
    return out


def _refine(
    maps: np.ndarray, part: np.ndarray, iy: np.ndarray, ix: np.ndarray, *, log: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-cell offsets (dx, dy), each (n,) in [-0.5, 0.5], of peaks at cells (part, iy, ix).

    Along each axis, the vertex of the parabola through the centre and its two neighbours;
    with `log`, through the log values, which is exact for a sampled Gaussian. On the map
    border one neighbour is missing: the parabola then borrows the curvature of the other
    axis (peaks are isotropic), or the offset stays 0 in a corner.
    """
    pad = np.pad(maps, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    y, x = iy + 1, ix + 1
    values = [pad[part, y, x], pad[part, y, x - 1], pad[part, y, x + 1]]
    values += [pad[part, y - 1, x], pad[part, y + 1, x]]
    if log:
        values = [np.log(np.maximum(v, 1e-30)) for v in values]  # NaN stays NaN
    c, left, right, up, down = values
    with np.errstate(divide="ignore", invalid="ignore"):
        curv_x, curv_y = left - 2 * c + right, up - 2 * c + down  # NaN on the border
        dx = _vertex(left, c, right, np.where(np.isnan(curv_x), curv_y, curv_x))
        dy = _vertex(up, c, down, np.where(np.isnan(curv_y), curv_x, curv_y))
    return dx, dy


def _vertex(
    before: np.ndarray, centre: np.ndarray, after: np.ndarray, curv: np.ndarray
) -> np.ndarray:
    """Vertex offset of the parabola with second difference `curv` through values at
    (-1, 0, 1); a NaN neighbour is replaced by the one-sided form."""
    offset = 0.5 * (before - after) / curv
    # a parabola of curvature k through the centre has v(1) - v(0) = k (1 - 2d) / 2 and
    # v(-1) - v(0) = k (1 + 2d) / 2
    offset = np.where(np.isnan(before), 0.5 - (after - centre) / curv, offset)
    offset = np.where(np.isnan(after), (before - centre) / curv - 0.5, offset)
    offset = np.where((curv < 0) & np.isfinite(offset), offset, 0.0)
    return np.clip(offset, -0.5, 0.5).astype(np.float32)


# ------------------------------------------------------------------------------------------
# 2.-3. limbs


def _bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample (C, h, w) at continuous cells x, y (same shapes; outside, the border repeats).

    `cv2.remap` does the work (about 40x faster than numpy fancy indexing); it interpolates
    at 1/32-cell steps, far finer than anything the PAF criteria can see.

    Returns:
        (C, *x.shape) float32.
    """
    hwc = np.ascontiguousarray(field.transpose(1, 2, 0), dtype=np.float32)
    shape = x.shape
    cols = shape[-1] if x.ndim and shape[-1] else 1
    mx = np.ascontiguousarray(x, np.float32).reshape(-1, cols)
    my = np.ascontiguousarray(y, np.float32).reshape(-1, cols)
    out = np.empty((mx.shape[0], cols, field.shape[0]), np.float32)
    rows = 16384  # remap's maps must stay below 32767 rows
    for i in range(0, mx.shape[0], rows):
        part = cv2.remap(
            hwc,
            mx[i : i + rows],
            my[i : i + rows],
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        out[i : i + rows] = part.reshape(-1, cols, field.shape[0])
    return np.moveaxis(out, -1, 0).reshape(field.shape[0], *shape)


def score_limb(
    paf: np.ndarray,
    cand_a: np.ndarray,
    cand_b: np.ndarray,
    *,
    cfg: DecodeConfig,
    map_height: int,
) -> tuple[np.ndarray, np.ndarray]:
    """PAF line integral of every candidate pair of one limb.

    Args:
        paf: (2, h, w) float, the limb's x and y channels.
        cand_a, cand_b: (na, 3), (nb, 3) candidates of the limb's start and end part,
            (x, y) in cells.
        cfg: samples, thresholds, distance prior, short-limb rule.
        map_height: h in cells, for the distance prior.

    Returns:
        score: (na, nb) float32, mean of PAF . unit direction over the samples plus the
            distance prior (<= 0); short unsupported pairs get a small positive score
            below any supported one.
        valid: (na, nb) bool, CMU's criteria (more than `paf_fraction` of the samples above
            `paf_threshold`, score > 0), or short and not opposed.
    """
    vec = cand_b[None, :, :2] - cand_a[:, None, :2]  # (na, nb, 2)
    length = np.linalg.norm(vec, axis=-1)  # (na, nb), cells
    unit = vec / np.maximum(length, 1e-6)[..., None]
    # midpoints of equal pieces: the label's band stops exactly at the ends
    t = (np.arange(cfg.paf_samples, dtype=np.float32) + 0.5) / cfg.paf_samples
    pts = cand_a[:, None, None, :2] + t[None, None, :, None] * vec[:, :, None, :]  # (na,nb,n,2)
    field = _bilinear(paf, pts[..., 0], pts[..., 1])  # (2, na, nb, n)
    along = field[0] * unit[..., 0, None] + field[1] * unit[..., 1, None]  # (na, nb, n)
    mean = along.mean(-1)
    prior = np.minimum(cfg.distance_prior * map_height / np.maximum(length, 1e-6) - 1, 0)
    score = mean + prior
    supported = (along > cfg.paf_threshold).mean(-1) > cfg.paf_fraction
    valid = supported & (score > 0)
    if cfg.short_limb > 0:
        short = (length < cfg.short_limb) & ~valid & (mean >= 0)
        valid |= short
        # below every supported pair (whose score is > paf_threshold * paf_fraction > 0
        # in practice), ordered by what field there is
        score = np.where(short, 1e-3 + 0.5 * np.clip(mean, 0, 1) * 1e-3, score)
    return score.astype(np.float32), valid


def match_limb(score: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Greedy one-to-one matching of one limb's candidate pairs in decreasing score.

    Args:
        score, valid: (na, nb) from `score_limb`.

    Returns:
        (m, 3) float64 rows (index in a, index in b, score), best first.
    """
    ia, ib = np.nonzero(valid)
    if len(ia) == 0:
        return np.zeros((0, 3))
    order = np.argsort(-score[ia, ib], kind="stable")
    used_a: set[int] = set()
    used_b: set[int] = set()
    rows = []
    for i in order:
        a, b = int(ia[i]), int(ib[i])
        if a in used_a or b in used_b:
            continue
        used_a.add(a)
        used_b.add(b)
        rows.append((a, b, float(score[a, b])))
    return np.asarray(rows, np.float64)


# ------------------------------------------------------------------------------------------
# 4.-6. persons


def assemble(
    connections: list[np.ndarray], peaks: list[np.ndarray], *, skeleton: Skeleton
) -> list[np.ndarray]:
    """Join limb connections into persons.

    Args:
        connections: per limb, (m, 3) rows (index in start part's candidates, index in end
            part's, score) from `match_limb`.
        peaks: per part, (n_k, 3) candidates.
        skeleton: limbs and grouping order (the tie-break among equal scores).

    Returns:
        Persons as (K,) int64 candidate indices per part (-1 = missing), every candidate in
        exactly one person (single candidates are one-part persons).
    """
    k = skeleton.num_parts
    counts = [len(p) for p in peaks]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n = int(offsets[-1])
    parent = list(range(n))
    part_of = np.repeat(np.arange(k), counts)
    members = np.full((n, k), -1, np.int64)  # valid at roots: candidate per part type
    members[np.arange(n), part_of] = np.arange(n) - offsets[part_of]

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rank = {limb: r for r, limb in enumerate(skeleton.grouping_order())}
    edges = []
    for limb, rows in enumerate(connections):
        a, b = skeleton.limbs[limb]
        for ia, ib, s in rows:
            edges.append((-s, rank[limb], int(offsets[a] + ia), int(offsets[b] + ib)))
    edges.sort()
    for _, _, u, v in edges:
        ru, rv = root(u), root(v)
        if ru == rv or np.any((members[ru] >= 0) & (members[rv] >= 0)):
            continue  # already one person, or both hold the same part type: two persons
        parent[rv] = ru
        members[ru] = np.maximum(members[ru], members[rv])
    return [members[r] for r in sorted({root(i) for i in range(n)})]


def share_parts(
    groups: list[np.ndarray],
    pair_scores: list[tuple[np.ndarray, np.ndarray] | None],
    *,
    skeleton: Skeleton,
) -> list[np.ndarray]:
    """Give a person that holds the root a part candidate already held by another person.

    The same part of two close people merges into one heatmap peak, and one-to-one matching
    then leaves one of them without it. Walking the grouping order, a person missing a part
    takes the best candidate that a valid limb (`score_limb`) connects to a part it has, if
    another person holds that candidate. Fragments without the root take nothing (they
    would claim a stranger's part; `merge_fragments` handles them).

    Args:
        groups: from `assemble`.
        pair_scores: per limb, (score, valid) of `score_limb`, or None without candidates.

    Returns:
        New groups; a candidate may now appear in several.
    """
    owner: list[dict[int, int]] = [{} for _ in range(skeleton.num_parts)]
    for g, group in enumerate(groups):
        for part in np.nonzero(group >= 0)[0]:
            owner[part][int(group[part])] = g
    out = [group.copy() for group in groups]
    for limb in skeleton.grouping_order():
        if pair_scores[limb] is None:
            continue
        score, valid = pair_scores[limb]
        a, b = skeleton.limbs[limb]
        for g, group in enumerate(out):
            if group[skeleton.root] < 0:
                continue
            for have, want, sc, ok in ((a, b, score, valid), (b, a, score.T, valid.T)):
                if group[have] < 0 or group[want] >= 0:
                    continue
                row_ok, row = ok[group[have]], sc[group[have]]
                cands = [c for c in np.nonzero(row_ok)[0] if owner[want].get(int(c), g) != g]
                if cands:
                    group[want] = max(cands, key=lambda c: row[c])
    return out


def merge_fragments(
    groups: list[np.ndarray],
    peaks: list[np.ndarray],
    *,
    skeleton: Skeleton,
    max_cost: float,
) -> list[np.ndarray]:
    """Join root-less fragments that hold no part of the same type and lie close.

    Without the root (the neck, which exists only when both shoulders are labelled) the
    skeleton's tree falls apart into head, arm and leg chains that no PAF connects. Cost of
    joining fragments A and B: the smallest distance between a part of A and a part of B
    divided by the larger extent (largest distance between two parts of one fragment, at
    least one cell). The cheapest pair is joined while its cost is below `max_cost`.

    Returns:
        Groups with fragments merged (persons holding the root unchanged).
    """
    out = [g.copy() for g in groups]
    frag = [i for i, g in enumerate(out) if g[skeleton.root] < 0]
    m = len(frag)
    if m < 2:
        return out
    members = np.stack([out[i] >= 0 for i in frag])  # (m, K) part types held
    owner = np.concatenate([np.full(int(row.sum()), f) for f, row in enumerate(members)])
    xy = np.array([peaks[k][out[i][k], :2] for i in frag for k in np.nonzero(out[i] >= 0)[0]])
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=-1)  # (points, points)
    starts = np.searchsorted(owner, np.arange(m))  # points are grouped by fragment
    gap = np.minimum.reduceat(np.minimum.reduceat(dist, starts, axis=0), starts, axis=1)
    spread = np.maximum.reduceat(np.maximum.reduceat(dist, starts, axis=0), starts, axis=1)
    extent = np.maximum(np.diag(spread), 1.0)  # (m,)
    shared = (members[:, None] & members[None]).any(-1)  # same part type (and the diagonal)
    cost = np.where(shared, np.inf, gap / np.maximum(extent[:, None], extent[None, :]))
    alive = np.ones(m, bool)
    while True:
        p, q = np.unravel_index(np.argmin(cost), cost.shape)
        if not cost[p, q] < max_cost:
            break
        out[frag[p]] = np.maximum(out[frag[p]], out[frag[q]])
        members[p] |= members[q]
        owner[owner == q] = p
        alive[q] = False
        # the joined fragment's extent and gaps to all others
        mine = owner == p
        extent[p] = max(float(dist[np.ix_(mine, mine)].max()), 1.0)
        gap_p = np.full(m, np.inf)
        np.minimum.at(gap_p, owner, dist[mine].min(axis=0))
        row = gap_p / np.maximum(extent[p], extent)
        row[(members[p][None] & members).any(-1) | ~alive] = np.inf
        cost[p, :] = cost[:, p] = row
        cost[q, :] = cost[:, q] = np.inf
    dropped = {frag[f] for f in np.nonzero(~alive)[0]}
    return [g for i, g in enumerate(out) if i not in dropped]


# ------------------------------------------------------------------------------------------


def decode(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    *,
    skeleton: Skeleton,
    stride: int,
    cfg: DecodeConfig | None = None,
) -> list[Person]:
    """Heatmaps and PAFs of one image -> persons.

    Args:
        heatmaps: (K + 1, h, w) float, part k at channel k (background last, unused).
        pafs: (2L, h, w) float, limb l at channels 2l (x) and 2l + 1 (y).
        skeleton: parts, limbs, root and grouping order.
        stride: input pixels per map cell (from the model's or store's metadata).
        cfg: thresholds and switches; default `DecodeConfig()`.

    Returns:
        Persons, best score first; keypoints (K, 3) = (x, y, peak value) in input pixels.
        `skeleton.to_coco(person.keypoints)` gives COCO-17 keypoints.

    Raises:
        LcposeError: maps whose shapes do not fit the skeleton or each other.
    """
    cfg = cfg or DecodeConfig()
    k = skeleton.num_parts
    heatmaps = np.asarray(heatmaps, np.float32)
    pafs = np.asarray(pafs, np.float32)
    if (
        heatmaps.ndim != 3
        or heatmaps.shape[0] < k
        or pafs.shape
        != (
            skeleton.num_pafs,
            *heatmaps.shape[1:],
        )
    ):
        raise LcposeError(
            f"decode: want heatmaps ({skeleton.num_heatmaps}, h, w) and pafs "
            f"({skeleton.num_pafs}, h, w), got {heatmaps.shape} and {pafs.shape}"
        )
    peaks = find_peaks(heatmaps, cfg=cfg, num_parts=k)
    connections: list[np.ndarray] = []
    pair_scores: list[tuple[np.ndarray, np.ndarray] | None] = []
    for limb, (a, b) in enumerate(skeleton.limbs):
        if len(peaks[a]) == 0 or len(peaks[b]) == 0:
            connections.append(np.zeros((0, 3)))
            pair_scores.append(None)
            continue
        paf = pafs[2 * limb : 2 * limb + 2]
        score, valid = score_limb(paf, peaks[a], peaks[b], cfg=cfg, map_height=heatmaps.shape[1])
        connections.append(match_limb(score, valid))
        pair_scores.append((score, valid))
    groups = assemble(connections, peaks, skeleton=skeleton)
    if cfg.share_parts:
        groups = share_parts(groups, pair_scores, skeleton=skeleton)
    if cfg.merge_fragments > 0:
        groups = merge_fragments(groups, peaks, skeleton=skeleton, max_cost=cfg.merge_fragments)

    persons = []
    for group in groups:
        found = np.nonzero(group >= 0)[0]
        if len(found) < cfg.min_parts:
            continue
        kps = np.zeros((k, 3), np.float32)
        for part in found:
            kps[part] = peaks[part][group[part]]
        score = float(kps[found, 2].mean() * len(found) / k)
        if score < cfg.min_person_score:
            continue
        kps[found, :2] = cells_to_pixels(kps[found, :2], stride)
        persons.append(Person(kps, score))
    persons.sort(key=lambda p: -p.score)
    return persons
