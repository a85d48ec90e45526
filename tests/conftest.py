"""Shared fixtures: tiny datasets in each published layout, generated once per test session."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fakefinder import synthetic
from fakefinder.config import config_from_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_VIDEO = {"num_frames": 8, "size": (120, 160)}


@pytest.fixture(scope="session")
def trees(tmp_path_factory) -> dict[str, Path]:
    """One small tree per layout (read-only for the tests: copy before damaging one)."""
    base = tmp_path_factory.mktemp("trees")
    return {
        "ffpp": synthetic.make_ffpp_tree(base / "ffpp", **SMALL_VIDEO),
        "dfdc": synthetic.make_dfdc_tree(base / "dfdc", originals=3, fakes_per_original=2, **SMALL_VIDEO),
        "celebdf": synthetic.make_celebdf_tree(base / "celebdf", celebs=3, clips=2, youtube=2, **SMALL_VIDEO),
        "folder": synthetic.make_folder_tree(base / "folder", images=2, videos=1, **SMALL_VIDEO),
        "csv": synthetic.make_csv_tree(base / "csv", groups=10),
    }


def make_config(output: Path, datasets: list[dict], **sections):
    """A small, fast prepare config: few frames, RetinaFace (the fastest shipped detector; MTCNN,
    the default, has its own tests) with OpenCV as fallback, inline workers."""
    tree = {
        "data": {"datasets": datasets, "frames_per_video": 3, **sections.pop("data", {})},
        "faces": {"size": 64, "detector": "retinaface", "fallback": ["opencv"], **sections.pop("faces", {})},
        "prepare": {"output_dir": str(output), "num_workers": 0, **sections.pop("prepare", {})},
    }
    assert not sections, f"unknown sections {sections}"
    return config_from_dict(tree, "test")


def make_crops(root: Path, groups: int = 12, size: int = 48, datasets: tuple[str, ...] = ("a",)) -> Path:
    """Face crops and a prepare-style manifest.csv (split by group: 60/20/20)."""
    return synthetic.make_prepared_crops(root, groups, size, datasets)


def train_config(manifest: Path, output: Path, **train):
    """A seconds-long training run of timm's tiny test EfficientNet."""
    tree = {
        "model": {"name": "test_efficientnet", "image_size": 32, "dropout": 0.1},
        "augment": {"enabled": True},
        "train": {
            "manifest": str(manifest),
            "output_dir": str(output),
            "epochs": 2,
            "batch_size": 4,
            "num_workers": 0,
            "lr": 1e-3,
            "warmup_epochs": 0.5,
            "trackers": [],
            "plots": False,
            **train,
        },
    }
    return config_from_dict(tree, "test")


JOB_FINISHED = {"succeeded", "failed", "cancelled", "interrupted"}


def wait_for_job(client, task_id: str, states=JOB_FINISHED, timeout: float = 180.0, check=None) -> dict:
    """Poll a platform job until it is in one of `states` (and `check(job)` holds); else fail with its log."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/training/{task_id}").json()
        if job["state"] in states and (check is None or check(job)):
            return job
        time.sleep(0.2)
    logs = client.get(f"/api/training/{task_id}/logs?tail=40").json()["lines"]
    raise AssertionError(
        f"job {task_id} stayed {job['state']} ({job['progress']}): {job.get('error')}\n"
        + "\n".join(line["text"] for line in logs)
    )


def kill_when(command: list[str], ready, cwd: Path | None = None, timeout: float = 240.0) -> None:
    """Run `command` (a process group of its own) and kill -9 it as soon as `ready()` holds; fails if
    it ends first or `ready` does not hold within `timeout` seconds."""
    import signal
    import subprocess
    import time

    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, (
                f"it ended before it could be killed: {process.stderr.read()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"not ready to be killed within {timeout:.0f} s"
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# a platform training request for a tiny deepfake detector on the demo `faces` dataset
TINY_JOB = {
    "model_type": "deepfake_detector",
    "base_model": "random:tiny",
    "dataset_path": "faces",
    "epochs": 2,
    "batch_size": 8,
    "learning_rate": 0.001,
    "image_size": 32,
    "num_workers": 0,
    "trackers": [],
}


def torchrun_train(cfg: Path, port: int, *args: str, wait: bool = True, timeout: float = 400):
    """`fakefinder train -c cfg` on two processes: its finished process (`wait`), else the running
    launcher, whose messages go to torchrun.log beside the config (a pipe nobody reads could fill).
    A run still going after `timeout` seconds fails the test with where each process stood (Python's
    fault handler prints every thread's stack on SIGABRT), and nothing of it is left running."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        "-m",
        "fakefinder",
        "train",
        "-c",
        str(cfg),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    log_path = Path(cfg).parent / "torchrun.log"
    with open(log_path, "w") as log:
        if not wait:
            return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        launcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    try:
        stdout, _ = launcher.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import signal
        import time

        import psutil

        # torchrun starts each worker in a session of its own: reach them through the process tree
        processes = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(recursive=True)]
        for signal_number in (signal.SIGABRT, signal.SIGKILL):  # stacks first, then the end
            for process in processes:
                try:
                    process.send_signal(signal_number)
                except psutil.NoSuchProcess:
                    pass
            time.sleep(5)
        launcher.communicate()
        raise AssertionError(
            f"torchrun still running after {timeout} s; its log ends:\n{log_path.read_text()[-6000:]}"
        ) from None
    return subprocess.CompletedProcess(command, launcher.returncode, stdout, log_path.read_text())


# ---------------------------------------------------------------------------------------------
# a live `fakefinder serve` on a free loopback port


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def api(self, method: str, path: str, **kwargs):
        response = requests.request(method, self.url + path, headers=self.headers(), timeout=30, **kwargs)
        assert response.ok, f"{method} {path} -> {response.status_code} {response.text[:500]}"
        return response.json()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def cli(*args: str) -> subprocess.CompletedProcess:
    """`fakefinder *args` run in this process (the CLI's own entry, its exit code and what it printed
    on stdout and stderr): a command's behaviour without a fresh interpreter's seconds of imports.
    Tests that signal or kill a run, or need a fresh process, start `python -m fakefinder` instead."""
    from typer.testing import CliRunner

    from fakefinder.cli import app

    done = CliRunner().invoke(app, [str(a) for a in args])
    return subprocess.CompletedProcess(list(args), done.exit_code, done.stdout, done.stderr)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, *extra: str, token: str | None = None) -> Server:
    port = free_port()
    log = data_dir.parent / f"{data_dir.name}-server.log"
    command = [
        sys.executable,
        "-m",
        "fakefinder",
        "serve",
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *extra,
    ]
    if token:
        command += ["--token", token]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Server(f"http://127.0.0.1:{port}", process, log, token)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            pytest.fail(f"`fakefinder serve` exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if requests.get(server.url + "/api/health", headers=server.headers(), timeout=2).ok:
                return server
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(f"`fakefinder serve` did not answer /api/health within 60 s:\n{server.log_tail()}")
        time.sleep(0.3)


def stop_server(server: Server) -> None:
    process = server.process
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.poll() is not None, f"server pid {process.pid} is still running"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The test-only kind of tests/kinds/toy_regressor registered for a module (and its worker processes):
    a line fitted by gradient descent, whose loss curve is fixed by its learning rate."""
    from fakefinder.tasks import register, unregister

    kinds = str(Path(__file__).resolve().parent / "kinds")
    sys.path.insert(0, kinds)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([kinds, *([previous] if previous else [])])
    import toy_regressor
    from toy_regressor.data import write

    register(toy_regressor.KIND)
    root = tmp_path_factory.mktemp("toy")
    yield {"kind": toy_regressor.KIND, "root": root, "data": write(root / "data")}
    unregister("toy_regressor")
    sys.path.remove(kinds)
    if previous is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = previous


def toy_zip(toy: dict) -> bytes:
    """The toy kind's numbers as the ZIP a user uploads (`POST /api/datasets`)."""
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("toy_train.csv", "toy_test.csv"):
            zipped.write(toy["data"] / name, name)
    return archive.getvalue()
