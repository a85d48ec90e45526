"""Heatmaps as files people look at: which crops of a file get one, the 8-bit map and its overlay on
disk, the facial regions it falls on, and the gallery of an evaluation (most confident fakes and
reals, false positives, false negatives).

A heatmap says where the model looked, not proof of where a face was changed: `evaluate` measures
how well it localises and how faithful it is (`fakefinder.engine.localisation`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fakefinder.media.images import VIDEO_EXTENSIONS

GALLERY_GROUPS = ("confident_fakes", "confident_reals", "false_positives", "false_negatives")


def heatmap_name(file_id: str, frame_index: int | None = None) -> str:
    """`<id>` or `<id>_f<frame>` (a video's frame), safe as a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "__", str(file_id)).strip(".") or "file"
    return safe if frame_index is None else f"{safe}_f{int(frame_index)}"


def overlay(crop: np.ndarray, heatmap: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The crop with the map laid over it in colour (JET), more opaque where the map is high."""
    import cv2

    values = np.clip(np.asarray(heatmap, np.float32), 0, 1)
    coloured = cv2.applyColorMap((values * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    weight = (alpha * np.sqrt(values))[..., None]
    return np.clip(crop * (1 - weight) + coloured * weight, 0, 255).astype(np.uint8)


def save_heatmap(folder: Path, name: str, heatmap: np.ndarray, crop: np.ndarray) -> tuple[Path, Path]:
    """`<folder>/<name>.png` (8-bit gray, the crop's size) and `<name>_overlay.jpg`."""
    from PIL import Image

    from fakefinder.core.files import atomic_write

    folder.mkdir(parents=True, exist_ok=True)
    gray = (np.clip(heatmap, 0, 1) * 255).round().astype(np.uint8)
    png = atomic_write(folder / f"{name}.png", lambda h: Image.fromarray(gray).save(h, format="PNG"))
    jpg = atomic_write(
        folder / f"{name}_overlay.jpg",
        lambda h: Image.fromarray(overlay(crop, heatmap)).save(h, format="JPEG", quality=90),
    )
    return png, jpg


def regions_of(crop: np.ndarray, heatmap: np.ndarray, top: int = 3) -> tuple[str, str]:
    """The map's share per facial region (`mouth:0.41;chin_jaw:0.22;nose:0.15`) and where the regions
    came from (`face_mesh`, or `canonical` when the mesh found no face in the crop)."""
    from fakefinder.faces.regions import format_regions, region_map, region_shares

    regions = region_map(crop)
    return format_regions(region_shares(heatmap, regions.labels), top), regions.source


def pick_crops(faces: list[dict], weights: list[float], count: int) -> list[int]:
    """Which crops of one file get a heatmap: in each frame its heaviest face (the one its frame
    score rests on), then the `count` heaviest frames."""
    best: dict[int, int] = {}
    for i, face in enumerate(faces):
        frame = int(face.get("frame_index", 0))
        if frame not in best or weights[i] > weights[best[frame]]:
            best[frame] = i
    ranked = sorted(best.values(), key=lambda i: (-weights[i], i))
    return ranked[:count]


def attach_heatmaps(predictor, file_id: str, found, faces: list[dict], folder: Path, pc) -> None:
    """Draw the heatmaps of a file's weightiest crops (`predict.heatmap_frames`), write them to
    `folder`, and give their rows in `faces` the `heatmap` and `regions` columns (others get blanks)."""
    for face in faces:
        face.setdefault("heatmap", "")
        face.setdefault("regions", "")
    if not found.crops:
        return
    weights = [predictor.evidence_weight(face) for face in faces]
    chosen = pick_crops(faces, weights, pc.heatmap_frames)
    crops = [found.crops[i].pixels for i in chosen]
    maps = predictor.heatmaps(crops, [faces[i] for i in chosen], pc.heatmap_method)
    video = Path(str(found.path)).suffix.lower() in VIDEO_EXTENSIONS
    for i, crop, heatmap in zip(chosen, crops, maps):
        name = heatmap_name(file_id, found.crops[i].frame_index if video else None)
        png, _ = save_heatmap(folder, name, heatmap, crop)
        faces[i]["heatmap"] = f"{folder.name}/{png.name}"
        if predictor.face_based:
            faces[i]["regions"], faces[i]["regions_from"] = regions_of(crop, heatmap)


def gallery_rows(frame, threshold: float, per_group: int = 4) -> dict[str, list[int]]:
    """Row numbers of `frame` (`label`, `score`) for each gallery group: the most confident fakes and
    reals among the right answers, and the most confident wrong ones."""
    fake = (frame.label == "fake").to_numpy()
    said_fake = (frame.score >= threshold).to_numpy()
    score = frame.score.to_numpy()
    picks = {
        "confident_fakes": (fake & said_fake, -score),
        "confident_reals": (~fake & ~said_fake, score),
        "false_positives": (~fake & said_fake, -score),
        "false_negatives": (fake & ~said_fake, score),
    }
    out = {}
    for group in GALLERY_GROUPS:
        where, order = picks[group]
        rows = np.flatnonzero(where)
        out[group] = [int(r) for r in rows[np.argsort(order[rows], kind="stable")][:per_group]]
    return out
