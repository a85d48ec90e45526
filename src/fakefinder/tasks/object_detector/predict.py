"""A trained object detector answering images: boxes in pixels of the original image, scores, classes
(Ultralytics' predictor: letterbox, the model, NMS)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.core.results import Predictor, PredictResult
from fakefinder.tasks.object_detector.config import IMAGE_EXTENSIONS


class BoxPredictor(Predictor):
    """A trained detector: boxes (pixels of the original image), scores and class names per image."""

    inputs = IMAGE_EXTENSIONS  # the CLI also reads .txt lists of images

    def __init__(self, artifact, device: str = "cpu") -> None:
        from fakefinder.tasks.object_detector.model import build, check_layers, require

        require()
        self.artifact = artifact
        self.kind = artifact.kind
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

        from fakefinder.tasks.object_detector.model import without_integrations

        wanted = (conf, iou, max_det)
        if self._predictor is None or self._predictor_args != wanted:
            self._predictor = without_integrations(DetectionPredictor)(
                overrides={
                    "imgsz": self.imgsz,
                    "conf": conf,
                    "iou": iou,
                    "max_det": max_det,
                    "device": self.device,
                    "verbose": False,
                    "save": False,
                    "mode": "predict",
                    "task": "detect",
                }
            )
            self._predictor.setup_model(model=self.model, verbose=False)
            self._predictor_args = wanted
        return self._predictor

    def boxes(
        self, images: list, conf: float | None = None, iou: float | None = None, max_det: int | None = None
    ) -> list[list[dict]]:
        """For each image (a path, or an RGB array): its boxes as dicts of class, score, x1 y1 x2 y2."""
        predictor = self._setup(
            self.conf if conf is None else conf,
            self.iou if iou is None else iou,
            self.max_det if max_det is None else max_det,
        )
        sources = [
            str(i) if isinstance(i, (str, Path)) else np.ascontiguousarray(np.asarray(i)[..., ::-1])
            for i in images
        ]  # Ultralytics reads arrays as BGR
        out = []
        for result in predictor(source=sources, stream=False):
            b = result.boxes
            xyxy, scores, cls = b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy().astype(int)
            out.append(
                [
                    {
                        "class": self.classes[c],
                        "class_id": int(c),
                        "score": float(s),
                        "x1": float(x[0]),
                        "y1": float(x[1]),
                        "x2": float(x[2]),
                        "y2": float(x[3]),
                    }
                    for x, s, c in zip(xyxy, scores, cls)
                ]
            )
        return out

    def run(self, config: Config, events=None) -> PredictResult:
        """Boxes for the images in `predict.inputs`: a CSV with one row per box (`id, class, score, x1, y1,
        x2, y2` in pixels of the original image; an image without boxes has one row with an empty class),
        or JSON lines (one per image) when `predict.output` ends in .jsonl."""
        import pandas as pd

        from fakefinder.core.files import atomic_write, atomic_write_text

        events = as_events(events)
        pc = config.predict
        dc = config.object_detector.predict
        files = _input_images(pc.inputs)
        if not files:
            raise ConfigError(f"no images found in {', '.join(map(str, pc.inputs))}")
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"predict input not found: {file}")
        started = time.perf_counter()
        stage = events.stage("predict", total=len(files))
        rows, per_image = [], []
        output = Path(pc.output)
        drawn = output.with_name(output.stem + "_drawn") if dc.draw else None
        for start in range(0, len(files), pc.batch_size):
            chunk = files[start : start + pc.batch_size]
            for file, boxes in zip(chunk, self.boxes(chunk, dc.conf, dc.iou, dc.max_det)):
                per_image.append({"id": file.name, "path": str(file), "boxes": boxes})
                rows += [
                    {"id": file.name, **{k: b[k] for k in ("class", "score", "x1", "y1", "x2", "y2")}}
                    for b in boxes
                ] or [
                    {
                        "id": file.name,
                        "class": "",
                        "score": float("nan"),
                        "x1": float("nan"),
                        "y1": float("nan"),
                        "x2": float("nan"),
                        "y2": float("nan"),
                    }
                ]
                if drawn is not None:
                    from PIL import Image

                    drawn.mkdir(parents=True, exist_ok=True)
                    with Image.open(file) as im:
                        draw_boxes(im.convert("RGB"), boxes, []).save(drawn / (file.stem + ".png"))
            stage.advance(len(chunk))
        events.end(stage)
        seconds = time.perf_counter() - started
        table = pd.DataFrame(rows).rename(columns={"id": pc.id_column})
        if output.suffix.lower() == ".jsonl":
            atomic_write_text(output, "".join(json.dumps(r) + "\n" for r in per_image))
        else:
            atomic_write(output, lambda h: table.to_csv(h, index=False))
        rate = len(files) / seconds if seconds else float("inf")
        boxes = sum(len(r["boxes"]) for r in per_image)
        events.result(
            "predict",
            {"images": len(files), "boxes": boxes, "seconds": seconds, "output": str(output)},
            f"{boxes} box(es) on {len(files)} image(s) in {seconds:.1f} s ({rate:.2f}/s)\nboxes: {output}",
        )
        return PredictResult(output, None, table, seconds, rate, {"images": per_image})


def _input_images(inputs) -> list[Path]:
    files = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif not path.is_file():
            raise FileNotFoundError(f"predict input not found: {path}")
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            files.append(path)
        elif path.suffix.lower() == ".txt":
            files += [Path(line.strip()) for line in path.read_text().splitlines() if line.strip()]
        else:
            raise ConfigError(
                f"{path}: an object detector reads images ({', '.join(IMAGE_EXTENSIONS)}) or a .txt "
                "list of them"
            )
    return files


COLOURS = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
]


def draw_boxes(image, predicted: list[dict], truth: list[dict]):
    """`image` (PIL, RGB) with true boxes in white and predicted ones in their class colour, labelled."""
    from PIL import ImageDraw

    image = image.copy()
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 200))
    for box in truth:
        draw.rectangle([box["x1"], box["y1"], box["x2"], box["y2"]], outline=(255, 255, 255), width=width)
    for box in predicted:
        colour = COLOURS[box["class_id"] % len(COLOURS)]
        draw.rectangle([box["x1"], box["y1"], box["x2"], box["y2"]], outline=colour, width=width)
        draw.text((box["x1"] + 2, max(0, box["y1"] - 11)), f"{box['class']} {box['score']:.2f}", fill=colour)
    return image
