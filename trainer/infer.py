"""Running a model under the evaluation protocol: images -> averaged maps -> persons.

Protocol (recorded in every metrics file, see `trainer.evaluate.Protocol`):
- each image is resized so that its height is `scale * input_size` pixels (width keeps the
  aspect ratio), then padded right and bottom with grey to a multiple of the stride; maps of
  the padded image have `stride` pixels per cell;
- with `flip`, the padded image is mirrored too, its maps are mirrored back
  (`lcdata.labels.augment.flip_maps`) and averaged with the unflipped ones; mirroring the
  *padded* image maps cell centres exactly onto cell centres;
- with several scales, every scale's maps are resampled (bilinear, centre-aligned) onto the
  grid of the largest scale and averaged (CMU's test protocol), then decoded once;
- decoded keypoints are mapped back to original-image pixels (pixel centres at integers).

A model is any `infer(images) -> (heatmaps, pafs)` on (N, H, W, 3) uint8 RGB batches,
wrapped in a `Predictor` with its stride and input size (`load_predictor` makes one from a
checkpoint or an exported teacher). A predictor with a `tile_size` T (an exported teacher
takes (N, S, S, 3) crops only) sees each padded image, grown to at least T x T with grey, as
T x T tiles at stride-aligned offsets overlapping by at least half a tile (the last one flush
with the end); the tiles' maps are averaged with weights that grow with the distance from
the tile border, where a tile lacks context. At scale 1 a teacher's S-high image is one row
of tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from lcdata.errors import LcposeError
from lcdata.labels.augment import PAD_VALUE, flip_maps
from lcdata.labels.coco import ImageRecord, read_image
from lcdata.labels.decode import DecodeConfig, Person, decode
from lcdata.labels.scoring import coco_results
from lcdata.labels.skeleton import Skeleton

InferFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(N, H, W, 3) uint8 RGB -> heatmaps (N, K+1, H/stride, W/stride), pafs (N, 2L, ...)."""


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
        The padded (Hp, Wp, 3) uint8 image (grey padding, `lcdata.labels.augment.PAD_VALUE`) and its
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
                h, p = flip_maps(h, p, skeleton=skeleton)  # the mirror undoes itself
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


def load_predictor(
    path: str | Path, *, device: str = "cpu", batch_size: int = 8
) -> tuple[Predictor, dict[str, Any]]:
    """A `Predictor` and its description from an exported teacher (.pt2) or a checkpoint.

    Returns:
        (predictor, model info dict for the protocol).
    """
    import torch

    from trainer.checkpoint import model_from_checkpoint
    from trainer.models import preprocess

    path = Path(path)
    if path.suffix == ".pt2":
        from lcdata.build.teacher import load_teacher

        teacher = load_teacher(path, device=device)
        predictor = Predictor(
            teacher.predict,
            stride=teacher.stride,
            input_size=teacher.input_size,
            skeleton=teacher.skeleton,
            tile_size=teacher.input_size,
            batch_size=batch_size,
        )
        info = {
            "kind": "teacher",
            "path": str(path),
            "sha256": teacher.sha256,
            "model_name": teacher.meta.get("model_name"),
            "extra": teacher.meta.get("extra"),
        }
        return predictor, info

    model, ckpt = model_from_checkpoint(path)
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise LcposeError(f"{path}: device {device!r} asked for but CUDA is not available")
    model = model.to(device)

    def infer(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
            heatmaps, pafs = model(preprocess(x))[-1]
        return heatmaps.float().cpu().numpy(), pafs.float().cpu().numpy()

    predictor = Predictor(
        infer,
        stride=ckpt.stride,
        input_size=ckpt.input_size,
        skeleton=ckpt.skeleton,
        batch_size=batch_size,
    )
    info = {
        "kind": "checkpoint",
        "path": str(path),
        "model_name": ckpt.model_name,
        "model_kwargs": ckpt.model_kwargs,
        "step": ckpt.step,
    }
    return predictor, info
