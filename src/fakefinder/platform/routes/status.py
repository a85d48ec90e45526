"""The platform itself: its health (version, executor, device slots) and the model kinds it serves."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from fakefinder import __version__
from fakefinder.platform import jobs
from fakefinder.platform.routes.common import Services, needs, services

router = APIRouter(dependencies=[Depends(needs("viewer"))])  # every route: an identified caller


@router.get("/api/health", tags=["platform"])
def health(svc: Services = Depends(services)) -> dict:
    """The server's version, executor (local or Ray) and its device slots."""
    return {
        "status": "ok",
        "version": __version__,
        "executor": svc.manager.executor.name,
        "devices": svc.manager.slots(),
    }


@router.get("/api/kinds", tags=["platform"])
def kinds(svc: Services = Depends(services)) -> dict:
    """The model kinds a job can train, each with its description, settings and the datasets it reads."""
    return {"kinds": jobs.catalog()}
