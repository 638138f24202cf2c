"""Final training loss with bf16 autocast against fp32 (the figure quoted in docs/training.md).

    python benchmarks/amp_loss.py [--steps 200] [--seeds 0,1] [--out DIR]

The synthetic benchmark's training split (300 images, data seed 0, 128 px, stride 4), one
view per image, and the default `tiny` model trained `--steps` steps at batch 8, lr 1e-3
(no decay), once in fp32 and once with `--amp bf16`, from the same seed: the same weights at
step 0 and the same batches. Reported: the mean loss of the last 20 steps of each run and
the wall time, for each seed.
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
import time
from pathlib import Path

import torch

from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.config import PRESETS
from lcdata.synth.scene import SynthConfig, generate
from trainer.config import TrainConfig
from trainer.fit import fit


def _last_loss(run: Path, last: int) -> float:
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tail = [r for r in rows if int(r["step"]) > int(rows[-1]["step"]) - last]
    return sum(float(r["loss"]) for r in tail) / len(tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp(prefix="amp-loss-"))
    data, store = root / "synth", root / "gt.zarr"
    if not store.exists():
        generate(data, num_train=300, num_val=4, cfg=SynthConfig(), seed=0, progress=False)
        build_gt_store(
            data / "annotations" / "person_keypoints_train.json",
            data / "train",
            store,
            render=PRESETS["synth"],
            build=BuildConfig(views_per_image=1, seed=0),
            progress=False,
        )
    print(
        f"machine: {platform.machine()}, {platform.processor() or '?'}, torch {torch.__version__}"
    )
    print("| seed | fp32 loss (last 20 steps) | bf16 loss | bf16 / fp32 | fp32 s | bf16 s |")
    print("|---|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        losses, secs = {}, {}
        for amp in ("off", "bf16"):
            cfg = TrainConfig(
                steps=args.steps, batch_size=8, lr=1e-3, lr_decay_at=1.0, seed=seed, amp=amp,
                workers=0, lanes=1, checkpoint_every=args.steps, log_every=1, device="cpu",
            )  # fmt: skip
            run = root / f"s{seed}_{amp}"
            t0 = time.perf_counter()
            fit(cfg, store, run, resume=True, progress=False)
            secs[amp] = time.perf_counter() - t0
            losses[amp] = _last_loss(run, 20)
        print(
            f"| {seed} | {losses['off']:.2f} | {losses['bf16']:.2f} | "
            f"{losses['bf16'] / losses['off']:.3f} | {secs['off']:.0f} | {secs['bf16']:.0f} |"
        )


if __name__ == "__main__":
    main()
