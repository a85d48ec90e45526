"""`deepfake_detector`: binary real/fake detectors on face crops — a timm backbone (optionally with
a frequency branch and a manipulation-mask head) and one logit, with the decision threshold fitted
on validation. Trained by the shared loop (`fakefinder.engine`) on a prepared manifest."""

from fakefinder.tasks.registry import Task

TASK = Task("deepfake_detector", "fakefinder.tasks.deepfake_detector.kind", "binary real/fake detector on face crops",
            short_form={"base_model": "model.name", "dataset_path": "train.manifest", "epochs": "train.epochs",
                        "batch_size": "train.batch_size", "learning_rate": "train.lr"})
