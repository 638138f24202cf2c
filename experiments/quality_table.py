"""The label-quality table of docs/correction.md, from the committed run summaries.

    python -m experiments.quality_table [RESULTS_DIR] [--level 0.10]

For every store scored by a `quality/<name>` step (`lcdata score-labels`) on the data sets
of one defect level: label-quality AP, AP50 and AR, and for target stores the `lcdata correct
--clean` analytics (missing heatmap / PAF mass recovered, mass added where the truth has
none), each mean ± std over the seeds found.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.protocol import METHODS

STORES = {
    "baseline": "GT (noisy labels)",
    "teacher": "teacher maps",
    "teacher_tta_flip": "teacher maps, flip-TTA",
    "teacher_tta_flip_scales0.8-1.25": "teacher maps, flip+zoom-TTA",
}


def fmt(values: list[float], scale: float = 100.0, suffix: str = "") -> str:
    """'m ± s' (sample std) of the values x scale, 'm' for one, '' for none."""
    if not values:
        return ""
    v = scale * np.asarray(values, np.float64)
    spread = f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else ""
    return f"{v.mean():.1f}{spread}{suffix}"


def rows(results: Path, level: float) -> list[list[str]]:
    """One row per scored store: the GT and teacher maps first, then the rows of METHODS."""
    prefix = f"p{level:.2f}_q{level:.2f}_s"
    found: dict[str, dict[int, tuple[dict, dict | None]]] = {}
    for marker in sorted((results / "steps").glob(f"{prefix}*__quality__*.json")):
        group, _, name = marker.stem.split("__")
        seed = int(group.rsplit("_s", 1)[1])
        metrics = json.loads(marker.read_text())["outputs"]["metrics"]
        target = results / "steps" / f"{group}__target__{name}.json"
        truth = None
        if target.is_file():
            truth = json.loads(target.read_text())["outputs"]["analytics"].get("truth")
        found.setdefault(name, {})[seed] = (metrics, truth)
    order = [*STORES, *METHODS]
    out = []
    for name in sorted(found, key=lambda n: (order.index(n) if n in order else len(order), n)):
        seeds = found[name]
        label = STORES.get(name) or (METHODS[name].label if name in METHODS else name)
        cells = [label, ",".join(str(s) for s in sorted(seeds))]
        cells += [fmt([m[k] for m, _ in seeds.values()]) for k in ("AP", "AP50", "AR")]
        truths = [t for _, t in seeds.values() if t]
        for kind in ("heatmaps", "pafs"):
            cells.append(fmt([t[kind]["recovered_fraction"]["total"] for t in truths], suffix="%"))
            cells.append(fmt([t[kind]["false_fraction"] for t in truths], suffix="%"))
        out.append(cells)
    return out


def table(results: Path, level: float) -> str:
    header = ["store", "seeds", "label-quality AP", "AP50", "AR", "heatmaps recovered",
              "heatmap false additions", "PAFs recovered", "PAF false additions"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results, level)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="experiments/results/aug_fresh")
    parser.add_argument("--level", type=float, default=0.1, help="p = q of the data sets")
    args = parser.parse_args()
    print(table(Path(args.results), args.level))


if __name__ == "__main__":
    main()
