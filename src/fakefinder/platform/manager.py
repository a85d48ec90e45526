"""The job queue: starts queued jobs in order as device slots free up, reads each worker's output
into the store (logs, progress, metrics, result), settles how each job ended, stops and resumes
jobs, and after a restart picks up what the previous instance left."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path

from fakefinder.config import config_from_dict
from fakefinder.engine.tracking import PLATFORM_LOGS_MLFLOW
from fakefinder.platform.executors.base import ExecStatus, Executor, describe_exit
from fakefinder.platform.paths import Conflict, NotFound
from fakefinder.platform.store import FINISHED, JobStore
from fakefinder.platform.worker import STOPPED, event_mark
from fakefinder.tasks import get_task
from fakefinder.tasks.registry import PLUGIN_VARIABLE, plugin_spec

log = logging.getLogger("fakefinder.platform")
_EPOCH = re.compile(r"epoch (\d+)/(\d+)")
RESUMABLE = ("cancelled", "interrupted", "failed")


def find_devices(settings) -> list[str]:
    if settings.devices:
        return list(settings.devices)
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: the CPU
        count = 0
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


def job_needs(spec: dict, cluster: dict) -> tuple[int, int]:
    """(GPUs, processes) of a job on a cluster with `cluster["gpus"]` GPUs: `num_gpus` in the request,
    else what its kind asks for its config (`Kind.devices`); a kind that runs on several processes
    (DDP / DeepSpeed) is launched with one per GPU it asked for, or its configured number on the CPU."""
    tree = spec.get("config")
    if spec.get("type", "train") != "train" or not isinstance(tree, dict):
        return int(spec.get("num_gpus") or 0), 1
    config = config_from_dict(tree, f"job {spec.get('task_id', '')}")
    kind = get_task(config.task)
    gpus = int(spec["num_gpus"]) if spec.get("num_gpus") is not None else kind.devices(config, cluster)
    processes = (max(gpus, 1) if gpus else kind.processes(config)) if kind.multi_process else 1
    return gpus, processes


class JobManager:
    def __init__(self, settings, store: JobStore, executor: Executor) -> None:
        self.settings, self.store, self.executor = settings, store, executor
        self.devices = find_devices(settings)
        self._secret = _server_secret(settings.data_dir)
        self._killed: dict[str, float] = {}  # job -> when a forced stop was last sent
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        from fakefinder.platform.sweeps import Sweeps

        self.sweeps = Sweeps(self)

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="fakefinder-jobs", daemon=True)
        self._thread.start()

    def close(self, stop_running: bool = True, timeout: float = 30.0) -> None:
        """Stop the loop; running local workers are asked to save and stop, then marked interrupted."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not stop_running or self.executor.name != "local":
            self.executor.close()
            return
        running = self._workers("running")  # a sweep has none: it stays running, its trials are saved
        for job in running:
            if job["ref"]:
                self.executor.stop(job["ref"])
        deadline = time.time() + timeout
        for job in running:
            while job["ref"] and self.executor.poll(job["ref"]).running and time.time() < deadline:
                time.sleep(0.2)
            if job["ref"] and self.executor.poll(job["ref"]).running:
                self.executor.kill(job["ref"])
            job = self.store.get(job["id"])
            self._ingest(job)
            job = self.store.get(job["id"])
            status = self.executor.poll(job["ref"]) if job["ref"] else ExecStatus(False)
            if (
                status.returncode == 0
                or status.returncode is None
                and (job["result"] or {}).get("stopped") == "completed"
            ):
                self._settle(job, status)  # it finished as the server stopped
                continue
            self._interrupted(job)
        self.executor.close()

    def _interrupted(self, job: dict) -> None:
        self.store.transition(
            job["id"],
            ("running",),
            state="interrupted",
            finished_at=time.time(),
            error="the server stopped while the job ran: resume it to continue",
        )

    def recover(self) -> None:
        """After a restart: a job whose worker still runs is followed again; one whose worker is
        gone is `interrupted` (resume continues it from its last checkpoint); a sweep goes on."""
        for job in self._workers("running"):
            status = self.executor.poll(job["ref"]) if job["ref"] else None
            if status is not None and status.running:
                log.info("job %s: following its worker again", job["id"])
                continue
            self._ingest(job)
            job = self.store.get(job["id"])
            result = job["result"] or {}
            if result and result.get("stopped", "completed") != "interrupted" and not job["error"]:
                self.store.transition(job["id"], ("running",), state="succeeded", finished_at=time.time())
                continue  # it finished while no server watched: its result says so
            self._interrupted(job)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the queue must outlive any one job's trouble
                log.exception("job loop")
            self._wake.wait(self.settings.poll_interval_s)
            self._wake.clear()

    def tick(self) -> None:
        with self._lock:
            for job in self._workers("running"):
                try:
                    self._follow(job)
                except Exception:  # one job's trouble never stops the others
                    log.exception("job %s", job["id"])
            self.sweeps.tick()
            self._schedule()

    def _workers(self, *states: str) -> list[dict]:
        """Jobs in these states that run on a worker (all but sweeps, which the loop itself drives)."""
        return [j for j in self.store.in_state(*states) if j["type"] != "sweep"]

    # ------------------------------------------------------------------ scheduling
    def slots(self) -> list[dict]:
        if self.executor.name == "ray":
            return [{"name": "ray", "slots": None, "busy": len(self._workers("running"))}]
        busy: dict[str, int] = {}
        for job in self._workers("running"):
            for device in str(job["device"] or "").split(","):  # a multi-GPU job holds a slot on each
                busy[device] = busy.get(device, 0) + 1
        return [
            {"name": d, "slots": self.settings.jobs_per_device, "busy": busy.get(d, 0)} for d in self.devices
        ]

    def cluster(self) -> dict:
        """What jobs are placed on: the GPUs the executor reports (this machine's for local workers)."""
        if self.executor.name == "local":
            return {"gpus": sum(d.startswith("cuda") for d in self.devices)}
        return self.executor.resources()

    def _refuse(self, job: dict, why: str) -> None:
        """A queued job that cannot start fails with the reason; the queue goes on."""
        self.store.transition(
            job["id"], ("queued",), state="failed", finished_at=time.time(), error=f"could not start: {why}"
        )

    def _schedule(self) -> None:
        queued = self._workers("queued")
        if not queued:
            return
        if self.executor.name == "ray":  # the cluster queues jobs by the resources they ask for
            cluster = self.cluster()
            for job in queued:
                self._launch(job, "ray", cluster)
            return
        free = {s["name"]: s["slots"] - s["busy"] for s in self.slots()}
        cluster = self.cluster()
        for job in queued:
            try:
                gpus, _ = job_needs(job["spec"], cluster)
            except Exception as exc:  # noqa: BLE001 - a job whose config no longer loads fails, the queue goes on
                self._refuse(job, str(exc))
                continue
            if gpus > cluster["gpus"]:
                self._refuse(job, f"it needs {gpus} GPUs, this server has {cluster['gpus']}")
                continue
            wanted = [d for d in self.devices if free[d] > 0 and (gpus == 0 or d.startswith("cuda"))]
            chosen = wanted[: max(1, gpus)]
            if len(chosen) < max(1, gpus):
                break  # in order: the next job waits for this one's devices
            for device in chosen:
                free[device] -= 1
            self._launch(job, ",".join(chosen), cluster)

    def _launch(self, job: dict, device: str, cluster: dict) -> None:
        folder = Path(job["folder"])
        folder.mkdir(parents=True, exist_ok=True)
        spec = {
            **job["spec"],
            "task_id": job["id"],
            "type": job["type"],
            "kind": job["kind"],
            "folder": str(folder),
            "resume": bool(job["resume"]),
        }
        (folder / "job.json").write_text(json.dumps(spec, indent=1))
        env = {
            "PYTHONUNBUFFERED": "1",
            "FAKEFINDER_JOB": job["id"],
            "FAKEFINDER_EXECUTOR": self.executor.name,
            "FAKEFINDER_EVENT_TOKEN": self._token(job["id"], job["attempts"] + 1),
            PLATFORM_LOGS_MLFLOW: "1",  # the server logs the job's MLflow run from its events
        }
        if plugin_spec():
            env[PLUGIN_VARIABLE] = plugin_spec()  # kinds registered from outside fakefinder
        if device.startswith("cuda:"):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(d.split(":", 1)[1] for d in device.split(","))
        try:
            gpus, processes = job_needs(spec, cluster)
        except Exception as exc:  # noqa: BLE001 - the job fails with the reason, the queue goes on
            self.store.transition(
                job["id"],
                ("queued",),
                state="failed",
                finished_at=time.time(),
                error=f"could not start: {exc}",
            )
            return
        command = [sys.executable, "-m", "fakefinder.platform.worker", str(folder / "job.json")]
        if processes > 1:  # DDP / DeepSpeed: one process per GPU (or as configured on the CPU)
            command[1:3] = [
                "-m",
                "torch.distributed.run",
                "--standalone",
                f"--nproc_per_node={processes}",
                "-m",
                "fakefinder.platform.worker",
            ]
        fans_out = job["type"] == "prepare" and int(spec.get("shards") or 1) > 1  # its shards take the CPUs
        resources = {"num_cpus": 0 if fans_out else processes, "num_gpus": gpus}
        if not self.store.transition(
            job["id"],
            ("queued",),
            state="running",
            started_at=time.time(),
            device=device,
            executor=self.executor.name,
            attempts=job["attempts"] + 1,
            output_offset=0,
            stop_requested=None,
            exit_code=None,
            error=None,
        ):
            return  # stopped meanwhile
        try:
            ref = self.executor.submit(
                job["id"], command, env, folder, folder / "worker.log", resources, _worker_imports(job)
            )
        except Exception as exc:  # noqa: BLE001 - the job fails with the reason, the queue goes on
            self.store.update(
                job["id"], state="failed", finished_at=time.time(), error=f"could not start: {exc}"
            )
            return
        self.store.update(job["id"], ref=ref)

    def _token(self, job_id: str, attempt: int) -> str:
        """The event marker's token of one attempt of a job: only that worker is told it."""
        return hmac.new(self._secret, f"{job_id}:{attempt}".encode(), hashlib.sha256).hexdigest()[:32]

    # ------------------------------------------------------------------ following a worker
    def _follow(self, job: dict) -> None:
        if not job["ref"]:
            return
        try:
            status = self.executor.poll(job["ref"])
        except Exception as exc:  # noqa: BLE001 - a cluster that does not answer now may later
            log.warning("job %s: cannot reach its executor: %s", job["id"], exc)
            return
        self._ingest(job)
        if status.running:
            if status.reason and not job["progress"]:  # e.g. waiting for the cluster's resources
                self.store.update(job["id"], progress={"stage": status.reason})
            if (
                job["stop_requested"]
                and time.time() - job["stop_requested"] > self.settings.stop_timeout_s
                and time.time() - self._killed.get(job["id"], 0.0) > 30
            ):
                log.warning(
                    "job %s did not stop within %.0f s: killing it", job["id"], self.settings.stop_timeout_s
                )
                self._killed[job["id"]] = time.time()
                self.executor.kill(job["ref"])
            return
        self._killed.pop(job["id"], None)
        self._ingest(self.store.get(job["id"]))  # what it wrote last
        self._settle(self.store.get(job["id"]), status)

    def _settle(self, job: dict, status) -> None:
        code = status.returncode
        result = job["result"] or {}
        if (
            code is None and result and not job["error"]
        ):  # a worker an earlier instance started: its result tells
            code = STOPPED if result.get("stopped") == "interrupted" else 0
        if code not in (0, STOPPED) and result.get("stopped") == "interrupted":
            # saved and stopped on request, behind a launcher that reports it otherwise (torchrun)
            code = STOPPED
        fields = {"finished_at": time.time(), "exit_code": code}
        if code == 0:  # done (also when a stop came as it finished)
            state = "succeeded"
        elif job["stop_requested"]:
            state = "cancelled"
            fields["error"] = (
                None
                if code == STOPPED
                else status.reason or None
                if code is None
                else job["error"] or "stopped by force after the stop timeout"
            )
        elif code == STOPPED:
            state = "interrupted"  # stopped by a signal nobody on the platform sent
            fields["error"] = "the worker was stopped from outside; resume it to continue"
        else:
            state = "failed"
            reason = status.reason or describe_exit(code)
            fields["error"] = (
                job["error"]
                if job["error"] and code is not None and code > 0
                else (f"{reason}" + (f"; last error: {job['error']}" if job["error"] else ""))
            )
        self.store.transition(job["id"], ("running",), state=state, **fields)
        self._wake.set()

    def _ingest(self, job: dict | None) -> None:
        """The worker's new output: log lines, and events into progress, metrics, result, error."""
        if job is None or not job["ref"]:
            return
        try:
            text, offset = self.executor.read_output(job["ref"], job["output_offset"])
        except Exception as exc:  # noqa: BLE001 - a cluster that does not answer now may later
            log.warning("job %s: cannot read its output: %s", job["id"], exc)
            return
        if not text:
            return
        lines, history = [], []
        progress, latest, fields = dict(job["progress"]), dict(job["metrics"]), {}
        now = time.time()
        mark = event_mark(self._token(job["id"], job["attempts"]))
        for line in text.split("\n"):  # only newlines end a line (not U+2028 in a file name)
            line = line.rstrip("\r")
            event = _event(line[len(mark) :]) if line.startswith(mark) else None
            if event is None:
                if line:
                    lines.append((now, line[:20000]))
                continue
            kind, stage, data = event["type"], event["stage"], event["data"]
            if kind in ("stage", "progress", "end"):
                progress = _progress(event)
            elif kind == "metrics":
                values = {str(k): v for k, v in data.items() if _is_value(v)}
                history.append((_number(event.get("time")) or now, stage, values))
                latest.update(
                    {
                        k: v
                        for k, v in values.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)
                    }
                )
            elif kind == "result" and stage == "job":
                fields["result"] = data
            elif kind == "error":
                fields["error"] = str(event.get("message") or "")[:20000]
        self.store.add_output(job["id"], lines, history, offset, progress=progress, metrics=latest, **fields)

    # ------------------------------------------------------------------ requests
    def stop(self, job_id: str, force: bool = False) -> dict:
        with self._lock:  # never between a launch's state change and its worker's start
            return self._stop_job(job_id, force)

    def _stop_job(self, job_id: str, force: bool) -> dict:
        job = self._job(job_id)
        if job["type"] == "sweep" and job["state"] in ("queued", "running"):
            if not job["stop_requested"]:
                self.store.update(job_id, stop_requested=time.time())
            self.sweeps.stop_trials(job)  # the loop ends the sweep once its trials have stopped
            self._wake.set()
            return self.store.get(job_id)
        if job["state"] == "queued":
            if self.store.transition(job_id, ("queued",), state="cancelled", finished_at=time.time()):
                return self.store.get(job_id)
            job = self.store.get(job_id)
        if job["state"] != "running":
            raise Conflict(
                f"job {job_id} is {job['state']}: only a queued or running job can be stopped", "task_id"
            )
        if not job["stop_requested"]:
            self.store.update(job_id, stop_requested=time.time())
        if job["ref"]:
            (self.executor.kill if force else self.executor.stop)(job["ref"])
        self._wake.set()
        return self.store.get(job_id)

    def resume(self, job_id: str) -> dict:
        with self._lock:
            return self._resume_job(job_id)

    def _resume_job(self, job_id: str) -> dict:
        job = self._job(job_id)
        if job["type"] not in ("train", "sweep"):
            raise Conflict(
                f"job {job_id} is a {job['type']} job: only training jobs and sweeps resume (start it again)",
                "task_id",
            )
        if not self.store.transition(
            job_id,
            RESUMABLE,
            state="queued",
            resume=1,
            finished_at=None,
            error=None,
            exit_code=None,
            stop_requested=None,
            ref=None,
            progress={},
            result=None,
        ):
            raise Conflict(
                f"job {job_id} is {job['state']}: only a {', '.join(RESUMABLE)} job resumes", "task_id"
            )
        self._wake.set()
        return self.store.get(job_id)

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._delete_job(job_id)

    def _delete_job(self, job_id: str) -> None:
        job = self._job(job_id)
        if job["state"] not in FINISHED:
            raise Conflict(f"job {job_id} is {job['state']}: stop it before deleting it", "task_id")
        trials = self.store.children(job_id) if job["type"] == "sweep" else []
        busy = [t for t in trials if t["state"] not in FINISHED]
        if busy:
            raise Conflict(
                f"sweep {job_id}: its job {busy[0]['id']} is {busy[0]['state']}; stop it first", "task_id"
            )
        for gone in [*trials, job]:  # a sweep goes with its trials and its study
            self.store.delete(gone["id"])
            folder = Path(gone["folder"])
            if folder.is_dir() and folder.parent == self.settings.jobs_dir:
                shutil.rmtree(folder, ignore_errors=True)
        if job["type"] == "sweep":
            self.sweeps.forget(job_id)

    def _job(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", "task_id")
        return job


def _server_secret(data_dir: Path) -> bytes:
    """This platform's key for event tokens (kept in the data folder, readable by its owner only)."""
    path = Path(data_dir) / ".secret"
    if not path.is_file():
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) if not path.exists() else None
        if fd is not None:
            os.write(fd, secrets.token_hex(32).encode())
            os.close(fd)
    return path.read_bytes().strip()


def _event(text: str) -> dict | None:
    """A worker's event, checked: a type, a stage, a mapping of data; None if it is not one."""
    try:
        event = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return None
    data = event.get("data")
    event["data"] = data if isinstance(data, dict) else {}
    event["stage"] = str(event.get("stage") or "")
    return event


def _number(value):
    return (
        value
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def _is_value(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (int, str, bool))


def _progress(event: dict) -> dict:
    stage, step, total = event["stage"], _number(event.get("step")), _number(event.get("total"))
    progress = {
        "stage": stage,
        "step": step,
        "total": total,
        "eta_s": _number(event.get("eta_s")),
        "epoch": None,
        "epochs": None,
        "fraction": None,
    }
    if event.get("type") == "end" and total:
        step = progress["step"] = total
    within = step / total if step is not None and total else None
    match = _EPOCH.search(stage)
    if match:
        epoch, epochs = int(match.group(1)), int(match.group(2))
        progress.update(epoch=epoch, epochs=epochs)
        progress["fraction"] = min(1.0, ((epoch - 1) + (within or 0.0)) / epochs) if epochs else None
    elif within is not None:
        progress["fraction"] = min(1.0, within)
    return progress


def _worker_imports(job: dict) -> tuple[str, ...]:
    """What the job's kind imports beyond every kind's libraries (none for a kind no longer known)."""
    try:
        return get_task(job["kind"]).worker_imports if job["kind"] else ()
    except Exception:  # noqa: BLE001 - only a hint for a warm start
        return ()
