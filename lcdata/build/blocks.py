"""Whole-block writes of a cache store's arrays, each followed by the block's progress mark.

A block is the B samples of one zarr chunk. Writing whole blocks only matters: writing part
of a chunk would read, modify and rewrite it, and a block marked done in `progress/<stage>`
is complete on disk, which is what makes every build stage resumable after a kill. This
module does not load torch, so the one-pass build's worker processes can import it.
"""

from __future__ import annotations

import numpy as np
import zarr

from lcdata.errors import LcposeError
from lcdata.store.layout import mark_block_done, write_samples

GT_DESTINATIONS = {
    "images": "images",
    "masks": "masks",
    "heatmaps": "gt/heatmaps",
    "pafs": "gt/pafs",
    "image_id": "meta/image_id",
    "affine": "meta/affine",
    "flipped": "meta/flipped",
    "view": "meta/view",
    "keypoints": "meta/keypoints",
    "num_persons": "meta/num_persons",
}
"""Stacked-sample key (`gt.make_sample`) -> the store array it is written to."""


def write_gt_block(group: zarr.Group, block: int, per: int, arrays: dict[str, np.ndarray]) -> None:
    """Write one whole block of every per-sample array, then mark it done in progress/gt.

    Args:
        block: block index; its samples start at block * per.
        per: B, samples per block.
        arrays: stacked samples of the block (keys of `GT_DESTINATIONS`); arrays the store
            does not have (an older layout) are skipped.
    """
    start = block * per
    for key, dest in GT_DESTINATIONS.items():
        if dest in group:
            data = arrays[key]
            if key == "keypoints":  # padded to the block's most persons, then the store's
                data = pad_persons(data, group[dest].shape[1])
            write_samples(group, dest, start, data)
    mark_block_done(group, "gt", block)


def pad_persons(keypoints: np.ndarray, max_persons: int) -> np.ndarray:
    """(B, P, K, 3) -> (B, max_persons, K, 3), zero rows appended (v = 0: never drawn)."""
    b, p, k, _ = keypoints.shape
    out = np.zeros((b, max_persons, k, 3), np.float32)
    out[:, :p] = keypoints
    return out


def write_teacher_block(
    group: zarr.Group, block: int, start: int, heatmaps: np.ndarray, pafs: np.ndarray
) -> None:
    """Write one whole block of quantised teacher outputs (float16), then mark it done in
    progress/teacher.

    Args:
        heatmaps: (B, K+1, h, h) float16; pafs: (B, 2L, h, h) float16.

    Raises:
        LcposeError: values beyond float16's range (inf after quantising) or NaN.
    """
    for name, q in (("heatmaps", heatmaps), ("pafs", pafs)):
        # inf and nan are the float16 values with all exponent bits set (an integer test:
        # numpy's float16 isfinite is not vectorised)
        if ((q.view(np.uint16) & 0x7C00) == 0x7C00).any():
            raise LcposeError(
                f"block {block}: teacher {name} exceed the float16 range of the store "
                f"(|x| > {float(np.finfo(np.float16).max):.0f}, or NaN)"
            )
    write_samples(group, "teacher/heatmaps", start, heatmaps)
    write_samples(group, "teacher/pafs", start, pafs)
    mark_block_done(group, "teacher", block)


def write_teacher_block_at(
    out: str, block: int, start: int, heatmaps: np.ndarray, pafs: np.ndarray
) -> None:
    """`write_teacher_block` into the store at `out` (for a worker process of the one-pass
    build, which has no open group)."""
    write_teacher_block(zarr.open_group(out, mode="r+"), block, start, heatmaps, pafs)


def read_block_images(out: str, start: int, stop: int) -> np.ndarray:
    """(B, S, S, 3) uint8 crops of samples [start, stop) of a written store."""
    return zarr.open_group(out, mode="r")["images"][start:stop]
