"""The docs stay true to the code: the generated references are what the code generates today, every
config key a page names exists, and the site's pages are all in its navigation."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from fakefinder import reference
from fakefinder.config import RENAMED_KEYS, RENAMED_SECTIONS, known_kinds, sections_of

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def test_the_generated_references_are_up_to_date():
    """`python -m fakefinder.reference docs/reference` writes exactly what is committed."""
    written = {p.name: p.read_text() for p in (DOCS / "reference").glob("*.md")}
    generated = reference.pages()
    assert set(written) == set(generated), "regenerate: python -m fakefinder.reference docs/reference"
    stale = [name for name, text in generated.items() if written[name] != text]
    assert not stale, f"stale: {stale}; regenerate with python -m fakefinder.reference docs/reference"


def test_the_config_reference_covers_every_key_of_every_kind():
    from fakefinder.config import config_from_dict

    for kind in known_kinds():
        page = (DOCS / "reference" / reference.KIND_PAGE.format(kind=kind)).read_text()
        config = config_from_dict({"task": kind})
        for section in sections_of(kind):
            for key, *_ in reference.config_rows(getattr(config, section), section):
                assert f"| `{key}` |" in page, (kind, key)
    assert (
        "| `dx_llava.model.measured_prompt` | bool | `false` |"
        in (DOCS / "reference" / "config-dx_llava.md").read_text()
    )


SPAN = re.compile(r"`([a-z_]+(?:\.[A-Za-z0-9_]+)+)(?:=[^`]*)?`")
FILE_NAME = re.compile(r"\.(?:json|jsonl|yaml|yml|csv|md|py|txt|pt|onnx|png|jpg|html|safetensors)$")


def _named_keys(text: str) -> set[str]:
    """`section.key` (or `section.key=value`) code spans whose first part is a config section."""
    sections = {s for kind in known_kinds() for s in sections_of(kind)}
    found = set()
    for match in SPAN.finditer(text):
        key = match.group(1)
        if FILE_NAME.search(key):  # `model.json`, `data.yaml`: files, not keys
            continue
        if key.split(".")[0] in sections or key.split(".")[0] in RENAMED_SECTIONS:
            found.add(re.sub(r"\.\d+(?=\.|$)", ".N", key))
    return found


def test_every_config_key_a_page_names_exists():
    """A key a guide names in a code span is one a config holds today, or an earlier name the config
    still reads (and says so)."""
    keys = reference.all_config_keys()
    earlier = set(RENAMED_KEYS)
    unknown = {}
    for page in _pages():
        for key in _named_keys(page.read_text()):
            if key in keys or key in earlier or any(key.startswith(old + ".") for old in earlier):
                continue
            if key.split(".")[0] in RENAMED_SECTIONS:
                continue
            unknown.setdefault(str(page.relative_to(ROOT)), []).append(key)
    assert not unknown, f"config keys no config holds: {unknown}"


def test_the_key_check_catches_a_wrong_key():
    keys = reference.all_config_keys()
    named = _named_keys(
        "set `train.batch_size=64` and `train.batchsize=64`, or `data.datasets.0.root` in `data.yaml`"
    )
    assert named == {"train.batch_size", "train.batchsize", "data.datasets.N.root"}
    assert {k for k in named if k not in keys} == {"train.batchsize"}


def test_every_page_is_in_the_navigation():
    def listed(node) -> set[str]:
        if isinstance(node, str):
            return {node}
        if isinstance(node, list):
            return set().union(*(listed(n) for n in node))
        if isinstance(node, dict):
            return set().union(*(listed(v) for v in node.values()))
        return set()

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = listed(config["nav"])
    on_disk = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert on_disk == in_nav


QUICK_RUN = re.compile(r'```bash title="quick run"\n(.*?)```', re.S)


def _quick_runs() -> list:
    return [
        pytest.param(block, id=f"{page.relative_to(DOCS)}#{n}")
        for page in sorted(DOCS.rglob("*.md"))
        for n, block in enumerate(QUICK_RUN.findall(page.read_text()))
    ]


def test_the_guides_that_need_one_have_a_quick_run():
    pages = {param.id.split("#")[0] for param in _quick_runs()}
    kinds = {f"kinds/{p.name}" for p in (DOCS / "kinds").glob("*.md")}
    assert {"prepare.md", "train.md", "evaluate.md", "dx-llava.md", *kinds} <= pages


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """What `fakefinder demo --data-only --output quick` writes, made once for all blocks."""
    out = tmp_path_factory.mktemp("quick")
    subprocess.run(
        [str(Path(sys.prefix) / "bin" / "fakefinder"), "demo", "--data-only", "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out / "data"


def _ultralytics_runs() -> list[Path]:
    """Ultralytics' own folders for runs, which a run must not write to."""
    from fakefinder.tasks.object_detector.model import require

    require()  # Ultralytics imported as fakefinder imports it (its process-wide patches put back)
    from ultralytics import utils

    return [Path(utils.SETTINGS["runs_dir"]), utils.ROOT.parent / "tests" / "tmp" / "runs"]  # 2nd: pytest


def _files(folders: list[Path]) -> set[Path]:
    return {path for folder in folders if folder.exists() for path in folder.rglob("*")}


def _run_block(block: str, folder: Path, demo_data: Path) -> subprocess.CompletedProcess:
    """The block, unchanged, in a fresh folder laid out like the repository (its configs and .venv)."""
    (folder / "configs").symlink_to(ROOT / "configs")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    if "demo --data-only --output quick" in block:
        shutil.copytree(demo_data, folder / "quick" / "data", symlinks=True)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=folder, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def block_runs(tmp_path_factory, demo_data):
    """Every quick-run block started at the first test, two at a time: each is one mostly single-threaded
    process after another (imports, a tiny model), so two share this machine's cores well. Each test
    then waits for its own block. Ultralytics' runs folders are listed before any block runs."""
    runs = _ultralytics_runs()
    before = _files(runs)
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="quick-run")
    started = {
        param.id: pool.submit(_run_block, param.values[0], tmp_path_factory.mktemp("block"), demo_data)
        for param in sorted(_quick_runs(), key=lambda param: -len(param.values[0]))  # the long ones first
    }
    yield {"runs": runs, "before": before, "started": started}
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("block", _quick_runs())
def test_a_quick_run_block_runs_as_shown(block, request, block_runs):
    """The block, unchanged, in a fresh folder laid out like the repository (its configs and .venv).
    A block that starts with `fakefinder demo --data-only --output quick` finds that data there already
    (copied from one session-wide run of the same command), and keeps it, as it does on a second run.
    Nothing lands in Ultralytics' own runs folders."""
    done = block_runs["started"][request.node.callspec.id].result(timeout=1200)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr
    if "object_detector" in block:
        after = _files(block_runs["runs"])
        assert after <= block_runs["before"], (
            f"written outside the run: {sorted(after - block_runs['before'])[:3]}"
        )
