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

from conftest import SMALL_VIDEO, TINY_JOB, make_config, wait_for_job
from fakefinder import synthetic
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

    buckets = [
        [p for p in processes if name(p) == "raylet"],
        [p for p in processes if name(p) not in ("raylet", "gcs_server")],
        [p for p in processes if name(p) == "gcs_server"],
    ]
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
    command = [
        str(RAY),
        "start",
        "--head",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(gcs_port),
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dashboard_port),
        "--ray-client-server-port",
        str(_free_port()),
        "--dashboard-agent-listen-port",
        str(_free_port()),
        "--num-cpus",
        "2",
        "--num-gpus",
        "0",
        "--object-store-memory",
        "200000000",
        "--temp-dir",
        temp_dir,
        "--disable-usage-stats",
        "--include-dashboard",
        "true",
    ]
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", HF_HUB_OFFLINE="1")
    starter = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
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
    ref = executor.submit(
        "fail", python("import sys; print('boom'); sys.exit(5)"), {}, tmp_path, tmp_path / "worker.log", {}
    )
    status = wait_done(executor, ref)
    assert (status.running, status.returncode) == (False, 5)
    assert "code 5" in status.reason


def test_stop_sends_sigterm_and_the_worker_saves_and_exits_3(executor, tmp_path):
    # the words waited for are put together at run time: the log's first line quotes the command
    # itself, and a stop sent on seeing them there would land before the handler is set
    code = (
        "import signal, sys, time\ndef save(*_):\n    print('saving ' + 'checkpoint', flush=True); "
        "sys.exit(3)\nsignal.signal(signal.SIGTERM, save)\nprint('re' + 'ady', flush=True)\ntime.sleep(120)\n"
    )
    ref = executor.submit("stop", python(code), {}, tmp_path, tmp_path / "worker.log", {})
    _, offset = wait_output(executor, ref, "ready")
    executor.stop(ref)
    status = wait_done(executor, ref, timeout=30)
    assert (status.running, status.returncode, status.reason) == (False, 3, "")
    rest, _ = wait_output(executor, ref, "saving checkpoint", timeout=10, offset=offset)
    assert EXIT_MARK not in rest


def test_kill_ends_a_worker_that_ignores_sigterm(executor, tmp_path):
    token = f"stubborn-{os.getpid()}-{time.time_ns()}"
    code = (
        f"import signal, time  # {token}\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('slee' + 'ping', flush=True)\ntime.sleep(300)\n"
    )  # assembled: see the test above
    ref = executor.submit("kill", python(code), {}, tmp_path, tmp_path / "worker.log", {})
    wait_output(executor, ref, "sleeping")
    started = time.monotonic()
    executor.kill(ref)
    status = wait_done(executor, ref, timeout=40)
    assert time.monotonic() - started < 40  # well before Ray's own SIGKILL (stop_wait_s=60)
    assert not status.running and status.returncode in (None, -9) and status.reason.startswith("stopped")
    deadline = time.monotonic() + 10
    while any(token in _command_line(p) for p in psutil.process_iter()):
        assert time.monotonic() < deadline, "the killed worker process is still alive"
        time.sleep(0.5)


def _command_line(process) -> str:
    """The process's command line; empty for one that ended (or turned zombie) meanwhile."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def test_a_gpu_job_waits_for_ray_to_give_it_a_gpu_and_stop_cancels_it(executor, tmp_path):
    """GPUs come from Ray: on this CPU-only head a job asking for one never starts."""
    ref = executor.submit(
        "gpu",
        python("print('gpu job ran')"),
        {"CUDA_VISIBLE_DEVICES": "0"},
        tmp_path,
        tmp_path / "worker.log",
        {"num_cpus": 1, "num_gpus": 1},
    )
    deadline = time.monotonic() + 2  # a job Ray could place starts well within this here
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


def test_prepare_on_ray_names_the_failed_shards(executor, tmp_path):
    missing = tmp_path / "no-such-dataset"
    config = make_config(tmp_path / "out", [{"name": "m", "layout": "folder", "root": str(missing)}])
    (tmp_path / "config.json").write_text(json.dumps(config.model_dump(mode="json")))
    (tmp_path / "job.py").write_text(RAY_PREPARE_SCRIPT)
    command = [sys.executable, str(tmp_path / "job.py"), str(tmp_path / "config.json")]
    ref = executor.submit(
        "prepare-fail", command, {"HF_HUB_OFFLINE": "1"}, tmp_path, tmp_path / "worker.log", {}
    )
    status = wait_done(executor, ref, timeout=90)
    output, _ = read_all(executor, ref)
    assert status.returncode == 1, output[-3000:]
    assert (
        "RayPrepareError: 2 of 2 prepare shards failed (shard 0/2: " in output and "; shard 1/2: " in output
    )
    assert str(missing) in output


# ------------------------------------------------------------------------------------------ the platform on
# Ray
# The same jobs as tests/test_platform_api.py, through the REST API of a server whose executor is this
# module's Ray head: the manager submits each worker as a Ray job and reads its logs back from Ray.
PLATFORM_FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}
PLATFORM_TINY = dict(TINY_JOB)
FAST_PREPARE = {
    "data.frames_per_video": 3,
    "faces.size": 64,
    "faces.detector": "retinaface",
    "faces.fallback": ["opencv"],
    "prepare.num_workers": 0,
}  # = conftest.make_config


@pytest.fixture(scope="module")
def platform_dir(tmp_path_factory) -> Path:
    from fakefinder.platform.samples import write_demo_datasets

    root = tmp_path_factory.mktemp("ray-platform")
    write_demo_datasets(root / "datasets")
    return root


@pytest.fixture(scope="module")
def platform(ray_head, platform_dir):
    from fastapi.testclient import TestClient

    from fakefinder.platform.app import create_app
    from fakefinder.platform.settings import ServeSettings

    settings = ServeSettings(
        data_dir=platform_dir,
        devices=["cpu"],
        poll_interval_s=0.3,
        stop_timeout_s=60,
        executor="ray",
        ray_address=ray_head,
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        yield client


def platform_wait(client, task_id: str, states=PLATFORM_FINISHED, timeout: float = 120.0, check=None) -> dict:
    return wait_for_job(client, task_id, states, timeout, check)


def platform_start(client, **changes) -> str:
    response = client.post("/api/training/start", json={**PLATFORM_TINY, **changes})
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


def log_text(client, task_id: str) -> str:
    return "\n".join(
        line["text"] for line in client.get(f"/api/training/{task_id}/logs?tail=5000").json()["lines"]
    )


def ray_logs(ray_head, ref: str) -> str:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(ray_head).get_job_logs(ref)


def test_platform_a_training_job_runs_on_ray_to_succeeded(platform, ray_head):
    import io
    import zipfile

    assert platform.get("/api/health").json()["executor"] == "ray"
    task_id = platform_start(platform, name="on ray")
    job = platform_wait(platform, task_id, timeout=150)
    assert job["state"] == "succeeded", f"{job['error']}\n{log_text(platform, task_id)[-3000:]}"
    assert job["executor"] == "ray" and job["attempts"] == 1
    assert job["progress"]["epoch"] == 2 and job["progress"]["fraction"] == 1.0
    assert job["files"] == {"report": True, "artifact": True}
    ref = platform.app.state.store.get(task_id)["ref"]
    assert ref.startswith(f"fakefinder-{task_id}-")

    history = platform.get(f"/api/training/{task_id}/metrics").json()["history"]
    epochs = [row for row in history if row["stage"] == "val"]
    run = Path(job["output_dir"]) / "run"
    saved = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs] == [1, 2] == [r["epoch"] for r in saved]
    assert [r["val_loss"] for r in epochs] == pytest.approx([r["val_loss"] for r in saved])
    assert job["metrics"]["val_loss"] == pytest.approx(saved[-1]["val_loss"])

    text = log_text(platform, task_id)  # the store's log: Ray's job log, read back by the manager
    assert f"Running as Ray job {ref} in {job['output_dir']}" in text and "training random:tiny" in text
    assert "::fakefinder-event::" not in text and EXIT_MARK not in text
    assert "training random:tiny" in ray_logs(ray_head, ref)
    assert "training random:tiny" in (Path(job["output_dir"]) / "worker.log").read_text()

    archive = zipfile.ZipFile(io.BytesIO(platform.get(f"/api/training/{task_id}/artifact").content))
    assert {"model.json", "model.safetensors"} <= set(archive.namelist())
    assert json.loads(archive.read("model.json"))["kind"] == "deepfake_detector"
    assert platform.get(f"/api/training/{task_id}/report").status_code == 200


def test_platform_stop_on_ray_saves_a_checkpoint_and_resume_continues(platform):
    task_id = platform_start(platform, epochs=40, name="stopped on ray", evaluate=False)
    platform_wait(
        platform, task_id, {"running"}, timeout=90, check=lambda j: (j["progress"].get("epoch") or 0) >= 2
    )  # one epoch done
    assert platform.post(f"/api/training/{task_id}/stop").json()["stop_requested"]
    stopped = platform_wait(platform, task_id, timeout=60)
    assert stopped["state"] == "cancelled" and stopped["resumable"], stopped["error"]
    assert stopped["error"] is None and stopped["result"]["stopped"] == "interrupted"
    assert platform.app.state.store.get(task_id)["exit_code"] == 3  # SIGTERM from Ray: saved, exited 3
    run = Path(stopped["output_dir"]) / "run"
    assert (run / "last.pt").is_file()
    done_epochs = len((run / "history.jsonl").read_text().splitlines())
    assert 1 <= done_epochs < 40

    resumed = platform.post(f"/api/training/{task_id}/resume").json()
    assert resumed["state"] == "queued"
    platform_wait(
        platform,
        task_id,
        {"running"},
        timeout=90,
        check=lambda j: j["attempts"] == 2 and (j["progress"].get("epoch") or 0) > done_epochs,
    )
    assert f"resumed from {run / 'last.pt'}" in log_text(platform, task_id)
    platform.post(f"/api/training/{task_id}/stop")
    final = platform_wait(platform, task_id, timeout=60)
    assert final["state"] == "cancelled" and final["attempts"] == 2 and final["executor"] == "ray", final[
        "error"
    ]
    history = [
        r["epoch"]
        for r in platform.get(f"/api/training/{task_id}/metrics").json()["history"]
        if r["stage"] == "val"
    ]
    assert (
        history == list(range(1, len(history) + 1)) and len(history) > done_epochs
    )  # each epoch once, in order


def test_platform_prepare_with_shards_on_ray_gives_the_rows_of_one_process(platform, platform_dir, tmp_path):
    import io
    import zipfile

    from fakefinder.faces.prepare import prepare

    tree = synthetic.make_folder_tree(tmp_path / "rawfolder", images=2, videos=1, **SMALL_VIDEO)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tree).as_posix())
    response = platform.post(
        "/api/datasets", data={"name": "rawfolder"}, files={"file": ("rawfolder.zip", buffer.getvalue())}
    )
    assert response.status_code == 201, response.text
    assert response.json()["layout"] == "folder" and response.json()["kinds"] == ["prepare"]

    response = platform.post(
        "/api/datasets/rawfolder/prepare",
        json={"output_name": "rawfolder-faces", "shards": 2, **FAST_PREPARE},
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    direct = prepare(
        make_config(tmp_path / "direct", [{"name": "rawfolder", "layout": "folder", "root": str(tree)}]),
        progress=False,
    )  # meanwhile, in this process
    job = platform_wait(platform, task_id, timeout=150)
    text = log_text(platform, task_id)
    assert job["state"] == "succeeded", f"{job['error']}\n{text[-3000:]}"
    assert job["type"] == "prepare" and job["executor"] == "ray"
    assert "prepare: 2 shards submitted to Ray" in text
    assert "prepare shard 0/2:" in text and "prepare shard 1/2:" in text

    listed = {d["name"]: d for d in platform.get("/api/datasets").json()["datasets"]}
    assert listed["rawfolder-faces"]["layout"] == "prepared", listed["rawfolder-faces"]
    output = platform_dir / "datasets" / "rawfolder-faces"
    for index in range(2):
        assert (output / f"manifest.shard-{index}-of-2.csv").exists()
    key = ["video_id", "frame_index", "face_index"]
    merged = pd.read_csv(output / "manifest.csv").sort_values(key).reset_index(drop=True)
    single = pd.read_csv(direct.manifest_path).sort_values(key).reset_index(drop=True)
    assert len(merged) == len(single) > 0
    assert merged[key + ["split", "label"]].equals(single[key + ["split", "label"]])


def test_platform_a_gpu_job_waits_on_a_cpu_only_ray_head_and_stop_cancels_it(platform, ray_head):
    from ray.job_submission import JobSubmissionClient

    from fakefinder.platform.manager import job_needs

    task_id = platform_start(platform, epochs=1, name="wants a gpu", num_gpus=1)
    job = platform_wait(
        platform,
        task_id,
        {"running"},
        timeout=30,
        check=lambda j: platform.app.state.store.get(task_id)["ref"],
    )
    ref = platform.app.state.store.get(task_id)["ref"]
    spec = json.loads((Path(job["output_dir"]) / "job.json").read_text())
    cluster = platform.app.state.manager.cluster()
    assert cluster == {"gpus": 0}  # read from the head's state API: it has no GPU
    assert spec["num_gpus"] == 1 and job_needs(spec, cluster) == (
        1,
        1,
    )  # the request's num_gpus: what Ray is asked for
    assert job["device"] == "ray"
    ray = JobSubmissionClient(ray_head)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # Ray holds it: no GPU on this head. It does not fail.
        assert str(ray.get_job_status(ref)) == "PENDING"
        status = platform.app.state.manager.executor.poll(ref)
        assert status.running and "waiting for resources" in status.reason
        assert platform.get(f"/api/training/{task_id}").json()["state"] == "running"  # submitted, not started
        assert (
            "waiting for resources"
            in platform_wait(platform, task_id, {"running"}, 20, lambda j: bool(j["progress"].get("stage")))[
                "progress"
            ]["stage"]
        )
        time.sleep(0.5)
    assert "training random:tiny" not in log_text(platform, task_id)
    platform.post(f"/api/training/{task_id}/stop")
    final = platform_wait(platform, task_id, timeout=60)
    assert final["state"] == "cancelled"
    assert "training random:tiny" not in ray_logs(ray_head, ref)
