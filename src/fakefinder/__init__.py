"""fakefinder: prepare, train, evaluate and serve deepfake detectors."""

from __future__ import annotations

from fakefinder import _torchvision_cpu_fix

_torchvision_cpu_fix.install()

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "evaluate", "load_config", "predict", "prepare", "train", "__version__"]


def __getattr__(name: str):
    # the API loads on first use, so `import fakefinder` (and the CLI's start) stay fast
    if name == "prepare":
        from fakefinder.data.prepare import prepare

        return prepare
    if name == "evaluate":
        from fakefinder.eval.evaluate import evaluate

        return evaluate
    if name == "predict":
        from fakefinder.infer.predict import predict

        return predict
    if name == "train":
        from fakefinder.engine.trainer import train

        return train
    if name in {"Config", "ConfigError", "load_config"}:
        from fakefinder import config

        return getattr(config, name)
    raise AttributeError(f"module 'fakefinder' has no attribute {name!r}")
