"""`lcdata score-labels`: label-quality AP of a store's targets against clean labels."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lcdata.store.training import TARGET_KINDS


@click.command("score-labels")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--clean",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Clean COCO keypoint file of the same images (lcdata synth's *_clean.json).",
)
@click.option(
    "--target",
    type=click.Choice(TARGET_KINDS),
    default="auto",
    show_default=True,
    help="Maps to score: auto = target/* of a corrected store, else gt/*.",
)
@click.option("--max-samples", type=int, default=None, help="Score the first N samples only.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write a JSON here.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def score_labels(
    store: str,
    clean: str,
    target: str,
    max_samples: int | None,
    out: str | None,
    no_progress: bool,
) -> None:
    """Decode the stored targets of every sample of STORE and score them with COCOeval
    against --clean moved into each crop: label-quality AP, without training."""
    from lcdata.correction.quality import score_labels as run

    report = run(store, clean, target=target, max_samples=max_samples, progress=not no_progress)
    m = report["metrics"]
    click.echo(report["protocol"])
    click.echo(
        f"{store}: {report['target']} maps of {report['samples']} samples, "
        f"{report['truth_persons']} truth persons ({report['ignored_persons']} ignored), "
        f"{report['detections']} decoded"
    )
    click.echo(
        f"label-quality AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}  "
        f"AR {m['AR']:.3f}"
    )
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        click.echo(f"wrote {out}")
