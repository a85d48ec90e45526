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
    from fakefinder.eval.evaluate import model_name
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


def default_model(config: Config) -> Path:
    return Path(config.dx_llava.train.output_dir) / "final"
