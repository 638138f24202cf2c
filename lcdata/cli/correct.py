"""`lcdata correct` (cache store -> corrected store) and `lcdata show` (one sample as a PNG)."""

from __future__ import annotations

import click

from lcdata.correction.rules import BACKGROUND_RULES, DEFAULT_GATES, DEFAULT_LAMBDA, MODES


@click.command("correct")
@click.argument("cache", type=click.Path(exists=True, file_okay=False))
@click.option("--mode", required=True, type=click.Choice(MODES), help="Target rule (see docs).")
@click.option(
    "--lam",
    type=float,
    default=None,
    help=f"KD mixing ratio lambda for kd and kd+lc [default: {DEFAULT_LAMBDA}].",
)
@click.option(
    "--heat-gate",
    type=float,
    default=None,
    help=f"Mode gated: teacher heatmap values below this are not taken [default: "
    f"{DEFAULT_GATES[0]}].",
)
@click.option(
    "--paf-gate",
    type=float,
    default=None,
    help=f"Mode gated: teacher limb vectors shorter than this are not taken [default: "
    f"{DEFAULT_GATES[1]}].",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Store to write.")
@click.option(
    "--background",
    type=click.Choice(BACKGROUND_RULES),
    default="recompute",
    show_default=True,
    help="Background of corrected heatmaps: 1 - max of parts, or min/max of GT and teacher.",
)
@click.option("--scheduler", default=None, help="dask.distributed scheduler address.")
@click.option(
    "--clean",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Clean truth annotations (lcdata synth's *_clean.json) for recovery analytics.",
)
@click.option("--resume", is_flag=True, help="Finish an interrupted correction.")
@click.option(
    "--copy-inputs",
    is_flag=True,
    help="Copy images, masks and meta/* instead of referencing the cache store.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars (nor the space estimate).")
@click.option(
    "--no-space-check", is_flag=True, help="Write even when the estimate exceeds the free space."
)
def correct(
    cache: str,
    mode: str,
    lam: float | None,
    heat_gate: float | None,
    paf_gate: float | None,
    out: str,
    background: str,
    scheduler: str | None,
    clean: str | None,
    resume: bool,
    copy_inputs: bool,
    no_progress: bool,
    no_space_check: bool,
) -> None:
    """Write the training targets of MODE for the cache store CACHE into --out.

    Modes: gt (eq. 1), max (label correction, eq. 2-3), heatmaps / pafs (correct one only),
    kd ((1-lam) GT + lam teacher, eq. 5), kd+lc ((1-lam) LC + lam teacher, eq. 6),
    gated (LC where the teacher is confident: --heat-gate, --paf-gate).
    """
    from lcdata.correction.analytics import format_analytics
    from lcdata.correction.write import run_correct

    gates = None
    if heat_gate is not None or paf_gate is not None:
        gates = (
            DEFAULT_GATES[0] if heat_gate is None else heat_gate,
            DEFAULT_GATES[1] if paf_gate is None else paf_gate,
        )
    attrs = run_correct(
        cache,
        out,
        mode=mode,
        lam=lam,
        background=background,
        gates=gates,
        clean=clean,
        scheduler=scheduler,
        resume=resume,
        copy_inputs=copy_inputs,
        progress=not no_progress,
        space_check=not no_space_check,
    )
    inputs = attrs["correction"]["inputs"]
    click.echo(
        f"{out}: {attrs['num_samples']} samples, mode {mode}; images/masks/meta {inputs} "
        f"({attrs['source_store']}); complete {attrs['complete']}"
    )
    click.echo("\n".join(format_analytics(attrs["analytics"])))


@click.command("show")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--index", default=0, show_default=True, help="Sample index.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG to write.")
@click.option("--dpi", default=110, show_default=True)
def show(store: str, index: int, out: str, dpi: int) -> None:
    """Draw sample --index of STORE: crop and mask, GT / teacher / target heatmaps and PAFs."""
    from lcdata.show import render_figure

    path = render_figure(store, index, out, dpi=dpi)
    click.echo(f"wrote {path}")
