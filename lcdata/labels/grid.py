"""The cell <-> pixel grid of the maps, and what lies on an image.

Points are (x, y) in pixels with pixel centres at integers (OpenCV's convention). A map of
`stride` pixels per cell has cell (i, j) standing for pixel
(j * stride + (stride - 1) / 2, i * stride + (stride - 1) / 2): the centre of the
stride x stride block of pixels it pools. Mirroring an image of S = h * stride pixels about
its centre maps cell centres onto cell centres, so rendering commutes with flips.

This module is the only place that writes that formula; the renderer, the decoder, the
evaluation's map overlays and the analytics all call it.
"""

from __future__ import annotations

import numpy as np

from lcdata.config import RenderConfig


def cell_offset(stride: int) -> float:
    """Pixel coordinate of the centre of cell 0: (stride - 1) / 2."""
    return (stride - 1) / 2


def cell_centers(num_cells: int, stride: int) -> np.ndarray:
    """(num_cells,) float32 pixel coordinate of each cell centre along one axis."""
    return (np.arange(num_cells, dtype=np.float32) * stride + cell_offset(stride)).astype(
        np.float32
    )


def cells_to_pixels(cells: np.ndarray, stride: int) -> np.ndarray:
    """Continuous cell coordinates (cell centres at integers) -> pixels; same shape."""
    return cells * stride + cell_offset(stride)


def pixels_to_cells(pixels: np.ndarray, stride: int) -> np.ndarray:
    """Pixels -> continuous cell coordinates (cell centres at integers); same shape."""
    return (pixels - cell_offset(stride)) / stride


def nearest_cell(pixels: np.ndarray, stride: int) -> np.ndarray:
    """Pixels -> int index of the nearest cell centre (may lie outside the grid)."""
    return np.rint(pixels_to_cells(pixels, stride)).astype(int)


def inside_image(points_xy: np.ndarray, size_xy: np.ndarray | float) -> np.ndarray:
    """(...,) bool: point (x, y) lies on a pixel of an image of `size_xy` = (W, H) pixels,
    i.e. in [-0.5, W - 0.5) x [-0.5, H - 0.5)."""
    size_xy = np.asarray(size_xy, np.float32)
    return np.all((points_xy >= -0.5) & (points_xy < size_xy - 0.5), axis=-1)


def grid_hw_for(cfg: RenderConfig, image_hw: tuple[int, int] | None) -> tuple[int, int]:
    """(h, w) cells of the maps of an image of `image_hw` pixels (default: the S x S crop)."""
    if image_hw is None:
        return cfg.grid_size, cfg.grid_size
    return image_hw[0] // cfg.stride, image_hw[1] // cfg.stride
