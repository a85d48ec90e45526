"""Warm starts for local workers. A job's worker spends its first seconds importing the same
libraries every time (torch, torchvision, timm, scikit-learn, pandas, matplotlib, albumentations,
OpenCV): several CPU-seconds before the first step of a run that may be short (a
sweep's trial, an export, a predict). The local executor keeps one process that has imported them
(`python -m fakefinder.platform.executors.warm`, started by the server's first job, which waits for
it) and forks each worker from it.

A forked worker is what a fresh `python -m fakefinder.platform.worker job.json` would be: its own
session (a stop's signal reaches it alone, a kill its whole group), the job's folder as working
directory and first import path, the job's environment, its log file as stdout and stderr
(unbuffered), stdin from /dev/null, fresh random seeds, `sys.argv` as the command gives it, and its
exit status as its own. The warm process runs no model code and starts no Python thread (the native
thread pools libraries start on import, BLAS's and OpenCV's, are fork-aware, as they must be for data
loader workers that fork the same way), so a fork of it is safe. A command it cannot take (anything but
`python -m <module>`) starts cold, as does every job when no warm process can start. (torchrun's
launcher is forked too; the processes it starts for DDP and DeepSpeed are fresh ones.)

Its protocol is one JSON object per line. On stdin: `{"id", "module", "args", "env", "cwd", "log",
"imports"}` (imports: the worker's kind's libraries, imported before the fork if they are not yet).
On stdout: `{"ready": [modules], "threads": n}` once, `{"id", "pid", "threads": n}` per started
worker (or `{"id", "error"}`), with n its Python threads (1: no lock another thread could hold is
copied into the child), and `{"pid", "code"}` when a worker ends (`code` as `subprocess` gives it:
negative for a signal). When its stdin closes (the server stopped) it leaves; the workers it started
run on, as a stopped server's workers always do."""

from __future__ import annotations

import itertools
import json
import logging
import os
import select
import subprocess
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# what the warm process imports before it is ready: the worker itself; a kind's libraries come with
# its first job (`Kind.worker_imports`), so a server imports only what its jobs use
PRELOAD = ("fakefinder.platform.worker",)


# ---------------------------------------------------------------------------------- the warm process
def _imported(name: str) -> bool:
    import importlib

    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a library this install lacks (or cannot load) is left out
        return False
    return True


def _send(fd: int, message: dict) -> None:
    os.write(fd, (json.dumps(message) + "\n").encode())


def _reap(fd: int) -> None:
    """Every ended worker: its exit status, as a `{"pid", "code"}` line."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(fd, {"pid": pid, "code": os.waitstatus_to_exitcode(status)})


def _become_worker(request: dict, requests: int, replies: int) -> None:
    """In the forked child: the process a cold start of the command would have been."""
    import io
    import random

    os.setsid()
    output = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.chdir(request["cwd"])
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    for fd in {output, nothing, requests, replies} - {0, 1, 2}:
        os.close(fd)
    os.environ.clear()
    os.environ.update(request["env"])
    for name, fd in (("stdout", 1), ("stderr", 2)):  # unbuffered, as PYTHONUNBUFFERED would make them
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
            write_through=True,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    random.seed()
    for module, reseed in (("numpy", "random.seed"), ("torch", "seed")):
        if module in sys.modules:  # a fresh process would draw fresh seeds too
            target = sys.modules[module]
            for part in reseed.split("."):
                target = getattr(target, part)
            target()
    sys.path[0] = os.getcwd()  # `python -m` puts its working directory first
    sys.argv = [request["module"], *request["args"]]


def _run_module(module: str) -> int:
    import runpy
    import traceback

    try:
        from fakefinder.tasks.registry import load_plugins

        load_plugins()  # the kinds this job's environment names (FAKEFINDER_KINDS) that are new
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - as the interpreter would: the traceback, then exit 1
        traceback.print_exc()
        return 1
    return 0


def serve(requests: int = 0, replies: int = 1) -> None:
    """The warm process's loop: preload, then fork a worker per request and report how each ends."""
    import threading

    import fakefinder  # noqa: F401  (the torchvision import fix and the registered kinds, as a worker has them)

    loaded = [name for name in PRELOAD if _imported(name)]
    _send(replies, {"ready": loaded, "threads": threading.active_count()})
    pending = b""
    while True:
        readable, _, _ = select.select([requests], [], [], 0.1)
        _reap(replies)
        if not readable:
            continue
        chunk = os.read(requests, 1 << 16)
        if not chunk:
            return  # the server is gone; its workers run on
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            request = json.loads(line)
            for name in request.get("imports", []):
                if name not in sys.modules:
                    _imported(name)
            sys.stdout.flush()
            sys.stderr.flush()
            try:
                pid = os.fork()
            except OSError as exc:  # e.g. out of memory: the server starts this one cold
                _send(replies, {"id": request["id"], "error": str(exc)})
                continue
            if pid == 0:  # the worker: never back into this loop
                try:
                    _become_worker(request, requests, replies)
                except BaseException as exc:  # noqa: BLE001 - it cannot start: say why in its log
                    os.write(2, f"the worker could not start: {exc!r}\n".encode())
                    os._exit(70)
                raise SystemExit(_run_module(request["module"]))
            _send(replies, {"id": request["id"], "pid": pid, "threads": threading.active_count()})


# ---------------------------------------------------------------------------------- the server's side
class WarmStarter:
    """The server's handle on its warm process: `spawn` forks a worker from it (None: start it cold),
    `returncode` says how a worker it started ended."""

    def __init__(self, python: str | None = None, start_timeout: float = 60.0) -> None:
        self.python = python or sys.executable
        self.start_timeout = start_timeout
        self.preloaded: list[str] = []
        self.threads = 0  # the warm process's Python threads at its last fork (or when it was ready)
        self._process: subprocess.Popen | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()  # one request at a time on the pipe
        self._changed = threading.Condition()
        self._started: dict[int, int | str] = {}  # request id -> pid, or why it did not start
        self._ended: dict[int, int] = {}  # pid -> exit code
        self._abandoned: set[int] = set()  # requests answered too late (their worker started cold)
        self._ids = itertools.count(1)
        self.generation = 0  # which warm process this is (one more each start)
        self._silent = False

    def start(self) -> None:
        """Start the warm process (the first `spawn` does: a server that runs no job starts none)."""
        if self.alive:
            return
        self._ready.clear()
        self._silent = False  # its output has ended (it has gone, or is going)
        self.generation += 1
        try:
            self._process = subprocess.Popen(
                [self.python, "-m", "fakefinder.platform.executors.warm"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        except OSError as exc:
            log.warning("no warm process (%s): workers start cold", exc)
            self._process = None
            return
        threading.Thread(
            target=self._read, args=(self._process,), name="fakefinder-warm", daemon=True
        ).start()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.alive else None

    def wait_ready(self, timeout: float) -> bool:
        """Whether the warm process is ready (False at once if it has gone)."""
        with self._changed:
            self._changed.wait_for(lambda: self._ready.is_set() or self._silent or not self.alive, timeout)
        return self._ready.is_set() and self.alive

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                if "ready" in message:
                    self.preloaded = list(message["ready"])
                    self.threads = int(message.get("threads") or 0)
                    self._ready.set()
                elif "id" in message and message["id"] in self._abandoned:
                    self._abandoned.discard(message["id"])
                    if message.get("pid"):
                        _end(message["pid"])
                elif "id" in message:
                    self._started[message["id"]] = message.get("pid") or str(message.get("error"))
                    self.threads = int(message.get("threads") or self.threads)
                elif "pid" in message:
                    self._ended[message["pid"]] = message["code"]
                self._changed.notify_all()
        with self._changed:
            if process is self._process:
                self._ready.clear()
                self._silent = True
            self._changed.notify_all()

    def spawn(
        self, module: str, args: list[str], env: dict, cwd: Path, log_path: Path, imports=()
    ) -> int | None:
        """The pid of `python -m module *args` forked from the warm process, or None when it cannot
        be (gone, or no answer in time): the caller then starts it cold. The first call starts the
        warm process and waits while it imports what the worker would import itself; `imports`
        (e.g. a language kind's peft) are imported once, before the first worker that needs them."""
        if not self.alive:
            self.start()
        if not self.wait_ready(self.start_timeout):
            return None
        request_id = next(self._ids)
        request = {
            "id": request_id,
            "module": module,
            "args": [str(a) for a in args],
            "env": dict(env),
            "cwd": str(cwd),
            "log": str(log_path),
            "imports": list(imports),
        }
        try:
            with self._lock:
                self._process.stdin.write((json.dumps(request) + "\n").encode())
                self._process.stdin.flush()
        except (OSError, ValueError, AttributeError):
            return None
        with self._changed:
            self._changed.wait_for(
                lambda: request_id in self._started or not self._ready.is_set(), self.start_timeout
            )
            started = self._started.pop(request_id, None)
            if started is None:
                self._abandoned.add(request_id)  # started cold: a fork that comes later is ended
        if not isinstance(started, int):
            if started is not None:
                log.warning("warm start refused (%s): starting the worker cold", started)
            return None
        return started

    def reports_on(self, generation: int) -> bool:
        """Whether the warm process of that generation still runs (and so will say how its workers end)."""
        return self.alive and generation == self.generation

    def returncode(self, pid: int) -> int | None:
        with self._changed:
            return self._ended.get(pid)

    def forget(self, pid: int) -> None:
        with self._changed:
            self._ended.pop(pid, None)

    def close(self, timeout: float = 10.0) -> None:
        """End the warm process (workers it started run on)."""
        process, self._process = self._process, None
        if process is None:
            return
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _end(pid: int) -> None:
    import signal

    for end in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            end()
            return
        except OSError:
            continue


if __name__ == "__main__":
    serve()
