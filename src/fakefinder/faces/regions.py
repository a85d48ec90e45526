"""Named facial regions of a face crop, and the share of a heatmap or mask that falls in each.

`region_map(crop)` labels every pixel of an RGB crop with one of `REGIONS`. Where MediaPipe's face
mesh (its model ships inside the `mediapipe` wheel) finds the face, the regions follow its 468
landmarks; where no face is found (BlazeFace, short range, decides), a fixed layout for aligned,
centred crops stands in, and the answer says so (`source`). `region_shares` and `format_regions` turn a
map into `mouth:0.41;chin_jaw:0.22;nose:0.15`."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

REGIONS = ("forehead", "brows", "eyes", "nose", "cheeks", "mouth", "chin_jaw", "boundary", "background")
CODE = {name: code for code, name in enumerate(REGIONS)}

_lock = threading.Lock()
_models: dict = {}


@dataclass
class RegionMap:
    labels: np.ndarray  # (H, W) uint8: an index into REGIONS per pixel
    source: str  # "face_mesh", or "canonical" where no face was found


def _landmark_sets() -> dict[str, list[int]]:
    from mediapipe.python.solutions import face_mesh_connections as mesh

    def points(*edges) -> list[int]:
        return sorted({i for group in edges for edge in group for i in edge})

    return {
        "oval": points(mesh.FACEMESH_FACE_OVAL),
        "brows": (points(mesh.FACEMESH_LEFT_EYEBROW), points(mesh.FACEMESH_RIGHT_EYEBROW)),
        "eyes": (points(mesh.FACEMESH_LEFT_EYE), points(mesh.FACEMESH_RIGHT_EYE)),
        "nose": points(mesh.FACEMESH_NOSE),
        "mouth": points(mesh.FACEMESH_LIPS),
        "oval_path": _oval_path(mesh.FACEMESH_FACE_OVAL),
    }


def _oval_path(edges) -> list[int]:
    """The face oval's landmarks in order around the face (its edges form one closed loop)."""
    following: dict[int, list[int]] = {}
    for a, b in edges:
        following.setdefault(a, []).append(b)
        following.setdefault(b, []).append(a)
    start = min(following)
    path, previous = [start], None
    while True:
        options = [n for n in following[path[-1]] if n != previous]
        previous, nxt = path[-1], options[0]
        if nxt == start:
            return path
        path.append(nxt)


def _models_once():
    """BlazeFace (is there a face?) and the face mesh, built once per process."""
    with _lock:
        if not _models:
            from fakefinder.faces.detectors import _protobuf_compat, create_detector

            _protobuf_compat()
            from mediapipe.python.solutions import face_mesh

            _models["finder"] = create_detector("mediapipe_short", min_score=0.5, min_face_px=8)
            # thresholds left at the graph's own (setting them trips MediaPipe on protobuf >= 5):
            # BlazeFace above decides whether there is a face at all
            _models["mesh"] = face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=1,
                refine_landmarks=False,
                min_detection_confidence=None,
                min_tracking_confidence=None,
            )
            _models["sets"] = _landmark_sets()
        return _models


def face_landmarks(crop: np.ndarray) -> np.ndarray | None:
    """The face mesh's 468 landmarks in pixels ((468, 2), x and y) of the face in an RGB crop, or None
    where no face is found."""
    models = _models_once()
    image = np.ascontiguousarray(crop[..., :3].astype(np.uint8))
    with _lock:
        if not models["finder"]._detect_batch([image], 8)[0]:
            return None
        found = models["mesh"].process(image)
    if not found.multi_face_landmarks:
        return None
    height, width = image.shape[:2]
    return np.array([(p.x * width, p.y * height) for p in found.multi_face_landmarks[0].landmark], np.float32)


def _fill(labels: np.ndarray, points: np.ndarray, name: str, grow: float = 0.0) -> None:
    hull = cv2.convexHull(points.astype(np.float32))
    if grow:
        centre = hull.reshape(-1, 2).mean(axis=0)
        hull = centre + (hull.reshape(-1, 2) - centre) * (1 + grow)
    cv2.fillConvexPoly(labels, np.round(hull).astype(np.int32).reshape(-1, 1, 2), CODE[name])


def _from_landmarks(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    sets = _models_once()["sets"]
    height, width = shape
    labels = np.full((height, width), CODE["background"], np.uint8)
    oval = landmarks[sets["oval_path"]]
    face = np.zeros((height, width), np.uint8)
    cv2.fillPoly(face, [np.round(oval).astype(np.int32)], 1)
    labels[face > 0] = CODE["cheeks"]  # what the named parts below leave of the face
    brows = np.concatenate([landmarks[s] for s in sets["brows"]])
    mouth = landmarks[sets["mouth"]]
    rows = np.arange(height)[:, None]
    labels[(face > 0) & (rows < brows[:, 1].min())] = CODE["forehead"]
    labels[(face > 0) & (rows > mouth[:, 1].max())] = CODE["chin_jaw"]
    for side in sets["brows"]:
        _fill(labels, landmarks[side], "brows", 0.25)
    for side in sets["eyes"]:
        _fill(labels, landmarks[side], "eyes", 0.3)
    _fill(labels, landmarks[sets["nose"]], "nose")
    _fill(labels, mouth, "mouth", 0.15)
    band = max(2, int(round(0.06 * (oval[:, 0].max() - oval[:, 0].min()))))
    outline = np.zeros_like(face)
    cv2.polylines(outline, [np.round(oval).astype(np.int32)], True, 1, band)
    labels[outline > 0] = CODE["boundary"]
    return labels


def _canonical(shape: tuple[int, int]) -> np.ndarray:
    """The regions of an aligned, centred face crop (the layout fakefinder's crops have: the face
    fills the middle, eyes a little above the centre), in fractions of the crop's size."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width]
    u, v = (x + 0.5) / width, (y + 0.5) / height
    labels = np.full((height, width), CODE["background"], np.uint8)
    ellipse = ((u - 0.5) / 0.36) ** 2 + ((v - 0.52) / 0.44) ** 2
    inside = ellipse <= 1
    labels[inside] = CODE["cheeks"]
    labels[inside & (v < 0.34)] = CODE["forehead"]
    sides = (np.abs(u - 0.5) > 0.05) & (np.abs(u - 0.5) < 0.27)
    labels[inside & sides & (v >= 0.34) & (v < 0.40)] = CODE["brows"]
    labels[inside & sides & (v >= 0.40) & (v < 0.49)] = CODE["eyes"]
    labels[inside & (np.abs(u - 0.5) <= 0.09) & (v >= 0.40) & (v < 0.64)] = CODE["nose"]
    labels[inside & (np.abs(u - 0.5) <= 0.15) & (v >= 0.66) & (v < 0.78)] = CODE["mouth"]
    labels[inside & (v >= 0.78)] = CODE["chin_jaw"]
    labels[inside & (ellipse > 0.84)] = CODE["boundary"]
    return labels


def region_map(crop: np.ndarray) -> RegionMap:
    """Every pixel of an RGB face crop labelled with a region (see the module's docstring)."""
    landmarks = face_landmarks(crop)
    shape = crop.shape[:2]
    if landmarks is None:
        return RegionMap(_canonical(shape), "canonical")
    return RegionMap(_from_landmarks(shape, landmarks), "face_mesh")


def region_shares(heatmap: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each region's share of a heatmap's (or a mask's) total, largest first; the map is resized to
    the labels' size and negative values count as none."""
    values = np.clip(np.asarray(heatmap, np.float32), 0, None)
    if values.shape != labels.shape:
        values = cv2.resize(values, (labels.shape[1], labels.shape[0]), interpolation=cv2.INTER_LINEAR)
    total = float(values.sum())
    if total <= 0:
        return {}
    sums = np.bincount(labels.ravel(), weights=values.ravel(), minlength=len(REGIONS))
    shares = {REGIONS[i]: float(s / total) for i, s in enumerate(sums) if s > 0}
    return dict(sorted(shares.items(), key=lambda item: -item[1]))


def format_regions(shares: dict[str, float], top: int = 3) -> str:
    """`mouth:0.41;chin_jaw:0.22;nose:0.15`: the `top` largest shares, two decimals."""
    return ";".join(f"{name}:{share:.2f}" for name, share in list(shares.items())[:top])


def region_grid(labels: np.ndarray, side: int) -> np.ndarray:
    """(len(REGIONS), side * side) float32: each region's pixels per cell of a side x side grid laid
    over the crop (row by row, as a feature map's tokens are), each row summing to 1 (0 for a region
    the crop lacks): the weights that pool a feature map into one vector per region."""
    onehot = (labels[None] == np.arange(len(REGIONS), dtype=labels.dtype)[:, None, None]).astype(np.float32)
    cells = np.stack([cv2.resize(plane, (side, side), interpolation=cv2.INTER_AREA) for plane in onehot])
    cells = cells.reshape(len(REGIONS), -1)
    totals = cells.sum(axis=1, keepdims=True)
    return np.divide(cells, totals, out=np.zeros_like(cells), where=totals > 0)
