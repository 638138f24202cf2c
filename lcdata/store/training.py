"""A store as a training run reads it: the arrays of crops, masks and targets, checked.

The targets may live in a corrected store and the crops in its source store.
Everything here is plain paths and numbers (no open zarr objects), so a `StoreSpec` crosses
into reader threads and DataLoader worker processes safely; each reader opens the arrays
itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zarr

from lcdata.config import RenderConfig
from lcdata.errors import ConfigError, LcposeError
from lcdata.labels.skeleton import Skeleton
from lcdata.store.layout import StoreInfo, open_store, stage_complete, store_attrs
from lcdata.store.refs import resolve_source_store

TARGET_KINDS = ("auto", "gt", "teacher", "target")
"""`auto` = `target` when the store has corrected targets, else `gt`."""

_REQUIRED_ATTRS = ("num_samples", "samples_per_shard", "skeleton", "render")


@dataclass(frozen=True)
class OnlineTargets:
    """How a freshly augmented view rebuilds its targets instead of warping stored ones.

    Attributes:
        kind: "render" (GT maps rendered from the view's moved keypoints) or "correct"
            (that GT, the warped teacher maps of `heatmaps`/`pafs`, and the store's
            correction rule applied per view, `lcdata.correction.rules.targets`).
        mode, lam, background, gates: the correction of a corrected store ("correct" only).
    """

    kind: str
    mode: str = "gt"
    lam: float = 0.0
    background: str = "recompute"
    gates: tuple[float, float] | None = None

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `lcdata.correction.rules.targets` for this correction."""
        kw = {"mode": self.mode, "lam": self.lam, "background": self.background}
        return kw if self.gates is None else {**kw, "gates": self.gates}


@dataclass(frozen=True)
class StoreSpec:
    """A checked training store, as picklable paths and numbers (no open zarr objects).

    Attributes:
        path: the store.
        arrays: "images", "masks", "heatmaps", "pafs" -> (store directory, array path); images
            and masks may live in the `source_store`, heatmaps/pafs are `<target>/...`.
        target: the map group trained on: "gt", "teacher" or "target".
        info: the store's header (samples, block size, skeleton, render geometry, attrs).
        online: with fresh augmentation, how targets are rebuilt per view (then `arrays`
            also has "keypoints", and for "correct" heatmaps/pafs are the teacher's maps);
            None: the stored maps are warped.
    """

    path: Path
    arrays: dict[str, tuple[Path, str]]
    target: str
    info: StoreInfo
    online: OnlineTargets | None = None

    @property
    def num_samples(self) -> int:
        return self.info.num_samples

    @property
    def samples_per_block(self) -> int:
        return self.info.samples_per_block

    @property
    def skeleton(self) -> Skeleton:
        return self.info.skeleton

    @property
    def render(self) -> RenderConfig:
        return self.info.render

    @property
    def attrs(self) -> dict[str, Any]:
        return self.info.attrs

    @property
    def input_size(self) -> int:
        return self.render.input_size

    @property
    def stride(self) -> int:
        return self.render.stride

    @property
    def grid_size(self) -> int:
        return self.render.grid_size


def open_training_store(
    path: str | Path, *, target: str = "auto", augment: bool = False
) -> StoreSpec:
    """Check that a store can be trained on and say where each array is.

    Args:
        path: an lcdata store (GT store, or corrected store).
        target: one of `TARGET_KINDS`.
        augment: training draws fresh views: plan to rebuild the targets of each view from
            the stored keypoints (and teacher maps, for a corrected store) where the store
            has them (schema 2), see `OnlineTargets`.

    Raises:
        LcposeError: not an lcpose store, marked incomplete, missing the requested targets or
            their images/masks, unfinished maps, or arrays whose shapes disagree with the
            store's skeleton and render attributes.
    """
    path = Path(path)
    if not path.exists():
        raise LcposeError(f"{path}: store not found")
    if target not in TARGET_KINDS:
        raise ConfigError(
            "open_training_store",
            "target",
            f"must be one of {', '.join(TARGET_KINDS)}, got {target!r}",
        )
    group = open_store(path)  # foreign / newer / incomplete stores are refused here
    attrs = store_attrs(group)
    missing = [key for key in _REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise LcposeError(
            f"{path}: not a training store: attribute(s) {', '.join(missing)} missing"
        )
    if target == "auto":
        target = "target" if "target" in group else "gt"
        if target == "gt" and "gt" not in group:
            raise LcposeError(f"{path}: store has no training targets (neither target/* nor gt/*)")
    for name in ("heatmaps", "pafs"):
        if f"{target}/{name}" not in group:
            raise LcposeError(
                f"{path}: store has no '{target}' targets ({target}/{name} missing); "
                f"choose another target (--target)"
            )
    progress = f"progress/{target}"
    if progress in group and not stage_complete(group, target):
        raise LcposeError(f"{path}: the '{target}' maps are unfinished ({progress} has gaps)")

    arrays: dict[str, tuple[Path, str]] = {
        "heatmaps": (path, f"{target}/heatmaps"),
        "pafs": (path, f"{target}/pafs"),
    }
    source: zarr.Group | None = None
    for name in ("images", "masks"):
        if name in group:
            arrays[name] = (path, name)
            continue
        if source is None:
            source_path, source = _open_source(path, attrs)
        if name not in source:
            raise LcposeError(f"{path}: no '{name}' here nor in its source store {source_path}")
        arrays[name] = (source_path, name)

    info = StoreInfo.from_attrs(path, attrs)
    skeleton, render = info.skeleton, info.render
    n, s, h = info.num_samples, render.input_size, render.grid_size
    if n < 1:
        raise LcposeError(f"{path}: store holds no samples")
    want = {
        "images": (n, s, s, 3),
        "masks": (n, h, h),
        "heatmaps": (n, skeleton.num_heatmaps, h, h),
        "pafs": (n, skeleton.num_pafs, h, h),
    }
    for name, (where, key) in arrays.items():
        shape = tuple(zarr.open_array(str(where / key), mode="r").shape)
        if shape != want[name]:
            raise LcposeError(
                f"{where}: array {key} has shape {shape}, expected {want[name]} from the store's "
                f"num_samples, skeleton and render attributes"
            )
    online = _online_plan(path, group, attrs, target, arrays) if augment else None
    return StoreSpec(path=path, arrays=arrays, target=target, info=info, online=online)


def _online_plan(
    path: Path,
    group: zarr.Group,
    attrs: dict[str, Any],
    target: str,
    arrays: dict[str, tuple[Path, str]],
) -> OnlineTargets | None:
    """The `OnlineTargets` of a store, adding the arrays it reads to `arrays` (in place);
    None where the store cannot rebuild its targets (teacher targets, version-1 stores)."""
    if target == "gt":
        if "meta/keypoints" not in group:
            return None
        arrays["keypoints"] = (path, "meta/keypoints")
        return OnlineTargets("render")
    correction = attrs.get("correction") or {}
    if target != "target" or "mode" not in correction:
        return None
    if "meta/keypoints" in group:
        source_path, source = path, group
    else:
        source_path, source = _open_source(path, attrs)
    mode = correction["mode"]
    if "target/keypoints" in group:  # a keypoint-level correction: render its merged keypoints
        arrays["keypoints"] = (path, "target/keypoints")
        return OnlineTargets("render")
    if "meta/keypoints" not in source:
        return None
    arrays["keypoints"] = (source_path, "meta/keypoints")
    if mode == "gt":
        return OnlineTargets("render")
    # the source is the one corrected from: `resolve_source_store` checked its fingerprint,
    # which covers the teacher record
    arrays["heatmaps"] = (source_path, "teacher/heatmaps")
    arrays["pafs"] = (source_path, "teacher/pafs")
    gates = correction.get("gates")
    return OnlineTargets(
        "correct",
        mode=mode,
        lam=float(correction.get("lambda") or 0.0),
        background=correction.get("background") or "recompute",
        gates=None if gates is None else (float(gates[0]), float(gates[1])),
    )


def _open_source(path: Path, attrs: dict[str, Any]) -> tuple[Path, zarr.Group]:
    """The store a corrected store reads its images and masks from, checked."""
    ref = attrs.get("source_store")
    if not ref:
        raise LcposeError(f"{path}: store has no images/masks and no 'source_store' attribute")
    if not Path(ref).is_absolute():  # relative to the corrected store
        attrs = {**attrs, "source_store": str((path / ref).resolve())}
    source = resolve_source_store(path, attrs)
    group = open_store(source)
    theirs = store_attrs(group)
    for key in ("num_samples", "skeleton", "render"):
        if theirs.get(key) != attrs.get(key):
            raise LcposeError(
                f"{path}: source store {source} has a different '{key}' than this store"
            )
    return source, group


CONTENT_ATTRS = ("num_samples", "samples_per_shard", "skeleton", "render", "augment", "build")
"""Store attributes that decide the content of the crops, masks and GT maps (a later stage,
such as the teacher pass adding its arrays and attributes, changes none of them)."""


def training_identity(spec: StoreSpec) -> dict[str, Any]:
    """What a training run read, as a JSON-safe dict: the layout of every array it read
    (shape, dtype, chunks, codecs) and the attributes that decide their content.

    Two stores with the same identity give a run the same samples; `trainer fit --resume`
    compares this, so that a store a later stage added to (a teacher pass, say) still
    resumes, while another store, target or geometry does not.
    """
    attrs = spec.attrs
    content: dict[str, Any] = {k: attrs.get(k) for k in CONTENT_ATTRS}
    content["seed"] = attrs.get("seed")
    content["annotations_sha256"] = (attrs.get("source") or {}).get("annotations_sha256")
    if spec.target == "teacher":
        content["teacher_sha256"] = (attrs.get("teacher") or {}).get("sha256")
    if spec.target == "target":
        correction = dict(attrs.get("correction") or {})
        for path_key in ("source_store_relative",):  # where it lies is not what it holds
            correction.pop(path_key, None)
        content["correction"] = correction
    arrays = {}
    for name, (where, key) in sorted(spec.arrays.items()):
        meta = zarr.open_array(str(where / key), mode="r").metadata.to_dict()
        arrays[name] = {k: v for k, v in meta.items() if k not in ("attributes", "node_type")}
        arrays[name]["path"] = key
    identity = {"target": spec.target, "content": content, "arrays": arrays}
    # plain JSON types (tuples become lists, numpy scalars strings): it is saved in
    # checkpoints, which load with weights_only, and compared after the round trip
    return json.loads(json.dumps(identity, sort_keys=True, default=str))
