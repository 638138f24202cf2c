"""The label-correction experiment of the paper (Table 1, Table 2, Fig. 3, Fig. 5) in miniature.

    python -m experiments.run [--config experiments/lc_synth.toml] [--quick] [--out DIR]
                              [--only STEP...] [--report-only] [--list]

For every seed: synthetic train/val sets (label defects on train, the truth kept), the GT
store, a teacher trained on the defective labels (it is also the Baseline row: a student
trained on `gt` targets with the same settings would be the same run), its export and one
teacher pass, the teacher's coverage of the missing truth, one corrected store per method
(`lcdata correct`), one student per method with identical settings except the targets, the
iteration (the LC student as the next teacher, on a copy of the cache store), a clean-label
upper bound, and COCO evaluation of every model on the clean and on the noisy validation
labels. A defect sweep repeats Baseline and LC at several failure rates. docs/experiments.md
describes the steps, the layout of OUT and the budget.

The pieces: `experiments.config` (the TOML config, typed), `experiments.protocol` (methods
and data sets), `experiments.plan` (every step and its dependencies, a pure function of the
config), `experiments.steps` (what each kind of step does), `experiments.schedule` (markers,
order, child processes) and `experiments.report` (docs/results.md from the markers). This
module is the command line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click
import numpy as np

from experiments.archive import archive, fit_progress, park, restore, unpark
from experiments.config import (
    DEFAULT_CONFIG,
    QUICK_CONFIG,
    ROOT,
    load_config,
    load_resolved,
    prepare_out,
    resolve_path,
)
from experiments.plan import plan, select
from experiments.report import write_report
from experiments.schedule import (
    drop_changed_markers,
    drop_stale_markers,
    marker_path,
    read_markers,
    run_plan,
)
from experiments.steps import (
    AMP_ENV,
    CHANNELS_LAST_ENV,
    cache_curve_points,
    check_unfinished_fits,
    execute_step,
)
from lcdata.errors import LcposeError


@click.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"Experiment config (TOML) [default: {DEFAULT_CONFIG.relative_to(ROOT)}].",
)
@click.option("--quick", is_flag=True, help=f"Use {QUICK_CONFIG.relative_to(ROOT)} (minutes).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder [default: the config's `out`].")  # fmt: skip
@click.option("--only", "only_flag", is_flag=True,
              help="Run only the STEPs given (names or globs, see --list) and their "
              "unfinished dependencies.")  # fmt: skip
@click.option(
    "--report-only",
    is_flag=True,
    help="Write the report from the saved runs only (OUT and the config's results_dir).",
)
@click.option("--no-report", is_flag=True, help="Do not write the report afterwards.")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where results.md and its PNGs go [default: the config's report_dir, "
              "else OUT/report].")  # fmt: skip
@click.option("--parallel", type=int, default=None, help="Concurrent steps [config's].")
@click.option("--list", "list_steps", is_flag=True, help="Print the plan and what is done.")
@click.option(
    "--archive-only",
    is_flag=True,
    help="Copy the summaries of finished groups into the config's results_dir "
    "(to commit) and stop; safe while another process runs the experiment.",
)
@click.option("--park", "park_only", is_flag=True,
              help="Also keep the checkpoints of unfinished trainings in results_dir, so a "
              "fresh machine resumes them (with --archive-only; commit them).")  # fmt: skip
@click.option(
    "--amp",
    type=click.Choice(["off", "bf16", "fp16"]),
    default=None,
    help="Train in this precision on this machine instead of the config's train.amp (e.g. "
    "off on a CPU without native bf16); a parked fit continues in it, recorded in its "
    "marker's amp_history.",
)
@click.option(
    "--channels-last",
    is_flag=True,
    help="Train every fit with NHWC model and batches (faster convolutions on x86 CPUs "
    "and tensor-core GPUs; results change by float rounding only; a parked fit continues in it).",
)
@click.option("--exec", "exec_step", default=None, hidden=True)
@click.argument("only", nargs=-1, metavar="[STEP]...")
def main(
    config_path: Path | None,
    quick: bool,
    out: Path | None,
    only_flag: bool,
    only: tuple[str, ...],
    report_only: bool,
    no_report: bool,
    report_dir: Path | None,
    parallel: int | None,
    list_steps: bool,
    archive_only: bool,
    park_only: bool,
    amp: str | None,
    channels_last: bool,
    exec_step: str | None,
) -> None:
    """Run the label-correction experiment (resumable) and write its report."""
    if amp is not None:  # read by each fit step, in this process and its children
        os.environ[AMP_ENV] = amp
    if channels_last:
        os.environ[CHANNELS_LAST_ENV] = "1"
    if park_only and not archive_only:
        raise click.UsageError("--park goes with --archive-only")
    if bool(only) != only_flag:
        raise click.UsageError("give step names after --only, e.g. --only '*/fit/lc'")
    try:
        _main(
            config_path, quick, out, list(only), report_only, no_report, report_dir, parallel,
            list_steps, archive_only, exec_step, park_only,
        )  # fmt: skip
    except LcposeError as err:
        raise click.ClickException(str(err)) from None


def _main(
    config_path: Path | None,
    quick: bool,
    out: Path | None,
    only: list[str],
    report_only: bool,
    no_report: bool,
    report_dir: Path | None,
    parallel: int | None,
    list_steps: bool,
    archive_only: bool,
    exec_step: str | None,
    park_only: bool = False,
) -> None:
    if exec_step is not None:  # a child process of run_plan: one step, config from OUT
        if out is None:
            raise LcposeError("--exec needs --out")
        cfg = load_resolved(out)
        by_name = {s.name: s for s in plan(cfg)}
        if exec_step not in by_name:
            raise LcposeError(f"--exec: no step {exec_step!r} in the plan")
        execute_step(cfg, out.resolve(), by_name[exec_step])
        return
    if quick and config_path is not None:
        raise click.UsageError("--quick selects experiments/lc_quick.toml; give one of the two")
    cfg = load_config(QUICK_CONFIG if quick else (config_path or DEFAULT_CONFIG))
    out = (out or resolve_path(cfg.out)).resolve()
    if report_dir is None:
        report_dir = resolve_path(cfg.report_dir) if cfg.report_dir else out / "report"
    steps = plan(cfg)
    if list_steps:
        # done here, or finished on another machine and committed (results_dir)
        folders = [out] + ([resolve_path(cfg.results_dir)] if cfg.results_dir else [])
        markers = read_markers(folders)
        results = resolve_path(cfg.results_dir) if cfg.results_dir else None
        for s in steps:
            where = ""
            if s.kind == "fit" and s.name not in markers:
                got = fit_progress(out, s, results)
                if got is not None:
                    where = (f"  ({'parked' if got[1] else 'at'} step {got[0]:,} of "
                             f"{cfg.train_steps:,})")  # fmt: skip
            click.echo(f"{'done' if s.name in markers else 'todo'}  {s.name}{where}")
        fits = [s for s in steps if s.kind == "fit"]
        click.echo(f"{len(steps)} steps, {len(fits)} trainings of {cfg.train_steps} steps")
        left = [s for s in fits if s.name not in markers]
        step_s = [markers[s.name]["outputs"].get("step_s") for s in fits if s.name in markers]
        step_s = [v for v in step_s if v]
        if left and step_s:
            mean_s, par = float(np.mean(step_s)), int(cfg.parallel)
            hours = len(left) * cfg.train_steps * mean_s / 3600
            click.echo(
                f"{len(left)} trainings left: about {hours:.1f} h of training at the "
                f"{mean_s:.2f} s/step of the finished ones, {hours / par:.1f} h with "
                f"{par} at a time"
            )
        return
    results = resolve_path(cfg.results_dir) if cfg.results_dir else None
    if archive_only:
        if results is None:
            raise LcposeError(
                f"{cfg.config_file}: --archive-only needs `results_dir` in the config"
            )
        for group in archive(out, steps, results):
            click.echo(f"archived {group} into {results} (commit it)")
        if park_only:
            for name in cache_curve_points(cfg, out, steps):
                click.echo(f"{name}: learning-curve points of its checkpoints so far cached")
            for name in park(out, steps, results):
                click.echo(f"parked {name} into {results} (commit it)")
        return
    if not report_only:
        prepare_out(cfg, out)
        if results is not None:
            for group in restore(out, steps, results):
                click.echo(f"restored {group} from {results}")
            for name in unpark(out, steps, results):
                click.echo(f"unparked {name} from {results}: it resumes from its checkpoint")
        for name in drop_changed_markers(out, steps):
            click.echo(f"{name}: it ran with other settings than this config's; it runs again")
        for name in drop_stale_markers(out, steps):
            click.echo(f"{name}: its output is gone and a later step needs it; it runs again")
        done = {s.name for s in steps if marker_path(out, s.name).is_file()}
        chosen = select(steps, only, done)
        check_unfinished_fits(cfg, out, chosen)
        t0 = time.perf_counter()
        try:
            ran = run_plan(
                out,
                chosen,
                parallel=parallel or int(cfg.parallel),
                threads=int(cfg.threads),
                execute=lambda step: execute_step(cfg, out, step),
                echo=click.echo,
            )
        finally:  # also when a step failed or the run was interrupted
            if results is not None:
                for group in archive(out, steps, results):
                    click.echo(f"archived {group} into {results} (commit it)")
        click.echo(
            f"{len(ran)} steps run, {len(chosen) - len(ran)} already done, "
            f"{time.perf_counter() - t0:.0f} s; outputs in {out}"
        )
    elif not no_report:
        prepare_out(cfg, out)  # the report reads the resolved config and results_dir
    if not no_report:
        smoke = resolve_path(cfg.smoke_run) if cfg.smoke_run else None
        path = write_report(out, report_dir, smoke_run=smoke)
        click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
