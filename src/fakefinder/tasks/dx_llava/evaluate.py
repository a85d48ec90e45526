"""Evaluating DX-LLaVA on a LLaVA JSON set (dx_llava.data.test_json, else eval_json): the binary
head (accuracy, macro-F1, AUC, AP at 0.5) and the generated answers (accuracy and macro-F1 of the
label parsed from them, how many name no label), their agreement; per model a predictions.csv with
the explanations, and one metrics.json and report.html for all models."""

from __future__ import annotations

import csv
import html
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fakefinder.config import Config, ConfigError
from fakefinder.core.devices import pick_device
from fakefinder.core.events import as_events
from fakefinder.core.files import atomic_write, atomic_write_json, atomic_write_text
from fakefinder.core.results import EvalSummary
from fakefinder.tasks.dx_llava.data import read_samples
from fakefinder.tasks.dx_llava.predict import Explainer

KIND = "dx_llava"


def evaluate_model(
    checkpoint: str | Path,
    json_path: str | Path,
    image_folder: str | Path | None,
    output_dir: str | Path,
    max_samples: int | None = None,
    generate: bool = True,
    explain_max: int | None = None,
    device: str = "auto",
    batch_size: int = 8,
) -> dict:
    """Head (accuracy, macro-F1, AUC at 0.5) and text answer (accuracy, macro-F1 over parsed answers,
    unparsed count) on a LLaVA JSON set; writes metrics.json and predictions.csv."""
    from fakefinder.engine.metrics import binary_metrics

    explainer = Explainer.load(checkpoint, str(pick_device(device)))
    samples, report = read_samples(json_path, image_folder, "skip", max_samples)
    labelled = [s for s in samples if s.binary_label >= 0]
    if not labelled:
        raise ConfigError(f"{json_path}: no sample has a known real/fake label")
    started = time.perf_counter()
    question = labelled[0].turns[0][0]
    images = [s.image for s in labelled]
    head = explainer.head_probabilities(images, question, batch_size)
    head_seconds = time.perf_counter() - started
    truth = np.array([s.binary_label for s in labelled])
    metrics = {
        "checkpoint": str(checkpoint),
        "data": str(json_path),
        "n": len(labelled),
        "head": {
            k: binary_metrics(truth, head, 0.5)[k] for k in ("accuracy", "macro_f1", "auc", "ap", "confusion")
        },
        "seconds": {"head": round(head_seconds, 2)},
    }
    rows = [{"id": s.id, "label": s.binary_label, "probability": float(p)} for s, p in zip(labelled, head)]
    if generate:
        subset = labelled if explain_max is None else labelled[:explain_max]
        started = time.perf_counter()
        explained = explainer.explain([s.image for s in subset], question, max(1, batch_size // 2))
        metrics["seconds"]["generate"] = round(time.perf_counter() - started, 2)
        parsed = [
            (s.binary_label, e["text_label"])
            for s, e in zip(subset, explained)
            if e["text_label"] is not None
        ]
        metrics["text"] = {"n": len(subset), "parsed": len(parsed), "unparsed": len(subset) - len(parsed)}
        if parsed:
            t, p = np.array(parsed).T
            from sklearn.metrics import f1_score

            metrics["text"]["accuracy"] = float((t == p).mean())
            metrics["text"]["accuracy_counting_unparsed_as_wrong"] = float((t == p).sum() / len(subset))
            metrics["text"]["macro_f1"] = float(
                f1_score(t, p, average="macro", labels=[0, 1], zero_division=0)
            )
        agreements = [e["agree"] for e in explained if e["agree"] is not None]
        metrics["agreement"] = float(np.mean(agreements)) if agreements else None
        for row, e in zip(rows, explained):
            row.update(explanation=e["explanation"], text_label=e["text_label"], agree=e["agree"])
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2, default=float))
    frame = pd.DataFrame(rows)
    atomic_write(
        output / "predictions.csv", lambda h: frame.to_csv(h, index=False, quoting=csv.QUOTE_MINIMAL)
    )
    metrics["predictions"] = str(output / "predictions.csv")
    return metrics


def evaluate(config: Config, models: list[Path], events=None) -> EvalSummary:
    """Each model on dx_llava.data.test_json (else eval_json): `evaluate_model` into a folder per model,
    then metrics.json and report.html over all of them in evaluate.output_dir."""
    from fakefinder.engine.report import model_name

    events = as_events(events)
    data, wanted = config.dx_llava.data, config.dx_llava.eval
    json_path = data.test_json or data.eval_json
    if json_path is None:
        raise ConfigError("evaluating a DX-LLaVA model needs dx_llava.data.test_json (or eval_json)")
    out = Path(config.evaluate.output_dir)
    metrics: dict = {
        "kind": KIND,
        "set": "test" if data.test_json else "eval",
        "data": str(json_path),
        "models": {},
    }
    for model in models:
        name = model_name(model)
        entry = evaluate_model(
            model,
            json_path,
            data.image_folder,
            out / name,
            max_samples=config.evaluate.max_samples,
            generate=wanted.text,
            explain_max=wanted.answers,
            device=config.evaluate.device,
            batch_size=config.evaluate.batch_size,
        )
        head, text = entry["head"], entry.get("text", {})
        events.log(
            f"{name}: head accuracy {head['accuracy']:.3f}, macro-F1 {head['macro_f1']:.3f}, AUC "
            f"{head['auc']:.3f} | text accuracy {text.get('accuracy', float('nan')):.3f} "
            f"({text.get('unparsed', 0)} unparsed) | agreement {entry.get('agreement')}",
            "evaluate",
        )
        metrics["models"][name] = entry
    metrics_file = atomic_write_json(out / "metrics.json", metrics)
    report = write_report(out, metrics)
    events.result("evaluate", metrics, f"report: {report}")
    return EvalSummary(
        KIND,
        out,
        metrics,
        metrics_file,
        report,
        {f"predictions {n}": Path(m["predictions"]) for n, m in metrics["models"].items()},
    )


def write_report(folder: Path, metrics: dict, shown: int = 20) -> Path:
    """One page: the figures of every model, then each model's first answers with their explanations."""
    from fakefinder.engine.report import PAGE_HEAD, html_table

    columns = [
        "model",
        "n",
        "head_accuracy",
        "head_macro_f1",
        "head_auc",
        "text_accuracy",
        "text_macro_f1",
        "unparsed",
        "agreement",
    ]
    rows = [
        {
            "model": name,
            "n": m["n"],
            **{f"head_{k}": m["head"].get(k) for k in ("accuracy", "macro_f1", "auc")},
            "text_accuracy": m.get("text", {}).get("accuracy"),
            "text_macro_f1": m.get("text", {}).get("macro_f1"),
            "unparsed": m.get("text", {}).get("unparsed"),
            "agreement": m.get("agreement"),
        }
        for name, m in metrics["models"].items()
    ]
    parts = [
        PAGE_HEAD,
        "<h1>fakefinder evaluation: DX-LLaVA</h1>",
        f"<p>{html.escape(metrics['data'])}: the binary head at 0.5, and the label parsed from each "
        f"generated "
        "answer.</p>",
        "<h2>Summary</h2>",
        html_table(rows, columns),
    ]
    for name, m in metrics["models"].items():
        answers = pd.read_csv(m["predictions"]).head(shown)
        keep = [
            c for c in ("id", "label", "probability", "text_label", "agree", "explanation") if c in answers
        ]
        parts += [
            f"<h2>{html.escape(name)}: answers</h2>",
            html_table(answers[keep].to_dict(orient="records"), keep),
        ]
    parts.append("</body></html>")
    return atomic_write_text(Path(folder) / "report.html", "\n".join(parts))
