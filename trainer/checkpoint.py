"""Checkpoints: the one format, written and read here, and the RNG states of a resume.

Written by `trainer fit`, read by resume, export and evaluation, its version checked.

A checkpoint is a dict saved with `torch.save` and loaded with `weights_only=True`:

    format, format_version   "lcpose-checkpoint", CHECKPOINT_VERSION
    model                    the raw module's state_dict (never "module.*" or "_orig_mod.*")
    model_name, model_kwargs the architecture (`trainer.models.build_model`)
    stride, input_size       the geometry it was trained at
    skeleton                 Skeleton.to_attrs() of its channel layout
    step                     optimizer steps done
    optimizer, rng           Adam state and every global RNG state (checkpoint.pt only)
    config                   asdict(TrainConfig)
    store_attrs, store_path, target, world_size, torch_version   what it was trained on
    store_identity           what training read (`lcdata.store.training.training_identity`):
                             the one thing a resume compares with the store
    grad_scaler              the fp16 gradient scaler's state (checkpoint.pt of --amp fp16)

`final.pt` is the same dict without the optimizer state.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lcdata.errors import LcposeError, one_line
from lcdata.io import atomic_path
from lcdata.labels.skeleton import Skeleton
from lcdata.store.resume import first_difference
from lcdata.store.training import CONTENT_ATTRS, StoreSpec, training_identity
from trainer.config import TrainConfig
from trainer.models import MODELS, build_model

CHECKPOINT_FORMAT = "lcpose-checkpoint"
CHECKPOINT_VERSION = 1

CHECKPOINT_KEYS = ("model", "model_name", "stride", "input_size", "skeleton", "model_kwargs")
"""Keys a checkpoint needs to rebuild its model; the training loop writes more."""
RESUME_STATE = ("optimizer", "step", "rng", "config", "store_attrs")
"""Keys a checkpoint needs to continue a run."""

RESUME_KEYS = (
    "model", "model_kwargs", "steps", "lr", "lr_decay_at", "lr_decay", "batch_size", "seed",
    "lanes", "shuffle_blocks", "augment_flip", "augment", "amp",
)  # fmt: skip
"""Config fields that must agree between a checkpoint and the run resuming it: they decide
the model, the learning-rate schedule, the numerics or the batch sequence (not the number of
readers, which never changes a batch)."""


def make_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    step: int,
    cfg: TrainConfig,
    spec: StoreSpec,
    world_size: int,
    grad_scaler: dict[str, Any] | None = None,
    amp_history: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of a run at `step` (module docstring); without the optimizer
    state when `optimizer` is None (a final model). `amp_history` lists the precisions the
    run trained in, `[{"from_step": 0, "amp": "bf16"}, ...]` (`fit(allow_amp_change=True)`)."""
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model": model.state_dict(),  # the raw module's keys, never "module.*"
        "model_name": cfg.model,
        "stride": spec.stride,
        "input_size": spec.input_size,
        "skeleton": spec.skeleton.to_attrs(),
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "step": step,
        "rng": rng_state(),
        "config": asdict(cfg),
        "store_attrs": spec.attrs,
        "store_path": str(spec.path.resolve()),
        "store_identity": training_identity(spec),
        "target": spec.target,
        "world_size": world_size,
        "torch_version": str(torch.__version__),
    }
    if optimizer is None:
        del ckpt["optimizer"]
    if grad_scaler is not None:
        ckpt["grad_scaler"] = grad_scaler
    if amp_history is not None:
        ckpt["amp_history"] = amp_history
    return ckpt


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    """torch.save through a temporary file and a rename: a reader never sees half a file."""
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of a checkpoint dict, with one-line errors.

    Raises:
        LcposeError: missing or unreadable file, not a dict, another format or a newer
            version of this one, or missing `CHECKPOINT_KEYS`.
    """
    path = Path(path)
    if not path.is_file():
        raise LcposeError(f"{path}: checkpoint file not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad or unsafe file
        raise LcposeError(f"{path}: not a readable checkpoint ({one_line(err)})") from None
    if not isinstance(ckpt, dict):
        raise LcposeError(f"{path}: not a checkpoint (a {type(ckpt).__name__}, not a dict)")
    if ckpt.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise LcposeError(f"{path}: not an lcpose checkpoint (format {ckpt.get('format')!r})")
    version = ckpt.get("format_version", CHECKPOINT_VERSION)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise LcposeError(
            f"{path}: checkpoint format version {version!r} is newer than this lcpose reads "
            f"({CHECKPOINT_VERSION}); upgrade lcpose"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in ckpt]
    if missing:
        raise LcposeError(f"{path}: not a checkpoint: missing keys {', '.join(missing)}")
    return ckpt


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """`load_checkpoint`, refusing one that cannot continue a run (final.pt, a bare model).

    Raises:
        LcposeError: as `load_checkpoint`, or resume state missing.
    """
    ckpt = load_checkpoint(path)
    missing = [k for k in RESUME_STATE if k not in ckpt]
    if missing:
        raise LcposeError(
            f"{path}: not a resumable training checkpoint (no {', '.join(missing)}); "
            f"final.pt holds no optimizer state, resume from checkpoint.pt"
        )
    return ckpt


def config_difference(
    saved: dict[str, Any], cfg: TrainConfig, *, allow_amp_change: bool = False
) -> str | None:
    """The first `RESUME_KEYS` field in which a checkpoint's saved config and `cfg` differ,
    as "checkpoint has k=old, this run k=new" (with the way out for a precision change), or
    None when the run may continue the checkpoint (store and target are checked apart)."""
    old_cfg, new_cfg = dict(saved), asdict(cfg)
    # checkpoints of lcpose before `lanes` existed: the stream had one lane per reader
    if "lanes" not in old_cfg:  # (their `workers` was always a number)
        old_cfg["lanes"] = max(1, int(old_cfg.get("workers") or 0))
    old_cfg.setdefault("amp", "off")
    old_cfg.setdefault("augment", "off")
    keys = [k for k in RESUME_KEYS if not (allow_amp_change and k == "amp")]
    key = first_difference(old_cfg, new_cfg, keys)
    if key is None:
        return None
    return f"checkpoint has {key}={old_cfg.get(key)!r}, this run {key}={new_cfg[key]!r}" + (
        "; --allow-amp-change continues it in this precision" if key == "amp" else ""
    )


def check_resume(
    ckpt: dict[str, Any],
    cfg: TrainConfig,
    spec: StoreSpec,
    model: nn.Module,
    *,
    world_size: int,
    path: Path,
    allow_amp_change: bool = False,
) -> None:
    """Refuse to continue a checkpoint with another model, store or batch sequence; with
    `allow_amp_change`, a checkpoint trained in another precision continues in this one."""
    where = f"{path}: cannot resume"
    if ckpt["model_name"] != cfg.model:
        raise LcposeError(
            f"{where}: checkpoint is of model {ckpt['model_name']!r}, not {cfg.model!r}"
        )
    if dict(ckpt["model_kwargs"]) != dict(model.model_kwargs):
        raise LcposeError(
            f"{where}: checkpoint has model options {ckpt['model_kwargs']}, this run "
            f"{model.model_kwargs}"
        )
    # the run's options first: with other options (--augment) a run also reads other arrays
    problem = config_difference(ckpt["config"], cfg, allow_amp_change=allow_amp_change)
    if problem is not None:
        raise LcposeError(f"{where}: {problem}")
    changed = _store_difference(ckpt, spec)
    if changed is not None:
        raise LcposeError(
            f"{where}: checkpoint was trained on another store ({ckpt.get('store_path')}; "
            f"{changed} differs)"
        )
    if ckpt.get("target") != spec.target:
        raise LcposeError(
            f"{where}: checkpoint trained on '{ckpt.get('target')}' targets, this run on "
            f"'{spec.target}'"
        )
    if ckpt.get("world_size", 1) != world_size:
        raise LcposeError(
            f"{where}: checkpoint was written by {ckpt.get('world_size')} process(es), this run "
            f"has {world_size}; the batch sequence depends on it"
        )


def _store_difference(ckpt: dict[str, Any], spec: StoreSpec) -> str | None:
    """What differs between the store a checkpoint trained on and `spec`, None if nothing
    training read: the arrays' layout and the attributes that decide their content. Stages
    added later (a teacher pass over the store a teacher trained on) change neither."""
    old = ckpt.get("store_identity")
    if old is None:  # checkpoints of lcpose before store_identity: the content attributes
        changed = first_difference(ckpt["store_attrs"], spec.attrs, CONTENT_ATTRS)
        return None if changed is None else f"attribute '{changed}'"
    new = training_identity(spec)
    for part in ("content", "arrays"):
        key = first_difference(old[part], new[part], sorted(set(old[part]) | set(new[part])))
        if key is not None:
            return f"{'attribute' if part == 'content' else 'array'} '{key}'"
    return None


# ---------------------------------------------------------------------------------------------
# Global random states (third-party code may draw from them; a resume restores them)


def rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors, lists and numbers (loadable with weights_only)."""
    # the legacy global generator: this project never uses it, but third-party code may
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


# ---------------------------------------------------------------------------------------------
# A checkpoint's model


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


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, CheckpointInfo]:
    """Rebuild the model recorded in a checkpoint and load its weights strictly.

    Returns:
        The model in eval mode on CPU, and what the checkpoint says about it.

    Raises:
        LcposeError: as `load_checkpoint`, an unknown model name, or weights that do not fit
            the recorded architecture.
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
        raise LcposeError(
            f"{path}: weights do not fit model {name!r} {kwargs}: {one_line(err, 300)}"
        ) from None
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
