"""fakefinder: prepare, train, evaluate and serve deepfake detectors (and, on the same engine, image
classifiers and DX-LLaVA)."""

from __future__ import annotations

from fakefinder import _torchvision_cpu_fix

_torchvision_cpu_fix.install()

from fakefinder import tasks  # noqa: E402,F401  (registers the model kinds and their config sections)

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "evaluate", "load_config", "predict", "prepare", "train", "__version__"]


def __getattr__(name: str):
    # the API loads on first use, so `import fakefinder` (and the CLI's start) stay fast
    if name in {"prepare", "train", "evaluate", "predict"}:
        from fakefinder import api

        return getattr(api, name)
    if name in {"Config", "ConfigError", "load_config"}:
        from fakefinder import config

        return getattr(config, name)
    raise AttributeError(f"module 'fakefinder' has no attribute {name!r}")
