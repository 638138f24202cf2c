"""Small file helpers every stage shares: atomic writes, file hashing, JSON reading."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lcdata.errors import LcposeError


@contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside `path` to write into; renamed onto `path` when the block ends
    without an error, deleted when it raises. Readers see the old file or the whole new one.

    Args:
        path: the file to (re)place; its folder must exist.
        suffix: end of the temporary name (some writers insist on an extension, e.g. ".pt2").
    """
    path = Path(path)
    # a fresh name per writer (pid and random part); the writer creates the file, so it gets
    # the usual permissions (mkstemp would make it private)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, body: Any, *, indent: int | None = 1) -> None:
    """`body` as JSON (and a final newline) to `path`, atomically; the folder is created."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(body, indent=indent) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file's content, with one-line errors for a missing or invalid file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LcposeError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise LcposeError(f"{path}: not valid JSON ({err})") from None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
