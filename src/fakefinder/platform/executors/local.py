"""Workers as local processes, one per job, each in its own session and writing its own log: forked
from the warm process (`executors/warm.py`) when it can, else started as a child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from fakefinder.platform.executors.base import ExecStatus, Executor, describe_exit


class LocalExecutor(Executor):
    """A ref is `<pid>:<create time>:<log start>:<log path>`, so a restarted server recognises (and
    never confuses with a recycled pid) a worker a previous instance started; a resumed job appends
    to its log, and its output starts at `<log start>`."""

    name = "local"

    def __init__(self, warm: bool = False) -> None:
        self._children: dict[str, subprocess.Popen] = {}
        self._forked: dict[str, tuple[int, int]] = {}  # ref -> (pid, warm generation): forked workers
        self._lock = threading.Lock()
        self.warm = None
        if warm:
            from fakefinder.platform.executors.warm import WarmStarter

            self.warm = WarmStarter()  # started by the first job

    def submit(self, job_id, command, env, cwd, log_path, resources, imports=()) -> str:
        log_path = Path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.warm is not None and command[:2] == [sys.executable, "-m"] and len(command) > 2:
            start = log_path.stat().st_size if log_path.exists() else 0
            generation = self.warm.generation
            pid = self.warm.spawn(command[2], command[3:], {**os.environ, **env}, cwd, log_path, imports)
            if pid is not None:
                ref = f"{pid}:{_created(pid):.3f}:{start}:{log_path}"
                with self._lock:
                    self._forked[ref] = (pid, generation)
                return ref
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
        ref = f"{child.pid}:{_created(child.pid):.3f}:{start}:{log_path}"
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
        with self._lock:
            forked = self._forked.get(ref)
        if forked is not None:
            pid, generation = forked
            code = self.warm.returncode(pid)
            if code is not None:
                with self._lock:
                    self._forked.pop(ref, None)
                self.warm.forget(pid)
                return ExecStatus(False, code, "" if code in (0, 3) else describe_exit(code))
            # running; or ended, and the warm process that forked it says so at its next look
            if self._process(ref) is not None or self.warm.reports_on(generation):
                return ExecStatus(True)
            return ExecStatus(False, None, "the worker is gone (its warm process ended before it)")
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

    def close(self) -> None:
        if self.warm is not None:
            self.warm.close()


def _created(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0
