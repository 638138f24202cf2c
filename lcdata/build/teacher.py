"""Load and run an exported teacher (a `torch.export` program written by `trainer export`).

The teacher file is a `.pt2` archive made by `torch.export.save` with one extra file,
`lcpose.json` (`META_FILE`), describing it:

    format          "lcpose-teacher"
    format_version  1
    skeleton        Skeleton.to_attrs() of the channel layout it predicts
    stride          crop pixels per output cell
    input_size      S, side of the square input crop in pixels
    model_name      "cmu", "small", "tiny", ...
    num_params      parameter count of the model
    model_kwargs    options the model was built with
    torch_version   torch that exported it
    extra           free-form dict (e.g. the checkpoint and step it came from)

The program takes uint8 RGB crops (N, S, S, 3), N dynamic, and returns the last stage's
(heatmaps (N, K+1, h, h), pafs (N, 2L, h, h)) float32 with h = S // stride. All of the
normalisation is inside the program, so this module needs no model code: `lcdata` never
imports `trainer`.

`torch.export.load` unpickles parts of the archive: load only teachers you made or trust.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lcdata.build.tta import TTAConfig, tta_predict
from lcdata.config import RenderConfig
from lcdata.errors import LcposeError, one_line
from lcdata.io import file_sha256
from lcdata.labels.skeleton import Skeleton

TEACHER_FORMAT = "lcpose-teacher"
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
"""Teacher pass precisions: fp32 runs as exported; bf16 / fp16 run under `torch.autocast`.
The precision changes the stored maps, so the store's teacher record keeps it."""
TEACHER_FORMAT_VERSION = 1
META_FILE = "lcpose.json"
_REQUIRED_META = ("skeleton", "stride", "input_size", "model_name")


class Teacher:
    """A loaded teacher program with its metadata.

    Attributes:
        path: the .pt2 file.
        meta: the parsed `lcpose.json` (see module doc).
        skeleton: channel layout of the outputs.
        stride: crop pixels per output cell.
        input_size: S, the crop side the program expects.
        grid_size: h = S // stride, side of the output maps in cells.
        sha256: hex digest of the file, to record which teacher made a store.
        device: torch device the program runs on.
        precision: "fp32", "bf16" or "fp16" (`PRECISIONS`).
        tta: the test-time augmentation of `predict_views` (`lcdata.build.tta`).
    """

    def __init__(
        self,
        path: Path,
        program: Any,
        meta: dict[str, Any],
        *,
        device: str,
        precision: str = "fp32",
        tta: TTAConfig | None = None,
    ) -> None:
        self.path = path
        self.tta = tta or TTAConfig()
        self.meta = meta
        self.skeleton = Skeleton.from_attrs(meta["skeleton"])
        self.stride = int(meta["stride"])
        self.input_size = int(meta["input_size"])
        self.grid_size = self.input_size // self.stride
        self.sha256 = file_sha256(path)
        self.device = torch.device(device)
        self.precision = precision
        self._module = program.module()
        if PRECISIONS[precision] is not None:
            _drop_dtype_asserts(self._module)

    def __repr__(self) -> str:
        return (
            f"Teacher({self.path.name!r}, model={self.meta['model_name']!r}, "
            f"stride={self.stride}, input_size={self.input_size})"
        )

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Run the teacher on one batch of crops (callers choose the batch size).

        Args:
            images: (N, S, S, 3) uint8 RGB crops, S = `input_size`.

        Returns:
            heatmaps: (N, K+1, h, h) float32, last channel background.
            pafs: (N, 2L, h, h) float32, channel 2l = x and 2l+1 = y of limb l.

        Raises:
            LcposeError: wrong input dtype/shape, or outputs of the wrong shape or with
                NaN/inf (a broken teacher must not silently poison a store).
        """
        s = self.input_size
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            got = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            raise LcposeError(f"teacher {self.path}: expects uint8 crops, got {got}")
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise LcposeError(
                f"teacher {self.path}: expects crops of shape (N, {s}, {s}, 3), got {images.shape}"
            )
        n, h = images.shape[0], self.grid_size
        want_hm = (n, self.skeleton.num_heatmaps, h, h)
        want_paf = (n, self.skeleton.num_pafs, h, h)
        if n == 0:  # the exported batch dimension starts at 1
            return np.zeros(want_hm, np.float32), np.zeros(want_paf, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(images))
        if self.device.type == "cuda":
            # page-locked memory lets the copy overlap the previous batch's kernels
            x = x.pin_memory().to(self.device, non_blocking=True)
        dtype = PRECISIONS[self.precision]
        with (
            torch.no_grad(),
            torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None),
        ):
            outputs = self._module(x)
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 2:
            raise LcposeError(f"teacher {self.path}: program must return (heatmaps, pafs)")
        heatmaps = outputs[0].detach().to("cpu", torch.float32).numpy()
        pafs = outputs[1].detach().to("cpu", torch.float32).numpy()
        for name, arr, want in (("heatmaps", heatmaps, want_hm), ("pafs", pafs, want_paf)):
            if arr.shape != want:
                raise LcposeError(
                    f"teacher {self.path}: {name} have shape {arr.shape}, expected {want}"
                )
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).sum())
                raise LcposeError(
                    f"teacher {self.path}: {name} contain {bad} NaN/inf values; "
                    "the teacher is broken (diverged training?)"
                )
        return heatmaps, pafs

    def predict_views(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What the teacher pass stores for `images`: `predict`, averaged over the views of
        `self.tta` when it is enabled (`lcdata.build.tta.tta_predict`); same shapes."""
        return tta_predict(
            self.predict, images, self.tta, skeleton=self.skeleton, stride=self.stride
        )


def _drop_dtype_asserts(module: torch.fx.GraphModule) -> None:
    """Remove the exported graph's tensor-metadata asserts, in place.

    `torch.export` asserts the float32 dtypes it traced; under autocast the convolutions
    return bf16/fp16 by design, which those asserts would reject. Shapes stay checked in
    `Teacher.predict`.
    """
    assert_op = torch.ops.aten._assert_tensor_metadata.default
    for node in list(module.graph.nodes):
        if node.op == "call_function" and node.target is assert_op:
            module.graph.erase_node(node)
    module.recompile()


def load_teacher(
    path: str | Path,
    *,
    device: str = "cpu",
    precision: str = "fp32",
    tta: TTAConfig | None = None,
) -> Teacher:
    """Load an exported teacher and its metadata.

    Args:
        path: .pt2 file written by `trainer export`.
        device: "cpu", or "cuda"/"cuda:i" to move the program's weights to a GPU
            (`torch.export.passes.move_to_device_pass`); inputs are moved for you (from
            pinned memory, non-blocking) and outputs come back as CPU float32 numpy arrays.
        precision: "fp32" (as exported), "bf16" or "fp16" (autocast on `device`).
        tta: test-time augmentation of `Teacher.predict_views` (default none).

    Raises:
        LcposeError: missing file, not an exported program, no or malformed lcpose metadata,
            or an unavailable device.
    """
    path = Path(path)
    if precision not in PRECISIONS:
        raise LcposeError(
            f"{path}: teacher precision {precision!r} unknown; use one of {', '.join(PRECISIONS)}"
        )
    if not path.is_file():
        raise LcposeError(f"{path}: teacher file not found")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise LcposeError(f"{path}: device {device!r} asked for but CUDA is not available")
    extra = {META_FILE: ""}
    try:
        program = torch.export.load(path, extra_files=extra)
    except Exception as err:  # torch raises many types for a foreign or damaged file
        raise LcposeError(
            f"{path}: not an exported torch program ({one_line(err)}); "
            "make one with `trainer export`"
        ) from None
    meta = _parse_meta(path, extra[META_FILE])
    if torch.device(device).type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return Teacher(path, program, meta, device=device, precision=precision, tta=tta)


def _parse_meta(path: Path, text: str | bytes) -> dict[str, Any]:
    if not text:
        raise LcposeError(
            f"{path}: exported program has no {META_FILE} metadata (not written by "
            "`trainer export`)"
        )
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise LcposeError(f"{path}: {META_FILE} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != TEACHER_FORMAT:
        raise LcposeError(f"{path}: {META_FILE} does not describe an lcpose teacher")
    version = meta.get("format_version")
    if version != TEACHER_FORMAT_VERSION:
        raise LcposeError(
            f"{path}: teacher format version {version!r}, this lcdata reads "
            f"{TEACHER_FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing:
        raise LcposeError(f"{path}: {META_FILE} lacks {', '.join(missing)}")
    Skeleton.from_attrs(meta["skeleton"])  # validates; LcposeError on malformed attrs
    return meta


def check_compatible(
    teacher: Teacher, *, skeleton: Skeleton, render_cfg: RenderConfig, source: str
) -> None:
    """Refuse a teacher whose outputs would not line up with a store's maps.

    Args:
        teacher: the loaded teacher.
        skeleton: the store's skeleton (compared with `to_attrs()`).
        render_cfg: the store's render config (stride and input size compared).
        source: name of the store, for the message.

    Raises:
        LcposeError: one line listing every disagreement.
    """
    problems = []
    if teacher.skeleton.to_attrs() != skeleton.to_attrs():
        problems.append(f"skeleton differs ({_skeleton_diff(teacher.skeleton, skeleton, source)})")
    if teacher.stride != render_cfg.stride:
        problems.append(f"stride {teacher.stride} != {source} stride {render_cfg.stride}")
    if teacher.input_size != render_cfg.input_size:
        problems.append(
            f"input size {teacher.input_size} != {source} input size {render_cfg.input_size}"
        )
    if problems:
        raise LcposeError(f"teacher {teacher.path} does not fit {source}: " + "; ".join(problems))


def _skeleton_diff(ours: Skeleton, theirs: Skeleton, source: str) -> str:
    a, b = ours.to_attrs(), theirs.to_attrs()
    counts = f"teacher {ours.num_parts} parts/{ours.num_limbs} limbs"
    counts += f", {source} {theirs.num_parts} parts/{theirs.num_limbs} limbs"
    fields = [key for key in a if a[key] != b.get(key)]
    return f"{counts}; different {', '.join(fields)}"
