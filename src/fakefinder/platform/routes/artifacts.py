"""A job's files: its folder listed and downloaded, its report, its model artifact as a ZIP, a LoRA
adapter as a ZIP, a merge job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import FileResponse

from fakefinder.platform import jobs
from fakefinder.platform.paths import NotFound, RequestError, confine
from fakefinder.platform.routes.common import (
    Caller,
    Services,
    job_or_404,
    job_output,
    needs,
    services,
    zip_response,
)
from fakefinder.tasks import get_task

router = APIRouter(dependencies=[Depends(needs("viewer"))])  # every route: an identified caller


def job_file(job: dict, relative: str) -> Path:
    folder = Path(job["folder"]).resolve()
    path = confine(relative, [folder], "path", must_exist=True)
    if not path.is_file():
        raise NotFound(f"path: {relative} is not a file of job {job['id']}", "path")
    return path


@router.get("/api/training/{task_id}/files", tags=["artifacts"])
def list_files(task_id: str, svc: Services = Depends(services)) -> dict:
    """The files of the job's folder (path and size; at most 5,000): checkpoints, logs, reports."""
    folder = Path(job_or_404(svc, task_id)["folder"])
    files = []
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                files.append({"path": path.relative_to(folder).as_posix(), "size": path.stat().st_size})
                if len(files) >= 5000:
                    break
    return {"files": files}


@router.get("/api/training/{task_id}/files/{path:path}", tags=["artifacts"], response_class=FileResponse)
def download_file(task_id: str, path: str, svc: Services = Depends(services)):
    """One file of the job's folder (a path `files` lists; nothing outside the folder)."""
    file = job_file(job_or_404(svc, task_id), path)
    return FileResponse(file, filename=file.name)


@router.get(
    "/api/training/{task_id}/report",
    tags=["artifacts"],
    response_class=FileResponse,
    responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
)
def report(task_id: str, svc: Services = Depends(services)):
    """The job's HTML report, once its evaluation has written it."""
    job = job_or_404(svc, task_id)
    path = job_output(job, "report")
    if path is None or not path.is_file():
        raise NotFound(f"job {task_id} has no report (yet)", "task_id")
    return FileResponse(path, media_type="text/html")


@router.get("/api/training/{task_id}/artifact", tags=["artifacts"], response_class=FileResponse)
def artifact(task_id: str, svc: Services = Depends(services)):
    """The model artifact the job trained (its folder as a zip): what `predict`, `evaluate` and
    `export` take."""
    job = job_or_404(svc, task_id)
    path = job_output(job, "artifact")
    if path is None or not path.is_dir():
        raise NotFound(f"job {task_id} has no model artifact (yet)", "task_id")
    return zip_response(Path(path), f"{job['name']}-model.zip")


def adapter_of(svc: Services, task_id: str) -> tuple[dict, Path, Any]:
    job = job_or_404(svc, task_id)
    task = get_task(job["kind"]) if job["kind"] else None
    if task is None or task.adapter is None:
        raise RequestError(
            f"task_id: job {task_id} is a {job['kind']} job, which trains no LoRA adapter", "task_id"
        )
    path = job_output(job, "artifact")
    if path is None or not (path / task.adapter).is_dir():
        raise NotFound(
            f"job {task_id} has no LoRA adapter (not finished, or not trained with LoRA)", "task_id"
        )
    return job, Path(path), task


@router.get("/api/llm-finetuning/export/{task_id}", tags=["artifacts"], response_class=FileResponse)
def export_adapter(task_id: str, svc: Services = Depends(services)):
    """A LoRA job's adapter as a zip, the folder peft (or diffusers) loads."""
    job, path, task = adapter_of(svc, task_id)
    return zip_response(path / task.adapter, f"{job['name']}-adapter.zip")


@router.post("/api/llm-finetuning/merge", tags=["artifacts"])
def merge(
    body: dict[str, Any] = Body(..., examples=[{"task_id": "...", "output_path": "merged-model"}]),
    svc: Services = Depends(services),
    who: Caller = Depends(needs("member")),
) -> dict:
    """Queue a merge job: the LoRA adapter of job `task_id` folded into its base, written as a
    standalone model to `output_path` (inside the server's output roots)."""
    if not isinstance(body.get("task_id"), str):
        raise RequestError("task_id: required", "task_id")
    job, path, task = adapter_of(svc, body["task_id"])
    output = jobs.check_output_path(body.get("output_path"), svc.settings)
    spec = {"artifact": str(path), "output": str(output), "source": job["id"]}
    merged = svc.store.create(
        "merge",
        task.name,
        f"merge {job['name']}",
        spec,
        svc.settings.jobs_dir,
        owner=who.name,
        limit=svc.settings.max_jobs_per_user,
    )
    svc.manager.wake()
    return {"task_id": merged["id"], "output_path": str(output)}
