"""LLM fine-tuning with LoRA (`llm_lora`) and QLoRA (`llm_qlora`: the same, on a 4-bit base) with
transformers, peft and bitsandbytes; one `llm` config section serves both kinds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fakefinder.config import Config
from fakefinder.tasks.base import Exported, Kind
from fakefinder.tasks.llm_lora.config import PROMPT_EXTENSIONS, LlmConfig


class LlmLora(Kind):
    name: ClassVar[str] = "llm_lora"
    dataset_layout: ClassVar[str] = "an instruction train.jsonl"
    description: ClassVar[str] = "LoRA fine-tuning of a causal language model"
    section: ClassVar[str] = "llm"
    section_model = LlmConfig
    short_form: ClassVar[dict[str, str]] = {
        "base_model": "llm.model.base",
        "dataset_path": "llm.data.train_file",
        "epochs": "llm.train.epochs",
        "batch_size": "llm.train.batch_size",
        "learning_rate": "llm.train.lr",
    }
    option_sections: ClassVar[tuple[str, ...]] = (
        "llm.train",
        "llm.lora",
        "llm.data",
        "llm.model",
        "llm.eval",
        "llm",
    )
    run_section: ClassVar[str] = "llm.train"
    worker_imports: ClassVar[tuple[str, ...]] = ("torch", "peft", "pandas")
    adapter: ClassVar[str] = "adapter"
    predict_inputs: ClassVar[tuple[str, ...]] = PROMPT_EXTENSIONS

    def train(self, config: Config, resume=False, events=None, overwrite: bool = False):
        from fakefinder.tasks.llm_lora.train import train

        return train(config, resume, overwrite=overwrite, events=events)

    def evaluate(self, config: Config, models: list[Path], events=None):
        from fakefinder.tasks.llm_lora.evaluate import evaluate

        return evaluate(config, models, events)

    def load(self, artifacts: list, device: Any = "cpu", config: Config | None = None):
        from fakefinder.tasks.llm_lora.predict import TextPredictor

        artifact = self.one_artifact(artifacts)
        return TextPredictor(artifact, device, config or Config(task=artifact.kind))

    def dataset_settings(self, path: Path) -> dict:
        from fakefinder.tasks.llm_lora.data import dataset_settings

        return dataset_settings(Path(path))

    def describe_dataset(self, path: Path) -> dict | None:
        from fakefinder.tasks.llm_lora.data import describe

        return describe(Path(path))

    def merge(self, artifact: Path, output: Path) -> Path:
        from fakefinder.tasks.llm_lora.model import merge

        return merge(Path(artifact), Path(output))

    def export(self, artifact: Path, output: Path, merged: bool = False, tolerance: float = 1e-4) -> Exported:
        from fakefinder.tasks.llm_lora.export import export

        return Exported(export(Path(artifact), Path(output), merged), "merged model" if merged else "adapter")

    def demo_datasets(self) -> dict:
        def write(folder: Path) -> None:
            from fakefinder import synthetic
            from fakefinder.engine.tiny import build_char_tokenizer

            synthetic.make_instruction_set(folder, {"train": 24, "val": 6, "test": 6})
            build_char_tokenizer(folder / "tokenizer")

        return {"instructions": write}


class LlmQlora(LlmLora):
    """`llm_lora` on a 4-bit (bitsandbytes) base: the same section, `llm.lora.use_4bit` on by default."""

    name: ClassVar[str] = "llm_qlora"
    description: ClassVar[str] = (
        "QLoRA fine-tuning: a LoRA adapter on a 4-bit (bitsandbytes) causal language model"
    )
    defaults: ClassVar[dict] = {"llm": {"lora": {"use_4bit": True}}}


LORA = LlmLora()
QLORA = LlmQlora()
