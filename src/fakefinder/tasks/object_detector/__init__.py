"""`object_detector`: YOLO object detection on the YOLO dataset layout (images/{train,val},
labels/{train,val}/*.txt, data.yaml) with Ultralytics (AGPL-3.0, an optional extra): YOLOv8n at
640 px by default, built from its model YAML; labels checked first; safe checkpoints and artifacts."""

from fakefinder.faces.detectors import register_detector
from fakefinder.tasks.object_detector.config import IMAGE_EXTENSIONS, DetectorConfig
from fakefinder.tasks.registry import Task


def _face_detector(**settings):
    from fakefinder.tasks.object_detector.faces import YoloFaceDetector

    return YoloFaceDetector(**settings)


register_detector("yolo", _face_detector)  # a face detector trained as an object_detector serves prepare

TASK = Task("object_detector", "fakefinder.tasks.object_detector.kind", "YOLO object detector (Ultralytics)",
            section="detector", section_model=DetectorConfig,
            short_form={"base_model": "detector.model.arch", "dataset_path": "detector.data.path",
                        "epochs": "detector.train.epochs", "batch_size": "detector.train.batch",
                        "learning_rate": "detector.train.lr0", "image_size": "detector.train.imgsz"},
            output_key="detector.train.output_dir",
            option_sections=("detector.train", "detector.data", "detector.model", "detector.eval",
                             "detector.predict", "detector"),
            predict_inputs=IMAGE_EXTENSIONS)  # the CLI also reads .txt lists of images
