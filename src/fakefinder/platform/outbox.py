"""What the platform tells the world about its jobs, off the queue's thread: their MLflow runs (from
the events the platform already receives, so local and Ray workers are logged alike) and, in
`notify.py`, webhooks. Work is queued and done in order by one background thread; a failure is logged
and never reaches the queue."""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from fakefinder.config import config_from_dict
from fakefinder.engine.tracking import MLFLOW_NOTE, MlflowRun
from fakefinder.platform.store import FINISHED, JobStore

log = logging.getLogger("fakefinder.platform")
MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED", "interrupted": "KILLED"}


class Outbox:
    """One background thread doing queued work in order; `close` finishes what is queued (bounded)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._work: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def put(self, work: Callable[[], None]) -> None:
        """Queue `work`; the thread starts with the first (again after a `close`: an app served anew)."""
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._work.put(work)

    def _loop(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            try:
                work()
            except Exception:  # one delivery's trouble never stops the others
                log.exception("outbox")
            finally:
                self._work.task_done()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait (at most `timeout`) until everything queued so far is done."""
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                return
            done = threading.Event()
            self._work.put(done.set)
        done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (at most `timeout`), then let the thread end."""
        self.drain(timeout)
        with self._guard:
            thread, self._thread = self._thread, None
            if thread is not None and thread.is_alive():
                self._work.put(None)
        if thread is not None:
            thread.join(timeout=1)


class MlflowJobs:
    """MLflow runs of the platform's training jobs whose config names `mlflow` in its trackers: made
    when the job starts (continued when it resumes), fed every metric row the worker reports, ended
    with the job's state, its report and artifact folder. One tracking URI for the whole server."""

    def __init__(self, uri: str, store: JobStore, outbox: Outbox) -> None:
        self.uri, self.store, self.outbox = uri, store, outbox
        self._runs: dict[str, MlflowRun | None] = {}  # job -> its run (None: not logged)

    # store observer: queue the work, never block
    def job_state(self, job_id: str, state: str) -> None:
        if state == "running":
            self.outbox.put(lambda: self._run(job_id, fresh=True))
        elif state in FINISHED:
            self.outbox.put(lambda: self._end(job_id, state))

    def job_metrics(self, job_id: str, rows: list) -> None:
        self.outbox.put(lambda: self._log(job_id, rows))

    def _run(self, job_id: str, fresh: bool = False) -> MlflowRun | None:
        if job_id in self._runs and not fresh:
            return self._runs[job_id]
        job = self.store.get(job_id)
        run = None
        if job is not None and job["type"] == "train" and isinstance((job["spec"] or {}).get("config"), dict):
            from fakefinder.tasks import get_task

            tree = job["spec"]["config"]
            config = config_from_dict(tree, f"job {job_id}")
            settings = get_task(config.task).run_settings(config)
            if "mlflow" in settings.trackers:
                note = Path(job["folder"]) / MLFLOW_NOTE
                earlier = _read_json(note)
                run = MlflowRun(
                    self.uri,
                    settings.tracker_project or "fakefinder",
                    job["name"] or job_id,
                    config.task,
                    tree,
                    tags={
                        "fakefinder.job": job_id,
                        "fakefinder.owner": job.get("owner") or "admins",
                        **({"fakefinder.sweep": job["parent"]} if job.get("parent") else {}),
                    },
                    run_id=earlier.get("run_id") if earlier.get("uri") == self.uri else None,
                )
                note.parent.mkdir(parents=True, exist_ok=True)
                note.write_text(json.dumps({"uri": self.uri, "run_id": run.run_id}))
        self._runs[job_id] = run
        return run

    def _log(self, job_id: str, rows: list) -> None:
        run = self._run(job_id)
        if run is not None:
            for at, stage, data in rows:
                run.log(stage, data, timestamp=at)

    def _end(self, job_id: str, state: str) -> None:
        job = self.store.get(job_id)
        if job_id not in self._runs and (job is None or not (Path(job["folder"]) / MLFLOW_NOTE).is_file()):
            return  # never started (cancelled while queued), or not logged
        run = self._run(job_id)
        self._runs.pop(job_id, None)
        if run is None:
            return
        job = self.store.get(job_id) or {}
        from fakefinder.platform.paths import job_output

        report = job_output(job, "report") if job else None
        artifact = job_output(job, "artifact") if job else None
        run.finish(
            MLFLOW_STATUS[state], report, artifact if artifact is not None and artifact.is_dir() else None
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
