"""The label audit: where teacher and labels disagree, the suspected errors of the annotations.

`audit_store` decodes the teacher's maps of every crop of a cache store, merges its persons
into the crop's labelled persons (`lcdata.labels.merge`, the keypoint-level correction) and
reports what the merge adds, in the source image's coordinates:

* `missed_keypoint`: parts a labelled person lacks that the teacher sees (the annotation id
  of the person they complete);
* `unannotated_person`: a person the teacher sees that no label matches (cells the store
  ignores are skipped: a masked person is annotated, only not with keypoints).

Views of one image are merged: proposals of the same annotation's keypoint, or of persons
whose keypoints lie within the merge radius, are averaged; a suspect's score is the mean
teacher peak over the views of the image (a point one view of two sees scores half).
`evaluate_suspects` scores a list against the synthetic benchmark's known failures.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from lcdata.errors import LcposeError
from lcdata.io import read_json
from lcdata.labels.coco import NUM_COCO_KEYPOINTS
from lcdata.labels.decode import DecodeConfig, decode
from lcdata.labels.grid import nearest_cell
from lcdata.labels.merge import MergeConfig, merge_persons
from lcdata.labels.skeleton import Skeleton
from lcdata.store.layout import StoreInfo, open_store

KINDS = ("unannotated_person", "missed_keypoint")
OKS_SIGMAS = np.array(
    [.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]
) / 10.0  # fmt: skip
"""COCO's per-keypoint OKS constants (kappa), nose to right ankle."""


def _to_image(parts: np.ndarray, affine: np.ndarray, flipped: bool, skeleton: Skeleton):
    """(P, K, 3) crop parts -> (P, 17, 3) COCO keypoints in image pixels (names unswapped)."""
    a = np.vstack([np.asarray(affine, np.float64), [0, 0, 1]])
    inv = np.linalg.inv(a)[:2]
    out = np.array(parts, np.float32)
    out[..., :2] = parts[..., :2] @ inv[:, :2].T + inv[:, 2]
    if flipped:
        out = out[:, skeleton.flip_permutation()]
    return skeleton.to_coco(out)


def _annotation_of(row: np.ndarray, anns: list[dict[str, Any]]) -> int | None:
    """The annotation whose labelled keypoints are those of `row` ((17, 3), image pixels)."""
    best, best_d = None, np.inf
    on = row[:, 2] > 0
    for ann in anns:
        kps = np.asarray(ann.get("keypoints", []), np.float32).reshape(-1, 3)
        if len(kps) != NUM_COCO_KEYPOINTS:
            continue
        both = on & (kps[:, 2] > 0)
        if not both.any():
            continue
        d = float(np.linalg.norm(kps[both, :2] - row[both, :2], axis=1).mean())
        if d < best_d:
            best, best_d = int(ann["id"]), d
    return best if best_d < 1.0 else None


def audit_store(
    store: str | Path,
    *,
    merge: MergeConfig | None = None,
    decode_cfg: DecodeConfig | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Suspected label errors of the annotations a cache store was built from (module doc).

    Args:
        store: a complete cache store with teacher maps and `meta/keypoints` (schema 2).
        merge, decode_cfg: the merge thresholds and the decoder (defaults).

    Returns:
        Suspects, highest score first: {"image_id", "kind", "keypoints" (51 numbers, COCO
        order, image pixels, v = 2 at the proposed points, 0 elsewhere), "score",
        "annotation_id" (the completed person; None for an unannotated one)}.
    """
    merge, decode_cfg = merge or MergeConfig(), decode_cfg or DecodeConfig()
    group = open_store(store, require_complete=True)
    for name in ("teacher/heatmaps", "meta/keypoints"):
        if name not in group:
            what = "run build-teacher-cache --teacher" if "teacher" in name else "rebuild it"
            raise LcposeError(f"{store}: {name} missing; the audit needs it ({what})")
    info = StoreInfo.read(store)
    skeleton, render = info.skeleton, info.render
    anns: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in read_json(info.attrs["source"]["annotations"])["annotations"]:
        anns[int(ann["image_id"])].append(ann)
    views: dict[int, int] = defaultdict(int)
    points: dict[tuple[int, int, int], list[tuple[float, float, float]]] = defaultdict(list)
    persons: dict[int, list[tuple[np.ndarray, float]]] = defaultdict(list)
    n, per = info.num_samples, info.samples_per_block
    mask_all, h = group["masks"], render.grid_size
    for start in tqdm(range(0, n, per), desc="audit", unit="block", disable=not progress):
        stop = min(start + per, n)
        th = np.asarray(group["teacher/heatmaps"][start:stop], np.float32)
        tp = np.asarray(group["teacher/pafs"][start:stop], np.float32)
        kps = np.asarray(group["meta/keypoints"][start:stop])
        masks = np.asarray(mask_all[start:stop])
        ids = np.asarray(group["meta/image_id"][start:stop])
        affines = np.asarray(group["meta/affine"][start:stop], np.float64)
        flips = np.asarray(group["meta/flipped"][start:stop])
        for j in range(stop - start):
            image_id = int(ids[j])
            views[image_id] += 1
            found = decode(th[j], tp[j], skeleton=skeleton, stride=render.stride, cfg=decode_cfg)
            m = merge_persons(kps[j], found, cfg=merge, sigma=render.sigma)
            if not (m.added > 0).any():
                continue
            flipped = bool(flips[j])
            image_kps = _to_image(m.keypoints, affines[j], flipped, skeleton)
            added = m.added[:, skeleton.flip_permutation()] if flipped else m.added
            added17 = skeleton.to_coco(np.stack([added] * 3, axis=-1))[..., 0]
            for row in range(m.num_labelled):
                if not (added17[row] > 0).any():
                    continue
                labelled = image_kps[row].copy()
                labelled[added17[row] > 0, 2] = 0
                ann_id = _annotation_of(labelled, anns[image_id])
                if ann_id is None:
                    continue
                for k in np.nonzero(added17[row] > 0)[0]:
                    x, y = image_kps[row, k, :2]
                    points[(image_id, ann_id, int(k))].append((x, y, float(added17[row, k])))
            cells = np.clip(nearest_cell(m.keypoints[..., :2], render.stride), 0, h - 1)
            for row in range(m.num_labelled, len(m.keypoints)):
                on = m.keypoints[row, :, 2] > 0
                cy, cx = cells[row, on, 1], cells[row, on, 0]
                if masks[j][cy, cx].mean() < 0.5:  # mostly in ignored cells: annotated as such
                    continue
                person = image_kps[row].copy()
                person[:, 2] = np.where(added17[row] > 0, added17[row], 0)
                persons[image_id].append((person, float(m.added[row][m.added[row] > 0].mean())))
    return _merge_views(points, persons, views, radius=merge.radius * render.sigma)


def _merge_views(points, persons, views, *, radius: float) -> list[dict[str, Any]]:
    """One suspect per annotation (its proposed points averaged over views) and per cluster
    of unannotated-person proposals of one image."""
    suspects: list[dict[str, Any]] = []
    by_ann: dict[tuple[int, int], dict[int, list]] = defaultdict(dict)
    for (image_id, ann_id, k), seen in points.items():
        by_ann[(image_id, ann_id)][k] = seen
    for (image_id, ann_id), kps in by_ann.items():
        out = np.zeros((NUM_COCO_KEYPOINTS, 3), np.float32)
        scores = []
        for k, seen in kps.items():
            arr = np.asarray(seen, np.float64)
            out[k] = (arr[:, 0].mean(), arr[:, 1].mean(), 2)
            scores.append(arr[:, 2].sum() / views[image_id])
        suspects.append(_record(image_id, "missed_keypoint", out, float(np.mean(scores)), ann_id))
    for image_id, found in persons.items():
        clusters: list[list[tuple[np.ndarray, float]]] = []
        for person, score in sorted(found, key=lambda p: -p[1]):
            for cluster in clusters:
                ref = cluster[0][0]
                both = (ref[:, 2] > 0) & (person[:, 2] > 0)
                if (
                    both.any()
                    and np.linalg.norm(ref[both, :2] - person[both, :2], axis=1).mean() < radius
                ):
                    cluster.append((person, score))
                    break
            else:
                clusters.append([(person, score)])
        for cluster in clusters:
            stack = np.stack([p for p, _ in cluster])
            out = np.zeros((NUM_COCO_KEYPOINTS, 3), np.float32)
            seen = stack[..., 2] > 0
            count = seen.sum(axis=0)
            for k in np.nonzero(count)[0]:
                out[k] = (*stack[seen[:, k], k, :2].mean(axis=0), 2)
            score = sum(s for _, s in cluster) / views[image_id]
            suspects.append(_record(image_id, "unannotated_person", out, score, None))
    suspects.sort(key=lambda s: -s["score"])
    return suspects


def _record(image_id: int, kind: str, kps: np.ndarray, score: float, ann_id: int | None):
    return {
        "image_id": int(image_id),
        "kind": kind,
        "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
        "score": round(float(score), 4),
        "annotation_id": ann_id,
    }


def _oks(pred: np.ndarray, truth: np.ndarray, area: float) -> np.ndarray:
    """Per-keypoint OKS of (17, 3) proposals against (17, 3) truth (COCO's formula)."""
    d2 = ((pred[:, :2] - truth[:, :2]) ** 2).sum(axis=1)
    return np.exp(-d2 / (2 * max(area, 1.0) * (2 * OKS_SIGMAS) ** 2))


def evaluate_suspects(
    suspects: list[dict[str, Any]], clean: str | Path, noisy: str | Path
) -> dict[str, dict[str, float]]:
    """Precision, recall and AP of finding the synthetic benchmark's failures 2-4.

    A `missed_keypoint` point is right when the clean truth lacks it in the noisy file for
    failure 2 or 3 (severely occluded, missed visible) and its keypoint OKS is >= 0.5; an
    `unannotated_person` is right when it matches an unannotated clean person (failure 4)
    with OKS >= 0.5 over its proposed points, each person at most once. Recall counts every
    such failure of the images the suspects could come from (all images of the files).
    Points outside the image (failure 1) cannot be seen in it and are not asked for.
    """
    from lcdata.synth.truth import read_pairs

    pairs = read_pairs(clean, noisy)
    areas = {int(a["id"]): float(a.get("area", 0.0)) for a in read_json(clean)["annotations"]}
    want_points = sum(int(np.isin(p.causes(a), (2, 3)).sum()) for p in pairs.values()
                      for a in p.clean_all)  # fmt: skip
    want_persons = sum(1 for p in pairs.values() for a in p.clean_all if a not in p.noisy)
    out: dict[str, dict[str, float]] = {}
    hits: dict[str, list[tuple[float, bool]]] = {k: [] for k in KINDS}
    used: set[int] = set()
    for s in suspects:
        item = pairs.get(s["image_id"])
        kps = np.asarray(s["keypoints"], np.float32).reshape(NUM_COCO_KEYPOINTS, 3)
        proposed = kps[:, 2] > 0
        if s["kind"] == "missed_keypoint":
            ann = s["annotation_id"]
            ok = np.zeros(NUM_COCO_KEYPOINTS, bool)
            if item is not None and ann in item.clean_all:
                oks = _oks(kps, item.clean_all[ann], areas.get(ann, 0.0))
                ok = np.isin(item.causes(ann), (2, 3)) & (oks >= 0.5)
            hits["missed_keypoint"] += [(s["score"], bool(ok[k])) for k in np.nonzero(proposed)[0]]
            continue
        best, best_oks = None, 0.5
        for ann, truth in item.clean_all.items() if item else []:
            if ann in item.noisy or ann in used:
                continue
            oks = float(_oks(kps, truth, areas.get(ann, 0.0))[proposed].mean())
            if oks >= best_oks:
                best, best_oks = ann, oks
        if best is not None:
            used.add(best)
        hits["unannotated_person"].append((s["score"], best is not None))
    for kind, want in (("missed_keypoint", want_points), ("unannotated_person", want_persons)):
        ranked = sorted(hits[kind], key=lambda h: -h[0])
        tp = np.cumsum([h[1] for h in ranked]) if ranked else np.zeros(0)
        precision = tp / np.arange(1, len(ranked) + 1) if ranked else np.zeros(0)
        recall = tp / max(want, 1)
        # all-point interpolated AP (the area under the monotone precision envelope)
        envelope = np.maximum.accumulate(precision[::-1])[::-1] if ranked else precision
        ap = float(np.sum(np.diff(np.concatenate([[0], recall])) * envelope)) if ranked else 0.0
        out[kind] = {
            "suspects": len(ranked),
            "failures": want,
            "precision": float(precision[-1]) if ranked else 0.0,
            "recall": float(recall[-1]) if ranked else 0.0,
            "ap": ap,
        }
    return out


def contact_sheet(
    suspects: list[dict[str, Any]],
    store: str | Path,
    out: str | Path,
    *,
    top: int = 24,
    tile: int = 160,
    columns: int = 6,
) -> Path:
    """A PNG of the `top` suspects: the image around each, labelled keypoints of the image in
    green, the proposed points in red, kind and score written under it."""
    info = StoreInfo.read(store)
    source = info.attrs["source"]
    data = read_json(source["annotations"])
    files = {int(im["id"]): im["file_name"] for im in data["images"]}
    labelled: dict[int, list[np.ndarray]] = defaultdict(list)
    for ann in data["annotations"]:
        if "keypoints" in ann:
            labelled[int(ann["image_id"])].append(np.asarray(ann["keypoints"]).reshape(-1, 3))
    chosen = suspects[:top]
    rows = max(1, -(-len(chosen) // columns))
    sheet = np.full((rows * (tile + 18), columns * tile, 3), 255, np.uint8)
    for i, s in enumerate(chosen):
        image = cv2.imread(str(Path(source["image_dir"]) / files[s["image_id"]]))
        if image is None:
            raise LcposeError(f"{source['image_dir']}/{files[s['image_id']]}: cannot read image")
        kps = np.asarray(s["keypoints"]).reshape(-1, 3)
        on = kps[kps[:, 2] > 0, :2]
        centre = on.mean(axis=0)
        half = max(24.0, float(np.ptp(on, axis=0).max()) * 0.8 + 16)
        x0, y0 = centre - half
        scale = tile / (2 * half)
        affine = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
        view = cv2.warpAffine(image, affine, (tile, tile), borderValue=(128, 128, 128))
        for person in labelled[s["image_id"]]:
            for x, y, v in person:
                if v > 0:
                    cv2.circle(view, (int((x - x0) * scale), int((y - y0) * scale)), 2,
                               (0, 200, 0), -1)  # fmt: skip
        for x, y in on:
            cv2.circle(view, (int((x - x0) * scale), int((y - y0) * scale)), 3, (0, 0, 255), -1)
        r, c = divmod(i, columns)
        sheet[r * (tile + 18) : r * (tile + 18) + tile, c * tile : (c + 1) * tile] = view
        label = f"{'person' if s['kind'] == 'unannotated_person' else 'keypt'} {s['score']:.2f}"
        cv2.putText(sheet, label, (c * tile + 4, r * (tile + 18) + tile + 13),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet):
        raise LcposeError(f"{out}: cannot write the contact sheet")
    return out
