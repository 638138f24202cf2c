"""Forward throughput of each model on this machine (numbers quoted in docs/models.md).

    python benchmarks/models_speed.py [--threads 2] [--batch 8] [--min-seconds 5] [--export]

For each configuration: eval mode, no_grad, a batch of random uint8 crops through
`preprocess` and the model (all stages), one warm-up pass, then timed passes until at least
`--min-seconds` have elapsed (at least 3); the fastest and the median pass are reported.
`--export` also exports each model with `export_teacher` to a temporary folder and reports
export time, file size and the exported program's throughput (via `load_teacher`).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lcdata.build.teacher import load_teacher
from lcdata.labels.skeleton import CMU_SKELETON
from trainer.export import export_teacher
from trainer.models import build_model, num_params, preprocess

# (model, stride, input size): each model at its natural input size
CONFIGS = (("cmu", 8, 368), ("small", 8, 368), ("tiny", 4, 128), ("tiny", 8, 368))


def _time(fn, min_seconds: float) -> tuple[float, float, int]:
    """Median and fastest seconds per call, and the number of timed calls (at least 3).

    The machine is shared, so the fastest call is the best estimate of what the model costs
    and the median says how much the neighbours took.
    """
    fn()  # warm-up: allocator, oneDNN primitive caches
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), min(times), len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--only", default=None, help="comma-separated model names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, batch {args.batch}"
    )
    rng = np.random.default_rng(0)
    for name, stride, size in CONFIGS:
        if args.only and name not in args.only.split(","):
            continue
        model = build_model(name, CMU_SKELETON, stride).eval()
        images = rng.integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        x = torch.from_numpy(images)

        def forward(model=model, x=x) -> None:
            with torch.no_grad():
                model(preprocess(x))

        median, best, runs = _time(forward, args.min_seconds)
        line = (
            f"{name:5s} stride {stride} input {size}: {num_params(model):>10,} params, "
            f"{args.batch / best:8.2f} samples/s best, {args.batch / median:8.2f} median "
            f"({runs} batches)"
        )
        if args.export:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{name}.pt2"
                start = time.perf_counter()
                export_teacher(
                    model,
                    skeleton=CMU_SKELETON,
                    stride=stride,
                    input_size=size,
                    model_name=name,
                    out_path=path,
                )
                export_s = time.perf_counter() - start
                teacher = load_teacher(path)
                _, exp_best, _ = _time(lambda t=teacher, im=images: t.predict(im), args.min_seconds)
                line += (
                    f"; export {export_s:.1f} s, {path.stat().st_size / 1e6:.1f} MB, "
                    f"exported {args.batch / exp_best:.2f} samples/s best"
                )
        print(line, flush=True)


if __name__ == "__main__":
    main()
