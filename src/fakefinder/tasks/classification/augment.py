"""Training augmentations (albumentations) and self-blended pseudo-fakes (SBI).

Every random choice is drawn from a generator seeded per sample and epoch, so a run is
reproducible whatever the number of loader workers, and a resumed run sees the same images.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from fakefinder.config import AugmentConfig


def build_train_transform(config: AugmentConfig):
    """The albumentations pipeline for training crops (None when disabled)."""
    if not config.enabled:
        return None
    import albumentations as A
    import cv2

    steps = [
        A.HorizontalFlip(p=config.hflip),
        A.Affine(
            rotate=(-config.rotate_limit, config.rotate_limit),
            border_mode=cv2.BORDER_REFLECT_101,
            p=config.rotate,
        ),
        A.ImageCompression(quality_range=tuple(config.jpeg_quality), p=config.jpeg),
        A.GaussianBlur(blur_limit=(3, 5), p=config.blur),
        A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=config.color_jitter),
        A.Downscale(scale_range=(0.5, 0.9), p=config.downscale),
        A.CoarseDropout(
            num_holes_range=(1, 2),
            hole_height_range=(0.1, 0.3),
            hole_width_range=(0.1, 0.3),
            fill=0,
            p=config.cutout,
        ),
    ]
    return A.Compose([s for s in steps if s.p > 0], seed=0)


def face_mask(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A soft, irregular face-shaped mask (float32 in [0, 1]) for a centred face crop."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy = height * rng.uniform(0.45, 0.58)
    cx = width * rng.uniform(0.45, 0.55)
    ry = height * rng.uniform(0.26, 0.36)
    rx = width * rng.uniform(0.2, 0.3)
    # a wobbly ellipse: the radius varies with the angle (a few low-frequency harmonics)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + sum(
        rng.uniform(-0.08, 0.08) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5)
    )
    inside = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) <= wobble**2
    mask = Image.fromarray((inside * 255).astype(np.uint8))
    mask = mask.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.02, 0.08) * min(height, width))))
    return np.asarray(mask, dtype=np.float32) / 255.0


def _jitter_source(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The 'donor' face: the same crop with a small change of colour, sharpness, scale and place."""
    out = image.astype(np.float32)
    out = out * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-12, 12, size=3)
    pil = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if rng.random() < 0.5:
        pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.2))))
    else:
        pil = pil.filter(ImageFilter.UnsharpMask(radius=2, percent=int(rng.integers(50, 150))))
    height, width = image.shape[:2]
    scale = rng.uniform(0.94, 1.06)
    resized = pil.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    canvas = Image.fromarray(image)
    dx = int(rng.integers(-3, 4) + (width - resized.width) / 2)
    dy = int(rng.integers(-3, 4) + (height - resized.height) / 2)
    canvas.paste(resized, (dx, dy))
    return np.asarray(canvas, dtype=np.float32)


def self_blend(image: np.ndarray, rng: np.random.Generator, return_mask: bool = False):
    """Blend a slightly transformed copy of a real face into itself through a soft face mask:
    the blending boundary and statistic mismatch of a face swap, without any identity change.
    With `return_mask`, also the blend mask (float32 HxW in [0, 1]): where the image changed."""
    donor = _jitter_source(image, rng)
    mask = face_mask(image.shape[:2], rng) * rng.choice([0.5, 0.75, 1.0, 1.0])
    blended = donor * mask[..., None] + image.astype(np.float32) * (1 - mask[..., None])
    blended = np.clip(blended, 0, 255).astype(np.uint8)
    return (blended, mask.astype(np.float32)) if return_mask else blended
