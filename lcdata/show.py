"""Draw one stored crop with its GT, teacher and corrected maps side by side (the paper's Fig. 3).

Top row: the crop with the ignore mask shaded, then the max over part heatmaps of each map
set drawn over the crop. Bottom row: a direction wheel, then the PAFs of each map set as
colour: at every cell the longest limb vector wins, its direction is the hue and its length
(clipped to 1) the brightness. Cells with mask 0 (no gradient in training) are hatched grey
in every panel.

Works on a cache store (GT, and the teacher when present) and on a corrected store (GT and
teacher read from its source store, plus `target/*`). matplotlib is used through its Agg
canvas directly, so no global backend is switched.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from lcdata.errors import LcposeError
from lcdata.store.layout import read_attrs
from lcdata.store.refs import input_store

MAP_SETS: tuple[tuple[str, str], ...] = (("gt", "GT"), ("teacher", "teacher"), ("target", "target"))


def paf_colours(pafs: np.ndarray) -> np.ndarray:
    """(2L, h, w) PAFs -> (h, w, 3) float RGB: hue = direction of the longest limb vector,
    value = its length clipped to [0, 1], full saturation."""
    from matplotlib.colors import hsv_to_rgb

    c, h, w = pafs.shape
    v = np.asarray(pafs, np.float32).reshape(c // 2, 2, h, w)
    norms = np.sqrt((v * v).sum(axis=1))  # (L, h, w)
    best = norms.argmax(axis=0)
    pick = np.take_along_axis(v, best[None, None], axis=0)[0]  # (2, h, w)
    angle = np.arctan2(pick[1], pick[0])  # image y points down; hue follows the screen
    hsv = np.stack(
        [(angle / (2 * np.pi)) % 1.0, np.ones_like(angle), np.clip(norms.max(axis=0), 0, 1)],
        axis=-1,
    )
    return hsv_to_rgb(hsv)


def _direction_wheel(size: int = 64) -> np.ndarray:
    ys, xs = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    pafs = np.stack([xs, ys]).astype(np.float32)
    rgb = paf_colours(pafs)
    rgb[np.hypot(xs, ys) > 1] = 1.0
    return rgb


def load_sample(path: str | Path, index: int) -> dict[str, object]:
    """Everything `render_figure` draws for sample `index` of a cache or corrected store.

    Returns:
        {"attrs", "image" (S, S, 3) uint8, "mask" (h, w) uint8, "image_id", "flipped",
        "maps": {set: (heatmaps (K+1, h, w) float32, pafs (2L, h, w) float32)}} with sets
        among gt, teacher, target (those the store or its source holds).
    """
    path = Path(path)
    attrs = read_attrs(path)
    n = int(attrs["num_samples"])
    if not 0 <= index < n:
        raise LcposeError(f"--index {index}: the store has samples 0..{n - 1}")
    if attrs.get("complete") is not True:
        # an unwritten sample reads as fill values (a black crop, empty maps): refuse it
        group = zarr.open_group(str(path), mode="r")
        block = index // int(attrs["samples_per_shard"])
        pending = [
            stage
            for stage in attrs.get("stages", [])
            if f"progress/{stage}" in group and not group[f"progress/{stage}"][block]
        ]
        if pending:
            raise LcposeError(
                f"{path}: store is incomplete and sample {index} is not written yet (block "
                f"{block} of stage {', '.join(pending)} pending); finish it with --resume"
            )

    def read(name: str) -> np.ndarray:
        return np.asarray(zarr.open_array(str(input_store(path, name) / name), mode="r")[index])

    maps = {}
    for prefix, _ in MAP_SETS:
        try:
            heat, pafs = read(f"{prefix}/heatmaps"), read(f"{prefix}/pafs")
        except LcposeError:
            continue  # this store (and its source) has no such map set
        maps[prefix] = (heat.astype(np.float32), pafs.astype(np.float32))
    if not maps:
        raise LcposeError(f"{path}: no map arrays (gt/*, teacher/*, target/*) to show")
    return {
        "attrs": attrs,
        "image": read("images"),
        "mask": read("masks"),
        "image_id": int(read("meta/image_id")),
        "flipped": bool(read("meta/flipped")),
        "maps": maps,
    }


def render_figure(path: str | Path, index: int, out: str | Path, *, dpi: int = 110) -> Path:
    """Write the PNG of sample `index` of store `path` to `out`; returns `out`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sample = load_sample(path, index)
    attrs = sample["attrs"]
    image, mask, maps = sample["image"], sample["mask"], sample["maps"]
    s = image.shape[0]
    extent = (-0.5, s - 0.5, s - 0.5, -0.5)  # cells cover stride x stride crop pixels
    shade = np.zeros((*mask.shape, 4), np.float32)
    shade[mask == 0] = (0.5, 0.5, 0.5, 0.6)
    gray = image.astype(np.float32).mean(axis=2) / 255.0

    cols = 1 + len(maps)
    fig = Figure(figsize=(2.6 * cols, 5.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(image, extent=extent)
    axes[0, 0].imshow(shade, extent=extent, interpolation="nearest")
    axes[0, 0].set_title("crop (grey: ignored)", fontsize=8)
    axes[1, 0].imshow(_direction_wheel())
    axes[1, 0].set_title("PAF direction (hue)", fontsize=8)
    correction = attrs.get("correction", {})
    labels = dict(MAP_SETS)
    if "mode" in correction:
        lam = correction.get("lambda")
        labels["target"] = f"target: {correction['mode']}" + (f" (lam {lam})" if lam else "")
    for col, (name, (heat, pafs)) in enumerate(maps.items(), start=1):
        top, bottom = axes[0, col], axes[1, col]
        top.imshow(gray, cmap="gray", extent=extent, vmin=0, vmax=1)
        top.imshow(
            np.clip(heat[:-1].max(axis=0), 0, 1),
            cmap="jet",
            alpha=0.6,
            vmin=0,
            vmax=1,
            extent=extent,
            interpolation="nearest",
        )
        top.imshow(shade, extent=extent, interpolation="nearest")
        top.set_title(f"{labels[name]} heatmaps (max)", fontsize=8)
        bottom.imshow(paf_colours(pafs), extent=extent, interpolation="nearest")
        bottom.imshow(shade, extent=extent, interpolation="nearest")
        bottom.set_title(f"{labels[name]} PAFs", fontsize=8)
    flip = ", flipped" if sample["flipped"] else ""
    fig.suptitle(
        f"{Path(path).name}: sample {index} (image {sample['image_id']}{flip})", fontsize=9
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
