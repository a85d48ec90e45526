"""Facial regions of a crop: from MediaPipe's face mesh on a real face (scikit-image's astronaut), from
the fixed layout where no face is found; a mask painted on one part of the face comes out first."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from fakefinder.faces.regions import REGIONS, format_regions, region_map, region_shares


@pytest.fixture(scope="module")
def face():
    crop = np.ascontiguousarray(data.astronaut()[20:230, 140:320])  # the face and some hair and suit
    return crop, region_map(crop)


def _disc(shape, x: int, y: int, radius: int = 7) -> np.ndarray:
    mask = np.zeros(shape[:2], np.float32)
    cv2.circle(mask, (x, y), radius, 1.0, -1)
    return mask


@pytest.mark.parametrize(
    "where, x, y",  # pixel positions read off the photo: mid-forehead, the smile, her right cheek
    [("forehead", 85, 60), ("mouth", 85, 121), ("cheeks", 52, 107)],
)
def test_a_mask_on_a_part_of_a_real_face_names_that_part_first(face, where, x, y):
    crop, regions = face
    assert regions.source == "face_mesh" and regions.labels.shape == crop.shape[:2]
    shares = region_shares(_disc(crop.shape, x, y), regions.labels)
    assert next(iter(shares)) == where, shares
    assert abs(sum(shares.values()) - 1) < 1e-6


def test_the_face_mesh_finds_every_region_and_leaves_the_background_outside(face):
    crop, regions = face
    present = {REGIONS[i] for i in np.unique(regions.labels)}
    assert present == set(REGIONS)
    assert regions.labels[5, 5] == REGIONS.index("background")  # a corner: hair, not face
    assert regions.labels[200, 90] == REGIONS.index("background")  # the suit below the chin


@pytest.mark.parametrize("where, u, v", [("forehead", 0.5, 0.2), ("mouth", 0.5, 0.72), ("cheeks", 0.3, 0.6)])
def test_a_crop_without_a_face_falls_back_to_the_aligned_layout(where, u, v):
    blank = np.random.default_rng(0).integers(100, 140, (96, 80, 3)).astype(np.uint8)
    regions = region_map(blank)
    assert regions.source == "canonical"
    shares = region_shares(_disc(blank.shape, int(u * 80), int(v * 96), 3), regions.labels)
    assert next(iter(shares)) == where, shares


def test_shares_read_as_named_fractions(face):
    _, regions = face
    labels = regions.labels
    heat = np.zeros(labels.shape, np.float32)
    heat[labels == REGIONS.index("mouth")] = 3.0
    heat[labels == REGIONS.index("nose")] = 1.0
    small = cv2.resize(heat, (labels.shape[1] // 2, labels.shape[0] // 2))  # any size: resized to the crop
    shares = region_shares(small, labels)
    assert list(shares)[:2] == ["mouth", "nose"]
    text = format_regions(shares, top=2)
    assert text.startswith("mouth:0.") and ";nose:0." in text
    assert region_shares(np.zeros_like(heat), labels) == {} and format_regions({}) == ""
