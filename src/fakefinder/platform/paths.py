"""Paths from requests, confined to the platform's roots: no `..`, no absolute path elsewhere, no
symlink that leads out."""

from __future__ import annotations

import os
from pathlib import Path

from fakefinder.core.errors import FakefinderError


class RequestError(FakefinderError, ValueError):
    """A request the platform refuses; `field` names what was wrong (the REST layer answers 4xx)."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.field, self.status = field, status


class NotFound(RequestError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field, 404)


class Conflict(RequestError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field, 409)


class Forbidden(RequestError):
    """The caller's role or ownership does not allow it (403)."""

    def __init__(self, message: str, field: str | None = "authorization") -> None:
        super().__init__(message, field, 403)


def exists(path: Path) -> bool:
    """Whether `path` exists; False for a name the file system cannot even hold (too long)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def within(path: Path, root: Path) -> bool:
    try:
        return os.path.commonpath([str(path), str(root)]) == str(root)
    except ValueError:
        return False


def confine(value: str | os.PathLike, roots: list[Path], field: str, must_exist: bool = False) -> Path:
    """`value` (relative to the first root, or absolute) as a real path inside one of `roots`."""
    text = os.fspath(value)
    if not text or "\x00" in text:
        raise RequestError(f"{field}: an empty or malformed path", field)
    raw = Path(text)
    if len(text.encode()) > 4000 or any(len(part.encode()) > 255 for part in raw.parts):
        raise RequestError(f"{field}: the path is too long", field)
    if ".." in raw.parts:
        raise RequestError(f"{field}: '..' is not allowed in a path ({text})", field)
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        real = Path(os.path.realpath(candidate))  # follows every symlink on the way
        for root in roots:
            if within(real, Path(os.path.realpath(root))):
                if must_exist and not exists(real):
                    continue
                return real
    if must_exist and any(exists(Path(os.path.realpath(c))) for c in candidates):
        raise RequestError(
            f"{field}: {text} is outside the allowed folders ({', '.join(map(str, roots))})", field
        )
    if must_exist:
        raise RequestError(f"{field}: {text} not found in {', '.join(map(str, roots))}", field)
    raise RequestError(
        f"{field}: {text} is outside the allowed folders ({', '.join(map(str, roots))})", field
    )


# what one JSON request may hold: refused (4xx naming the field) before anything is queued or written
MAX_JSON_BYTES = 1 << 20
MAX_TEXT = 4096  # characters in one string (a path, a model name, a job name)
MAX_ITEMS = 1000  # entries in one list or object
MAX_DEPTH = 16


def check_bounds(value, field: str = "", depth: int = 0) -> None:
    """Every string, list and object in a request body within the limits above; the first that is not
    is refused naming its field (`config.train.output_dir`, `items.3`)."""
    where = field or "body"
    if depth > MAX_DEPTH:
        raise RequestError(f"{where}: nested deeper than {MAX_DEPTH} levels", where)
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise RequestError(f"{where}: {len(value)} characters, at most {MAX_TEXT}", where)
    elif isinstance(value, dict | list):
        if len(value) > MAX_ITEMS:
            raise RequestError(f"{where}: {len(value)} entries, at most {MAX_ITEMS}", where)
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str) and len(key) > MAX_TEXT:
                raise RequestError(f"{where}: a key of {len(key)} characters, at most {MAX_TEXT}", where)
            check_bounds(item, f"{field}.{key}" if field else str(key), depth + 1)


def job_output(job: dict, key: str) -> Path | None:
    """A path the job's result names (its artifact, its report), if it lies in the job's folder."""
    value = (job["result"] or {}).get(key) if isinstance(job["result"], dict) else None
    if not isinstance(value, str) or not value:
        return None
    path = Path(os.path.realpath(value))
    folder = Path(os.path.realpath(job["folder"]))
    return path if within(path, folder) and path != folder and path.exists() else None
