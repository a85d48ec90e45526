"""The registry of model kinds (the way timm registers models); `fakefinder.tasks` fills it.

A kind is a `fakefinder.tasks.base.Kind` instance (see there for what it provides). The CLI, the
Python API and the platform dispatch on the kind a config names (`task:`) or an artifact records
(`model.json: kind`), never on which files a folder holds. Adding a kind is a package of its own plus
one `register(...)` line: in `fakefinder/tasks/__init__.py`, or, for a kind that lives in another
package, an entry point in the `fakefinder.kinds` group (`name = "package.module:KIND"`) or the
`FAKEFINDER_KINDS` environment variable (`package.module:KIND,...`), which the platform passes on to
its workers. Kinds are asked to describe a dataset folder in the order they were registered.
"""

from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path

from fakefinder.config import Config, ConfigError, register_kind
from fakefinder.core.errors import FakefinderError
from fakefinder.tasks.base import Kind

PLUGIN_GROUP = "fakefinder.kinds"
PLUGIN_VARIABLE = "FAKEFINDER_KINDS"


class UnknownTaskError(FakefinderError, ValueError):
    """A kind no package registered."""


_KINDS: dict[str, Kind] = {}
_PLUGINS: dict[str, str] = {}  # kind name -> "module:attribute" it was loaded from (kinds outside fakefinder)


def register(kind: Kind) -> Kind:
    """Add a kind: its name becomes a valid `task:`, its section a valid config section, and the face
    detectors it offers serve `prepare`."""
    if not isinstance(kind, Kind):
        raise TypeError(f"register() takes a Kind instance, not {type(kind).__name__}")
    if not kind.name:
        raise ValueError(f"{type(kind).__name__} has no name")
    if kind.name in _KINDS:
        raise ValueError(f"model kind {kind.name!r} is registered twice")
    _KINDS[kind.name] = kind
    register_kind(kind.name, kind.section, kind.section_model, kind.defaults, kind.reads)
    detectors = kind.face_detectors()
    if detectors:
        from fakefinder.faces.detectors import register_detector

        for name, factory in detectors.items():
            register_detector(name, factory)
    module = type(kind).__module__
    if not module.startswith("fakefinder."):
        _PLUGINS[kind.name] = f"{module}:{_attribute_of(kind, module)}"
    return kind


def unregister(name: str) -> Kind:
    """Remove a kind (and its section) registered earlier; returns it."""
    from fakefinder.config import unregister_kind

    kind = _KINDS.pop(name)
    _PLUGINS.pop(name, None)
    unregister_kind(
        name, kind.section if not any(k.section == kind.section for k in _KINDS.values()) else None
    )
    return kind


def _attribute_of(kind: Kind, module: str) -> str:
    found = importlib.import_module(module)
    for name, value in vars(found).items():
        if value is kind:
            return name
    raise ValueError(
        f"kind {kind.name!r} is not a module-level name of {module}: workers could not import it"
    )


def plugin_spec() -> str:
    """The kinds from outside fakefinder, as `FAKEFINDER_KINDS` names them (for worker processes)."""
    return ",".join(_PLUGINS.values())


def load_plugins() -> None:
    """Register the kinds installed packages offer (entry points) and those `FAKEFINDER_KINDS` names."""
    from importlib.metadata import entry_points

    specs = [(point.value, f"entry point {point.name}") for point in entry_points(group=PLUGIN_GROUP)]
    specs += [
        (item.strip(), PLUGIN_VARIABLE)
        for item in os.environ.get(PLUGIN_VARIABLE, "").split(",")
        if item.strip()
    ]
    for spec, source in specs:
        module, _, attribute = spec.partition(":")
        try:
            kind = getattr(importlib.import_module(module), attribute or "KIND")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"{source}: cannot load the kind {spec!r} ({exc})") from exc
        if kind.name not in _KINDS:
            register(kind)


def list_tasks() -> list[str]:
    """The registered kinds' names, sorted."""
    return sorted(_KINDS)


def kinds() -> list[Kind]:
    """The registered kinds in the order they were registered (the order datasets are described in)."""
    return list(_KINDS.values())


def get_task(name: str) -> Kind:
    if name not in _KINDS:
        close = difflib.get_close_matches(str(name), list(_KINDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownTaskError(f"unknown model kind {name!r}{hint}; known kinds: {', '.join(list_tasks())}")
    return _KINDS[name]


def task_for_config(config: Config) -> Kind:
    return get_task(config.task)


def read_model(path: str | Path):
    """The model artifact at `path`: a folder with model.json, or a model file written before
    artifacts existed that a kind reads (converted in memory, read safely)."""
    from fakefinder.core.artifact import ArtifactError, is_artifact, read_artifact

    path = Path(path)
    if is_artifact(path):
        return read_artifact(path)
    if not path.exists():
        raise ArtifactError(f"model not found: {path}")
    for kind in _KINDS.values():
        found = kind.read_legacy(path)
        if found is not None:
            return found
    raise ArtifactError(
        f"{path} is not a model artifact (a folder with model.json) or a model file a kind reads"
    )


def task_for_models(paths: list[Path], config: Config | None = None) -> tuple[Kind, list]:
    """The one kind several artifacts share (an ensemble is of one kind), and the artifacts; with no
    paths, the model that training `config` made."""
    if not paths:
        if config is None:
            raise ConfigError("no model given")
        paths = [task_for_config(config).default_model(config)]
    artifacts = [read_model(p) for p in paths]
    names = sorted({a.kind for a in artifacts})
    if len(names) > 1:
        raise ConfigError(f"models of different kinds cannot be used together: {names}")
    return get_task(names[0]), artifacts


def config_for_kind(config: Config, kind: Kind) -> Config:
    """`config` as the models' kind reads it. A config of another kind (the default one, when a command
    was given a model and no config) keeps the sections both kinds read; the kind's defaults fill the
    rest."""
    from fakefinder.config import sections_of

    if config.task == kind.name:
        return config
    shared = set(config.sections()) & set(sections_of(kind.name))
    tree = config.model_dump(mode="json", include=shared)
    return Config.model_validate({**tree, "task": kind.name})


def model_paths(paths: list[Path], config: Config) -> list[Path]:
    """`paths`, or the artifact training `config` made."""
    return [Path(p) for p in paths] or [task_for_config(config).default_model(config)]
