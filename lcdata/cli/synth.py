"""`lcdata synth` and `lcdata synth-figure`: the synthetic benchmark and its docs picture."""

from __future__ import annotations

import click

from lcdata.errors import LcposeError
from lcdata.synth.scene import SynthConfig

_DEFAULT = SynthConfig()

_HELP_FAILURES = (
    "Failures applied to the noisy labels: 1 out-of-image keypoints unlabelled "
    "(--no-out-of-image-drop), 2 severely occluded keypoints unlabelled (--no-occlusion-drop), "
    "3 visible keypoints missed at rate --missed-visible, 4 persons unannotated at rate "
    "--unannotated."
)


def parse_range(value: str, flag: str) -> tuple[int, int]:
    """'a..b' (or a single 'a') -> (a, b) with 0 <= a <= b."""
    try:
        lo, _, hi = value.partition("..")
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise LcposeError(f"{flag}: want a..b (e.g. 1..4), got {value!r}") from None
    if not 0 <= a <= b:
        raise LcposeError(f"{flag}: want a..b with 0 <= a <= b, got {value!r}")
    return a, b


@click.command("synth", epilog=_HELP_FAILURES)
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--train", "num_train", default=3000, show_default=True, help="Training images.")
@click.option("--val", "num_val", default=500, show_default=True, help="Validation images.")
@click.option(
    "--size", default=_DEFAULT.image_size, show_default=True, help="Side of the square images, px."
)
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--persons-per-image",
    default="{}..{}".format(*_DEFAULT.persons_per_image),
    show_default=True,
    help="a..b persons per image.",
)
@click.option(
    "--missed-visible", default=_DEFAULT.missed_visible, show_default=True, help="Failure 3 rate p."
)
@click.option(
    "--unannotated", default=_DEFAULT.unannotated, show_default=True, help="Failure 4 rate q."
)
@click.option(
    "--crowd",
    default=_DEFAULT.crowd,
    show_default=True,
    help="Share of images with a crowd region.",
)
@click.option("--no-out-of-image-drop", is_flag=True, help="Keep keypoints outside the image.")
@click.option("--no-occlusion-drop", is_flag=True, help="Keep severely occluded keypoints.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def synth(
    out_dir: str,
    num_train: int,
    num_val: int,
    size: int,
    seed: int,
    persons_per_image: str,
    missed_visible: float,
    unannotated: float,
    crowd: float,
    no_out_of_image_drop: bool,
    no_occlusion_drop: bool,
    quiet: bool,
) -> None:
    """Write a synthetic COCO person-keypoints dataset to OUT_DIR.

    OUT_DIR/{train,val}/*.png, OUT_DIR/annotations/person_keypoints_{train,val}.json (noisy
    labels) and ..._clean.json (truth, with `keypoints_all`), OUT_DIR/corruption.json.
    """
    from lcdata.synth.scene import format_summary, generate

    for flag, n in (("--train", num_train), ("--val", num_val)):
        if n < 0:
            raise LcposeError(f"{flag}: number of images must be >= 0, got {n}")
    cfg = SynthConfig(
        image_size=size,
        persons_per_image=parse_range(persons_per_image, "--persons-per-image"),
        crowd=crowd,
        missed_visible=missed_visible,
        unannotated=unannotated,
        drop_out_of_image=not no_out_of_image_drop,
        drop_occluded=not no_occlusion_drop,
    )
    report = generate(
        out_dir, num_train=num_train, num_val=num_val, cfg=cfg, seed=seed, progress=not quiet
    )
    click.echo(format_summary(report))
    click.echo(f"wrote {out_dir} (counts in {out_dir}/corruption.json)")


@click.command("synth-figure")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    default="docs/synthetic_examples.png",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="PNG to write.",
)
@click.option("--n", "num_images", default=6, show_default=True, help="Images to draw.")
def synth_figure(data_dir: str, out: str, num_images: int) -> None:
    """Draw train images of DATA_DIR with clean (left) and corrupted (right) keypoints."""
    from lcdata.synth.figure import example_figure

    if num_images < 1:
        raise LcposeError(f"--n: need at least 1 image, got {num_images}")
    example_figure(data_dir, out, num_images=num_images)
    click.echo(f"wrote {out}")


synth.field_options = {"image_size": "--size"}
