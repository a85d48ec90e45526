"""What can be measured about one face crop, as evidence an explanation may state: which facial
regions a true manipulation mask changed and by how much, what its edge looks like (a seam, a
colour shift, a texture change across it), and what any face shows (where the light comes from,
how sharp it is, which way it turns).

Every figure is computed from the crop (and its mask) alone, with fixed cut-offs stated here, so two
crops get the same words exactly when their measurements fall on the same side of the same cuts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from fakefinder.faces.regions import CODE, REGIONS

CHANGED = 0.5  # a region counts as changed when at least half of its pixels lie in the mask
PARTLY = 0.25  # ... and as partly changed from a quarter
MIN_REGION = 0.002  # a region smaller than this share of the crop is too small to judge
FACE_REGIONS = tuple(r for r in REGIONS if r != "background")

# edge cues (measured in bands `EDGE_BAND` of the crop's side wide on each side of the mask's edge)
EDGE_BAND = 0.03
SEAM = 1.1  # gradient on the edge / gradient in the bands at or above this: a visible seam
BLENDED = 0.95  # ... at or below this: a smooth blend
COLOUR_SLIGHT, COLOUR_CLEAR = 2.5, 5.0  # CIE76 colour difference across the edge
SMOOTHER, SHARPER = 0.8, 1.4  # fine-detail energy inside / outside

# scene cues
LIGHT_SIDE = 1.12  # mean brightness of one half of the face over the other's
DIM, BRIGHT = 75.0, 115.0  # mean gray level (0-255) of the face
SOFT, SHARP = 25.0, 80.0  # variance of the face's Laplacian (224-px crop scale)
TURN = 0.04  # the nose's offset from the face's centre, in face widths


@dataclass
class Evidence:
    """The measured evidence of one crop (`measure`); `changed`/`partly` are empty without a mask."""

    regions_from: str  # face_mesh | canonical
    scene: dict = field(default_factory=dict)  # light, sharpness, pose: words
    coverage: dict = field(default_factory=dict)  # region -> share of its pixels in the mask
    face_changed: float | None = None  # share of the face's pixels in the mask
    edge: dict = field(default_factory=dict)  # seam, colour, texture: words; plus the figures

    @property
    def changed(self) -> list[str]:
        return [r for r in FACE_REGIONS if self.coverage.get(r, 0.0) >= CHANGED]

    @property
    def partly(self) -> list[str]:
        return [r for r in FACE_REGIONS if PARTLY <= self.coverage.get(r, 0.0) < CHANGED]

    def as_dict(self) -> dict:
        return {
            "regions_from": self.regions_from,
            "scene": self.scene,
            "coverage": {k: round(v, 3) for k, v in self.coverage.items()},
            "face_changed": None if self.face_changed is None else round(self.face_changed, 3),
            "edge": self.edge,
            "changed": self.changed,
            "partly": self.partly,
        }


def coverage(mask: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """For each facial region at least `MIN_REGION` of the crop large: the share of its pixels the
    (boolean) mask covers."""
    mask = np.asarray(mask, bool)
    if mask.shape != labels.shape:
        mask = cv2.resize(mask.astype(np.uint8), labels.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    counts = np.bincount(labels.ravel(), minlength=len(REGIONS))
    inside = np.bincount(labels.ravel(), weights=mask.ravel().astype(np.float64), minlength=len(REGIONS))
    return {
        name: float(inside[code] / counts[code])
        for name, code in CODE.items()
        if counts[code] >= MIN_REGION * labels.size
    }


def _grade(value: float, cuts: tuple[float, float], words: tuple[str, str, str]) -> str:
    """The word for `value`: the first below the lower cut, the last from the upper cut on."""
    return words[sum(value >= cut for cut in cuts)]


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3].astype(np.uint8)), cv2.COLOR_RGB2GRAY)


def edge_cues(image: np.ndarray, mask: np.ndarray) -> dict:
    """The mask's edge on the image: `seam` (gradient on the edge against the bands beside it),
    `colour` (CIE76 difference of the mean colours just inside and just outside) and `texture`
    (fine-detail energy in the band inside against the band outside), each as a figure and in
    words; {} when the mask leaves no band on one side."""
    mask = np.asarray(mask, np.uint8)
    side = min(mask.shape)
    width = max(2, round(EDGE_BAND * side))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    inner_core = cv2.erode(mask, kernel)
    inner = (mask > 0) & (inner_core == 0)
    outer = (cv2.dilate(mask, kernel) > 0) & (mask == 0)
    if inner.sum() < 20 or outer.sum() < 20:
        return {}
    thin = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    edge = (cv2.dilate(mask, thin) > 0) & (cv2.erode(mask, thin) == 0)
    gray = _gray(image).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    beside = float(gradient[(inner | outer) & ~edge].mean()) + 1e-6
    seam = float(gradient[edge].mean()) / beside
    lab = cv2.cvtColor(np.ascontiguousarray(image[..., :3].astype(np.uint8)), cv2.COLOR_RGB2LAB).astype(
        np.float32
    )
    lab[..., 0] *= 100.0 / 255.0
    colour = float(np.linalg.norm(lab[inner].mean(axis=0) - lab[outer].mean(axis=0)))
    detail = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
    texture = float(detail[inner].mean() / (detail[outer].mean() + 1e-6))
    return {
        "seam": _grade(seam, (BLENDED, SEAM), ("smooth blend", "faint edge", "visible seam")),
        "colour": _grade(
            colour,
            (COLOUR_SLIGHT, COLOUR_CLEAR),
            ("matching colour", "slight colour shift", "clear colour shift"),
        ),
        "texture": _grade(
            texture, (SMOOTHER, SHARPER), ("smoother inside", "matching texture", "sharper inside")
        ),
        "seam_ratio": round(seam, 3),
        "colour_difference": round(colour, 2),
        "texture_ratio": round(texture, 3),
    }


def scene_cues(image: np.ndarray, labels: np.ndarray) -> dict:
    """What any face crop shows: `light` (which half of the face is brighter), `exposure`, `sharpness` and
    `pose` (the nose's offset from the face's centre), in words, with the figures."""
    face = labels != CODE["background"]
    if face.sum() < 50:
        face = np.ones_like(face)
    gray = _gray(image).astype(np.float32)
    ys, xs = np.nonzero(face)
    middle = (xs.min() + xs.max()) / 2
    columns = np.arange(face.shape[1])[None, :]
    left = float(gray[face & (columns < middle)].mean()) + 1e-6
    right = float(gray[face & (columns >= middle)].mean()) + 1e-6
    ratio = left / right
    level = float(gray[face].mean())
    scale = 224.0 / max(face.shape)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale != 1 else gray
    small_face = cv2.resize(face.astype(np.uint8), small.shape[::-1], interpolation=cv2.INTER_NEAREST) > 0
    variance = float(cv2.Laplacian(small, cv2.CV_32F)[small_face].var())
    nose = labels == CODE["nose"]
    offset = (
        (float(np.nonzero(nose)[1].mean()) - middle) / max(1.0, xs.max() - xs.min()) if nose.any() else 0.0
    )
    return {
        "light": _grade(ratio, (1 / LIGHT_SIDE, LIGHT_SIDE), ("from the right", "even", "from the left")),
        "exposure": _grade(level, (DIM, BRIGHT), ("dim", "moderate", "bright")),
        "sharpness": _grade(variance, (SOFT, SHARP), ("soft", "moderately sharp", "sharp")),
        "pose": _grade(
            offset, (-TURN, TURN), ("turned to the left", "facing the camera", "turned to the right")
        ),
        "light_ratio": round(ratio, 3),
        "gray_level": round(level, 1),
        "laplacian_variance": round(variance, 1),
        "nose_offset": round(offset, 3),
    }


def measure(image: np.ndarray, mask: np.ndarray | None = None, labels=None) -> Evidence:
    """The evidence of an RGB crop, with its true mask (boolean, the crop's size) when it has one;
    `labels`: its region map (`fakefinder.faces.regions.region_map`) when already drawn."""
    from fakefinder.faces.regions import region_map

    regions = labels if labels is not None else region_map(image)
    evidence = Evidence(regions.source, scene_cues(image, regions.labels))
    if mask is not None:
        mask = np.asarray(mask, bool)
        evidence.coverage = coverage(mask, regions.labels)
        face = regions.labels != CODE["background"]
        evidence.face_changed = float(mask[face].mean()) if face.any() else float(mask.mean())
        evidence.edge = edge_cues(image, mask)
    return evidence
