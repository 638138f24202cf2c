"""Disk space: estimate what a stage will write, refuse early, and turn write errors into one line.

A stage (GT build, teacher pass, correction) writes the bulk of a store block by block. Its
size is not a constant: the compressed bytes of a block depend on the crops (COCO photos
against flat synthetic scenes), the maps and the codecs. So the estimate encodes one real
block of the stage, in memory, with the destination arrays' own chunking and codecs, and
scales it by the samples still to write. Written data never shrinks the free space twice:
blocks already on disk are not counted.

Write errors (disk full, quota, I/O error, read-only mount) raised anywhere inside a stage's
writers become one `LcposeError` naming the store and the cause. Nothing is marked done
before it is on disk (zarr writes each chunk file atomically and progress flags follow
their block), so the store stays incomplete and `--resume` finishes it once space is free.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import MemoryStore

from lcdata.errors import LcposeError
from lcdata.store.layout import block_range

MARGIN = 1.05
"""Free space wanted per estimated byte: estimates of one block are not exact (the blocks of
COCO differ by some percent), and a filesystem with 0 bytes left cannot even write
metadata."""


class NotEnoughSpace(LcposeError):
    """The space check refused a stage before it wrote any block."""


@dataclass(frozen=True)
class SpaceEstimate:
    """What one stage will add to a store.

    Attributes:
        store: the store written.
        stage: "gt", "teacher", "gt + teacher" or "correct <mode>".
        total_bytes: estimated bytes still to write.
        samples: samples the stage still has to write.
        free_bytes: free space of the store's filesystem now.
        store_bytes: what the store holds on disk already (metadata, written blocks), so
            that `store_bytes + total_bytes` is its size when the stage is done.
    """

    store: Path
    stage: str
    total_bytes: int
    samples: int
    free_bytes: int
    store_bytes: int = 0

    @property
    def fits(self) -> bool:
        return self.total_bytes * MARGIN <= self.free_bytes

    def line(self) -> str:
        """One line for the user, e.g. `s.zarr: gt needs about 1.2 GB for 480 samples
        (2.5 MB each, measured on one block); 40.1 GB free`."""
        each = self.total_bytes / max(1, self.samples)
        return (
            f"{self.store}: {self.stage} needs about {human_bytes(self.total_bytes)} for "
            f"{self.samples} samples ({human_bytes(each)} each, measured on one block); "
            f"{human_bytes(self.free_bytes)} free"
        )

    @property
    def final_bytes(self) -> int:
        """The store's estimated size once the stage is done."""
        return self.store_bytes + self.total_bytes


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as `df -H` and disk vendors count)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def encoded_bytes(block: Mapping[str, tuple[zarr.Array, np.ndarray]], *, fs_block: int = 1) -> int:
    """Disk bytes that writing one block takes, encoded in memory.

    Every array of a block is one chunk file, and a filesystem allocates whole blocks of
    `fs_block` bytes per file; the block's progress flag is one more file.

    Args:
        block: name -> (like, data): `data` (B, ...) holds the block's samples and `like`
            is the store array it goes to, or one with the same chunks and codecs (a teacher
            or target array is laid out as the GT array of its kind, so a stage can be
            measured before it creates its arrays).
        fs_block: allocation unit of the target filesystem (`fs_block_size`), bytes.
    """
    total = fs_block  # progress/<stage>/c/<block>
    for like, data in block.values():
        probe = zarr.create_array(
            store=MemoryStore(),
            shape=data.shape,
            chunks=(like.chunks[0], *data.shape[1:]),
            dtype=like.dtype,
            filters=like.filters,
            serializer=like.serializer,
            compressors=like.compressors,
            fill_value=like.fill_value,
            config={"write_empty_chunks": True},
        )
        probe[:] = data
        # the chunks only: the store's metadata is written once, not per block
        meta = probe.metadata.to_buffer_dict(_PROTOTYPE)["zarr.json"]
        total += -(-(probe.nbytes_stored() - len(meta)) // fs_block) * fs_block
    return total


def fs_block_size(path: Path) -> int:
    """Allocation unit in bytes of the filesystem holding `path` (or its nearest parent)."""
    return os.statvfs(_existing(path)).f_frsize or 4096


def _existing(path: Path) -> Path:
    here = Path(path).resolve()
    while not here.exists():
        here = here.parent
    return here


def pending_samples(blocks: list[int], num_samples: int, samples_per_block: int) -> int:
    """Samples held by `blocks` (the last block of a store may be short)."""
    ranges = (block_range(b, num_samples, samples_per_block) for b in blocks)
    return sum(stop - start for start, stop in ranges)


def disk_bytes(path: Path) -> int:
    """Bytes the files under `path` occupy on disk (allocated blocks, as `du` counts)."""
    path = Path(path)
    if not path.exists():
        return 0
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def free_bytes(path: Path) -> int:
    """Free bytes of the filesystem that holds `path` (or would: its nearest existing parent)."""
    return shutil.disk_usage(_existing(path)).free


def check_space(
    out: Path,
    stage: str,
    block: Mapping[str, tuple[zarr.Array, np.ndarray]],
    *,
    pending_samples: int,
    check: bool = True,
    report: bool = True,
) -> SpaceEstimate:
    """Estimate a stage's bytes from one encoded block and refuse when they will not fit.

    Args:
        out: the store's path (for messages and the filesystem).
        stage: what is written, for the message.
        block: name -> (destination array or its twin, one block's samples as the stage
            writes them); see `encoded_bytes`.
        pending_samples: samples the stage has left to write (this block's included).
        check, report: see `report_space`.
    """
    samples = len(next(iter(block.values()))[1])
    estimate = SpaceEstimate(
        store=out,
        stage=stage,
        total_bytes=encoded_bytes(block, fs_block=fs_block_size(out))
        * pending_samples
        // max(1, samples),
        samples=pending_samples,
        free_bytes=free_bytes(out),
        store_bytes=disk_bytes(out),
    )
    return report_space(estimate, check=check, report=report)


def report_space(estimate: SpaceEstimate, *, check: bool, report: bool) -> SpaceEstimate:
    """Print the estimate line (stderr, with `report`) and refuse when it will not fit.

    Args:
        check: False (`--no-space-check`) reports the estimate but never refuses.

    Raises:
        LcposeError: the estimate (with `MARGIN`) exceeds the free space and `check`.
    """
    if report:
        print(estimate.line(), file=sys.stderr)
    if check and not estimate.fits:
        raise NotEnoughSpace(
            f"{estimate.store}: not enough disk space for {estimate.stage}: needs about "
            f"{human_bytes(estimate.total_bytes)}, {human_bytes(estimate.free_bytes)} free; "
            f"free space or write elsewhere (--no-space-check to try anyway)"
        )
    return estimate


@contextmanager
def removed_if_refused(out: Path, *, new: bool) -> Iterator[None]:
    """Remove a store this stage created when the space check refuses it: a refusal leaves
    the disk as it was, and the same command (or `--no-space-check`) can run again."""
    try:
        yield
    except NotEnoughSpace:
        if new:
            shutil.rmtree(out, ignore_errors=True)
        raise


@contextmanager
def write_errors(out: Path, stage: str) -> Iterator[None]:
    """Turn an `OSError` raised while a stage writes `out` into one `LcposeError`.

    The message names the store, the stage and the cause (disk full gets its own words) and
    says how to finish: the stage's blocks on disk stay marked, the rest pending.
    """
    try:
        yield
    except OSError as err:
        cause = "disk full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else "write error"
        detail = err.strerror or str(err)
        where = f" ({err.filename})" if err.filename else ""
        raise LcposeError(
            f"{out}: {stage} stopped, {cause}: {detail}{where}; the store is incomplete and "
            f"resumable: free space, then rerun with --resume"
        ) from None


def _prototype():  # zarr's default CPU buffer prototype, looked up once
    from zarr.core.buffer import default_buffer_prototype

    return default_buffer_prototype()


_PROTOTYPE = _prototype()
