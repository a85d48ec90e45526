"""Local workers forked from the warm process are what a cold `python -m` start would give: their own
session, folder, environment, arguments, log, fresh seeds and exit status; stop and kill reach them;
without a warm process jobs start cold."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from fakefinder.platform.executors.local import LocalExecutor

PROBE = """
import json, os, sys
import numpy, torch
print(json.dumps({
    "pid": os.getpid(), "sid": os.getsid(0), "pgid": os.getpgid(0), "cwd": os.getcwd(), "argv": sys.argv[1:],
    "env": os.environ.get("PROBE_VALUE"), "stdin": sys.stdin.read(), "path0": sys.path[0],
    "draws": [float(numpy.random.rand()), float(torch.rand(1))], "wave": "wave" in sys.modules,
}))
print("to stderr", file=sys.stderr)
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
"""

WAITS_FOR_STOP = """
import os, signal, subprocess, sys, time
def stop(*_):
    print("saved and stopping", flush=True)
    sys.exit(3)
if os.environ.get("PROBE_IGNORE") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # its group: a loader
else:
    signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def warm():
    executor = LocalExecutor(warm=True)
    assert executor.warm.pid is None  # a server that runs no job starts no warm process
    executor.warm.start()
    assert executor.warm.wait_ready(120), "the warm process never said it was ready"
    yield executor
    executor.close()


def submit(executor: LocalExecutor, folder: Path, source: str, *args: str, imports=(), **env: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.py").write_text(source)
    command = [sys.executable, "-m", "probe", *args]
    return executor.submit("job", command, env, folder, folder / "worker.log", {}, imports)


def ended(executor: LocalExecutor, ref: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = executor.poll(ref)
        if not status.running:
            return status
        time.sleep(0.05)
    raise AssertionError(f"{ref} still runs after {timeout} s")


def probe_output(executor: LocalExecutor, ref: str) -> tuple[dict, str]:
    text, _ = executor.read_output(ref, 0)
    return json.loads(text.splitlines()[0]), text


def test_a_forked_worker_is_what_a_cold_start_gives(warm, tmp_path):
    assert warm.warm.preloaded == ["fakefinder.platform.worker"]  # a kind's libraries come with its jobs
    cold = LocalExecutor(warm=False)
    seen = {}
    # the first job's kind imports torch and `wave` (and a library that is not installed): the warm
    # process imports them before forking, and keeps them for the next job
    kind = ("torch", "sklearn.metrics", "wave", "no_such_library")
    runs = (("warm", warm, kind), ("warm again", warm, ()), ("cold", cold, kind))
    for name, executor, imports in runs:
        folder = tmp_path / name
        (folder / "worker.log").parent.mkdir(parents=True)
        (folder / "worker.log").write_text("an earlier attempt's log\n")  # a resume appends
        ref = submit(
            executor, folder, PROBE, "a b", "--flag", imports=imports, PROBE_VALUE="x y", PROBE_EXIT="7"
        )
        assert (ref in warm._forked) == (executor is warm)
        status = ended(executor, ref)
        assert status.returncode == 7 and "exited with code 7" in status.reason
        probe, text = probe_output(executor, ref)
        assert "to stderr" in text and "earlier attempt" not in text
        assert (folder / "worker.log").read_text().startswith("an earlier attempt's log\n")
        assert probe["sid"] == probe["pgid"] == probe["pid"]  # a session of its own
        assert probe["cwd"] == probe["path0"] == str(folder)
        assert (probe["argv"], probe["env"], probe["stdin"]) == (["a b", "--flag"], "x y", "")
        assert probe["wave"] == (executor is warm)
        if executor is warm:  # it imported them without starting a Python thread: forking it is safe
            assert warm.warm.threads == 1
        seen[name] = probe["draws"]
    assert len({tuple(d) for d in seen.values()}) == 3  # each process draws fresh seeds
    cold.close()


def test_stop_and_kill_reach_a_forked_worker(warm, tmp_path):
    def started(folder: Path, **env) -> str:
        ref = submit(warm, folder, WAITS_FOR_STOP, **env)
        deadline = time.monotonic() + 60
        while "ready" not in warm.read_output(ref, 0)[0]:
            assert time.monotonic() < deadline and warm.poll(ref).running, warm.read_output(ref, 0)
            time.sleep(0.05)
        return ref

    ref = started(tmp_path / "stops")
    warm.stop(ref)
    status = ended(warm, ref)
    assert status.returncode == 3 and "saved and stopping" in warm.read_output(ref, 0)[0]

    ref = started(tmp_path / "ignores", PROBE_IGNORE="1")
    pid = int(ref.split(":")[0])
    loader = psutil.Process(pid).children()[0]
    warm.stop(ref)
    time.sleep(0.5)
    assert warm.poll(ref).running  # it ignores SIGTERM
    warm.kill(ref)
    status = ended(warm, ref)
    assert status.returncode == -signal.SIGKILL and "SIGKILL" in status.reason
    loader.wait(timeout=10)  # the kill took its whole group


def test_a_worker_outlives_its_warm_process_and_without_one_workers_start_cold(warm, tmp_path):
    folder = tmp_path / "not-python-m"
    folder.mkdir()
    ref = warm.submit("job", [sys.executable, "-c", "print(1)"], {}, folder, folder / "worker.log", {})
    assert ref not in warm._forked and ended(warm, ref).returncode == 0  # only `python -m` is forked
    ref = submit(warm, tmp_path / "running", WAITS_FOR_STOP)
    assert ref in warm._forked
    os.kill(warm.warm.pid, signal.SIGKILL)
    warm.warm._process.wait(timeout=10)
    assert warm.poll(ref).running  # its worker runs on, followed by its pid
    warm.kill(ref)
    status = ended(warm, ref)
    assert status.returncode is None and "warm process ended" in status.reason
    warm.warm.python = str(tmp_path / "no-such-python")  # no warm process can start again
    cold = submit(warm, tmp_path / "cold", PROBE, PROBE_EXIT="0")
    assert cold not in warm._forked and ended(warm, cold).returncode == 0
