"""COCO keypoint evaluation: model or oracle maps -> decoded persons -> COCOeval's 10 numbers.

Protocol (recorded in every metrics file, see `Protocol`):
- each image is resized so that its height is `scale * input_size` pixels (width keeps the
  aspect ratio), then padded right and bottom with grey to a multiple of the stride; maps of
  the padded image have `stride` pixels per cell;
- with `flip`, the padded image is mirrored too, its maps are mirrored back (heatmap channels
  through `skeleton.heatmap_flip_permutation()`, PAF channels and x signs through
  `skeleton.paf_flip()`) and averaged with the unflipped ones; mirroring the *padded* image
  maps cell centres exactly onto cell centres;
- with several scales, every scale's maps are resampled (bilinear, centre-aligned) onto the
  grid of the largest scale and averaged (CMU's test protocol), then decoded once;
- decoded keypoints are mapped back to original-image pixels (pixel centres at integers).

Map sources:
- a model: any `infer(images) -> (heatmaps, pafs)` on (N, H, W, 3) uint8 RGB batches, wrapped
  in a `Predictor` with its stride and input size. A predictor with a `tile_size` T (an
  exported teacher takes (N, S, S, 3) crops only) sees each padded image, grown to at least
  T x T with grey, as T x T tiles at stride-aligned offsets overlapping by at least half a
  tile (the last one flush with the end); the tiles' maps are averaged with weights that
  grow with the distance from the tile border, where a tile lacks context. At scale 1 a
  teacher's S-high image is one row of tiles;
- the oracle: the ground truth rendered by `lcdata.render` at exactly the geometry a model
  would see (`oracle_maps`); the ceiling of label representation plus decoder.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from lcdata.augment import PAD_VALUE
from lcdata.coco import NUM_COCO_KEYPOINTS, ImageRecord, load_coco, read_image
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.render import render_heatmaps, render_pafs
from lcdata.skeleton import Skeleton
from trainer.decode import DecodeConfig, Person, decode

METRIC_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl",
)  # fmt: skip
"""COCOeval keypoint summary, in `COCOeval.stats` order."""

InferFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(N, H, W, 3) uint8 RGB -> heatmaps (N, K+1, H/stride, W/stride), pafs (N, 2L, ...)."""


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


@dataclass(frozen=True)
class Predictor:
    """A model as the evaluation sees it.

    Attributes:
        infer: (N, H, W, 3) uint8 RGB -> (heatmaps (N, K+1, H/stride, W/stride), pafs
            (N, 2L, H/stride, W/stride)) float. H and W are multiples of the stride.
        stride: input pixels per output cell.
        input_size: image height at scale 1 (CMU: the training crop size).
        skeleton: channel layout of the maps.
        tile_size: if set, `infer` takes (N, T, T, 3) tiles of this side only (an exported
            teacher); every image is then covered with overlapping tiles.
        batch_size: tiles per `infer` call.
    """

    infer: InferFn
    stride: int
    input_size: int
    skeleton: Skeleton
    tile_size: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.input_size % self.stride or (self.tile_size or 0) % self.stride:
            raise LcposeError(
                f"model: input size {self.input_size} and tile size {self.tile_size} must be "
                f"multiples of the stride {self.stride}"
            )


@dataclass(frozen=True)
class Geometry:
    """Where the model input of one image at one scale comes from.

    Attributes:
        scale_xy: (sx, sy) resized pixels per original pixel (the two differ by rounding).
        resized_hw: (H', W') of the resized image before padding.
        padded_hw: (Hp, Wp), multiples of the stride, >= resized_hw.
    """

    scale_xy: tuple[float, float]
    resized_hw: tuple[int, int]
    padded_hw: tuple[int, int]

    def to_input(self, points_xy: np.ndarray) -> np.ndarray:
        """(..., 2) original pixels -> input pixels (centre-aligned, as `cv2.resize`)."""
        s = np.asarray(self.scale_xy, np.float32)
        return (np.asarray(points_xy, np.float32) + 0.5) * s - 0.5

    def to_original(self, points_xy: np.ndarray) -> np.ndarray:
        """(..., 2) input pixels -> original pixels."""
        s = np.asarray(self.scale_xy, np.float32)
        return (np.asarray(points_xy, np.float32) + 0.5) / s - 0.5


def model_geometry(
    image_hw: tuple[int, int], input_size: int, stride: int, *, scale: float = 1.0
) -> Geometry:
    """Geometry of an image resized to height `scale * input_size`, padded to the stride."""
    h, w = image_hw
    new_h = max(int(round(input_size * scale)), 1)
    new_w = max(int(round(w * new_h / h)), 1)
    pad_h = -(-new_h // stride) * stride
    pad_w = -(-new_w // stride) * stride
    return Geometry((new_w / w, new_h / h), (new_h, new_w), (pad_h, pad_w))


def resize_for_model(
    image: np.ndarray, input_size: int, stride: int, *, scale: float = 1.0
) -> tuple[np.ndarray, Geometry]:
    """Resize an image so its height is `scale * input_size`, pad right/bottom to the stride.

    Args:
        image: (H, W, 3) uint8.

    Returns:
        The padded (Hp, Wp, 3) uint8 image (grey padding, `lcdata.augment.PAD_VALUE`) and its
        `Geometry` (the scale is `geometry.scale_xy`).
    """
    geo = model_geometry(image.shape[:2], input_size, stride, scale=scale)
    (rh, rw), (ph, pw) = geo.resized_hw, geo.padded_hw
    interp = cv2.INTER_AREA if rh < image.shape[0] else cv2.INTER_CUBIC
    resized = cv2.resize(image, (rw, rh), interpolation=interp)
    padded = np.empty((ph, pw, 3), np.uint8)
    padded[...] = np.asarray(PAD_VALUE, np.uint8)
    padded[:rh, :rw] = resized
    return padded, geo


def unflip_maps(
    heatmaps: np.ndarray, pafs: np.ndarray, *, skeleton: Skeleton
) -> tuple[np.ndarray, np.ndarray]:
    """Maps of a mirrored (padded) image -> maps of the image itself; (C, h, w) each.

    The mirror is an involution, so the same permutation and x sign undo it.
    """
    heat = heatmaps[skeleton.heatmap_flip_permutation(), :, ::-1]
    perm, sign = skeleton.paf_flip()
    paf = pafs[perm, :, ::-1] * sign[:, None, None]
    return np.ascontiguousarray(heat), np.ascontiguousarray(paf)


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


def _tile_offsets(length: int, tile: int, stride: int) -> list[int]:
    """Stride-aligned starts of tiles covering [0, length), neighbours overlapping by at least
    half a tile (length >= tile, both multiples of the stride)."""
    if length <= tile:
        return [0]
    count = -(-(length - tile) // (tile // 2)) + 1
    starts = np.linspace(0, length - tile, count)
    return sorted({int(round(s / stride)) * stride for s in starts} | {length - tile})


def _run_infer(predictor: Predictor, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`predictor.infer` with its outputs checked: (N, K+1, h, w) and (N, 2L, h, w) float32."""
    heat, paf = predictor.infer(batch)
    heat, paf = np.asarray(heat, np.float32), np.asarray(paf, np.float32)
    sk, stride = predictor.skeleton, predictor.stride
    hw = (batch.shape[1] // stride, batch.shape[2] // stride)
    want_heat, want_paf = (len(batch), sk.num_heatmaps, *hw), (len(batch), sk.num_pafs, *hw)
    if heat.shape != want_heat or paf.shape != want_paf:
        raise LcposeError(
            f"model: input {batch.shape} with stride {stride} gave heatmaps {heat.shape} and "
            f"pafs {paf.shape}, expected {want_heat} and {want_paf}"
        )
    return heat, paf


def predict_maps(predictor: Predictor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a predictor on one padded image.

    Args:
        image: (Hp, Wp, 3) uint8 RGB, Hp and Wp multiples of the stride.

    Returns:
        heatmaps (K+1, Hp/stride, Wp/stride) and pafs (2L, Hp/stride, Wp/stride) float32.
        With `tile_size`, blended from overlapping tiles (see the module doc).
    """
    stride, s = predictor.stride, predictor.tile_size
    if s is None:
        heat, paf = _run_infer(predictor, image[None])
        return heat[0], paf[0]
    # grow the canvas to at least S x S, then cover it with overlapping S x S tiles
    ph, pw = max(image.shape[0], s), max(image.shape[1], s)
    canvas = np.empty((ph, pw, 3), np.uint8)
    canvas[...] = np.asarray(PAD_VALUE, np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    boxes = [(y, x) for y in _tile_offsets(ph, s, stride) for x in _tile_offsets(pw, s, stride)]
    g = s // stride
    ramp = np.minimum(np.arange(g) + 1, np.arange(g)[::-1] + 1).astype(np.float32)
    # weight grows with the distance from the tile border, where a tile's maps lack context
    weight = np.minimum(ramp[:, None], ramp[None, :])
    sk = predictor.skeleton
    heat = np.zeros((sk.num_heatmaps, ph // stride, pw // stride), np.float32)
    paf = np.zeros((sk.num_pafs, ph // stride, pw // stride), np.float32)
    total = np.zeros((ph // stride, pw // stride), np.float32)
    for i in range(0, len(boxes), predictor.batch_size):
        chunk = boxes[i : i + predictor.batch_size]
        hb, pb = _run_infer(predictor, np.stack([canvas[y : y + s, x : x + s] for y, x in chunk]))
        for (y, x), hm, pm in zip(chunk, hb, pb, strict=True):
            cy, cx = y // stride, x // stride
            heat[:, cy : cy + g, cx : cx + g] += hm * weight
            paf[:, cy : cy + g, cx : cx + g] += pm * weight
            total[cy : cy + g, cx : cx + g] += weight
    heat /= total
    paf /= total
    h, w = image.shape[0] // stride, image.shape[1] // stride
    return heat[:, :h, :w], paf[:, :h, :w]


def _interp_1d(maps: np.ndarray, axis: int, n_out: int, ratio: float) -> np.ndarray:
    """Linear interpolation along one axis: output cell c reads input cell
    (c + 0.5) * ratio - 0.5, clamped to the input (the border repeats)."""
    n_in = maps.shape[axis]
    pos = np.clip((np.arange(n_out) + 0.5) * ratio - 0.5, 0, n_in - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), max(n_in - 2, 0))
    hi = np.minimum(lo + 1, n_in - 1)
    shape = [1] * maps.ndim
    shape[axis] = n_out
    frac = (pos - lo).astype(np.float32).reshape(shape)
    return np.take(maps, lo, axis=axis) * (1 - frac) + np.take(maps, hi, axis=axis) * frac


def resample_maps(
    maps: np.ndarray, *, ratio_xy: tuple[float, float], out_hw: tuple[int, int]
) -> np.ndarray:
    """Bilinear, centre-aligned resampling of (C, h, w) maps onto another scale's grid.

    A target cell c reads source cell (c + 0.5) * ratio - 0.5 along each axis, where ratio =
    source scale / target scale: cell centres of both grids then stand for the same
    original-image points. Outside the source the border repeats. Separable and exact (no
    fixed-point coordinates as in `cv2.warpAffine`).
    """
    out = _interp_1d(np.asarray(maps, np.float32), 1, out_hw[0], ratio_xy[1])
    return _interp_1d(out, 2, out_hw[1], ratio_xy[0]).astype(np.float32)


MapSource = Callable[[float, Geometry, bool], tuple[np.ndarray, np.ndarray]]
"""(scale, its geometry, mirrored) -> (heatmaps, pafs) of one image at that geometry; mirrored
maps are those of the mirrored padded image (`averaged_maps` unflips them)."""


def averaged_maps(
    source: MapSource,
    image_hw: tuple[int, int],
    *,
    input_size: int,
    stride: int,
    scales: Iterable[float] = (1.0,),
    flip: bool = False,
    skeleton: Skeleton,
) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Average of a map source over scales and flips, on the grid of the largest scale.

    Returns:
        heatmaps (K+1, h, w), pafs (2L, h, w) and the geometry of that grid.
    """
    scales = sorted(set(float(s) for s in scales))
    if not scales or scales[0] <= 0:
        raise LcposeError(f"--scales: want positive scale factors, got {scales}")
    target = model_geometry(image_hw, input_size, stride, scale=scales[-1])
    out_hw = (target.padded_hw[0] // stride, target.padded_hw[1] // stride)
    heat = np.zeros((skeleton.num_heatmaps, *out_hw), np.float32)
    paf = np.zeros((skeleton.num_pafs, *out_hw), np.float32)
    count = 0
    for scale in scales:
        geo = model_geometry(image_hw, input_size, stride, scale=scale)
        for mirrored in (False, True) if flip else (False,):
            h, p = source(scale, geo, mirrored)
            if mirrored:
                h, p = unflip_maps(h, p, skeleton=skeleton)
            if geo != target:
                ratio = (geo.scale_xy[0] / target.scale_xy[0], geo.scale_xy[1] / target.scale_xy[1])
                h = resample_maps(h, ratio_xy=ratio, out_hw=out_hw)
                p = resample_maps(p, ratio_xy=ratio, out_hw=out_hw)
            heat += h
            paf += p
            count += 1
    return heat / count, paf / count, target


def decode_image(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    geometry: Geometry,
    *,
    skeleton: Skeleton,
    stride: int,
    cfg: DecodeConfig,
) -> list[Person]:
    """Decode maps of one image at `geometry`; keypoints in original-image pixels."""
    persons = decode(heatmaps, pafs, skeleton=skeleton, stride=stride, cfg=cfg)
    for person in persons:
        found = person.keypoints[:, 2] > 0
        person.keypoints[found, :2] = geometry.to_original(person.keypoints[found, :2])
    return persons


def coco_results(image_id: int, persons: list[Person], *, skeleton: Skeleton) -> list[dict]:
    """COCO keypoint results entries of one image (neck dropped, missing parts at (0, 0, 0))."""
    out = []
    for person in persons:
        kps = skeleton.to_coco(person.keypoints)
        out.append(
            {
                "image_id": int(image_id),
                "category_id": 1,
                "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
                "score": round(float(person.score), 6),
            }
        )
    return out


def evaluate_results(
    ann_file: str | Path, results: list[dict], *, image_ids: Iterable[int] | None = None
) -> dict[str, float]:
    """COCOeval (keypoints) of results against an annotation file.

    Args:
        ann_file: COCO person-keypoints JSON.
        results: COCO results entries (`image_id`, `category_id`, `keypoints`, `score`).
        image_ids: restrict to these images (default: all images of the file).

    Returns:
        The 10 standard numbers, keys `METRIC_NAMES`; all 0 when there is no result.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    # pycocotools reports progress with print(); the library stays quiet
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        if not results:
            return dict.fromkeys(METRIC_NAMES, 0.0)
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats, strict=True)}


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


def run_model(
    predictor: Predictor,
    records: list[ImageRecord],
    image_dir: str | Path,
    *,
    cfg: DecodeConfig,
    scales: Iterable[float] = (1.0,),
    flip: bool = False,
    progress: bool = False,
) -> list[dict]:
    """Run a predictor on every record's image (with or without persons) and decode.

    Returns:
        COCO results entries of all images.
    """
    results: list[dict] = []
    for rec in tqdm(records, desc="evaluate", disable=not progress):
        image = read_image(image_dir, rec)
        persons, *_ = predict_image(predictor, image, cfg=cfg, scales=scales, flip=flip)
        results.extend(coco_results(rec.image_id, persons, skeleton=predictor.skeleton))
    return results


def predict_image(
    predictor: Predictor,
    image: np.ndarray,
    *,
    cfg: DecodeConfig,
    scales: Iterable[float] = (1.0,),
    flip: bool = False,
) -> tuple[list[Person], np.ndarray, np.ndarray, Geometry]:
    """Persons of one image under the evaluation protocol.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        persons (keypoints in the image's pixels), the averaged heatmaps (K+1, h, w) and
        pafs (2L, h, w), and the geometry of their grid.
    """

    def source(scale: float, geo: Geometry, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
        padded, g = resize_for_model(image, predictor.input_size, predictor.stride, scale=scale)
        assert g == geo, "resize_for_model and model_geometry disagree"
        if mirrored:
            padded = np.ascontiguousarray(padded[:, ::-1])
        return predict_maps(predictor, padded)

    heat, paf, geo = averaged_maps(
        source,
        image.shape[:2],
        input_size=predictor.input_size,
        stride=predictor.stride,
        scales=scales,
        flip=flip,
        skeleton=predictor.skeleton,
    )
    persons = decode_image(
        heat, paf, geo, skeleton=predictor.skeleton, stride=predictor.stride, cfg=cfg
    )
    return persons, heat, paf, geo


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


# ------------------------------------------------------------------------------------------
# Looking at it: pictures of decoded persons and of the maps, on the original image.


def maps_to_image(
    maps: np.ndarray, geometry: Geometry, *, stride: int, image_hw: tuple[int, int]
) -> np.ndarray:
    """(C, h, w) maps of `geometry`'s grid -> (C, H, W) on the original image (bilinear).

    Original pixel x reads cell ((x + 0.5) * sx - 0.5 - (stride - 1) / 2) / stride.
    """
    sx, sy = geometry.scale_xy
    off = -0.5 - (stride - 1) / 2
    m = np.array(
        [[sx / stride, 0, (0.5 * sx + off) / stride], [0, sy / stride, (0.5 * sy + off) / stride]],
        np.float64,
    )
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0), dtype=np.float32)
    out = cv2.warpAffine(
        hwc,
        m,
        (image_hw[1], image_hw[0]),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(image_hw[0], image_hw[1], -1).transpose(2, 0, 1)


def _limb_colours(num_limbs: int) -> np.ndarray:
    """(L, 3) uint8 RGB, hues spread around the circle."""
    hsv = np.stack(
        [
            np.arange(num_limbs) * 180 // max(num_limbs, 1),
            np.full(num_limbs, 255),
            np.full(num_limbs, 255),
        ],
        axis=1,
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_persons(image: np.ndarray, persons: list[Person], *, skeleton: Skeleton) -> np.ndarray:
    """The image with every person's limbs (one colour per limb) and parts drawn on it.

    Args:
        image: (H, W, 3) uint8 RGB.
        persons: keypoints in the image's pixels.

    Returns:
        A new (H, W, 3) uint8 RGB image.
    """
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 300))
    colours = _limb_colours(skeleton.num_limbs)
    for person in persons:
        kps = person.keypoints
        for limb, (a, b) in enumerate(skeleton.limbs):
            if kps[a, 2] > 0 and kps[b, 2] > 0:
                pa = tuple(int(round(v)) for v in kps[a, :2])
                pb = tuple(int(round(v)) for v in kps[b, :2])
                colour = tuple(int(c) for c in colours[limb])
                cv2.line(out, pa, pb, colour, thick, cv2.LINE_AA)
        for x, y, v in kps:
            if v > 0:
                centre = (int(round(x)), int(round(y)))
                cv2.circle(out, centre, thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def heatmap_overlay(
    image: np.ndarray, heatmaps: np.ndarray, geometry: Geometry, *, stride: int, num_parts: int
) -> np.ndarray:
    """The image blended with the max over part heatmaps (JET colours), (H, W, 3) uint8 RGB."""
    peak = heatmaps[:num_parts].max(axis=0, keepdims=True)
    peak = maps_to_image(peak, geometry, stride=stride, image_hw=image.shape[:2])[0]
    colour = cv2.applyColorMap(np.uint8(np.clip(peak, 0, 1) * 255), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    alpha = np.clip(peak, 0, 1)[..., None] * 0.7
    return np.uint8(image * (1 - alpha) + colour * alpha)


def paf_overlay(
    image: np.ndarray, pafs: np.ndarray, geometry: Geometry, *, stride: int
) -> np.ndarray:
    """The image blended with the strongest PAF vector per pixel as colour: hue = direction,
    brightness = length (capped at 1). (H, W, 3) uint8 RGB."""
    vec = maps_to_image(pafs, geometry, stride=stride, image_hw=image.shape[:2])
    vec = vec.reshape(-1, 2, *image.shape[:2])  # (L, 2, H, W)
    length = np.linalg.norm(vec, axis=1)  # (L, H, W)
    best = length.argmax(axis=0)
    vx = np.take_along_axis(vec[:, 0], best[None], 0)[0]
    vy = np.take_along_axis(vec[:, 1], best[None], 0)[0]
    mag = np.clip(np.take_along_axis(length, best[None], 0)[0], 0, 1)
    hue = (np.degrees(np.arctan2(vy, vx)) % 360) / 2
    hsv = np.stack([hue, np.full_like(hue, 255), mag * 255], axis=-1).astype(np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    alpha = mag[..., None] * 0.8
    return np.uint8(image * (1 - alpha) + colour * alpha)
