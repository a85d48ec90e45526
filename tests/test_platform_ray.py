"""The Ray executor and the sharded Ray prepare against a real local Ray head (one per module, on
loopback, in its own temp dir, stopped and checked gone at the end)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import requests
from conftest import SMALL_VIDEO, make_config

from fakefinder.data import synthetic
from fakefinder.platform.executors.ray_jobs import EXIT_MARK, RayJobsError, RayJobsExecutor

RAY = Path(sys.executable).parent / "ray"
HEAD_START_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _head_processes(session: int, temp_dir: str, gcs_port: int) -> list[psutil.Process]:
    """Every process of this head: its session (the daemons `ray start` left), their descendants (the
    workers, job supervisors and job entrypoints), and anything naming its temp dir or GCS port."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            mine = os.getsid(process.pid) == session or temp_dir in " ".join(process.cmdline())
            if not mine:
                mine = process.environ().get("RAY_ADDRESS", "").endswith(f":{gcs_port}")
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
        if mine and process.pid != os.getpid():
            found[process.pid] = process
            try:
                found.update({child.pid: child for child in process.children(recursive=True)})
            except psutil.Error:
                pass
    return list(found.values())


def _stop_head(session: int, temp_dir: str, gcs_port: int) -> list[str]:
    """`ray stop`, scoped to this head: SIGTERM the raylet, then the rest, the GCS last; SIGKILL what
    is left after a few seconds. Returns what is still alive afterwards (nothing, normally)."""
    processes = _head_processes(session, temp_dir, gcs_port)

    def name(process):
        try:
            return process.name()
        except psutil.Error:
            return ""

    buckets = [[p for p in processes if name(p) == "raylet"],
               [p for p in processes if name(p) not in ("raylet", "gcs_server")],
               [p for p in processes if name(p) == "gcs_server"]]
    for bucket in buckets:
        for process in bucket:
            try:
                process.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(bucket, timeout=5)
        for process in alive:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
    left = []
    for process in _head_processes(session, temp_dir, gcs_port):
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            pass
    return left


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with the job API on loopback: 2 CPUs, no GPU, a small object store."""
    temp_dir = tempfile.mkdtemp(prefix="ffray-")  # short: Ray's socket paths must stay under 108 bytes
    gcs_port, dashboard_port = _free_port(), _free_port()
    command = [str(RAY), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
               "--ray-client-server-port", str(_free_port()),
               "--dashboard-agent-listen-port", str(_free_port()),
               "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory", "200000000",
               "--temp-dir", temp_dir, "--disable-usage-stats", "--include-dashboard", "true"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1")
    starter = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    session = starter.pid  # a new session: every daemon `ray start` leaves keeps it
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        output, _ = starter.communicate(timeout=HEAD_START_TIMEOUT_S)
        assert starter.returncode == 0, f"ray start failed:\n{output[-3000:]}"
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while True:
            try:
                if requests.get(f"{url}/api/jobs/", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"the Ray job API at {url} did not answer"
            time.sleep(0.5)
        yield url
    finally:
        if starter.poll() is None:
            starter.kill()
        left = _stop_head(session, temp_dir, gcs_port)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left after stopping the head: {left}"


@pytest.fixture(scope="module")
def executor(ray_head):
    executor = RayJobsExecutor(ray_head, stop_wait_s=60)
    yield executor
    executor.close()


def wait_done(executor, ref, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = executor.poll(ref)
        if not status.running:
            return status
        time.sleep(0.5)
    raise AssertionError(f"{ref} still runs after {timeout} s")


def wait_output(executor, ref, text, timeout=60.0, offset=0):
    output = ""
    deadline = time.monotonic() + timeout
    while text not in output:
        assert time.monotonic() < deadline, f"{text!r} never appeared in the output of {ref}:\n{output}"
        new, offset = executor.read_output(ref, offset)
        output += new
        time.sleep(0.3)
    return output, offset


def read_all(executor, ref):
    output, offset = "", 0
    while True:
        new, offset = executor.read_output(ref, offset)
        if not new:
            return output, offset
        output += new


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_command_runs_with_its_env_and_folder_and_its_log_is_mirrored(executor, tmp_path):
    log = tmp_path / "job" / "worker.log"
    code = "import os, sys; print('hello', os.environ['FF_PROBE']); print('cwd', os.getcwd()); sys.exit(0)"
    ref = executor.submit("hello", python(code), {"FF_PROBE": "from-env"}, tmp_path, log, {"num_cpus": 1})
    assert ref.startswith("fakefinder-hello-")
    status = wait_done(executor, ref)
    assert (status.running, status.returncode) == (False, 0)
    output, offset = read_all(executor, ref)
    assert "hello from-env" in output and f"cwd {tmp_path}" in output
    assert EXIT_MARK not in output  # the entrypoint's exit report is not part of the log
    assert f"Running as Ray job {ref} in {tmp_path}: {sys.executable} -c" in output
    assert log.read_text() == output
    assert executor.read_output(ref, offset) == ("", offset)
    again, _ = executor.read_output(ref, 0)  # re-reading returns the text but does not mirror it twice
    assert again == output and log.read_text() == output


def test_a_failing_command_reports_its_exit_code(executor, tmp_path):
    ref = executor.submit("fail", python("import sys; print('boom'); sys.exit(5)"), {}, tmp_path,
                          tmp_path / "worker.log", {})
    status = wait_done(executor, ref)
    assert (status.running, status.returncode) == (False, 5)
    assert "code 5" in status.reason


def test_stop_sends_sigterm_and_the_worker_saves_and_exits_3(executor, tmp_path):
    code = ("import signal, sys, time\n"
            "def save(*_):\n    print('saving checkpoint', flush=True); sys.exit(3)\n"
            "signal.signal(signal.SIGTERM, save)\nprint('ready', flush=True)\ntime.sleep(120)\n")
    ref = executor.submit("stop", python(code), {}, tmp_path, tmp_path / "worker.log", {})
    _, offset = wait_output(executor, ref, "ready")
    executor.stop(ref)
    status = wait_done(executor, ref, timeout=30)
    assert (status.running, status.returncode, status.reason) == (False, 3, "")
    rest, _ = wait_output(executor, ref, "saving checkpoint", timeout=10, offset=offset)
    assert EXIT_MARK not in rest


def test_kill_ends_a_worker_that_ignores_sigterm(executor, tmp_path):
    token = f"stubborn-{os.getpid()}-{time.time_ns()}"
    code = (f"import signal, time  # {token}\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('sleeping', flush=True)\ntime.sleep(300)\n")
    ref = executor.submit("kill", python(code), {}, tmp_path, tmp_path / "worker.log", {})
    wait_output(executor, ref, "sleeping")
    started = time.monotonic()
    executor.kill(ref)
    status = wait_done(executor, ref, timeout=40)
    assert time.monotonic() - started < 40  # well before Ray's own SIGKILL (stop_wait_s=60)
    assert not status.running and status.returncode in (None, -9) and status.reason.startswith("stopped")
    deadline = time.monotonic() + 10
    while any(token in " ".join(p.cmdline()) for p in psutil.process_iter() if _readable(p)):
        assert time.monotonic() < deadline, "the killed worker process is still alive"
        time.sleep(0.5)


def _readable(process) -> bool:
    try:
        process.cmdline()
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_gpu_job_waits_for_ray_to_give_it_a_gpu_and_stop_cancels_it(executor, tmp_path):
    """GPUs come from Ray: on this CPU-only head a job asking for one never starts."""
    ref = executor.submit("gpu", python("print('gpu job ran')"), {"CUDA_VISIBLE_DEVICES": "0"}, tmp_path,
                          tmp_path / "worker.log", {"num_cpus": 1, "num_gpus": 1})
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert executor.poll(ref).running
        time.sleep(0.5)
    assert "gpu job ran" not in executor.read_output(ref, 0)[0]
    executor.stop(ref)
    status = wait_done(executor, ref, timeout=40)
    assert status.returncode is None and status.reason.startswith("stopped")
    assert "gpu job ran" not in read_all(executor, ref)[0]


def test_unknown_refs_and_unreachable_clusters(executor):
    status = executor.poll("fakefinder-no-such-job")
    assert not status.running and status.returncode is None and "unknown" in status.reason
    assert executor.read_output("fakefinder-no-such-job", 0) == ("", 0)
    nowhere = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RayJobsError, match=nowhere.replace(".", r"\.")):
        RayJobsExecutor(nowhere).poll("fakefinder-x")


RAY_PREPARE_SCRIPT = """
import json, sys
from fakefinder.config import config_from_dict
from fakefinder.platform.ray_prepare import prepare_on_ray

config = config_from_dict(json.loads(open(sys.argv[1]).read()), "test")
def show(event):
    first_line = event.message.splitlines()[:1]
    print("event", event.type, event.stage, event.step, event.total, first_line, flush=True)
result = prepare_on_ray(config, shards=2, events=show)
print("merged manifest", result.manifest_path, result.summary["items_pending"], flush=True)
"""


def test_prepare_on_ray_shards_in_ray_tasks_and_merges_like_one_process(executor, tmp_path):
    from fakefinder.data.prepare import prepare

    tree = synthetic.make_folder_tree(tmp_path / "folder", images=2, videos=1, **SMALL_VIDEO)
    datasets = [{"name": "f", "layout": "folder", "root": str(tree)}]
    on_ray = make_config(tmp_path / "on_ray", datasets)
    (tmp_path / "config.json").write_text(json.dumps(on_ray.model_dump(mode="json")))
    (tmp_path / "job.py").write_text(RAY_PREPARE_SCRIPT)
    command = [sys.executable, str(tmp_path / "job.py"), str(tmp_path / "config.json")]
    ref = executor.submit("prepare", command, {"HF_HUB_OFFLINE": "1"}, tmp_path, tmp_path / "worker.log",
                          {"num_cpus": 0})
    direct = prepare(make_config(tmp_path / "direct", datasets), progress=False)  # meanwhile, in this process
    status = wait_done(executor, ref, timeout=150)
    output, _ = read_all(executor, ref)
    assert status.returncode == 0, output[-3000:]
    assert "event stage prepare 0 2" in output and "event progress prepare 2 2" in output
    assert "prepare shard 0/2:" in output and "prepare shard 1/2:" in output
    assert f"merged manifest {tmp_path / 'on_ray' / 'manifest.csv'} 0" in output
    for index in range(2):
        assert (tmp_path / "on_ray" / f"manifest.shard-{index}-of-2.csv").exists()
    key = ["video_id", "frame_index", "face_index"]
    merged = pd.read_csv(tmp_path / "on_ray" / "manifest.csv").sort_values(key).reset_index(drop=True)
    single = pd.read_csv(direct.manifest_path).sort_values(key).reset_index(drop=True)
    assert len(merged) == len(single) > 0
    assert sorted(set(merged.video_id)) == sorted(set(single.video_id))
    assert merged[key + ["split", "label"]].equals(single[key + ["split", "label"]])


def test_prepare_on_ray_names_the_failed_shards(executor, tmp_path):
    missing = tmp_path / "no-such-dataset"
    config = make_config(tmp_path / "out", [{"name": "m", "layout": "folder", "root": str(missing)}])
    (tmp_path / "config.json").write_text(json.dumps(config.model_dump(mode="json")))
    (tmp_path / "job.py").write_text(RAY_PREPARE_SCRIPT)
    command = [sys.executable, str(tmp_path / "job.py"), str(tmp_path / "config.json")]
    ref = executor.submit("prepare-fail", command, {"HF_HUB_OFFLINE": "1"}, tmp_path, tmp_path / "worker.log", {})
    status = wait_done(executor, ref, timeout=90)
    output, _ = read_all(executor, ref)
    assert status.returncode == 1, output[-3000:]
    assert "RayPrepareError: 2 of 2 prepare shards failed (shard 0/2: " in output and "; shard 1/2: " in output
    assert str(missing) in output
