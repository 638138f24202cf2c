"""Writer locks: never two conflicting writers, even when they start at the same instant, and
nothing to clean up after a writer killed with SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from lcdata.errors import LcposeError
from lcdata.store.lock import LOCK_PREFIX, write_lock

ROUNDS = 150
"""Rounds per pair of contenders: each round is a fresh folder both try to lock at once."""

# fork: the contenders are plain functions of this module, started from the test process
CTX = multiprocessing.get_context("fork")


def _contend(folders: list[str], work_slice, barrier, results) -> None:
    """Try the lock of each folder when the other contender does; hold it while it tries."""
    for folder in folders:
        barrier.wait()
        try:
            with write_lock(folder, work_slice=work_slice):
                results.put((folder, True))
                barrier.wait()  # the other contender tries while we hold the lock
        except LcposeError:
            results.put((folder, False))
            barrier.wait()


def _race(tmp_path: Path, first, second) -> list[tuple[bool, bool]]:
    """Per round, whether each of two contenders with these work slices got the lock."""
    folders = [str(tmp_path / f"round{r}") for r in range(ROUNDS)]
    barrier = CTX.Barrier(2)
    queues = [CTX.Queue(), CTX.Queue()]
    procs = [
        CTX.Process(target=_contend, args=(folders, part, barrier, q))
        for part, q in zip((first, second), queues, strict=True)
    ]
    for p in procs:
        p.start()
    got = [dict(q.get(timeout=60) for _ in folders) for q in queues]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return [(got[0][f], got[1][f]) for f in folders]


@pytest.mark.parametrize(
    ("first", "second", "both_may_write"),
    [
        (None, (0, 2), False),  # a whole-store writer and a slice writer
        (None, None, False),  # two whole-store writers
        ((1, 2), (1, 2), False),  # two writers of the same slice
        ((0, 2), (1, 2), True),  # different slices share the store
    ],
)
def test_writers_starting_together_never_conflict(
    tmp_path: Path, first, second, both_may_write: bool
) -> None:
    outcomes = _race(tmp_path, first, second)
    if both_may_write:
        assert all(a and b for a, b in outcomes)
    else:
        assert all(a != b for a, b in outcomes), "exactly one writer proceeds in every round"
        winners = {a for a, _ in outcomes}
        assert len(winners) >= 1  # (which one wins is up to the scheduler)
    # every writer left, so nothing is locked and no lock file is left behind
    assert not list(tmp_path.rglob(f"{LOCK_PREFIX}*"))


def _hold(folder: str, ready) -> None:
    with write_lock(folder):
        ready.set()
        time.sleep(60)


def test_a_writer_killed_with_sigkill_leaves_nothing_to_clean_up(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    ready = CTX.Event()
    proc = CTX.Process(target=_hold, args=(str(folder), ready))
    proc.start()
    assert ready.wait(30)
    with pytest.raises(LcposeError, match="another process is writing this store"):
        with write_lock(folder):
            pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert (folder / LOCK_PREFIX).exists()  # the dead writer's file is still there ...
    with write_lock(folder):  # ... but holds no lock: the next writer just takes it
        assert str(os.getpid()) in (folder / LOCK_PREFIX).read_text()
    assert not list(folder.glob(f"{LOCK_PREFIX}*"))


def test_a_refused_writer_leaves_the_holders_lock_alone(tmp_path: Path) -> None:
    with write_lock(tmp_path, work_slice=(0, 3)):
        with pytest.raises(LcposeError, match=r"\.lcpose-lock\)"):
            with write_lock(tmp_path):
                pass
        assert (tmp_path / f"{LOCK_PREFIX}-0-of-3").exists()
        with write_lock(tmp_path, work_slice=(2, 3)):  # another slice may still join
            pass
        assert (tmp_path / LOCK_PREFIX).exists()  # still shared by the first slice writer
    assert not list(tmp_path.glob(f"{LOCK_PREFIX}*"))
