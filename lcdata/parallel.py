"""Running work in parallel: ordered futures, worker processes, the dask runner.

The dask runner works on local threads or a dask.distributed scheduler, with a tqdm bar.
Every stage that processes a store block by block goes through here, so progress bars,
read-ahead and the distributed connection are written once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import dask
from tqdm import tqdm

from lcdata.errors import LcposeError

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10
"""Seconds to wait for a --scheduler to answer (distributed retries until then)."""

WORKER_NICENESS = 10
"""Scheduling priority drop of helper processes that must not slow the main loop (the GT
rendering processes of the one-pass build)."""


def iter_futures(
    items: list[int], submit: Callable[[int], Future], *, ahead: int = 2
) -> Iterator[tuple[int, Any]]:
    """Yield (item, result) in order while up to `ahead` later items are in flight.

    `submit(item)` starts the work of one item and returns its future. Stopping early (an
    error, Ctrl-C, the consumer leaving) cancels what has not started.
    """
    queue: list[tuple[int, Future]] = []
    todo = iter(items)
    try:
        for item in todo:
            queue.append((item, submit(item)))
            if len(queue) > ahead:
                break
        while queue:
            item, future = queue.pop(0)
            result = future.result()
            nxt = next(todo, None)
            if nxt is not None:
                queue.append((nxt, submit(nxt)))
            yield item, result
    finally:
        for _, future in queue:
            future.cancel()


def iter_threaded(
    items: list[int], produce: Callable[[int], T], *, workers: int, ahead: int = 2
) -> Iterator[tuple[int, T]]:
    """Yield (item, produce(item)) in order, later items produced by `workers` threads."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        yield from iter_futures(items, lambda item: pool.submit(produce, item), ahead=ahead)


def exit_with_parent(parent_pid: int, niceness: int = 0) -> None:
    """Worker-process initializer: exit when the parent dies (a kill -9 of the parent would
    otherwise leave a pool's workers waiting forever on its task queue), and run at
    `niceness` (a lower priority: where the main loop and helpers compete for the cores, the
    main loop, the pace of the whole job, goes first and helpers take what is left)."""
    if niceness:
        os.nice(niceness)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class TqdmCallback(dask.callbacks.Callback):
    """Advance a tqdm bar whenever a task whose key starts with `prefix` finishes (dask's own
    `tqdm.dask.TqdmCallback` counts every task, reads included)."""

    def __init__(self, bar: tqdm, prefix: str) -> None:
        super().__init__()
        self._bar = bar
        self._prefix = prefix

    def _posttask(self, key, result, dsk, state, id) -> None:  # dask's signature
        name = key[0] if isinstance(key, tuple) else key
        if str(name).startswith(self._prefix):
            self._bar.update()


def compute_with_progress(
    tasks: list[Any],
    *,
    scheduler: str | None,
    desc: str,
    prefix: str,
    progress: bool,
    num_workers: int | None = None,
) -> list[Any]:
    """Compute dask objects on local threads or a dask.distributed scheduler, with a tqdm bar.

    Args:
        scheduler: None for the local threaded scheduler, else a distributed scheduler
            address such as "tcp://10.0.0.5:8786".
        prefix: key prefix of the tasks the bar counts (one per unit of work).
        num_workers: threads of the local scheduler (default: dask's, the CPU count).
    """
    bar = tqdm(total=len(tasks), desc=desc, unit="block", disable=not progress)
    try:
        if not tasks:
            return []
        if scheduler is None:
            with TqdmCallback(bar, prefix):
                return list(dask.compute(*tasks, scheduler="threads", num_workers=num_workers))
        client = connect(scheduler)
        try:
            from distributed import as_completed

            futures = client.compute(tasks)
            for _ in as_completed(futures, loop=client.loop):
                bar.update()
            return client.gather(futures)
        finally:
            client.close()
    finally:
        bar.close()


def connect(address: str) -> Any:
    """A dask.distributed Client for `address`, with one-line errors."""
    try:
        from distributed import Client
    except ImportError:
        raise LcposeError(
            "--scheduler needs dask.distributed: pip install 'lcpose[distributed]'"
        ) from None
    try:
        return Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise LcposeError(f"--scheduler {address}: cannot connect ({err})") from None
