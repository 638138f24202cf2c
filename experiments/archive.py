"""Committed summaries of finished runs: what lets an experiment resume on a fresh machine.

`OUT` (runs/<name>) holds stores and checkpoints, gigabytes that are never committed. What
the report reads is small: the step markers (`OUT/steps/*.json`, which carry every metric)
and a few files beside them (training logs, run records, corruption counts). When every step
of a *group* (the steps of one data set, e.g. `p0.10_q0.10_s0/...`) is done, `archive`
copies those into the config's `results_dir` (e.g. experiments/results/<name>/), to commit.
On a machine where OUT is gone, `restore` puts them back, so the runner skips the group's
steps and the report is written as before. Only whole groups are archived: a restored step
never waits for a store or checkpoint that is not there.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from experiments.plan import Step
from experiments.schedule import marker_path
from lcdata.io import write_json_atomic

SMALL_FILES = ("runs/*/log.csv", "runs/*/run.json", "data/corruption.json", "figures/*.png")
"""Files of a group (relative to OUT/<group>/) archived with its markers."""

MAX_FILE_BYTES = 2_000_000
"""A file larger than this is never archived (a summary must stay small)."""

DONE = "ARCHIVED.json"


def group_of(step: Step) -> str:
    """The data set a step belongs to: the first part of its name."""
    return step.name.split("/", 1)[0]


def groups(steps: list[Step]) -> dict[str, list[Step]]:
    found: dict[str, list[Step]] = {}
    for step in steps:
        found.setdefault(group_of(step), []).append(step)
    return found


def archive(out: Path, steps: list[Step], dest: Path) -> list[str]:
    """Copy the markers and small files of every finished group of `steps` into `dest`.

    Returns the groups archived now (a group archived before with the same markers is left).
    """
    written = []
    for group, members in groups(steps).items():
        markers = [marker_path(out, s.name) for s in members]
        if not all(m.is_file() for m in markers):
            continue
        record = dest / group / DONE
        names = sorted(s.name for s in members)
        if record.is_file() and json.loads(record.read_text())["steps"] == names:
            continue
        (dest / "steps").mkdir(parents=True, exist_ok=True)
        for m in markers:
            shutil.copy2(m, dest / "steps" / m.name)
        files = []
        for pattern in SMALL_FILES:
            for path in sorted((out / group).glob(pattern)):
                if path.is_file() and path.stat().st_size <= MAX_FILE_BYTES:
                    target = dest / group / path.relative_to(out / group)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target)
                    files.append(str(path.relative_to(out / group)))
        write_json_atomic(record, {"steps": names, "files": files})
        written.append(group)
    return written


def restore(out: Path, steps: list[Step], dest: Path) -> list[str]:
    """Put archived groups back into `out` where their markers are missing.

    A group is restored only when its archive holds a marker for every step the plan has
    for it now (a group whose plan grew since is run again). Returns the restored groups.
    """
    restored = []
    for group, members in groups(steps).items():
        record = dest / group / DONE
        if not record.is_file():
            continue
        body = json.loads(record.read_text())
        if sorted(s.name for s in members) != body["steps"]:
            continue
        if all(marker_path(out, s.name).is_file() for s in members):
            continue
        for s in members:
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
