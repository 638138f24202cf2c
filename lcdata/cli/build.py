"""`lcdata build-teacher-cache`: COCO -> GT crop store, and the teacher pass over its crops."""

from __future__ import annotations

from pathlib import Path

import click

from lcdata.config import AugmentConfig, RenderConfig
from lcdata.errors import LcposeError

_DEFAULT = RenderConfig()


def parse_part(value: str | None) -> tuple[int, int] | None:
    """'i/n' -> (i, n) with 0 <= i < n."""
    if value is None:
        return None
    try:
        i, n = (int(x) for x in value.split("/"))
    except ValueError:
        raise LcposeError(f"--shard must look like i/n (e.g. 0/4), got {value!r}") from None
    if not 0 <= i < n:
        raise LcposeError(f"--shard {value}: need 0 <= i < n")
    return i, n


@click.command("build-teacher-cache")
@click.argument("annotations", required=False, type=click.Path(dir_okay=False))
@click.argument("image_dir", required=False, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Zarr store to write.")
@click.option("--teacher", type=click.Path(dir_okay=False), help="Exported teacher (.pt2).")
@click.option("--views-per-image", default=1, show_default=True, help="Augmented crops per image.")
@click.option("--input-size", default=_DEFAULT.input_size, show_default=True, help="Crop side, px.")
@click.option("--stride", default=_DEFAULT.stride, show_default=True, help="Crop px per cell.")
@click.option("--sigma", default=_DEFAULT.sigma, show_default=True, help="Heatmap sigma, crop px.")
@click.option(
    "--paf-half-width", default=_DEFAULT.paf_half_width, show_default=True, help="PAF band, cells."
)
@click.option("--no-augment", is_flag=True, help="Identity views: no flip, rotation or scaling.")
@click.option("--seed", default=0, show_default=True)
@click.option("--samples-per-shard", default=64, show_default=True)
@click.option("--min-keypoints", default=1, show_default=True, help="Else the person is masked.")
@click.option("--keypoint-field", default="keypoints", show_default=True)
@click.option("--no-masks", is_flag=True, help="Supervise everything: no ignore regions.")
@click.option("--resume", is_flag=True, help="Continue an interrupted build of the same config.")
@click.option("--shard", "part", default=None, help="Write only slice i of n (i/n).")
@click.option(
    "--workers",
    default=2,
    show_default=True,
    help="GT rendering threads; with --teacher, rendering processes (0: one thread).",
)
@click.option("--batch-size", default=16, show_default=True, help="Teacher batch size.")
@click.option("--device", default="cpu", show_default=True, help="Teacher device (cpu, cuda).")
@click.option("--overwrite-teacher", is_flag=True, help="Replace existing teacher arrays.")
def build_teacher_cache(
    annotations: str | None,
    image_dir: str | None,
    out: str,
    teacher: str | None,
    views_per_image: int,
    input_size: int,
    stride: int,
    sigma: float,
    paf_half_width: float,
    no_augment: bool,
    seed: int,
    samples_per_shard: int,
    min_keypoints: int,
    keypoint_field: str,
    no_masks: bool,
    resume: bool,
    part: str | None,
    workers: int,
    batch_size: int,
    device: str,
    overwrite_teacher: bool,
) -> None:
    """Write augmented crops, ignore masks and GT maps of ANNOTATIONS/IMAGE_DIR into --out,
    then (with --teacher) the teacher's heatmaps and PAFs for every crop.

    Without ANNOTATIONS and IMAGE_DIR, --out must be an existing GT store and --teacher is
    run over its crops.
    """
    from lcdata.build import BuildConfig, build_gt_store

    slice_ = parse_part(part)
    if teacher is not None:
        # checked before a GT build that may take hours, not after it
        if not Path(teacher).is_file():
            raise LcposeError(f"{teacher}: teacher file not found")
        if batch_size < 1:
            raise LcposeError(f"--batch-size must be >= 1, got {batch_size}")
    if annotations is not None:
        if image_dir is None:
            raise LcposeError("IMAGE_DIR is required with ANNOTATIONS")
        render = RenderConfig(
            input_size=input_size, stride=stride, sigma=sigma, paf_half_width=paf_half_width
        )
        augment = (
            AugmentConfig(flip_prob=0, max_rotate_deg=0, scale_min=1, scale_max=1, center_jitter=0)
            if no_augment
            else AugmentConfig()
        )
        build = BuildConfig(
            views_per_image=views_per_image,
            seed=seed,
            samples_per_shard=samples_per_shard,
            min_keypoints=min_keypoints,
            keypoint_field=keypoint_field,
            use_masks=not no_masks,
        )
        if teacher is not None:
            from lcdata.teacher_pass import build_teacher_cache as build_one_pass

            attrs = build_one_pass(
                annotations,
                image_dir,
                out,
                teacher,
                render=render,
                augment=augment,
                build=build,
                resume=resume,
                part=slice_,
                workers=workers,
                batch_size=batch_size,
                device=device,
                overwrite=overwrite_teacher,
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
                part=slice_,
                workers=workers,
            )
            what = "gt"
        click.echo(
            f"{out}: {attrs['num_samples']} samples of {input_size}px, stride {stride}; "
            f"{what} {'complete' if attrs['complete'] else 'incomplete (other slices pending)'}"
        )
        return
    if teacher is None:
        raise LcposeError("give ANNOTATIONS IMAGE_DIR to build a store, or --teacher to add to one")
    from lcdata.teacher_pass import run_teacher_pass

    attrs = run_teacher_pass(
        Path(out),
        teacher,
        batch_size=batch_size,
        device=device,
        resume=resume,
        overwrite=overwrite_teacher,
        part=slice_,
    )
    click.echo(
        f"{out}: teacher {Path(teacher).name} written; store "
        f"{'complete' if attrs['complete'] else 'incomplete (other slices pending)'}"
    )
