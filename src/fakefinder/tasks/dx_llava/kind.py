"""The `dx_llava` kind's functions: train (transformers Trainer), load an artifact for predict,
evaluate the head and the text answers on a LLaVA JSON set."""

from __future__ import annotations

from pathlib import Path

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events


def train(config: Config, resume: bool | str = False, events=None, overwrite: bool = False):
    from fakefinder.tasks.dx_llava.train import train as run

    return run(config, resume, overwrite=overwrite, events=events)


def load(artifacts: list, device="cpu", config: Config | None = None):
    from fakefinder.tasks.dx_llava.infer import ExplainerPredictor

    if len(artifacts) != 1:
        raise ConfigError("predict: a DX-LLaVA model runs alone (no ensemble)")
    return ExplainerPredictor(artifacts[0], device, config or Config())


def evaluate(config: Config, models: list[Path], events=None) -> dict:
    """Head and text-answer metrics on dx_llava.data.test_json (else eval_json), per model."""
    from fakefinder.engine.report import model_name
    from fakefinder.tasks.dx_llava.infer import evaluate as run

    events = as_events(events)
    data = config.dx_llava.data
    json_path = data.test_json or data.eval_json
    if json_path is None:
        raise ConfigError("evaluating a DX-LLaVA model needs dx_llava.data.test_json (or eval_json)")
    results = {}
    for model in models:
        out = Path(config.evaluate.output_dir) / model_name(model)
        metrics = run(model, json_path, data.image_folder, out, max_samples=config.evaluate.max_samples,
                      device=config.evaluate.device, batch_size=config.evaluate.batch_size)
        head, text = metrics["head"], metrics.get("text", {})
        events.log(f"{model}: head accuracy {head['accuracy']:.3f}, macro-F1 {head['macro_f1']:.3f}, "
                   f"AUC {head['auc']:.3f} | text accuracy {text.get('accuracy', float('nan')):.3f} "
                   f"({text.get('unparsed', 0)} unparsed) | agreement {metrics.get('agreement')}\n"
                   f"metrics: {out / 'metrics.json'}", "evaluate")
        results[str(model)] = metrics
    return results


def dataset_settings(path: Path) -> dict:
    """A folder of LLaVA JSON files (train.json, val.json or eval.json, test.json, as `fakefinder
    dx-llava make-data` writes them) with its images in `images/` (else where image_folder.txt
    says, else beside the JSON), or one JSON file."""
    if not path.is_dir():
        return {"dx_llava.data.train_json": str(path)}
    if not (path / "train.json").is_file():
        raise ConfigError(f"{path} holds no train.json (LLaVA conversations)")
    settings = {"dx_llava.data.train_json": str(path / "train.json")}
    for name in ("val.json", "eval.json"):
        if (path / name).is_file():
            settings["dx_llava.data.eval_json"] = str(path / name)
            break
    if (path / "test.json").is_file():
        settings["dx_llava.data.test_json"] = str(path / "test.json")
    pointer = path / "image_folder.txt"
    images = path / "images" if (path / "images").is_dir() else \
        Path(pointer.read_text().strip()) if pointer.is_file() else path
    settings["dx_llava.data.image_folder"] = str(images)
    return settings


def default_model(config: Config) -> Path:
    return Path(config.dx_llava.train.output_dir) / "final"


def merge(artifact: Path, output: Path) -> Path:
    """A LoRA / QLoRA model folded into a standalone model at `output`."""
    from fakefinder.tasks.dx_llava.model import merge_lora

    return merge_lora(artifact, output)
