"""References between stores: fingerprints, a corrected store's source, dask views.

A store's identity is its metadata's fingerprint; a corrected store reads its inputs from
the cache store it names; dask views have one block per zarr chunk.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import dask.array as da
import zarr

from lcdata.errors import LcposeError
from lcdata.store.layout import read_attrs


def open_dask(path: str | Path, name: str) -> da.Array:
    """A dask view of one store array with one block per zarr chunk (a block of samples)."""
    arr = zarr.open_array(str(Path(path) / name), mode="r")
    chunks = arr.shards or arr.chunks
    return da.from_zarr(arr, chunks=chunks)


def store_fingerprint(path: str | Path) -> str:
    """SHA-256 of a store's metadata: every zarr.json, canonical JSON, in path order.

    The metadata holds the shapes, codecs and `lcpose` attributes, which record the
    annotation file's sha256, every render/augment/build setting, the seed and the teacher
    file's sha256: everything that determines the arrays' content, without reading the
    (possibly huge) chunks. Lock files and chunk data are not hashed.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for meta in sorted(root.rglob("zarr.json"), key=lambda p: p.relative_to(root).as_posix()):
        rel = meta.relative_to(root).as_posix()
        try:
            doc = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LcposeError(f"{meta}: unreadable zarr metadata ({err})") from None
        digest.update(rel.encode() + b"\0")
        digest.update(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\0")
    return digest.hexdigest()


def resolve_source_store(path: str | Path, attrs: dict[str, Any] | None = None) -> Path:
    """The cache store a corrected store reads its inputs (images, masks, gt/*, teacher/*) from.

    Tries `source_store` (absolute), then `correction.source_store_relative` (relative to
    the corrected store's own folder, for a pair of stores moved together), then checks the
    source's fingerprint against the one recorded at correction time.

    Raises:
        LcposeError: no source recorded, source not found, or source changed since.
    """
    path = Path(path)
    attrs = attrs if attrs is not None else read_attrs(path)
    absolute = attrs.get("source_store")
    if absolute is None:
        raise LcposeError(f"{path}: store records no source_store")
    info = attrs.get("correction", {})
    candidates = [Path(absolute)]
    if info.get("source_store_relative"):
        candidates.append((path / info["source_store_relative"]).resolve())
    for cand in candidates:
        if (cand / "zarr.json").is_file():
            want = info.get("source_sha256")
            if want and store_fingerprint(cand) != want:
                raise LcposeError(
                    f"{path}: source store {cand} changed since the correction (fingerprint "
                    f"differs); re-run lcdata correct"
                )
            return cand
    raise LcposeError(
        f"{path}: source store {absolute} not found (moved or deleted?); the corrected store "
        f"reads images, masks and meta from it (use --copy-inputs for a self-contained store)"
    )


def input_store(path: str | Path, name: str) -> Path:
    """The store holding array `name` for store `path`: itself, or its source store."""
    path = Path(path)
    group = zarr.open_group(str(path), mode="r")
    if name in group:
        return path
    attrs = read_attrs(path)
    if attrs.get("source_store") is None:
        raise LcposeError(f"{path}: store has no '{name}' array")
    src = resolve_source_store(path, attrs)
    if name not in zarr.open_group(str(src), mode="r"):
        raise LcposeError(f"{src}: store has no '{name}' array")
    return src
