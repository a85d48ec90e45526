"""Model artifacts: what predict, evaluate, export and serve load, apart from any resume state.

An artifact is a folder holding `model.json` and the weights in safetensors (`model.safetensors`;
a kind may add files of its own, also never pickles). `model.json` says:

    format, format_version   "fakefinder-model", 1
    kind                     the task that made it and loads it (e.g. deepfake_detector)
    architecture             what to build before the weights go in (kind-specific keys)
    classes                  class names, in the order of the model's outputs
    threshold                the decision threshold fitted on validation (binary kinds), else null
    preprocessing            input size, normalisation, face detection and crop settings, crop
                             encoding: what the model saw in training
    training                 a summary of the run (epochs, best metric, validation figures, config)
    files                    the weight files, relative to the folder

Readers take what they know from it and never validate the whole training config, so a config
key renamed in a later version does not stop an older artifact from loading. An artifact written
by a newer format version is refused with that reason.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakefinder.core.errors import FakefinderError
from fakefinder.core.files import atomic_write_text

FORMAT = "fakefinder-model"
FORMAT_VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED = ("kind", "architecture", "classes", "preprocessing")


class ArtifactError(FakefinderError, ValueError):
    """A model artifact that is missing, malformed or of an unknown format version."""


@dataclass
class Artifact:
    """A model artifact read from `path` (or made in memory from an older checkpoint file)."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, Any] | None = field(default=None, repr=False)  # in-memory weights (converted files)

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def architecture(self) -> dict[str, Any]:
        return self.meta["architecture"]

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def threshold(self) -> float | None:
        value = self.meta.get("threshold")
        return None if value is None else float(value)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.meta["preprocessing"]

    @property
    def training(self) -> dict[str, Any]:
        return self.meta.get("training") or {}

    def weights(self, name: str = WEIGHTS_FILE, device: str = "cpu") -> dict:
        """The tensors of one weight file (safetensors: no code runs on load)."""
        if self.tensors is not None and name == WEIGHTS_FILE:
            return self.tensors
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        file = self.path / name
        if not file.is_file():
            raise ArtifactError(f"{self.path}: weight file {name} named by {META_FILE} is missing")
        try:
            return load_file(str(file), device=device)
        except (SafetensorError, OSError) as exc:
            raise ArtifactError(f"{file}: not a readable safetensors file ({exc})") from None


def training_summary(state: dict) -> dict:
    """model.json's summary of the run behind it, from a trainer state (plain values)."""
    history = state.get("history") or []
    best = next((row for row in history if row.get("epoch") == state.get("best_epoch")), {})
    metric = (state.get("config") or {}).get("train", {}).get("early_stopping", {}).get("metric")
    return {
        "epochs_run": len(history),
        "best_epoch": state.get("best_epoch"),
        "global_step": state.get("global_step"),
        "selected_on": {"metric": metric, "value": state.get("best_metric")},
        "validation": {k: v for k, v in best.items() if k.startswith("val_") or k == "threshold"},
        "config": state.get("config"),
    }


def is_artifact(path: str | Path) -> bool:
    path = Path(path)
    return (path / META_FILE).is_file() or (path.name == META_FILE and path.is_file())


def _migrate(meta: dict, source: Path) -> dict:
    """Bring an older format version's model.json to the current one (version 1 is the first)."""
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{source}: format_version is missing or not an integer")
    if version > FORMAT_VERSION:
        raise ArtifactError(
            f"{source}: format_version {version} was written by a newer fakefinder (this one reads up to "
            f"{FORMAT_VERSION}); upgrade fakefinder"
        )
    return meta


def read_artifact(path: str | Path) -> Artifact:
    """The artifact in folder `path` (or whose model.json is `path`)."""
    path = Path(path)
    folder = path.parent if path.name == META_FILE else path
    source = folder / META_FILE
    if not source.is_file():
        raise ArtifactError(f"no model artifact at {folder}: {META_FILE} is missing")
    try:
        meta = json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{source}: not a fakefinder model artifact (format must be {FORMAT!r})")
    meta = _migrate(meta, source)
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise ArtifactError(f"{source}: missing key(s) {missing}")
    return Artifact(folder, meta)


@contextlib.contextmanager
def staged(folder: str | Path):
    """`with staged(folder) as staging:` write an artifact's files into `staging` (a sibling temporary
    folder); when the block ends, it is swapped into place whole, so a reader never sees new weights
    beside an old model.json and a run killed while writing leaves the previous artifact intact."""
    folder = Path(folder)
    if (
        folder.exists()
        and not (folder / META_FILE).is_file()
        and (not folder.is_dir() or any(folder.iterdir()))
    ):
        raise ArtifactError(
            f"{folder} exists and is not a model artifact: an artifact replaces only an artifact; "
            "choose a new or empty folder"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        yield staging
        _swap_into_place(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_artifact(
    folder: str | Path,
    kind: str,
    architecture: dict,
    classes: list[str],
    preprocessing: dict,
    weights: dict | None = None,
    threshold: float | None = None,
    training: dict | None = None,
    extra: dict | None = None,
) -> Artifact:
    """Write an artifact folder whole (see `staged`): `weights` (name -> tensor) go to
    model.safetensors; `extra` maps more file names to writers `fn(path)` (kinds with more parts)."""
    from safetensors.torch import save_file

    with staged(folder) as staging:
        files = []
        if weights is not None:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(staging / WEIGHTS_FILE)
            )
            files.append(WEIGHTS_FILE)
        for name, write in (extra or {}).items():
            write(staging / name)
            files.append(name)
        meta = write_model_json(
            staging, kind, architecture, classes, preprocessing, threshold, training, files
        )
    return Artifact(Path(folder), meta)


def write_model_json(
    folder: Path,
    kind: str,
    architecture: dict,
    classes: list[str],
    preprocessing: dict,
    threshold: float | None,
    training: dict | None,
    files: list[str],
) -> dict:
    """Write `model.json` into a folder whose weight files (`files`) are already there; returns it."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "architecture": architecture,
        "classes": list(classes),
        "threshold": threshold,
        "preprocessing": preprocessing,
        "training": training or {},
        "files": list(files),
        "fakefinder_version": _version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(Path(folder) / META_FILE, json.dumps(meta, indent=1, default=_plain))
    return meta


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("fakefinder")
    except PackageNotFoundError:
        return "unknown"


def _swap_into_place(staging: Path, folder: Path) -> None:
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{time.time_ns()}")
        folder.rename(old)
    staging.rename(folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _plain(value):
    """JSON for numpy numbers and paths that end up in summaries."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_converted(artifact: Artifact, output: str | Path) -> Artifact:
    """An artifact a kind read from an older model file (in memory, see `Kind.read_legacy`) written as
    an artifact folder at `output`."""
    if artifact.tensors is None:
        raise ArtifactError(f"{artifact.path} is a model artifact already: there is nothing to convert")
    meta = artifact.meta
    training = {**(meta.get("training") or {}), "converted_from": meta.get("converted_from")}
    return write_artifact(
        output,
        artifact.kind,
        meta["architecture"],
        meta["classes"],
        meta["preprocessing"],
        artifact.tensors,
        meta.get("threshold"),
        training,
    )
