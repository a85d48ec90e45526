"""The YOLO dataset layout read and checked before anything trains on it.

`data.yaml` names the splits (`train`, `val`, optional `test`: an image folder, a list of folders, or a
.txt list of image paths), `nc` and `names`. An image's label file is the image's path with its last
`images` folder replaced by `labels` and the suffix by `.txt`; each line is `class cx cy w h`,
normalised to [0, 1]. The check reports, with file and line: malformed lines, unknown class ids,
coordinates outside [0, 1]; and counts images without a label file (background) and label files
without an image. The checked dataset is then staged in the run folder (images linked, label files
copied, a data.yaml of plain keys), so the trainer never reads the user's folder for anything but
pixels: no label cache a dataset ships is loaded, no `download` script it names is run.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from fakefinder.config import Config, ConfigError
from fakefinder.core.errors import FakefinderError
from fakefinder.tasks.object_detector.config import IMAGE_EXTENSIONS

SPLITS = ("train", "val", "test")
KNOWN_KEYS = {"path", "train", "val", "test", "nc", "names", "download", "channels"}


class LabelError(FakefinderError, ValueError):
    """A YOLO dataset whose labels fail the check (each problem named with file and line)."""

    def __init__(self, message: str, report: dict) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class Problem:
    kind: str  # malformed | unknown_class | out_of_range | unreadable_image | orphan_label
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.file}{f':{self.line}' if self.line else ''}: {self.message}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "file": self.file, "line": self.line, "message": self.message}


@dataclass
class Sample:
    image: Path
    label: Path | None  # None: no label file (a background image)
    lines: list[str] = field(default_factory=list)  # the label file's box lines, as written
    staged: str = ""  # the image's path inside the staged split folder


@dataclass
class YoloDataset:
    yaml_file: Path
    root: Path
    names: list[str]
    splits: dict[str, list[Sample]]
    problems: list[Problem]
    notes: list[str]
    counts: dict

    def report(self) -> dict:
        kinds = Counter(p.kind for p in self.problems)
        return {
            "dataset": str(self.yaml_file),
            "classes": self.names,
            "splits": self.counts,
            "problems": {
                k: kinds.get(k, 0)
                for k in ("malformed", "unknown_class", "out_of_range", "unreadable_image", "orphan_label")
            },
            "listed": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }


def find_data_yaml(path: Path) -> Path:
    """`path` itself (a .yaml file) or the data.yaml / data.yml / dataset.yaml in the folder."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise ConfigError(f"object_detector.data.path: {path} does not exist")
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if (path / name).is_file():
            return path / name
    raise ConfigError(f"{path}: no data.yaml (a YOLO dataset names its splits, nc and names there)")


def _names(spec: dict, file: Path) -> list[str]:
    names, nc = spec.get("names"), spec.get("nc")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ConfigError(f"{file}: names: keys must be class ids 0..{len(names) - 1}") from None
        if keys != list(range(len(keys))):
            raise ConfigError(
                f"{file}: names: class ids must run 0..{len(keys) - 1} without gaps, found {keys}"
            )
        names = [str(names[k] if k in names else names[str(k)]) for k in keys]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    elif names is None and isinstance(nc, int) and nc > 0:
        names = [f"class_{i}" for i in range(nc)]
    else:
        raise ConfigError(f"{file}: names: a list of class names (or a mapping id -> name) is required")
    if nc is not None:
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 1:
            raise ConfigError(f"{file}: nc: {nc!r} is not a positive integer")
        if nc != len(names):
            raise ConfigError(f"{file}: nc is {nc} but names lists {len(names)} class(es)")
    if not names:
        raise ConfigError(f"{file}: names: no classes")
    if len(set(names)) != len(names):
        raise ConfigError(
            f"{file}: names: duplicate class names {sorted(n for n in set(names) if names.count(n) > 1)}"
        )
    return names


def label_path(image: Path) -> Path:
    """The YOLO rule: the last `images` folder of the path becomes `labels`, the suffix `.txt`."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _inside(path: Path, fence: Path | None, file: Path, what: str) -> None:
    if fence is not None and not Path(os.path.abspath(path)).resolve().is_relative_to(fence):
        raise ConfigError(f"{file}: {what} {path} lies outside the dataset folder {fence}")


def _split_sources(
    value, root: Path, file: Path, split: str, fence: Path | None = None
) -> list[tuple[Path, list[Path]]]:
    """(the folder image paths are relative to, the images) for each source a split names; with a
    `fence`, every path must lie inside it."""
    items = value if isinstance(value, list) else [value]
    sources = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{file}: {split}: {item!r} is not a folder or a .txt list of images")
        where = Path(item) if Path(item).is_absolute() else root / item
        _inside(where, fence, file, split)
        if where.is_dir():
            images = _images_in(where)
            for image in images:
                _inside(image, fence, file, split)
            sources.append((where, images))
        elif where.is_file() and where.suffix == ".txt":
            listed = []
            for number, line in enumerate(
                where.read_text(encoding="utf-8", errors="replace").splitlines(), 1
            ):
                line = line.strip()
                if not line:
                    continue
                image = Path(line) if Path(line).is_absolute() else (where.parent / line).resolve()
                if image.suffix.lower() not in IMAGE_EXTENSIONS:
                    raise ConfigError(f"{where}:{number}: {line!r} is not an image file")
                _inside(image, fence, where, f"line {number}:")
                listed.append(image)
            sources.append((root, listed))
        else:
            raise ConfigError(
                f"{file}: {split}: {where} is neither an image folder nor a .txt list of images"
            )
    return sources


def _check_lines(label: Path, shown: str, nc: int, problems: list[Problem]) -> tuple[list[str], bool]:
    """The label file's box lines, and whether every line passed."""
    good, clean = [], True
    try:
        text = label.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem("malformed", shown, None, f"cannot read the label file ({exc})"))
        return [], False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 5:
            problems.append(
                Problem(
                    "malformed",
                    shown,
                    number,
                    f"expected 5 values (class cx cy w h), found {len(fields)}: {line[:80]!r}",
                )
            )
            clean = False
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append(Problem("malformed", shown, number, f"not a number in {line[:80]!r}"))
            clean = False
            continue
        if not values[0].is_integer():
            problems.append(Problem("malformed", shown, number, f"class id {fields[0]!r} is not an integer"))
            clean = False
            continue
        cls = int(values[0])
        if not 0 <= cls < nc:
            problems.append(
                Problem(
                    "unknown_class",
                    shown,
                    number,
                    f"class id {cls} is not among the {nc} class(es) of data.yaml (0-{nc - 1})",
                )
            )
            clean = False
            continue
        outside = [
            f"{name}={v:g}" for name, v in zip(("cx", "cy", "w", "h"), values[1:]) if not 0.0 <= v <= 1.0
        ]
        if outside:
            problems.append(
                Problem("out_of_range", shown, number, f"coordinate(s) outside [0, 1]: {', '.join(outside)}")
            )
            clean = False
            continue
        if values[3] <= 0 or values[4] <= 0:
            problems.append(
                Problem("malformed", shown, number, f"a box of zero width or height: {line[:80]!r}")
            )
            clean = False
            continue
        good.append(" ".join(fields))
    return good, clean


def _readable(image: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as im:
            width, height = im.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"unreadable image ({type(exc).__name__}: {exc})"
    if min(width, height) < 10:
        return f"image of {width}x{height} px is too small (10 px at least)"
    return None


def _read_spec(file: Path) -> tuple[dict, list[str], Path, list[str]]:
    """A data.yaml read safely: the mapping, notes on what is not used, the dataset root, class names."""
    try:
        spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file}: not a readable YAML file ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{file}: a YOLO data.yaml is a mapping (train, val, nc, names)")
    notes = []
    if "download" in spec:
        notes.append(f"{file}: the download key is ignored (fakefinder never runs what a dataset file names)")
    unknown = sorted(set(map(str, spec)) - KNOWN_KEYS)
    if unknown:
        notes.append(f"{file}: keys {unknown} are not used")
    if spec.get("channels", 3) != 3:
        raise ConfigError(f"{file}: channels: only 3-channel (RGB) images are supported")
    base = spec.get("path")
    root = file.parent if not base else (Path(base) if Path(base).is_absolute() else file.parent / base)
    names = _names(spec, file)
    if "validation" in spec and "val" not in spec:
        spec["val"] = spec["validation"]
    return spec, notes, root, names


def _read_split(
    sources: list, root: Path, names: list[str], check_images: bool, problems: list[Problem]
) -> tuple[list[Sample], Counter, int, int]:
    """One split's samples with their boxes per class, background images and images left out; the
    problems found (bad lines, unreadable images, labels without an image) added to `problems`."""
    samples, per_class, background, left_out = [], Counter(), 0, 0
    for index, (base_folder, images) in enumerate(sources):
        matched = set()
        for image in images:
            label = label_path(image)
            reason = _readable(image) if check_images else None
            if reason:
                problems.append(Problem("unreadable_image", _shown(image, root), None, reason))
                left_out += 1
                continue
            try:
                rel = image.relative_to(base_folder)
            except ValueError:
                rel = Path(image.name)
            staged = str(Path(str(index)) / rel) if len(sources) > 1 else str(rel)
            if not label.is_file():
                samples.append(Sample(image, None, [], staged))
                background += 1
                continue
            matched.add(label.resolve())
            lines, clean = _check_lines(label, _shown(label, root), len(names), problems)
            if not clean:
                left_out += 1
                continue
            samples.append(Sample(image, label, lines, staged))
            per_class.update(int(line.split()[0]) for line in lines)
            background += not lines
        label_root = label_path(base_folder / "x.jpg").parent
        if label_root != base_folder and label_root.is_dir():
            for orphan in sorted(label_root.rglob("*.txt")):
                if orphan.resolve() not in matched and not orphan.name.startswith("."):
                    problems.append(
                        Problem(
                            "orphan_label",
                            _shown(orphan, root),
                            None,
                            "a label file without an image (not used)",
                        )
                    )
    return samples, per_class, background, left_out


def read_dataset(
    path: Path,
    bad_labels: str = "error",
    check_images: bool = True,
    splits: tuple[str, ...] = ("train", "val"),
    confine: bool = False,
) -> YoloDataset:
    """The dataset at `path`, checked. `splits` must be present (test joins when data.yaml names it).
    A bad line is a `LabelError` listing every problem with file and line (`bad_labels: error`), or the
    image it belongs to is left out (`skip`); unreadable images are always left out."""
    file = find_data_yaml(Path(path))
    spec, notes, root, names = _read_spec(file)
    wanted = [s for s in SPLITS if s in splits]
    missing = [s for s in splits if not spec.get(s)]
    if missing:
        raise ConfigError(
            f"{file}: {', '.join(missing)}: the split(s) must be named (an image folder or a .txt list)"
        )
    problems: list[Problem] = []
    out: dict[str, list[Sample]] = {}
    counts: dict = {}
    for split in wanted:
        sources = _split_sources(spec[split], root, file, split, file.parent.resolve() if confine else None)
        samples, per_class, background, left_out = _read_split(sources, root, names, check_images, problems)
        if not samples and split in splits:
            raise ConfigError(f"{file}: {split}: no usable image (the split holds {left_out} left out)")
        out[split] = samples
        counts[split] = {
            "images": len(samples),
            "background": background,
            "left_out": left_out,
            "boxes": sum(per_class.values()),
            "per_class": {names[k]: per_class.get(k, 0) for k in range(len(names))},
        }
    dataset = YoloDataset(file, root, names, out, problems, notes, counts)
    blocking = [p for p in problems if p.kind in ("malformed", "unknown_class", "out_of_range")]
    if blocking and bad_labels == "error":
        shown = "\n".join(f"  {p}" for p in blocking[:20])
        more = f"\n  ... and {len(blocking) - 20} more" if len(blocking) > 20 else ""
        raise LabelError(
            f"{file}: {len(blocking)} bad label line(s) (set object_detector.data.bad_labels=skip to train "
            f"without their images):\n{shown}{more}",
            dataset.report(),
        )
    return dataset


def _shown(path: Path, root: Path) -> str:
    """A path as messages show it: relative to the dataset root when it is inside."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def stage(dataset: YoloDataset, folder: Path) -> Path:
    """The checked dataset in `folder`: images/<split>/ linked to the originals, labels/<split>/ the
    checked lines, data.yaml with absolute paths. Rebuilt whole each time (no stale label cache)."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    for split, samples in dataset.splits.items():
        for sample in samples:
            image = folder / "images" / split / sample.staged
            image.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(sample.image.resolve(), image)
            if sample.label is not None:
                label = label_path(image)  # where Ultralytics looks for it
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text("".join(line + "\n" for line in sample.lines), encoding="utf-8")
    spec = {
        "path": str(folder.resolve()),
        **{s: f"images/{s}" for s in dataset.splits},
        "nc": len(dataset.names),
        "names": dict(enumerate(dataset.names)),
    }
    for required in ("train", "val"):  # Ultralytics wants both named, also to evaluate one other split
        spec.setdefault(required, f"images/{next(iter(dataset.splits))}")
    (folder / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return folder / "data.yaml"


def data_dict(staged_yaml: Path) -> dict:
    """What the Ultralytics trainer and validator read from a dataset, for a staged data.yaml."""
    spec = yaml.safe_load(Path(staged_yaml).read_text(encoding="utf-8"))
    root = Path(spec["path"])
    data = {
        "path": str(root),
        "yaml_file": str(staged_yaml),
        "nc": spec["nc"],
        "names": {int(k): v for k, v in spec["names"].items()},
        "channels": 3,
    }
    for split in SPLITS:
        if split in spec:
            data[split] = str(root / spec[split])
    return data


def dataset_settings(path: Path) -> dict:
    from fakefinder.tasks.object_detector.data import find_data_yaml

    return {"object_detector.data.path": str(find_data_yaml(path))}


def describe(path: Path) -> dict | None:
    """data.yaml with images/ and labels/: images, background images and boxes per split and class
    (labels checked as training checks them; images not decoded)."""
    from fakefinder.core.describe import READ_ERRORS, described

    if not any((path / name).is_file() for name in ("data.yaml", "data.yml", "dataset.yaml")):
        return None
    try:
        dataset = read_dataset(path, check_images=False, confine=True)
    except LabelError as exc:
        listed = [
            f"{p['file']}:{p['line']}: {p['message']}"
            for p in exc.report["listed"]
            if p["kind"] in ("malformed", "unknown_class", "out_of_range")
        ]
        splits = {s: dict(c["per_class"]) for s, c in exc.report["splits"].items()}
        return described(
            "yolo",
            splits,
            [
                f"{len(listed)} bad label line(s), e.g. {'; '.join(listed[:3])} (train "
                "with object_detector.data.bad_labels=skip to leave their images out)"
            ],
            False,
        )
    except READ_ERRORS as exc:
        return described("yolo", notes=[str(exc)], usable=False)
    notes = list(dataset.notes)
    orphans = sum(p.kind == "orphan_label" for p in dataset.problems)
    if orphans:
        notes.append(f"{orphans} label file(s) without an image")
    notes += [
        f"{s}: {c['images']} images ({c['background']} background), {c['boxes']} boxes"
        for s, c in dataset.counts.items()
    ]
    return described("yolo", {s: dict(c["per_class"]) for s, c in dataset.counts.items()}, notes)


def checked_dataset(config: Config, events, splits=("train", "val"), report_to: Path | None = None):
    """The dataset read and checked; the report written to `report_to` (label_report.json), each
    problem warned with file and line."""
    from fakefinder.core.files import atomic_write_json

    d = config.object_detector.data
    if d.path is None:
        raise ConfigError("object_detector.data.path is required: a YOLO dataset's data.yaml or its folder")
    try:
        dataset = read_dataset(d.path, d.bad_labels, d.check_images, splits, d.confine)
    except LabelError as exc:
        if report_to is not None:
            atomic_write_json(report_to, exc.report)
        raise
    report = dataset.report()
    if report_to is not None:
        atomic_write_json(report_to, report)
    for note in dataset.notes:
        events.warning(note, "train")
    by_kind: dict[str, list] = {}
    for problem in dataset.problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    for kind, found in by_kind.items():
        shown = "; ".join(str(p) for p in found[:10])
        events.warning(
            f"{len(found)} {kind.replace('_', ' ')}(s){' (left out)' if kind != 'orphan_label' else ''}: "
            f"{shown}{' ...' if len(found) > 10 else ''}",
            "train",
        )
    for split, c in report["splits"].items():
        events.log(
            f"{split}: {c['images']} images ({c['background']} background, {c['left_out']} left out), "
            f"{c['boxes']} boxes: " + ", ".join(f"{k} {v}" for k, v in c["per_class"].items()),
            "train",
        )
    return dataset
