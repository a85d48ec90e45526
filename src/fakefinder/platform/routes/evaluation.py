"""Evaluate and predict jobs: a model (a job's artifact, or one in the roots) on a dataset, or on an
uploaded file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, File, Form, UploadFile

from fakefinder.config import DEFAULT_TASK
from fakefinder.core.errors import FakefinderError
from fakefinder.platform import jobs
from fakefinder.platform.paths import RequestError, confine
from fakefinder.platform.routes.common import Services, job_or_404, job_output, services
from fakefinder.tasks import get_task, read_model

router = APIRouter()


def model_source(svc: Services, body: dict) -> tuple[Path, dict]:
    """The artifact a request names (a job's, or a path in the roots) and the config to start from."""
    if body.get("model_task_id") is not None:
        if not isinstance(body["model_task_id"], str):
            raise RequestError("model_task_id: a job id", "model_task_id")
        job = job_or_404(svc, body["model_task_id"])
        path = job_output(job, "artifact")
        if job["type"] != "train" or path is None:
            raise RequestError(f"model_task_id: job {job['id']} has no model artifact", "model_task_id")
        return Path(path), dict(job["spec"]["config"])
    if not isinstance(body.get("model_path"), str):
        raise RequestError("model_task_id or model_path: name the model to use", "model_task_id")
    path = confine(
        body["model_path"],
        [*svc.settings.dataset_roots, svc.settings.jobs_dir, *svc.settings.output_roots],
        "model_path",
        must_exist=True,
    )
    try:
        artifact = read_model(path)
    except FakefinderError as exc:
        raise RequestError(f"model_path: {exc}", "model_path") from None
    base = artifact.architecture.get("base") if isinstance(artifact.architecture, dict) else None
    source = base.get("source") if isinstance(base, dict) else None
    if isinstance(source, str) and (source.startswith(("/", "~", ".")) or Path(source).exists()):
        # an adapter names the base it loads: a local one must be inside the roots too
        confine(
            source,
            [*svc.settings.dataset_roots, svc.settings.jobs_dir, *svc.settings.output_roots],
            "model_path",
        )
    return path, {"task": artifact.kind}


@router.post("/api/evaluate", tags=["evaluate"])
def evaluate(
    body: dict[str, Any] = Body(..., examples=[{"model_task_id": "...", "dataset_path": "faces"}]),
    svc: Services = Depends(services),
) -> dict:
    artifact_path, tree = model_source(svc, body)
    task = get_task(tree.get("task", DEFAULT_TASK))
    if isinstance(body.get("dataset_path"), str):
        dataset = confine(body["dataset_path"], svc.settings.dataset_roots, "dataset_path", must_exist=True)
        from fakefinder.config import set_key

        try:
            settings_for_data = task.dataset_settings(dataset)
        except (FakefinderError, OSError, ValueError) as exc:
            raise RequestError(f"dataset_path: {exc}", "dataset_path") from None
        for dotted, value in settings_for_data.items():
            set_key(tree, dotted, value)
    job_id = svc.store.new_id()
    folder = svc.settings.jobs_dir / job_id
    tree.setdefault("evaluate", {})
    tree["evaluate"] = {**tree["evaluate"], "models": [str(artifact_path)]}
    config = jobs.confine_paths(jobs.place_outputs(jobs.validate(tree), task, folder), svc.settings, folder)
    job = svc.store.create(
        "evaluate",
        task.name,
        body.get("name") if isinstance(body.get("name"), str) else None,
        {"config": config.model_dump(mode="json")},
        svc.settings.jobs_dir,
        job_id,
    )
    svc.manager.wake()
    return {"task_id": job["id"], "state": job["state"]}


@router.post("/api/predict", tags=["evaluate"])
def predict(
    file: UploadFile = File(
        ..., description="An image or a video (a language model: prompts in .jsonl or .txt)"
    ),
    model_task_id: str | None = Form(None),
    model_path: str | None = Form(None),
    svc: Services = Depends(services),
) -> dict:
    artifact_path, tree = model_source(svc, {"model_task_id": model_task_id, "model_path": model_path})
    task = get_task(tree.get("task", DEFAULT_TASK))
    from fakefinder.media.images import MEDIA_EXTENSIONS

    name = Path(file.filename or "").name
    suffix = Path(name).suffix.lower()
    accepted = task.predict_inputs or MEDIA_EXTENSIONS
    if not name or suffix not in accepted:
        what = "a file it reads" if task.predict_inputs else "an image or video"
        raise RequestError(
            f"file: {name or 'the upload'} is not {what} for a {task.name} model "
            f"({', '.join(sorted(accepted))})",
            "file",
        )
    job_id = svc.store.new_id()
    folder = svc.settings.jobs_dir / job_id
    inputs = folder / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    target = inputs / ((re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).stem)[:60] or "input") + suffix)
    with open(target, "wb") as handle:
        shutil.copyfileobj(file.file, handle, 1 << 20)
    tree["predict"] = {**(tree.get("predict") or {}), "models": [str(artifact_path)], "inputs": [str(target)]}
    try:
        config = jobs.confine_paths(
            jobs.place_outputs(jobs.validate(tree), task, folder), svc.settings, folder
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    job = svc.store.create(
        "predict",
        task.name,
        f"predict {name}",
        {"config": config.model_dump(mode="json")},
        svc.settings.jobs_dir,
        job_id,
    )
    svc.manager.wake()
    return {"task_id": job["id"], "state": job["state"]}
