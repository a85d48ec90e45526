"""`fakefinder sweep`: a sweep on this machine without a server. The platform's queue, its local
workers and its sweep loop run in this process; the job store, the Optuna study, the trials' folders
and the sweep's result lie in one output folder, so `--resume` continues a sweep that was stopped."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from fakefinder.config import ConfigError, config_from_dict, read_config_tree
from fakefinder.platform.paths import RequestError
from fakefinder.platform.store import ACTIVE, FINISHED, JobStore
from fakefinder.platform.sweeps import check_space, parse_spec

DONE_CODES = {"succeeded": 0, "cancelled": 130}


def run_sweep(
    path: Path | None,
    overrides: list[str],
    output: Path,
    devices: list[str] | None = None,
    jobs_per_device: int = 1,
    evaluate: bool = True,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> dict:
    """Run (or with `resume`, continue) the sweep a YAML file describes: its `sweep:` section and the
    config of each trial around it. Returns the sweep's job record when it has ended; Ctrl-C stops
    its trials (they save a checkpoint) and ends it `cancelled`, a second Ctrl-C leaves at once."""
    from fakefinder.engine.tracking import local_mlflow_uri
    from fakefinder.platform.executors import make_executor
    from fakefinder.platform.manager import JobManager
    from fakefinder.platform.outbox import MlflowJobs, Outbox
    from fakefinder.platform.settings import ServeSettings
    from fakefinder.tasks import get_task

    tree, source = read_config_tree(path, overrides)
    raw = tree.pop("sweep", None)
    if raw is None and not resume:
        raise ConfigError(f"{source}: no `sweep:` section (metric, direction, space, trials, ...)")
    config = config_from_dict(tree, source)
    uri = get_task(config.task).run_settings(config).tracker_uri
    settings = ServeSettings(
        data_dir=output,
        devices=devices or None,
        jobs_per_device=jobs_per_device,
        # this machine's user: every path the config names is theirs; relative ones are from here
        dataset_roots=[Path.cwd(), Path("/")],
        mlflow_uri=uri or os.environ.get("MLFLOW_TRACKING_URI") or local_mlflow_uri(Path.cwd()),
    )
    settings.make_dirs()
    store = JobStore(settings.database)
    sweep = _earlier(store)
    if resume:
        if sweep is None:
            raise ConfigError(f"{output}: holds no sweep to resume")
        if sweep["state"] in ("cancelled", "interrupted", "failed"):
            store.transition(
                sweep["id"], FINISHED, state="queued", finished_at=None, error=None, stop_requested=None
            )
    elif sweep is not None:
        raise ConfigError(
            f"{output}: holds sweep {sweep['id']} ({sweep['state']}); continue it with --resume or choose "
            "another --output"
        )
    else:
        try:
            spec = parse_spec(raw)
        except RequestError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        job_id = store.new_id()
        job_tree = config.model_dump(mode="json")
        check_space(spec, job_tree, settings, settings.jobs_dir / job_id)
        job_spec = {"config": job_tree, "evaluate": evaluate, "sweep": spec.model_dump(mode="json")}
        sweep = store.create(
            "sweep", config.task, f"sweep-{config.task}", job_spec, settings.jobs_dir, job_id
        )
    outbox = Outbox("fakefinder-sweep-mlflow")
    store.observers.append(MlflowJobs(settings.mlflow_uri, store, outbox))
    manager = JobManager(settings, store, make_executor(settings))
    manager.start()
    try:
        _follow(store, manager, sweep["id"], echo)
    finally:
        manager.close()
        outbox.close()
    return store.get(sweep["id"])


def _earlier(store: JobStore) -> dict | None:
    sweeps = store.list(type="sweep")
    return next((s for s in sweeps if s["state"] != "succeeded"), sweeps[0] if sweeps else None)


def _follow(store: JobStore, manager, sweep_id: str, echo) -> None:
    """The sweep's log as it grows, until it ends; Ctrl-C stops it (twice: leave now)."""
    seen = 0
    stopping = False
    while True:
        try:
            for line in store.logs(sweep_id, after=seen):
                echo(line["text"])
                seen = line["seq"]
            job = store.get(sweep_id)
            if job is None or job["state"] not in ACTIVE:
                for line in store.logs(sweep_id, after=seen):
                    echo(line["text"])
                return
            time.sleep(0.5)
        except KeyboardInterrupt:
            if stopping:
                echo("leaving now: running trials are stopped and can be continued with --resume")
                return
            stopping = True
            echo("stopping the sweep: its trials save and stop (Ctrl-C again to leave at once)")
            manager.stop(sweep_id)
