"""Benchmarks of the lcpose pipeline against the goals of issue 9.

    python -m benchmarks.run [--quick] [--only render,size,...] [--out docs/benchmarks.md]

One module per benchmark (`bench_<name>.py`), each with `NAME`, `TITLE`, `GOAL` and
`run(ctx) -> Result`. Every benchmark measures a ratio side by side, in the same process and
run, on the same data, plus the absolute figures it is made of; `benchmarks.run` prints each
result and writes `docs/benchmarks.md` (machine header, a summary table, then one section per
benchmark with its tables and a paragraph generated from the measured numbers).

This module holds what the benchmarks share: the result types, timing helpers, and the
`Context` that creates (once per run, under a temporary folder) the data several benchmarks
use: synthetic datasets, GT stores, teachers. Nothing here writes outside that folder.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COCO_MINI = REPO.parent / "shared" / "data" / "coco-mini"


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Table:
    """One table of a benchmark's section: a title, column names and formatted rows."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def text(self) -> str:
        cells = [list(self.columns)] + [[fmt(v) for v in row] for row in self.rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.columns))]
        out = [self.title] if self.title else []
        for r in cells:
            out.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        return "\n".join(out)


@dataclass
class Result:
    """What one benchmark measured.

    Attributes:
        name: short name (`--only` key and section anchor).
        title: section heading.
        ratio: the headline ratio (see `ratio_what`), measured side by side; None if the
            benchmark could not run (`notes` says why).
        ratio_what: what the ratio divides, e.g. "build samples/s / bare forward samples/s".
        goal: the goal as text, e.g. ">= 0.9".
        met: whether the goal is met (None when there is no numeric goal).
        tables: the absolute figures.
        notes: generated prose (numbers filled in from the measurement).
        extra: further headline ratios [(label, value, goal, met)] shown in the summary.
        seconds: wall time of the benchmark; load: 1-minute load average before and after.
    """

    name: str
    title: str
    ratio: float | None
    ratio_what: str
    goal: str
    met: bool | None
    tables: list[Table] = field(default_factory=list)
    notes: str = ""
    extra: list[tuple[str, float | None, str, bool | None]] = field(default_factory=list)
    seconds: float = 0.0
    load: tuple[float, float] = (0.0, 0.0)
    run_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_plain))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Result:
        return cls(
            **{
                **d,
                "tables": [Table(t["title"], tuple(t["columns"]), [tuple(r) for r in t["rows"]])
                           for t in d["tables"]],
                "extra": [tuple(e) for e in d["extra"]],
                "load": tuple(d["load"]),
            }
        )  # fmt: skip


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers for json."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def fmt(value: Any) -> str:
    """Numbers with 3 significant digits (integers as they are), everything else as str."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == 0 or not np.isfinite(v):
            return f"{v:g}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 0.01:
            return f"{v:.3g}"
        return f"{v:.2e}"
    return str(value)


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "no goal"}[met]


# ---------------------------------------------------------------------------------------------
# Timing


def loadavg() -> float:
    return os.getloadavg()[0]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(
    fns: dict[str, Callable[[], Any]], *, rounds: int, min_seconds: float = 0.0
) -> dict[str, np.ndarray]:
    """Seconds per call of each function, called in turn A, B, A, B, ... after one warm-up.

    Interleaving makes a neighbour's load on this shared machine hit every contender alike,
    so per-round ratios are fair even when absolute times drift. Runs at least `rounds`
    rounds and until `min_seconds` have passed.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    while len(times[next(iter(fns))]) < rounds or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            times[name].append(timed(fn)[0])
    return {name: np.asarray(t) for name, t in times.items()}


def median_ratio(num: np.ndarray, den: np.ndarray) -> float:
    """Median over rounds of num[i] / den[i] (robust to a neighbour's burst in one round)."""
    return float(np.median(np.asarray(num) / np.asarray(den)))


# ---------------------------------------------------------------------------------------------
# Subprocesses with their peak memory


_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[1:]).returncode\n"
    "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
    "sys.exit(rc)\n"
)


def run_child(argv: list[str], *, env: dict[str, str] | None = None) -> tuple[dict, float, int]:
    """Run `python argv...` in a fresh process; returns (its last JSON line, wall s, peak RSS).

    The command runs under a small wrapper process whose `RUSAGE_CHILDREN` then covers
    exactly that one command, so the peak resident set size (bytes) is the command's own,
    not the maximum over everything this benchmark process ever started.
    """
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _WRAPPER, sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    rss = next(int(line.split()[1]) for line in reversed(lines) if line.startswith("MAXRSS_KB"))
    report = next(
        (json.loads(line) for line in reversed(lines) if line.startswith("{")), {"lines": lines}
    )
    # Linux reports ru_maxrss in KiB
    return report, wall, rss * 1024


def self_maxrss() -> int:
    """Peak resident set size of this process so far, bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---------------------------------------------------------------------------------------------
# Shared data, made once per run under a temporary folder


def subset_annotations(ann_file: Path, num_images: int, out: Path) -> Path:
    """Write a COCO file with the first `num_images` images of `ann_file` (same image folder)."""
    data = json.loads(ann_file.read_text())
    images = data["images"][:num_images]
    keep = {im["id"] for im in images}
    data["images"] = images
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data))
    return out


def dir_bytes(path: Path) -> int:
    """Bytes of every file under `path` (what the store takes on disk, before block rounding)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


class Context:
    """Run-wide settings and the data benchmarks share, created lazily and cached.

    Attributes:
        quick: smaller sizes everywhere (the smoke test and a first look).
        tmp: temporary folder of this run; everything is written below it.
        coco: COCO-MINI root, or None when the shared data is absent.
    """

    def __init__(self, *, quick: bool, tmp: Path, coco: Path | None = COCO_MINI) -> None:
        self.quick = quick
        self.tmp = Path(tmp)
        self.coco = coco if coco is not None and (coco / "annotations").is_dir() else None
        self._cache: dict[Any, Any] = {}

    def dir(self, name: str) -> Path:
        """A fresh, empty folder `tmp/name` (removed first if a benchmark ran before)."""
        path = self.fresh(name)
        path.mkdir(parents=True)
        return path

    def fresh(self, name: str) -> Path:
        """`tmp/name`, removed if it exists (a work folder reused with --tmp)."""
        path = self.tmp / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        return path

    def once(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    # -- synthetic data -------------------------------------------------------------------

    def synth(self, num_images: int) -> tuple[Path, Path]:
        """(annotation file, image folder) of `num_images` synthetic 128 px training images,
        made with `lcdata synth` (seed 0); a smaller request reuses a larger set's prefix."""
        for key, made in list(self._cache.items()):
            if isinstance(key, tuple) and key[0] == "synth" and key[1] >= num_images:
                n = key[1]
                ann, images = made
                if n == num_images:
                    return made
                sub = self.tmp / f"synth-{n}" / f"subset-{num_images}.json"
                return subset_annotations(ann, num_images, sub), images

        def make() -> tuple[Path, Path]:
            out = self.fresh(f"synth-{num_images}")
            cmd = [sys.executable, "-m", "lcdata", "synth", str(out), "--quiet"]
            cmd += ["--train", str(num_images), "--val", "0", "--seed", "0"]
            subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
            return out / "annotations" / "person_keypoints_train.json", out / "train"

        return self.once(("synth", num_images), make)

    def synth_gt_store(self, num_images: int, *, views: int = 2, per_shard: int = 64) -> Path:
        """GT store of `synth(num_images)` at SYNTH_RENDER (128 px, stride 4), K views."""
        from lcdata.build.gt import BuildConfig, build_gt_store
        from lcdata.config import SYNTH_RENDER

        def make() -> Path:
            ann, images = self.synth(num_images)
            out = self.fresh(f"synth-gt-{num_images}-{views}-{per_shard}")
            build = BuildConfig(views_per_image=views, samples_per_shard=per_shard)
            build_gt_store(ann, images, out, render=SYNTH_RENDER, build=build, progress=False)
            return out

        return self.once(("synth-gt", num_images, views, per_shard), make)

    def coco_gt_store(self, *, views: int, per_shard: int) -> Path:
        """GT store of COCO-MINI train at the default render (368 px, stride 8)."""
        from lcdata.build.gt import BuildConfig, build_gt_store

        def make() -> Path:
            assert self.coco is not None
            ann = self.coco / "annotations" / "person_keypoints_train2017.json"
            out = self.fresh(f"coco-gt-{views}-{per_shard}")
            build = BuildConfig(views_per_image=views, samples_per_shard=per_shard)
            build_gt_store(ann, self.coco / "train2017", out, build=build, progress=False)
            return out

        return self.once(("coco-gt", views, per_shard), make)

    # -- teachers -------------------------------------------------------------------------

    def random_teacher(self, *, width: int, num_stages: int, head_std: float) -> Path:
        """A randomly initialised `tiny` (128 px, stride 4) exported as a teacher.

        `trainer.models` starts output heads at zero (constant output), so the heads get
        Normal(0, head_std) weights here: the outputs are then noisy maps of a plausible
        magnitude, a pessimistic stand-in for a teacher (noise compresses badly).
        """

        def make() -> Path:
            import torch

            from lcdata.config import SYNTH_RENDER
            from lcdata.labels.skeleton import CMU_SKELETON
            from trainer.export import export_teacher
            from trainer.models import build_model

            torch.manual_seed(0)
            stride = SYNTH_RENDER.stride
            model = build_model("tiny", CMU_SKELETON, stride, width=width, num_stages=num_stages)
            with torch.no_grad():
                for stage in model.stages:
                    for head in ("heatmaps", "pafs"):
                        stage[head].weight.normal_(0.0, head_std)
            path = self.tmp / f"tiny-random-w{width}-s{num_stages}.pt2"
            export_teacher(
                model.eval(),
                skeleton=CMU_SKELETON,
                stride=stride,
                input_size=SYNTH_RENDER.input_size,
                model_name="tiny",
                out_path=path,
            )
            return path

        return self.once(("random-teacher", width, num_stages, head_std), make)

    def trained_teacher(self, *, steps: int) -> tuple[Path, dict[str, float]]:
        """The default `tiny` (128 px, stride 4) trained `steps` Adam steps (batch 8, lr 1e-3)
        on a synthetic GT store, exported as a teacher; also returns its training stats."""

        def make() -> tuple[Path, dict[str, float]]:
            import torch

            from lcdata.store.training import open_training_store
            from trainer.data import StoreStream, make_loader, to_device
            from trainer.export import export_teacher
            from trainer.losses import stage_losses
            from trainer.models import build_model, preprocess

            spec = open_training_store(self.synth_gt_store(self.synth_images_small))
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # stable on a shared 2-core machine
            torch.manual_seed(0)
            model = build_model("tiny", spec.skeleton, spec.stride)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            batches = make_loader(StoreStream(spec, batch_size=8, seed=0), workers=0)
            losses = []
            t0 = time.perf_counter()
            for _ in range(steps):
                images, masks, heatmaps, pafs = to_device(next(batches))
                loss, _ = stage_losses(model(preprocess(images)), heatmaps, pafs, masks)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            train_s = time.perf_counter() - t0
            torch.set_num_threads(threads)
            path = self.tmp / f"tiny-trained-{steps}.pt2"
            export_teacher(
                model.eval(),
                skeleton=spec.skeleton,
                stride=spec.stride,
                input_size=spec.input_size,
                model_name="tiny",
                out_path=path,
            )
            k = max(1, steps // 10)
            stats = {
                "steps": steps,
                "seconds": train_s,
                "loss_first": float(np.mean(losses[:k])),
                "loss_last": float(np.mean(losses[-k:])),
            }
            return path, stats

        return self.once(("trained-teacher", steps), make)

    @property
    def synth_images_small(self) -> int:
        """Synthetic images of the per-benchmark sets (the scaling benchmark makes its own)."""
        return 150 if self.quick else 400
