"""Model -> self-describing teacher program (.pt2) that `lcdata` runs without model code.

`export_teacher` wraps a model so that the exported program takes uint8 RGB crops
(N, S, S, 3) and returns the last stage's (heatmaps (N, K+1, h, h), pafs (N, 2L, h, h))
float32, h = S // stride; `preprocess` is traced into the program, so the reader
(`lcdata.build.teacher.load_teacher`) needs no model code. The batch dimension is dynamic
(`torch.export.Dim`); S is fixed at export time. The file format is described in
`lcdata.build.teacher`; checkpoints are read by `trainer.checkpoint.model_from_checkpoint`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lcdata.build.teacher import META_FILE, TEACHER_FORMAT, TEACHER_FORMAT_VERSION
from lcdata.errors import LcposeError
from lcdata.io import atomic_path
from lcdata.labels.skeleton import Skeleton
from trainer.models import num_params, preprocess

MAX_EXPORT_BATCH = 4096
"""Upper bound of the dynamic batch dimension (torch.export needs a finite range to reason
about; larger batches than this are never useful for a teacher pass)."""


class _TeacherProgram(nn.Module):
    """uint8 (N, S, S, 3) -> last stage's (heatmaps, pafs) float32."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        heatmaps, pafs = self.model(preprocess(images))[-1]
        return heatmaps.float(), pafs.float()


def export_teacher(
    model: nn.Module,
    *,
    skeleton: Skeleton,
    stride: int,
    input_size: int,
    model_name: str,
    out_path: str | Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export `model`'s last stage as a teacher program with a dynamic batch dimension.

    The model is traced in eval mode (BatchNorm uses running statistics) on CPU; its
    training/eval mode is restored afterwards. The file is written atomically (temporary
    file, then rename).

    Args:
        model: a model from `trainer.models` (or any module with the same call contract).
        skeleton: channel layout of its outputs.
        stride: crop pixels per output cell.
        input_size: S, crop side in pixels; must be a multiple of `stride`.
        model_name: key of `MODELS` (recorded, not used to rebuild).
        out_path: the .pt2 file to write.
        extra: JSON-safe dict stored as `extra` in the metadata.

    Returns:
        The metadata dict written as `lcpose.json`.
    """
    if input_size <= 0 or input_size % stride:
        raise LcposeError(f"export: input size {input_size} is not a multiple of stride {stride}")
    meta = {
        "format": TEACHER_FORMAT,
        "format_version": TEACHER_FORMAT_VERSION,
        "skeleton": skeleton.to_attrs(),
        "stride": int(stride),
        "input_size": int(input_size),
        "model_name": model_name,
        "num_params": num_params(model),
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "torch_version": torch.__version__,
        "extra": dict(extra or {}),
    }
    text = json.dumps(meta)  # fails here, before any work, if `extra` is not JSON-safe

    was_training = model.training
    wrapper = _TeacherProgram(model).eval()
    # batch 2 as the example: torch.export specialises a dimension whose example size is 1
    example = torch.zeros((2, input_size, input_size, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    try:
        with torch.no_grad():
            program = torch.export.export(wrapper, (example,), dynamic_shapes=({0: batch},))
    finally:
        model.train(was_training)
    # torch warns about archive names that do not end in .pt2
    with atomic_path(out_path, suffix=".tmp.pt2") as tmp:
        torch.export.save(program, tmp, extra_files={META_FILE: text})
    return meta
