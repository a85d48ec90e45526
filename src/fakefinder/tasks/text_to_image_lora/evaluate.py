"""Evaluating a text-to-image LoRA: the held-out denoising loss of the adapted model against its base
(fixed noise and timesteps), sample images of both at the fixed prompts, a report."""

from __future__ import annotations

import html
from pathlib import Path

from fakefinder.config import Config
from fakefinder.core.events import as_events
from fakefinder.core.results import EvalSummary
from fakefinder.tasks.text_to_image_lora.predict import ImageGenerator

KIND = "text_to_image_lora"


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


def _draw_samples(generator, config: Config, folder: Path, out: Path, merged: bool) -> list[dict]:
    """The sample prompts drawn with the adapter and (unless merged) without it, at the same seeds."""
    folder.mkdir(parents=True, exist_ok=True)
    seed = config.diffusion.sample.seed
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
    return shown


def evaluate(config: Config, models: list[Path], events=None) -> EvalSummary:
    """Per model: the held-out denoising loss (fixed noise at `diffusion.eval.timesteps` timesteps)
    with the adapter and without it (its base), and the sample prompts drawn by both at the same
    seeds; metrics.json, the images and report.html."""
    from diffusers import DDPMScheduler

    from fakefinder.core.artifact import read_artifact
    from fakefinder.core.devices import pick_device
    from fakefinder.core.files import atomic_write_json
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
        parts = {
            "vae": pipe.vae,
            "unet": pipe.unet,
            "text_encoder": pipe.text_encoder,
            "tokenizer": pipe.tokenizer,
            "noise": DDPMScheduler.from_config(pipe.scheduler.config),
        }
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
        shown = _draw_samples(generator, config, out / "samples" / name.replace("/", "_"), out, merged)
        pictures[name] = shown
        metrics["models"][name] = entry
        loss = entry["loss"]
        events.log(
            f"{name} on {set_name} ({len(items)} images): loss "
            + (
                f"{loss:.4f}, base {entry['base_loss']:.4f}"
                if loss is not None and not merged
                else f"{loss:.4f}"
                if loss is not None
                else "n/a (no held-out images)"
            )
            + f"; {len(shown)} sample prompt(s)",
            "evaluate",
        )
        del generator, pipe, parts
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    report_path = write_report(out, metrics, pictures)
    events.result("evaluate", metrics, f"report: {report_path}")
    return EvalSummary(KIND, out, metrics, metrics_path, report_path)


def write_report(folder: Path, metrics: dict, pictures: dict[str, list[dict]]) -> Path:
    from fakefinder.core.files import atomic_write_text
    from fakefinder.engine.report import PAGE_HEAD, html_table

    columns = ["model", "set", "images", "timesteps", "loss", "base_loss", "loss_change"]
    summary = [{"model": name, **m} for name, m in metrics["models"].items()]
    parts = [
        PAGE_HEAD,
        "<h1>fakefinder evaluation: text-to-image LoRA</h1>",
        "<h2>Held-out denoising loss</h2>",
        "<p>Mean squared error of the predicted noise on held-out images (fixed noise and timesteps), with "
        "the adapter (loss) and without it (base_loss): lower is closer to the training images.</p>",
        html_table(summary, columns),
    ]
    for name, rows in pictures.items():
        parts.append(f"<h2>{html.escape(name)}: samples (adapted | base)</h2>")
        for row in rows:
            images = "".join(
                f"<img src='{html.escape(row[k])}' alt='{k}' width='256'>"
                for k in ("adapted", "base")
                if k in row
            )
            parts.append(f"<p>{html.escape(row['prompt'])} (seed {row['seed']})</p><div>{images}</div>")
    parts.append("</body></html>")
    return atomic_write_text(Path(folder) / "report.html", "\n".join(parts))


# ---------------------------------------------------------------------------------------------
# export, merge
