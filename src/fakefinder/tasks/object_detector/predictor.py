"""A trained object detector answering images: boxes in pixels of the original image, scores, classes
(Ultralytics' predictor: letterbox, the model, NMS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class BoxPredictor:
    """A trained detector: boxes (pixels of the original image), scores and class names per image."""

    def __init__(self, artifact, device: str = "cpu") -> None:
        from fakefinder.tasks.object_detector.yolo import build, check_layers, require

        require()
        self.artifact = artifact
        self.classes = artifact.classes
        spec = artifact.architecture["yaml"]
        check_layers(spec, f"{artifact.path}/model.json: architecture.yaml")
        self.model = build(spec, self.classes)
        self.model.load_state_dict(artifact.weights())
        self.model.eval()
        p = artifact.preprocessing
        self.imgsz = int(p["input_size"])
        self.conf, self.iou = float(p.get("conf", 0.25)), float(p.get("iou", 0.7))
        self.max_det = int(p.get("max_det", 300))
        self.device = "cpu" if str(device) == "cpu" else str(device).replace("cuda:", "").replace("cuda", "0")
        self._predictor = None

    def _setup(self, conf: float, iou: float, max_det: int):
        from ultralytics.models.yolo.detect import DetectionPredictor

        from fakefinder.tasks.object_detector.yolo import without_integrations

        wanted = (conf, iou, max_det)
        if self._predictor is None or self._predictor_args != wanted:
            self._predictor = without_integrations(DetectionPredictor)(overrides={
                "imgsz": self.imgsz, "conf": conf, "iou": iou, "max_det": max_det, "device": self.device,
                "verbose": False, "save": False, "mode": "predict", "task": "detect"})
            self._predictor.setup_model(model=self.model, verbose=False)
            self._predictor_args = wanted
        return self._predictor

    def boxes(self, images: list, conf: float | None = None, iou: float | None = None,
              max_det: int | None = None) -> list[list[dict]]:
        """For each image (a path, or an RGB array): its boxes as dicts of class, score, x1 y1 x2 y2."""
        predictor = self._setup(self.conf if conf is None else conf, self.iou if iou is None else iou,
                                self.max_det if max_det is None else max_det)
        sources = [str(i) if isinstance(i, (str, Path)) else np.ascontiguousarray(np.asarray(i)[..., ::-1])
                   for i in images]  # Ultralytics reads arrays as BGR
        out = []
        for result in predictor(source=sources, stream=False):
            b = result.boxes
            xyxy, scores, cls = b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy().astype(int)
            out.append([{"class": self.classes[c], "class_id": int(c), "score": float(s),
                         "x1": float(x[0]), "y1": float(x[1]), "x2": float(x[2]), "y2": float(x[3])}
                        for x, s, c in zip(xyxy, scores, cls)])
        return out
