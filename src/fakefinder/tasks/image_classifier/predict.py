"""An image classifier answering images and videos: class probabilities and a label per file (a
video's sampled frames averaged), through the shared image/video predict loop."""

from __future__ import annotations

import numpy as np
import torch

from fakefinder.config import Config
from fakefinder.engine.predict import FilePredictor
from fakefinder.tasks.classification.scoring import to_batch


class ClassifierPredictor(FilePredictor):
    """Whole images (or a video's sampled frames, averaged) -> class probabilities and a label."""

    face_based = False

    def __init__(self, artifact, device, config: Config) -> None:
        from fakefinder.tasks.classification.model import from_artifact

        self.artifact = artifact
        self.kind = artifact.kind
        self.preprocessing = artifact.preprocessing
        self.classes = artifact.classes
        self.device = device
        self.model = from_artifact(artifact, device)
        self.threshold = None

    @torch.no_grad()
    def probabilities(self, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        p = self.preprocessing
        out = []
        for start in range(0, len(images), batch_size):
            x = to_batch(images[start : start + batch_size], p["input_size"], p["mean"], p["std"])
            out.append(torch.softmax(self.model(x.to(self.device)).float(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes)))

    def heatmaps(self, crops: list[np.ndarray], faces: list[dict], method: str = "auto") -> list[np.ndarray]:
        """A class-activation map of each crop's own predicted class."""
        from fakefinder.tasks.classification.heatmaps import heatmaps

        p = self.preprocessing
        x = to_batch(crops, p["input_size"], p["mean"], p["std"]).to(self.device)
        target = [self.classes.index(face["label"]) for face in faces]
        return heatmaps(
            self.model, x, [c.shape[:2] for c in crops], "cam" if method == "auto" else method, target
        )

    def evidence_weight(self, face: dict) -> float:
        return max(float(face[c]) for c in self._columns())

    def _columns(self) -> list[str]:
        return [f"prob_{name}" for name in self.classes]

    def score(self, crops: list[np.ndarray], batch_size: int) -> np.ndarray:
        return self.probabilities(crops, batch_size)

    def file_result(self, file_id: str, found, probs, pc, threshold) -> tuple[dict, list[dict]]:
        if not found.crops:
            return {"label": "", **{c: float("nan") for c in self._columns()}}, []
        mean = probs.mean(axis=0)  # a video: the mean over its sampled frames
        frames = [
            {
                "id": file_id,
                "frame_index": c.frame_index,
                "label": self.classes[int(p.argmax())],
                **dict(zip(self._columns(), map(float, p))),
            }
            for c, p in zip(found.crops, probs)
        ]
        return {
            "label": self.classes[int(mean.argmax())],
            **dict(zip(self._columns(), map(float, mean))),
        }, frames

    def submission_columns(self, pc) -> list[str]:
        return ["id", "label"] + ([] if pc.format == "label" else self._columns())

    def details(self) -> dict:
        return {"models": [str(self.artifact.path)], "classes": self.classes}
