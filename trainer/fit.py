"""The training loop: masked L2 on a store's targets, Adam, step schedule, checkpoints, CSV log.

`fit` reads top to bottom: open and check the store, build the model from the store's
skeleton and stride, resume if asked, then per step: learning rate, batch, forward, loss
(eq. 1 at every stage, eq. 4), backward, Adam step, log, checkpoint.

Run folder (`out_dir`):
    run.json        config, store, model summary, world size (rewritten at every (re)start)
    log.csv         one row per `log_every` steps, means over those steps (`LOG_COLUMNS`)
    checkpoint.pt   latest state, for --resume (written atomically every `checkpoint_every`
                    steps and at the end)
    final.pt        the trained model at `steps`: the same dict without optimizer state
    steps/          with `keep_checkpoints`, every checkpoint as step_NNNNNNN.pt (no
                    optimizer state), for learning curves
The checkpoint format is `trainer.checkpoint`'s; the config and file names `trainer.config`'s.

Distributed data parallel: under torchrun (env WORLD_SIZE > 1) every process trains on its
own lanes of the stream (`trainer.data`), gradients are averaged by DDP, and only rank 0
writes. `batch_size` is per process, so the global batch is batch_size x world size. See
docs/training.md.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from lcdata.errors import LcposeError, one_line
from lcdata.io import atomic_path, write_json_atomic
from lcdata.labels.warp import parse_jitter
from lcdata.store.lock import write_lock
from lcdata.store.training import StoreSpec, open_training_store
from trainer.checkpoint import (
    check_resume,
    load_training_checkpoint,
    make_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from trainer.config import (
    CHECKPOINT,
    FINAL,
    KEPT_DIR,
    LOG,
    RUN,
    TrainConfig,
    resolve_workers,
    wait_share,
)
from trainer.data import StoreStream, close_loader, make_loader, to_device
from trainer.losses import stage_losses
from trainer.models import build_model, describe, load_backbone_weights, preprocess


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based step `step`: `lr` until `lr_decay_at` x steps, then x `lr_decay`."""
    return cfg.lr * (cfg.lr_decay if step >= int(cfg.lr_decay_at * cfg.steps) else 1.0)


def log_columns(num_stages: int) -> list[str]:
    """CSV columns. Losses are eq. 1 values (per sample, see `trainer.losses`), means over
    the row's steps and over ranks; data_s / step_s are seconds per step waiting for the
    batch / in total, wait_share = data_s / step_s (near 0: the readers keep up; near 1:
    the model waits for data); step counts finished steps (1 = after the first update)."""
    stages = [f"loss_stage{t + 1}" for t in range(num_stages)]
    losses = ["loss", "loss_heatmaps", "loss_pafs", *stages]
    return ["step", "epoch", "lr", *losses, "data_s", "step_s", "wait_share"]


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's mixed-precision context of `cfg.amp` (a no-op for "off")."""
    if cfg.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class FitResult:
    """What `fit` leaves behind: the trained module (on its device), the last log row (None
    when no step ran) and this process's DDP rank."""

    model: nn.Module
    step: int
    last_row: dict[str, float] | None
    out_dir: Path
    rank: int = 0


def fit(
    cfg: TrainConfig,
    store_path: str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    allow_amp_change: bool = False,
) -> FitResult:
    """Train `cfg.model` on a store's targets; write checkpoints and a log into `out_dir`.

    Args:
        cfg: the run's configuration.
        store_path: an lcdata store (GT or corrected); images, masks and targets are streamed.
        out_dir: run folder, created if needed; must not hold a run unless `resume`.
        resume: continue from `out_dir/checkpoint.pt` (bit-for-bit on the same device and
            world size); with no checkpoint there yet, start from step 0.
        progress: show a tqdm bar (rank 0 only).
        allow_amp_change: resume a checkpoint trained in another precision (`cfg.amp`) in
            this one, e.g. a bf16 run moved to a CPU without native bf16; the switch is kept
            in `amp_history` (run.json and every checkpoint). The batches stay the same.

    Raises:
        LcposeError: a store that cannot be trained on, an --out holding a run without
            `resume`, a checkpoint whose model, store or key config differs, divergence.
    """
    out_dir = Path(out_dir)
    jitter = parse_jitter(cfg.augment)
    spec = open_training_store(
        store_path, target=cfg.target, augment=jitter is not None
    )  # refuses foreign/incomplete stores
    # one writer per run folder: a second `fit --resume` on the same --out is refused instead of
    # interleaving checkpoints (a lock left by a killed run is taken over)
    is_rank0 = int(os.environ.get("RANK", "0")) == 0
    with write_lock(out_dir) if is_rank0 else contextlib.nullcontext(), _session(cfg) as env:
        ckpt = _prior_checkpoint(out_dir, resume=resume)
        torch.manual_seed(cfg.seed)  # every rank builds the same initial weights
        # the global generators this project does not use but third-party code may: seeded too,
        # so that two runs of one config write identical checkpoints (their RNG states included)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)  # noqa: NPY002
        model = build_model(cfg.model, spec.skeleton, spec.stride, **cfg.model_kwargs)
        if ckpt is not None:
            check_resume(
                ckpt, cfg, spec, model, world_size=env.world_size, path=out_dir / CHECKPOINT,
                allow_amp_change=allow_amp_change,
            )  # fmt: skip
        elif cfg.backbone_weights:
            load_backbone_weights(model, cfg.backbone_weights)
        model.to(env.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range
        scaler = torch.amp.GradScaler(env.device.type) if cfg.amp == "fp16" else None
        start = 0
        if ckpt is not None:
            try:
                model.load_state_dict(ckpt["model"])
                opt.load_state_dict(ckpt["optimizer"])
                if scaler is not None and ckpt.get("grad_scaler"):
                    scaler.load_state_dict(ckpt["grad_scaler"])
            except (RuntimeError, ValueError, KeyError) as err:  # e.g. a changed model layout
                raise LcposeError(
                    f"{out_dir / CHECKPOINT}: cannot resume: {one_line(err)}"
                ) from None
            start = int(ckpt["step"])
        amp_history = _amp_history(ckpt, cfg, start)
        if env.world_size > 1:
            dist.barrier()  # every rank has checked --out before rank 0 writes into it
        net = model
        if env.world_size > 1:
            ids = [env.device.index] if env.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            net = torch.compile(net)  # checkpoints keep `model`'s own (uncompiled) weights

        stream = StoreStream(
            spec,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            start_step=start,
            rank=env.rank,
            world_size=env.world_size,
            lanes=cfg.lanes,
            shuffle_blocks=cfg.shuffle_blocks,
            flip=cfg.augment_flip,
            jitter=jitter,
        )
        readers = resolve_workers(cfg.workers, world_size=env.world_size)
        batches: Iterator[dict[str, torch.Tensor]] = iter(())
        if start < cfg.steps:  # a finished run re-run with --resume starts no readers
            batches = make_loader(
                stream, workers=readers, reader=cfg.reader, pin_memory=env.device.type == "cuda"
            )
        if ckpt is not None:
            # after the loader, which draws its base seed from the global generator: a resumed
            # run then holds the generator states of an uninterrupted one
            set_rng_state(ckpt["rng"])
        columns = log_columns(model.num_stages)
        log = None
        if env.rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            _write_run_json(
                out_dir, cfg, spec, model, env, start, lanes=stream.lanes, readers=readers,
                amp_history=amp_history,
            )  # fmt: skip
            log = _CsvLog(out_dir / LOG, columns, keep_until=start)

        def checkpoint(step: int, *, final: bool = False) -> dict[str, Any]:
            return make_checkpoint(
                model,
                None if final else opt,
                step=step,
                cfg=cfg,
                spec=spec,
                world_size=env.world_size,
                grad_scaler=None if final or scaler is None else scaler.state_dict(),
                amp_history=amp_history,
            )

        model.train()
        meter = _Meter(num_stages=model.num_stages, device=env.device)
        row: dict[str, float] | None = None
        bar = tqdm(
            total=cfg.steps, initial=start, unit="step", disable=not progress or env.rank > 0
        )
        for step in range(start, cfg.steps):
            lr = lr_at(step, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            batch = next(batches)
            images, mask, heat, pafs = to_device(batch, env.device)  # float32 maps and mask
            meter.data_s += time.perf_counter() - t0

            x = preprocess(images)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(cfg, env.device):
                stages = net(x)  # per stage (heatmaps, pafs)
            # the loss in float32 whatever the forward's precision: sums of squares over
            # whole maps lose digits in 16 bits
            stages = [(h.float(), p.float()) for h, p in stages]
            loss, per_stage = stage_losses(stages, heat, pafs, mask)  # eq. 1 summed over stages
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)  # skips the step when the scaled gradients overflowed
                scaler.update()

            meter.add(per_stage)
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                epoch = done * cfg.batch_size * env.world_size / spec.num_samples
                row = meter.row(step=done, epoch=epoch, lr=lr, world_size=env.world_size)
                if not math.isfinite(row["loss"]):
                    raise LcposeError(
                        f"training diverged: loss {row['loss']} at step {done}; "
                        f"lower --lr (now {cfg.lr})"
                    )
                if log is not None:
                    log.write(row)
                bar.set_postfix(
                    loss=f"{row['loss']:.4g}", lr=f"{lr:.0e}", wait=f"{row['wait_share']:.0%}"
                )
            if env.rank == 0 and (done % cfg.checkpoint_every == 0 or done == cfg.steps):
                state = checkpoint(done)
                save_checkpoint(state, out_dir / CHECKPOINT)
                if cfg.keep_checkpoints:
                    (out_dir / KEPT_DIR).mkdir(exist_ok=True)
                    del state["optimizer"]
                    save_checkpoint(state, out_dir / KEPT_DIR / f"step_{done:07d}.pt")
            bar.update()
        bar.close()
        close_loader(batches)  # stops the reader threads or processes

        if env.rank == 0:
            save_checkpoint(checkpoint(max(start, cfg.steps), final=True), out_dir / FINAL)
        if env.world_size > 1:
            dist.barrier()  # nobody leaves (and tears down the group) before rank 0 has written
        step = max(start, cfg.steps)
        return FitResult(model=model, step=step, last_row=row, out_dir=out_dir, rank=env.rank)


# ---------------------------------------------------------------------------------------------
# Devices and processes


@dataclass(frozen=True)
class _Env:
    rank: int
    world_size: int
    device: torch.device


@contextlib.contextmanager
def _session(cfg: TrainConfig) -> Iterator[_Env]:
    """Device, DDP process group (under torchrun) and determinism flags for one run.

    Flags changed here (deterministic algorithms, cuDNN autotuning) are restored on exit, and a
    process group created here is destroyed.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    kind = cfg.device
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise LcposeError("--device cuda: CUDA is not available on this machine")
    device = torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)

    created = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if kind == "cuda" else "gloo")
        created = True
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    old_benchmark = torch.backends.cudnn.benchmark
    if cfg.deterministic and kind == "cuda":
        # cuBLAS needs a fixed workspace for reproducible matmuls; read at its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(cfg.deterministic)
    # fixed input size: let cuDNN pick the fastest algorithms, unless asked for determinism
    torch.backends.cudnn.benchmark = kind == "cuda" and not cfg.deterministic
    try:
        yield _Env(rank=rank if world > 1 else 0, world_size=max(world, 1), device=device)
    finally:
        torch.use_deterministic_algorithms(old_deterministic)
        torch.backends.cudnn.benchmark = old_benchmark
        if created:
            dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# Resuming


def _prior_checkpoint(out_dir: Path, *, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, None for a fresh start; refuses to overwrite a run."""
    present = [name for name in (CHECKPOINT, FINAL, LOG, RUN) if (out_dir / name).exists()]
    if not resume:
        if present:
            raise LcposeError(
                f"{out_dir}: already holds a training run ({present[0]}); pass --resume to "
                f"continue it or choose another --out"
            )
        return None
    if not (out_dir / CHECKPOINT).exists():
        return None  # nothing saved yet: --resume starts from step 0
    return load_training_checkpoint(out_dir / CHECKPOINT)


# ---------------------------------------------------------------------------------------------
# Logging


class _Meter:
    """Sums of per-step losses kept on the device; synchronised only when a row is made."""

    def __init__(self, *, num_stages: int, device: torch.device) -> None:
        self.num_stages = num_stages
        self.device = device
        self._reset()

    def _reset(self) -> None:
        # per stage heatmap and PAF terms, flattened: [h1, p1, h2, p2, ...]
        self.sums = torch.zeros(2 * self.num_stages, dtype=torch.float64, device=self.device)
        self.count = 0
        self.data_s = 0.0
        self.t0 = time.perf_counter()

    def add(self, per_stage: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        terms = torch.stack([t.detach() for pair in per_stage for t in pair])
        self.sums += terms.double()
        self.count += 1

    def row(self, *, step: int, epoch: float, lr: float, world_size: int) -> dict[str, float]:
        """Means over the steps since the last row (and over ranks); resets the sums."""
        stats = torch.cat(
            [
                self.sums / self.count,
                torch.tensor([self.data_s / self.count], dtype=torch.float64, device=self.device),
            ]
        )
        if world_size > 1:
            dist.all_reduce(stats)
            stats /= world_size
        values = stats.tolist()  # waits for the device: step_s below covers all queued work
        step_s = (time.perf_counter() - self.t0) / self.count
        terms, data_s = values[:-1], values[-1]
        heat, pafs = sum(terms[0::2]), sum(terms[1::2])
        row: dict[str, float] = {
            "step": step,
            "epoch": epoch,
            "lr": lr,
            "loss": heat + pafs,
            "loss_heatmaps": heat,
            "loss_pafs": pafs,
        }
        for t in range(self.num_stages):
            row[f"loss_stage{t + 1}"] = terms[2 * t] + terms[2 * t + 1]
        row["data_s"] = data_s
        row["step_s"] = step_s
        row["wait_share"] = wait_share(data_s, step_s)
        self._reset()
        return row


class _CsvLog:
    """log.csv, appended row by row; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, columns: list[str], *, keep_until: int) -> None:
        self.path = path
        self.columns = columns
        kept: list[list[str]] = []
        if path.exists() and keep_until > 0:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if rows and rows[0] == columns[:-1] and columns[-1] == "wait_share":
                rows = _add_wait_share(rows)  # a log written before the column existed
            if not rows or rows[0] != columns:
                raise LcposeError(f"{path}: columns differ from this run's; move the file away")
            kept = [r for r in rows[1:] if r and int(r[0]) <= keep_until]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(kept)

    def write(self, row: dict[str, float]) -> None:
        # opened per row (every log_every steps): a killed run leaves every written row intact
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([row["step"]] + [f"{row[c]:.7g}" for c in self.columns[1:]])


def _add_wait_share(rows: list[list[str]]) -> list[list[str]]:
    """Rows of an older log.csv (header first) with the wait_share column computed."""
    head = rows[0]
    data_i, step_i = head.index("data_s"), head.index("step_s")
    out = [[*head, "wait_share"]]
    for r in rows[1:]:
        if r:
            share = wait_share(float(r[data_i]), float(r[step_i]))
            out.append([*r, f"{share:.7g}"])
    return out


def _amp_history(ckpt: dict[str, Any] | None, cfg: TrainConfig, start: int) -> list[dict]:
    """The precisions a run trained in, from which step: the checkpoint's list (or its one
    config's), plus this run's `cfg.amp` from `start` where it differs."""
    if ckpt is None:
        return [{"from_step": 0, "amp": cfg.amp}]
    history = list(ckpt.get("amp_history") or [])
    if not history:
        history = [{"from_step": 0, "amp": dict(ckpt["config"]).get("amp", "off")}]
    if history[-1]["amp"] != cfg.amp:
        history.append({"from_step": start, "amp": cfg.amp})
    return history


def _write_run_json(
    out_dir: Path,
    cfg: TrainConfig,
    spec: StoreSpec,
    model: nn.Module,
    env: _Env,
    start: int,
    *,
    lanes: int,
    readers: int,
    amp_history: list[dict] | None = None,
) -> None:
    info = {
        "config": asdict(cfg),
        # the lanes decide the batches; the readers (workers="auto" resolved) only their speed
        "lanes": lanes,
        "readers": readers,
        "store": str(spec.path.resolve()),
        "target": spec.target,
        # with --augment: how each view's targets are made (docs/augmentation.md)
        "view_targets": (
            None
            if cfg.augment == "off"
            else "warped"
            if spec.online is None
            else f"rendered + {spec.online.mode}"
            if spec.online.kind == "correct"
            else "rendered"
        ),
        "num_samples": spec.num_samples,
        "model": describe(model),
        "world_size": env.world_size,
        "global_batch_size": cfg.batch_size * env.world_size,
        "device": str(env.device),
        "started_at_step": start,
        "amp_history": amp_history,
        "torch_version": str(torch.__version__),
    }
    write_json_atomic(out_dir / RUN, info, indent=2)
