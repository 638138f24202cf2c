"""Synthetic stores for tests: GT stores of the clean and the noisy labels, and a perfect
teacher (the clean truth rendered into every stored crop of a store)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from lcdata.build.gt import BuildConfig, build_gt_store
from lcdata.config import SYNTH_RENDER
from lcdata.correction.clean import render_clean
from lcdata.store.codec import quantize
from lcdata.store.layout import (
    StoreInfo,
    create_maps,
    create_progress,
    mark_block_done,
    num_blocks,
    store_attrs,
    update_attrs,
)
from lcdata.synth.scene import SynthConfig, generate_split


def clean_and_noisy_stores(root: Path, *, seed: int) -> dict[str, Path]:
    """40 synthetic training images under `root` and GT stores (one view each) built from
    their clean and their noisy labels: {"clean", "clean_store", "noisy_store", "root"}."""
    generate_split(root, "train", 40, cfg=SynthConfig(), seed=seed)
    ann = root / "annotations"
    out = {"clean": ann / "person_keypoints_train_clean.json", "root": root}
    build = BuildConfig(views_per_image=1, samples_per_shard=16, seed=0)
    for name, file in (("clean", out["clean"]), ("noisy", ann / "person_keypoints_train.json")):
        out[f"{name}_store"] = root / f"{name}.zarr"
        build_gt_store(
            file, root / "train", out[f"{name}_store"], render=SYNTH_RENDER, build=build,
            workers=0, progress=False,
        )  # fmt: skip
    return out


def add_oracle_teacher(cache: Path, clean: Path, *, field: str = "keypoints_all") -> None:
    """Write `teacher/*` of `cache`: the maps of the clean file's persons (`field`, every true
    point by default) moved into each crop, as a teacher pass would store them."""
    info = StoreInfo.read(cache)
    skeleton, render = info.skeleton, info.render
    persons: dict[int, list[dict]] = {}
    for ann in json.loads(Path(clean).read_text())["annotations"]:
        if not ann.get("iscrowd") and field in ann:
            persons.setdefault(int(ann["image_id"]), []).append({"keypoints": ann[field]})
    group = zarr.open_group(str(cache), mode="r+")
    attrs = store_attrs(group)
    create_maps(group, "teacher", attrs)
    n, per = info.num_samples, info.samples_per_block
    create_progress(group, "teacher", num_blocks(n, per))
    ids, affines = group["meta/image_id"][:], group["meta/affine"][:]
    flipped = group["meta/flipped"][:]
    for block in range(num_blocks(n, per)):
        start, stop = block * per, min((block + 1) * per, n)
        heat = np.empty((stop - start, *group["gt/heatmaps"].shape[1:]), np.float32)
        pafs = np.empty((stop - start, *group["gt/pafs"].shape[1:]), np.float32)
        for i in range(start, stop):
            heat[i - start], pafs[i - start] = render_clean(
                persons.get(int(ids[i]), []), affines[i], bool(flipped[i]),
                render=render, skeleton=skeleton,
            )  # fmt: skip
        group["teacher/heatmaps"][start:stop] = quantize(heat)
        group["teacher/pafs"][start:stop] = quantize(pafs)
        mark_block_done(group, "teacher", block)
    update_attrs(group, stages=["gt", "teacher"], teacher={"path": "oracle", "sha256": "0" * 64})
