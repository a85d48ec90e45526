"""Image corruptions for robustness tables: JPEG at several qualities, blur, downscale, noise.

Each is deterministic for a given image (noise is seeded from the image content), so two
evaluations of one checkpoint agree.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        return np.array(Image.open(buffer).convert("RGB"))

    return apply


def blur(radius: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: np.array(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def downscale(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        small = Image.fromarray(image).resize(
            (max(1, int(width * factor)), max(1, int(height * factor))), Image.BILINEAR
        )
        return np.array(small.resize((width, height), Image.BILINEAR))

    return apply


def noise(sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(image: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(int(image[::7, ::7].sum()) % 2**32)
        return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)

    return apply


PERTURBATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg90": jpeg(90),
    "jpeg70": jpeg(70),
    "jpeg50": jpeg(50),
    "blur": blur(1.5),
    "downscale0.5": downscale(0.5),
    "noise": noise(8.0),
}
