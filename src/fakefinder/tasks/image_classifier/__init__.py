"""`image_classifier`: N-class image classification from class folders (`dataset/{train,val[,test]}/
<class>/*.jpg`) with any timm backbone (ResNet-50 and hub weights by default), trained by the same
loop as the detectors: augmentations, AMP, EMA, exact resume, early stopping, DDP, reports."""

from fakefinder.tasks.image_classifier.config import ClassifierConfig
from fakefinder.tasks.registry import Task

TASK = Task("image_classifier", "fakefinder.tasks.image_classifier.kind", "N-class image classifier (timm backbone)",
            section="classifier", section_model=ClassifierConfig,
            defaults={"model": {"name": "resnet50", "pretrained": True, "image_size": 224},
                      "train": {"lr": 1e-4, "epochs": 15, "batch_size": 16, "output_dir": "output/classifier"}},
            short_form={"base_model": "model.name", "dataset_path": "classifier.data_dir", "epochs": "train.epochs",
                        "batch_size": "train.batch_size", "learning_rate": "train.lr"},
            option_sections=("classifier", "train", "model", "augment"))
