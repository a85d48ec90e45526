"""What the routes share: the platform's services (settings, job store, queue) as a FastAPI dependency,
who is calling and what their role allows, a job as the API shows it, the files a job's result names, a
job by id or a 404, server-sent events, a folder sent as a ZIP."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from fakefinder.platform.manager import JobManager
from fakefinder.platform.paths import Forbidden, NotFound, job_output, within
from fakefinder.platform.settings import ServeSettings
from fakefinder.platform.store import ROLES, JobStore


@dataclass
class Services:
    settings: ServeSettings
    store: JobStore
    manager: JobManager


async def services(request: Request) -> Services:
    """The running app's services (a dependency of every route; async: answered on the event loop)."""
    return request.app.state.services


@dataclass(frozen=True)
class Caller:
    """Who sent a request: a token's name and role (`--token`: admin; a server without tokens: its one
    local user, an admin)."""

    name: str
    role: str


def needs(role: str):
    """A route dependency: the caller, refused (403) unless their role is `role` or one above it."""

    async def check(request: Request) -> Caller:  # async: no thread hop for a look at the request
        who: Caller = request.state.caller  # set by the app's request guard
        if ROLES.index(who.role) < ROLES.index(role):
            raise Forbidden(f"{who.name} is a {who.role}: this needs the {role} role or above")
        return who

    return check


def check_owner(who: Caller, owner: str | None, what: str) -> None:
    """Members change only what they created; admins change anything (what has no owner is theirs)."""
    if who.role != "admin" and owner != who.name:
        raise Forbidden(f"{what} belongs to {owner or 'the admins'}: {who.name} may change only their own")


def job_or_404(svc: Services, task_id: str) -> dict:
    job = svc.store.get(task_id)
    if job is None:
        raise NotFound(f"no job {task_id!r}", "task_id")
    return job


def public_job(job: dict) -> dict:
    """A job as the API shows it."""
    result = job["result"] if isinstance(job["result"], dict) else None
    folder = Path(job["folder"])
    return {
        "task_id": job["id"],
        "name": job["name"],
        "owner": job.get("owner"),
        "parent": job.get("parent"),
        "type": job["type"],
        "kind": job["kind"],
        "state": job["state"],
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        "progress": job["progress"] or {},
        "metrics": job["metrics"] or {},
        "error": job["error"],
        "result": result,
        "device": job["device"],
        "executor": job["executor"],
        "attempts": job["attempts"],
        "resumable": job["type"] in ("train", "sweep")
        and job["state"] in ("cancelled", "interrupted", "failed"),
        "stop_requested": bool(job["stop_requested"]),
        "output_dir": str(folder),
        "files": {
            "report": job_output(job, "report") is not None,
            "artifact": job_output(job, "artifact") is not None,
        },
    }


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def zip_response(folder: Path, filename: str) -> FileResponse:
    """A ZIP of `folder` (its regular files, no symlinks), removed once sent."""
    handle = tempfile.NamedTemporaryFile(suffix=".zip", delete=False)
    handle.close()
    try:
        with zipfile.ZipFile(handle.name, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink() and within(path.resolve(), folder.resolve()):
                    archive.write(path, path.relative_to(folder).as_posix())
    except BaseException:
        os.unlink(handle.name)
        raise
    return FileResponse(
        handle.name,
        filename=filename,
        media_type="application/zip",
        background=BackgroundTask(os.unlink, handle.name),
    )
