"""`lcdata inspect`: print what a store holds."""

from __future__ import annotations

import json

import click


@click.command("inspect")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--no-stats", is_flag=True, help="Skip the per-channel statistics pass.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect(store: str, no_stats: bool, as_json: bool) -> None:
    """Schema, shapes, chunking, bytes on disk vs raw float32 and per-channel statistics."""
    from lcdata.correction.analytics import format_analytics
    from lcdata.store.inspect import format_summary, summarize

    summary = summarize(store, stats=not no_stats)
    if as_json:
        click.echo(json.dumps(summary, indent=1))
        return
    click.echo(format_summary(summary))
    if "analytics" in summary["attrs"]:
        click.echo("\n" + "\n".join(format_analytics(summary["attrs"]["analytics"])))
