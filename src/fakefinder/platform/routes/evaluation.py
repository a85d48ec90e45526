"""Evaluate and predict jobs: a model (a job's artifact, or one in the roots) on a dataset, or on an
uploaded file (with heatmaps where its kind draws them); an evaluation's heatmaps and gallery."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Body, Depends, File, Form, UploadFile

from fakefinder.config import DEFAULT_TASK
from fakefinder.core.errors import FakefinderError
from fakefinder.platform import jobs
from fakefinder.platform.notify import check_notify
from fakefinder.platform.paths import NotFound, RequestError, confine
from fakefinder.platform.routes.common import Caller, Services, job_or_404, job_output, needs, services
from fakefinder.tasks import get_task, read_model

router = APIRouter(dependencies=[Depends(needs("viewer"))])  # every route: an identified caller


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
    who: Caller = Depends(needs("member")),
) -> dict:
    """Queue an evaluate job: the model of a finished job (`model_task_id`) or a model folder
    (`model_path`) on a dataset (`dataset_path`; without one, the data its training config names).
    Its `metrics.json` and report are the job's files."""
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
    config = jobs.job_config(tree, task, svc.settings, folder)
    spec = {"config": config.model_dump(mode="json")}
    notify = check_notify(body.get("notify"), svc.settings.webhooks)
    if notify is not None:
        spec["notify"] = notify
    job = svc.store.create(
        "evaluate",
        task.name,
        body.get("name") if isinstance(body.get("name"), str) else None,
        spec,
        svc.settings.jobs_dir,
        job_id,
        owner=who.name,
        limit=svc.settings.max_jobs_per_user,
    )
    svc.manager.wake()
    return {"task_id": job["id"], "state": job["state"]}


@router.post("/api/predict", tags=["evaluate"])
def predict(
    file: UploadFile = File(
        ..., description="An image or a video (a language model: prompts in .jsonl or .txt)"
    ),
    model_task_id: str | None = Form(None, max_length=128),
    model_path: str | None = Form(None, max_length=4096),
    heatmaps: bool = Form(False, description="Draw where the model looked (kinds that draw heatmaps)"),
    svc: Services = Depends(services),
    who: Caller = Depends(needs("member")),
) -> dict:
    """Queue a predict job on one uploaded file with the model of a finished job or a model folder:
    a fake probability (and, for DX-LLaVA, an explanation; with `heatmaps`, where it looked), or a
    language model's answers to the prompts in the file."""
    svc.store.check_limit(who.name, svc.settings.max_jobs_per_user)  # before anything is written
    artifact_path, tree = model_source(svc, {"model_task_id": model_task_id, "model_path": model_path})
    task = get_task(tree.get("task", DEFAULT_TASK))
    if heatmaps and not task.draws_heatmaps:
        raise RequestError(f"heatmaps: {task.name} models draw no heatmaps", "heatmaps")
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
    tree["predict"] = {
        **(tree.get("predict") or {}),
        "models": [str(artifact_path)],
        "inputs": [str(target)],
        "heatmaps": heatmaps,
    }
    try:
        config = jobs.job_config(tree, task, svc.settings, folder)
        job = svc.store.create(
            "predict",
            task.name,
            f"predict {name}",
            {"config": config.model_dump(mode="json")},
            svc.settings.jobs_dir,
            job_id,
            owner=who.name,
            limit=svc.settings.max_jobs_per_user,
        )
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    svc.manager.wake()
    return {"task_id": job["id"], "state": job["state"]}


@router.get("/api/evaluate/{task_id}/heatmaps", tags=["evaluate"])
def evaluation_heatmaps(task_id: str, svc: Services = Depends(services)) -> dict:
    """The heatmaps of a job's evaluation, per model and set of prepared crops: the figures of the map
    beside a face prior and a random map, whether they are experimental, and the gallery, each image a
    path inside the job's folder (`GET /api/training/{task_id}/files/{path}`)."""
    job = job_or_404(svc, task_id)
    folder = Path(os.path.realpath(job["folder"]))
    result = job["result"] if isinstance(job["result"], dict) else {}
    evaluation = result.get("evaluation")
    if not isinstance(evaluation, dict) or not isinstance(evaluation.get("output_dir"), str):
        reason = f": {result['evaluation_error']}" if result.get("evaluation_error") else " (yet)"
        raise NotFound(f"job {task_id} has no evaluation{reason}", "task_id")
    try:
        output = confine(evaluation["output_dir"], [folder], "output_dir", must_exist=True)
        metrics_file = confine(output / "metrics.json", [folder], "metrics.json", must_exist=True)
        metrics = json.loads(metrics_file.read_text())
    except (RequestError, OSError, ValueError):
        raise NotFound(
            f"job {task_id}: its evaluation's metrics.json is missing or unreadable", "task_id"
        ) from None
    sets = []
    models = metrics.get("models") if isinstance(metrics, dict) else None
    for model, entry in (models or {}).items():
        for set_name, levels in ((entry or {}).get("sets") or {}).items():
            found = (levels or {}).get("heatmaps")
            if isinstance(found, dict):
                sets.append(_heatmap_set(model, set_name, found, output, folder))
    if not sets:
        raise NotFound(
            f"job {task_id}: its evaluation drew no heatmaps (evaluate.heatmaps off, sets of raw files, "
            "or a kind whose models draw none)",
            "task_id",
        )
    return {"task_id": task_id, "sets": sets}


def _heatmap_set(model: str, set_name: str, found: dict, output: Path, folder: Path) -> dict:
    """One set's heatmaps as the UI shows them; the gallery's images as paths inside the job folder
    (an entry whose image is missing or lies outside the folder is left out)."""
    gallery = []
    for entry in found.get("gallery") or []:
        if not isinstance(entry, dict):
            continue
        images = {key: _inside(entry.get(key), output, folder) for key in ("heatmap", "overlay")}
        if all(images.values()):
            gallery.append({**entry, **images})
    keep = ("experimental", "method", "iou_threshold", "iou_threshold_source", "overall", "by_area")
    return {
        "model": model,
        "set": set_name,
        **{key: found.get(key) for key in keep},
        "left_out": found.get("left_out") or {},
        "validation": found.get("validation"),
        "gallery": gallery,
    }


def _inside(value, output: Path, folder: Path) -> str | None:
    """`value` (a path relative to the evaluation's folder `output`) relative to the job's folder;
    None when it is no path, is missing or leads out of the job's folder."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return confine(output / value, [folder], "path", must_exist=True).relative_to(folder).as_posix()
    except RequestError:
        return None
