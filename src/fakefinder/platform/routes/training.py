"""Training jobs: a request previewed and started (the short form or a full config), listed, followed
(state, metrics, logs, a live stream), stopped, resumed, deleted, compared."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import StreamingResponse

from fakefinder.config import DEFAULT_TASK, config_to_yaml
from fakefinder.platform import jobs
from fakefinder.platform.notify import check_notify
from fakefinder.platform.paths import RequestError
from fakefinder.platform.routes.common import (
    Caller,
    Services,
    check_owner,
    job_or_404,
    needs,
    public_job,
    services,
    sse,
)
from fakefinder.platform.store import FINISHED, JOB_TYPES, STATES

router = APIRouter(dependencies=[Depends(needs("viewer"))])  # every route: an identified caller


def train_spec(svc: Services, body: dict, job_id: str) -> tuple[dict, Any]:
    task = jobs.kind_of(body)
    config, _ = jobs.build_config(body, task, svc.settings)
    notes = config.notes  # older key names the request used, sections the kind does not read
    folder = svc.settings.jobs_dir / job_id
    config = jobs.job_config(config, task, svc.settings, folder)
    evaluate = body.get("evaluate", True)
    if not isinstance(evaluate, bool):
        raise RequestError("evaluate: true or false", "evaluate")
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 200):
        raise RequestError("name: a text of at most 200 characters", "name")
    spec = {"config": config.model_dump(mode="json"), "evaluate": evaluate}
    notify = check_notify(body.get("notify"), svc.settings.webhooks)
    if notify is not None:
        spec["notify"] = notify
    gpus = body.get("num_gpus")
    if gpus is not None:
        if not isinstance(gpus, int) or isinstance(gpus, bool) or not 0 <= gpus <= 64:
            raise RequestError("num_gpus: a whole number from 0 to 64", "num_gpus")
        spec["num_gpus"] = gpus
    return spec, task, notes


@router.post("/api/config/preview", tags=["training"])
def preview(
    body: dict[str, Any] = Body(..., examples=[{"model_type": DEFAULT_TASK, "dataset_path": "my-dataset"}]),
    svc: Services = Depends(services),
) -> dict:
    """The config a start request would run, without starting it: the resolved config, its YAML and
    the notes (renamed keys, defaults filled in); a bad request is refused as `start` refuses it."""
    spec, _, notes = train_spec(svc, body, "<new job>")
    config = jobs.validate(spec["config"])
    return {"config": spec["config"], "yaml": config_to_yaml(config), "notes": notes}


@router.post("/api/training/start", tags=["training"])
def start(
    body: dict[str, Any] = Body(
        ...,
        examples=[
            {
                "model_type": DEFAULT_TASK,
                "dataset_path": "my-dataset",
                "epochs": 2,
                "batch_size": 8,
                "learning_rate": 0.001,
            }
        ],
    ),
    svc: Services = Depends(services),
    who: Caller = Depends(needs("member")),
) -> dict:
    """Queue a training job: `model_type` (the kind), `dataset_path` (an uploaded dataset's name) and
    the job's settings, as short fields (`epochs`, `learning_rate`, ...) or dotted config keys
    (`train.lr`); answers the job's id and state (`queued`)."""
    job_id = svc.store.new_id()
    spec, task, notes = train_spec(svc, body, job_id)
    job = svc.store.create(
        "train",
        task.name,
        body.get("name"),
        spec,
        svc.settings.jobs_dir,
        job_id,
        owner=who.name,
        limit=svc.settings.max_jobs_per_user,
    )
    svc.manager.wake()
    return {"task_id": job["id"], "state": job["state"], "notes": notes}


@router.get("/api/training", tags=["training"])
def list_jobs(
    state: Literal[STATES] | None = None,
    kind: str | None = None,
    type: Literal[JOB_TYPES] | None = None,
    svc: Services = Depends(services),
) -> dict:
    """Every job, newest first, optionally only those in one state, of one kind or of one type."""
    return {"jobs": [public_job(j) for j in svc.store.list(state, kind, type)]}


@router.get("/api/training/{task_id}", tags=["training"])
def get_job(task_id: str, svc: Services = Depends(services)) -> dict:
    """One job: its state, progress (step of total, ETA), latest metrics, config, result or error."""
    return public_job(job_or_404(svc, task_id))


@router.delete("/api/training/{task_id}", tags=["training"])
def delete_job(
    task_id: str, svc: Services = Depends(services), who: Caller = Depends(needs("member"))
) -> dict:
    """Remove a finished job and its folder (a running one is refused: stop it first). Members delete
    only their own jobs."""
    check_owner(who, job_or_404(svc, task_id)["owner"], f"job {task_id}")
    svc.manager.delete(task_id)
    return {"deleted": task_id}


@router.post("/api/training/{task_id}/stop", tags=["training"])
def stop_job(
    task_id: str,
    force: bool = False,
    svc: Services = Depends(services),
    who: Caller = Depends(needs("member")),
) -> dict:
    """Stop a job: a queued one is cancelled, a running one saves a checkpoint and stops (`force`: at
    once, without saving); it can be resumed later. Members stop only their own jobs."""
    check_owner(who, job_or_404(svc, task_id)["owner"], f"job {task_id}")
    return public_job(svc.manager.stop(task_id, force))


@router.post("/api/training/{task_id}/resume", tags=["training"])
def resume_job(
    task_id: str, svc: Services = Depends(services), who: Caller = Depends(needs("member"))
) -> dict:
    """Queue a stopped or failed job again; it continues from its latest checkpoint. Members resume only
    their own jobs, within the per-user limit."""
    job = job_or_404(svc, task_id)
    check_owner(who, job["owner"], f"job {task_id}")
    svc.store.check_limit(job["owner"], svc.settings.max_jobs_per_user)
    return public_job(svc.manager.resume(task_id))


@router.get("/api/training/{task_id}/metrics", tags=["training"])
def job_metrics(task_id: str, svc: Services = Depends(services)) -> dict:
    """The job's whole metric history: one row per logged step and per evaluation."""
    job_or_404(svc, task_id)
    return {"task_id": task_id, "history": svc.store.metrics(task_id)}


@router.get("/api/training/{task_id}/logs", tags=["training"])
def job_logs(
    task_id: str,
    tail: int = Query(200, ge=1, le=5000),
    after: int = Query(0, ge=0, le=2**62),
    svc: Services = Depends(services),
) -> dict:
    """The job's log lines after line `after` (at most the last `tail`), and the number to ask after
    next."""
    job_or_404(svc, task_id)
    lines = svc.store.logs(task_id, after=after, tail=tail)
    return {
        "lines": lines,
        "next": lines[-1]["seq"] if lines else max(after, svc.store.last_log_seq(task_id)),
    }


@router.get(
    "/api/training/{task_id}/logs/stream",
    tags=["training"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_log_stream(
    request: Request,
    task_id: str,
    after: int = Query(0, ge=0, le=2**62),
    max_seconds: float = Query(3600, gt=0, le=86400),
    svc: Services = Depends(services),
):
    """The job live, as server-sent events: `log` lines, `metrics` rows, `state` changes and a last
    `end`; it closes when the job finishes, the client leaves or `max_seconds` pass."""
    await to_thread.run_sync(job_or_404, svc, task_id)
    return StreamingResponse(
        _stream(svc, request, task_id, after, max_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(svc: Services, request: Request, task_id: str, after: int, max_seconds: float):
    seen_metrics = 0
    last_state = None
    started = last_sent = time.monotonic()
    while True:
        job = await to_thread.run_sync(svc.store.get, task_id)
        if job is None:
            yield sse("end", {"task_id": task_id, "deleted": True})
            return
        lines = await to_thread.run_sync(lambda: svc.store.logs(task_id, after=after))
        for line in lines:
            yield sse("log", line, line["seq"])
            after = line["seq"]
        rows = await to_thread.run_sync(lambda: svc.store.metrics(task_id, after=seen_metrics))
        for row in rows:
            yield sse("metrics", row)
            seen_metrics = row["seq"]
        shown = public_job(job)
        marker = (
            shown["state"],
            json.dumps(shown["progress"], sort_keys=True),
            json.dumps(shown["metrics"], sort_keys=True),
        )
        if marker != last_state:
            yield sse("state", shown)
            last_state = marker
            last_sent = time.monotonic()
        elif lines or rows:
            last_sent = time.monotonic()
        if job["state"] in FINISHED and not lines:
            yield sse("end", {"task_id": task_id, "state": job["state"]})
            return
        if await request.is_disconnected() or time.monotonic() - started > max_seconds:
            return
        if time.monotonic() - last_sent > 15:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(0.25)


@router.get("/api/compare", tags=["training"])
def compare(
    ids: str = Query(..., description="Job ids, comma-separated"), svc: Services = Depends(services)
) -> dict:
    """Several jobs side by side (up to 20): each one's kind, state, metric history and final figures."""
    runs = []
    for task_id in [i for i in ids.split(",") if i.strip()][:20]:
        job = job_or_404(svc, task_id.strip())
        runs.append(
            {
                "task_id": job["id"],
                "name": job["name"],
                "kind": job["kind"],
                "state": job["state"],
                "history": svc.store.metrics(job["id"]),
                "final": job["metrics"],
            }
        )
    if not runs:
        raise RequestError("ids: name at least one job", "ids")
    return {"runs": runs}
