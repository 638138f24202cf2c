"""The K-against-fresh table of docs/augmentation.md, from the committed run summaries.

    python -m experiments.aug_table [RESULTS_DIR ...]

Each results folder (default: experiments/results/aug_k1, aug_k8, aug_fresh) holds the step
markers of one configuration's seeds (`experiments.archive`). For each: the clean-val AP of
the Baseline at every learning-curve point (first `curve_max_images` val images) and at the
end (all val images), mean and standard deviation over the seeds found, and the paired
difference to the first configuration (same data seed: the configs share their data).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DEFAULT = (
    "experiments/results/aug_k1",
    "experiments/results/aug_k8",
    "experiments/results/aug_fresh",
)


RATES = "p0.10_q0.10"
"""The K study's data (p = q = 0.1); a results folder that grew an experiment's sweep also
holds Baselines of other rates, which are not rows of this table."""


def load_runs(results: Path) -> dict[int, dict]:
    """seed -> {"final": AP, "curve": {step: AP}} of the Baseline of each archived seed."""
    runs: dict[int, dict] = {}
    for marker in sorted((results / "steps").glob(f"{RATES}_s*__eval__baseline.json")):
        group = marker.name.split("__", 1)[0]
        seed = int(group.rsplit("_s", 1)[1])
        final = json.loads(marker.read_text())["outputs"]["metrics"]["clean"]["AP"]
        curve_file = results / "steps" / f"{group}__curve__baseline.json"
        curve = {}
        if curve_file.is_file():
            points = json.loads(curve_file.read_text())["outputs"]["points"]
            curve = {p["step"]: p["metrics"]["clean"]["AP"] for p in points}
        runs[seed] = {"final": final, "curve": curve}
    return runs


def mean_std(values: list[float]) -> str:
    """'m ± s (n)' in AP points; the sample std (ddof 1), '-' for the spread of one value."""
    v = 100 * np.asarray(values, np.float64)
    spread = f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else ""
    return f"{v.mean():.1f}{spread}"


def table(folders: list[Path], steps: tuple[int, ...] = (2000, 4000, 8000, 12000, 16000)) -> str:
    """The markdown table: rows = configurations, columns = curve steps and the final AP."""
    runs = {f.name: load_runs(f) for f in folders}
    head = " | ".join(str(s) for s in steps)
    lines = [
        f"| run | seeds | {head} | final (500 images) | final − {folders[0].name} (paired) |",
        "|---|---|" + "---|" * len(steps) + "---|---|",
    ]
    base = runs[folders[0].name]
    for name, seeds in runs.items():
        if not seeds:
            continue
        cells = [mean_std([r["curve"][s] for r in seeds.values() if s in r["curve"]] or [np.nan])
                 for s in steps]  # fmt: skip
        final = mean_std([r["final"] for r in seeds.values()])
        shared = sorted(set(seeds) & set(base))
        diff = "" if name == folders[0].name or not shared else (
            mean_std([seeds[s]["final"] - base[s]["final"] for s in shared])
        )  # fmt: skip
        ids = ",".join(str(s) for s in sorted(seeds))
        lines.append(f"| {name} | {ids} | {' | '.join(cells)} | {final} | {diff} |")
    return "\n".join(lines)


def main() -> None:
    folders = [Path(a) for a in (sys.argv[1:] or DEFAULT)]
    print(table([f for f in folders if (f / "steps").is_dir()]))


if __name__ == "__main__":
    main()
