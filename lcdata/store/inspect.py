"""What is in a store: schema, arrays, chunking, bytes on disk vs raw, per-channel statistics.

Statistics are computed with dask straight from the zarr arrays (out of core), one task per
block, so inspecting a store larger than memory works. The correction analytics a corrected
store carries are formatted by `lcdata.correction.analytics.format_analytics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import numpy as np
import zarr

from lcdata.labels.skeleton import Skeleton
from lcdata.store.layout import MAP_GROUPS, read_attrs
from lcdata.store.refs import open_dask


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def array_paths(group: zarr.Group) -> list[str]:
    """Every array in the store, as paths relative to its root, sorted."""
    return sorted(name for name, _ in group.arrays()) + sorted(
        f"{sub}/{name}" for sub, g in group.groups() for name, _ in g.arrays()
    )


def summarize(path: str | Path, *, stats: bool = True) -> dict[str, Any]:
    """Describe a store. Works on incomplete stores too (it says so).

    Returns:
        {"attrs": the lcpose attributes, "arrays": {name: {shape, dtype, chunks, shards,
        bytes_raw, bytes_disk}}, "channels": {name: {"mean": [C], "max": [C], "min": [C]}}}
        where channel statistics cover the map arrays (N, C, h, w), over every sample.
    """
    path = Path(path)
    attrs = read_attrs(path)
    group = zarr.open_group(str(path), mode="r")
    arrays: dict[str, Any] = {}
    for name in array_paths(group):
        arr = group[name]
        arrays[name] = {
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "chunks": list(arr.chunks),
            "shards": list(arr.shards) if arr.shards else None,
            "bytes_raw": int(arr.nbytes),
            "bytes_raw_float32": int(np.prod(arr.shape)) * 4,
            "bytes_disk": disk_bytes(path / name),
        }
    channels: dict[str, Any] = {}
    if stats:
        lazy = {}
        for name in arrays:
            if name.split("/")[0] in MAP_GROUPS and len(arrays[name]["shape"]) == 4:
                x = open_dask(path, name).astype(np.float32)
                lazy[name] = (x.mean(axis=(0, 2, 3)), x.min(axis=(0, 2, 3)), x.max(axis=(0, 2, 3)))
        (computed,) = dask.compute(lazy) if lazy else ({},)
        for name, (mean, lo, hi) in computed.items():
            channels[name] = {"mean": mean.tolist(), "min": lo.tolist(), "max": hi.tolist()}
    return {"path": str(path), "attrs": attrs, "arrays": arrays, "channels": channels}


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of `summarize`'s result."""
    attrs = summary["attrs"]
    lines = [
        f"store     {summary['path']}",
        f"kind      {attrs.get('kind')}  schema {attrs.get('schema_version')}  "
        f"complete {attrs.get('complete')}",
        f"samples   {attrs.get('num_samples')}  ({attrs.get('samples_per_shard')} per shard)",
    ]
    render = attrs.get("render", {})
    lines.append(
        "render    input {input_size}px  stride {stride}  sigma {sigma}px  "
        "paf half-width {paf_half_width} cells".format(**render)
        if render
        else "render    ?"
    )
    if "skeleton" in attrs:
        sk = Skeleton.from_attrs(attrs["skeleton"])
        lines.append(f"skeleton  {sk.num_parts} parts, {sk.num_limbs} limbs")
    for key in ("source", "teacher", "correction"):
        if key in attrs:
            lines.append(f"{key:<9} {attrs[key]}")
    if attrs.get("source_store"):
        how = attrs.get("correction", {}).get("inputs", "referenced")
        lines.append(f"inputs    images, masks, meta/* {how} from {attrs['source_store']}")
    lines.append("")
    lines.append(
        f"{'array':<18}{'shape':<24}{'dtype':<9}{'chunk/shard':<22}{'disk':>11}{'% f32':>8}"
    )
    total_disk = 0
    for name, a in summary["arrays"].items():
        if name.startswith("progress/"):
            continue
        shard = a["shards"][0] if a["shards"] else a["chunks"][0]
        total_disk += a["bytes_disk"]
        pct = 100 * a["bytes_disk"] / max(a["bytes_raw_float32"], 1)
        layout = f"{a['chunks'][0]}/{shard}"
        lines.append(
            f"{name:<18}{str(tuple(a['shape'])):<24}{a['dtype']:<9}{layout:<22}"
            f"{_human(a['bytes_disk']):>11}{pct:>7.1f}%"
        )
    n = max(int(attrs.get("num_samples") or 1), 1)
    lines.append(f"total on disk {_human(total_disk)}, {_human(total_disk / n)} per sample")
    for name, ch in summary["channels"].items():
        lines.append("")
        lines.append(f"{name}: per-channel mean / max")
        means, maxes = ch["mean"], ch["max"]
        lines.append("  " + " ".join(f"{m:.3f}/{x:.2f}" for m, x in zip(means, maxes, strict=True)))
    return "\n".join(lines)
