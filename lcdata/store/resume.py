"""What `--resume` compares before it continues an output.

Whether an output already holds something, and which recorded setting differs from the new
run's.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lcdata.store.lock import LOCK_PREFIX


def has_content(path: str | Path) -> bool:
    """Whether folder `path` exists and holds anything besides writer lock files."""
    path = Path(path)
    return path.exists() and any(not p.name.startswith(LOCK_PREFIX) for p in path.iterdir())


def first_difference(old: dict[str, Any], new: dict[str, Any], keys: Iterable[str]) -> str | None:
    """The first of `keys` whose value differs between two records (a missing key counts as
    None), or None when they agree on all of them."""
    for key in keys:
        if old.get(key) != new.get(key):
            return key
    return None
