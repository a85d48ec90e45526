"""The `text_to_image_lora` kind's functions: train, evaluate (held-out denoising loss of the
adapted model against its base, sample images of both, a report), predict (images from prompt
files: extra synthetic fakes), export (the adapter diffusers loads, or a merged pipeline), merge."""

from __future__ import annotations

import html
import json
import shutil
import time
from pathlib import Path

import torch

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.tasks.text_to_image_lora.config import PROMPT_EXTENSIONS

ADAPTER_NAME = "fakefinder"  # the name the artifact's adapter is loaded under in a pipeline


def train(config: Config, resume: bool | str = False, events=None, overwrite: bool = False):
    from fakefinder.tasks.text_to_image_lora.train import train as run

    return run(config, resume, overwrite=overwrite, events=events)


def default_model(config: Config) -> Path:
    return Path(config.diffusion.train.output_dir) / "model"


def dataset_settings(path: Path) -> dict:
    """A folder of captioned images (metadata.jsonl or same-name .txt captions)."""
    from fakefinder.media.images import IMAGE_EXTENSIONS

    if not path.is_dir():
        raise ConfigError(f"{path}: a text-to-image LoRA trains on a folder of captioned images")
    if not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in path.rglob("*")):
        raise ConfigError(f"{path} holds no image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return {"diffusion.data.path": str(path)}


def _dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


# ---------------------------------------------------------------------------------------------
# generating images


class ImageGenerator:
    """A pipeline with an artifact's adapter loaded, generating images from prompts."""

    def __init__(self, artifact, device, config: Config) -> None:
        from fakefinder.tasks.text_to_image_lora.model import artifact_pipeline, set_sampler

        self.artifact = artifact
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
        return self.pipeline(prompt, negative_prompt=negative_prompt if negative_prompt is not None else
                             (s.negative_prompt or None), num_inference_steps=s.steps, guidance_scale=s.guidance_scale,
                             height=self.size, width=self.size, generator=generator).images[0]


def load(artifacts: list, device="cpu", config: Config | None = None):
    if len(artifacts) != 1:
        raise ConfigError("predict: a text-to-image LoRA generates alone (no ensemble)")
    return ImageGenerator(artifacts[0], torch.device(device), config or Config(task=artifacts[0].kind))


def predict(config: Config, events=None):
    """Images for the prompts in `predict.inputs` (.txt: one per line; .jsonl: {"prompt",
    "negative_prompt"?, "seed"?, "id"?}), `diffusion.sample.images_per_prompt` each, as PNGs in
    `images/` beside `predict.output`, a CSV (`id,prompt,seed,image`) listing them. A prompt's seed
    is its own or `diffusion.sample.seed` + its row x images_per_prompt (its k-th image: + k), so no two
    images share noise and the same request gives the same images."""
    import pandas as pd

    from fakefinder.core.devices import pick_device
    from fakefinder.core.files import atomic_write, input_files
    from fakefinder.engine.predict import PredictResult
    from fakefinder.tasks import task_for_models
    from fakefinder.tasks.text_to_image_lora.data import read_prompts

    events = as_events(events)
    pc = config.predict
    _, artifacts = task_for_models([Path(p) for p in pc.models], config)
    try:
        files = input_files(pc.inputs, PROMPT_EXTENSIONS, "a text-to-image model")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    prompts = [row for file in files for row in read_prompts(file)]
    if not prompts:
        raise ConfigError(f"no prompts found in {', '.join(map(str, pc.inputs))}")
    generator = load(artifacts, pick_device(pc.device), config)
    output = Path(pc.output)
    images = output.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    per_prompt = config.diffusion.sample.images_per_prompt
    stage = events.stage("generate", total=len(prompts) * per_prompt)
    started = time.perf_counter()
    rows = []
    for number, row in enumerate(prompts):
        for k in range(per_prompt):
            seed = (row["seed"] if row["seed"] is not None else config.diffusion.sample.seed + number * per_prompt) + k
            image = generator.generate(row["prompt"], seed, row["negative_prompt"])
            name = f"{number:05d}-{k:02d}.png"
            atomic_write(images / name, lambda h, image=image: image.save(h, format="PNG"))
            rows.append({"id": row["id"], "prompt": row["prompt"], "seed": seed, "image": str(images / name)})
            stage.advance(1)
    events.end(stage)
    seconds = time.perf_counter() - started
    table = pd.DataFrame(rows, columns=["id", "prompt", "seed", "image"])
    atomic_write(output, lambda h: table.rename(columns={"id": pc.id_column}).to_csv(h, index=False))
    rate = len(rows) / seconds if seconds else float("inf")
    events.result("predict", {"images": len(rows), "seconds": seconds, "output": str(output), "folder": str(images)},
                  f"generated {len(rows)} image(s) in {seconds:.1f} s ({rate:.2f}/s) into {images}\nlist: {output}")
    return PredictResult(output, None, table, seconds, rate, {})


# ---------------------------------------------------------------------------------------------
# evaluate


def _eval_images(config: Config, saved, events) -> tuple[str, list]:
    """diffusion.data.test_path, else the held-out split the model's own training used (its saved
    data settings: the same folder, ratio and seed, never a training image)."""
    from fakefinder.tasks.text_to_image_lora.data import read_folder
    from fakefinder.tasks.text_to_image_lora.train import read_splits

    test = config.diffusion.data.test_path
    if test is not None:
        items, _ = read_folder(test, config.diffusion.data)
        return "test", items
    if saved.data.path is None:
        return "val", []
    _, held, _ = read_splits(saved, events)
    return "val", held


def evaluate(config: Config, models: list[Path], events=None) -> dict:
    """Per model: the held-out denoising loss (fixed noise at `diffusion.eval.timesteps` timesteps)
    with the adapter and without it (its base), and the sample prompts drawn by both at the same
    seeds; metrics.json, the images and report.html."""
    from diffusers import DDPMScheduler

    from fakefinder.core.devices import pick_device
    from fakefinder.core.files import atomic_write_json
    from fakefinder.core.artifact import read_artifact
    from fakefinder.engine.report import model_name
    from fakefinder.tasks.text_to_image_lora.data import CaptionedImages
    from fakefinder.tasks.text_to_image_lora.train import held_out_loss

    events = as_events(events)
    device = pick_device(config.evaluate.device)
    out = Path(config.evaluate.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"kind": config.task, "models": {}}
    pictures: dict[str, list[dict]] = {}
    for path in models:
        name = model_name(Path(path))
        generator = ImageGenerator(read_artifact(path), device, config)
        set_name, items = _eval_images(config, generator.saved, events)
        if config.evaluate.max_samples:
            items = items[: config.evaluate.max_samples]
        metrics["set"] = set_name
        pipe = generator.pipeline
        parts = {"vae": pipe.vae, "unet": pipe.unet, "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
                 "noise": DDPMScheduler.from_config(pipe.scheduler.config)}
        held = CaptionedImages(items, generator.saved.data, 0, train=False)
        seed, steps = config.diffusion.sample.seed, config.diffusion.eval.timesteps
        entry = {"path": str(path), "set": set_name, "images": len(items), "timesteps": steps}
        merged = bool(generator.meta.get("merged"))
        entry["loss"] = held_out_loss(parts, held, steps, seed, device, config.evaluate.batch_size)
        if not merged:
            generator.scale(0.0)
            entry["base_loss"] = held_out_loss(parts, held, steps, seed, device, config.evaluate.batch_size)
            generator.scale(1.0)
            if entry["loss"] is not None:
                entry["loss_change"] = entry["loss"] - entry["base_loss"]
        folder = out / "samples" / name.replace("/", "_")
        folder.mkdir(parents=True, exist_ok=True)
        shown = []
        for p, prompt in enumerate(config.diffusion.sample.prompts):
            row = {"prompt": prompt, "seed": seed + p}
            for label, scale in (("adapted", 1.0), ("base", 0.0)) if not merged else (("adapted", 1.0),):
                generator.scale(scale)
                image = generator.generate(prompt, seed + p)
                file = folder / f"{p:02d}-{label}.png"
                image.save(file)
                row[label] = str(file.relative_to(out))
            generator.scale(1.0)
            shown.append(row)
        pictures[name] = shown
        metrics["models"][name] = entry
        loss = entry["loss"]
        events.log(f"{name} on {set_name} ({len(items)} images): loss "
                   + (f"{loss:.4f}, base {entry['base_loss']:.4f}" if loss is not None and not merged else
                      f"{loss:.4f}" if loss is not None else "n/a (no held-out images)")
                   + f"; {len(shown)} sample prompt(s)", "evaluate")
        del generator, pipe, parts
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    report_path = write_report(out, metrics, pictures)
    events.result("evaluate", metrics, f"report: {report_path}")
    return {"metrics": metrics, "metrics_path": metrics_path, "report_path": report_path, "output_dir": out}


def write_report(folder: Path, metrics: dict, pictures: dict[str, list[dict]]) -> Path:
    from fakefinder.core.files import atomic_write_text
    from fakefinder.engine.report import PAGE_HEAD, html_table

    columns = ["model", "set", "images", "timesteps", "loss", "base_loss", "loss_change"]
    summary = [{"model": name, **m} for name, m in metrics["models"].items()]
    parts = [PAGE_HEAD, "<h1>fakefinder evaluation: text-to-image LoRA</h1>", "<h2>Held-out denoising loss</h2>",
             "<p>Mean squared error of the predicted noise on held-out images (fixed noise and timesteps), with the "
             "adapter (loss) and without it (base_loss): lower is closer to the training images.</p>",
             html_table(summary, columns)]
    for name, rows in pictures.items():
        parts.append(f"<h2>{html.escape(name)}: samples (adapted | base)</h2>")
        for row in rows:
            images = "".join(f"<img src='{html.escape(row[k])}' alt='{k}' width='256'>" for k in ("adapted", "base")
                             if k in row)
            parts.append(f"<p>{html.escape(row['prompt'])} (seed {row['seed']})</p><div>{images}</div>")
    parts.append("</body></html>")
    return atomic_write_text(Path(folder) / "report.html", "\n".join(parts))


# ---------------------------------------------------------------------------------------------
# export, merge


def merge(artifact: Path, output: Path) -> Path:
    """The adapter fused into the UNet (and text encoder): an artifact of the same kind whose
    `pipeline/` is a whole Stable Diffusion pipeline diffusers loads on its own."""
    from fakefinder.core.artifact import write_artifact
    from fakefinder.tasks.text_to_image_lora.model import PIPELINE, artifact_pipeline

    artifact, output = Path(artifact), Path(output)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: exists and is not empty; choose a new folder")
    pipeline, cfg, meta = artifact_pipeline(artifact, torch.device("cpu"))
    if meta.get("merged"):
        raise ConfigError(f"{artifact}: is merged already (no adapter left)")
    pipeline.fuse_lora(adapter_names=[ADAPTER_NAME], lora_scale=1.0)
    pipeline.unload_lora_weights()
    architecture = {**meta, "merged": True, "merged_from": str(artifact)}
    write_artifact(output, "text_to_image_lora", architecture, [], {"resolution": meta.get("resolution")},
                   training={"merged_from": str(artifact)},
                   extra={PIPELINE: lambda folder: pipeline.save_pretrained(folder, safe_serialization=True)})
    return output


KOHYA_FILE = "lora-kohya.safetensors"  # the single-file layout AUTOMATIC1111, ComfyUI and kohya's scripts read


def write_kohya(source: Path, target: Path, lora: dict) -> Path:
    """The diffusers-format adapter `source` in the kohya layout (`lora_unet_*` / `lora_te1_*` keys,
    `lora_down` / `lora_up`, one `alpha` per layer: the adapter's own, which diffusers' converter
    would set to the rank)."""
    from diffusers.utils import convert_state_dict_to_kohya
    from safetensors.torch import load_file, save_file

    peft_names = ((".lora.down.weight", ".lora_A.weight"), (".lora.up.weight", ".lora_B.weight"),  # the UNet's
                  (".lora_linear_layer.down.weight", ".lora_A.weight"),  # the text encoder's
                  (".lora_linear_layer.up.weight", ".lora_B.weight"))
    named = {}
    for key, value in load_file(str(source)).items():
        for old, new in peft_names:
            key = key.replace(old, new)
        named[key] = value
    kohya = convert_state_dict_to_kohya(named)
    alpha = lora.get("alpha") or lora.get("rank")
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(alpha if alpha is not None else kohya[key]))
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(target), metadata={"ss_network_dim": str(lora.get("rank")),
                                                                                   "ss_network_alpha": str(alpha)})
    return target


def export(artifact: Path, output: Path, merged: bool = False) -> Path:
    """The adapter as a folder `pipeline.load_lora_weights(output)` reads, beside it the same in the
    kohya single-file layout (AUTOMATIC1111, ComfyUI) and the base it belongs to (`fakefinder-base.json`);
    with `merged`, a whole pipeline folder with the adapter fused in."""
    from fakefinder.tasks.text_to_image_lora.model import ADAPTER, LORA_FILE, PIPELINE, read_artifact_config

    artifact, output = Path(artifact), Path(output)
    if output.exists() and any(output.iterdir()):
        raise ConfigError(f"{output}: exists and is not empty; choose a new folder")
    _, meta = read_artifact_config(artifact)
    if merged or meta.get("merged"):
        if meta.get("merged"):
            shutil.copytree(artifact / PIPELINE, output, dirs_exist_ok=True)
            return output
        staging = output.with_name(output.name + ".merging")
        shutil.rmtree(staging, ignore_errors=True)
        merge(artifact, staging)
        shutil.rmtree(output, ignore_errors=True)
        (staging / PIPELINE).rename(output)
        shutil.rmtree(staging)
        return output
    shutil.copytree(artifact / ADAPTER, output, dirs_exist_ok=True)
    write_kohya(output / LORA_FILE, output / KOHYA_FILE, meta.get("lora") or {})
    (output / "fakefinder-base.json").write_text(json.dumps({"base": meta.get("base"), "lora": meta.get("lora"),
                                                             "resolution": meta.get("resolution")}, indent=1))
    return output
