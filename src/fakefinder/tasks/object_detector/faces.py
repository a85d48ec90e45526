"""A face detector trained as an `object_detector` serving `prepare`: `faces.detector: yolo` with
`faces.detector_options: {yolo: {model: <artifact>, class: face}}`. Its boxes are taken as its
labels drew them (no mapping into MTCNN's convention is known for it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fakefinder.faces.detectors import FaceDetector


class YoloFaceDetector(FaceDetector):
    name = "yolo"

    def __init__(
        self,
        min_score: float = 0.9,
        min_face_px: int = 20,
        model: str | None = None,
        device: str = "cpu",
        **options,
    ) -> None:
        super().__init__(min_score, min_face_px)
        from fakefinder.core.artifact import read_artifact
        from fakefinder.tasks.object_detector.predict import BoxPredictor

        wanted = options.pop("class", None)
        if options:
            raise ValueError(
                f"faces.detector_options.yolo: unknown key(s) {sorted(options)} (known: model, class, device)"
            )
        if model is None:
            raise ValueError(
                "faces.detector_options.yolo.model is required: an object_detector artifact trained on faces"
            )
        artifact = read_artifact(Path(model))
        if artifact.kind != "object_detector":
            raise ValueError(
                f"faces.detector_options.yolo.model: {model} holds a {artifact.kind} model, not an "
                "object_detector"
            )
        classes = artifact.classes
        if wanted is None:
            wanted = "face" if "face" in classes else classes[0] if len(classes) == 1 else None
        if wanted not in classes:
            raise ValueError(
                f"faces.detector_options.yolo.class: {wanted!r} is not among the model's classes {classes}"
            )
        self.class_id = classes.index(wanted)
        self.predictor = BoxPredictor(artifact, device)

    def _detect_batch(self, images: list[np.ndarray], min_face_px: int):
        found = self.predictor.boxes(list(images), conf=min(0.05, self.min_score))
        return [
            [
                ((b["x1"], b["y1"], b["x2"], b["y2"]), b["score"])
                for b in boxes
                if b["class_id"] == self.class_id
            ]
            for boxes in found
        ]
