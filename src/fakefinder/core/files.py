"""Atomic file writes: a reader (or a rerun after a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

TMP_SUFFIX = ".partial"


@cache
def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write through `write(file)` into a temporary sibling, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, _file_mode())  # the permissions a plain open() would give, not mkstemp's 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True))


def remove_partials(folder: Path) -> int:
    """Delete temporary files left by writes that were killed; returns how many."""
    removed = 0
    if not Path(folder).exists():
        return 0
    for leftover in Path(folder).rglob(f"*{TMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)
        removed += 1
    return removed


def input_files(inputs, extensions: tuple[str, ...], what: str) -> list[Path]:
    """The files `inputs` name: files as given, folders searched (sorted) for these extensions;
    a missing file is `FileNotFoundError`, one of another type a `ValueError` saying `what` reads."""
    files = []
    for raw in inputs:
        path = Path(raw)
        found = (
            sorted(p for p in path.rglob("*") if p.suffix.lower() in extensions) if path.is_dir() else [path]
        )
        for file in found:
            if not file.is_file():
                raise FileNotFoundError(f"predict input not found: {file}")
            if file.suffix.lower() not in extensions:
                raise ValueError(f"{file}: {what} reads {' or '.join(extensions)} files")
            files.append(file)
    return files
