"""The one way from a video or an image to face crops: sample frames, decode, detect, crop, encode.

`extract` is used by prepare (it writes the encoded crops), by predict and evaluation on raw files
(they score the crops decoded back from those same bytes: the pixels training read from prepare's
files), and by the DX-LLaVA predictor. `ExtractSettings` comes from a config (prepare) or from a
model artifact's preprocessing (predict), so both ends cut, encode and decode faces alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from fakefinder.config import Config, FacesConfig
from fakefinder.faces.detectors import (
    DetectorChain,
    Face,
    FaceSelector,
    NoDetectorError,
    crop_face,
    resize_whole,
)
from fakefinder.media.images import CROP_FORMATS, decode_image, encode_image, is_image, read_media


@dataclass(frozen=True)
class ExtractSettings:
    faces: FacesConfig
    frames_per_video: int = 32
    frame_stride: int | None = None
    seek: str = "auto"
    crop_format: str = "jpg"  # how crops are encoded: jpg (at jpeg_quality), png, or none (raw pixels)
    jpeg_quality: int = 95

    @classmethod
    def from_config(cls, config: Config) -> ExtractSettings:
        return cls(
            config.faces,
            config.data.frames_per_video,
            config.data.frame_stride,
            config.data.seek,
            config.prepare.image_format,
            config.prepare.jpeg_quality,
        )

    @classmethod
    def from_preprocessing(cls, preprocessing: dict, faces: FacesConfig, frames_per_video: int | None = None):
        """As a model artifact records its training crops; `faces` already resolved (overrides applied)."""
        frames = preprocessing.get("frames") or {}
        crop = preprocessing.get("crop") or {}
        return cls(
            faces,
            frames_per_video or frames.get("frames_per_video", 32),
            frames.get("frame_stride"),
            frames.get("seek", "auto"),
            crop.get("format", "jpg"),
            crop.get("quality", 95),
        )

    def to_json(self) -> dict:
        return {
            "faces": self.faces.model_dump(mode="json"),
            "frames_per_video": self.frames_per_video,
            "frame_stride": self.frame_stride,
            "seek": self.seek,
            "crop_format": self.crop_format,
            "jpeg_quality": self.jpeg_quality,
        }

    @classmethod
    def from_json(cls, data: dict) -> ExtractSettings:
        return cls(**{**data, "faces": FacesConfig.model_validate(data["faces"])})


@dataclass
class Crop:
    frame_index: int
    face: Face
    data: bytes  # the encoded crop: what prepare writes
    pixels: np.ndarray | None = None  # decoded back from `data` (when asked): what a model sees

    def row(self) -> dict:
        return {
            "frame_index": self.frame_index,
            "face_index": self.face.track,
            "box": [round(v, 1) for v in self.face.box],
            "detector": self.face.detector,
            "face_score": round(self.face.score, 4),
        }


@dataclass
class Extraction:
    """What one file gave: its crops, how many frames were sampled, and why it gave none."""

    path: Path
    crops: list[Crop] = field(default_factory=list)
    frames: int = 0
    reason: str = ""
    decode_s: float = 0.0
    detect_s: float = 0.0

    @property
    def frames_with_face(self) -> int:
        return len({c.frame_index for c in self.crops})


@lru_cache(maxsize=4)
def _chain(faces_json: str) -> DetectorChain:
    return DetectorChain(FacesConfig.model_validate_json(faces_json))


def detector_chain(faces: FacesConfig) -> DetectorChain:
    """The detector chain for these settings, loaded once per process."""
    return _chain(faces.model_dump_json())


def _encoded(image: np.ndarray, crop: np.ndarray, path: Path, settings: ExtractSettings) -> bytes:
    if crop is image and is_image(path) and path.suffix.lower() in CROP_FORMATS[settings.crop_format]:
        return path.read_bytes()  # already a crop of the right size and format: no second compression
    return encode_image(crop, settings.crop_format, settings.jpeg_quality)


def extract(
    path: str | Path,
    settings: ExtractSettings,
    reuse_boxes: dict[int, list[dict]] | None = None,
    decode: bool = False,
) -> Extraction:
    """Face crops of one file. A file that cannot be read, or shows no face, gives no crops and a
    `reason` (never an exception); only a missing face detector raises (`NoDetectorError`).
    `reuse_boxes` (frame index -> boxes found in a source video) replace detection on those frames;
    `decode` adds each crop's decoded pixels."""
    from fakefinder.media.video import VideoError

    path = Path(path)
    faces = settings.faces
    found = Extraction(path)
    selector = FaceSelector(faces.select)
    source = read_media(path, settings.frames_per_video, settings.frame_stride, settings.seek)
    try:
        while True:
            t0 = time.perf_counter()
            batch = []
            for index, image in source:
                batch.append((index, image))
                if len(batch) == faces.batch_size:
                    break
            found.decode_s += time.perf_counter() - t0
            if not batch:
                break
            t0 = time.perf_counter()
            for (index, image), candidates in zip(batch, _faces(batch, faces, reuse_boxes)):
                found.frames += 1
                reused = bool(reuse_boxes and reuse_boxes.get(index))
                for face in candidates if reused and faces.select == "all" else selector(candidates):
                    crop = crop_face(image, face.box, faces) if faces.detect else resize_whole(image, faces)
                    if settings.crop_format == "none":  # models trained on the images themselves
                        found.crops.append(Crop(index, face, b"", crop))
                        continue
                    data = _encoded(image, crop, path, settings)
                    found.crops.append(Crop(index, face, data, decode_image(data) if decode else None))
            found.detect_s += time.perf_counter() - t0
            if len(batch) < faces.batch_size:
                break
    except NoDetectorError:
        raise
    except (VideoError, ValueError, OSError) as exc:
        found.reason, found.crops = str(exc) or type(exc).__name__, []
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a run
        found.reason, found.crops = f"{type(exc).__name__}: {exc}", []
    if not found.reason and found.frames == 0:
        found.reason = "no decodable frames"
    elif not found.reason and not found.crops:
        found.reason = f"no face found in {found.frames} sampled frame(s)"
    return found


def mask_crops(path: Path, crops: list[Crop], faces: FacesConfig) -> list[np.ndarray]:
    """The same windows as `crops` cut from a mask video (a dataset's record of where each frame was
    changed) at the crops' frames: gray uint8 crops, in the order of `crops`. Raises `ValueError`
    naming the file when the mask video lacks one of those frames."""
    from fakefinder.media.video import VideoError, read_frames

    wanted = sorted({c.frame_index for c in crops})
    try:
        frames = dict(read_frames(Path(path), indices=wanted))
    except VideoError as exc:
        raise ValueError(f"mask video {path}: {exc}") from None
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise ValueError(f"mask video {path} has no frame {missing[0]}")
    out = []
    for crop in crops:
        image = frames[crop.frame_index]
        cut = crop_face(image, crop.face.box, faces) if faces.detect else resize_whole(image, faces)
        out.append(cut.max(axis=2) if cut.ndim == 3 else cut)
    return out


def _faces(
    batch: list[tuple[int, np.ndarray]], faces: FacesConfig, reuse_boxes: dict[int, list[dict]] | None
) -> list[list[Face]]:
    """Faces per frame: none to find for ready crops, reused from a source video where given, else
    detected."""
    if not faces.detect:
        return [[Face((0.0, 0.0, float(img.shape[1]), float(img.shape[0])), 1.0, "none")] for _, img in batch]
    per_frame: list[list[Face] | None] = [None] * len(batch)
    for k, (index, _) in enumerate(batch):
        boxes = (reuse_boxes or {}).get(index)
        if boxes:
            per_frame[k] = [
                Face(tuple(b["box"]), b["score"], f"reused:{b['detector']}", b["track"]) for b in boxes
            ]
    todo = [k for k, found in enumerate(per_frame) if found is None]
    if todo:
        for k, found in zip(todo, detector_chain(faces).detect([batch[k][1] for k in todo])):
            per_frame[k] = found
    return per_frame


# ---------------------------------------------------------------------------------------------
# in worker processes (see fakefinder.core.pool)

_settings: dict[str, ExtractSettings] = {}


def init_worker(settings: dict) -> None:
    _settings["current"] = ExtractSettings.from_json(settings)


def extract_decoded(path: Path) -> Extraction:
    """`extract(path, decode=True)` with the settings `init_worker` stored."""
    return extract(path, _settings["current"], decode=True)
