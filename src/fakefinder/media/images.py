"""One way to get RGB frames out of any input file: an image is one frame, a video gives its
sampled frames (see `video.read_frames`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
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
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        raise ValueError(f"unreadable image: {exc}") from exc


def load_rgb(path: Path, size: int) -> np.ndarray:
    """An image file as RGB pixels at `size` x `size` (EXIF orientation applied, as predict's
    decoder does); an unreadable file is an error that names it."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: unreadable image ({exc})") from None
    if image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.array(image)  # a writable copy


def read_media(
    path: Path, count: int, stride: int | None = None, seek: str = "auto"
) -> Iterator[tuple[int, np.ndarray]]:
    """`(frame_index, RGB array)` pairs: (0, image) for an image, sampled frames for a video."""
    if is_image(path):
        yield 0, read_image(path)
        return
    from fakefinder.media.video import read_frames

    yield from read_frames(path, count=count, stride=stride, seek=seek)


CROP_FORMATS = {"jpg": (".jpg", ".jpeg"), "png": (".png",)}


def encode_image(pixels: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """RGB pixels as the bytes of a JPEG (at `quality`) or PNG file: how crops are stored."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    if fmt == "jpg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    elif fmt == "png":
        Image.fromarray(pixels).save(buffer, format="PNG")
    else:
        raise ValueError(f"unknown crop format {fmt!r} (jpg or png)")
    return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
    """The RGB pixels of an encoded image, decoded as the training loader decodes crop files."""
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(data)) as image:
        return np.array(image.convert("RGB"))
