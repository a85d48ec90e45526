"""Readers for the datasets' published layouts: each turns a folder into a list of `MediaItem`s.

Layouts: FaceForensics++ (`ffpp`), DFDC (`dfdc`), Celeb-DF v2 (`celebdf`), a `folder` with
`real/` and `fake/`, and a `csv` list. Each item carries a `video_id` unique across methods and
datasets, and the identity keys that must never be split apart (`links`).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from fakefinder.config import DatasetConfig
from fakefinder.core.errors import FakefinderError
from fakefinder.media.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

FFPP_METHODS = (
    "Deepfakes",
    "Face2Face",
    "FaceSwap",
    "NeuralTextures",
    "FaceShifter",
    "DeepFakeDetection",
)
REAL_WORDS = {"real", "0", "original", "pristine", "genuine", "authentic"}
FAKE_WORDS = {"fake", "1", "manipulated", "deepfake", "synthetic", "synthesis"}


class LayoutError(FakefinderError, ValueError):
    """A dataset root that does not look like the layout it was declared as."""


@dataclass
class MediaItem:
    """One video or image to process, with everything the manifest needs to know about it."""

    dataset: str
    path: Path
    label: str  # "real" | "fake"
    video_id: str
    method: str
    links: tuple[str, ...]  # identity keys; items sharing a key share a split
    official_split: str | None = None
    source_video_id: str | None = None  # for a fake: the real video it was made from
    mask_path: Path | None = None  # for a fake: the dataset's own video of where it was changed (FF++ masks/)
    problem: str | None = None  # known before decoding (e.g. missing metadata entry)
    group: str = field(default="")  # filled by the split step
    split: str = field(default="")  # filled by the split step

    @property
    def kind(self) -> str:
        return "image" if self.path.suffix.lower() in IMAGE_EXTENSIONS else "video"


def normalise_label(raw: str, where: str) -> str:
    value = str(raw).strip().lower()
    if value in REAL_WORDS:
        return "real"
    if value in FAKE_WORDS:
        return "fake"
    raise LayoutError(
        f"{where}: label {raw!r} is neither real ({sorted(REAL_WORDS)}) nor fake ({sorted(FAKE_WORDS)})"
    )


def _vid(dataset: str, root: Path, path: Path) -> str:
    return f"{dataset}:{path.relative_to(root).with_suffix('').as_posix()}"


def _media_files(folder: Path, extensions: set[str]) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


def _require_dir(path: Path, layout: str, expected: str) -> None:
    if not path.is_dir():
        raise LayoutError(f"{layout} layout expected {path} to exist: {expected}")


# --------------------------------------------------------------------------------------------
# FaceForensics++


def _ffpp_actor(stem: str) -> str:
    return stem.split("__", 1)[0]


def _ffpp_official_splits(spec: DatasetConfig) -> dict[frozenset[str], str]:
    folder = spec.splits_dir or spec.root / "splits"
    if not spec.use_official_split or not folder.is_dir():
        return {}
    pairs: dict[frozenset[str], str] = {}
    for split in ("train", "val", "test"):
        path = folder / f"{split}.json"
        if not path.is_file():
            continue
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise LayoutError(f"FF++ split file {path} is not valid JSON: {exc}") from exc
        for pair in content:
            pairs[frozenset(str(v) for v in pair)] = split
    return pairs


def read_ffpp(spec: DatasetConfig) -> list[MediaItem]:
    root = spec.root
    expected = (
        "original_sequences/<youtube|actors>/<raw|c23|c40>/videos/*.mp4 and "
        "manipulated_sequences/<method>/<raw|c23|c40>/videos/<target>_<source>.mp4"
    )
    _require_dir(root, "FaceForensics++", expected)
    _require_dir(root / "original_sequences", "FaceForensics++", expected)
    official = _ffpp_official_splits(spec)
    id_to_split = {vid: split for pair, split in official.items() for vid in pair}
    items: list[MediaItem] = []
    subsets = spec.originals or [
        p.name for p in sorted((root / "original_sequences").iterdir()) if p.is_dir()
    ]
    for subset in subsets:
        folder = root / "original_sequences" / subset / spec.compression / "videos"
        if not folder.is_dir():
            if spec.originals:
                _require_dir(folder, "FaceForensics++", expected)
            continue
        for path in _media_files(folder, VIDEO_EXTENSIONS):
            stem = path.stem
            key = f"actor:{_ffpp_actor(stem)}" if subset == "actors" else f"yt:{stem}"
            items.append(
                MediaItem(
                    dataset=spec.name,
                    path=path,
                    label="real",
                    video_id=_vid(spec.name, root, path),
                    method="original",
                    links=(key,),
                    official_split=id_to_split.get(stem) if subset == "youtube" else None,
                )
            )
    manipulated = root / "manipulated_sequences"
    methods = (
        spec.methods or [p.name for p in sorted(manipulated.iterdir()) if p.is_dir()]
        if manipulated.is_dir()
        else []
    )
    for method in methods:
        folder = manipulated / method / spec.compression / "videos"
        if not folder.is_dir():
            if spec.methods:
                _require_dir(folder, "FaceForensics++", expected)
            continue
        for path in _media_files(folder, VIDEO_EXTENSIONS):
            items.append(_ffpp_fake(spec, root, path, method, official))
    if not items:
        raise LayoutError(
            f"FaceForensics++ layout at {root}: no videos for compression '{spec.compression}'; expected "
            f"{expected}"
        )
    return items


def _ffpp_fake(
    spec: DatasetConfig, root: Path, path: Path, method: str, official: dict[frozenset[str], str]
) -> MediaItem:
    stem = path.stem
    if "__" in stem:  # DeepFakeDetection: <target>_<source>__<scene>__<hash>
        actors = stem.split("__", 1)[0].split("_")
        links = tuple(f"actor:{a}" for a in actors)
        source = None
        split = None
    else:  # <target>_<source>
        parts = stem.split("_")
        if len(parts) != 2:
            return MediaItem(
                spec.name,
                path,
                "fake",
                _vid(spec.name, root, path),
                method,
                (f"file:{stem}",),
                problem=f"file name {path.name} is not <target>_<source>.mp4",
            )
        links = tuple(f"yt:{p}" for p in parts)
        source = f"{spec.name}:original_sequences/youtube/{spec.compression}/videos/{parts[0]}"
        split = official.get(frozenset(parts))
    mask = root / "manipulated_sequences" / method / "masks" / "videos" / path.name
    return MediaItem(
        dataset=spec.name,
        path=path,
        label="fake",
        video_id=_vid(spec.name, root, path),
        method=method,
        links=links,
        official_split=split,
        source_video_id=source,
        mask_path=mask if mask.is_file() else None,
    )


# --------------------------------------------------------------------------------------------
# DFDC


def read_dfdc(spec: DatasetConfig) -> list[MediaItem]:
    root = spec.root
    expected = (
        "folders of *.mp4, each with a metadata.json ({'x.mp4': {'label': 'FAKE', 'original': 'y.mp4'}})"
    )
    _require_dir(root, "DFDC", expected)
    metadata_files = sorted(root.rglob("metadata.json"))
    if not metadata_files:
        raise LayoutError(f"DFDC layout at {root}: no metadata.json found; expected {expected}")
    items: list[MediaItem] = []
    for metadata_file in metadata_files:
        folder = metadata_file.parent
        try:
            metadata = json.loads(metadata_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LayoutError(f"DFDC metadata {metadata_file} is not valid JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise LayoutError(f"DFDC metadata {metadata_file} must map file names to entries")
        videos = {p.name: p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS}
        for name, path in sorted(videos.items()):
            entry = metadata.get(name)
            video_id = _vid(spec.name, root, path)
            if not isinstance(entry, dict) or "label" not in entry:
                items.append(
                    MediaItem(
                        spec.name,
                        path,
                        "unknown",
                        video_id,
                        "unknown",
                        (f"dfdc:{video_id}",),
                        problem=f"no entry with a label for {name} in {metadata_file}",
                    )
                )
                continue
            label = normalise_label(entry["label"], f"{metadata_file} entry {name}")
            original = entry.get("original") if label == "fake" else None
            anchor = original or name
            source = _vid(spec.name, root, folder / original) if original else None
            items.append(
                MediaItem(
                    dataset=spec.name,
                    path=path,
                    label=label,
                    video_id=video_id,
                    method="dfdc" if label == "fake" else "original",
                    links=(f"dfdc:{anchor}",),
                    official_split=_dfdc_split(entry) if spec.use_official_split else None,
                    source_video_id=source,
                )
            )
    return items


def _dfdc_split(entry: dict) -> str | None:
    split = str(entry.get("split", "")).lower()
    return {"train": "train", "val": "val", "validation": "val", "test": "test"}.get(split)


# --------------------------------------------------------------------------------------------
# Celeb-DF v2


def read_celebdf(spec: DatasetConfig) -> list[MediaItem]:
    root = spec.root
    expected = "Celeb-real/, YouTube-real/, Celeb-synthesis/ and List_of_testing_videos.txt"
    _require_dir(root, "Celeb-DF", expected)
    folders = {"Celeb-real": "real", "YouTube-real": "real", "Celeb-synthesis": "fake"}
    if not any((root / name).is_dir() for name in folders):
        raise LayoutError(f"Celeb-DF layout at {root}: none of {expected} found")
    test_list = _celebdf_test_list(root) if spec.use_official_split else None
    items: list[MediaItem] = []
    for folder_name, label in folders.items():
        folder = root / folder_name
        if not folder.is_dir():
            continue
        for path in _media_files(folder, VIDEO_EXTENSIONS):
            rel = path.relative_to(root).as_posix()
            stem = path.stem
            parts = stem.split("_")
            source = None
            if folder_name == "YouTube-real":
                anchor = f"yt:{stem}"
            elif folder_name == "Celeb-real":
                anchor = f"celeb:{stem}"
            elif len(parts) == 3:  # id<target>_id<source>_<clip>: made from Celeb-real/id<target>_<clip>
                anchor = f"celeb:{parts[0]}_{parts[2]}"
                source = f"{spec.name}:Celeb-real/{parts[0]}_{parts[2]}"
            else:
                anchor = f"file:{stem}"
            split = None
            if test_list is not None:
                split = "test" if rel in test_list else "trainval"
            items.append(
                MediaItem(
                    dataset=spec.name,
                    path=path,
                    label=label,
                    video_id=_vid(spec.name, root, path),
                    method="celebdf" if label == "fake" else folder_name,
                    links=(anchor,),
                    official_split=split,
                    source_video_id=source,
                )
            )
    return items


def _celebdf_test_list(root: Path) -> set[str] | None:
    path = root / "List_of_testing_videos.txt"
    if not path.is_file():
        return None
    listed = set()
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise LayoutError(f"{path} line {number}: expected '<0|1> <folder>/<file>.mp4', got {line!r}")
        listed.add(fields[1])
    return listed


# --------------------------------------------------------------------------------------------
# plain folder and CSV list


def read_folder(spec: DatasetConfig) -> list[MediaItem]:
    root = spec.root
    expected = "real/ and fake/ sub-folders holding images or videos (any depth)"
    _require_dir(root, "folder", expected)
    items: list[MediaItem] = []
    for label in ("real", "fake"):
        folder = root / label
        if not folder.is_dir():
            raise LayoutError(f"folder layout expected {folder} to exist: {expected}")
        for path in _media_files(folder, VIDEO_EXTENSIONS | IMAGE_EXTENSIONS):
            video_id = _vid(spec.name, root, path)
            items.append(
                MediaItem(spec.name, path, label, video_id, label if label == "real" else "fake", (video_id,))
            )
    if not items:
        raise LayoutError(f"folder layout at {root}: no images or videos under real/ or fake/")
    return items


def read_csv_list(spec: DatasetConfig) -> list[MediaItem]:
    csv_path = spec.root / spec.csv_file
    expected = "a CSV with columns file,label[,group][,split]; paths relative to the CSV"
    if not csv_path.is_file():
        raise LayoutError(f"csv layout expected the list {csv_path} to exist: {expected}")
    base = csv_path.parent
    items: list[MediaItem] = []
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        missing = {"file", "label"} - columns
        if missing:
            raise LayoutError(f"{csv_path}: missing column(s) {sorted(missing)}; expected {expected}")
        for line_number, row in enumerate(reader, 2):
            where = f"{csv_path} line {line_number}"
            if not row.get("file"):
                raise LayoutError(f"{where}: empty 'file'")
            path = base / row["file"]
            label = normalise_label(row["label"], where)
            video_id = f"{spec.name}:{Path(row['file']).with_suffix('').as_posix()}"
            group = (row.get("group") or "").strip() or video_id
            split = (row.get("split") or "").strip().lower() or None
            if split is not None and split not in {"train", "val", "test"}:
                raise LayoutError(f"{where}: split {split!r} must be train, val or test")
            problem = None if path.is_file() else f"listed in {csv_path.name} but missing on disk"
            items.append(
                MediaItem(
                    dataset=spec.name,
                    path=path,
                    label=label,
                    video_id=video_id,
                    method=(row.get("method") or "").strip() or ("original" if label == "real" else "fake"),
                    links=(f"group:{group}",),
                    official_split=split if spec.use_official_split else None,
                    problem=problem,
                )
            )
    if not items:
        raise LayoutError(f"{csv_path}: the list has no rows")
    return items


READERS: dict[str, Callable[[DatasetConfig], list[MediaItem]]] = {
    "ffpp": read_ffpp,
    "dfdc": read_dfdc,
    "celebdf": read_celebdf,
    "folder": read_folder,
    "csv": read_csv_list,
}


def read_dataset(spec: DatasetConfig) -> list[MediaItem]:
    items = READERS[spec.layout](spec)
    if spec.max_items is not None:
        items = items[: spec.max_items]
    return items


def read_datasets(specs: Iterable[DatasetConfig]) -> list[MediaItem]:
    items: list[MediaItem] = []
    for spec in specs:
        items.extend(read_dataset(spec))
    seen: dict[str, Path] = {}
    for item in items:
        if item.video_id in seen:
            raise LayoutError(
                f"two files map to video_id {item.video_id}: {seen[item.video_id]} and {item.path}"
            )
        seen[item.video_id] = item.path
    return items


# ---------------------------------------------------------------------------------------------
# a folder described for the platform


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
        notes = (
            [
                f"also holds {', '.join(compressions[1:])}: a prepare job reads one compression "
                f"(compression={compressions[0]} here)"
            ]
            if len(compressions) > 1
            else []
        )
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


def describe_raw(path: Path) -> dict | None:
    """A dataset folder in a layout `prepare` reads (FaceForensics++, Celeb-DF, DFDC, real/ + fake/
    folders, a CSV list): its items per split and label, and the dataset keys of a prepare job; None
    when it is in none of them."""
    found = _raw_layout(path)
    if found is None:
        return None
    layout, extra, notes = found
    from fakefinder.config import DatasetConfig
    from fakefinder.core.describe import READ_ERRORS, join_notes, split_counts

    description = {"layout": layout, "kinds": [], "prepare": {"layout": layout, "root": str(path), **extra}}
    try:
        items = read_dataset(DatasetConfig(name=_config_tag(path.name), layout=layout, root=path, **extra))
    except READ_ERRORS as exc:
        return {**description, "note": join_notes(notes + [str(exc)])}
    splits = split_counts((item.official_split or "unsplit", item.label) for item in items)
    problems = [item for item in items if item.problem]
    if problems:
        first = problems[0]
        notes.append(f"{len(problems)} file(s) will be skipped, e.g. {first.path.name}: {first.problem}")
    if "unsplit" in splits:
        notes.append("files without an official split are given train/val/test by the prepare job's ratios")
    notes.insert(0, f"raw {layout} data: run a prepare job (face crops and a manifest) before training")
    return {**description, "splits": splits, "note": join_notes(notes), "kinds": ["prepare"]}
