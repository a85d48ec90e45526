"""`fakefinder predict` for deepfake detectors: one model artifact or a weighted ensemble of several,
scored in ONNX Runtime on the CPU (checked against PyTorch when loaded) or PyTorch on a GPU; the most
suspicious face of each frame, frame scores aggregated per file."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fakefinder.config import Config, ConfigError
from fakefinder.engine.aggregate import aggregate_scores
from fakefinder.engine.predict import FilePredictor


class DetectorEnsemble(FilePredictor):
    """`fakefinder predict` for deepfake detectors: one artifact or a weighted ensemble of several;
    the most suspicious face of each frame, frame scores aggregated per file."""

    def __init__(self, artifacts: list, device, config: Config) -> None:
        from fakefinder.tasks.classification.scoring import load_detector

        pc = config.predict
        weights = np.asarray(pc.weights or [1.0] * len(artifacts), dtype=np.float64)
        if len(weights) != len(artifacts) or (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(
                f"predict.weights must give one non-negative weight per model ({len(artifacts)})"
            )
        self.weights = weights / weights.sum()
        self.detectors = [load_detector(a, device) for a in artifacts]
        self.kind = artifacts[0].kind
        self.device = device
        self.notes: list[str] = []
        on_cpu = getattr(device, "type", str(device)) == "cpu"
        if pc.backend == "onnxruntime" and not on_cpu:
            raise ConfigError(
                f"predict.backend: onnxruntime runs on the CPU here, but predict.device is {device}; "
                "use backend auto or torch on a GPU"
            )
        if pc.backend == "onnxruntime" or (pc.backend == "auto" and on_cpu):
            from fakefinder.tasks.classification.scoring import use_onnxruntime

            for detector in self.detectors:
                try:
                    use_onnxruntime(detector)
                except Exception as exc:  # the model still scores, in PyTorch
                    if pc.backend == "onnxruntime":
                        raise
                    self.notes.append(
                        f"{detector.path}: scoring in PyTorch, ONNX Runtime unavailable ({exc})"
                    )
        self.preprocessing = self.detectors[
            0
        ].preprocessing  # decode and detect as the first model was trained
        self.threshold = float(np.dot(self.weights, [d.threshold for d in self.detectors]))

    def score(self, crops: list[np.ndarray], batch_size: int) -> np.ndarray:
        """Per crop: the weighted ensemble probability, then each member's probability."""
        from fakefinder.tasks.classification.scoring import score_pixels

        members = np.stack([score_pixels(d, crops, batch_size, self.device) for d in self.detectors], axis=1)
        return np.concatenate([(members @ self.weights)[:, None], members], axis=1)

    def heatmaps(self, crops: list[np.ndarray], faces: list[dict], method: str = "auto") -> list[np.ndarray]:
        """Each member's map (mask head or CAM, `fakefinder.tasks.classification.heatmaps`), weighted as
        the scores are."""
        from fakefinder.tasks.classification.scoring import crop_heatmaps

        maps = [crop_heatmaps(d, crops, method, device=self.device) for d in self.detectors]
        return [sum(w * m[i] for w, m in zip(self.weights, maps)) for i in range(len(crops))]

    def heatmap_caveat(self) -> str | None:
        from fakefinder.tasks.classification.heatmaps import read_record

        for detector in self.detectors:
            record = read_record(detector.path)
            if record is None:
                return f"{detector.path}: its heatmaps were never checked against true masks"
            if not record.get("beats_prior"):
                return (
                    f"{detector.path}: on validation its heatmaps did not beat a plain face prior "
                    "(where the model looked, not where the face was changed)"
                )
        return None

    def file_result(self, file_id: str, found, scores, pc, threshold: float) -> tuple[dict, list[dict]]:
        if not found.crops:
            return {
                "probability": pc.no_face_score,
                "label": pc.label_names[int(pc.no_face_score >= threshold)],
            }, []
        scores, members = scores[:, 0], scores[:, 1:]
        # one score per frame (the most suspicious face), then per file
        per_frame = pd.Series(scores).groupby([c.frame_index for c in found.crops]).max()
        probability = aggregate_scores(per_frame.to_numpy(), pc.aggregation, pc.top_k)
        faces = [
            {
                "id": file_id,
                **crop.row(),
                "score": float(score),
                **{f"score_{i}": float(m) for i, m in enumerate(member)},
            }
            for crop, score, member in zip(found.crops, scores, members)
        ]
        return {"probability": probability, "label": pc.label_names[int(probability >= threshold)]}, faces

    def details(self) -> dict:
        return {"models": [str(d.path) for d in self.detectors], "weights": self.weights.tolist()}
