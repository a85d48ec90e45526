"""Datasets: listed and described (their layout, counts, the kinds that read them), uploaded as a
ZIP (checked and unpacked safely), deleted, prepared by a job."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, File, Form, UploadFile

from fakefinder.platform import jobs, uploads
from fakefinder.platform.paths import Conflict, RequestError
from fakefinder.platform.routes.common import Caller, Services, check_owner, needs, services

router = APIRouter(dependencies=[Depends(needs("viewer"))])  # every route: an identified caller


@router.get("/api/datasets", tags=["datasets"])
def list_all_datasets(svc: Services = Depends(services)) -> dict:
    """The datasets under the server's dataset roots, each with its layout, what kinds it suits and
    its counts."""
    found = []
    for root in svc.settings.dataset_roots:
        if root.is_dir():
            found += uploads.list_datasets(root)
    owners = svc.store.dataset_owners()
    return {"datasets": [{**d, "owner": owners.get(d["name"])} for d in found]}


@router.post("/api/datasets", tags=["datasets"], status_code=201)
def upload_dataset(
    file: UploadFile = File(..., description="A ZIP of the dataset"),
    name: str = Form(..., max_length=128),
    svc: Services = Depends(services),
    who: Caller = Depends(needs("member")),
) -> dict:
    """Upload a dataset as a ZIP under `name` (size, file count and compression ratio are limited;
    nothing in it runs); answers how it was recognised, as `GET /api/datasets/{name}` does."""
    size = file.size if file.size is not None else os.fstat(file.file.fileno()).st_size
    if size > svc.settings.upload_max_bytes:
        raise RequestError(
            f"file: {size} bytes is over the upload limit of {svc.settings.upload_max_bytes}", "file", 413
        )
    limits = uploads.ZipLimits(
        max_bytes=svc.settings.upload_max_bytes,
        max_files=svc.settings.upload_max_files,
        max_ratio=svc.settings.upload_max_ratio,
    )
    path = uploads.unpack_zip(file.file, svc.settings.datasets_dir, name, limits)
    svc.store.set_dataset_owner(path.name, who.name)
    return {**uploads.describe_dataset(path), "owner": who.name}


def dataset_folder(svc: Services, name: str) -> Path:
    for root in svc.settings.dataset_roots[1:]:
        try:
            return uploads.dataset_path(root, name)
        except uploads.DatasetNotFoundError:
            continue
    return uploads.dataset_path(svc.settings.datasets_dir, name)


@router.get("/api/datasets/{name}", tags=["datasets"])
def get_dataset(name: str, svc: Services = Depends(services)) -> dict:
    """One dataset: its layout, the kinds that can train on it, its splits and counts, who uploaded it."""
    path = dataset_folder(svc, name)
    return {**uploads.describe_dataset(path), "owner": svc.store.dataset_owners().get(path.name)}


@router.delete("/api/datasets/{name}", tags=["datasets"])
def delete_dataset(
    name: str, svc: Services = Depends(services), who: Caller = Depends(needs("member"))
) -> dict:
    """Remove an uploaded dataset (refused while a queued or running job uses it). Members delete only
    the datasets they uploaded."""
    path = dataset_folder(svc, name)
    check_owner(who, svc.store.dataset_owners().get(path.name), f"dataset {name}")
    for job in svc.store.in_state("queued", "running"):
        if str(path) in json.dumps(job["spec"]):
            raise Conflict(f"name: dataset {name} is used by job {job['id']} ({job['state']})", "name")
    shutil.rmtree(path)
    svc.store.forget_dataset(path.name)
    return {"deleted": name}


@router.post("/api/datasets/{name}/prepare", tags=["datasets"])
def prepare_dataset(
    name: str,
    body: dict[str, Any] = Body(default_factory=dict, examples=[{"output_name": "my-faces"}]),
    svc: Services = Depends(services),
    who: Caller = Depends(needs("member")),
) -> dict:
    """Queue a prepare job: a dataset of videos in a published layout -> face crops and a manifest,
    saved as a new dataset (`output_name`); `shards` splits the work across Ray workers."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", "body")
    description = uploads.describe_dataset(dataset_folder(svc, name))
    shards = body.pop("shards", 1)
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 256:
        raise RequestError("shards: a whole number from 1 to 256", "shards")
    if shards > 1 and svc.manager.executor.name != "ray":
        raise RequestError("shards: parallel shards need the Ray executor (--executor ray)", "shards")
    job_id = svc.store.new_id()
    folder = svc.settings.jobs_dir / job_id
    config, output = jobs.prepare_config(description, body, svc.settings, folder)
    job = svc.store.create(
        "prepare",
        None,
        f"prepare {name}",
        {"config": config.model_dump(mode="json"), "shards": shards, "dataset": output.name},
        svc.settings.jobs_dir,
        job_id,
        owner=who.name,
        limit=svc.settings.max_jobs_per_user,
    )
    svc.store.set_dataset_owner(output.name, who.name)
    svc.manager.wake()
    return {"task_id": job["id"], "state": job["state"], "output_name": output.name}
