"""Evaluating a fine-tuned language model: loss per response token and perplexity on the held-out
set, exact-match accuracy of greedy answers; metrics.json, answers.jsonl and report.html."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.core.results import EvalSummary


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
        raise ConfigError(
            "evaluate: no held-out examples (give llm.data.test_file, or train with a val_file or val_ratio "
            "> 0)"
        )
    return "val", held


def evaluate(config: Config, models: list[Path], events=None) -> EvalSummary:
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
        entry = (
            evaluate_losses(model, encoded, collator, config.evaluate.batch_size, device, prefix="eval")
            if len(encoded)
            else {}
        )
        asked = examples[: config.llm.eval.answers or len(examples)]
        answers = generate(
            model,
            tokenizer,
            [e.messages for e in asked],
            config.llm.eval.max_new_tokens,
            device,
            min(config.evaluate.batch_size, 16),
        )
        correct = [normalise(a) == normalise(e.messages[-1]["content"]) for a, e in zip(answers, asked)]
        name = model_name(Path(path))
        entry.update(
            {
                "path": str(path),
                "set": set_name,
                "n": len(encoded),
                "answered": len(asked),
                "exact_match": sum(correct) / len(correct) if correct else float("nan"),
                "truncated": len(encoded.truncated),
                "dropped_too_long": len(encoded.dropped),
            }
        )
        metrics["models"][name] = entry
        rows += [
            {
                "model": name,
                "where": e.where,
                "prompt": e.messages[-2]["content"] if len(e.messages) > 1 else "",
                "expected": e.messages[-1]["content"],
                "response": a,
                "correct": c,
            }
            for e, a, c in zip(asked, answers, correct)
        ]
        events.log(
            f"{name} on {set_name}: loss {entry.get('eval_loss', float('nan')):.4f}, perplexity "
            f"{entry.get('eval_perplexity', float('nan')):.2f}, exact match {entry['exact_match']:.3f} "
            f"({len(asked)} answers)",
            "evaluate",
        )
    metrics_path = atomic_write_json(out / "metrics.json", metrics)
    answers_path = atomic_write_text(out / "answers.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    report_path = write_report(out, metrics, rows)
    events.result("evaluate", metrics, f"report: {report_path}")
    return EvalSummary(config.task, out, metrics, metrics_path, report_path, {"answers": answers_path})


def write_report(folder: Path, metrics: dict, rows: list[dict], shown: int = 20) -> Path:
    from fakefinder.core.files import atomic_write_text
    from fakefinder.engine.report import PAGE_HEAD, html_table

    summary = [
        {
            "model": name,
            "set": metrics["set"],
            "n": m["n"],
            "loss": m.get("eval_loss"),
            "perplexity": m.get("eval_perplexity"),
            "exact_match": m["exact_match"],
            "answered": m["answered"],
            "truncated": m["truncated"],
        }
        for name, m in metrics["models"].items()
    ]
    parts = [
        PAGE_HEAD,
        "<h1>fakefinder evaluation: fine-tuned language model</h1>",
        "<h2>Summary</h2>",
        html_table(
            summary, ["model", "set", "n", "loss", "perplexity", "exact_match", "answered", "truncated"]
        ),
    ]
    for name in metrics["models"]:
        parts.append(f"<h2>{html.escape(name)}: answers</h2>")
        mine = [r for r in rows if r["model"] == name][:shown]
        parts.append(
            html_table(
                [{k: r[k] for k in ("where", "prompt", "expected", "response", "correct")} for r in mine],
                ["where", "prompt", "expected", "response", "correct"],
            )
        )
    parts.append("</body></html>")
    return atomic_write_text(Path(folder) / "report.html", "\n".join(parts))
