"""Writer locks on a store (or a run folder) with the operating system's file locks.

One whole-store writer, or any number of slice writers with distinct slices (`--slice i/n`):
a whole-store writer holds `.lcpose-lock` exclusively; a slice writer holds it shared (slices
exclude a whole-store writer, not each other) plus `.lcpose-lock-i-of-n` exclusively. The
kernel takes each lock in one atomic call and frees it when its process dies, so a writer
killed with SIGKILL leaves nothing to clean up and a second writer can never slip in between
a check and a create.

Lock files hold the owner's host and pid, for people looking; a finished writer removes the
files it held alone. Locks are `flock(2)` locks: on a network filesystem they hold across
hosts only where the filesystem supports them (NFSv4 and most cluster filesystems do).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from lcdata.errors import LcposeError

LOCK_PREFIX = ".lcpose-lock"
"""Names of lock files start with this; store writers that empty a folder keep them."""


def lock_name(work_slice: tuple[int, int] | None = None) -> str:
    """File name of the lock of the whole store (None) or of slice (i, n)."""
    return (
        LOCK_PREFIX if work_slice is None else f"{LOCK_PREFIX}-{work_slice[0]}-of-{work_slice[1]}"
    )


def _acquire(path: Path, name: str, mode: int) -> IO[str]:
    """Open `path/name` and take `mode` (LOCK_EX or LOCK_SH) without waiting.

    A file removed by its last holder between our open and our lock is a stale inode: the
    lock is taken again on whatever the name refers to now.
    """
    target = path / name
    while True:
        f = open(target, "a+")  # noqa: SIM115 - closed by the caller's ExitStack
        try:
            fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise LcposeError(f"{path}: another process is writing this store ({name})") from None
        try:
            same = os.stat(target).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return f
        f.close()


def _release(path: Path, f: IO[str]) -> None:
    """Drop a lock; remove its file when nobody else holds it (an exclusive lock taken
    without waiting proves that), so finished runs leave no lock files behind."""
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(f.name)
    except (BlockingIOError, FileNotFoundError):
        pass
    finally:
        f.close()


@contextmanager
def write_lock(path: str | Path, *, work_slice: tuple[int, int] | None = None) -> Iterator[None]:
    """Hold the writer lock of a store (or of slice `work_slice` = (i, n) of it).

    Raises:
        LcposeError: another live process holds a conflicting lock.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
    with ExitStack() as stack:
        whole_mode = fcntl.LOCK_SH if work_slice is not None else fcntl.LOCK_EX
        whole = _acquire(path, lock_name(), whole_mode)
        stack.callback(_release, path, whole)
        mine = whole
        if work_slice is not None:
            mine = _acquire(path, lock_name(work_slice), fcntl.LOCK_EX)
            stack.callback(_release, path, mine)
        mine.truncate(0)
        mine.write(owner)
        mine.flush()
        yield
