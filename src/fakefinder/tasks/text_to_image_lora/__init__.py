"""`text_to_image_lora`: a LoRA adapter for a Stable Diffusion 1.x / 2.x UNet (diffusers + peft),
trained on a folder of captioned images, sampled at fixed prompts while it trains; it generates
extra synthetic fakes for deepfake detector training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from fakefinder.config import Config
from fakefinder.tasks.base import Exported, Kind
from fakefinder.tasks.text_to_image_lora.config import PROMPT_EXTENSIONS, DiffusionConfig


class TextToImageLora(Kind):
    name: ClassVar[str] = "text_to_image_lora"
    dataset_layout: ClassVar[str] = "captioned images"
    description: ClassVar[str] = "LoRA for a Stable Diffusion UNet (diffusers)"
    section: ClassVar[str] = "diffusion"
    section_model = DiffusionConfig
    short_form: ClassVar[dict[str, str]] = {
        "base_model": "diffusion.model.base",
        "dataset_path": "diffusion.data.path",
        "epochs": "diffusion.train.epochs",
        "batch_size": "diffusion.train.batch_size",
        "learning_rate": "diffusion.train.lr",
        "image_size": "diffusion.data.resolution",
    }
    option_sections: ClassVar[tuple[str, ...]] = (
        "diffusion.train",
        "diffusion.lora",
        "diffusion.data",
        "diffusion.model",
        "diffusion.sample",
        "diffusion.eval",
        "diffusion",
    )
    run_section: ClassVar[str] = "diffusion.train"
    worker_imports: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "peft")
    adapter: ClassVar[str] = "adapter"
    predict_inputs: ClassVar[tuple[str, ...]] = PROMPT_EXTENSIONS

    def train(self, config: Config, resume=False, events=None, overwrite: bool = False):
        from fakefinder.tasks.text_to_image_lora.train import train

        return train(config, resume, overwrite=overwrite, events=events)

    def evaluate(self, config: Config, models: list[Path], events=None):
        from fakefinder.tasks.text_to_image_lora.evaluate import evaluate

        return evaluate(config, models, events)

    def load(self, artifacts: list, device: Any = "cpu", config: Config | None = None):
        import torch

        from fakefinder.tasks.text_to_image_lora.predict import ImageGenerator

        artifact = self.one_artifact(artifacts)
        return ImageGenerator(artifact, torch.device(device), config or Config(task=artifact.kind))

    def dataset_settings(self, path: Path) -> dict:
        from fakefinder.tasks.text_to_image_lora.data import dataset_settings

        return dataset_settings(Path(path))

    def describe_dataset(self, path: Path) -> dict | None:
        from fakefinder.tasks.text_to_image_lora.data import describe

        return describe(Path(path))

    def merge(self, artifact: Path, output: Path) -> Path:
        from fakefinder.tasks.text_to_image_lora.export import merge

        return merge(Path(artifact), Path(output))

    def export(self, artifact: Path, output: Path, merged: bool = False, tolerance: float = 1e-4) -> Exported:
        from fakefinder.tasks.text_to_image_lora.export import export

        return Exported(
            export(Path(artifact), Path(output), merged), "merged pipeline" if merged else "adapter"
        )

    def platform_settings(self) -> dict[str, Any]:
        return {"diffusion.data.confine": True}  # a captioned folder's images (links followed) lie inside it

    def demo_datasets(self) -> dict:
        from fakefinder import synthetic

        return {"captions": lambda folder: synthetic.make_captioned_folder(folder, count=12, size=48)}


TASK = TextToImageLora()
