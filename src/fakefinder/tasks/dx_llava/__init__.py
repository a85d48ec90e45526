"""`dx_llava`: DX-LLaVA, an explainable deepfake detector (LLaVA + a ConvNeXt/CLIP vision tower + a
binary head) trained with the transformers Trainer (stage 1 projector, stage 2 full / LoRA / QLoRA,
DeepSpeed ZeRO-2/3, torchrun); the heavy imports (transformers, peft, bitsandbytes) happen only when
its functions run."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fakefinder.config import Config, ConfigError
from fakefinder.tasks.base import Exported, Kind
from fakefinder.tasks.dx_llava.config import DxLlavaConfig


class DxLlava(Kind):
    name: ClassVar[str] = "dx_llava"
    dataset_layout: ClassVar[str] = "a LLaVA train.json"
    description: ClassVar[str] = "DX-LLaVA: a vision-language deepfake detector that explains its answer"
    section: ClassVar[str] = "dx_llava"
    section_model = DxLlavaConfig
    reads: ClassVar[tuple[str, ...]] = ("data", "faces", "evaluate", "predict")
    short_form: ClassVar[dict[str, str]] = {
        "base_model": "dx_llava.model.language_model",
        "dataset_path": "dx_llava.data.train_json",
        "epochs": "dx_llava.train.epochs",
        "batch_size": "dx_llava.train.batch_size",
        "learning_rate": "dx_llava.train.lr",
    }
    option_sections: ClassVar[tuple[str, ...]] = (
        "dx_llava.train",
        "dx_llava.lora",
        "dx_llava.model",
        "dx_llava.data",
        "dx_llava.eval",
        "dx_llava",
    )
    run_section: ClassVar[str] = "dx_llava.train"
    worker_imports: ClassVar[tuple[str, ...]] = (
        "torch",
        "timm",
        "peft",
        "sklearn.metrics",
        "pandas",
        "matplotlib.figure",
    )
    artifact_dir: ClassVar[str] = "final"
    adapter: ClassVar[str] = "adapter"
    multi_process: ClassVar[bool] = True
    draws_heatmaps: ClassVar[bool] = True  # its tower's mask head, else its verdict's activation map

    def train(self, config: Config, resume=False, events=None, overwrite: bool = False):
        from fakefinder.tasks.dx_llava.train import train

        return train(config, resume, overwrite=overwrite, events=events)

    def evaluate(self, config: Config, models: list[Path], events=None):
        from fakefinder.tasks.dx_llava.evaluate import evaluate

        return evaluate(config, models, events)

    def load(self, artifacts: list, device: Any = "cpu", config: Config | None = None):
        from fakefinder.tasks.dx_llava.predict import ExplainerPredictor

        return ExplainerPredictor(self.one_artifact(artifacts), device, config or Config(task=self.name))

    def dataset_settings(self, path: Path) -> dict:
        from fakefinder.tasks.dx_llava.data import dataset_settings

        return dataset_settings(Path(path))

    def describe_dataset(self, path: Path) -> dict | None:
        from fakefinder.tasks.dx_llava.data import describe

        return describe(Path(path))

    def merge(self, artifact: Path, output: Path) -> Path:
        from fakefinder.tasks.dx_llava.model import merge_lora

        return merge_lora(artifact, output)

    def export(self, artifact: Path, output: Path, merged: bool = False, tolerance: float = 1e-4) -> Exported:
        """The language model's LoRA adapter as a folder peft loads (its tokenizer beside it), or with
        `merged` the whole model with the adapter folded in (a DX-LLaVA artifact)."""
        import shutil

        from fakefinder.tasks.dx_llava.model import merge_lora

        artifact, output = Path(artifact), Path(output)
        if output.exists() and any(output.iterdir()):
            raise ConfigError(f"{output}: exists and is not empty; choose a new folder")
        if merged:
            return Exported(merge_lora(artifact, output), "merged model")
        if not (artifact / self.adapter).is_dir():
            raise ConfigError(
                f"{artifact} holds no LoRA adapter (trained in full mode): export it with --merged "
                "or use the artifact as it is"
            )
        shutil.copytree(artifact / self.adapter, output, dirs_exist_ok=True)
        for item in (artifact / "tokenizer").iterdir():
            shutil.copy2(item, output / item.name)
        return Exported(output, "adapter")

    def demo_datasets(self) -> dict:
        def write(folder: Path) -> None:
            from fakefinder import synthetic
            from fakefinder.engine.tiny import build_char_tokenizer

            synthetic.make_llava_set(folder, count=12, splits=("train", "val", "test"))
            build_char_tokenizer(folder / "tokenizer")

        return {"dx": write}

    def commands(self):
        from fakefinder.tasks.dx_llava.cli import app

        return app


TASK = DxLlava()
