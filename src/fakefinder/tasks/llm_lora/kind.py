"""The `llm_lora` / `llm_qlora` kinds' functions: train, evaluate (loss, perplexity, exact-match
answers, a report), predict (answers to JSONL or text prompts), export the adapter, merge it."""

from __future__ import annotations

import html
import json
import re
import shutil
import time
from pathlib import Path

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.tasks.llm_lora.config import PROMPT_EXTENSIONS



def train(config: Config, resume: bool | str = False, events=None, overwrite: bool = False):
    from fakefinder.tasks.llm_lora.train import train as run

    return run(config, resume, overwrite=overwrite, events=events)


def default_model(config: Config) -> Path:
    return Path(config.llm.train.output_dir) / "model"


def dataset_settings(path: Path) -> dict:
    """A folder with train.jsonl (and val.jsonl, test.jsonl), or one JSONL file."""
    if not path.is_dir():
        return {"llm.data.train_file": str(path)}
    if not (path / "train.jsonl").is_file():
        raise ConfigError(f"{path} holds no train.jsonl (instruction or conversation lines)")
    settings = {"llm.data.train_file": str(path / "train.jsonl")}
    for name, key in (("val.jsonl", "val_file"), ("test.jsonl", "test_file")):
        if (path / name).is_file():
            settings[f"llm.data.{key}"] = str(path / name)
    return settings


def merge(artifact: Path, output: Path) -> Path:
    from fakefinder.tasks.llm_lora.model import merge as run

    return run(artifact, output)


def export(artifact: Path, output: Path, merged: bool = False) -> Path:
    """The adapter as a folder peft loads (`PeftModel.from_pretrained(base, output)`), its tokenizer
    beside it; with `merged`, the standalone merged model (transformers loads it alone)."""
    from fakefinder.tasks.llm_lora.model import ADAPTER, MERGED, read_artifact_config

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


# ---------------------------------------------------------------------------------------------
# predict


class TextPredictor:
    """A fine-tuned language model answering prompts."""

    def __init__(self, artifact, device, config: Config) -> None:
        from fakefinder.tasks.llm_lora.model import load

        self.artifact = artifact
        self.model, self.tokenizer, self.meta, self.kind = load(artifact.path, device)
        self.device = device
        self.max_new_tokens = config.llm.eval.max_new_tokens
        self.system_prompt = (self.meta.get("llm") or {}).get("data", {}).get("system_prompt")  # as in training

    def answer(self, conversations: list[list[dict]], batch_size: int = 8) -> list[str]:
        from fakefinder.tasks.llm_lora.train import generate

        return generate(self.model, self.tokenizer, conversations, self.max_new_tokens, self.device, batch_size)


def load(artifacts: list, device="cpu", config: Config | None = None):
    if len(artifacts) != 1:
        raise ConfigError("predict: a fine-tuned language model runs alone (no ensemble)")
    return TextPredictor(artifacts[0], device, config or Config(task=artifacts[0].kind))


def predict(config: Config, events=None):
    """Answers to the prompts in `predict.inputs` (.jsonl or .txt files): a CSV (`id,response`) or,
    when `predict.output` ends in .jsonl, one JSON line per prompt."""
    import pandas as pd

    from fakefinder.core.devices import pick_device
    from fakefinder.core.files import atomic_write, atomic_write_text, input_files
    from fakefinder.engine.predict import PredictResult
    from fakefinder.tasks import task_for_models
    from fakefinder.tasks.llm_lora.data import read_prompts

    events = as_events(events)
    pc = config.predict
    _, artifacts = task_for_models([Path(p) for p in pc.models], config)
    try:
        files = input_files(pc.inputs, PROMPT_EXTENSIONS, "a language model answering prompts")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    predictor = load(artifacts, pick_device(pc.device), config)
    prompts = [p for file in files for p in read_prompts(file, predictor.system_prompt)]
    if not prompts:
        raise ConfigError(f"no prompts found in {', '.join(map(str, pc.inputs))}")
    started = time.perf_counter()
    stage = events.stage("predict", total=len(prompts))
    answers = []
    for start in range(0, len(prompts), pc.batch_size):
        chunk = prompts[start : start + pc.batch_size]
        answers += predictor.answer([turns for _, turns in chunk], pc.batch_size)
        stage.advance(len(chunk))
    events.end(stage)
    seconds = time.perf_counter() - started
    table = pd.DataFrame({"id": [i for i, _ in prompts], "prompt": [t[-1]["content"] for _, t in prompts],
                          "response": answers})
    output = Path(pc.output)
    if output.suffix.lower() == ".jsonl":
        atomic_write_text(output, "".join(json.dumps(row) + "\n" for row in table.to_dict(orient="records")))
    else:
        shown = table[["id", "response"]].rename(columns={"id": pc.id_column})
        atomic_write(output, lambda h: shown.to_csv(h, index=False))
    rate = len(prompts) / seconds if seconds else float("inf")
    events.result("predict", {"prompts": len(prompts), "seconds": seconds, "output": str(output)},
                  f"answered {len(prompts)} prompt(s) in {seconds:.1f} s ({rate:.2f}/s)\nanswers: {output}")
    return PredictResult(output, None, table, seconds, rate, {})


# ---------------------------------------------------------------------------------------------
# evaluate


def normalise(text: str) -> str:
    """An answer as exact match compares it: case, surrounding space and punctuation, inner runs of space."""
    return re.sub(r"\s+", " ", text.strip().strip(".!").strip()).casefold()


def _eval_examples(config: Config, saved, events) -> tuple[str, list]:
    """The examples evaluate reads: llm.data.test_file, else the held-out split the model's own
    training used (its saved data settings: the same file, ratio and seed, never a training example).
    The system prompt is the one the model was trained with."""
    from fakefinder.tasks.llm_lora.data import read_jsonl
    from fakefinder.tasks.llm_lora.train import read_splits

    data = config.llm.data
    if data.test_file is not None:
        examples, _ = read_jsonl(data.test_file, data.skip_invalid, saved.data.system_prompt)
        return "test", examples
    _, held, _ = read_splits(saved, events)
    if not held:
        raise ConfigError("evaluate: no held-out examples (give llm.data.test_file, or train with a val_file or "
                          "val_ratio > 0)")
    return "val", held


def evaluate(config: Config, models: list[Path], events=None) -> dict:
    """Per model: loss per response token and perplexity on the set, exact-match accuracy of greedy
    answers (llm.eval.answers of them); metrics.json, answers.jsonl and report.html."""
    from transformers import DataCollatorForSeq2Seq

    from fakefinder.core.devices import pick_device
    from fakefinder.core.files import atomic_write_json, atomic_write_text
    from fakefinder.engine.report import model_name
    from fakefinder.tasks.llm_lora.model import load as load_model
    from fakefinder.tasks.llm_lora.model import read_artifact_config
    from fakefinder.tasks.llm_lora.train import evaluate_losses, generate, tokenized

    events = as_events(events)
    device = pick_device(config.evaluate.device)
    out = Path(config.evaluate.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics: dict = {"kind": config.task, "models": {}}
    rows = []
    for path in models:
        saved, _, _ = read_artifact_config(Path(path))
        set_name, examples = _eval_examples(config, saved, events)
        if config.evaluate.max_samples:
            examples = examples[: config.evaluate.max_samples]
        metrics["set"] = set_name
        model, tokenizer, meta, kind = load_model(path, device)
        encoded = tokenized(examples, tokenizer, saved, set_name, events)
        collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
        entry = evaluate_losses(model, encoded, collator, config.evaluate.batch_size, device, prefix="eval") \
            if len(encoded) else {}
        asked = examples[: config.llm.eval.answers or len(examples)]
        answers = generate(model, tokenizer, [e.messages for e in asked], config.llm.eval.max_new_tokens, device,
                           min(config.evaluate.batch_size, 16))
        correct = [normalise(a) == normalise(e.messages[-1]["content"]) for a, e in zip(answers, asked)]
        name = model_name(Path(path))
        entry.update({"path": str(path), "set": set_name, "n": len(encoded), "answered": len(asked),
                      "exact_match": sum(correct) / len(correct) if correct else float("nan"),
                      "truncated": len(encoded.truncated), "dropped_too_long": len(encoded.dropped)})
        metrics["models"][name] = entry
        rows += [{"model": name, "where": e.where, "prompt": e.messages[-2]["content"] if len(e.messages) > 1 else "",
                  "expected": e.messages[-1]["content"], "response": a, "correct": c}
                 for e, a, c in zip(asked, answers, correct)]
        events.log(f"{name} on {set_name}: loss {entry.get('eval_loss', float('nan')):.4f}, perplexity "
                   f"{entry.get('eval_perplexity', float('nan')):.2f}, exact match {entry['exact_match']:.3f} "
                   f"({len(asked)} answers)", "evaluate")
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    answers_path = atomic_write_text(out / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    report_path = write_report(out, metrics, rows)
    events.result("evaluate", metrics, f"report: {report_path}")
    return {"metrics": metrics, "metrics_path": metrics_path, "answers_path": answers_path,
            "report_path": report_path, "output_dir": out}


def write_report(folder: Path, metrics: dict, rows: list[dict], shown: int = 20) -> Path:
    from fakefinder.core.files import atomic_write_text
    from fakefinder.engine.report import PAGE_HEAD, html_table

    summary = [{"model": name, "set": metrics["set"], "n": m["n"], "loss": m.get("eval_loss"),
                "perplexity": m.get("eval_perplexity"), "exact_match": m["exact_match"], "answered": m["answered"],
                "truncated": m["truncated"]} for name, m in metrics["models"].items()]
    parts = [PAGE_HEAD, "<h1>fakefinder evaluation: fine-tuned language model</h1>", "<h2>Summary</h2>",
             html_table(summary, ["model", "set", "n", "loss", "perplexity", "exact_match", "answered", "truncated"])]
    for name in metrics["models"]:
        parts.append(f"<h2>{html.escape(name)}: answers</h2>")
        mine = [r for r in rows if r["model"] == name][:shown]
        parts.append(html_table([{k: r[k] for k in ("where", "prompt", "expected", "response", "correct")} for r in mine],
                                ["where", "prompt", "expected", "response", "correct"]))
    parts.append("</body></html>")
    return atomic_write_text(Path(folder) / "report.html", "\n".join(parts))
