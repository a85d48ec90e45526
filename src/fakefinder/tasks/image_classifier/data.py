"""Class folders -> rows: `dataset/{train,val[,test]}/<class>/*.jpg` (any depth below the class
folder). Class names come from the train folders, sorted; every problem names its path: an empty
class folder, a class in val or test that train lacks, an unreadable image (listed, left out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fakefinder.core.errors import FakefinderError
from fakefinder.media.images import IMAGE_EXTENSIONS

SPLITS = ("train", "val", "test")


class ClassFolderError(FakefinderError, ValueError):
    """A class-folder dataset that cannot be trained on as it is."""


@dataclass
class ClassFolders:
    root: Path
    classes: list[str]
    rows: pd.DataFrame  # path (relative to root), label (class name), split, dataset
    failures: list[dict] = field(default_factory=list)  # path, reason


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _unreadable(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image: {exc}"
    return None


def read_class_folders(root: str | Path, check_images: bool = True) -> ClassFolders:
    root = Path(root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise ClassFolderError(
            f"classifier.data_dir={root}: expected {root}/train/<class>/ and {root}/val/<class>/ "
            "(and optionally test/), one folder per class"
        )
    found: dict[str, dict[str, list[Path]]] = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            continue
        classes = sorted(p for p in folder.iterdir() if p.is_dir())
        if not classes:
            raise ClassFolderError(f"{folder}: no class folders in it")
        found[split] = {}
        for class_dir in classes:
            images = _images(class_dir)
            if not images:
                raise ClassFolderError(
                    f"{class_dir}: class folder '{class_dir.name}' holds no images "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            found[split][class_dir.name] = images
    classes = sorted(found["train"])
    if len(classes) < 2:
        raise ClassFolderError(
            f"{root / 'train'}: an image classifier needs at least 2 class folders, found {classes}"
        )
    for split in ("val", "test"):
        extra = sorted(set(found.get(split, {})) - set(classes))
        if extra:
            raise ClassFolderError(
                f"{root / split / extra[0]}: class '{extra[0]}' is in {split} but not in train "
                f"({root / 'train'} has {classes})"
            )
    rows, failures = [], []
    for split, per_class in found.items():
        for name, images in per_class.items():
            for image in images:
                reason = _unreadable(image) if check_images else None
                if reason:
                    failures.append({"path": str(image), "split": split, "label": name, "reason": reason})
                    continue
                rows.append(
                    {
                        "path": image.relative_to(root).as_posix(),
                        "label": name,
                        "split": split,
                        "dataset": root.name or "data",
                    }
                )
    return ClassFolders(
        root, classes, pd.DataFrame(rows, columns=["path", "label", "split", "dataset"]), failures
    )


def folders_of(config) -> ClassFolders:
    """The class folders `classifier.data_dir` names, read (images checked when configured)."""
    from fakefinder.config import ConfigError

    if config.classifier.data_dir is None:
        raise ConfigError(
            "classifier.data_dir is required: a folder with train/<class>/, val/<class>/ (and test/)"
        )
    return read_class_folders(config.classifier.data_dir, config.classifier.check_images)


def dataset_settings(path: Path) -> dict:
    return {"classifier.data_dir": str(path)}


def describe(path: Path) -> dict | None:
    """{train,val[,test]}/<class>/ folders of images: images per split and class (not decoded)."""
    from fakefinder.core.describe import described, split_counts

    train = path / "train"
    if not train.is_dir() or not any(p.is_dir() for p in train.iterdir()):
        return None
    try:
        found = read_class_folders(path, check_images=False)
    except (ClassFolderError, OSError) as exc:
        return described("class_folders", _count_images(path), [str(exc)], usable=False)
    splits = split_counts(zip(found.rows.split, found.rows.label))
    return described("class_folders", splits, ["no test split (optional)" if "test" not in splits else ""])


def _count_images(path: Path) -> dict[str, dict[str, int]]:
    """Images per split and class folder, for a class-folder dataset the reader refused."""
    from fakefinder.core.describe import split_counts

    pairs = []
    for split in SPLITS:
        if not (path / split).is_dir():
            continue
        for folder in (p for p in (path / split).iterdir() if p.is_dir()):
            pairs += [
                (split, folder.name)
                for p in folder.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            ]
    return split_counts(pairs)
