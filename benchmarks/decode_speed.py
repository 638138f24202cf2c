"""Decoder speed on this machine (numbers quoted in docs/decoding.md).

    python benchmarks/decode_speed.py [--coco ../shared/data/coco-mini] [--min-seconds 1]

1. COCO-MINI val: the oracle maps of every image with labelled persons, rendered at the
   single-scale protocol (height 368, stride 8); the time of `decode` alone (rendering and
   COCO bookkeeping excluded) per image, and of the whole oracle evaluation (render +
   decode + COCOeval) per image.
2. Growth with the number of persons: N template persons (100 px high) on a jittered grid
   of a 736 x 736 input (92 x 92 cells, stride 8), N = 1, 5, 20, 50, decode time per image.
   Also with `DecodeConfig(share_parts=False, merge_fragments=0)` to show what steps 5-6
   cost.

Each timing repeats the call until `--min-seconds` have passed (at least 3 calls) and
reports the median and the fastest call: the machine may be shared, so the fastest call is
the best estimate of the decoder's own cost. Single-threaded numpy/OpenCV work dominates.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from lcdata.config import RenderConfig
from lcdata.labels.decode import DecodeConfig, decode
from lcdata.labels.render import render_heatmaps, render_pafs
from lcdata.labels.scoring import evaluate_results
from lcdata.labels.skeleton import CMU_SKELETON
from trainer.evaluate import oracle_maps, run_oracle, select_records
from trainer.infer import model_geometry

DEFAULT_COCO = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini"

# COCO-17 standing person, (x, y) in units of body height (as in tests/test_decode.py)
TEMPLATE = np.array(
    [
        (0.00, 0.08), (0.02, 0.06), (-0.02, 0.06), (0.05, 0.07), (-0.05, 0.07),
        (0.12, 0.20), (-0.12, 0.20), (0.16, 0.37), (-0.16, 0.37), (0.18, 0.52),
        (-0.18, 0.52), (0.08, 0.53), (-0.08, 0.53), (0.09, 0.75), (-0.09, 0.75),
        (0.10, 0.97), (-0.10, 0.97),
    ],
    np.float32,
)  # fmt: skip


def _time(fn, min_seconds: float) -> tuple[float, float]:
    """Median and fastest seconds per call (at least 3 calls, after one warm-up)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), min(times)


def coco_mini(root: Path, min_seconds: float) -> None:
    ann = root / "annotations" / "person_keypoints_val2017.json"
    records = [r for r in select_records(ann, None) if len(r.keypoints)]
    cfg, sk, dcfg = RenderConfig(), CMU_SKELETON, DecodeConfig()
    maps = []
    for rec in records:
        geo = model_geometry((rec.height, rec.width), cfg.input_size, cfg.stride)
        maps.append(oracle_maps(rec.keypoints, geo, cfg=cfg, skeleton=sk))

    def decode_all() -> None:
        for heat, paf in maps:
            decode(heat, paf, skeleton=sk, stride=cfg.stride, cfg=dcfg)

    def oracle_all() -> None:
        results = run_oracle(records, render=cfg, skeleton=sk, cfg=dcfg)
        evaluate_results(ann, results)

    n = len(records)
    persons = sum(len(r.keypoints) for r in records)
    cells = np.mean([h.shape[1] * h.shape[2] for h, _ in maps])
    print(f"COCO-MINI val: {n} images with {persons} labelled persons, maps ~{cells:.0f} cells")
    print(f"{'what':<40} {'median ms/img':>14} {'fastest ms/img':>15}")
    for name, fn in (
        ("decode only", decode_all),
        ("oracle eval (render+decode+COCOeval)", oracle_all),
    ):
        med, best = _time(fn, min_seconds)
        print(f"{name:<40} {1e3 * med / n:>14.2f} {1e3 * best / n:>15.2f}")


def synthetic(num_persons: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Maps of `num_persons` 100 px persons on a jittered 8 x 8 grid of a 736 px input."""
    cfg = RenderConfig(input_size=736)
    slots = rng.permutation(64)[:num_persons]
    tops = np.stack([slots % 8 * 92 + 46, slots // 8 * 92 - 2], axis=1).astype(np.float32)
    tops += rng.uniform(-6, 6, tops.shape).astype(np.float32)
    xy = TEMPLATE[None] * 100 + tops[:, None]
    coco = np.concatenate([xy, np.full((num_persons, 17, 1), 2, np.float32)], axis=2)
    parts = CMU_SKELETON.from_coco(coco)
    heat = render_heatmaps(parts, cfg=cfg, skeleton=CMU_SKELETON)
    paf = render_pafs(parts, cfg=cfg, skeleton=CMU_SKELETON)
    return heat, paf


def crowd(min_seconds: float) -> None:
    rng = np.random.default_rng(0)
    plain = DecodeConfig(share_parts=False, merge_fragments=0)
    print("\nN persons, 736 x 736 input (92 x 92 cells)")
    header = ("persons", "found", "median ms", "fastest ms", "no share/merge ms")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (8, 6, 10, 11, 18), strict=True)))
    for n in (1, 5, 20, 50):
        heat, paf = synthetic(n, rng)
        found = len(decode(heat, paf, skeleton=CMU_SKELETON, stride=8))

        def run(cfg: DecodeConfig, heat=heat, paf=paf) -> None:
            decode(heat, paf, skeleton=CMU_SKELETON, stride=8, cfg=cfg)

        med, best = _time(lambda: run(DecodeConfig()), min_seconds)
        _, best_plain = _time(lambda: run(plain), min_seconds)
        print(f"{n:>8} {found:>6} {1e3 * med:>10.2f} {1e3 * best:>11.2f} {1e3 * best_plain:>18.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", type=Path, default=DEFAULT_COCO, help="COCO-MINI root.")
    parser.add_argument("--min-seconds", type=float, default=1.0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(
        f"numpy {np.__version__}, opencv {cv2.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    if (args.coco / "annotations").is_dir():
        coco_mini(args.coco, args.min_seconds)
    else:
        print(f"COCO-MINI not found at {args.coco}: skipping its part")
    crowd(args.min_seconds)


if __name__ == "__main__":
    main()
