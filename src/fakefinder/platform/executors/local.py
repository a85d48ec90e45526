"""Workers as local child processes, one per job, each in its own session and writing its own log."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import psutil

from fakefinder.platform.executors.base import ExecStatus, Executor, describe_exit


class LocalExecutor(Executor):
    """A ref is `<pid>:<create time>:<log start>:<log path>`, so a restarted server recognises (and
    never confuses with a recycled pid) a worker a previous instance started; a resumed job appends
    to its log, and its output starts at `<log start>`."""

    name = "local"

    def __init__(self) -> None:
        self._children: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def submit(self, job_id, command, env, cwd, log_path, resources) -> str:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            start = log.tell()
            child = subprocess.Popen(
                command,
                cwd=cwd,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            created = psutil.Process(child.pid).create_time()
        except psutil.Error:
            created = 0.0
        ref = f"{child.pid}:{created:.3f}:{start}:{log_path}"
        with self._lock:
            self._children[ref] = child
        return ref

    @staticmethod
    def _parse(ref: str) -> tuple[int, float, int, Path]:
        pid, created, start, path = ref.split(":", 3)
        return int(pid), float(created), int(start), Path(path)

    def _process(self, ref: str) -> psutil.Process | None:
        """The worker behind `ref` if it is still alive (and is that worker, not a reused pid)."""
        pid, created, _, _ = self._parse(ref)
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - created) > 1 or process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.Error:
            return None

    def poll(self, ref: str) -> ExecStatus:
        with self._lock:
            child = self._children.get(ref)
        if child is not None:
            code = child.poll()
            if code is None:
                return ExecStatus(True)
            with self._lock:
                self._children.pop(ref, None)
            return ExecStatus(False, code, "" if code in (0, 3) else describe_exit(code))
        if self._process(ref) is not None:  # started by an earlier server instance
            return ExecStatus(True)
        return ExecStatus(False, None, "the worker is gone (started by an earlier server instance)")

    def read_output(self, ref: str, offset: int) -> tuple[str, int]:
        _, _, start, path = self._parse(ref)
        try:
            with open(path, "rb") as handle:
                handle.seek(start + offset)
                data = handle.read()
        except FileNotFoundError:
            return "", offset
        cut = data.rfind(b"\n") + 1  # whole lines only: the rest comes next time
        return data[:cut].decode("utf-8", "replace"), offset + cut

    def stop(self, ref: str) -> None:
        """SIGTERM to the worker alone: it stops its data loader processes itself after saving."""
        process = self._process(ref)
        if process is not None:
            try:
                process.terminate()
            except psutil.Error:
                pass

    def kill(self, ref: str) -> None:
        """SIGKILL to the worker's whole process group (its data loader processes too)."""
        process = self._process(ref)
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                process.kill()
            except psutil.Error:
                pass
