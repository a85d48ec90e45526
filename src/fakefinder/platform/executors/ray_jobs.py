"""Workers as Ray jobs: the worker command goes to a Ray cluster's job API (`ray job submit`), which
runs it on a node with the CPUs and GPUs the job asks for."""

from __future__ import annotations

import logging
import math
import re
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path

from fakefinder.core.errors import FakefinderError
from fakefinder.platform.executors.base import ExecStatus, Executor, describe_exit

# The entrypoint's shell prints this after the worker ends: Ray records no exit code for a job it
# stopped, and the platform must know whether a stopped worker saved its checkpoint (exit code 3).
log = logging.getLogger("fakefinder.platform")
EXIT_MARK = "::fakefinder-exit:: "
_EXIT_LINE = re.compile(r"^::fakefinder-exit:: (-?\d+)\n?", re.MULTILINE)
STOP_WAIT_ENV = "RAY_JOB_STOP_WAIT_TIME_S"  # Ray's SIGTERM -> SIGKILL delay, read from the job's env
# Ray's first log line shows the entrypoint; the log shows the worker command without the shell around it.
_RAY_PREAMBLE = re.compile(
    r"^Running entrypoint for job (\S+): trap : TERM INT; cd (.*?) \|\| exit 126; (.*?); "
    r'code=\$\?; echo "::fakefinder-exit:: \$code"; exit \$code$',
    re.MULTILINE | re.DOTALL,
)

# Run inside the cluster as a tiny Ray job of its own (the job API has no forced stop, and a job
# waiting for resources ignores stop requests until it starts): `cancel` removes the supervisor
# actor of a job that has not started; `kill` SIGKILLs every process a started job's supervisor
# runs (the worker and its children), on that supervisor's node.
_REAPER = r"""
import sys
import ray
from ray.dashboard.modules.job.common import JOB_ACTOR_NAME_TEMPLATE, SUPERVISOR_ACTOR_RAY_NAMESPACE
from ray.util.state import list_actors

mode, submission_id = sys.argv[1], sys.argv[2]
ray.init(address="auto", log_to_driver=False, logging_level="WARNING")
name = JOB_ACTOR_NAME_TEMPLATE.format(job_id=submission_id)
try:
    actor = ray.get_actor(name, namespace=SUPERVISOR_ACTOR_RAY_NAMESPACE)
except ValueError:
    print("the job has already ended")
    sys.exit(0)
states = [a for a in list_actors(filters=[("name", "=", name)]) if a.state != "DEAD"]
if not states or states[0].state != "ALIVE":
    ray.kill(actor, no_restart=True)
    print("cancelled before it started")
    sys.exit(0)
if mode == "cancel":
    print("it started meanwhile: the stop request stands")
    sys.exit(0)

from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

@ray.remote(num_cpus=0, max_retries=0)
def kill_children(pid):
    import psutil
    victims = psutil.Process(pid).children(recursive=True)
    for process in victims:
        try:
            process.kill()
        except psutil.Error:
            pass
    return len(victims)

here = NodeAffinitySchedulingStrategy(states[0].node_id, soft=False)
print(f"killed {ray.get(kill_children.options(scheduling_strategy=here).remote(states[0].pid))} processes")
"""


class RayJobsError(FakefinderError, RuntimeError):
    """The Ray cluster's job API could not be reached or refused a request (the message names it)."""


class _UnknownJob(Exception):
    pass


def _entrypoint(command: list[str], cwd: Path) -> str:
    """The shell line Ray runs: enter the job folder, run the worker, print its exit code. The shell
    traps SIGTERM so that it outlives the worker (Ray signals every process of the job) and reports."""
    return (
        f"trap : TERM INT; cd {shlex.quote(str(cwd))} || exit 126; {shlex.join(command)}; "
        f'code=$?; echo "{EXIT_MARK}$code"; exit $code'
    )


def _readable_log(text: str) -> str:
    """Ray's log as the worker's log: no exit report, and the worker command in Ray's first line."""
    text = _RAY_PREAMBLE.sub(lambda m: f"Running as Ray job {m[1]} in {m[2]}: {m[3]}", text)
    return _EXIT_LINE.sub("", text)


def _as_returncode(code: int) -> int:
    """The shell reports a worker killed by signal N as 128+N; the platform's convention is -N."""
    return -(code - 128) if 128 < code <= 128 + 64 else code


def _exit_reason(code: int) -> str:
    if code in (0, 3):
        return ""
    if code == 126:
        return (
            f"{describe_exit(code)}: the job folder is missing on the Ray node (job and data folders "
            "must be on storage every node of the cluster shares)"
        )
    if code == 127:
        return (
            f"{describe_exit(code)}: the worker command was not found on the Ray node (every node needs "
            "the platform's Python environment at the same path)"
        )
    return describe_exit(code)


def _short(message: str, limit: int = 600) -> str:
    text = (message or "").strip()
    return text if len(text) <= limit else text[:limit] + " ..."


class RayJobsExecutor(Executor):
    """Submits each job's worker command as a Ray job (see `submit`); a ref is the Ray submission id.

    `address` is the cluster's dashboard / job API URL (e.g. http://127.0.0.1:8265); `headers` go
    with every request (e.g. an auth header of a proxy); `runtime_env` is merged into every job's
    runtime env (its `env_vars` under the job's own). `stop_wait_s` is how long Ray lets a stopped
    worker save its checkpoint before it SIGKILLs it (Ray's RAY_JOB_STOP_WAIT_TIME_S; give it the
    platform's stop timeout). `python` runs the small helper jobs of `stop` / `kill` (default: this
    interpreter, which the worker command uses too).

    The nodes run the worker command (inside a POSIX shell line that enters `cwd` and reports the exit
    code, see `_entrypoint`) with its absolute paths as they are: the platform's Python
    environment must exist at the same path on every node, and the data and job folders must be on
    storage all nodes share (e.g. NFS), as with any Ray cluster. GPU jobs get their GPUs from Ray
    (`num_gpus`: Ray picks the node and sets CUDA_VISIBLE_DEVICES).
    """

    name = "ray"

    def __init__(
        self,
        address: str,
        headers: dict[str, str] | None = None,
        runtime_env: dict | None = None,
        stop_wait_s: float = 120.0,
        python: str | None = None,
    ) -> None:
        self.address = address
        self.headers = dict(headers or {})
        self.runtime_env = dict(runtime_env or {})
        self.stop_wait_s = stop_wait_s
        self.python = python or sys.executable
        self._lock = threading.Lock()
        self._client_instance = None
        self._log_paths: dict[str, Path | None] = {}
        self._mirrored: dict[str, int] = {}  # ref -> log characters already appended to its log_path
        self._final: dict[str, ExecStatus] = {}
        self._cancelled: set[str] = set()
        self._killed: set[str] = set()
        self._resources: tuple[float, dict] | None = None

    # --- talking to the cluster ------------------------------------------------------------------

    def _client(self):
        with self._lock:
            if self._client_instance is None:
                try:
                    from ray.job_submission import JobSubmissionClient

                    self._client_instance = JobSubmissionClient(self.address, headers=self.headers or None)
                except Exception as exc:
                    raise RayJobsError(f"cannot reach the Ray job API at {self.address}: {exc}") from exc
            return self._client_instance

    def _call(self, action: str, method: str, *args, **kwargs):
        client = self._client()
        try:
            return getattr(client, method)(*args, **kwargs)
        except Exception as exc:
            if "status code 404" in str(exc):
                raise _UnknownJob(str(exc)) from exc
            raise RayJobsError(f"Ray job API at {self.address}: {action} failed: {exc}") from exc

    def _unknown(self, ref: str) -> ExecStatus:
        return ExecStatus(
            False,
            None,
            f"Ray job {ref} is unknown to the cluster at {self.address} "
            "(deleted, or the cluster was restarted)",
        )

    # --- the Executor interface ------------------------------------------------------------------

    def resources(self) -> dict:
        """The cluster's GPUs (its alive nodes' totals, from the dashboard's state API), read at most
        every 30 s; while the cluster does not answer, the last answer (none before the first: 0)."""
        now = time.monotonic()
        if self._resources is not None and now - self._resources[0] < 30:
            return self._resources[1]
        try:
            from ray.util.state import list_nodes

            nodes = list_nodes(
                address=self.address, filters=[("state", "=", "ALIVE")], raise_on_missing_output=False
            )
            found = {"gpus": int(sum((n.resources_total or {}).get("GPU", 0) for n in nodes))}
        except Exception as exc:  # noqa: BLE001 - a cluster that does not answer now may later
            log.warning("cannot read the Ray cluster's resources at %s: %s", self.address, exc)
            return self._resources[1] if self._resources else {"gpus": 0}
        self._resources = (now, found)
        return found

    def submit(self, job_id, command, env, cwd, log_path, resources, imports=()) -> str:
        """`submit_job` with the worker command as the entrypoint (run in `cwd`), `env` as the runtime
        env's env_vars and `resources` ({"num_cpus", "num_gpus"}) as the entrypoint's resources."""
        extras = dict(self.runtime_env)
        env_vars = {
            STOP_WAIT_ENV: str(max(1, math.ceil(self.stop_wait_s))),
            **extras.pop("env_vars", {}),
            **{key: str(value) for key, value in env.items()},
        }
        if resources.get("num_gpus"):
            env_vars.pop("CUDA_VISIBLE_DEVICES", None)  # Ray assigns the job's GPUs
        submission_id = f"fakefinder-{job_id}-{uuid.uuid4().hex[:8]}"
        metadata = {"fakefinder_job": str(job_id), "fakefinder_log": str(log_path)}
        try:
            ref = self._call(
                f"submitting job {job_id}",
                "submit_job",
                entrypoint=_entrypoint(list(map(str, command)), Path(cwd)),
                submission_id=submission_id,
                runtime_env={**extras, "env_vars": env_vars},
                entrypoint_num_cpus=resources.get("num_cpus"),
                entrypoint_num_gpus=resources.get("num_gpus"),
                metadata=metadata,
            )
        except _UnknownJob as exc:
            raise RayJobsError(
                f"Ray job API at {self.address}: submitting job {job_id} failed: {exc}"
            ) from exc
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._log_paths[ref] = Path(log_path)
        return ref

    def poll(self, ref: str) -> ExecStatus:
        """PENDING / RUNNING: running. SUCCEEDED: returncode 0. FAILED: the worker's exit code when it
        ran (else None) and Ray's reason. STOPPED: the stopped worker's exit code (3: it saved and
        stopped) when it reported one, else returncode None and a reason that starts with "stopped"."""
        with self._lock:
            if ref in self._final:
                return self._final[ref]
        try:
            info = self._call(f"reading the status of {ref}", "get_job_info", ref)
        except _UnknownJob:
            return self._unknown(ref)
        status = str(info.status)
        if status == "PENDING":
            return ExecStatus(True, None, _short(info.message or "waiting for Ray to start it"))
        if status == "RUNNING":
            return ExecStatus(True)
        if status == "SUCCEEDED":
            result = ExecStatus(False, 0)
        elif status == "FAILED":
            result = self._failed(ref, info)
        else:  # STOPPED
            result = self._stopped(ref)
        with self._lock:
            self._final[ref] = result
        return result

    def _failed(self, ref: str, info) -> ExecStatus:
        if info.driver_exit_code is not None:
            code = _as_returncode(info.driver_exit_code)
            if code < 0 and ref in self._killed:
                return ExecStatus(False, code, "stopped: killed on request (SIGKILL)")
            return ExecStatus(False, code, _exit_reason(code))
        message = info.message or ""
        if ref in self._cancelled or ref in self._killed or "killed by `ray.kill`" in message:
            return ExecStatus(
                False, None, "stopped before it started (cancelled while waiting for Ray resources)"
            )
        kind = f"{info.error_type}: " if getattr(info, "error_type", None) else ""
        return ExecStatus(False, None, f"Ray could not run the job: {kind}{_short(message)}")

    def _stopped(self, ref: str) -> ExecStatus:
        try:
            logs = self._call(f"reading the logs of {ref}", "get_job_logs", ref)
        except _UnknownJob:
            logs = ""
        codes = _EXIT_LINE.findall(logs)
        if codes:
            code = _as_returncode(int(codes[-1]))
            reason = "" if code in (0, 3) else f"stopped on request; {describe_exit(code)}"
            return ExecStatus(False, code, reason)
        if ref in self._killed:
            return ExecStatus(False, None, "stopped: killed on request (SIGKILL)")
        return ExecStatus(
            False,
            None,
            "stopped: Ray ended the worker before it reported an exit code (it "
            f"gets {STOP_WAIT_ENV} seconds after SIGTERM before SIGKILL)",
        )

    def read_output(self, ref: str, offset: int) -> tuple[str, int]:
        """The job's log (Ray's whole log, fetched each call) after character `offset`, whole lines
        only while it runs; the new text is appended to the job's log_path as well."""
        try:
            logs = self._call(f"reading the logs of {ref}", "get_job_logs", ref)
        except _UnknownJob:
            return "", offset
        if len(logs) <= offset:
            return "", offset
        end = logs.rfind("\n", offset) + 1
        if end < len(logs) and self._ended(ref):
            end = len(logs)  # the last line of a finished job needs no newline
        if end <= offset:
            return "", offset
        text = _readable_log(logs[offset:end])
        self._mirror(ref, logs, offset, end)
        return text, end

    def _ended(self, ref: str) -> bool:
        try:
            return not self.poll(ref).running
        except RayJobsError:
            return False

    def _mirror(self, ref: str, logs: str, offset: int, end: int) -> None:
        """Append what is new to the job's log file (once, whatever offsets the caller reads at)."""
        path = self._log_path(ref)
        if path is None:
            return
        with self._lock:
            start = max(offset, self._mirrored.get(ref, offset))
            if end <= start:
                return
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(_readable_log(logs[start:end]))
            self._mirrored[ref] = end

    def _log_path(self, ref: str) -> Path | None:
        with self._lock:
            if ref in self._log_paths:
                return self._log_paths[ref]
        try:  # a job an earlier server instance submitted: its log path travels in the job's metadata
            metadata = self._call(f"reading the metadata of {ref}", "get_job_info", ref).metadata or {}
        except (_UnknownJob, RayJobsError):
            return None
        path = Path(metadata["fakefinder_log"]) if metadata.get("fakefinder_log") else None
        with self._lock:
            self._log_paths[ref] = path
        return path

    def _status(self, ref: str) -> str | None:
        try:
            return str(self._call(f"reading the status of {ref}", "get_job_status", ref))
        except _UnknownJob:
            return None

    def stop(self, ref: str) -> None:
        """`stop_job`: Ray sends SIGTERM to the worker (SIGKILL after `stop_wait_s`). A job still waiting
        for resources is cancelled instead (Ray would only stop it once it had started)."""
        status = self._stop_job(ref)
        if status == "PENDING":
            with self._lock:
                self._cancelled.add(ref)
            self._reap("cancel", ref)

    def kill(self, ref: str) -> None:
        """Forced: `stop_job` (so Ray records the job as stopped), then a helper job SIGKILLs the worker
        and its children on their node (the job API has no forced stop of its own)."""
        if self._stop_job(ref) is None:
            return
        with self._lock:
            self._killed.add(ref)
        self._reap("kill", ref)

    def _stop_job(self, ref: str) -> str | None:
        """Ray's `stop_job` for a job that has not ended; its status before, or None if it has ended."""
        status = self._status(ref)
        if status is None or status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return None
        try:
            self._call(f"stopping {ref}", "stop_job", ref)
        except _UnknownJob:
            return None
        return status

    def _reap(self, mode: str, ref: str) -> str:
        """Submit the helper job (on the head node, needing no CPU); it runs in a few seconds."""
        try:
            return self._call(
                f"{mode} of {ref}",
                "submit_job",
                entrypoint=shlex.join([self.python, "-c", _REAPER, mode, ref]),
                submission_id=f"{ref}-{mode}-{uuid.uuid4().hex[:6]}",
                metadata={"fakefinder_reaper": ref},
            )
        except _UnknownJob as exc:
            raise RayJobsError(f"Ray job API at {self.address}: {mode} of {ref} failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._client_instance = None
