"""Configuration of label rendering and augmentation, recorded with every store.

Defaults follow CMU-Pose (Cao et al. 2017) as used by the paper: 368 px crops, stride 8,
Gaussian sigma 7 px, PAF band one cell either side of the limb, flips, +-40 deg rotation,
scale 0.5-1.1. `SYNTH_RENDER` is the setting for the small synthetic benchmark images,
where stride 8 leaves too few cells per person (see docs/synthetic.md). `PRESETS` names both
geometries, so that scripts, configs and benchmarks read them instead of retyping numbers.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from lcdata.errors import ConfigError


@dataclass(frozen=True)
class RenderConfig:
    """How labels become maps.

    Attributes:
        input_size: S, side of the square network input (crop), in crop pixels.
        stride: crop pixels per output cell; the maps are (S // stride) cells square.
        sigma: heatmap Gaussian standard deviation, in crop pixels (not cells).
        paf_half_width: half-width of the PAF band around a limb segment, in cells
            (1.0 = CMU's `thre = 1`): a cell is on the limb when its centre lies within
            `paf_half_width * stride` crop pixels of the segment.
    """

    input_size: int = 368
    stride: int = 8
    sigma: float = 7.0
    paf_half_width: float = 1.0

    def __post_init__(self) -> None:
        for name in ("stride", "input_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    "RenderConfig", name, f"must be positive, got {getattr(self, name)}"
                )
        if self.input_size % self.stride:
            raise ConfigError(
                "RenderConfig",
                "input_size",
                f"{self.input_size} is not a multiple of the stride {self.stride}",
            )
        # written so that NaN fails too (NaN <= 0 is false)
        for name in ("sigma", "paf_half_width"):
            if not 0 < getattr(self, name) < math.inf:
                raise ConfigError(
                    "RenderConfig", name, f"must be positive and finite, got {getattr(self, name)}"
                )

    @property
    def grid_size(self) -> int:
        """h = S // stride, side of the output maps in cells."""
        return self.input_size // self.stride

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> RenderConfig:
        return cls(**{f.name: attrs[f.name] for f in fields(cls) if f.name in attrs})


SYNTH_RENDER = RenderConfig(input_size=128, stride=4, sigma=4.0, paf_half_width=1.0)
"""Render setting for the synthetic benchmark's 128 px images (stride 4: 32x32 maps)."""

PRESETS: dict[str, RenderConfig] = {"coco": RenderConfig(), "synth": SYNTH_RENDER}
"""Named render geometries: `coco` (CMU-Pose: 368 px, stride 8, sigma 7) and `synth` (the
synthetic benchmark: 128 px, stride 4, sigma 4). `lcdata build-teacher-cache --preset`, the
experiment configs and the benchmarks take these names."""


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random view sampled for each stored crop (CMU's augmentation).

    Attributes:
        flip_prob: probability of a horizontal mirror (left/right parts swap).
        max_rotate_deg: rotation uniform in [-max, +max] degrees.
        scale_min, scale_max: multiplier, uniform, on the base scale that makes the
            centre person `target_fraction` of the crop height.
        target_fraction: centre person's bounding-box height / crop size at multiplier 1.
        center_jitter: crop centre moves uniformly by up to this fraction of the crop size in
            x and y (CMU: 40 px of 368).
        max_base_scale: cap on the base scale so that tiny persons are not blown up beyond
            this factor (they would be all blur).
    """

    flip_prob: float = 0.5
    max_rotate_deg: float = 40.0
    scale_min: float = 0.5
    scale_max: float = 1.1
    target_fraction: float = 0.6
    center_jitter: float = 40.0 / 368.0
    max_base_scale: float = 4.0

    def __post_init__(self) -> None:
        if not 0 <= self.flip_prob <= 1:
            raise ConfigError("AugmentConfig", "flip_prob", f"{self.flip_prob} not in [0, 1]")
        if not 0 < self.scale_min <= self.scale_max:
            raise ConfigError(
                "AugmentConfig",
                "scale_min",
                f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}",
            )

    def to_attrs(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> AugmentConfig:
        return cls(**{f.name: attrs[f.name] for f in fields(cls) if f.name in attrs})


NO_AUGMENT = AugmentConfig(flip_prob=0, max_rotate_deg=0, scale_min=1, scale_max=1, center_jitter=0)
"""Identity views (no flip, rotation, rescaling around the base scale or jitter): every crop
is the labelled person at `target_fraction` of the crop height (`--no-augment`)."""

DEFAULT_VIEWS_PER_IMAGE = 8
"""K stored views per image unless told otherwise: of K = 1, K = 8 and one view with a fresh
jitter at every step (`trainer fit --augment fresh`), K = 8 gave the best students at the
long schedule (51.0 AP against 47.8 and 26.1, 3 seeds each, docs/augmentation.md)."""
