"""A text-to-image LoRA generating images: the base pipeline with the artifact's adapter loaded (at a
strength), images for prompt files (.txt, .jsonl) written as PNGs and listed in a CSV."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.core.results import Predictor, PredictResult
from fakefinder.tasks.text_to_image_lora.config import PROMPT_EXTENSIONS
from fakefinder.tasks.text_to_image_lora.model import ADAPTER_NAME


def _dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class ImageGenerator(Predictor):
    """A pipeline with an artifact's adapter loaded, generating images from prompts."""

    inputs = PROMPT_EXTENSIONS

    def __init__(self, artifact, device, config: Config) -> None:
        from fakefinder.tasks.text_to_image_lora.model import artifact_pipeline, set_sampler

        self.artifact = artifact
        self.kind = artifact.kind
        self.device = device
        self.pipeline, self.saved, self.meta = artifact_pipeline(artifact.path, device, _dtype(device))
        self.sample = config.diffusion.sample
        self.size = self.sample.size or self.meta.get("resolution") or self.saved.data.resolution
        set_sampler(self.pipeline, self.sample.scheduler)

    def scale(self, value: float) -> None:
        """The adapter's strength (0: the base model alone)."""
        if not self.meta.get("merged"):
            self.pipeline.set_adapters([ADAPTER_NAME], adapter_weights=[float(value)])

    @torch.no_grad()
    def generate(self, prompt: str, seed: int, negative_prompt: str | None = None):
        s = self.sample
        generator = torch.Generator(self.device).manual_seed(int(seed))
        return self.pipeline(
            prompt,
            negative_prompt=negative_prompt if negative_prompt is not None else (s.negative_prompt or None),
            num_inference_steps=s.steps,
            guidance_scale=s.guidance_scale,
            height=self.size,
            width=self.size,
            generator=generator,
        ).images[0]

    def run(self, config: Config, events=None) -> PredictResult:
        """Images for the prompts in `predict.inputs` (.txt: one per line; .jsonl: {"prompt",
        "negative_prompt"?, "seed"?, "id"?}), `diffusion.sample.images_per_prompt` each, as PNGs in
        `images/` beside `predict.output`, a CSV (`id,prompt,seed,image`) listing them. A prompt's seed
        is its own or `diffusion.sample.seed` + its row x images_per_prompt (its k-th image: + k), so no two
        images share noise and the same request gives the same images."""
        import pandas as pd

        from fakefinder.core.files import atomic_write, input_files
        from fakefinder.tasks.text_to_image_lora.data import read_prompts

        events = as_events(events)
        pc = config.predict
        try:
            files = input_files(pc.inputs, PROMPT_EXTENSIONS, "a text-to-image model")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        prompts = [row for file in files for row in read_prompts(file)]
        if not prompts:
            raise ConfigError(f"no prompts found in {', '.join(map(str, pc.inputs))}")
        output = Path(pc.output)
        images = output.parent / "images"
        images.mkdir(parents=True, exist_ok=True)
        per_prompt = config.diffusion.sample.images_per_prompt
        stage = events.stage("generate", total=len(prompts) * per_prompt)
        started = time.perf_counter()
        rows = []
        for number, row in enumerate(prompts):
            for k in range(per_prompt):
                seed = (
                    row["seed"]
                    if row["seed"] is not None
                    else config.diffusion.sample.seed + number * per_prompt
                ) + k
                image = self.generate(row["prompt"], seed, row["negative_prompt"])
                name = f"{number:05d}-{k:02d}.png"
                atomic_write(images / name, lambda h, image=image: image.save(h, format="PNG"))
                rows.append(
                    {"id": row["id"], "prompt": row["prompt"], "seed": seed, "image": str(images / name)}
                )
                stage.advance(1)
        events.end(stage)
        seconds = time.perf_counter() - started
        table = pd.DataFrame(rows, columns=["id", "prompt", "seed", "image"])
        atomic_write(output, lambda h: table.rename(columns={"id": pc.id_column}).to_csv(h, index=False))
        rate = len(rows) / seconds if seconds else float("inf")
        events.result(
            "predict",
            {"images": len(rows), "seconds": seconds, "output": str(output), "folder": str(images)},
            f"generated {len(rows)} image(s) in {seconds:.1f} s ({rate:.2f}/s) into {images}\nlist: {output}",
        )
        return PredictResult(output, None, table, seconds, rate, {})
