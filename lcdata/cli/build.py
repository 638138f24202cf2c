"""`lcdata build-teacher-cache`: COCO -> GT crop store, and the teacher pass over its crops."""

from __future__ import annotations

from pathlib import Path

import click

from lcdata.config import (
    DEFAULT_VIEWS_PER_IMAGE,
    NO_AUGMENT,
    PRESETS,
    AugmentConfig,
    RenderConfig,
)
from lcdata.errors import LcposeError
from lcdata.store.layout import DEFAULT_SAMPLES_PER_BLOCK


def parse_slice(value: str | None, option: str = "--slice") -> tuple[int, int] | None:
    """'i/n' -> (i, n) with 0 <= i < n."""
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise LcposeError(f"{option} must look like i/n (e.g. 0/4), got {value!r}") from None
    if not 0 <= i < n:
        raise LcposeError(f"{option} {value}: need 0 <= i < n")
    return i, n


def work_slice_option(value: str | None, deprecated: str | None) -> tuple[int, int] | None:
    """The --slice i/n of a command, also given as the deprecated --shard i/n."""
    if deprecated is not None:
        click.echo("warning: --shard is deprecated, use --slice (same i/n)", err=True)
        if value is not None and value != deprecated:
            raise LcposeError(f"--slice {value} and --shard {deprecated} disagree; give --slice")
        return parse_slice(deprecated, "--shard")
    return parse_slice(value)


def slice_options(command: click.Command) -> click.Command:
    """`--slice i/n` and its deprecated alias `--shard i/n` (hidden from --help)."""
    command = click.option(
        "--shard", "shard_alias", default=None, hidden=True, help="Deprecated: use --slice."
    )(command)
    return click.option(
        "--slice",
        "work_slice",
        default=None,
        help="Write only blocks b with b % n == i (i/n): n processes or machines fill one store.",
    )(command)


def render_config(
    preset: str,
    input_size: int | None,
    stride: int | None,
    sigma: float | None,
    paf_half_width: float | None,
) -> RenderConfig:
    """The preset's geometry, with each field given on the command line replacing its own."""
    base = PRESETS[preset]
    return RenderConfig(
        input_size=base.input_size if input_size is None else input_size,
        stride=base.stride if stride is None else stride,
        sigma=base.sigma if sigma is None else sigma,
        paf_half_width=base.paf_half_width if paf_half_width is None else paf_half_width,
    )


def _preset_help(field: str, unit: str) -> str:
    values = ", ".join(f"{name} {getattr(cfg, field):g}" for name, cfg in PRESETS.items())
    return f"{unit} [default: the preset's: {values}]"


@click.command("build-teacher-cache")
@click.argument("annotations", required=False, type=click.Path(dir_okay=False))
@click.argument("image_dir", required=False, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Zarr store to write.")
@click.option("--teacher", type=click.Path(dir_okay=False), help="Exported teacher (.pt2).")
@click.option(
    "--views-per-image",
    default=DEFAULT_VIEWS_PER_IMAGE,
    show_default=True,
    help="Augmented crops per image (docs/augmentation.md: what K costs and buys).",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default="coco",
    show_default=True,
    help="Render geometry: coco (368 px, stride 8, sigma 7) or synth (128 px, stride 4, sigma 4).",
)
@click.option(
    "--input-size", type=int, default=None, help=_preset_help("input_size", "Crop side, px.")
)
@click.option("--stride", type=int, default=None, help=_preset_help("stride", "Crop px per cell."))
@click.option("--sigma", type=float, default=None, help=_preset_help("sigma", "Heatmap sigma, px."))
@click.option(
    "--paf-half-width",
    type=float,
    default=None,
    help=_preset_help("paf_half_width", "PAF band, cells."),
)
@click.option("--no-augment", is_flag=True, help="Identity views: no flip, rotation or scaling.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--samples-per-shard",
    default=DEFAULT_SAMPLES_PER_BLOCK,
    show_default=True,
    help="Samples per block (one zarr chunk: the unit of writing, resume and --slice).",
)
@click.option("--min-keypoints", default=1, show_default=True, help="Else the person is masked.")
@click.option("--keypoint-field", default="keypoints", show_default=True)
@click.option("--no-masks", is_flag=True, help="Supervise everything: no ignore regions.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build of the same config.")
@slice_options
@click.option(
    "--workers",
    default=2,
    show_default=True,
    help="GT rendering threads; with --teacher, rendering processes (0: one thread).",
)
@click.option("--batch-size", default=16, show_default=True, help="Teacher batch size.")
@click.option("--device", default="cpu", show_default=True, help="Teacher device (cpu, cuda).")
@click.option(
    "--teacher-precision",
    type=click.Choice(["fp32", "bf16", "fp16"]),
    default="fp32",
    show_default=True,
    help="Teacher forward precision (bf16/fp16: autocast, for GPUs); recorded in the store.",
)
@click.option(
    "--tta",
    default="off",
    show_default=True,
    help="Teacher test-time augmentation: off, flip, scales=S1:S2, flip,scales=0.8:1.25 "
    "(views mapped back and averaged; recorded in the store).",
)
@click.option("--overwrite-teacher", is_flag=True, help="Replace existing teacher arrays.")
@click.option(
    "--no-space-check", is_flag=True, help="Write even when the estimate exceeds the free space."
)
def build_teacher_cache(
    annotations: str | None,
    image_dir: str | None,
    out: str,
    teacher: str | None,
    views_per_image: int,
    preset: str,
    input_size: int | None,
    stride: int | None,
    sigma: float | None,
    paf_half_width: float | None,
    no_augment: bool,
    seed: int,
    samples_per_shard: int,
    min_keypoints: int,
    keypoint_field: str,
    no_masks: bool,
    resume: bool,
    work_slice: str | None,
    shard_alias: str | None,
    workers: int,
    batch_size: int,
    device: str,
    teacher_precision: str,
    tta: str,
    overwrite_teacher: bool,
    no_space_check: bool,
) -> None:
    """Write augmented crops, ignore masks and GT maps of ANNOTATIONS/IMAGE_DIR into --out,
    then (with --teacher) the teacher's heatmaps and PAFs for every crop.

    Without ANNOTATIONS and IMAGE_DIR, --out must be an existing GT store and --teacher is
    run over its crops.
    """
    from lcdata.build.gt import BuildConfig, build_gt_store
    from lcdata.build.tta import parse_tta

    part = work_slice_option(work_slice, shard_alias)
    try:
        tta_cfg = parse_tta(tta)
    except ValueError as err:
        raise LcposeError(f"--tta: {err}") from None
    if teacher is not None:
        # checked before a GT build that may take hours, not after it
        if not Path(teacher).is_file():
            raise LcposeError(f"{teacher}: teacher file not found")
        if batch_size < 1:
            raise LcposeError(f"--batch-size: must be >= 1, got {batch_size}")
    if annotations is not None:
        if image_dir is None:
            raise LcposeError("IMAGE_DIR is required with ANNOTATIONS")
        render = render_config(preset, input_size, stride, sigma, paf_half_width)
        augment = NO_AUGMENT if no_augment else AugmentConfig()
        build = BuildConfig(
            views_per_image=views_per_image,
            seed=seed,
            samples_per_shard=samples_per_shard,
            min_keypoints=min_keypoints,
            keypoint_field=keypoint_field,
            use_masks=not no_masks,
        )
        if teacher is not None:
            from lcdata.build.one_pass import build_teacher_cache as build_one_pass

            attrs = build_one_pass(
                annotations,
                image_dir,
                out,
                teacher,
                render=render,
                augment=augment,
                build=build,
                resume=resume,
                work_slice=part,
                workers=workers,
                batch_size=batch_size,
                device=device,
                precision=teacher_precision,
                tta=tta_cfg,
                overwrite=overwrite_teacher,
                space_check=not no_space_check,
            )
            what = f"gt + teacher {Path(teacher).name}"
        else:
            attrs = build_gt_store(
                annotations,
                image_dir,
                out,
                render=render,
                augment=augment,
                build=build,
                resume=resume,
                work_slice=part,
                workers=workers,
                space_check=not no_space_check,
            )
            what = "gt"
        click.echo(
            f"{out}: {attrs['num_samples']} samples of {render.input_size}px, stride "
            f"{render.stride}; {what} "
            f"{'complete' if attrs['complete'] else 'incomplete (other slices pending)'}"
        )
        return
    if teacher is None:
        raise LcposeError("give ANNOTATIONS IMAGE_DIR to build a store, or --teacher to add to one")
    from lcdata.build.teacher_pass import run_teacher_pass

    attrs = run_teacher_pass(
        Path(out),
        teacher,
        batch_size=batch_size,
        device=device,
        precision=teacher_precision,
        tta=tta_cfg,
        resume=resume,
        overwrite=overwrite_teacher,
        work_slice=part,
        space_check=not no_space_check,
    )
    click.echo(
        f"{out}: teacher {Path(teacher).name} written; store "
        f"{'complete' if attrs['complete'] else 'incomplete (other slices pending)'}"
    )


build_teacher_cache.field_options = {"overwrite_teacher": "--overwrite-teacher"}
