"""The captioned image folder: every image paired with its caption (a `metadata.jsonl` line or a
same-name `.txt`), every problem named with its file first, then the images as training tensors
whose crops and flips depend only on (seed, epoch, image), so a resumed run sees what an unbroken
one would."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fakefinder.config import ConfigError
from fakefinder.core.errors import FakefinderError
from fakefinder.media.images import IMAGE_EXTENSIONS, read_image
from fakefinder.tasks.text_to_image_lora.config import DiffusionDataConfig

METADATA = "metadata.jsonl"
NOT_CAPTIONS = ("README", "LICENSE", "LICENCE")  # .txt files beside images that are no captions


class CaptionError(FakefinderError, ValueError):
    """A captioned folder that fails the check (each problem named with its file)."""

    def __init__(self, message: str, problems: list) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True)
class Captioned:
    image: Path
    caption: str
    source: str  # where the caption came from: a metadata line, a .txt file, or the default


@dataclass
class Problem:
    kind: str  # caption_without_image | image_without_caption | unreadable_image | bad_metadata | bad_caption
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class FolderReport:
    folder: str
    images: int = 0
    captions: dict = field(default_factory=dict)  # source kind -> count
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "folder": self.folder,
            "images": self.images,
            "captions": self.captions,
            "problems": [{"kind": p.kind, "file": p.file, "message": p.message} for p in self.problems],
        }


def _lexical(path: Path) -> Path:
    """The absolute path with `..` folded, links not followed (a linked image stays in its folder)."""
    return Path(os.path.normpath(Path(path).absolute()))


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _metadata_captions(file: Path, column: str, problems: list[Problem]) -> dict[Path, tuple[str, str]]:
    """image path -> (caption, 'metadata.jsonl:line') of one metadata file; its bad lines and the
    lines that name no existing image become problems."""
    found: dict[Path, tuple[str, str]] = {}
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(Problem("bad_metadata", str(file), f"cannot be read as UTF-8 text ({exc})"))
        return found
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem("bad_metadata", where, f"not a JSON object ({exc.msg})"))
            continue
        if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) or not row["file_name"]:
            problems.append(
                Problem("bad_metadata", where, 'needs a "file_name" (the image, relative to this folder)')
            )
            continue
        caption = row.get(column)
        if not isinstance(caption, str):
            problems.append(
                Problem(
                    "bad_metadata",
                    where,
                    f'needs a text "{column}" (the caption; diffusion.data.caption_column names the field)',
                )
            )
            continue
        image = _lexical(file.parent / row["file_name"])
        if _lexical(file.parent) not in image.parents:
            problems.append(
                Problem("bad_metadata", where, f"file_name {row['file_name']!r} points outside {file.parent}")
            )
            continue
        if not image.is_file():
            problems.append(
                Problem(
                    "caption_without_image", where, f"a caption for {row['file_name']}, which does not exist"
                )
            )
            continue
        if image.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.append(
                Problem(
                    "bad_metadata",
                    where,
                    f"{row['file_name']} is not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                )
            )
            continue
        if image in found:
            problems.append(
                Problem(
                    "bad_metadata",
                    where,
                    f"a second caption for {row['file_name']} (first at {found[image][1]})",
                )
            )
            continue
        found[image] = (caption, where)
    return found


def _metadata_of(
    folder: Path, files: list[Path], cfg: DiffusionDataConfig, problems: list[Problem]
) -> tuple[dict[Path, tuple[str, str]], set[Path]]:
    """Captions from every metadata.jsonl (image -> caption, where) and the folders that hold one."""
    metadata: dict[Path, tuple[str, str]] = {}
    metadata_folders = set()
    if cfg.captions not in ("auto", "metadata"):
        return metadata, metadata_folders
    for file in (p for p in files if p.name == METADATA):
        metadata_folders.add(_lexical(file.parent))
        for image, found in _metadata_captions(file, cfg.caption_column, problems).items():
            if image in metadata:
                problems.append(
                    Problem(
                        "bad_metadata",
                        found[1],
                        f"a second caption for {image.name} (first at {metadata[image][1]})",
                    )
                )
                continue
            metadata[image] = found
    if cfg.captions == "metadata" and not metadata_folders:
        raise CaptionError(f"{folder}: holds no {METADATA} (diffusion.data.captions is 'metadata')", [])
    return metadata, metadata_folders


def _txt_captions(
    files: list[Path],
    images: list[Path],
    cfg: DiffusionDataConfig,
    metadata_folders: set[Path],
    problems: list[Problem],
) -> dict[Path, str | None]:
    """Captions from .txt files beside their images (None: listed as unreadable)."""
    by_stem: dict[tuple, Path] = {}
    shared: dict[tuple, list[Path]] = {}
    for image in images:
        key = (image.parent, image.stem)
        if key in by_stem:
            shared.setdefault(key, [by_stem[key]]).append(image)
        by_stem[key] = image
    texts = {}
    if cfg.captions not in ("auto", "txt"):
        return texts
    for file in (p for p in files if p.suffix.lower() == ".txt"):
        if cfg.captions == "auto" and _lexical(file.parent) in metadata_folders:
            continue  # a folder with metadata.jsonl takes its captions from there
        if file.stem.upper().startswith(NOT_CAPTIONS) and (file.parent, file.stem) not in by_stem:
            continue  # a README or licence beside the images
        if (file.parent, file.stem) in shared:
            names = ", ".join(p.name for p in shared[(file.parent, file.stem)])
            problems.append(
                Problem(
                    "bad_caption",
                    str(file),
                    f"one caption for several images ({names}); give each image a name of its own",
                )
            )
            continue
        image = by_stem.get((file.parent, file.stem))
        if image is None:
            problems.append(
                Problem(
                    "caption_without_image",
                    str(file),
                    "a caption with no image of the same "
                    f"name ({file.stem} + {'/'.join(sorted(IMAGE_EXTENSIONS))})",
                )
            )
            continue
        try:
            texts[image] = " ".join(file.read_text(encoding="utf-8-sig").split())
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem("bad_caption", str(file), f"cannot be read as UTF-8 text ({exc})"))
            texts[image] = None
    return texts


def read_folder(
    folder: Path, cfg: DiffusionDataConfig, check_images: bool = True
) -> tuple[list[Captioned], FolderReport]:
    """The captioned images of `folder` (sorted by path) and what reading it found. Problems stop
    with `CaptionError` naming each file, unless `bad_files: skip` (then they are left out, listed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaptionError(f"{folder}: not a folder of captioned images", [])
    report = FolderReport(str(folder))
    problems = report.problems
    files = sorted(p for p in folder.rglob("*") if p.is_file() and _visible(p, folder))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    metadata, metadata_folders = _metadata_of(folder, files, cfg, problems)
    texts = _txt_captions(files, images, cfg, metadata_folders, problems)
    found = []
    for image in images:
        resolved = _lexical(image)
        if resolved in metadata:
            caption, source = metadata[resolved][0], "metadata"
        elif image in texts:
            if texts[image] is None:
                continue  # its unreadable caption is listed already
            caption, source = texts[image], "txt"
        elif cfg.require_captions:
            where = (
                f"no line in {resolved.parent / METADATA}"
                if resolved.parent in metadata_folders
                else f"no {image.stem}.txt beside it"
            )
            problems.append(
                Problem(
                    "image_without_caption",
                    str(image),
                    f"an image without a caption ({where}); "
                    "set diffusion.data.require_captions: false to train it with default_caption",
                )
            )
            continue
        else:
            caption, source = cfg.default_caption, "default"
        if cfg.confine and folder.resolve() not in image.resolve().parents:
            problems.append(
                Problem("outside_folder", str(image), f"links to {image.resolve()}, outside {folder}")
            )
            continue
        if check_images:
            try:
                read_image(image)
            except ValueError as exc:
                problems.append(Problem("unreadable_image", str(image), str(exc)))
                continue
        found.append(Captioned(image, caption, source))
        report.captions[source] = report.captions.get(source, 0) + 1
    report.images = len(found)
    if problems and cfg.bad_files == "error":
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CaptionError(
            f"{folder}: {len(problems)} problem(s) with its images and captions (fix them, or set "
            f"diffusion.data.bad_files: skip to leave them out):\n  {shown}{more}",
            problems,
        )
    if not found:
        raise CaptionError(
            f"{folder}: no captioned image to train on"
            + (f" ({len(problems)} left out)" if problems else ""),
            problems,
        )
    return found, report


def split_off(items: list[Captioned], ratio: float, seed: int) -> tuple[list[Captioned], list[Captioned]]:
    """(kept, held out): `ratio` of the images held out, chosen with `seed` (none when that rounds to 0)."""
    count = int(round(len(items) * ratio))
    if count == 0 or count >= len(items):
        return list(items), []
    held = set(random.Random(seed).sample(range(len(items)), count))
    return [x for i, x in enumerate(items) if i not in held], [x for i, x in enumerate(items) if i in held]


def image_tensor(
    path: Path, resolution: int, rng: random.Random | None, flip: bool, center: bool
) -> torch.Tensor:
    """CHW in [-1, 1]: the shorter side resized to `resolution`, a square crop (centre, or drawn
    from `rng`), flipped when `rng` says so."""
    from PIL import Image

    image = Image.fromarray(read_image(path))
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.BICUBIC)
    if center or rng is None:
        left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    else:
        left, top = rng.randint(0, size[0] - resolution), rng.randint(0, size[1] - resolution)
    image = image.crop((left, top, left + resolution, top + resolution))
    if flip and rng is not None and rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class CaptionedImages(torch.utils.data.Dataset):
    """Items `(epoch, index)` -> {pixels, caption}: the augmentation of an image at an epoch is
    drawn from (seed, epoch, index) alone (any worker, any resume gives the same)."""

    def __init__(
        self, items: list[Captioned], cfg: DiffusionDataConfig, seed: int, train: bool = True
    ) -> None:
        self.items, self.cfg, self.seed, self.train = items, cfg, seed, train

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        item = self.items[index]
        rng = random.Random(f"{self.seed}:{epoch}:{index}") if self.train else None
        pixels = image_tensor(
            item.image, self.cfg.resolution, rng, self.cfg.random_flip, self.cfg.center_crop
        )
        caption = item.caption
        if rng is not None and self.cfg.caption_dropout and rng.random() < self.cfg.caption_dropout:
            caption = ""
        return {"pixels": pixels, "caption": caption}


def collate(rows: list[dict]) -> dict:
    return {"pixels": torch.stack([r["pixels"] for r in rows]), "captions": [r["caption"] for r in rows]}


def epoch_batches(count: int, batch_size: int, seed: int, epoch: int) -> list[list[tuple[int, int]]]:
    """The batches of one epoch: a permutation drawn from (seed, epoch), cut into `batch_size` pieces
    (the last may be smaller)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [[(epoch, i) for i in order[s : s + batch_size]] for s in range(0, count, batch_size)]


def read_prompts(path: Path) -> list[dict]:
    """Prompts for generation: a .txt file (one per line) or .jsonl lines {"prompt", "negative_prompt"?,
    "seed"?, "id"?}; errors name the file and line."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaptionError(f"{path}: cannot be read as UTF-8 text ({exc})", []) from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        if path.suffix.lower() == ".jsonl":
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CaptionError(f"{path}:{number}: not a JSON object ({exc.msg})", []) from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise CaptionError(f'{path}:{number}: needs a text "prompt"', [])
            seed = row.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                raise CaptionError(f'{path}:{number}: "seed" must be a whole number', [])
            negative = row.get("negative_prompt")
            if negative is not None and not isinstance(negative, str):
                raise CaptionError(f'{path}:{number}: "negative_prompt" must be text', [])
            rows.append(
                {
                    "id": str(row.get("id", where)),
                    "prompt": row["prompt"],
                    "negative_prompt": negative,
                    "seed": seed,
                }
            )
        else:
            rows.append({"id": where, "prompt": line.strip(), "negative_prompt": None, "seed": None})
    return rows


def dataset_settings(path: Path) -> dict:
    """A folder of captioned images (metadata.jsonl or same-name .txt captions)."""
    from fakefinder.media.images import IMAGE_EXTENSIONS

    if not path.is_dir():
        raise ConfigError(f"{path}: a text-to-image LoRA trains on a folder of captioned images")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*")):
        raise ConfigError(f"{path} holds no image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return {"diffusion.data.path": str(path)}


def describe(path: Path) -> dict | None:
    """Images with captions (metadata.jsonl, or a same-name .txt beside each image): captions checked as
    training checks them; images are not decoded."""
    from fakefinder.core.describe import described
    from fakefinder.media.images import IMAGE_EXTENSIONS
    from fakefinder.tasks.text_to_image_lora.config import DiffusionDataConfig

    if not any(path.rglob("metadata.jsonl")):
        images = {(p.parent, p.stem) for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
        if not images or not any((p.parent, p.stem) in images for p in path.rglob("*.txt")):
            return None
    try:
        items, report = read_folder(path, DiffusionDataConfig(), check_images=False)
    except CaptionError as exc:
        shown = "; ".join(str(p) for p in exc.problems[:3]) or str(exc)
        return described(
            "captioned_images",
            notes=[
                f"{len(exc.problems)} problem(s), e.g. {shown} (train with "
                "diffusion.data.bad_files=skip to leave them out)"
            ],
            usable=False,
        )
    sources = ", ".join(f"{n} from {k}" for k, n in sorted(report.captions.items()))
    return described(
        "captioned_images",
        {"train": {"captioned": len(items)}},
        [f"{len(items)} captioned images ({sources})"],
    )
