"""Correction analytics of a whole store: setup, per-block tasks, totals and text.

The statistics themselves are defined in `lcdata.correction.stats`. `lcdata correct`
computes a block's statistics in the task that writes its targets and saves them in
`<out>/.lcpose-analytics/<block>.npz` before it marks the block done; at the end
`collect_analytics` adds them up (computing any block that has none from the stored arrays)
and the folder is removed. `compute_analytics` computes every block from the stored arrays,
with the same result.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np

from lcdata.config import RenderConfig
from lcdata.correction.stats import STATS_VERSION, block_stats, load_block_stats, sum_stats
from lcdata.errors import LcposeError
from lcdata.io import file_sha256
from lcdata.labels.skeleton import Skeleton
from lcdata.parallel import compute_with_progress
from lcdata.store.layout import StoreInfo
from lcdata.store.refs import open_dask
from lcdata.synth.truth import BUCKETS, CleanTruth, canonical_keys, load_clean_truth

_PREFIX = "analytics"


@dataclass(frozen=True)
class AnalyticsSetup:
    """What every block's statistics need besides its arrays (see `analytics_setup`).

    Attributes:
        info: the cache store's header (skeleton and render geometry).
        truth: the clean truth (`--clean`), or None for the correction statistics only.
        clean: the `truth.file` entry of the analytics (path, sha256, keypoints_removed).
    """

    info: StoreInfo
    truth: CleanTruth | None = None
    clean: dict[str, Any] | None = None

    @property
    def skeleton(self) -> Skeleton:
        return self.info.skeleton

    @property
    def cfg(self) -> RenderConfig:
        return self.info.render

    @property
    def arrays(self) -> tuple[str, ...]:
        """Cache store arrays a block's statistics read besides gt/* (and the targets)."""
        meta = ("meta/image_id", "meta/affine", "meta/flipped") if self.truth is not None else ()
        return ("masks", *meta)

    @property
    def tag(self) -> str:
        """What saved block statistics hold: their format and the clean file they used."""
        clean = self.truth.clean_sha256 if self.truth is not None else "none"
        return f"stats-v{STATS_VERSION} clean={clean}"

    def task_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `block_stats` in a dask task (the truth is one shared key)."""
        if self.truth is None:
            return {}
        return {"truth": dask.delayed(self.truth), "cfg": self.cfg, "skeleton": self.skeleton}


def analytics_setup(source: str | Path, clean: str | Path | None = None) -> AnalyticsSetup:
    """Read what the analytics of a correction of `source` need, checking `clean` first.

    Args:
        source: the cache store.
        clean: the synthetic benchmark's clean annotation file; its noisy counterpart is
            the annotation file recorded in the source store's attributes.

    Raises:
        LcposeError: the noisy annotation file is missing or changed, or the files do not pair.
    """
    store = StoreInfo.read(source)
    attrs = store.attrs
    if clean is None:
        return AnalyticsSetup(store)
    noisy = Path(attrs.get("source", {}).get("annotations", ""))
    if not noisy.is_file():
        raise LcposeError(
            f"clean truth {clean}: the store's annotation file {noisy} is not found; it is "
            f"needed to tell which truth the labels lack"
        )
    if file_sha256(noisy) != attrs["source"].get("annotations_sha256"):
        raise LcposeError(f"clean truth {clean}: {noisy} changed since the store was built")
    truth = load_clean_truth(
        clean,
        noisy,
        skeleton=store.skeleton,
        noisy_field=attrs.get("build", {}).get("keypoint_field", "keypoints"),
    )
    record = {
        "path": str(Path(clean).resolve()),
        "sha256": truth.clean_sha256,
        "keypoints_removed": truth.keypoints_removed,
    }
    return AnalyticsSetup(store, truth, record)


def block_stats_tasks(
    source: str | Path, corrected: str | Path, blocks: list[int], setup: AnalyticsSetup
) -> list[Any]:
    """One dask.delayed `block_stats` per listed block, reading the stored arrays."""

    def delayed(path: str | Path, name: str) -> np.ndarray:
        return open_dask(path, name).to_delayed().ravel()

    inputs = [
        delayed(source, "gt/heatmaps"),
        delayed(source, "gt/pafs"),
        delayed(corrected, "target/heatmaps"),
        delayed(corrected, "target/pafs"),
        *(delayed(source, name) for name in setup.arrays),
    ]
    kwargs = setup.task_kwargs()
    task = dask.delayed(block_stats, pure=True)
    return [
        task(*(arr[b] for arr in inputs), **kwargs, dask_key_name=f"{_PREFIX}-{b}") for b in blocks
    ]


def collect_analytics(
    source: str | Path,
    corrected: str | Path,
    *,
    setup: AnalyticsSetup,
    saved: str | Path | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Analytics of a corrected store from per-block statistics saved while writing it.

    Blocks without statistics in `saved` (with `setup.tag`) are computed from the stored
    arrays, one dask task per block, so the result is always complete. Totals are added
    in block order, so they do not depend on which blocks were saved and which recomputed.

    Args:
        source: the cache store (gt/*, masks, meta/*).
        corrected: the corrected store (target/*), every block written.
        setup: `analytics_setup(source, clean)`.
        saved: folder of `save_block_stats` files, or None to compute every block.
        scheduler: dask.distributed address, or None for local threads.

    Returns:
        JSON-safe dict (see `summarize_stats`).
    """
    num = open_dask(source, "gt/heatmaps").numblocks[0]
    per_block: dict[int, dict[str, np.ndarray]] = {}
    if saved is not None:
        for b in range(num):
            stats = load_block_stats(saved, b, tag=setup.tag)
            if stats is not None:
                per_block[b] = stats
    missing = [b for b in range(num) if b not in per_block]
    if missing:
        results = compute_with_progress(
            block_stats_tasks(source, corrected, missing, setup),
            scheduler=scheduler,
            desc="analytics",
            prefix=_PREFIX,
            progress=progress,
        )
        per_block.update(zip(missing, results, strict=True))
    totals = sum_stats([per_block[b] for b in range(num)])
    return summarize_stats(totals, skeleton=setup.skeleton, clean=setup.clean)


def compute_analytics(
    source: str | Path,
    corrected: str | Path,
    *,
    clean: str | Path | None = None,
    scheduler: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Analytics of a corrected store against its cache store (one dask task per block).

    `lcdata correct` computes the same statistics inside its write tasks instead (see
    `collect_analytics`); this re-reads every block.

    Args:
        source: the cache store (gt/*, masks, meta/*).
        corrected: the corrected store (target/*), every block written.
        clean: the synthetic benchmark's clean annotation file; its noisy counterpart is
            the annotation file recorded in the source store's attributes.
        scheduler: dask.distributed address, or None for local threads.

    Returns:
        JSON-safe dict (see `summarize_stats`).
    """
    return collect_analytics(
        source,
        corrected,
        setup=analytics_setup(source, clean),
        scheduler=scheduler,
        progress=progress,
    )


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b > 0 else None


def summarize_stats(
    totals: dict[str, np.ndarray], *, skeleton: Skeleton, clean: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Summed block statistics -> the JSON-safe `analytics` attribute.

    Keys: samples, supervised_cells; heatmaps {parts, gt_mass, target_mass, added, removed
    (per part), added_total, added_fraction (of GT mass)}; pafs {limbs, gt_cells, target_cells,
    changed, changed_fraction (of supervised cells), mass_added (per limb), changed_total};
    and with clean labels: truth {file, heatmaps/pafs {truth_mass, missing, recovered,
    recovered_fraction (per failure and total), false_additions, false_fraction (of truth
    mass)}}.
    """
    cells = float(totals["cells"][0])
    names = list(skeleton.names)
    limbs = [f"{names[a]}-{names[b]}" for a, b in skeleton.limbs]
    added, gt_mass = totals["heat_added"], totals["heat_gt"]
    out: dict[str, Any] = {
        "samples": int(totals["samples"][0]),
        "supervised_cells": int(cells),
        "heatmaps": {
            "parts": names,
            "gt_mass": totals["heat_gt"].tolist(),
            "target_mass": totals["heat_target"].tolist(),
            "added": added.tolist(),
            "removed": totals["heat_removed"].tolist(),
            "added_total": float(added.sum()),
            "removed_total": float(totals["heat_removed"].sum()),
            "added_fraction": _ratio(added.sum(), gt_mass.sum()),
        },
        "pafs": {
            "limbs": limbs,
            "gt_cells": totals["paf_gt_cells"].astype(int).tolist(),
            "target_cells": totals["paf_target_cells"].astype(int).tolist(),
            "changed": totals["paf_changed"].astype(int).tolist(),
            "changed_fraction": (totals["paf_changed"] / max(cells, 1)).tolist(),
            "changed_total": int(totals["paf_changed"].sum()),
            "mass_added": totals["paf_mass_added"].tolist(),
        },
    }
    if clean is not None:
        truth: dict[str, Any] = {"file": clean}
        for kind in ("heat", "paf"):
            missing, recovered = totals[f"{kind}_missing"], totals[f"{kind}_recovered"]
            mass = float(totals[f"{kind}_truth"][0])
            truth["heatmaps" if kind == "heat" else "pafs"] = {
                "truth_mass": mass,
                "missing": dict(zip(BUCKETS, missing.tolist(), strict=True))
                | {"total": float(missing.sum())},
                "recovered": dict(zip(BUCKETS, recovered.tolist(), strict=True))
                | {"total": float(recovered.sum())},
                "recovered_fraction": {
                    b: _ratio(r, m) for b, r, m in zip(BUCKETS, recovered, missing, strict=True)
                }
                | {"total": _ratio(recovered.sum(), missing.sum())},
                "false_additions": float(totals[f"{kind}_false"][0]),
                "false_fraction": _ratio(totals[f"{kind}_false"][0], mass),
            }
        out["truth"] = truth
    return out


def format_analytics(analytics: dict[str, Any]) -> list[str]:
    """Text lines of the `analytics` attribute (for `lcdata inspect` and `lcdata correct`)."""
    lines = [f"correction analytics over {analytics['samples']} samples, supervised cells only"]
    heat = analytics["heatmaps"]
    frac = heat.get("added_fraction")
    lines.append(
        f"  heatmaps: target added {heat['added_total']:.1f} mass to the parts"
        + (f" ({frac:.1%} of GT mass)" if frac is not None else "")
        + f", removed {heat['removed_total']:.1f}"
    )
    per_part = [
        f"{name} +{a:.1f}" for name, a in zip(heat["parts"], heat["added"], strict=True) if a > 0
    ]
    if per_part:
        lines += _wrap("added per part: ", per_part)
    pafs = analytics["pafs"]
    total_frac = pafs["changed_total"] / max(analytics["supervised_cells"] * len(pafs["limbs"]), 1)
    lines.append(
        f"  pafs: {pafs['changed_total']} limb cells differ from GT ({total_frac:.2%} of "
        f"supervised limb cells)"
    )
    per_limb = [
        f"{name} {f:.2%}"
        for name, f in zip(pafs["limbs"], pafs["changed_fraction"], strict=True)
        if f > 0
    ]
    if per_limb:
        lines += _wrap("changed per limb: ", per_limb)
    truth = analytics.get("truth")
    if truth:
        lines.append(f"  against the clean truth {Path(truth['file']['path']).name}:")
        for kind in ("heatmaps", "pafs"):
            t = {k: canonical_keys(v) if isinstance(v, dict) else v for k, v in truth[kind].items()}
            rec = t["recovered_fraction"]
            parts = [
                f"{b.replace('_', ' ')} {_pct(rec[b])} of {t['missing'][b]:.1f}" for b in BUCKETS
            ]
            lines.append(
                f"    {kind}: missing {t['missing']['total']:.1f} of {t['truth_mass']:.1f} truth "
                f"mass, recovered {_pct(rec['total'])}; false additions "
                f"{t['false_additions']:.1f} ({_pct(t['false_fraction'])} of truth)"
            )
            lines += _wrap("  recovered by failure: ", parts)
    return lines


def _wrap(title: str, items: list[str], width: int = 100) -> list[str]:
    return textwrap.wrap(
        ", ".join(items), width, initial_indent="    " + title, subsequent_indent="      "
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
