"""A fine-tuned language model exported: the adapter as a folder peft loads, its tokenizer beside
it, or (merged) the standalone model transformers loads alone."""

from __future__ import annotations

import shutil
from pathlib import Path

from fakefinder.config import ConfigError


def export(artifact: Path, output: Path, merged: bool = False) -> Path:
    """The adapter as a folder peft loads (`PeftModel.from_pretrained(base, output)`), its tokenizer
    beside it; with `merged`, the standalone merged model (transformers loads it alone)."""
    from fakefinder.tasks.llm_lora.model import ADAPTER, MERGED, merge, read_artifact_config

    artifact, output = Path(artifact), Path(output)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: exists and is not empty; choose a new folder")
    if merged:
        staging = output.with_name(output.name + ".merging")
        shutil.rmtree(staging, ignore_errors=True)
        merge(artifact, staging)
        shutil.rmtree(output, ignore_errors=True)
        (staging / MERGED).rename(output)
        shutil.rmtree(staging)
        return output
    _, meta, _ = read_artifact_config(artifact)
    if meta.get("merged"):
        shutil.copytree(artifact / MERGED, output, dirs_exist_ok=True)
        return output
    shutil.copytree(artifact / ADAPTER, output, dirs_exist_ok=True)
    for item in (artifact / "tokenizer").iterdir():
        shutil.copy2(item, output / item.name)
    return output
