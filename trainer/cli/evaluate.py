"""`trainer evaluate` (COCO keypoint AP) and `trainer predict` (pictures).

`evaluate` scores a model or the oracle; `predict` draws decoded skeletons and map overlays.
"""

from __future__ import annotations

import dataclasses
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from lcdata.cli import key_values
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError
from lcdata.labels.decode import DecodeConfig
from lcdata.labels.scoring import METRIC_NAMES, evaluate_results
from lcdata.labels.skeleton import CMU_SKELETON

_RENDER = RenderConfig()

_DECODE_HELP = (
    "Decoder option KEY=VALUE (repeatable), a field of lcdata.labels.decode.DecodeConfig, "
    "e.g. --decode min_parts=3 --decode share_parts=false."
)


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.5,1.0,1.5' -> (0.5, 1.0, 1.5); positive numbers only."""
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise LcposeError(f"--scales: want comma-separated numbers, got {text!r}") from None
    if not scales or min(scales) <= 0:
        raise LcposeError(f"--scales: want positive numbers, got {text!r}")
    return scales


def parse_decode(items: tuple[str, ...]) -> DecodeConfig:
    """KEY=VALUE strings -> `DecodeConfig` with those fields changed (typed by the field)."""
    types = {f.name: type(f.default) for f in dataclasses.fields(DecodeConfig)}
    values: dict[str, Any] = {}
    raw_values = key_values(items, option="--decode", example="min_parts=3")
    for key, raw in raw_values.items():
        key = key.replace("-", "_")
        if key not in types:
            raise LcposeError(
                f"--decode: want KEY=VALUE with KEY one of {', '.join(types)}, got {key!r}"
            )
        kind = types[key]
        try:
            if kind is bool:
                if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("1", "true", "yes", "on")
            else:
                values[key] = kind(raw)
        except ValueError:
            raise LcposeError(f"--decode: {key} wants a {kind.__name__}, got {raw!r}") from None
    return DecodeConfig(**values)


def _package_version() -> str:
    try:
        return version("lcpose")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


@click.command("evaluate")
@click.argument("paths", nargs=-1, required=True, metavar="[MODEL] ANNOTATIONS IMAGE_DIR")
@click.option(
    "--oracle",
    is_flag=True,
    help="No model: decode the ground truth rendered by lcdata at the model's resolution "
    "(then only ANNOTATIONS IMAGE_DIR are given).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results.json"),
    show_default=True,
    help="COCO results file; the metrics and protocol go to <stem>.metrics.json beside it.",
)
@click.option("--scales", default="1.0", show_default=True, help="Multipliers on the input size.")
@click.option("--flip", is_flag=True, help="Average in the maps of the mirrored image.")
@click.option("--max-images", type=int, default=None, help="Only the first N images of the file.")
@click.option(
    "--input-size",
    type=int,
    default=None,
    help=f"Image height at scale 1, px [model: its input size; oracle: {_RENDER.input_size}].",
)
@click.option(
    "--stride", type=int, default=None, help=f"Oracle only: pixels per cell [{_RENDER.stride}]."
)
@click.option(
    "--sigma",
    type=float,
    default=None,
    help=f"Oracle only: Gaussian sigma, px [{_RENDER.sigma:g}].",
)
@click.option(
    "--paf-half-width",
    type=float,
    default=None,
    help=f"Oracle only: PAF band half-width, cells [{_RENDER.paf_half_width:g}].",
)
@click.option("--decode", "decode_opts", multiple=True, metavar="KEY=VALUE", help=_DECODE_HELP)
@click.option("--device", default="cpu", show_default=True, help="Model device (cpu, cuda).")
@click.option("--batch-size", default=8, show_default=True, help="Tiles per teacher call.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate(
    paths: tuple[str, ...],
    oracle: bool,
    out: Path,
    scales: str,
    flip: bool,
    max_images: int | None,
    input_size: int | None,
    stride: int | None,
    sigma: float | None,
    paf_half_width: float | None,
    decode_opts: tuple[str, ...],
    device: str,
    batch_size: int,
    quiet: bool,
) -> None:
    """COCO keypoint AP of MODEL (a checkpoint, or an exported teacher .pt2) on ANNOTATIONS.

    Each image is resized to height = input size x scale and padded to the stride; maps are
    averaged over --scales (and --flip), decoded, written as COCO results and scored with
    COCOeval. `trainer evaluate --oracle ANNOTATIONS IMAGE_DIR` decodes rendered ground truth
    instead: the ceiling of labels plus decoder. See docs/decoding.md.
    """
    from trainer.evaluate import Protocol, run_oracle, select_records, write_outputs
    from trainer.infer import load_predictor, run_model

    want = 2 if oracle else 3
    if len(paths) != want:
        form = "--oracle ANNOTATIONS IMAGE_DIR" if oracle else "MODEL ANNOTATIONS IMAGE_DIR"
        raise click.UsageError(f"expected {form}, got {len(paths)} path(s): {' '.join(paths)}")
    model_path = None if oracle else Path(paths[0])
    ann_file, image_dir = Path(paths[-2]), Path(paths[-1])
    if not ann_file.is_file():
        raise LcposeError(f"{ann_file}: annotation file not found")
    if not image_dir.is_dir():
        raise LcposeError(f"{image_dir}: image directory not found")
    scale_list = parse_scales(scales)
    cfg = parse_decode(decode_opts)
    records = select_records(ann_file, max_images)

    if oracle:
        render = RenderConfig(
            input_size=input_size or _RENDER.input_size,
            stride=stride or _RENDER.stride,
            sigma=sigma or _RENDER.sigma,
            paf_half_width=paf_half_width or _RENDER.paf_half_width,
        )
        results = run_oracle(
            records,
            render=render,
            skeleton=CMU_SKELETON,
            cfg=cfg,
            scales=scale_list,
            flip=flip,
            progress=not quiet,
        )
        protocol = Protocol(
            source="oracle",
            input_size=render.input_size,
            stride=render.stride,
            render=render.to_attrs(),
        )
    else:
        if stride is not None or sigma is not None or paf_half_width is not None:
            raise click.UsageError("--stride, --sigma and --paf-half-width are for --oracle")
        predictor, model_info = load_predictor(model_path, device=device, batch_size=batch_size)
        if input_size is not None:
            predictor = dataclasses.replace(predictor, input_size=input_size)
        results = run_model(
            predictor,
            records,
            image_dir,
            cfg=cfg,
            scales=scale_list,
            flip=flip,
            progress=not quiet,
        )
        protocol = Protocol(
            source=str(model_path),
            input_size=predictor.input_size,
            stride=predictor.stride,
            tile_size=predictor.tile_size,
            model=model_info,
        )
    protocol = dataclasses.replace(
        protocol,
        scales=scale_list,
        flip=flip,
        decode=cfg.to_attrs(),
        num_images=len(records),
        annotations=str(ann_file),
        lcpose_version=_package_version(),
    )
    metrics = evaluate_results(ann_file, results, image_ids=[r.image_id for r in records])
    metrics_path = write_outputs(out, results, metrics, protocol)
    click.echo(
        f"{protocol.source}: {len(records)} images, {len(results)} persons, scales "
        f"{','.join(f'{s:g}' for s in scale_list)}{', flip' if flip else ''}, input "
        f"{protocol.input_size}, stride {protocol.stride}"
    )
    click.echo("  ".join(f"{name} {metrics[name]:.3f}" for name in METRIC_NAMES))
    click.echo(f"wrote {out} and {metrics_path}")


@click.command("predict")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder for <image>.png (skeletons), keypoints.json and, with --maps, overlays.",
)
@click.option("--maps", is_flag=True, help="Also write heatmap and PAF overlays.")
@click.option("--scales", default="1.0", show_default=True, help="Multipliers on the input size.")
@click.option("--flip", is_flag=True, help="Average in the maps of the mirrored image.")
@click.option("--input-size", type=int, default=None, help="Image height at scale 1 [model's].")
@click.option("--decode", "decode_opts", multiple=True, metavar="KEY=VALUE", help=_DECODE_HELP)
@click.option("--device", default="cpu", show_default=True, help="Model device (cpu, cuda).")
@click.option("--batch-size", default=8, show_default=True, help="Tiles per teacher call.")
def predict(
    model: Path,
    images: tuple[Path, ...],
    out: Path,
    maps: bool,
    scales: str,
    flip: bool,
    input_size: int | None,
    decode_opts: tuple[str, ...],
    device: str,
    batch_size: int,
) -> None:
    """Decode MODEL's persons on IMAGE... and draw them.

    Writes OUT/<name>.png with the skeletons, OUT/<name>.heatmaps.png and
    OUT/<name>.pafs.png with --maps (PAF hue = direction, brightness = length), and
    OUT/keypoints.json: per image its persons as COCO-17 keypoints (x, y, score) in image
    pixels and a person score.
    """
    import cv2

    from trainer.draw import draw_persons, heatmap_overlay, paf_overlay
    from trainer.infer import load_predictor, predict_image

    scale_list = parse_scales(scales)
    cfg = parse_decode(decode_opts)
    predictor, model_info = load_predictor(model, device=device, batch_size=batch_size)
    if input_size is not None:
        predictor = dataclasses.replace(predictor, input_size=input_size)
    sk = predictor.skeleton
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for path in images:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise LcposeError(f"{path}: not a readable image")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        persons, heat, paf, geo = predict_image(
            predictor, rgb, cfg=cfg, scales=scale_list, flip=flip
        )
        pictures = {"": draw_persons(rgb, persons, skeleton=sk)}
        if maps:
            stride = predictor.stride
            pictures[".heatmaps"] = heatmap_overlay(
                rgb, heat, geo, stride=stride, num_parts=sk.num_parts
            )
            pictures[".pafs"] = paf_overlay(rgb, paf, geo, stride=stride)
        for suffix, picture in pictures.items():
            target = out / f"{path.stem}{suffix}.png"
            cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        entries.append(
            {
                "image": str(path),
                "height": rgb.shape[0],
                "width": rgb.shape[1],
                "persons": [
                    {
                        "score": round(p.score, 6),
                        "keypoints": [round(float(v), 2) for v in sk.to_coco(p.keypoints).ravel()],
                    }
                    for p in persons
                ],
            }
        )
        click.echo(f"{path}: {len(persons)} persons")
    protocol = {
        "model": model_info,
        "input_size": predictor.input_size,
        "stride": predictor.stride,
        "scales": list(scale_list),
        "flip": flip,
        "decode": cfg.to_attrs(),
    }
    body = {"protocol": protocol, "images": entries}
    (out / "keypoints.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    click.echo(f"wrote {len(entries)} pictures and {out / 'keypoints.json'}")
