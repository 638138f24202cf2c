"""Learning curves of one or several training runs (their log.csv) to a PNG.

Left panel: loss (log scale) against step, one colour per run, labelled by the run folder's
name; optionally each stage's loss dashed in the same colour. Middle panel: learning rate.
Right panel: the data-wait share, the fraction of each step spent waiting for the batch
(near 1: the readers starve the model; `--workers` or a faster disk help).
Uses matplotlib's object API with the Agg canvas, so no display and no global pyplot state.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lcdata.errors import LcposeError
from trainer.config import LOG as LOG_NAME
from trainer.config import wait_share


def read_log(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Columns of a run's log.csv as float64 arrays (see `trainer.fit.log_columns`).

    Raises:
        LcposeError: no log.csv, an empty log, or no `step`/`loss` column.
    """
    path = Path(run_dir) / LOG_NAME
    if not path.is_file():
        raise LcposeError(f"{run_dir}: no {LOG_NAME} (not a training run folder?)")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise LcposeError(f"{path}: no rows logged yet")
    header, body = rows[0], [r for r in rows[1:] if r]
    for column in ("step", "loss", "lr"):
        if column not in header:
            raise LcposeError(f"{path}: column '{column}' missing")
    try:
        values = np.array(body, dtype=np.float64)
    except ValueError as err:
        raise LcposeError(f"{path}: a row is not numeric ({err})") from None
    columns = {name: values[:, i] for i, name in enumerate(header)}
    if "wait_share" not in columns and {"data_s", "step_s"} <= columns.keys():
        # a log written before the column existed
        pairs = zip(columns["data_s"], columns["step_s"], strict=True)
        columns["wait_share"] = np.array([wait_share(d, t) for d, t in pairs], np.float64)
    return columns


def _smooth(y: np.ndarray, width: int) -> np.ndarray:
    """Trailing moving average over `width` rows (the first rows average what exists)."""
    if width <= 1:
        return y
    cumsum = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - width, 0)
    return (cumsum[idx] - cumsum[lo]) / (idx - lo)


def plot_runs(
    run_dirs: list[str | Path],
    out: str | Path,
    *,
    per_stage: bool = False,
    smooth: int = 1,
) -> Path:
    """Draw loss and learning rate against step for each run and save a PNG.

    Args:
        run_dirs: run folders written by `trainer fit`; labels are their folder names.
        out: PNG path to write.
        per_stage: also draw each stage's loss (dashed, same colour as the run).
        smooth: trailing moving average over this many log rows (1 = raw).

    Returns:
        `out` as a Path.
    """
    if smooth < 1:
        raise LcposeError(f"--smooth must be >= 1, got {smooth}")
    logs = [(Path(d), read_log(d)) for d in run_dirs]
    fig = Figure(figsize=(14, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_lr, ax_wait = fig.subplots(1, 3, width_ratios=(3, 1, 1))
    for i, (run_dir, log) in enumerate(logs):
        colour = f"C{i % 10}"
        label = run_dir.resolve().name
        ax_loss.plot(log["step"], _smooth(log["loss"], smooth), color=colour, label=label)
        if per_stage:
            stages = sorted(k for k in log if k.startswith("loss_stage"))
            for k, name in enumerate(stages):
                ax_loss.plot(
                    log["step"],
                    _smooth(log[name], smooth),
                    color=colour,
                    linestyle=(0, (4, 1 + k)),
                    linewidth=0.8,
                    label=f"{label} {name.removeprefix('loss_')}",
                )
        # a row's rate is the one of its last step: draw it over the steps the row covers
        ax_lr.plot(log["step"], log["lr"], color=colour, label=label, drawstyle="steps-pre")
        if "wait_share" in log:
            ax_wait.plot(log["step"], 100 * log["wait_share"], color=colour, label=label)
    ax_loss.set(xlabel="step", ylabel="loss (eq. 1 summed over stages, per sample)")
    ax_loss.set_yscale("log")
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize="small")
    ax_lr.set(xlabel="step", ylabel="learning rate")
    ax_lr.set_yscale("log")
    ax_lr.grid(True, which="both", alpha=0.3)
    ax_wait.set(xlabel="step", ylabel="waiting for data (% of step time)", ylim=(0, 100))
    ax_wait.grid(True, alpha=0.3)
    out = Path(out)
    fig.savefig(out, dpi=100)
    return out
