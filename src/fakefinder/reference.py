"""The reference pages of the docs, generated from the code so they cannot drift from it: every
config key of every kind (from the config models: name, type, default, description), every CLI
command (from the typer app) and every REST endpoint (from the server's OpenAPI schema).

    python -m fakefinder.reference docs/reference      # write (or refresh) the pages
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

KIND_PAGE = "config-{kind}.md"
REQUIRED = "required"


# ---------------------------------------------------------------------------------------------
# config


def _type_name(annotation: Any) -> str:
    """A short readable name of a field's type (`int | None`, `list[str]`, `one of: a, b`)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if inner else origin.__name__
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _default_text(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Path):
        value = str(value)
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _item_model(annotation: Any) -> type[BaseModel] | None:
    """The model a list (or dict) field holds, e.g. `data.datasets` -> its dataset entry's model."""
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _item_model(arg)
        if inner is not None:
            return inner
    return None


def _class_rows(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str]]:
    """Rows of a model with no instance at hand (a list entry): its fields' own defaults."""
    rows = []
    for name, field in model.model_fields.items():
        default = (
            REQUIRED if field.is_required() else _default_text(field.get_default(call_default_factory=True))
        )
        rows.append((f"{prefix}.{name}", _type_name(field.annotation), default, field.description or ""))
    return rows


def config_rows(model: BaseModel, prefix: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every field of `model` (an instance: its values are the
    defaults the kind gives), nested sections flattened to dotted keys; the entries of a list of
    sections (`data.datasets`) as `key.N.field`."""
    rows = []
    for name, field in type(model).model_fields.items():
        key = f"{prefix}.{name}"
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            rows += config_rows(value, key)
            continue
        rows.append((key, _type_name(field.annotation), _default_text(value), field.description or ""))
        item = _item_model(field.annotation) if isinstance(value, (list, type(None))) else None
        if item is not None:
            rows += _class_rows(item, f"{key}.N")
    return rows


def config_page(kind: str) -> str:
    """The config reference of one kind: its sections, each key with type, default, description."""
    from fakefinder.config import config_from_dict

    config = config_from_dict({"task": kind}, "the defaults")
    lines = [
        f"# Config reference: `{kind}`",
        "",
        f"Generated from the config models (`python -m fakefinder.reference docs/reference`). A config "
        f"of `task: {kind}` holds these sections; every key can also be given on the command line as "
        "`section.key=value`. Defaults are this kind's.",
        "",
    ]
    for section in config.sections():
        value = getattr(config, section)
        doc = " ".join((type(value).__doc__ or "").split())
        lines += [f"## `{section}`", ""]
        if doc:
            lines += [doc, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, type_name, default, description in config_rows(value, section):
            shown = default if default == REQUIRED else f"`{_cell(default)}`"
            lines.append(f"| `{key}` | {_cell(type_name)} | {shown} | {_cell(description)} |")
        lines.append("")
    return "\n".join(lines)


def sweep_page() -> str:
    """The settings of a sweep (the `sweep:` section of `fakefinder sweep`, the `sweep` of
    `POST /api/sweeps`) and of each key's range."""
    from fakefinder.platform.sweeps import Param, SweepSpec

    lines = [
        "# Sweep reference",
        "",
        "Generated from the sweep models (`python -m fakefinder.reference docs/reference`). The `sweep:` "
        "section of a `fakefinder sweep` config and the `sweep` of a `POST /api/sweeps` request hold these "
        "keys; `space` maps dotted config keys of the kind to a range or choices. See "
        "[Sweeps](../platform.md#sweeps).",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    rows = _class_rows(SweepSpec, "sweep") + _class_rows(Param, "sweep.space.<key>")
    for key, type_name, default, description in rows:
        shown = default if default == REQUIRED else f"`{_cell(default)}`"
        lines.append(f"| `{key}` | {_cell(type_name)} | {shown} | {_cell(description)} |")
    return "\n".join(lines)


def all_config_keys() -> set[str]:
    """Every dotted key any kind's config holds (`train.lr`, `dx_llava.model.region_tokens`, ...)."""
    from fakefinder.config import config_from_dict, known_kinds

    keys = set()
    for kind in known_kinds():
        config = config_from_dict({"task": kind}, "the defaults")
        for section in config.sections():
            keys.add(section)
            for key, *_ in config_rows(getattr(config, section), section):
                parts = key.split(".")
                keys.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return keys


# ---------------------------------------------------------------------------------------------
# CLI


def _command_lines(command, path: str) -> list[str]:
    lines = [f"## `{path}`", "", " ".join((command.help or "").split()), ""]
    params = [p for p in command.params if p.name != "help"]
    if params:
        lines += ["| argument / option | type | default | help |", "|---|---|---|---|"]
        for param in params:
            if param.param_type_name == "option":
                names = ", ".join(param.opts + param.secondary_opts)
            else:
                names = param.name.upper()
            default = param.default
            shown = "" if default in (None, (), []) or callable(default) else _default_text(default)
            kind = _type_name(param.type_descriptor.annotation)
            help_text = getattr(param, "help", "") or ""
            lines.append(f"| `{_cell(names)}` | {_cell(kind)} | {_cell(shown)} | {_cell(help_text)} |")
        lines.append("")
    return lines


def cli_page() -> str:
    import typer

    from fakefinder.cli import app

    group = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "Generated from the command-line app (`python -m fakefinder.reference docs/reference`). Every "
        "command that reads a config takes `-c FILE` and `section.key=value` overrides after it.",
        "",
    ]

    def walk(command, path: str) -> None:
        sub = getattr(command, "commands", None)
        if not sub or (path != "fakefinder" and any(p.name != "help" for p in command.params)):
            lines.extend(_command_lines(command, path))  # a command, or a group that runs on its own too
        for name in sorted(sub or {}):
            walk(sub[name], f"{path} {name}")

    walk(group, "fakefinder")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# REST


def openapi_schema() -> dict:
    import tempfile

    from fakefinder.platform.app import create_app
    from fakefinder.platform.settings import ServeSettings

    with tempfile.TemporaryDirectory() as folder:
        return create_app(ServeSettings(data_dir=Path(folder)), start_manager=False).openapi()


def _form_fields(schema: dict, body: dict) -> str:
    """`; fields: file (binary, required), name` for a multipart body."""
    ref = body.get("multipart/form-data", {}).get("schema", {}).get("$ref", "")
    model = schema.get("components", {}).get("schemas", {}).get(ref.rpartition("/")[2], {})
    if not model:
        return ""
    required = set(model.get("required", []))
    fields = [
        f"`{name}`"
        + (" (required)" if name in required else "")
        + (f": {field['description']}" if field.get("description") else "")
        for name, field in model.get("properties", {}).items()
    ]
    return "; fields: " + ", ".join(fields)


def rest_page() -> str:
    schema = openapi_schema()
    lines = [
        "# REST reference",
        "",
        "Generated from the server's OpenAPI schema (`python -m fakefinder.reference docs/reference`); "
        "a running server serves the same schema at `/openapi.json` and an explorer at `/docs`.",
        "",
    ]
    for path in sorted(schema.get("paths", {})):
        for method, operation in schema["paths"][path].items():
            lines += [f"## `{method.upper()} {path}`", ""]
            summary = " ".join((operation.get("description") or operation.get("summary") or "").split())
            if summary:
                lines += [summary, ""]
            params = operation.get("parameters", [])
            if params:
                lines += ["| parameter | in | required | type |", "|---|---|---|---|"]
                for param in params:
                    kind = param.get("schema", {}).get("type", "")
                    lines.append(
                        f"| `{param['name']}` | {param['in']} | {'yes' if param.get('required') else 'no'} "
                        f"| {kind} |"
                    )
                lines.append("")
            body = operation.get("requestBody", {}).get("content", {})
            if body:
                lines += ["Body: " + ", ".join(f"`{t}`" for t in body) + _form_fields(schema, body), ""]
                examples = body.get("application/json", {}).get("schema", {}).get("examples")
                if examples:
                    lines += ["```json", json.dumps(examples[0], indent=1), "```", ""]
            codes = ", ".join(
                f"{code} {r.get('description', '')}" for code, r in operation["responses"].items()
            )
            lines += [f"Responses: {codes}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Python API

API_OBJECTS = (
    "fakefinder.load_config",
    "fakefinder.faces.prepare.prepare",  # what fakefinder.prepare(config, ...) calls
    "fakefinder.train",
    "fakefinder.evaluate",
    "fakefinder.predict",
    "fakefinder.config.config_from_dict",
    "fakefinder.core.results.TrainSummary",
    "fakefinder.core.results.EvalSummary",
    "fakefinder.core.results.PredictResult",
    "fakefinder.core.events.Event",
)


def api_page() -> str:
    import importlib
    import inspect

    lines = [
        "# Python API reference",
        "",
        "Generated from the code (`python -m fakefinder.reference docs/reference`): what `import "
        "fakefinder` offers, with the signature and description of each (`fakefinder.prepare(config, "
        "...)` hands its arguments to `fakefinder.faces.prepare.prepare`).",
        "",
    ]
    for dotted in API_OBJECTS:
        module, _, name = dotted.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        try:
            signature = str(inspect.signature(obj))
        except (TypeError, ValueError):
            signature = "(...)"
        lines += [f"## `{dotted}`", "", "```python", f"{name}{signature}", "```", ""]
        doc = inspect.getdoc(obj)
        if doc:
            lines += [doc, ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def pages() -> dict[str, str]:
    """File name -> text of every generated reference page."""
    from fakefinder.config import known_kinds

    out = {KIND_PAGE.format(kind=kind): config_page(kind) for kind in known_kinds()}
    out["sweep.md"] = sweep_page()
    out["cli.md"] = cli_page()
    out["rest.md"] = rest_page()
    out["python-api.md"] = api_page()
    return {name: text.rstrip() + "\n" for name, text in out.items()}


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference")):
        print(path)
