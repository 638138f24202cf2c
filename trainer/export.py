"""Checkpoint -> model, and model -> self-describing teacher program that `lcdata` runs.

`export_teacher` wraps a model so that the exported program takes uint8 RGB crops
(N, S, S, 3) and returns the last stage's (heatmaps (N, K+1, h, h), pafs (N, 2L, h, h))
float32, h = S // stride; `preprocess` is traced into the program, so the reader
(`lcdata.teacher.load_teacher`) needs no model code. The batch dimension is dynamic
(`torch.export.Dim`); S is fixed at export time. The file format is described in
`lcdata/teacher.py`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lcdata.errors import LcposeError
from lcdata.skeleton import Skeleton
from lcdata.teacher import META_FILE, TEACHER_FORMAT, TEACHER_FORMAT_VERSION
from trainer.models import MODELS, build_model, num_params, preprocess

CHECKPOINT_KEYS = ("model", "model_name", "stride", "input_size", "skeleton", "model_kwargs")
"""Keys `model_from_checkpoint` needs; the training loop writes more (optimizer, step, ...)."""

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
    out_path = Path(out_path)
    # torch warns about archive names that do not end in .pt2
    tmp = out_path.with_name(out_path.name + ".tmp.pt2")
    torch.export.save(program, tmp, extra_files={META_FILE: text})
    os.replace(tmp, out_path)
    return meta


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint says about its model (the rest belongs to the training loop).

    Attributes:
        path: the checkpoint file.
        model_name: key of `MODELS`.
        stride: crop pixels per output cell.
        input_size: S, crop side in pixels, of the store it was trained on.
        skeleton: channel layout.
        model_kwargs: extra constructor options (e.g. num_stages).
        step: training step, if the checkpoint records one.
    """

    path: Path
    model_name: str
    stride: int
    input_size: int
    skeleton: Skeleton
    model_kwargs: dict[str, Any]
    step: int | None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of a checkpoint dict, with one-line errors.

    Raises:
        LcposeError: missing file, unreadable file, not a dict or missing `CHECKPOINT_KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise LcposeError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad or unsafe file
        text = " ".join(str(err).split())[:200]
        raise LcposeError(
            f"{path}: not a readable checkpoint ({type(err).__name__}: {text})"
        ) from None
    if not isinstance(ckpt, dict):
        raise LcposeError(f"{path}: not a checkpoint (a {type(ckpt).__name__}, not a dict)")
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise LcposeError(f"{path}: not a checkpoint: missing keys {', '.join(missing)}")
    return ckpt


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model recorded in a checkpoint and load its weights strictly.

    Args:
        path: a dict saved by `torch.save` with at least `CHECKPOINT_KEYS`: "model"
            (state_dict), "model_name", "stride", "input_size", "skeleton" (to_attrs dict),
            "model_kwargs" (dict); "step" is read when present.

    Returns:
        The model in eval mode on CPU, and what the checkpoint says about it.

    Raises:
        LcposeError: missing/unreadable file, not a checkpoint, an unknown model name, or
            weights that do not fit the recorded architecture.
    """
    path = Path(path)
    ckpt = load_checkpoint(path)
    name = ckpt["model_name"]
    if name not in MODELS:
        raise LcposeError(
            f"{path}: checkpoint of unknown model {name!r} (known: {', '.join(MODELS)})"
        )
    skeleton = Skeleton.from_attrs(ckpt["skeleton"])
    kwargs = dict(ckpt["model_kwargs"] or {})
    info = CheckpointInfo(
        path=path,
        model_name=name,
        stride=int(ckpt["stride"]),
        input_size=int(ckpt["input_size"]),
        skeleton=skeleton,
        model_kwargs=kwargs,
        step=int(ckpt["step"]) if ckpt.get("step") is not None else None,
    )
    try:
        model = build_model(name, skeleton, info.stride, **kwargs)
    except LcposeError as err:
        raise LcposeError(f"{path}: {err}") from None
    try:
        # strict=False only to collect missing/unexpected keys for one message; both are
        # refused below, and a shape mismatch raises here whatever `strict` says
        result = model.load_state_dict(ckpt["model"], strict=False)
    except (RuntimeError, TypeError, AttributeError) as err:
        text = " ".join(str(err).split())[:300]
        raise LcposeError(f"{path}: weights do not fit model {name!r} {kwargs}: {text}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing {_preview(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {_preview(result.unexpected_keys)}")
    if problems:
        raise LcposeError(
            f"{path}: weights do not fit model {name!r} {kwargs}: " + "; ".join(problems)
        )
    return model.eval(), info


def _preview(keys: list[str], limit: int = 3) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
