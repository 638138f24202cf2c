"""How map values are stored: quantised to steps of 2^-9 in float16, and fast exact casts.

float16 holds every multiple of 2^-9 exactly for |x| <= 4 (maps live in about [-1, 1.5]);
the error of `quantize` is at most 2^-10, and the noisy teacher maps compress about twice as
well on the grid (docs/benchmarks.md, size).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

QUANT_STEP = 2.0**-9

_TORCH_MIN_SIZE = 1 << 16
_TORCH_CHUNK = 32767
"""Elements per torch call: below torch's parallel grain (32768) every call runs inline on
the calling thread, so dask's worker threads never start OpenMP teams of their own."""


def quantize(maps: np.ndarray) -> np.ndarray:
    """Round to the nearest multiple of 2^-9 and store as float16.

    Beyond |x| = 4, float16's own spacing (2^-8 up to 8, ...) rounds once more; beyond its
    range the value becomes inf, by design (`nonfinite_float16` finds it).
    """
    maps = np.asarray(maps, np.float32)
    # torch's casts are faster, but only worth it where torch is loaded anyway: importing it
    # costs a GT rendering process about a second and 200 MB
    if maps.size < _TORCH_MIN_SIZE or "torch" not in sys.modules:
        with np.errstate(over="ignore"):
            return (np.round(maps / QUANT_STEP) * QUANT_STEP).astype(np.float16)
    return _torch_map(maps, np.float16, lambda t: (t * (1 / QUANT_STEP)).round_().mul_(QUANT_STEP))


def to_float32(maps: np.ndarray) -> np.ndarray:
    """float16 (or any float) maps as a new float32 array, exactly; faster than numpy's
    `astype`, whose float16 casts are not vectorised."""
    return _torch_map(np.asarray(maps), np.float32, None)


def as_float32(maps: np.ndarray) -> np.ndarray:
    """`maps` as float32: float16 through `to_float32`, float32 as it is, others cast."""
    maps = np.asarray(maps)
    if maps.dtype == np.float16:
        return to_float32(maps)
    return maps.astype(np.float32, copy=False)


def to_float16(maps: np.ndarray) -> np.ndarray:
    """float32 maps as float16, rounded to nearest even like `astype(np.float16)` (exact for
    values already on the 2^-9 grid below 4 in magnitude), faster."""
    return _torch_map(np.asarray(maps, np.float32), np.float16, None)


def nonfinite_float16(values: np.ndarray) -> bool:
    """Whether a float16 array holds inf or NaN (an integer test on the exponent bits: numpy's
    float16 `isfinite` is not vectorised)."""
    return bool(((values.view(np.uint16) & 0x7C00) == 0x7C00).any())


def _torch_map(x: np.ndarray, dtype: type, fn: Any) -> np.ndarray:
    """`fn` (elementwise torch ops, or None) over `x`, cast into a new `dtype` array, in
    chunks below torch's parallel grain."""
    import torch  # lazily: the GT build's rendering processes do not need it

    src = torch.from_numpy(np.ascontiguousarray(x)).reshape(-1)
    out = np.empty(x.shape, dtype)
    dst = torch.from_numpy(out).reshape(-1)
    with torch.no_grad():
        for i in range(0, src.numel(), _TORCH_CHUNK):
            part = src[i : i + _TORCH_CHUNK]
            dst[i : i + _TORCH_CHUNK].copy_(part if fn is None else fn(part))
    return out
