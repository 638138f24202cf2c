"""What decides a training run, importable without torch.

`TrainConfig`, the model names, the reader kinds and the names of the files in a run folder.

The command line (`trainer fit`) reads its defaults from here, so they are written once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from lcdata.errors import ConfigError
from lcdata.labels.warp import parse_jitter
from lcdata.store.training import TARGET_KINDS

MODEL_NAMES: tuple[str, ...] = ("cmu", "small", "tiny")
"""Keys of `trainer.models.MODELS` (which checks that they agree)."""
READERS: tuple[str, ...] = ("threads", "processes")
"""How the store is read: reader threads in the training process, or DataLoader workers."""
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
AMP_MODES: tuple[str, ...] = ("off", "bf16", "fp16")
MAX_AUTO_WORKERS = 8
"""`workers="auto"` uses one reader per core of the process, at most this many."""

CHECKPOINT = "checkpoint.pt"
"""Latest state of a run, for --resume (atomic, every `checkpoint_every` steps and at the end)."""
FINAL = "final.pt"
"""The trained model at `steps`: a checkpoint without optimizer state."""
LOG = "log.csv"
"""One row per `log_every` steps (`trainer.fit.log_columns`)."""
RUN = "run.json"
"""Config, store, model and world size, rewritten at every (re)start."""
KEPT_DIR = "steps"
"""Folder of the checkpoints kept with `keep_checkpoints` (`step_NNNNNNN.pt`)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; `asdict` of it goes into every checkpoint.

    Attributes:
        model: key of `trainer.models.MODELS`.
        model_kwargs: extra constructor options (e.g. {"num_stages": 3} for tiny).
        steps: optimizer steps. The paper trains 2 x 10^5 (10^5 at each learning rate).
        lr: Adam learning rate (paper: 1e-4).
        lr_decay_at: fraction of `steps` after which the rate is multiplied by `lr_decay`
            (paper: 1e-4 then 1e-5 after half the steps).
        lr_decay: factor applied at `lr_decay_at`.
        batch_size: samples per step per process; global batch = batch_size x world size.
        seed: model initialisation and the data order.
        lanes: sample lanes per process: disjoint streams of the store's blocks that steps
            take in turn (`trainer.data`); the batch order depends on them, never on the
            readers. Fewer are used when the store has fewer blocks.
        workers: readers that make the batches: "auto" (one per core of this process, at
            most 8) or a number (0 = in the training thread, between steps). Any number
            gives the same batches, so a resumed run may use another.
        reader: "threads" (reader threads in the training process) or "processes"
            (DataLoader worker processes, batches through shared memory); same batches, same
            order (`trainer.data.make_loader`).
        shuffle_blocks: store blocks per shuffle window of the data stream.
        augment_flip: mirror half of the samples (crops were augmented when the store was
            built, so this is off by default).
        augment: a fresh jitter of every sample at every step (`lcdata.labels.warp`):
            "off", a preset ("fresh") or a spec like "flip,rotate=30,scale=0.75:1.25,
            shift=0.05"; crop, mask and maps move together, cells with no stored source
            are ignored. Draws are keyed on (seed, epoch, sample).
        target: "auto" (target/* if present, else gt/*), "gt", "teacher" or "target".
        checkpoint_every: steps between checkpoints (also written at the end).
        log_every: steps per CSV row.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        deterministic: `torch.use_deterministic_algorithms(True)` and no cuDNN autotuning;
            needed for bit-identical CUDA runs, slower there; CPU runs are reproducible
            without it.
        backbone_weights: torchvision VGG-19 state dict loaded into cmu's backbone on a fresh
            start (`trainer.models.load_backbone_weights`).
        keep_checkpoints: also keep every checkpoint as `steps/step_NNNNNNN.pt` (without
            optimizer state), e.g. for learning curves.
        amp: mixed precision of the forward pass: "off" (float32), "bf16" (autocast to
            bfloat16; CPUs and recent GPUs) or "fp16" (autocast to float16 with a gradient
            scaler; GPUs). The loss is always computed in float32.
        channels_last: keep activations in NHWC memory order (faster convolutions on GPUs
            with tensor cores).
        compile: run the model through `torch.compile` (the checkpoint keeps the raw
            module's weights).
    """

    model: str = "tiny"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 200_000
    lr: float = 1e-4
    lr_decay_at: float = 0.5
    lr_decay: float = 0.1
    batch_size: int = 16
    seed: int = 0
    lanes: int = 2
    workers: int | str = "auto"
    reader: str = "threads"
    shuffle_blocks: int = 4
    augment_flip: bool = False
    augment: str = "off"
    target: str = "auto"
    checkpoint_every: int = 1000
    log_every: int = 10
    device: str = "auto"
    deterministic: bool = False
    backbone_weights: str | None = None
    keep_checkpoints: bool = False
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        def bad(name: str, problem: str) -> ConfigError:
            return ConfigError("TrainConfig", name, problem)

        if self.model not in MODEL_NAMES:
            raise bad(
                "model", f"unknown model {self.model!r} (choose from {', '.join(MODEL_NAMES)})"
            )
        ones = ("steps", "batch_size", "checkpoint_every", "log_every", "shuffle_blocks", "lanes")
        for name in ones:
            if getattr(self, name) < 1:
                raise bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise bad("seed", f"must be >= 0, got {self.seed}")
        if self.workers != "auto" and not (
            isinstance(self.workers, int)
            and not isinstance(self.workers, bool)
            and self.workers >= 0
        ):
            raise bad("workers", f"must be 'auto' or a number >= 0, got {self.workers!r}")
        try:
            jitter = parse_jitter(self.augment)
        except ValueError as err:
            raise bad("augment", str(err)) from None
        if self.augment_flip and jitter is not None:
            raise bad("augment", "already draws flips; drop augment_flip (--augment-flip)")
        if not self.lr > 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if not self.lr_decay > 0:
            raise bad("lr_decay", f"must be > 0, got {self.lr_decay}")
        if not 0 <= self.lr_decay_at <= 1:
            raise bad("lr_decay_at", f"must be in [0, 1], got {self.lr_decay_at}")
        choosable = (
            ("reader", READERS), ("target", TARGET_KINDS), ("device", DEVICES), ("amp", AMP_MODES)
        )  # fmt: skip
        for name, choices in choosable:
            if getattr(self, name) not in choices:
                raise bad(name, f"must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.backbone_weights and self.model != "cmu":
            raise bad("backbone_weights", f"needs model cmu, not {self.model!r}")


def wait_share(data_s: float, step_s: float) -> float:
    """The log's `wait_share` column: the share of a step spent waiting for its batch."""
    return min(1.0, data_s / step_s) if step_s > 0 else 0.0


def resolve_workers(workers: int | str, *, world_size: int = 1) -> int:
    """The number of readers of `TrainConfig.workers`: "auto" = the cores this process may
    use (its share of them under DDP), between 1 and `MAX_AUTO_WORKERS`."""
    if workers != "auto":
        return int(workers)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_AUTO_WORKERS, cores // max(1, world_size)))
