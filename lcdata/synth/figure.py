"""The docs picture of the synthetic benchmark: clean and corrupted labels side by side."""

from __future__ import annotations

from pathlib import Path

import cv2

from lcdata.labels.skeleton import COCO_SKELETON_EDGES
from lcdata.synth.truth import read_split

FAILURE_COLOURS = {
    "out_of_image": "tab:orange",
    "severely_occluded": "tab:purple",
    "missed_visible": "tab:red",
    "unannotated": "tab:cyan",
}


def example_figure(data_dir: str | Path, out_path: str | Path, *, num_images: int = 6) -> None:
    """Draw train images with clean labels (left) and corrupted labels (right) to a PNG.

    Clean: every keypoint of `keypoints_all` (points outside the image too, on a grey margin),
    skeleton in the person's own colour, occluded points hollow. Corrupted: the noisy labels,
    with each dropped keypoint marked by an x coloured by the failure that removed it and
    unannotated persons by a dashed box. Images are picked in file order, preferring ones
    where several failures show. matplotlib is used through its Agg canvas (no global backend
    is switched).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    split = read_split(data_dir, "train")
    chosen = sorted(split, key=lambda s: -s.num_failure_kinds())[:num_images]
    chosen.sort(key=lambda s: s.image["id"])
    num_rows = -(-len(chosen) // 2)
    fig = Figure(figsize=(12, 3.1 * num_rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(num_rows, 4, squeeze=False)
    for ax in axes.reshape(-1)[2 * len(chosen) :]:
        ax.set_axis_off()
    cmap = colormaps["tab10"]
    for row, sample in zip(axes.reshape(-1, 2), chosen, strict=False):
        img = cv2.cvtColor(cv2.imread(str(sample.image_path)), cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        margin = 0.22 * max(h, w)
        for ax, title in zip(row, ("clean truth", "corrupted labels"), strict=True):
            ax.set_facecolor("0.85")
            ax.imshow(img, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
            ax.set_xlim(-margin, w + margin)
            ax.set_ylim(h + margin, -margin)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{sample.image['file_name']}: {title}", fontsize=8)
        for p, (ann_id, clean) in enumerate(sample.clean_all.items()):
            colour = cmap(p % 10)
            noisy = sample.noisy.get(ann_id)
            for ax, kps in ((row[0], clean), (row[1], noisy)):
                if kps is None:
                    continue
                for a, b in COCO_SKELETON_EDGES:
                    if kps[a, 2] > 0 and kps[b, 2] > 0:
                        ax.plot(kps[[a, b], 0], kps[[a, b], 1], "-", color=colour, lw=1.2)
                on = kps[:, 2] > 0
                vis = on & (kps[:, 2] == 2)
                ax.scatter(kps[vis, 0], kps[vis, 1], s=9, color=colour, zorder=3)
                ax.scatter(
                    kps[on & ~vis, 0],
                    kps[on & ~vis, 1],
                    s=9,
                    facecolors="none",
                    edgecolors=colour,
                    zorder=3,
                )
            for kind, points in sample.dropped(ann_id).items():
                if len(points):
                    row[1].scatter(
                        points[:, 0],
                        points[:, 1],
                        marker="x",
                        s=22,
                        zorder=4,
                        color=FAILURE_COLOURS[kind],
                        linewidths=1.3,
                    )
            if noisy is None:
                x, y, bw, bh = sample.bboxes[ann_id]
                row[1].add_patch(
                    Rectangle(
                        (x, y),
                        bw,
                        bh,
                        fill=False,
                        ls="--",
                        lw=1.3,
                        ec=FAILURE_COLOURS["unannotated"],
                    )
                )
        for crowd in sample.crowd_boxes:
            for ax in row:
                x, y, bw, bh = crowd
                ax.add_patch(Rectangle((x, y), bw, bh, fill=False, ls=":", lw=1, ec="w"))
    handles = [
        Line2D([], [], marker="x", ls="", color=c, label=k.replace("_", " "))
        for k, c in FAILURE_COLOURS.items()
    ]
    handles.append(Line2D([], [], marker="o", ls="", mfc="none", color="k", label="v=1"))
    handles.append(Line2D([], [], ls=":", color="0.5", label="crowd region"))
    fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=90)
