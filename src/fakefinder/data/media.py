"""One way to get RGB frames out of any input file: an image is one frame, a video gives its
sampled frames (see `video.read_frames`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fakefinder.data.layouts import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: Path) -> np.ndarray:
    """RGB uint8, EXIF orientation applied; `ValueError` naming the problem for a bad file."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"unreadable image: {exc}") from exc


def read_media(path: Path, count: int, stride: int | None = None, seek: str = "auto") -> Iterator[tuple[int, np.ndarray]]:
    """`(frame_index, RGB array)` pairs: (0, image) for an image, sampled frames for a video."""
    if is_image(path):
        yield 0, read_image(path)
        return
    from fakefinder.data.video import read_frames

    yield from read_frames(path, count=count, stride=stride, seek=seek)
