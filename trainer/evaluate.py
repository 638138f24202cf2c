"""COCO keypoint evaluation: a model's or the oracle's maps -> decoded persons -> COCOeval.

The protocol (scales, flip, decoding, how images become model inputs) is
`trainer.infer`'s and is written beside the numbers (`Protocol`). The oracle renders the
ground truth by `lcdata.labels.render` at exactly the geometry a model would see
(`oracle_maps`): the ceiling of label representation plus decoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.coco import NUM_COCO_KEYPOINTS, ImageRecord, load_coco
from lcdata.labels.decode import DecodeConfig
from lcdata.labels.render import render_heatmaps, render_pafs
from lcdata.labels.scoring import coco_results
from lcdata.labels.skeleton import Skeleton
from trainer.infer import Geometry, averaged_maps, decode_image


@dataclass(frozen=True)
class Protocol:
    """How the numbers were made; written beside them.

    Attributes:
        source: "oracle" or a description of the model (path).
        input_size: image height in pixels at scale 1.
        stride: input pixels per map cell.
        scales: multipliers on `input_size`, averaged.
        flip: whether mirrored maps were averaged in.
        decode: `DecodeConfig` as a dict.
        render: for the oracle, the `RenderConfig` of the rendered maps.
        num_images: images evaluated (COCOeval is restricted to them).
        annotations: the annotation file.
        tile_size: side of the tiles the model took (`Predictor.tile_size`), if any.
        model: what the model file says about itself (name, step, sha256, ...).
        lcpose_version: version of this package.
    """

    source: str
    input_size: int
    stride: int
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    decode: dict[str, Any] = field(default_factory=dict)
    render: dict[str, Any] | None = None
    num_images: int = 0
    annotations: str = ""
    tile_size: int | None = None
    model: dict[str, Any] | None = None
    lcpose_version: str = ""

    def to_attrs(self) -> dict[str, Any]:
        out = asdict(self)
        out["scales"] = list(self.scales)
        return out


def oracle_maps(
    keypoints: np.ndarray,
    geometry: Geometry,
    *,
    cfg: RenderConfig,
    skeleton: Skeleton,
    flip: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth maps at the resolution a model would produce for this geometry.

    Args:
        keypoints: (P, 17, 3) COCO keypoints, original-image pixels and visibility.
        geometry: from `model_geometry` with `cfg.input_size` and `cfg.stride`.
        cfg: stride, sigma (input pixels) and PAF width of the rendering.
        skeleton: COCO mapping and channel layout.
        flip: render the mirrored padded image instead (to exercise the flip path).

    Returns:
        heatmaps (K+1, Hp/stride, Wp/stride) and pafs (2L, Hp/stride, Wp/stride) float32.
    """
    parts = skeleton.from_coco(np.asarray(keypoints, np.float32).reshape(-1, NUM_COCO_KEYPOINTS, 3))
    parts[..., :2] = geometry.to_input(parts[..., :2])
    if flip:
        parts[..., 0] = geometry.padded_hw[1] - 1 - parts[..., 0]
        parts = parts[:, skeleton.flip_permutation()]
    heat = render_heatmaps(parts, cfg=cfg, skeleton=skeleton, image_hw=geometry.padded_hw)
    paf = render_pafs(parts, cfg=cfg, skeleton=skeleton, image_hw=geometry.padded_hw)
    return heat, paf


def select_records(ann_file: str | Path, max_images: int | None) -> list[ImageRecord]:
    """Images of an annotation file in file order, the first `max_images` of them."""
    if max_images is not None and max_images < 1:
        raise LcposeError(f"--max-images: want at least 1, got {max_images}")
    records = load_coco(ann_file, min_keypoints=1)
    return records if max_images is None else records[:max_images]


def run_oracle(
    records: list[ImageRecord],
    *,
    render: RenderConfig,
    skeleton: Skeleton,
    cfg: DecodeConfig,
    scales: Iterable[float] = (1.0,),
    flip: bool = False,
    progress: bool = False,
) -> list[dict]:
    """Decode rendered ground truth of every record; COCO results entries."""
    results: list[dict] = []
    for rec in tqdm(records, desc="oracle", disable=not progress):
        if len(rec.keypoints) == 0:
            continue

        def source(scale: float, geo: Geometry, mirrored: bool, rec: ImageRecord = rec):
            return oracle_maps(rec.keypoints, geo, cfg=render, skeleton=skeleton, flip=mirrored)

        heat, paf, geo = averaged_maps(
            source,
            (rec.height, rec.width),
            input_size=render.input_size,
            stride=render.stride,
            scales=scales,
            flip=flip,
            skeleton=skeleton,
        )
        persons = decode_image(heat, paf, geo, skeleton=skeleton, stride=render.stride, cfg=cfg)
        results.extend(coco_results(rec.image_id, persons, skeleton=skeleton))
    return results


def write_outputs(
    out: str | Path, results: list[dict], metrics: dict[str, float], protocol: Protocol
) -> Path:
    """Write the results JSON at `out` and `<stem>.metrics.json` (metrics + protocol) beside it.

    Returns:
        The metrics file's path.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results) + "\n", encoding="utf-8")
    metrics_path = out.with_name(out.stem + ".metrics.json")
    body = {"metrics": metrics, "protocol": protocol.to_attrs()}
    metrics_path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return metrics_path
