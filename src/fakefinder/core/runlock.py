"""A run folder is written by one process at a time, and a finished run is never overwritten by accident.

`RunLock` holds an exclusive `flock` on `<folder>/.<name>.lock` for as long as a run (or prepare)
writes the folder; the file names its owner (pid, host, start time, command). The kernel drops the
lock when the owner dies, even by `kill -9`, so a lock file whose lock is free is stale: the next
run clears it and says so. `guard_run_folder` refuses to start a new run in a folder that holds one
(finished, stopped or running) unless asked to resume or overwrite.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from fakefinder.core.errors import FakefinderError


class RunFolderError(FakefinderError, RuntimeError):
    """A run folder that is in use, or that holds a run this call would overwrite."""


class RunLock:
    """`with RunLock(folder, "train"):` - refused with `RunFolderError` while another live process
    holds the same lock; `stale` tells whether a dead owner's lock file was cleared."""

    def __init__(self, folder: str | Path, name: str = "run", purpose: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / f".{name}.lock"
        self.purpose = purpose or name
        self.stale: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunFolderError(
                    f"{self.folder} is in use: {_describe(owner)} holds it ({self.path.name}); wait for that "
                    f"run to "
                    "end, stop it, or choose another folder"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file its last owner removed while we waited on it
                break
            os.close(fd)
        self.stale = _read_owner(fd) or None
        os.ftruncate(fd, 0)
        os.write(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "purpose": self.purpose,
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "command": " ".join(sys.argv)[:500],
                }
            ).encode(),
        )
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:  # still our file, not a later owner's
                self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def note(self) -> str | None:
        """What to tell the user about a stale lock that was cleared."""
        if not self.stale:
            return None
        return f"cleared a stale lock in {self.folder}: {_describe(self.stale)} ended without releasing it"


def _read_owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 4096)
        return json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?"}


def _describe(owner: dict) -> str:
    purpose = owner.get("purpose", "a run")
    started = owner.get("started", "?")
    return f"{purpose} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started {started})"


def run_files(folder: str | Path, markers: Iterable[str]) -> list[Path]:
    """The paths (globs relative to `folder`) that show it holds a run."""
    folder = Path(folder)
    return sorted({p for pattern in markers for p in folder.glob(pattern)}) if folder.is_dir() else []


def guard_run_folder(
    folder: str | Path, markers: Iterable[str], resume: bool, overwrite: bool, what: str = "a run"
) -> None:
    """Before a run writes `folder`: go on when it holds no run (`markers`), or when asked to resume
    or overwrite it; else `RunFolderError` with the choices spelled out (nothing changes)."""
    found = run_files(folder, markers)
    if found and not resume and not overwrite:
        names = ", ".join(p.name for p in found[:6])
        raise RunFolderError(
            f"{folder} already holds {what} ({names}). Choose: --resume to continue it, --overwrite to "
            f"replace "
            "it, or a new output folder"
        )


def clear_run(folder: str | Path, markers: Iterable[str]) -> list[Path]:
    """Remove what a previous run left (`--overwrite`): called once the new run has checked its
    config and data, right before it writes, so a bad config never costs the old run."""
    found = run_files(folder, markers)
    for path in found:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)
    return found


@contextlib.contextmanager
def guarded_run(
    folder: str | Path, markers: Iterable[str], resume: bool, overwrite: bool, what: str, purpose: str, events
):
    """The frame of a training run in `folder`: its lock held (a stale one's note warned through
    `events`), a run the folder holds refused unless resumed or overwritten (`guard_run_folder`), and
    the caller's RNG states given back afterwards (training seeds every generator)."""
    from fakefinder.core.checkpoint import rng_state, set_rng_state

    lock = RunLock(folder, "train", purpose).acquire()
    try:
        guard_run_folder(folder, markers, bool(resume), overwrite, what)
        if lock.note:
            events.warning(lock.note, "train")
        callers = rng_state()
        try:
            yield
        finally:
            set_rng_state(callers)
    finally:
        lock.release()
