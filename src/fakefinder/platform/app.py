"""The REST API and the web UI of `fakefinder serve` (FastAPI; OpenAPI at /docs): the app's services,
its errors as `{"detail", "field"}`, the token check, the routers of `platform.routes`, the UI."""

from __future__ import annotations

import hmac
import json
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from fakefinder import __version__
from fakefinder.core.errors import FakefinderError
from fakefinder.platform import uploads
from fakefinder.platform.executors import make_executor
from fakefinder.platform.manager import JobManager
from fakefinder.platform.notify import Webhooks
from fakefinder.platform.outbox import MlflowJobs, Outbox
from fakefinder.platform.paths import MAX_JSON_BYTES, RequestError, check_bounds
from fakefinder.platform.routes import artifacts, datasets, evaluation, status, sweeps, training, users
from fakefinder.platform.routes.common import Caller, Services
from fakefinder.platform.settings import ServeSettings
from fakefinder.platform.store import JobStore

STATIC = Path(__file__).parent / "static"
__all__ = ["create_app"]


class ApiError(BaseModel):
    detail: str
    field: str | None = None


def create_app(settings: ServeSettings | None = None, start_manager: bool = True) -> FastAPI:
    settings = settings or ServeSettings()
    settings.make_dirs()
    store = JobStore(settings.database)
    manager = JobManager(settings, store, make_executor(settings))
    outbox = Outbox("fakefinder-outbox")
    webhooks = Webhooks(settings, store)
    store.observers += [MlflowJobs(settings.mlflow_uri, store, outbox), webhooks]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        uploads.clean_staging(settings.datasets_dir)
        if start_manager:
            manager.start()
        yield
        if start_manager:
            await to_thread.run_sync(manager.close)
        await to_thread.run_sync(outbox.close)
        await to_thread.run_sync(webhooks.close)

    app = FastAPI(
        title="fakefinder",
        version=__version__,
        lifespan=lifespan,
        description="Start, watch, stop, resume, compare and export training jobs of every model kind.",
        responses={
            "4XX": {
                "model": ApiError,
                "description": "A refused request: what is wrong, and the "
                "field (or path, header) it is about",
            }
        },
    )
    app.state.settings, app.state.store, app.state.manager = settings, store, manager
    app.state.outbox = outbox
    app.state.services = Services(settings, store, manager)
    for area in (status, training, sweeps, artifacts, evaluation, datasets, users):
        app.include_router(area.router)

    _add_error_handlers(app)
    _add_request_guard(app, settings, store)
    _add_web_ui(app)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every refused request answers {detail, field}: the message and what it is about."""

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=exc.status)

    @app.exception_handler(uploads.UploadError)
    async def upload_error(request: Request, exc: uploads.UploadError):
        status = (
            404 if isinstance(exc, uploads.DatasetNotFoundError) else 409 if "exists" in str(exc) else 422
        )
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
        return JSONResponse(
            {"detail": "; ".join(lines) or "invalid request", "field": where(errors[0]) if errors else None},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse(
            {"detail": str(exc.detail), "field": None},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )


def _add_request_guard(app: FastAPI, settings: ServeSettings, store: JobStore) -> None:
    app.add_middleware(RequestGuard, settings=settings, store=store)


class RequestGuard:
    """Who is calling (`request.state.caller`): the holder of a named token, `--token`'s admin, or, on a
    server with no token at all, its one local user (only this machine's pages may call it). A missing,
    wrong or revoked token is refused (401) on every /api route; oversized bodies are refused before
    they are read. Plain ASGI: a request passes through without an extra task or stream."""

    def __init__(self, app, settings: ServeSettings, store: JobStore) -> None:
        self.app, self.settings, self.store = app, settings, store
        self.local_names = {"localhost", "127.0.0.1", "::1", settings.host}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refused = self._identify(request)
        if refused is None and request.url.path.startswith("/api"):
            if "json" in (request.headers.get("content-type") or ""):
                body = await _read_body(receive, MAX_JSON_BYTES + 1)
                refused = _check_json(body)
                receive = _replay(body, receive)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _identify(self, request: Request) -> JSONResponse | None:
        settings = self.settings
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.upload_max_bytes + (1 << 20):
            return _refuse(
                f"the request is larger than the upload limit ({settings.upload_max_bytes} bytes)",
                "file",
                413,
            )
        given = request.headers.get("x-api-token") or ""
        bearer = request.headers.get("authorization") or ""
        if bearer.lower().startswith("bearer "):
            given = bearer[7:].strip()
        if not (bool(settings.token) or self.store.has_tokens()):  # no token: this machine's pages only
            host = _hostname("//" + (request.headers.get("host") or ""))
            origin = request.headers.get("origin")
            origin_host = _hostname(origin) if origin and origin != "null" else None
            if host not in self.local_names or (origin is not None and origin_host not in self.local_names):
                return _refuse(
                    "requests to a server without a token must come from this machine "
                    f"(host {host!r}, origin {origin!r})",
                    "host",
                    403,
                )
            request.state.caller = Caller("local", "admin")
        elif settings.token and given and hmac.compare_digest(given.encode(), settings.token.encode()):
            request.state.caller = Caller("admin", "admin")
        elif given and (owner := self.store.token_owner(given)) is not None:
            request.state.caller = Caller(owner["name"], owner["role"])
        elif request.url.path.startswith("/api"):
            return _refuse(
                "missing, wrong or revoked API token (send 'Authorization: Bearer <token>')",
                "authorization",
                401,
            )
        return None


def _refuse(detail: str, field: str, status: int) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status)


async def _read_body(receive, limit: int) -> bytes:
    """The request's body, read no further than `limit` bytes (more is refused anyway)."""
    chunks, size, more = [], 0, True
    while more and size < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """The body read once, handed to the app as if it came now; then the client's further messages."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _check_json(body: bytes) -> JSONResponse | None:
    """A JSON body over MAX_JSON_BYTES, or with a string, list or object over the bounds, refused with
    the field named before any route sees it."""
    if len(body) > MAX_JSON_BYTES:
        return JSONResponse(
            {"detail": f"body: {len(body)} bytes of JSON, at most {MAX_JSON_BYTES}", "field": "body"},
            status_code=413,
        )
    try:
        check_bounds(json.loads(body) if body else None)
    except ValueError as exc:
        if isinstance(exc, RequestError):
            return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=exc.status)
        return None  # not JSON: the route refuses it, naming the body
    return None


def _add_web_ui(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def index():
        page = STATIC / "index.html"
        if not page.is_file():
            return HTMLResponse(
                "<p>fakefinder: the web UI is not installed; the API is at <a href='/docs'>/docs</a>.</p>"
            )
        return FileResponse(page, media_type="text/html")

    if STATIC.is_dir():
        app.mount("/ui", StaticFiles(directory=STATIC), name="ui")


def _hostname(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None
