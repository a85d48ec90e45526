"""The package's layers, read from the source: no import circle, no private names taken from another
package, each layer importing only the ones below it (a kind never another kind), config free of
model code."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "fakefinder"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def imports(name: str) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import in `name`, at any depth (lazy ones too)."""
    tree = ast.parse(MODULES[name].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names if alias.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(PACKAGE):
            names = [alias.name for alias in node.names]
            submodules = [f"{node.module}.{n}" for n in names if f"{node.module}.{n}" in MODULES]
            out += [(m, []) for m in submodules]
            plain = [n for n in names if f"{node.module}.{n}" not in MODULES]
            if plain or not submodules:
                out.append((node.module, plain))
    return out


def graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in imports(name) if target in MODULES and target != name}
        for name in MODULES
    }


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt) :] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:3]) if len(parts) > 2 and parts[1] == "tasks" else ".".join(parts[:2])


def test_no_private_names_from_another_package():
    offenders = []
    for name in MODULES:
        for target, names in imports(name):
            private = [n for n in names if n.startswith("_") and n != "__version__"]
            if private and _package(target) != _package(name):
                offenders.append(f"{name} takes {private} from {target}")
    assert not offenders, offenders


def _layer(module: str) -> str:
    parts = module.split(".")
    return "tasks." + parts[2] if len(parts) > 2 and parts[1] == "tasks" else ".".join(parts[:2])


# what each layer may import besides itself: every layer only from the ones below it
SHARED = {"fakefinder.config", "fakefinder.core", "fakefinder.media", "fakefinder.faces", "fakefinder.engine"}
BELOW = {
    "fakefinder.core": set(),
    "fakefinder.config": {"fakefinder.core"},
    "fakefinder.media": {"fakefinder.core", "fakefinder.config"},
    "fakefinder.faces": {"fakefinder.core", "fakefinder.config", "fakefinder.media"},
    "fakefinder.engine": {"fakefinder.core", "fakefinder.config", "fakefinder.media", "fakefinder.faces"},
    "tasks.base": SHARED,
    "tasks.registry": SHARED | {"tasks.base"},
    "tasks.classification": SHARED | {"tasks.base", "tasks.registry"},
}
KIND_PACKAGES = sorted(
    "tasks." + p.name
    for p in (SRC / PACKAGE / "tasks").iterdir()
    if p.is_dir() and (p / "__init__.py").is_file() and p.name != "classification"
)


def test_each_layer_imports_only_the_layers_below_it():
    assert {"tasks.deepfake_detector", "tasks.llm_lora", "tasks.text_to_image_lora"} <= set(KIND_PACKAGES)
    allowed = dict(BELOW)
    for kind in KIND_PACKAGES:  # a kind takes from the shared layers and its family, never from a kind
        allowed[kind] = SHARED | {
            "tasks.base",
            "tasks.registry",
            "tasks.classification",
            "fakefinder.synthetic",
        }
    offenders = [
        f"{name} -> {target}"
        for name in MODULES
        if _layer(name) in allowed
        for target, _ in imports(name)
        if _layer(target) != _layer(name) and _layer(target) not in allowed[_layer(name)]
    ]
    assert not offenders, offenders


def test_config_imports_no_model_loss_or_metric_code():
    assert {target for target, _ in imports("fakefinder.config")} <= {
        "fakefinder.core.errors",
        "fakefinder.core.files",
    }
