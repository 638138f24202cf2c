"""Committed summaries of finished runs: what lets an experiment resume on a fresh machine.

`OUT` (runs/<name>) holds stores and checkpoints, gigabytes that are never committed. What
the report reads is small: the step markers (`OUT/steps/*.json`, which carry every metric)
and a few files beside them (training logs, run records, corruption counts). When every step
of a *group* (the steps of one data set, e.g. `p0.10_q0.10_s0/...`) finishes, `archive`
copies those into the config's `results_dir` (e.g. experiments/results/<name>/), to commit;
a group still running is archived as far as it got. On a machine where OUT is gone,
`restore` puts them back, so the runner skips the finished steps and the report is written
as before. A restored step never waits for a store or checkpoint that is not there: of a
group that is not whole, only the steps whose results are their markers (and the exported
teachers) come back, and the stores they need are rebuilt (`reusable`).

A training cut off with its session would be lost with OUT, so `park` also keeps what an
unfinished fit needs to continue: its checkpoint, log and run record (a few MB for the tiny
model), and for a fit with a learning curve its points so far (`--park` evaluates the kept
checkpoints first, so they need not be committed), under `<results_dir>/<group>/parked/`.
On a fresh machine `unpark` puts them back before the group's steps run again: the data and
store steps are deterministic (same seeds, same files, same store identity), so the fit
resumes from the parked step and gives the batches it would have given (`trainer fit
--resume`). Parked files are removed once their group is archived.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from experiments.plan import Step
from experiments.schedule import marker_path, output_of, replaced_path
from lcdata.io import write_json_atomic

SMALL_FILES = (
    "runs/*/log.csv", "runs/*/run.json", "data/corruption.json", "figures/*.png", "models/*.pt2",
)  # fmt: skip
"""Files of a group (relative to OUT/<group>/) archived with its markers; the exported
teachers (a few MB for the tiny model) let a grown plan reuse them (`restore`)."""

MAX_FILE_BYTES = 2_000_000
"""A file larger than this is never archived (a summary must stay small)."""

DONE = "ARCHIVED.json"
PARKED = "parked"
PARK_FILES = ("checkpoint.pt", "log.csv", "run.json", "curve/*.json", "steps/*.pt")
"""Files of an unfinished fit's run folder that `park` keeps; of the kept checkpoints
(`steps/`), only those without a learning-curve point (`curve/`, `experiments.steps`)."""


def group_of(step: Step) -> str:
    """The data set a step belongs to: the first part of its name."""
    return step.name.split("/", 1)[0]


def groups(steps: list[Step]) -> dict[str, list[Step]]:
    found: dict[str, list[Step]] = {}
    for step in steps:
        found.setdefault(group_of(step), []).append(step)
    return found


def parked_dir(step: Step, dest: Path) -> Path:
    """Where `park` keeps a fit step's run folder: `dest/<group>/parked/<run within group>`."""
    return dest / group_of(step) / PARKED / Path(step.args["run"]).relative_to(group_of(step))


def archive(out: Path, steps: list[Step], dest: Path) -> list[str]:
    """Copy the markers and small files of the finished steps of every group into `dest`.

    A group is archived as far as it got: a group of many long trainings spans sessions,
    and what finished must not be lost with OUT. The record lists every step archived so
    far (those of earlier records that the plan still has, and those finished now); only a
    group whose every step is done drops its parked fits. Returns the groups archived now
    (a group whose record already lists the same steps is left).
    """
    written = []
    for group, members in groups(steps).items():
        finished = {s.name for s in members if marker_path(out, s.name).is_file()}
        if not finished:
            continue
        record = dest / group / DONE
        names = {s.name for s in members}
        old = json.loads(record.read_text()) if record.is_file() else {"steps": [], "files": []}
        listed = sorted((set(old["steps"]) & names) | finished)
        if old["steps"] == listed and not any(_changed(out, dest, n) for n in finished):
            continue  # a step that ran again (new settings) has a new marker to keep
        (dest / "steps").mkdir(parents=True, exist_ok=True)
        for name in sorted(finished):
            shutil.copy2(marker_path(out, name), dest / "steps" / marker_path(out, name).name)
        # the run folders of unfinished fits are parked (`park`), not archived
        running = [
            out / s.args["run"] for s in members if s.kind == "fit" and s.name not in finished
        ]
        files = set(old["files"])
        for pattern in SMALL_FILES:
            for path in sorted((out / group).glob(pattern)):
                if any(path.is_relative_to(r) for r in running):
                    continue
                if path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
                    target = dest / group / path.relative_to(out / group)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                    files.add(str(path.relative_to(out / group)))
        write_json_atomic(record, {"steps": listed, "files": sorted(files)})
        if set(listed) == names:  # finished: nothing to resume
            shutil.rmtree(dest / group / PARKED, ignore_errors=True)
        for s in members:  # a parked fit that has finished since
            if s.kind == "fit" and s.name in finished:
                rel = Path(s.args["run"]).relative_to(group)
                shutil.rmtree(dest / group / PARKED / rel, ignore_errors=True)
        written.append(group)
    return written


def _changed(out: Path, dest: Path, name: str) -> bool:
    """Whether a finished step's marker differs from its archived copy (or has none)."""
    copy = dest / "steps" / marker_path(out, name).name
    return not copy.is_file() or copy.read_bytes() != marker_path(out, name).read_bytes()


def park(out: Path, steps: list[Step], dest: Path) -> list[str]:
    """Keep the checkpoints of every unfinished fit of `steps` in `dest` (module doc).

    Returns the fit steps parked (those with a checkpoint to keep).
    """
    parked = []
    for step in steps:
        if step.kind != "fit" or marker_path(out, step.name).is_file():
            continue
        run = out / step.args["run"]
        if not (run / "checkpoint.pt").is_file():
            continue
        target = parked_dir(step, dest)
        shutil.rmtree(target, ignore_errors=True)
        for pattern in PARK_FILES:
            for path in sorted(run.glob(pattern)):
                if path.parent.name == "steps" and (run / "curve" / f"{path.stem}.json").is_file():
                    continue  # its curve point is kept: the checkpoint is not needed again
                copy = target / path.relative_to(run)
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, copy)
        parked.append(step.name)
    return parked


def fit_progress(out: Path, step: Step, dest: Path | None) -> tuple[int, bool] | None:
    """How far an unfinished fit got: (last logged step, whether only its parked copy in
    `dest` has it), or None when it has not started anywhere."""
    places = [(out / step.args["run"], False)]
    if dest is not None:
        places.append((parked_dir(step, dest), True))
    for run, parked in places:
        log = run / "log.csv"
        if log.is_file():
            lines = log.read_text(encoding="utf-8").strip().splitlines()
            if len(lines) > 1:  # a header and at least one row
                return int(lines[-1].split(",", 1)[0]), parked
    return None


def unpark(out: Path, steps: list[Step], dest: Path) -> list[str]:
    """Put parked fits back where their run folder has no checkpoint; returns their steps."""
    unparked = []
    for step in steps:
        if step.kind != "fit" or marker_path(out, step.name).is_file():
            continue
        source = parked_dir(step, dest)
        run = out / step.args["run"]
        if not (source / "checkpoint.pt").is_file() or (run / "checkpoint.pt").is_file():
            continue
        shutil.copytree(source, run, dirs_exist_ok=True)
        unparked.append(step.name)
    return unparked


def reusable(members: list[Step], archived: set[str], files: set[str]) -> set[str]:
    """The archived steps of a group whose markers can be restored when its plan has grown.

    A step that will run needs its dependencies' outputs. An archived dependency whose
    result is its marker (no `output_of`), or an export whose model file was archived, is
    restored; any other (a store, a training) runs again, and so, in turn, do its own
    dependencies of that kind: the data and store steps are deterministic and cheap, and a
    teacher's training is not repeated while its export is archived.
    """
    by_name = {s.name: s for s in members}
    group = group_of(members[0])

    def available(name: str) -> bool:  # only small files are archived: of outputs, exports
        rel = output_of(by_name[name])
        return rel is None or str(Path(rel).relative_to(group)) in files

    keep = {s.name for s in members if s.name in archived}
    changed = True
    while changed:
        changed = False
        for s in members:
            if s.name in keep:
                continue
            for dep in s.deps:
                if dep in keep and not available(dep):
                    keep.discard(dep)
                    changed = True
    return keep


def restore(out: Path, steps: list[Step], dest: Path) -> list[str]:
    """Put archived groups back into `out` where their markers are missing.

    A group whose plan is the one archived is restored whole. A group whose plan has grown
    since (new rows) gets back the markers of the steps the new ones do not need to run
    again (`reusable`), so only the new steps and what they need run. Returns the restored
    groups.
    """
    restored = []
    for group, members in groups(steps).items():
        record = dest / group / DONE
        if not record.is_file():
            continue
        body = json.loads(record.read_text())
        names = {s.name for s in members}
        if not set(body["steps"]) <= names:
            continue  # the plan lost steps: not the experiment that was archived
        keep = names if sorted(names) == body["steps"] else reusable(
            members, set(body["steps"]), set(body["files"])
        )  # fmt: skip
        if all(marker_path(out, n).is_file() for n in keep):
            continue
        for s in members:
            if s.name not in keep:
                if s.kind == "fit" and s.name in body["steps"]:
                    # a training that runs again (a later row needs its lost weights); its
                    # row's results are the first training's, whose marker the new one keeps
                    keep_first = replaced_path(out, s.name)
                    if not marker_path(out, s.name).is_file() and not keep_first.is_file():
                        keep_first.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(dest / "steps" / marker_path(out, s.name).name, keep_first)
                continue
            target = marker_path(out, s.name)
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dest / "steps" / target.name, target)
        for name in body["files"]:
            target = out / group / name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(dest / group / name, target)
        restored.append(group)
    return restored
