"""`trainer fit` (train on a store's targets) and `trainer plot` (learning curves to PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lcdata.cli import key_values
from lcdata.store.training import TARGET_KINDS
from trainer.config import AMP_MODES, DEVICES, MODEL_NAMES, READERS, TrainConfig

# defaults are TrainConfig's own (trainer.config imports no torch, so `trainer --help` stays fast)
D = TrainConfig


def _parse_workers(ctx: click.Context, param: click.Parameter, value: str) -> int | str:
    """`auto` or a number >= 0."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(f"'auto' or a number >= 0, not {value!r}") from None
    if number < 0:
        raise click.BadParameter(f"must be >= 0, got {number}")
    return number


def _parse_model_kwargs(items: tuple[str, ...]) -> dict:
    """KEY=VALUE pairs; values are JSON (numbers, true/false) or else plain strings."""
    out = {}
    for key, value in key_values(items, option="--model-kwarg", example="num_stages=3").items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@click.command("fit")
@click.option(
    "--store",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="lcdata store to train on (GT store, or a corrected store).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run folder: checkpoint.pt, final.pt, log.csv, run.json.",
)
@click.option("--model", type=click.Choice(MODEL_NAMES), default=D.model, show_default=True)
@click.option(
    "--model-kwarg",
    "model_kwargs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra model option, repeatable (tiny: num_stages, width; cmu: num_stages).",
)
@click.option("--steps", type=int, default=D.steps, show_default=True, help="Optimizer steps.")
@click.option("--lr", type=float, default=D.lr, show_default=True, help="Adam learning rate.")
@click.option(
    "--lr-decay-at",
    type=float,
    default=D.lr_decay_at,
    show_default=True,
    help="Fraction of the steps after which the rate is multiplied by --lr-decay.",
)
@click.option("--lr-decay", type=float, default=D.lr_decay, show_default=True)
@click.option(
    "--batch-size",
    type=int,
    default=D.batch_size,
    show_default=True,
    help="Samples per step per process (global batch = this x processes under torchrun).",
)
@click.option("--seed", type=int, default=D.seed, show_default=True)
@click.option(
    "--lanes",
    type=int,
    default=D.lanes,
    show_default=True,
    help="Sample lanes per process: they fix the batch order (fewer on a store with fewer "
    "blocks); the readers never change a batch.",
)
@click.option(
    "--workers",
    default=str(D.workers),
    show_default=True,
    callback=_parse_workers,
    help="Readers making the batches: auto (one per core, at most 8) or a number "
    "(0 = in the training thread between steps).",
)
@click.option(
    "--reader",
    type=click.Choice(READERS),
    default=D.reader,
    show_default=True,
    help="Readers as threads of this process, or DataLoader worker processes (same batches).",
)
@click.option(
    "--target",
    type=click.Choice(TARGET_KINDS),
    default=D.target,
    show_default=True,
    help="Maps to train on; auto = target/* of a corrected store, else gt/*.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoint.pt.")
@click.option(
    "--allow-amp-change",
    is_flag=True,
    help="With --resume: continue a checkpoint trained in another --amp in this one "
    "(recorded as amp_history in run.json).",
)
@click.option("--device", type=click.Choice(DEVICES), default=D.device, show_default=True)
@click.option("--checkpoint-every", type=int, default=D.checkpoint_every, show_default=True)
@click.option(
    "--keep-checkpoints", is_flag=True, help="Also keep every checkpoint as steps/step_N.pt."
)
@click.option(
    "--log-every", type=int, default=D.log_every, show_default=True, help="Steps per CSV row."
)
@click.option("--augment-flip", is_flag=True, help="Mirror half of the samples.")
@click.option(
    "--augment",
    default=D.augment,
    show_default=True,
    help="Fresh jitter of every sample at every step: off, fresh, or e.g. "
    "'flip,rotate=30,scale=0.75:1.25,shift=0.05' (crop, mask and maps move together).",
)
@click.option(
    "--shuffle-blocks",
    type=int,
    default=D.shuffle_blocks,
    show_default=True,
    help="Store blocks mixed per shuffle window.",
)
@click.option(
    "--deterministic", is_flag=True, help="Deterministic algorithms (bit-exact CUDA reruns)."
)
@click.option(
    "--backbone-weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="torchvision VGG-19 state dict for cmu's backbone (fresh runs).",
)
@click.option(
    "--amp",
    type=click.Choice(AMP_MODES),
    default=D.amp,
    show_default=True,
    help="Mixed precision: bf16 autocast (CPU, recent GPUs) or fp16 with a gradient scaler.",
)
@click.option("--channels-last", is_flag=True, help="NHWC activations (GPU tensor cores).")
@click.option("--compile", is_flag=True, help="Run the model via torch.compile.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def fit(
    store: Path,
    out: Path,
    model: str,
    model_kwargs: tuple[str, ...],
    steps: int,
    lr: float,
    lr_decay_at: float,
    lr_decay: float,
    batch_size: int,
    seed: int,
    lanes: int,
    workers: int | str,
    reader: str,
    target: str,
    resume: bool,
    allow_amp_change: bool,
    device: str,
    checkpoint_every: int,
    keep_checkpoints: bool,
    log_every: int,
    augment_flip: bool,
    augment: str,
    shuffle_blocks: int,
    deterministic: bool,
    backbone_weights: str | None,
    amp: str,
    channels_last: bool,
    compile: bool,  # the TrainConfig field's name
    quiet: bool,
) -> None:
    """Train a pose model on the targets in STORE with the masked L2 loss of eq. 1.

    Multi-GPU: torchrun --nproc-per-node N -m trainer fit ... (DDP, one process per GPU).
    """
    from trainer.fit import fit as run_fit

    cfg = TrainConfig(
        model=model,
        model_kwargs=_parse_model_kwargs(model_kwargs),
        steps=steps,
        lr=lr,
        lr_decay_at=lr_decay_at,
        lr_decay=lr_decay,
        batch_size=batch_size,
        seed=seed,
        lanes=lanes,
        workers=workers,
        reader=reader,
        shuffle_blocks=shuffle_blocks,
        augment_flip=augment_flip,
        augment=augment,
        target=target,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep_checkpoints,
        log_every=log_every,
        device=device,
        deterministic=deterministic,
        backbone_weights=backbone_weights,
        amp=amp,
        channels_last=channels_last,
        compile=compile,
    )
    result = run_fit(
        cfg, store, out, resume=resume, progress=not quiet, allow_amp_change=allow_amp_change
    )
    if result.rank != 0:
        return  # under torchrun, one summary
    row = result.last_row
    loss = f"loss {row['loss']:.4g} at step {int(row['step'])}" if row else "nothing to do"
    click.echo(f"{cfg.model}: {result.step} steps, {loss}; wrote {out / 'final.pt'}")


@click.command("plot")
@click.argument(
    "run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("curves.png"),
    show_default=True,
    help="PNG to write.",
)
@click.option("--per-stage", is_flag=True, help="Also draw each stage's loss (dashed).")
@click.option(
    "--smooth",
    type=int,
    default=1,
    show_default=True,
    help="Moving average over this many log rows.",
)
def plot(run_dirs: tuple[Path, ...], out: Path, per_stage: bool, smooth: int) -> None:
    """Draw loss and learning rate against step for one or several RUN_DIRS."""
    from trainer.plot import plot_runs

    plot_runs(list(run_dirs), out, per_stage=per_stage, smooth=smooth)
    click.echo(f"wrote {out} ({len(run_dirs)} run(s))")
