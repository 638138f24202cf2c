"""`lcdata score-labels` (label-quality AP of a store's targets against clean labels) and
`lcdata audit` (suspected label errors where teacher and labels disagree)."""

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


@click.command("audit")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--top", default=24, show_default=True, help="Suspects on the contact sheet.")
@click.option(
    "--clean",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Synthetic benchmark only: score the suspects against the known failures.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def audit(store: str, out: str, top: int, clean: str | None, no_progress: bool) -> None:
    """Suspected label errors of the annotations STORE was built from, where its teacher and
    its labels disagree: OUT/suspects.json (ranked, original-image coordinates) and
    OUT/suspects.png (the top ones)."""
    from lcdata.correction.audit import audit_store, contact_sheet, evaluate_suspects
    from lcdata.io import write_json_atomic
    from lcdata.store.layout import read_attrs

    suspects = audit_store(store, progress=not no_progress)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "suspects.json", suspects)
    kinds = {k: sum(s["kind"] == k for s in suspects) for k in ("unannotated_person",
                                                                 "missed_keypoint")}  # fmt: skip
    click.echo(
        f"{store}: {len(suspects)} suspects ({kinds['unannotated_person']} unannotated persons, "
        f"{kinds['missed_keypoint']} persons with missed keypoints) -> {folder / 'suspects.json'}"
    )
    if suspects:
        click.echo(f"wrote {contact_sheet(suspects, store, folder / 'suspects.png', top=top)}")
    if clean is not None:
        noisy = read_attrs(store)["source"]["annotations"]
        scores = evaluate_suspects(suspects, clean, noisy)
        write_json_atomic(folder / "evaluation.json", scores)
        for kind, m in scores.items():
            click.echo(
                f"{kind}: {m['suspects']} proposed, {m['failures']} failures; precision "
                f"{m['precision']:.3f} recall {m['recall']:.3f} AP {m['ap']:.3f}"
            )
