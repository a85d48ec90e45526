"""The platform's datasets: a user's ZIP checked and unpacked safely into the datasets root, and what a
dataset folder holds (its layout, splits and class counts, and which model kinds can use it)."""

from __future__ import annotations

import csv
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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
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
    "train", "val", "test", "real", "fake", "images", "original_sequences", "manipulated_sequences",
    "Celeb-real", "Celeb-synthesis", "YouTube-real",
}
_MANIFESTS = ("manifest.csv", "manifest.parquet")
_MANIFEST_SAMPLE = 200  # manifest rows whose file is checked on disk (evenly spaced)


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
    if any(ord(char) < 32 or char in "\x7f\x85\u2028\u2029" or unicodedata.category(char) in ("Cc", "Zl", "Zp")
           for char in name):
        raise UploadError(f"ZIP member {name!r}: its name holds a NUL or control character; rename the file "
                          "and zip it again")
    text = name.replace("\\", "/")
    if text.startswith("/"):
        raise UploadError(f"ZIP member {name!r} has an absolute path; zip the dataset with paths relative to "
                          "its folder")
    if _DRIVE.match(text):
        raise UploadError(f"ZIP member {name!r} starts with a drive letter; zip the dataset with paths "
                          "relative to its folder")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UploadError(f"ZIP member {name!r} has a '..' component, which would write outside the dataset "
                          "folder; zip the dataset from inside its folder")
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


def unpack_zip(source: str | os.PathLike | BinaryIO, datasets_root: Path, name: str,
               limits: ZipLimits = ZipLimits()) -> Path:
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
        raise UploadError(f"a dataset named {target.name!r} already exists; choose another name or delete "
                          "that dataset first", field="name")


def _open_zip(source) -> zipfile.ZipFile:
    if isinstance(source, (str, os.PathLike)) and not Path(source).is_file():
        raise UploadError(f"no uploaded file at {source}")
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        raise UploadError(f"the upload is not a readable ZIP archive ({exc}); upload a .zip file, complete "
                          "and not password-protected") from None


def _ignored(path: PurePosixPath) -> bool:
    return path.parts[0] == "__MACOSX" or path.name == ".DS_Store"


def _check_kind(info: zipfile.ZipInfo) -> None:
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise UploadError(f"ZIP member {info.filename!r} is a symbolic link, which is not allowed; zip the "
                          "files themselves (e.g. `zip -r` without -y)")
    expected = stat.S_IFDIR if info.is_dir() else stat.S_IFREG
    if kind not in (0, expected):
        raise UploadError(f"ZIP member {info.filename!r} is not a regular file or folder (mode {oct(kind)}); "
                          "only files and folders can be uploaded")


def _ratio(size: int, compressed: int) -> float:
    return size / max(compressed, 1)


def _check_member(info: zipfile.ZipInfo, limits: ZipLimits) -> None:
    name = info.filename
    if info.flag_bits & _ENCRYPTED:
        raise UploadError(f"ZIP member {name!r} is encrypted; upload a ZIP without a password")
    if info.compress_type not in _SUPPORTED_COMPRESSION:
        raise UploadError(f"ZIP member {name!r} uses compression method {info.compress_type}, which cannot "
                          "be read; use stored, deflate, bzip2 or lzma (any common zip tool's default)")
    if info.file_size > limits.max_member_bytes:
        raise UploadError(f"ZIP member {name!r} declares {info.file_size} bytes, over the limit of "
                          f"{limits.max_member_bytes} bytes per file")
    ratio = _ratio(info.file_size, info.compress_size)
    if info.file_size > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        raise UploadError(f"ZIP member {name!r} would expand {ratio:.0f} times ({info.compress_size} -> "
                          f"{info.file_size} bytes), over the limit of {limits.max_ratio:g}; a ZIP bomb?")


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
                raise UploadError(f"the ZIP holds more than {limits.max_files} folders (the file limit); split the "
                                  "dataset or zip fewer folders")
            continue
        _check_member(info, limits)
        if path in files:
            raise UploadError(f"ZIP member {info.filename!r} appears twice in the archive")
        files.add(path)
        if len(files) > limits.max_files:
            raise UploadError(f"the ZIP holds more than {limits.max_files} files (the limit); split the "
                              "dataset or zip fewer files")
        folders.update(path.parents)
        members.append(_Member(info, path, False))
        total += info.file_size
        compressed += info.compress_size
        if total > limits.max_bytes:
            raise UploadError(f"the ZIP unpacks to more than {limits.max_bytes} bytes (the limit), reached "
                              f"at member {info.filename!r}")
    if not files:
        raise UploadError("the ZIP holds no files")
    clash = sorted(files & folders)
    if clash:
        raise UploadError(f"ZIP member {clash[0].as_posix()!r} is both a file and a folder in the archive")
    ratio = _ratio(total, compressed)
    if total > limits.ratio_floor_bytes and ratio > limits.max_ratio:
        raise UploadError(f"the ZIP would expand {ratio:.0f} times ({compressed} -> {total} bytes), over the "
                          f"limit of {limits.max_ratio:g}; a ZIP bomb?")
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
            raise UploadError(f"ZIP member {info.filename!r} overlaps the data of another member; the "
                              "archive is corrupt or crafted")


def _strip_wrapper(members: list[_Member]) -> list[_Member]:
    tops = {m.path.parts[0] for m in members}
    if len(tops) != 1:
        return members
    top = next(iter(tops))
    if top in _LAYOUT_FOLDERS or any(len(m.path.parts) < 2 for m in members if not m.is_dir):
        return members
    return [_Member(m.info, PurePosixPath(*m.path.parts[1:]), m.is_dir) for m in members
            if len(m.path.parts) > 1]


def _extract(archive: zipfile.ZipFile, members: list[_Member], root: Path, target: Path,
             limits: ZipLimits) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        base = staging.resolve()
        total = 0
        for member in members:
            destination = staging.joinpath(*member.path.parts)
            try:
                if not destination.resolve().is_relative_to(base):
                    raise UploadError(f"ZIP member {member.info.filename!r} resolves outside the dataset folder")
                if member.is_dir:
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                total = _write_member(archive, member.info, destination, total, limits)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                raise UploadError(f"ZIP member {member.info.filename!r} cannot be written here: {exc.strerror}") from None
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
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError) as exc:
        raise UploadError(f"ZIP member {info.filename!r} cannot be unpacked ({exc}); the archive is damaged, "
                          "upload it again") from None


def _write_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, destination: Path, total: int,
                  limits: ZipLimits) -> int:
    """Stream one member to `destination`, counting the real bytes (declared sizes can lie)."""
    name = info.filename
    written = 0
    with open(destination, "xb") as out:
        for chunk in _member_chunks(archive, info):
            written += len(chunk)
            total += len(chunk)
            if written > info.file_size:
                raise UploadError(f"ZIP member {name!r} unpacks to more than the {info.file_size} bytes it "
                                  "declares; the archive is corrupt or crafted")
            if written > limits.max_member_bytes:
                raise UploadError(f"ZIP member {name!r} unpacks to more than {limits.max_member_bytes} bytes "
                                  "(the limit per file)")
            if total > limits.max_bytes:
                raise UploadError(f"the ZIP unpacks to more than {limits.max_bytes} bytes (the limit), "
                                  f"reached at member {name!r}")
            out.write(chunk)
    if written != info.file_size:
        raise UploadError(f"ZIP member {name!r} unpacks to {written} bytes but declares {info.file_size}; "
                          "the archive is corrupt or crafted")
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

_READ_ERRORS = (FakefinderError, ValueError, OSError)  # what a user's files can make a reader raise


def describe_dataset(path: Path) -> dict:
    """What the dataset folder `path` holds: `{"name", "path", "layout", "splits": {split: {class:
    count}}, "files", "bytes", "kinds", "note"}` (raw layouts add `"prepare"`: the dataset keys of a
    prepare job). Reads only names, sizes, manifests and JSON: no image is decoded."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetNotFoundError(f"no dataset folder at {path}")
    files, size = _folder_size(path)
    description = {"name": path.name, "path": str(path), "layout": "unknown", "splits": {}, "files": files,
                   "bytes": size, "kinds": [], "note": ""}
    for detect in _DETECTORS:
        found = detect(path)
        if found is not None:
            description.update(found)
            return description
    description["note"] = "the folder is empty" if not files else (
        "not a layout fakefinder knows; expected one of: manifest.csv (a prepared dataset), train.json "
        "(LLaVA conversations), train.jsonl (instructions), data.yaml (a YOLO detection dataset), "
        "metadata.jsonl or same-name .txt captions (captioned images), train/<class>/ and val/<class>/ (class folders), "
        "real/ and fake/ folders, "
        "metadata.csv (file,label), or a FaceForensics++, DFDC or Celeb-DF folder")
    return description


def list_datasets(root: Path) -> list[dict]:
    """Every dataset folder of `root` (hidden and temporary folders skipped), described; one that
    cannot be described is listed with layout "unknown" and the error in its note. Never raises."""
    root = Path(root)
    try:
        entries = sorted((p for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()),
                         key=lambda p: p.name)
    except OSError:
        return []
    described = []
    for entry in entries:
        try:
            described.append(describe_dataset(entry))
        except Exception as exc:  # noqa: BLE001 - one broken folder must not hide the others
            described.append({"name": entry.name, "path": str(entry), "layout": "unknown", "splits": {},
                              "files": 0, "bytes": 0, "kinds": [],
                              "note": f"could not describe the folder: {type(exc).__name__}: {exc}"})
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


def _counts(pairs) -> dict[str, dict[str, int]]:
    """{split: {class: count}} from (split, class) pairs, sorted."""
    table: dict[str, Counter] = defaultdict(Counter)
    for split, label in pairs:
        table[str(split)][str(label)] += 1
    return {split: dict(sorted(table[split].items())) for split in sorted(table, key=_split_order)}


def _split_order(split: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "eval": 1, "test": 2}
    return order.get(split, 3), split


def _missing_splits(splits: dict, needed: tuple[str, ...]) -> list[str]:
    return [split for split in needed if split not in splits]


def _join(notes: list[str]) -> str:
    return "; ".join(note for note in notes if note)


# prepared: a manifest from `fakefinder prepare`


def _detect_prepared(path: Path) -> dict | None:
    manifest = next((path / name for name in _MANIFESTS if (path / name).is_file()), None)
    if manifest is None:
        return None
    from fakefinder.faces.manifest import read_manifest

    found = {"layout": "prepared", "kinds": []}
    try:
        frame = read_manifest(manifest)
    except _READ_ERRORS as exc:
        return {**found, "note": f"{manifest.name} cannot be used: {exc}"}
    notes = []
    missing = _missing_splits(set(frame.split), ("train", "val"))
    if missing:
        notes.append(f"no {' or '.join(missing)} rows in {manifest.name}: training needs train and val")
    step = max(1, len(frame) // _MANIFEST_SAMPLE)
    checked = list(frame.path.iloc[::step])
    absent = [rel for rel in checked if not (path / str(rel)).is_file()]
    if absent:
        notes.append(f"{len(absent)} of {len(checked)} checked crops are missing (e.g. {absent[0]})")
    return {**found, "splits": _counts(zip(frame.split, frame.label)), "note": _join(notes),
            "kinds": [] if missing else ["deepfake_detector"]}


# llava_json: LLaVA conversations for dx_llava


def _detect_llava(path: Path) -> dict | None:
    if not (path / "train.json").is_file():
        return None
    from fakefinder.tasks.dx_llava.data import read_samples
    from fakefinder.tasks.dx_llava.kind import dataset_settings

    found = {"layout": "llava_json", "kinds": []}
    try:
        settings = dataset_settings(path)
    except _READ_ERRORS as exc:
        return {**found, "note": str(exc)}
    images = Path(settings["dx_llava.data.image_folder"])
    notes = []
    if not images.resolve().is_relative_to(path.resolve()):
        notes.append(f"images are looked up outside the dataset folder, in {images} (image_folder.txt)")
    pairs, usable = [], True
    for key in ("train_json", "eval_json", "test_json"):
        json_path = settings.get(f"dx_llava.data.{key}")
        if json_path is None:
            continue
        split = Path(json_path).stem
        try:
            samples, report = read_samples(json_path, images, ambiguous="skip")
        except _READ_ERRORS as exc:
            notes.append(str(exc))
            usable = False
            continue
        pairs += [(split, {0: "real", 1: "fake"}.get(s.binary_label, "ambiguous")) for s in samples]
        if report["ambiguous"]:
            notes.append(f"{len(report['ambiguous'])} sample(s) of {Path(json_path).name} have no clear "
                         "real/fake answer (left out of the binary loss)")
    if "dx_llava.data.eval_json" not in settings:
        notes.append("no val.json or eval.json: training runs without evaluation")
    return {**found, "splits": _counts(pairs), "note": _join(notes), "kinds": ["dx_llava"] if usable else []}


# class_folders: {train,val[,test]}/<class>/<images> for image_classifier


def _detect_class_folders(path: Path) -> dict | None:
    train = path / "train"
    if not train.is_dir() or not any(p.is_dir() for p in train.iterdir()):
        return None
    from fakefinder.tasks.image_classifier.data import ClassFolderError, read_class_folders

    found = {"layout": "class_folders", "kinds": []}
    try:
        folders = read_class_folders(path, check_images=False)
    except (ClassFolderError, OSError) as exc:
        return {**found, "splits": _count_class_images(path), "note": str(exc)}
    splits = _counts(zip(folders.rows.split, folders.rows.label))
    note = "no test split (optional)" if "test" not in splits else ""
    return {**found, "splits": splits, "note": note, "kinds": ["image_classifier"]}


def _count_class_images(path: Path) -> dict[str, dict[str, int]]:
    """Images per split and class folder, for a class-folder dataset the reader refused."""
    from fakefinder.media.images import IMAGE_EXTENSIONS

    pairs = []
    for split in ("train", "val", "test"):
        if not (path / split).is_dir():
            continue
        for folder in (p for p in (path / split).iterdir() if p.is_dir()):
            pairs += [(split, folder.name) for p in folder.rglob("*")
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return _counts(pairs)


# raw layouts that `fakefinder prepare` reads


def _ffpp_compressions(path: Path) -> list[str]:
    found = set()
    for group in ("original_sequences", "manipulated_sequences"):
        for subset in (p for p in (path / group).glob("*") if p.is_dir()):
            found.update(c for c in ("raw", "c23", "c40") if (subset / c / "videos").is_dir())
    return sorted(found, key=("c23", "raw", "c40").index)


def _csv_list(path: Path) -> str | None:
    """The CSV list (columns file,label) of a `csv` layout: metadata.csv, else the only such CSV."""
    if (path / "metadata.csv").is_file():
        return "metadata.csv"
    lists = []
    for candidate in sorted(path.glob("*.csv")):
        try:
            with candidate.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if {"file", "label"} <= {column.strip() for column in header}:
            lists.append(candidate.name)
    return lists[0] if len(lists) == 1 else None


def _raw_layout(path: Path) -> tuple[str, dict, list[str]] | None:
    """(layout, extra DatasetConfig keys, notes) when `path` looks like a layout prepare reads."""
    if (path / "original_sequences").is_dir():
        compressions = _ffpp_compressions(path) or ["c23"]
        notes = [f"also holds {', '.join(compressions[1:])}: a prepare job reads one compression "
                 f"(compression={compressions[0]} here)"] if len(compressions) > 1 else []
        return "ffpp", {"compression": compressions[0]}, notes
    if any((path / name).is_dir() for name in ("Celeb-real", "YouTube-real", "Celeb-synthesis")):
        return "celebdf", {}, []
    if (path / "metadata.json").is_file() or any(path.glob("*/metadata.json")):
        return "dfdc", {}, []
    if (path / "real").is_dir() and (path / "fake").is_dir():
        return "folder", {}, []
    csv_file = _csv_list(path)
    if csv_file is not None:
        return "csv", {"csv_file": csv_file}, []
    return None


def _config_tag(name: str) -> str:
    """A dataset tag DatasetConfig accepts, from a folder name."""
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return tag if tag[:1].isalnum() else f"d{tag}"


def _detect_raw(path: Path) -> dict | None:
    found = _raw_layout(path)
    if found is None:
        return None
    layout, extra, notes = found
    from fakefinder.config import DatasetConfig
    from fakefinder.faces.layouts import read_dataset

    description = {"layout": layout, "kinds": [], "prepare": {"layout": layout, "root": str(path), **extra}}
    try:
        items = read_dataset(DatasetConfig(name=_config_tag(path.name), layout=layout, root=path, **extra))
    except _READ_ERRORS as exc:
        return {**description, "note": _join(notes + [str(exc)])}
    splits = _counts((item.official_split or "unsplit", item.label) for item in items)
    problems = [item for item in items if item.problem]
    if problems:
        first = problems[0]
        notes.append(f"{len(problems)} file(s) will be skipped, e.g. {first.path.name}: {first.problem}")
    if "unsplit" in splits:
        notes.append("files without an official split are given train/val/test by the prepare job's ratios")
    notes.insert(0, f"raw {layout} data: run a prepare job (face crops and a manifest) before training")
    return {**description, "splits": splits, "note": _join(notes), "kinds": ["prepare"]}


def _detect_instructions(path: Path) -> dict | None:
    """train.jsonl (+ val.jsonl, test.jsonl) of instruction or conversation lines: the language-model kinds."""
    if not (path / "train.jsonl").is_file():
        return None
    from fakefinder.tasks.llm_lora.data import read_jsonl

    found = {"layout": "instruction_jsonl", "kinds": []}
    splits, notes, usable = {}, [], True
    for split in ("train", "val", "test"):
        file = path / f"{split}.jsonl"
        if not file.is_file():
            continue
        try:
            examples, report = read_jsonl(file)
        except _READ_ERRORS as exc:
            notes.append(str(exc))
            usable = False  # training reads every split the folder has
            continue
        splits[split] = {"examples": len(examples)}
        if report.skipped:
            notes.append(f"{file.name}: {len(report.skipped)} line(s) with an empty response are skipped "
                         f"(line {', '.join(str(s['line']) for s in report.skipped[:5])})")
    if "val" not in splits:
        notes.append("no val.jsonl: the held-out split is carved from train.jsonl (llm.data.val_ratio)")
    return {**found, "splits": splits, "note": _join(notes), "kinds": ["llm_lora", "llm_qlora"] if usable else []}


def _detect_yolo(path: Path) -> dict | None:
    """data.yaml with images/ and labels/: a YOLO detection dataset (labels checked as training checks them)."""
    if not any((path / name).is_file() for name in ("data.yaml", "data.yml", "dataset.yaml")):
        return None
    from fakefinder.tasks.object_detector.labels import LabelError, read_dataset

    try:
        dataset = read_dataset(path, check_images=False, confine=True)
    except LabelError as exc:
        listed = [f"{p['file']}:{p['line']}: {p['message']}" for p in exc.report["listed"]
                  if p["kind"] in ("malformed", "unknown_class", "out_of_range")]
        return {"layout": "yolo", "splits": {s: dict(c["per_class"]) for s, c in exc.report["splits"].items()},
                "note": _join([f"{len(listed)} bad label line(s), e.g. {'; '.join(listed[:3])} (train with "
                               "detector.data.bad_labels=skip to leave their images out)"]), "kinds": []}
    except _READ_ERRORS as exc:
        return {"layout": "yolo", "splits": {}, "note": str(exc), "kinds": []}
    notes = list(dataset.notes)
    orphans = sum(p.kind == "orphan_label" for p in dataset.problems)
    if orphans:
        notes.append(f"{orphans} label file(s) without an image")
    notes += [f"{s}: {c['images']} images ({c['background']} background), {c['boxes']} boxes"
              for s, c in dataset.counts.items()]
    return {"layout": "yolo", "splits": {s: dict(c["per_class"]) for s, c in dataset.counts.items()},
            "note": _join(notes), "kinds": ["object_detector"]}


def _detect_captioned(path: Path) -> dict | None:
    """Images with captions (metadata.jsonl, or a same-name .txt beside each image): a text-to-image
    LoRA dataset (captions checked as training checks them; images are not decoded here)."""
    from fakefinder.media.images import IMAGE_EXTENSIONS

    has_metadata = any(path.rglob("metadata.jsonl"))
    if not has_metadata:
        images = {(p.parent, p.stem) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
        if not images or not any((p.parent, p.stem) in images for p in path.rglob("*.txt")):
            return None
    from fakefinder.tasks.text_to_image_lora.config import DiffusionDataConfig
    from fakefinder.tasks.text_to_image_lora.data import CaptionError, read_folder

    try:
        items, report = read_folder(path, DiffusionDataConfig(), check_images=False)
    except CaptionError as exc:
        shown = "; ".join(str(p) for p in exc.problems[:3]) or str(exc)
        return {"layout": "captioned_images", "splits": {}, "kinds": [],
                "note": _join([f"{len(exc.problems)} problem(s), e.g. {shown} (train with "
                               "diffusion.data.bad_files=skip to leave them out)"])}
    sources = ", ".join(f"{n} from {k}" for k, n in sorted(report.captions.items()))
    return {"layout": "captioned_images", "splits": {"train": {"captioned": len(items)}},
            "note": _join([f"{len(items)} captioned images ({sources})"]), "kinds": ["text_to_image_lora"]}


_DETECTORS: list[Callable[[Path], dict | None]] = [
    _detect_prepared, _detect_llava, _detect_instructions, _detect_yolo, _detect_captioned, _detect_class_folders,
    _detect_raw,
]
