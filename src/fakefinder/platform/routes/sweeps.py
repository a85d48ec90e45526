"""Sweeps: a search over a kind's settings started (trials are ordinary train jobs, run by the queue),
and one sweep shown with its trials. Stopping, resuming, deleting and the artifact are a job's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends

from fakefinder.config import DEFAULT_TASK, config_to_yaml
from fakefinder.platform import jobs
from fakefinder.platform.paths import NotFound, RequestError
from fakefinder.platform.routes.common import Caller, Services, job_or_404, needs, public_job, services
from fakefinder.platform.routes.training import train_spec
from fakefinder.platform.sweeps import check_space, parse_spec, public_trials

router = APIRouter(dependencies=[Depends(needs("viewer"))])  # every route: an identified caller

EXAMPLE = {
    "model_type": DEFAULT_TASK,
    "dataset_path": "my-dataset",
    "epochs": 5,
    "sweep": {
        "metric": "val_auc",
        "direction": "maximize",
        "space": {
            "train.lr": {"low": 1e-5, "high": 1e-3, "log": True},
            "train.weight_decay": {"choices": [0, 0.01]},
        },
        "trials": 12,
        "concurrency": 2,
    },
}


def _sweep_job(svc: Services, body: dict, job_id: str) -> tuple[dict, Any, list]:
    """A sweep's job spec from its request: the start request's config, the sweep checked against it."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", "body")
    if "sweep" not in body:
        raise RequestError("sweep: required, the search (metric, direction, space, trials, ...)", "sweep")
    spec = parse_spec(body["sweep"])
    request = {k: v for k, v in body.items() if k != "sweep"}
    job_spec, task, notes = train_spec(svc, request, job_id)
    check_space(spec, job_spec["config"], svc.settings, svc.settings.jobs_dir / job_id)
    job_spec["sweep"] = spec.model_dump(mode="json")
    return job_spec, task, notes


@router.post("/api/sweeps/preview", tags=["sweeps"])
def preview_sweep(
    body: dict[str, Any] = Body(..., examples=[EXAMPLE]), svc: Services = Depends(services)
) -> dict:
    """What a sweep request would run, without starting it: the trials' common config (as YAML too),
    the sweep's settings with their defaults filled in, and notes; refused as `POST /api/sweeps` refuses."""
    job_spec, _, notes = _sweep_job(svc, body, "<new sweep>")
    config = jobs.validate(job_spec["config"])
    return {
        "config": job_spec["config"],
        "yaml": config_to_yaml(config),
        "sweep": job_spec["sweep"],
        "notes": notes,
    }


@router.post("/api/sweeps", tags=["sweeps"])
def start_sweep(
    body: dict[str, Any] = Body(..., examples=[EXAMPLE]),
    svc: Services = Depends(services),
    who: Caller = Depends(needs("member")),
) -> dict:
    """Queue a sweep: a start request (`model_type`, `dataset_path`, settings, as for
    `/api/training/start`) and `sweep`: the `metric` and its `direction`, the `space` of config keys to
    search (`low`/`high`, `log`, `step`, or `choices`), `trials`, `concurrency`, the pruner. Each trial
    is a train job of the caller's (counted toward the per-user limit); `evaluate` (default true)
    evaluates the best trial's model once at the end."""
    job_id = svc.store.new_id()
    job_spec, task, notes = _sweep_job(svc, body, job_id)
    job = svc.store.create(
        "sweep", task.name, body.get("name"), job_spec, svc.settings.jobs_dir, job_id, owner=who.name
    )
    svc.manager.wake()
    return {"task_id": job["id"], "state": job["state"], "notes": notes}


@router.get("/api/sweeps/{task_id}", tags=["sweeps"])
def get_sweep(task_id: str, svc: Services = Depends(services)) -> dict:
    """A sweep: the job (state, progress, best value so far, result), its settings and each trial's
    settings, state, value and job."""
    job = job_or_404(svc, task_id)
    if job["type"] != "sweep":
        raise NotFound(f"job {task_id} is a {job['type']} job, not a sweep", "task_id")
    return {**public_job(job), "sweep": job["spec"]["sweep"], "trials": public_trials(svc.store, job)}
