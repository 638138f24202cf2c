"""`trainer export`: checkpoint -> teacher program (.pt2) that `lcdata` can run."""

from __future__ import annotations

from pathlib import Path

import click

from lcdata.io import file_sha256


@click.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Teacher file to write (.pt2).",
)
def export(checkpoint: Path, out: Path) -> None:
    """Export CHECKPOINT's last stage as a teacher taking uint8 RGB crops (N, S, S, 3).

    The skeleton, stride, input size and model are recorded in the file; `lcdata` refuses
    a teacher whose skeleton, stride or input size disagree with its store.
    """
    from trainer.checkpoint import model_from_checkpoint
    from trainer.export import export_teacher

    model, info = model_from_checkpoint(checkpoint)
    meta = export_teacher(
        model,
        skeleton=info.skeleton,
        stride=info.stride,
        input_size=info.input_size,
        model_name=info.model_name,
        out_path=out,
        extra={"checkpoint": checkpoint.name, "step": info.step},
    )
    size_mb = out.stat().st_size / 1e6
    click.echo(
        f"wrote {out} ({size_mb:.1f} MB): model {info.model_name}, "
        f"{meta['num_params']:,} parameters, stride {info.stride}, input {info.input_size}, "
        f"step {info.step}, sha256 {file_sha256(out)[:12]}"
    )
