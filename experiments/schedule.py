"""Running the plan: step markers, the order of steps and their child processes.

A finished step writes `OUT/steps/<name>.json`. Of the steps ready to run, those of the most
important row go first (`Step.rank`), then the longest remaining chain.
A step with a marker is skipped on the next run, and every step that writes a store or a
training run resumes what an interrupted attempt left, so a killed experiment continues where
it stopped. With `parallel` > 1 the ready steps run as child processes, each with `threads`
torch/OpenMP threads: on a 2-core machine two single-threaded trainings give more steps per
second than one with two threads.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.config import ROOT
from experiments.plan import Step
from lcdata.errors import LcposeError


def marker_path(out: Path, name: str) -> Path:
    return out / "steps" / (name.replace("/", "__") + ".json")


def replaced_path(out: Path, name: str) -> Path:
    """Where the marker of a finished training waits while it trains again (its weights were
    lost and a later step needs them): `execute_step` folds it into the new marker as
    `replaced`, since the evaluations of its row are still the first training's."""
    marker = marker_path(out, name)
    return marker.parent / "replaced" / marker.name


def read_marker(out: Path, name: str) -> dict[str, Any] | None:
    path = marker_path(out, name)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def read_markers(folders: list[Path]) -> dict[str, dict[str, Any]]:
    """Every step marker of the experiment folders (`folder/steps/*.json`) by step name; a
    step found in several keeps the first folder's (OUT before the committed results_dir)."""
    markers: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted((folder / "steps").glob("*.json")):
            body = json.loads(path.read_text(encoding="utf-8"))
            markers.setdefault(body["step"], body)
    return markers


def output_of(step: Step) -> str | None:
    """The file or folder (relative to OUT) whose presence shows that `step`'s output is there;
    None for a step whose result is its marker. A teacher pass without `copy_of` writes into
    the store it reads, so its output is that store."""
    a = step.args
    if step.kind == "synth":
        return f"{a['dir']}/annotations/person_keypoints_train.json"
    if step.kind in ("gt_store", "correct", "export"):
        return str(a["out"])
    if step.kind == "teacher_pass":
        return str(a["store"])
    if step.kind == "fit":
        return f"{a['run']}/final.pt"
    return None


def _present(path: Path) -> bool:
    """Whether an output is there; a store counts once it has its root metadata (an
    interrupted one is resumed by its own step, which has no marker yet)."""
    return (path / "zarr.json").is_file() if path.suffix == ".zarr" else path.exists()


def drop_stale_markers(out: Path, steps: list[Step]) -> list[str]:
    """Remove the markers of finished steps whose outputs are gone but are needed again.

    A step that will run needs its dependencies' outputs; a marker restored without its store
    (or a store deleted by hand) would make it fail. Such a dependency runs again (the data and
    store steps are deterministic), and so do, in turn, its own dependencies whose outputs are
    gone, and the finished steps that wrote into the same store after it (a teacher pass into
    the GT store it reads). Returns the step names whose markers were removed.
    """
    by_name = {s.name: s for s in steps}
    done = {s.name for s in steps if marker_path(out, s.name).is_file()}

    def gone(name: str) -> bool:
        rel = output_of(by_name[name])
        return rel is not None and not _present(out / rel)

    dropped: list[str] = []
    todo = [s.name for s in steps if s.name not in done]
    while todo:
        name = todo.pop()
        for dep in by_name[name].deps:
            if dep in done and gone(dep):
                done.discard(dep)
                dropped.append(dep)
                todo.append(dep)
                rel = output_of(by_name[dep])
                for s in steps:  # in-place writers of the same store, after `dep`
                    if s.name in done and dep in s.deps and output_of(s) == rel:
                        done.discard(s.name)
                        dropped.append(s.name)
                        todo.append(s.name)
    for name in dropped:
        if by_name[name].kind == "fit":  # its row's results stay the first training's
            keep = replaced_path(out, name)
            keep.parent.mkdir(parents=True, exist_ok=True)
            marker_path(out, name).replace(keep)
        else:
            marker_path(out, name).unlink()
    return dropped


def drop_changed_markers(out: Path, steps: list[Step]) -> list[str]:
    """Remove the markers of finished steps that ran with other arguments than the plan's
    (the config changed a setting the step takes, e.g. `protocol.coverage_samples`), and of
    the finished steps that depend on them: their results are not this plan's. A training is
    never dropped this way: one that would be is an error that names its marker. Returns the
    step names whose markers were removed.
    """
    dropped: list[str] = []
    for s in steps:  # the plan lists every step after its dependencies
        body = read_marker(out, s.name)
        if body is None:
            continue
        planned = json.loads(json.dumps(s.args))  # as a marker reads back
        changed = "args" in body and body["args"] != planned
        if not changed and not any(d in dropped for d in s.deps):
            continue
        if s.kind == "fit":
            why = "its arguments differ from the plan's" if changed else (
                "it trained on the output of "
                + ", ".join(d for d in s.deps if d in dropped)
                + ", whose arguments changed"
            )  # fmt: skip
            raise LcposeError(
                f"{marker_path(out, s.name)}: {why}; to train it again, delete this marker "
                f"and {out / s.args['run']}"
            )
        dropped.append(s.name)
    for name in dropped:
        marker_path(out, name).unlink()
    return dropped


def _children(steps: list[Step]) -> dict[str, list[str]]:
    """The steps of the plan that depend on each step."""
    children: dict[str, list[str]] = {s.name: [] for s in steps}
    for s in steps:
        for d in s.deps:
            if d in children:
                children[d].append(s.name)
    return children


def _priorities(steps: list[Step]) -> dict[str, float]:
    """Longest chain of `cost` from each step to the end of the plan (list scheduling)."""
    children = _children(steps)
    cost = {s.name: s.cost for s in steps}
    prio: dict[str, float] = {}
    for s in reversed(steps):  # the plan lists every step after its dependencies
        prio[s.name] = cost[s.name] + max((prio[c] for c in children[s.name]), default=0.0)
    return prio


def _ranks(steps: list[Step], done: set[str] | frozenset[str] = frozenset()) -> dict[str, int]:
    """Each step's row priority: a training's own rank; another step's the lowest rank of the
    trainings it leads to, else of those it follows (an evaluation runs with its training).

    Two exceptions keep a training's weights from being lost with OUT (only summaries and
    exported teachers are committed): an export runs with the training it exports, so its
    model file is archived as soon as the training ends; and a training that runs again
    although its results are in (some step after it is `done`: its weights were lost, and a
    later row needs them) runs at the rank of the steps that need it, not at its own row's.
    """
    children = _children(steps)
    down: dict[str, int | None] = {}
    for s in reversed(steps):  # every step comes after its dependencies
        below = [r for c in children[s.name] if (r := down[c]) is not None]
        down[s.name] = s.rank if s.rank is not None else min(below, default=None)
    for s in steps:
        if s.kind == "fit" and s.name not in done and any(c in done for c in children[s.name]):
            needed = [r for c in children[s.name] if c not in done and (r := down[c]) is not None]
            down[s.name] = min(needed, default=down[s.name])
    rank: dict[str, int] = {}
    for s in steps:
        if s.kind == "export":
            fits = [rank[d] for d in s.deps if d in rank]
            rank[s.name] = min(fits, default=down[s.name] or 0)
        elif down[s.name] is not None:
            rank[s.name] = down[s.name]  # type: ignore[assignment]
        else:
            above = [rank[d] for d in s.deps if d in rank]
            rank[s.name] = min(above, default=0)
    return rank


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    # the child imports `experiments` from the repository like the parent does
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_plan(
    out: Path,
    steps: list[Step],
    *,
    parallel: int,
    threads: int,
    execute: Callable[[Step], dict[str, Any]],
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Run every unfinished step of `steps` once its dependencies are done.

    parallel = 1 runs the steps in this process (`execute(step)`, which writes the marker);
    otherwise up to `parallel` child processes (`python -m experiments.run --exec STEP`, each
    with `threads` torch/OpenMP threads) run at once, longest remaining chain first. A
    failed child's dependents are dropped and every other step still runs (an experiment
    runs unattended for hours: one failed training must not idle the cores for the rest of
    the session); then it raises, naming the failures and how many steps they held back.
    In this process a failure raises at once, with its traceback. Returns the names of the
    steps run.
    """
    known = {s.name for s in steps}
    done = {s.name for s in steps if marker_path(out, s.name).is_file()}
    pending = [s for s in steps if s.name not in done]
    prio, rank = _priorities(steps), _ranks(steps, done)

    def order(s: Step) -> tuple[int, float]:  # the most important row, then the longest chain
        return (rank[s.name], -prio[s.name])

    ran: list[str] = []
    if not pending:
        return ran
    total = len(pending)

    def ready(s: Step) -> bool:
        # a dependency outside `steps` (an --only selection) must already be done
        return all(d in done or (d not in known and marker_path(out, d).is_file()) for d in s.deps)

    if parallel <= 1:
        while pending:
            runnable = [s for s in pending if ready(s)]
            if not runnable:
                missing = sorted({d for s in pending for d in s.deps if d not in done})
                raise LcposeError(f"steps wait for unfinished dependencies: {', '.join(missing)}")
            step = min(runnable, key=order)
            echo(f"[{len(ran) + 1}/{total}] {step.name} ...")
            body = execute(step)
            echo(f"[{len(ran) + 1}/{total}] {step.name} done in {body['seconds']:.1f} s")
            done.add(step.name)
            pending.remove(step)
            ran.append(step.name)
        return ran

    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen, float, Any]] = {}
    failed: list[str] = []
    held_back: set[str] = set()
    env = _child_env(threads)

    def stop_children(*_: object) -> None:
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()
        raise SystemExit(130)

    old_term = signal.signal(signal.SIGTERM, stop_children)
    try:
        while pending or running:
            runnable = sorted((s for s in pending if ready(s)), key=order)
            for step in runnable[: parallel - len(running)]:
                log = open(logs / (step.name.replace("/", "__") + ".log"), "a")  # noqa: SIM115
                cmd = [sys.executable, "-m", "experiments.run", "--out", str(out)]
                cmd += ["--exec", step.name]
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
                )
                running[step.name] = (proc, time.perf_counter(), log)
                pending.remove(step)
                echo(f"[start] {step.name}")
            if not running and pending:
                missing = sorted({d for s in pending for d in s.deps if d not in done})
                raise LcposeError(f"steps wait for unfinished dependencies: {', '.join(missing)}")
            if not running:
                break
            time.sleep(0.2)
            for name, (proc, t0, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                seconds = time.perf_counter() - t0
                if proc.returncode == 0 and marker_path(out, name).is_file():
                    done.add(name)
                    ran.append(name)
                    echo(f"[done {len(ran)}/{total}] {name} in {seconds:.1f} s")
                else:
                    failed.append(name)
                    blocked = downstream(pending, {name})
                    held_back |= blocked
                    pending = [s for s in pending if s.name not in blocked]
                    echo(
                        f"[FAILED] {name} (exit {proc.returncode}); see {logs}; "
                        f"{len(blocked)} step(s) that need it will not run, the others go on"
                    )
    except KeyboardInterrupt:
        for proc, _, _ in running.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in running.values():
            proc.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
    if failed:
        tails = []
        for name in failed:
            log_file = logs / (name.replace("/", "__") + ".log")
            lines = log_file.read_text(errors="replace").strip().splitlines()
            tails.append(f"{name}: {lines[-1] if lines else 'no output'}")
        held = f" ({len(held_back)} step(s) that need them did not run)" if held_back else ""
        raise LcposeError("steps failed: " + " | ".join(tails) + held)
    return ran


def downstream(steps: list[Step], names: set[str]) -> set[str]:
    """The names of the steps among `steps` that need one of `names`, directly or through
    another of `steps`."""
    children = _children(steps)
    found: set[str] = set()
    todo = [s.name for s in steps if names & set(s.deps)]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(children[name])
    return found
