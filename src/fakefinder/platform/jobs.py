"""From a request to a job's config: the short form (`model_type`, `base_model`, `dataset_path`,
`epochs`, ... and any key of the kind's config) or a full config, checked the way the CLI checks a
YAML file, with every path confined to the platform's roots and every output in the job's folder.
What maps where comes from the task registry, so a new kind needs nothing here."""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from fakefinder.config import DEFAULT_TASK, RENAMED_KEYS, Config, Section, earlier_names, set_key
from fakefinder.core.errors import FakefinderError
from fakefinder.platform.paths import RequestError, confine, exists
from fakefinder.tasks import get_task, list_tasks
from fakefinder.tasks.base import Kind
from fakefinder.tasks.registry import UnknownTaskError

REQUEST_KEYS = (
    "model_type",
    "name",
    "evaluate",
    "config",
    "num_gpus",
    "notify",
)  # the platform's own keys in a start request
_SCHEME = re.compile(r"^(?:[A-Za-z_][A-Za-z0-9_.+-]*:)+")  # fakefinder:, clip:, timm:local-dir:, hf-hub:


def kind_of(body: dict) -> Kind:
    kind = body.get(
        "model_type",
        (body.get("config") or {}).get("task", DEFAULT_TASK)
        if isinstance(body.get("config"), dict)
        else None,
    )
    field = "model_type" if "model_type" in body else "config.task"
    if not isinstance(kind, str):
        raise RequestError(f"{field}: required, one of {', '.join(list_tasks())}", field)
    try:
        return get_task(kind)
    except UnknownTaskError as exc:
        raise RequestError(f"{field}: {exc}", field) from None


def catalog() -> list[dict]:
    """Every registered kind with its short form, the defaults behind it, its whole default config, the
    files it predicts on (None: images and videos) and whether its models draw heatmaps."""
    kinds = []
    for name in list_tasks():
        task = get_task(name)
        tree = Config.model_validate({"task": name}).model_dump(mode="json")
        defaults = {}
        for short, key in task.short_form.items():
            value = _get(tree, key)
            defaults[short] = value
        kinds.append(
            {
                "name": name,
                "description": task.description,
                "short_form": dict(task.short_form),
                "defaults": defaults,
                "output_key": f"{task.run_section}.output_dir",
                "predict_inputs": list(task.predict_inputs) if task.predict_inputs else None,
                "draws_heatmaps": task.draws_heatmaps,
                "config": tree,
            }
        )
    return kinds


def _get(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _section_model(task: Kind, dotted: str) -> type[BaseModel] | None:
    model: Any = Config
    for i, part in enumerate(dotted.split(".")):
        if i == 0 and part == task.section:
            model = task.section_model
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _dotted_key(task: Kind, key: str) -> str:
    """Where an unqualified request key goes: the first of the kind's option sections that has it."""
    if "." in key:
        return key
    known: list[str] = []
    for section in task.option_sections:
        model = _section_model(task, section)
        if model is None:
            continue
        if key in model.model_fields:
            return f"{section}.{key}"
        known += list(model.model_fields)
    for section in task.option_sections:  # an older name: the config takes it under its new one, with a note
        for dotted in earlier_names(f"{section}.{key}"):
            if dotted in RENAMED_KEYS:
                return dotted
    sections = [*Config.model_fields, *([task.section] if task.section else [])]
    if key in sections:
        return key
    close = difflib.get_close_matches(key, known + list(task.short_form), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise RequestError(
        f"{key}: not a setting of {task.name}{hint}; use a dotted config key (train.lr) for others", key
    )


def build_config(
    body: dict, task: Kind, settings, sections: tuple[str, ...] | None = None
) -> tuple[Config, dict]:
    """The config a start request describes (not yet placed in a job folder), and which request
    field each dotted key came from (to name it in errors)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object", "body")
    origin: dict[str, str] = {}
    if "config" in body:
        tree = body["config"]
        if not isinstance(tree, dict):
            raise RequestError("config: must be a mapping of config sections (as in a YAML config)", "config")
        tree = copy.deepcopy(tree)
        tree.setdefault("task", task.name)
        if tree["task"] != task.name:
            raise RequestError(
                f"config.task: {tree['task']!r} differs from model_type {task.name!r}", "config.task"
            )
        extra = sorted(set(body) - set(REQUEST_KEYS))
        if extra:
            raise RequestError(
                f"{extra[0]}: a full config takes no other keys (put it in 'config')", extra[0]
            )
    else:
        tree = {"task": task.name}
        for key, value in body.items():
            if key in REQUEST_KEYS:
                continue
            if key == "dataset_path":
                if value is None:
                    continue
                if not isinstance(value, str):
                    raise RequestError("dataset_path: must be a path (text)", "dataset_path")
                path = confine(value, settings.dataset_roots, "dataset_path", must_exist=True)
                try:
                    for dotted, setting in task.dataset_settings(path).items():
                        set_key(tree, dotted, setting)
                        origin[dotted] = "dataset_path"
                except (FakefinderError, OSError, ValueError) as exc:
                    raise RequestError(f"dataset_path: {exc}", "dataset_path") from None
                continue
            if key == "task" and value != task.name:
                raise RequestError(
                    f"task: {value!r} differs from model_type {task.name!r}; give one of them", "task"
                )
            dotted = task.short_form.get(key) or _dotted_key(task, key)
            try:
                set_key(tree, dotted, value)
            except FakefinderError as exc:
                raise RequestError(f"{key}: {exc}", key) from None
            origin[dotted] = key
    config = validate(tree, origin)
    return config, origin


def validate(tree: dict, origin: dict[str, str] | None = None) -> Config:
    """A config tree validated; errors name the request field (or the dotted key) and what is wrong."""
    origin = origin or {}
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        lines, fields = [], []
        for error in exc.errors():
            loc = ".".join(str(p) for p in error["loc"])
            field = next(
                (
                    origin[k]
                    for k in sorted(origin, key=len, reverse=True)
                    if loc == k or loc.startswith(k + ".")
                ),
                loc,
            )
            fields.append(field)
            shown = field if field == loc else f"{field} ({loc})"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "not a config key"
            lines.append(f"{shown}: {message}")
        raise RequestError("; ".join(lines), fields[0] if fields else None) from None


def place_outputs(config: Config, task: Kind, folder: Path) -> Config:
    """Every output of the job in its folder: the run, its evaluation, its predictions."""
    tree = config.model_dump(mode="json")
    set_key(tree, f"{task.run_section}.output_dir", str(folder / "run"))
    tree["evaluate"]["output_dir"] = str(folder / "evaluate")
    tree["predict"]["output"] = str(folder / "predict" / "predictions.csv")
    tree["predict"]["details"] = str(folder / "predict" / "details.json")
    task.job_outputs(tree, folder)
    return validate(tree)


def job_config(config: Config | dict, task: Kind, settings, folder: Path) -> Config:
    """A job's config: a config (or its tree, validated) with every output in the job's folder and
    every path confined to the platform's roots."""
    config = validate(config) if isinstance(config, dict) else config
    return confine_paths(place_outputs(config, task, folder), settings, folder)


def confine_paths(config: Config, settings, folder: Path) -> Config:
    """Every path a config reads or writes inside the roots: the dataset and output roots, the job
    folders (artifacts of other jobs). A relative path is looked up in the dataset roots, else it is
    inside the job's folder. Text settings that name an absolute path are checked the same way, and
    one that names a file or folder inside a dataset (`dx/tokenizer`) becomes its full path."""
    roots = [*settings.dataset_roots, settings.jobs_dir, *settings.output_roots]
    tree = config.model_dump(mode="json")
    _confine_section(config, tree, [], roots, settings.dataset_roots, folder)
    for dotted, value in get_task(config.task).platform_settings().items():
        set_key(tree, dotted, value)
    return validate(tree)


def _confine_section(
    section: Section, tree: dict, where: list[str], roots, dataset_roots, folder: Path
) -> None:
    for name in type(section).model_fields:
        if name not in tree:  # a section the config's kind does not hold
            continue
        value = getattr(section, name)
        key = ".".join([*where, name])
        tree[name] = _confine_value(value, tree.get(name), key, roots, dataset_roots, folder)
    for name, value in (section.__pydantic_extra__ or {}).items():  # kinds' sections on Config
        if isinstance(value, Section):
            _confine_section(value, tree[name], [*where, name], roots, dataset_roots, folder)


def _confine_value(value: Any, dumped: Any, key: str, roots, dataset_roots, folder: Path) -> Any:
    if isinstance(value, Section):
        _confine_section(value, dumped, key.split("."), roots, dataset_roots, folder)
        return dumped
    if isinstance(value, (list, tuple)):
        return [
            _confine_value(v, d, f"{key}.{i}", roots, dataset_roots, folder)
            for i, (v, d) in enumerate(zip(value, dumped))
        ]
    if isinstance(value, dict):  # free-form settings (a detector's options, extra arguments): their texts too
        return {
            k: _confine_value(v, dumped.get(k), f"{key}.{k}", roots, dataset_roots, folder)
            for k, v in value.items()
        }
    if isinstance(value, Path):
        text = os.fspath(value)
        if value.is_absolute() or ".." in value.parts:
            return str(confine(text, roots, key))
        for root in dataset_roots:
            if exists(root / value):
                return str(confine(text, dataset_roots, key))
        return str(confine(folder / value, [folder], key))
    if isinstance(value, str) and value:
        bare = _SCHEME.sub("", value)
        if bare.startswith(("/", "~")) or ".." in Path(bare).parts or "local-dir:" in value:
            if bare.startswith("~"):
                raise RequestError(
                    f"{key}: '~' paths are not allowed; give the path inside a dataset root", key
                )
            if bare.startswith("/") or ".." in Path(bare).parts:
                confine(bare, roots, key)
            else:  # a scheme that reads a local folder, relative to the worker: inside the job or a dataset
                confine(bare, [*dataset_roots, folder], key)
        elif (
            bare == value
            and "/" in value
            and "\x00" not in value
            and any(exists(root / value) for root in dataset_roots)
        ):
            return str(
                confine(value, dataset_roots, key)
            )  # a folder in a dataset root (a tokenizer, weights)
    return dumped


def check_output_path(value: Any, settings, field: str = "output_path") -> Path:
    if not isinstance(value, str) or not value:
        raise RequestError(f"{field}: required, a folder inside {settings.exports_dir}", field)
    path = confine(value, settings.output_roots, field)
    if any(path == Path(os.path.realpath(root)) for root in settings.output_roots):
        raise RequestError(f"{field}: name a new folder inside {path}, not the folder itself", field)
    taken = any(path.iterdir()) if path.is_dir() else path.exists()
    if taken:
        raise RequestError(f"{field}: {path} already exists; choose a new folder", field, 409)
    return path


def prepare_config(description: dict, body: dict, settings, folder: Path) -> tuple[Config, Path]:
    """A prepare job for a raw dataset: its layout as detected, the prepared crops written to a new
    dataset `output_name` beside it; further keys go to data / faces / prepare."""
    output_name = body.get("output_name") or f"{description['name']}-prepared"
    if not isinstance(output_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", output_name):
        raise RequestError("output_name: letters, digits, '_', '-' or '.', at most 64", "output_name")
    output = settings.datasets_dir / output_name
    if output.exists():
        raise RequestError(f"output_name: a dataset {output_name!r} exists already", "output_name", 409)
    dataset = dict(description.get("prepare") or {})
    if body.get("layout"):
        dataset.update(layout=body["layout"], root=description["path"])
    if not dataset:
        raise RequestError(
            f"layout: {description['name']} is not in a layout prepare reads (detected "
            f"{description.get('layout')!r}); name one of ffpp, dfdc, celebdf, folder, csv",
            "layout",
        )
    dataset["name"] = re.sub(r"[^A-Za-z0-9_.-]", "_", description["name"])
    tree: dict[str, Any] = {"data": {"datasets": [dataset]}, "prepare": {"output_dir": str(output)}}
    origin = {}
    for key, value in body.items():
        if key in ("output_name", "layout", "name"):
            continue
        dotted = (
            key
            if "." in key
            else next(
                (
                    f"{s}.{key}"
                    for s in ("prepare", "data", "faces")
                    if key in Config.model_fields[s].annotation.model_fields
                ),
                None,
            )
        )
        if dotted is None or dotted.split(".")[0] not in ("prepare", "data", "faces"):
            raise RequestError(f"{key}: not a prepare setting (data.*, faces.*, prepare.*)", key)
        if dotted == "prepare.output_dir":
            raise RequestError(f"{key}: the output is the dataset output_name", key)
        set_key(tree, dotted, value)
        origin[dotted] = key
    config = validate(tree, origin)
    return confine_paths(config, settings, folder), output
