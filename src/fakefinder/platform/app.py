"""The REST API and the web UI of `fakefinder serve` (FastAPI; OpenAPI at /docs). Routes only
translate HTTP to the job store, the queue and the task registry; they hold no training logic."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from contextlib import asynccontextmanager
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any, Literal

from anyio import to_thread
from fastapi import Body, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.background import BackgroundTask

from fakefinder import __version__
from fakefinder.config import DEFAULT_TASK, config_to_yaml
from fakefinder.core.errors import FakefinderError
from fakefinder.platform import jobs, uploads
from fakefinder.platform.executors import make_executor
from fakefinder.platform.manager import JobManager
from fakefinder.platform.paths import Conflict, NotFound, RequestError, confine, within
from fakefinder.platform.settings import ServeSettings
from fakefinder.platform.store import FINISHED, JOB_TYPES, STATES, JobStore
from fakefinder.tasks import get_task, read_model

STATIC = Path(__file__).parent / "static"


class ApiError(BaseModel):
    detail: str
    field: str | None = None
_PUBLIC = ("/docs", "/openapi.json", "/redoc")


def job_output(job: dict, key: str) -> Path | None:
    """A path the job's result names (its artifact, its report), if it lies in the job's folder."""
    value = (job["result"] or {}).get(key) if isinstance(job["result"], dict) else None
    if not isinstance(value, str) or not value:
        return None
    path = Path(os.path.realpath(value))
    folder = Path(os.path.realpath(job["folder"]))
    return path if within(path, folder) and path != folder and path.exists() else None


def public_job(job: dict) -> dict:
    """A job as the API shows it."""
    result = job["result"] if isinstance(job["result"], dict) else None
    folder = Path(job["folder"])
    return {
        "task_id": job["id"], "name": job["name"], "type": job["type"], "kind": job["kind"], "state": job["state"],
        "created_at": job["created_at"], "started_at": job["started_at"], "finished_at": job["finished_at"],
        "progress": job["progress"] or {}, "metrics": job["metrics"] or {}, "error": job["error"], "result": result,
        "device": job["device"], "executor": job["executor"], "attempts": job["attempts"],
        "resumable": job["type"] == "train" and job["state"] in ("cancelled", "interrupted", "failed"),
        "stop_requested": bool(job["stop_requested"]), "output_dir": str(folder),
        "files": {"report": job_output(job, "report") is not None, "artifact": job_output(job, "artifact") is not None},
    }


def create_app(settings: ServeSettings | None = None, start_manager: bool = True) -> FastAPI:
    settings = settings or ServeSettings()
    settings.make_dirs()
    store = JobStore(settings.database)
    manager = JobManager(settings, store, make_executor(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        uploads.clean_staging(settings.datasets_dir)
        if start_manager:
            manager.start()
        yield
        if start_manager:
            await to_thread.run_sync(manager.close)

    app = FastAPI(title="fakefinder", version=__version__, lifespan=lifespan,
                  description="Start, watch, stop, resume, compare and export training jobs of every model kind.",
                  responses={"4XX": {"model": ApiError, "description": "A refused request: what is wrong, and the "
                                     "field (or path, header) it is about"}})
    app.state.settings, app.state.store, app.state.manager = settings, store, manager

    # ---------------------------------------------------------------- errors and auth
    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=exc.status)

    @app.exception_handler(uploads.UploadError)
    async def upload_error(request: Request, exc: uploads.UploadError):
        status = 404 if isinstance(exc, uploads.DatasetNotFoundError) else 409 if "exists" in str(exc) else 422
        return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=status)

    @app.exception_handler(FakefinderError)
    async def user_error(request: Request, exc: FakefinderError):
        return JSONResponse({"detail": str(exc), "field": getattr(exc, "field", None)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()

        def where(error: dict) -> str:
            if error.get("type") == "json_invalid":
                return "body"
            return ".".join(str(p) for p in error["loc"] if p != "body") or "body"

        lines = [f"{where(e)}: {e['msg']}" for e in errors]
        return JSONResponse({"detail": "; ".join(lines) or "invalid request", "field": where(errors[0]) if errors else None},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail), "field": None}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    local_names = {"localhost", "127.0.0.1", "::1", settings.host}

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if not settings.token:  # no token on loopback: only this machine's own pages may call
            host = _hostname("//" + (request.headers.get("host") or ""))
            origin = request.headers.get("origin")
            origin_host = _hostname(origin) if origin and origin != "null" else None
            if host not in local_names or (origin is not None and origin_host not in local_names):
                return JSONResponse({"detail": "requests to a server without a token must come from this machine "
                                     f"(host {host!r}, origin {origin!r})", "field": "host"}, status_code=403)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.upload_max_bytes + (1 << 20):
            return JSONResponse({"detail": f"the request is larger than the upload limit ({settings.upload_max_bytes} "
                                 "bytes)", "field": "file"}, status_code=413)
        if settings.token and request.url.path.startswith("/api"):
            given = request.headers.get("x-api-token") or ""
            bearer = request.headers.get("authorization") or ""
            if bearer.lower().startswith("bearer "):
                given = bearer[7:].strip()
            if not hmac.compare_digest(given.encode(), settings.token.encode()):
                return JSONResponse({"detail": "missing or wrong API token (send 'Authorization: Bearer <token>')",
                                     "field": "authorization"}, status_code=401)
        return await call_next(request)

    def job_or_404(task_id: str) -> dict:
        job = store.get(task_id)
        if job is None:
            raise NotFound(f"no job {task_id!r}", "task_id")
        return job

    # ---------------------------------------------------------------- platform
    @app.get("/api/health", tags=["platform"])
    def health() -> dict:
        return {"status": "ok", "version": __version__, "executor": manager.executor.name, "devices": manager.slots()}

    @app.get("/api/kinds", tags=["platform"])
    def kinds() -> dict:
        return {"kinds": jobs.catalog()}

    def _train_job(body: dict, job_id: str) -> tuple[dict, Any]:
        task = jobs.kind_of(body)
        config, _ = jobs.build_config(body, task, settings)
        notes = config.notes  # older key names the request used, sections the kind does not read
        folder = settings.jobs_dir / job_id
        config = jobs.confine_paths(jobs.place_outputs(config, task, folder), settings, folder)
        evaluate = body.get("evaluate", True)
        if not isinstance(evaluate, bool):
            raise RequestError("evaluate: true or false", "evaluate")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise RequestError("name: a text of at most 200 characters", "name")
        spec = {"config": config.model_dump(mode="json"), "evaluate": evaluate}
        gpus = body.get("num_gpus")
        if gpus is not None:
            if not isinstance(gpus, int) or isinstance(gpus, bool) or not 0 <= gpus <= 64:
                raise RequestError("num_gpus: a whole number from 0 to 64", "num_gpus")
            spec["num_gpus"] = gpus
        return spec, task, notes

    @app.post("/api/config/preview", tags=["training"])
    def preview(body: dict[str, Any] = Body(..., examples=[{"model_type": DEFAULT_TASK, "dataset_path": "my-dataset"}])) -> dict:
        spec, _, notes = _train_job(body, "<new job>")
        config = jobs.validate(spec["config"])
        return {"config": spec["config"], "yaml": config_to_yaml(config), "notes": notes}

    @app.post("/api/training/start", tags=["training"])
    def start(body: dict[str, Any] = Body(..., examples=[{
            "model_type": DEFAULT_TASK, "dataset_path": "my-dataset", "epochs": 2, "batch_size": 8,
            "learning_rate": 0.001}])) -> dict:
        job_id = store.new_id()
        spec, task, notes = _train_job(body, job_id)
        job = store.create("train", task.name, body.get("name"), spec, settings.jobs_dir, job_id)
        manager.wake()
        return {"task_id": job["id"], "state": job["state"], "notes": notes}

    @app.get("/api/training", tags=["training"])
    def list_jobs(state: Literal[STATES] | None = None, kind: str | None = None,
                  type: Literal[JOB_TYPES] | None = None) -> dict:
        return {"jobs": [public_job(j) for j in store.list(state, kind, type)]}

    @app.get("/api/training/{task_id}", tags=["training"])
    def get_job(task_id: str) -> dict:
        return public_job(job_or_404(task_id))

    @app.delete("/api/training/{task_id}", tags=["training"])
    def delete_job(task_id: str) -> dict:
        manager.delete(task_id)
        return {"deleted": task_id}

    @app.post("/api/training/{task_id}/stop", tags=["training"])
    def stop_job(task_id: str, force: bool = False) -> dict:
        return public_job(manager.stop(task_id, force))

    @app.post("/api/training/{task_id}/resume", tags=["training"])
    def resume_job(task_id: str) -> dict:
        return public_job(manager.resume(task_id))

    @app.get("/api/training/{task_id}/metrics", tags=["training"])
    def job_metrics(task_id: str) -> dict:
        job_or_404(task_id)
        return {"task_id": task_id, "history": store.metrics(task_id)}

    @app.get("/api/training/{task_id}/logs", tags=["training"])
    def job_logs(task_id: str, tail: int = Query(200, ge=1, le=5000), after: int = Query(0, ge=0, le=2**62)) -> dict:
        job_or_404(task_id)
        lines = store.logs(task_id, after=after, tail=tail)
        return {"lines": lines, "next": lines[-1]["seq"] if lines else max(after, store.last_log_seq(task_id))}

    @app.get("/api/training/{task_id}/logs/stream", tags=["training"],
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def job_log_stream(request: Request, task_id: str, after: int = Query(0, ge=0, le=2**62),
                             max_seconds: float = Query(3600, gt=0, le=86400)):
        await to_thread.run_sync(job_or_404, task_id)
        return StreamingResponse(_stream(request, task_id, after, max_seconds), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _stream(request: Request, task_id: str, after: int, max_seconds: float):
        seen_metrics = 0
        last_state = None
        started = last_sent = time.monotonic()
        while True:
            job = await to_thread.run_sync(store.get, task_id)
            if job is None:
                yield _sse("end", {"task_id": task_id, "deleted": True})
                return
            lines = await to_thread.run_sync(lambda: store.logs(task_id, after=after))
            for line in lines:
                yield _sse("log", line, line["seq"])
                after = line["seq"]
            rows = await to_thread.run_sync(lambda: store.metrics(task_id, after=seen_metrics))
            for row in rows:
                yield _sse("metrics", row)
                seen_metrics = row["seq"]
            shown = public_job(job)
            marker = (shown["state"], json.dumps(shown["progress"], sort_keys=True), json.dumps(shown["metrics"], sort_keys=True))
            if marker != last_state:
                yield _sse("state", shown)
                last_state = marker
                last_sent = time.monotonic()
            elif lines or rows:
                last_sent = time.monotonic()
            if job["state"] in FINISHED and not lines:
                yield _sse("end", {"task_id": task_id, "state": job["state"]})
                return
            if await request.is_disconnected() or time.monotonic() - started > max_seconds:
                return
            if time.monotonic() - last_sent > 15:
                yield ": keep-alive\n\n"
                last_sent = time.monotonic()
            await asyncio.sleep(0.25)

    @app.get("/api/compare", tags=["training"])
    def compare(ids: str = Query(..., description="Job ids, comma-separated")) -> dict:
        runs = []
        for task_id in [i for i in ids.split(",") if i.strip()][:20]:
            job = job_or_404(task_id.strip())
            runs.append({"task_id": job["id"], "name": job["name"], "kind": job["kind"], "state": job["state"],
                         "history": store.metrics(job["id"]), "final": job["metrics"]})
        if not runs:
            raise RequestError("ids: name at least one job", "ids")
        return {"runs": runs}

    # ---------------------------------------------------------------- files of a job
    def job_file(job: dict, relative: str) -> Path:
        folder = Path(job["folder"]).resolve()
        path = confine(relative, [folder], "path", must_exist=True)
        if not path.is_file():
            raise NotFound(f"path: {relative} is not a file of job {job['id']}", "path")
        return path

    @app.get("/api/training/{task_id}/files", tags=["artifacts"])
    def list_files(task_id: str) -> dict:
        folder = Path(job_or_404(task_id)["folder"])
        files = []
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                    files.append({"path": path.relative_to(folder).as_posix(), "size": path.stat().st_size})
                    if len(files) >= 5000:
                        break
        return {"files": files}

    @app.get("/api/training/{task_id}/files/{path:path}", tags=["artifacts"], response_class=FileResponse)
    def download_file(task_id: str, path: str):
        file = job_file(job_or_404(task_id), path)
        return FileResponse(file, filename=file.name)

    @app.get("/api/training/{task_id}/report", tags=["artifacts"], response_class=FileResponse,
             responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
    def report(task_id: str):
        job = job_or_404(task_id)
        path = job_output(job, "report")
        if path is None or not path.is_file():
            raise NotFound(f"job {task_id} has no report (yet)", "task_id")
        return FileResponse(path, media_type="text/html")

    @app.get("/api/training/{task_id}/artifact", tags=["artifacts"], response_class=FileResponse)
    def artifact(task_id: str):
        job = job_or_404(task_id)
        path = job_output(job, "artifact")
        if path is None or not path.is_dir():
            raise NotFound(f"job {task_id} has no model artifact (yet)", "task_id")
        return _zip_response(Path(path), f"{job['name']}-model.zip")

    # ---------------------------------------------------------------- LoRA adapters
    def adapter_of(task_id: str) -> tuple[dict, Path, Any]:
        job = job_or_404(task_id)
        task = get_task(job["kind"]) if job["kind"] else None
        if task is None or task.adapter is None:
            raise RequestError(f"task_id: job {task_id} is a {job['kind']} job, which trains no LoRA adapter", "task_id")
        path = job_output(job, "artifact")
        if path is None or not (path / task.adapter).is_dir():
            raise NotFound(f"job {task_id} has no LoRA adapter (not finished, or not trained with LoRA)", "task_id")
        return job, Path(path), task

    @app.get("/api/llm-finetuning/export/{task_id}", tags=["artifacts"], response_class=FileResponse)
    def export_adapter(task_id: str):
        job, path, task = adapter_of(task_id)
        return _zip_response(path / task.adapter, f"{job['name']}-adapter.zip")

    @app.post("/api/llm-finetuning/merge", tags=["artifacts"])
    def merge(body: dict[str, Any] = Body(..., examples=[{"task_id": "...", "output_path": "merged-model"}])) -> dict:
        if not isinstance(body.get("task_id"), str):
            raise RequestError("task_id: required", "task_id")
        job, path, task = adapter_of(body["task_id"])
        output = jobs.check_output_path(body.get("output_path"), settings)
        spec = {"artifact": str(path), "output": str(output), "source": job["id"]}
        merged = store.create("merge", task.name, f"merge {job['name']}", spec, settings.jobs_dir)
        manager.wake()
        return {"task_id": merged["id"], "output_path": str(output)}

    # ---------------------------------------------------------------- evaluate and predict
    def model_source(body: dict) -> tuple[Path, dict]:
        """The artifact a request names (a job's, or a path in the roots) and the config to start from."""
        if body.get("model_task_id") is not None:
            if not isinstance(body["model_task_id"], str):
                raise RequestError("model_task_id: a job id", "model_task_id")
            job = job_or_404(body["model_task_id"])
            path = job_output(job, "artifact")
            if job["type"] != "train" or path is None:
                raise RequestError(f"model_task_id: job {job['id']} has no model artifact", "model_task_id")
            return Path(path), dict(job["spec"]["config"])
        if not isinstance(body.get("model_path"), str):
            raise RequestError("model_task_id or model_path: name the model to use", "model_task_id")
        path = confine(body["model_path"], [*settings.dataset_roots, settings.jobs_dir, *settings.output_roots],
                       "model_path", must_exist=True)
        try:
            artifact = read_model(path)
        except FakefinderError as exc:
            raise RequestError(f"model_path: {exc}", "model_path") from None
        base = artifact.architecture.get("base") if isinstance(artifact.architecture, dict) else None
        source = base.get("source") if isinstance(base, dict) else None
        if isinstance(source, str) and (source.startswith(("/", "~", ".")) or Path(source).exists()):
            # an adapter names the base it loads: a local one must be inside the roots too
            confine(source, [*settings.dataset_roots, settings.jobs_dir, *settings.output_roots], "model_path")
        return path, {"task": artifact.kind}

    @app.post("/api/evaluate", tags=["evaluate"])
    def evaluate(body: dict[str, Any] = Body(..., examples=[{"model_task_id": "...", "dataset_path": "faces"}])) -> dict:
        artifact_path, tree = model_source(body)
        task = get_task(tree.get("task", DEFAULT_TASK))
        if isinstance(body.get("dataset_path"), str):
            dataset = confine(body["dataset_path"], settings.dataset_roots, "dataset_path", must_exist=True)
            from fakefinder.config import set_key

            try:
                settings_for_data = task.dataset_settings(dataset)
            except (FakefinderError, OSError, ValueError) as exc:
                raise RequestError(f"dataset_path: {exc}", "dataset_path") from None
            for dotted, value in settings_for_data.items():
                set_key(tree, dotted, value)
        job_id = store.new_id()
        folder = settings.jobs_dir / job_id
        tree.setdefault("evaluate", {})
        tree["evaluate"] = {**tree["evaluate"], "models": [str(artifact_path)]}
        config = jobs.confine_paths(jobs.place_outputs(jobs.validate(tree), task, folder), settings, folder)
        job = store.create("evaluate", task.name, body.get("name") if isinstance(body.get("name"), str) else None,
                           {"config": config.model_dump(mode="json")}, settings.jobs_dir, job_id)
        manager.wake()
        return {"task_id": job["id"], "state": job["state"]}

    @app.post("/api/predict", tags=["evaluate"])
    def predict(file: UploadFile = File(..., description="An image or a video (a language model: prompts in .jsonl "
                                        "or .txt)"), model_task_id: str | None = Form(None),
                model_path: str | None = Form(None)) -> dict:
        artifact_path, tree = model_source({"model_task_id": model_task_id, "model_path": model_path})
        task = get_task(tree.get("task", DEFAULT_TASK))
        from fakefinder.media.images import MEDIA_EXTENSIONS

        name = Path(file.filename or "").name
        suffix = Path(name).suffix.lower()
        accepted = task.predict_inputs or MEDIA_EXTENSIONS
        if not name or suffix not in accepted:
            what = "a file it reads" if task.predict_inputs else "an image or video"
            raise RequestError(f"file: {name or 'the upload'} is not {what} for a {task.name} model "
                               f"({', '.join(sorted(accepted))})", "file")
        job_id = store.new_id()
        folder = settings.jobs_dir / job_id
        inputs = folder / "inputs"
        inputs.mkdir(parents=True, exist_ok=True)
        target = inputs / ((re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).stem)[:60] or "input") + suffix)
        with open(target, "wb") as handle:
            shutil.copyfileobj(file.file, handle, 1 << 20)
        tree["predict"] = {**(tree.get("predict") or {}), "models": [str(artifact_path)], "inputs": [str(target)]}
        try:
            config = jobs.confine_paths(jobs.place_outputs(jobs.validate(tree), task, folder), settings, folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = store.create("predict", task.name, f"predict {name}", {"config": config.model_dump(mode="json")},
                           settings.jobs_dir, job_id)
        manager.wake()
        return {"task_id": job["id"], "state": job["state"]}

    # ---------------------------------------------------------------- datasets
    @app.get("/api/datasets", tags=["datasets"])
    def list_all_datasets() -> dict:
        found = []
        for root in settings.dataset_roots:
            if root.is_dir():
                found += uploads.list_datasets(root)
        return {"datasets": found}

    @app.post("/api/datasets", tags=["datasets"], status_code=201)
    def upload_dataset(file: UploadFile = File(..., description="A ZIP of the dataset"), name: str = Form(...)) -> dict:
        size = file.size if file.size is not None else os.fstat(file.file.fileno()).st_size
        if size > settings.upload_max_bytes:
            raise RequestError(f"file: {size} bytes is over the upload limit of {settings.upload_max_bytes}", "file", 413)
        limits = uploads.ZipLimits(max_bytes=settings.upload_max_bytes, max_files=settings.upload_max_files,
                                   max_ratio=settings.upload_max_ratio)
        path = uploads.unpack_zip(file.file, settings.datasets_dir, name, limits)
        return uploads.describe_dataset(path)

    def dataset_folder(name: str) -> Path:
        for root in settings.dataset_roots[1:]:
            try:
                return uploads.dataset_path(root, name)
            except uploads.DatasetNotFoundError:
                continue
        return uploads.dataset_path(settings.datasets_dir, name)

    @app.get("/api/datasets/{name}", tags=["datasets"])
    def get_dataset(name: str) -> dict:
        return uploads.describe_dataset(dataset_folder(name))

    @app.delete("/api/datasets/{name}", tags=["datasets"])
    def delete_dataset(name: str) -> dict:
        path = dataset_folder(name)
        for job in store.in_state("queued", "running"):
            if str(path) in json.dumps(job["spec"]):
                raise Conflict(f"name: dataset {name} is used by job {job['id']} ({job['state']})", "name")
        shutil.rmtree(path)
        return {"deleted": name}

    @app.post("/api/datasets/{name}/prepare", tags=["datasets"])
    def prepare_dataset(name: str, body: dict[str, Any] = Body(default_factory=dict,
                                                                 examples=[{"output_name": "my-faces"}])) -> dict:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object", "body")
        description = uploads.describe_dataset(dataset_folder(name))
        shards = body.pop("shards", 1)
        if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 256:
            raise RequestError("shards: a whole number from 1 to 256", "shards")
        if shards > 1 and manager.executor.name != "ray":
            raise RequestError("shards: parallel shards need the Ray executor (--executor ray)", "shards")
        job_id = store.new_id()
        folder = settings.jobs_dir / job_id
        config, output = jobs.prepare_config(description, body, settings, folder)
        job = store.create("prepare", None, f"prepare {name}", {"config": config.model_dump(mode="json"),
                                                               "shards": shards, "dataset": output.name},
                           settings.jobs_dir, job_id)
        manager.wake()
        return {"task_id": job["id"], "state": job["state"], "output_name": output.name}

    # ---------------------------------------------------------------- the web UI
    @app.get("/", include_in_schema=False)
    def index():
        page = STATIC / "index.html"
        if not page.is_file():
            return HTMLResponse("<p>fakefinder: the web UI is not installed; the API is at <a href='/docs'>/docs</a>.</p>")
        return FileResponse(page, media_type="text/html")

    if STATIC.is_dir():
        app.mount("/ui", StaticFiles(directory=STATIC), name="ui")
    return app


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def _zip_response(folder: Path, filename: str) -> FileResponse:
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
    return FileResponse(handle.name, filename=filename, media_type="application/zip",
                        background=BackgroundTask(os.unlink, handle.name))
