"""fakefinder: prepare, train, evaluate and serve deepfake detectors."""

from __future__ import annotations

from fakefinder.config import Config, ConfigError, load_config
from fakefinder.data.prepare import prepare

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "load_config", "prepare", "__version__"]
