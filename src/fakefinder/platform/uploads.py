"""The platform's datasets: a user's ZIP checked and unpacked safely into the datasets root, and what a
dataset folder holds (its layout, splits and class counts, and which model kinds can use it)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tempfile
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from fakefinder.core.errors import FakefinderError

GiB = 1024**3
MiB = 1024**2
STAGING_PREFIX = ".upload-"  # the temporary folder an upload is unpacked into, inside the datasets root
NAME_RULE = "1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_DRIVE = re.compile(r"[A-Za-z]:")
_CHUNK = MiB
_SUPPORTED_COMPRESSION = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_ENCRYPTED = 0x1 | 0x40  # general purpose flags: traditional and strong encryption
_LOCAL_HEADER = 30  # fixed bytes of a local file header (its name and extra field follow)
# a single top-level folder with one of these names is part of a layout, not a wrapper to strip
_LAYOUT_FOLDERS = {
    "train",
    "val",
    "test",
    "real",
    "fake",
    "images",
    "original_sequences",
    "manipulated_sequences",
    "Celeb-real",
    "Celeb-synthesis",
    "YouTube-real",
}


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded ZIP may unpack to. Ratios are uncompressed / compressed bytes; a member (or
    a whole archive) smaller than `ratio_floor_bytes` is not ratio-checked: a small text file of
    repeated lines legitimately compresses 1000:1 and cannot fill a disk."""

    max_bytes: int = 2 * GiB  # total uncompressed
    max_files: int = 100_000
    max_ratio: float = 200.0  # per member and for the whole archive
    max_member_bytes: int = 1 * GiB
    ratio_floor_bytes: int = 1 * MiB


class UploadError(FakefinderError, ValueError):
    """An upload or dataset request that cannot be used; `field` names the request field at fault
    ("file" for the ZIP, "name" for the dataset name)."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):  # keep `field` when pickled (e.g. across processes)
        return type(self), (str(self), self.field)


class DatasetNotFoundError(UploadError):
    """No dataset of that name in the datasets root (a 404 for the REST layer)."""

    def __init__(self, message: str, field: str = "name") -> None:
        super().__init__(message, field)


# --------------------------------------------------------------------------------------------
# names


def check_dataset_name(name: object) -> str:
    """`name` when it is a valid dataset name, else an UploadError on the "name" field."""
    if not isinstance(name, str) or not name:
        raise UploadError(f"a dataset name is required: {NAME_RULE}", field="name")
    if not _NAME.fullmatch(name):
        raise UploadError(f"dataset name {name!r} is not allowed: use {NAME_RULE}", field="name")
    return name


def dataset_path(datasets_root: Path, name: str) -> Path:
    """The folder of the existing dataset `name`; DatasetNotFoundError when there is none."""
    path = Path(datasets_root) / check_dataset_name(name)
    if not path.is_dir():
        raise DatasetNotFoundError(f"no dataset named {name!r} in {datasets_root}")
    return path


def safe_member_name(name: str) -> PurePosixPath:
    """The relative path a ZIP member may be written to, or an UploadError naming the member.

    Backslashes count as separators (some Windows tools write them), empty and '.' components are
    dropped; refused: NUL or control characters, an absolute path, a drive letter, any '..'
    component, and a name with nothing left."""
    if any(
        ord(char) < 32 or char in "\x7f\x85\u2028\u2029" or unicodedata.category(char) in ("Cc", "Zl", "Zp")
        for char in name
    ):
        raise UploadError(
            f"ZIP member {name!r}: its name holds a NUL or control character; rename the file "
            "and zip it again"
        )
    text = name.replace("\\", "/")
    if text.startswith("/"):
        raise UploadError(
            f"ZIP member {name!r} has an absolute path; zip the dataset with paths relative to its folder"
        )
    if _DRIVE.match(text):
        raise UploadError(
            f"ZIP member {name!r} starts with a drive letter; zip the dataset with paths "
            "relative to its folder"
        )
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UploadError(
            f"ZIP member {name!r} has a '..' component, which would write outside the dataset "
            "folder; zip the dataset from inside its folder"
        )
    if not parts:
        raise UploadError(f"ZIP member {name!r} has an empty name")
    return PurePosixPath(*parts)


# --------------------------------------------------------------------------------------------
# unpacking


@dataclass
class _Member:
    info: zipfile.ZipInfo
    path: PurePosixPath
    is_dir: bool


def unpack_zip(
    source: str | os.PathLike | BinaryIO, datasets_root: Path, name: str, limits: ZipLimits = ZipLimits()
) -> Path:
    """Unpack the ZIP `source` (a path or a binary file object) into `datasets_root/name`.

    Every member is checked before anything is written (see `safe_member_name`, no links or special
    files, no encryption, the `limits`); the files are then streamed into a temporary folder inside
    `datasets_root`, counting the real bytes, and the folder is renamed into place. A single folder
    wrapping everything is stripped; `__MACOSX/` and `.DS_Store` are left out. On any failure
    nothing is left behind. Raises UploadError (field "file" or "name")."""
    check_dataset_name(name)
    root = Path(datasets_root)
    target = root / name
    _refuse_existing(target)
    root.mkdir(parents=True, exist_ok=True)
    with _open_zip(source) as archive:
        members = _checked_members(archive, limits)
        return _extract(archive, members, root, target, limits)


def _refuse_existing(target: Path) -> None:
    if target.exists() or target.is_symlink():
        raise UploadError(
            f"a dataset named {target.name!r} already exists; choose another name or delete "
            "that dataset first",
            field="name",
        )


def _open_zip(source) -> zipfile.ZipFile:
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise UploadError(f"no uploaded file at {source}")
    try:
        return zipfile.ZipFile(source)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
    ) as exc:
        raise UploadError(
            f"the upload is not a readable ZIP archive ({exc}); upload a .zip file, complete "
            "and not password-protected"
        ) from None


def _ignored(path: PurePosixPath) -> bool:
    return path.parts[0] == "__MACOSX" or path.name == ".DS_Store"


def _check_kind(info: zipfile.ZipInfo) -> None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise UploadError(
            f"ZIP member {info.filename!r} is a symbolic link, which is not allowed; zip the "
            "files themselves (e.g. `zip -r` without -y)"
        )
    expected = stat.S_IFDIR if info.is_dir() else stat.S_IFREG
    if kind not in (0, expected):
        raise UploadError(
            f"ZIP member {info.filename!r} is not a regular file or folder (mode {oct(kind)}); "
            "only files and folders can be uploaded"
        )


def _ratio(size: int, compressed: int) -> float:
    return size / max(compressed, 1)


def _check_member(info: zipfile.ZipInfo, limits: ZipLimits) -> None:
    name = info.filename
    if info.flag_bits & _ENCRYPTED:
        raise UploadError(f"ZIP member {name!r} is encrypted; upload a ZIP without a password")
    if info.compress_type not in _SUPPORTED_COMPRESSION:
        raise UploadError(
            f"ZIP member {name!r} uses compression method {info.compress_type}, which cannot "
            "be read; use stored, deflate, bzip2 or lzma (any common zip tool's default)"
        )
    if info.file_size > limits.max_member_bytes:
        raise UploadError(
            f"ZIP member {name!r} declares {info.file_size} bytes, over the limit of "
            f"{limits.max_member_bytes} bytes per file"
        )
    ratio = _ratio(info.file_size, info.compress_size)
    if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        raise UploadError(
            f"ZIP member {name!r} would expand {ratio:.0f} times ({info.compress_size} -> {info.file_size} "
            f"bytes), over the limit of {limits.max_ratio:g}; a ZIP bomb?"
        )


def _checked_members(archive: zipfile.ZipFile, limits: ZipLimits) -> list[_Member]:
    """Every member to unpack, checked against the rules and `limits`, wrapper folder stripped."""
    members: list[_Member] = []
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    total = compressed = 0
    for info in archive.infolist():
        path = safe_member_name(info.orig_filename)
        _check_kind(info)
        if _ignored(path):
            continue
        if info.is_dir():
            members.append(_Member(info, path, True))
            folders.add(path)
            if len(folders) > limits.max_files:
                raise UploadError(
                    f"the ZIP holds more than {limits.max_files} folders (the file limit); split the "
                    "dataset or zip fewer folders"
                )
            continue
        _check_member(info, limits)
        if path in files:
            raise UploadError(f"ZIP member {info.filename!r} appears twice in the archive")
        files.add(path)
        if len(files) > limits.max_files:
            raise UploadError(
                f"the ZIP holds more than {limits.max_files} files (the limit); split the "
                "dataset or zip fewer files"
            )
        folders.update(path.parents)
        members.append(_Member(info, path, False))
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_bytes:
            raise UploadError(
                f"the ZIP unpacks to more than {limits.max_bytes} bytes (the limit), reached at member "
                f"{info.filename!r}"
            )
    if not files:
        raise UploadError("the ZIP holds no files")
    clash = sorted(files & folders)
    if clash:
        raise UploadError(f"ZIP member {clash[0].as_posix()!r} is both a file and a folder in the archive")
    ratio = _ratio(total, compressed)
    if total > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        raise UploadError(
            f"the ZIP would expand {ratio:.0f} times ({compressed} -> {total} bytes), over the limit of "
            f"{limits.max_ratio:g}; a ZIP bomb?"
        )
    _check_no_overlap(archive, [m for m in members if not m.is_dir])
    return _strip_wrapper(members)


def _check_no_overlap(archive: zipfile.ZipFile, members: list[_Member]) -> None:
    """Refuse members whose data overlap (one compressed stream listed many times: a ZIP bomb that
    stays under every per-member ratio)."""
    ordered = sorted(members, key=lambda m: m.info.header_offset)
    ends = [m.info.header_offset for m in ordered[1:]] + [archive.start_dir]
    for member, next_start in zip(ordered, ends):
        info = member.info
        end = info.header_offset + _LOCAL_HEADER + info.compress_size  # lower bound: name, extra not counted
        if info.header_offset < 0 or end > next_start:
            raise UploadError(
                f"ZIP member {info.filename!r} overlaps the data of another member; the "
                "archive is corrupt or crafted"
            )


def _strip_wrapper(members: list[_Member]) -> list[_Member]:
    tops = {m.path.parts[0] for m in members}
    if len(tops) != 1:
        return members
    top = next(iter(tops))
    if top in _LAYOUT_FOLDERS or any(len(m.path.parts) < 2 for m in members if not m.is_dir):
        return members
    return [
        _Member(m.info, PurePosixPath(*m.path.parts[1:]), m.is_dir) for m in members if len(m.path.parts) > 1
    ]


def _extract(
    archive: zipfile.ZipFile, members: list[_Member], root: Path, target: Path, limits: ZipLimits
) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        base = staging.resolve()
        total = 0
        for member in members:
            destination = staging.joinpath(*member.path.parts)
            try:
                if not destination.resolve().is_relative_to(base):
                    raise UploadError(
                        f"ZIP member {member.info.filename!r} resolves outside the dataset folder"
                    )
                if member.is_dir:
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                total = _write_member(archive, member.info, destination, total, limits)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise UploadError(
                    f"ZIP member {member.info.filename!r} cannot be written here: {exc.strerror}"
                ) from None
        _refuse_existing(target)  # another upload may have taken the name meanwhile
        staging.chmod(0o755)
        try:
            os.rename(staging, target)
        except OSError:
            _refuse_existing(target)  # lost the race for the name: say so
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _member_chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's decompressed bytes; a damaged stream is an UploadError naming the member."""
    try:
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                yield chunk
    except UploadError:
        raise
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
    ) as exc:
        raise UploadError(
            f"ZIP member {info.filename!r} cannot be unpacked ({exc}); the archive is damaged, "
            "upload it again"
        ) from None


def _write_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path, total: int, limits: ZipLimits
) -> int:
    """Stream one member to `destination`, counting the real bytes (declared sizes can lie)."""
    name = info.filename
    written = 0
    with open(destination, "xb") as out:
        for chunk in _member_chunks(archive, info):
            written += len(chunk)
            total += len(chunk)
            if written > info.file_size:
                raise UploadError(
                    f"ZIP member {name!r} unpacks to more than the {info.file_size} bytes it "
                    "declares; the archive is corrupt or crafted"
                )
            if written > limits.max_member_bytes:
                raise UploadError(
                    f"ZIP member {name!r} unpacks to more than {limits.max_member_bytes} bytes "
                    "(the limit per file)"
                )
            if total > limits.max_bytes:
                raise UploadError(
                    f"the ZIP unpacks to more than {limits.max_bytes} bytes (the limit), reached at member "
                    f"{name!r}"
                )
            out.write(chunk)
    if written != info.file_size:
        raise UploadError(
            f"ZIP member {name!r} unpacks to {written} bytes but declares {info.file_size}; "
            "the archive is corrupt or crafted"
        )
    return total


def clean_staging(datasets_root: Path, min_age_s: float = 3600.0) -> list[Path]:
    """Remove temporary upload folders older than `min_age_s` (left by a server that was killed
    while unpacking); returns the removed paths."""
    root = Path(datasets_root)
    removed = []
    if not root.is_dir():
        return removed
    now = time.time()
    for path in root.glob(f"{STAGING_PREFIX}*"):
        try:
            old = now - path.lstat().st_mtime >= min_age_s
        except OSError:
            continue
        if old and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


# --------------------------------------------------------------------------------------------
# describing a dataset folder


def describe_dataset(path: Path) -> dict:
    """What the dataset folder `path` holds: `{"name", "path", "layout", "splits": {split: {class:
    count}}, "files", "bytes", "kinds", "note"}` (raw layouts add `"prepare"`: the dataset keys of a
    prepare job). The first kind (in registration order) that knows the layout describes it; every kind
    that reads that layout as it is is listed. Reads only names, sizes, manifests and JSON: no image is
    decoded."""
    from fakefinder.faces.layouts import describe_raw
    from fakefinder.tasks import kinds

    path = Path(path)
    if not path.is_dir():
        raise DatasetNotFoundError(f"no dataset folder at {path}")
    files, size = _folder_size(path)
    description = {
        "name": path.name,
        "path": str(path),
        "layout": "unknown",
        "splits": {},
        "files": files,
        "bytes": size,
        "kinds": [],
        "note": "",
    }
    for kind in kinds():
        found = kind.describe_dataset(path)
        if found is None or (description["layout"] != "unknown" and found["layout"] != description["layout"]):
            continue
        if description["layout"] == "unknown":
            description.update(
                layout=found["layout"], splits=found.get("splits") or {}, note=found.get("note", "")
            )
        if found.get("usable", True):
            description["kinds"].append(kind.name)
    if description["layout"] != "unknown":
        return description
    raw = describe_raw(path)
    if raw is not None:
        description.update(raw)
        return description
    description["note"] = (
        "the folder is empty"
        if not files
        else (
            "not a layout fakefinder knows; expected what a model kind trains on "
            f"({', '.join(dict.fromkeys(k.dataset_layout for k in kinds() if k.dataset_layout))}) or a raw "
            "layout prepare reads (real/ and fake/ folders, metadata.csv, FaceForensics++, DFDC, Celeb-DF)"
        )
    )
    return description


def list_datasets(root: Path) -> list[dict]:
    """Every dataset folder of `root` (hidden and temporary folders skipped), described; one that
    cannot be described is listed with layout "unknown" and the error in its note. Never raises."""
    root = Path(root)
    try:
        entries = sorted(
            (p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()), key=lambda p: p.name
        )
    except OSError:
        return []
    described = []
    for entry in entries:
        try:
            described.append(describe_dataset(entry))
        except Exception as exc:  # noqa: BLE001 - one broken folder must not hide the others
            described.append(
                {
                    "name": entry.name,
                    "path": str(entry),
                    "layout": "unknown",
                    "splits": {},
                    "files": 0,
                    "bytes": 0,
                    "kinds": [],
                    "note": f"could not describe the folder: {type(exc).__name__}: {exc}",
                }
            )
    return described


def _folder_size(path: Path) -> tuple[int, int]:
    files = size = 0
    pending = [path]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return files, size
