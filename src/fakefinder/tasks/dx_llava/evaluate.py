"""Evaluating DX-LLaVA on a LLaVA JSON set (dx_llava.data.test_json, else eval_json): the binary
head (accuracy, macro-F1, AUC, AP at 0.5) and the generated answers (accuracy and macro-F1 of the
label parsed from them, how many name no label), their agreement; per model a predictions.csv with
the explanations, and one metrics.json and report.html for all models."""

from __future__ import annotations

import csv
import html
import json
import time
from collections import Counter
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
        metrics["texts"] = text_variety([e["explanation"] for e in explained])
        for row, e in zip(rows, explained):
            row.update(
                explanation=e["explanation"],
                text_label=e["text_label"],
                agree=e["agree"],
                named_regions=";".join(e["named_regions"]),
                **({"measured": e["measured"]} if "measured" in e else {}),
            )
        if any(s.evidence for s in subset):
            started = time.perf_counter()
            images = Path(image_folder) if image_folder is not None else Path(json_path).parent
            metrics["grounding"] = grounding(
                explainer, subset, explained, Path(json_path).parent, images, question
            )
            metrics["seconds"]["grounding"] = round(time.perf_counter() - started, 2)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2, default=float))
    frame = pd.DataFrame(rows)
    atomic_write(
        output / "predictions.csv", lambda h: frame.to_csv(h, index=False, quoting=csv.QUOTE_MINIMAL)
    )
    metrics["predictions"] = str(output / "predictions.csv")
    return metrics


def text_variety(texts: list[str]) -> dict:
    """How many distinct explanations, and how often the most common one is written."""
    counts = Counter(" ".join(t.split()) for t in texts)
    top = counts.most_common(1)
    return {
        "n": len(texts),
        "distinct": len(counts),
        "most_common_share": top[0][1] / len(texts) if top else None,
        "most_common": top[0][0] if top else None,
    }


def _agreement(probabilities: np.ndarray, text_labels: list) -> dict:
    """Head vs text verdict (at 0.5), overall and by how sure the head is; and how well the
    probability orders the text's verdicts (AUC: 1 when every text "fake" has a higher probability
    than every text "real")."""
    from sklearn.metrics import roc_auc_score

    known = [(p, t) for p, t in zip(probabilities, text_labels) if t is not None]
    if not known:
        return {"n": 0}
    p, t = np.array(known, dtype=float).T
    agree = (p >= 0.5) == (t == 1)
    sure = (p <= 0.2) | (p >= 0.8)
    return {
        "n": len(known),
        "head_text": float(agree.mean()),
        "head_text_when_sure": float(agree[sure].mean()) if sure.any() else None,
        "head_text_when_unsure": float(agree[~sure].mean()) if (~sure).any() else None,
        "text_vs_probability_auc": float(roc_auc_score(t, p)) if len(set(t)) == 2 else None,
        "mean_probability_text_fake": float(p[t == 1].mean()) if (t == 1).any() else None,
        "mean_probability_text_real": float(p[t == 0].mean()) if (t == 0).any() else None,
    }


def grounding(
    explainer, samples, explained: list[dict], folder: Path, image_folder: Path, question: str, draws: int = 3
) -> dict:
    """The explanations against the evidence make-data kept (`evidence` of each sample):

    - `regions`: precision / recall / F1 of the regions the text names against the regions the true
      mask changed, on fakes with a mask, beside the text that always names the central regions and
      the best single region set (chosen on these very samples); how often a real's or an unmasked
      fake's text claims a region anyway;
    - `agreement`: head vs text verdict, and the text verdict against the probability;
    - `text_map`: the share of the verdict's heatmap in the named regions against their area; the
      map's pointing game against the true mask, beside a face prior's;
    - `deletion`: the fall in the fake probability when the named regions are removed (restored from
      the source crop where the sample has one, else filled with the image's mean colour), against
      removing randomly drawn regions of at least the same area (`draws` draws each)."""
    from fakefinder.faces.regions import region_map
    from fakefinder.media.images import read_image

    masked = [i for i, s in enumerate(samples) if s.binary_label == 1 and (s.evidence or {}).get("mask")]
    claimed = [i for i, e in enumerate(explained) if e["named_regions"]]
    images = {i: read_image(samples[i].image) for i in set(claimed) | set(masked)}
    maps = dict(zip(images, explainer.heatmaps([images[i] for i in images], question))) if images else {}
    labels = {i: region_map(images[i]).labels for i in images}
    probabilities = np.array([e["probability"] for e in explained])
    return {
        "regions": _region_naming(samples, explained, masked),
        "agreement": _agreement(probabilities, [e["text_label"] for e in explained]),
        "text_map": _text_map(explainer, samples, explained, masked, claimed, (images, maps, labels), folder),
        "deletion": _deletion(
            explainer, samples, explained, claimed, (images, labels), image_folder, question, draws
        ),
    }


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _region_naming(samples, explained: list[dict], masked: list[int]) -> dict:
    from fakefinder.tasks.dx_llava import grounding as g

    named = [set(e["named_regions"]) for e in explained]
    truth = [set(samples[i].evidence.get("changed") or []) for i in masked]
    reals = [i for i, s in enumerate(samples) if s.binary_label == 0]
    unmasked = [i for i, s in enumerate(samples) if s.binary_label == 1 and i not in set(masked)]
    measured = {}
    if explained and "measured" in explained[0]:  # the measured line's own regions: the text's ceiling
        from fakefinder.tasks.dx_llava.measured import measured_regions

        lines = [set(measured_regions(explained[i]["measured"])) for i in masked]
        measured = {
            "measured_line": g.naming_scores(lines, truth),
            "text_vs_measured_line": g.naming_scores([named[i] for i in masked], lines),
        }
    return {
        "text": g.naming_scores([named[i] for i in masked], truth),
        **measured,
        "central_baseline": g.constant_scores(g.CENTRAL, truth),
        "best_constant": g.best_constant(truth),
        "cut": "a region is changed when the true mask covers at least half of its pixels",
        "claims_on_reals": _mean([bool(named[i]) for i in reals]),
        "claims_on_unmasked_fakes": _mean([bool(named[i]) for i in unmasked]),
    }


def _text_map(explainer, samples, explained, masked, claimed, drawn, folder: Path) -> dict:
    from fakefinder.engine.localisation import face_prior, pointing_game
    from fakefinder.faces.regions import CODE
    from fakefinder.tasks.dx_llava import grounding as g

    images, maps, labels = drawn
    consistency = [
        g.text_map_consistency(maps[i], labels[i], CODE, explained[i]["named_regions"]) for i in claimed
    ]
    pointing, prior_pointing = [], []
    for i in masked:
        mask = np.asarray(_read_mask(folder / samples[i].evidence["mask"], images[i].shape[:2]))
        pointing.append(pointing_game(maps[i], mask))
        prior_pointing.append(pointing_game(face_prior(*mask.shape), mask))
    return {
        "n": len(consistency),
        "mass_in_named": _mean([c["mass"] for c in consistency]),
        "area_of_named": _mean([c["area"] for c in consistency]),
        "mean_lift": _mean([c["lift"] for c in consistency if c["lift"] is not None]),
        "map_pointing": _mean(pointing),
        "prior_pointing": _mean(prior_pointing),
        "map": "the tower's mask head"
        if explainer.heatmap_method == "mask"
        else "class-activation map of the verdict head on the vision tower",
    }


def _deletion(
    explainer, samples, explained, claimed, drawn, image_folder: Path, question: str, draws: int
) -> dict:
    from fakefinder.engine.localisation import remove
    from fakefinder.faces.regions import CODE
    from fakefinder.tasks.dx_llava import grounding as g

    images, labels = drawn
    rng = np.random.default_rng(0)
    edited, random_edited, areas = [], [], []
    for i in claimed:
        source = _source_pixels(image_folder, (samples[i].evidence or {}).get("source"), images[i].shape)
        where = g.regions_pixels(labels[i], CODE, explained[i]["named_regions"])
        edited.append(remove(images[i], where, source))
        areas.append(float(where.mean()))
        for _ in range(draws):
            chosen = g.area_matched_regions(labels[i], CODE, int(where.sum()), rng)
            random_edited.append(remove(images[i], g.regions_pixels(labels[i], CODE, chosen), source))
    drops = random_drops = np.zeros(0)
    if claimed:
        before = np.array([explained[i]["probability"] for i in claimed])
        drops = before - explainer.head_probabilities(edited, question)
        after_random = explainer.head_probabilities(random_edited, question).reshape(len(claimed), draws)
        random_drops = before - after_random.mean(axis=1)
    return {
        "n": len(claimed),
        "named_drop": _mean(drops),
        "random_drop": _mean(random_drops),
        "named_beats_random": _mean(drops > random_drops),
        "named_area": _mean(areas),
        "draws": draws,
    }


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise ConfigError(f"{path}: the true mask the evaluation data names is missing (run make-data again)")
    with Image.open(path) as opened:
        gray = opened.convert("L")
        if gray.size != (shape[1], shape[0]):
            gray = gray.resize((shape[1], shape[0]), Image.NEAREST)
        return np.asarray(gray) >= 128


def _source_pixels(image_folder: Path, source: str | None, shape) -> np.ndarray | None:
    """The source crop a removal restores from (in the image folder), at the image's size; None
    without one (the removal then fills with the mean colour)."""
    if not source or not (Path(image_folder) / source).is_file():
        return None
    from fakefinder.media.images import load_rgb

    pixels = load_rgb(Path(image_folder) / source, shape[0])
    return pixels if pixels.shape == tuple(shape) else None


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


def grounding_section(name: str, m: dict) -> list[str]:
    """A model's explanations against the evidence: region naming beside its baselines, agreement,
    text-map consistency, deletion and how varied the texts are."""
    from fakefinder.engine.report import html_table

    grounded, texts = m.get("grounding"), m.get("texts")
    parts = []
    if texts:
        parts.append(
            f"<p>{texts['distinct']} distinct explanations in {texts['n']}; the most common is written "
            f"{texts['most_common_share']:.1%} of the time.</p>"
        )
    if not grounded:
        return parts
    regions = grounded["regions"]
    rows = [
        {"answer": label, **{k: regions[key].get(k) for k in ("n", "precision", "recall", "f1")}}
        for label, key in (
            ("the explanations", "text"),
            ("the measured line the model read (its ceiling)", "measured_line"),
            (f"always {'+'.join(regions['central_baseline']['regions'])} (central)", "central_baseline"),
            (f"always {'+'.join(regions['best_constant']['regions'])} (best fixed set)", "best_constant"),
        )
        if key in regions
    ]
    deletion, text_map, agreement = grounded["deletion"], grounded["text_map"], grounded["agreement"]
    facts = [
        {"figure": "text claims a region on a real", "value": regions["claims_on_reals"]},
        {"figure": "... on a fake without a mask", "value": regions["claims_on_unmasked_fakes"]},
        {"figure": "head and text agree", "value": agreement.get("head_text")},
        {
            "figure": "probability orders the text's verdicts (AUC)",
            "value": agreement.get("text_vs_probability_auc"),
        },
        {
            "figure": f"heatmap mass in the named regions ({text_map['map']})",
            "value": text_map["mass_in_named"],
        },
        {"figure": "their share of the face's area", "value": text_map["area_of_named"]},
        {"figure": "heatmap pointing game vs true mask", "value": text_map["map_pointing"]},
        {"figure": "face prior pointing game", "value": text_map["prior_pointing"]},
        {"figure": "fake probability drop, named regions removed", "value": deletion["named_drop"]},
        {"figure": "... random regions of at least that area removed", "value": deletion["random_drop"]},
        {"figure": "named removal drops more than random", "value": deletion["named_beats_random"]},
    ]
    return parts + [
        f"<h2>{html.escape(name)}: explanations against the evidence</h2>",
        f"<p>Region naming on fakes with a true mask ({html.escape(regions['cut'])}).</p>",
        html_table(rows, ["answer", "n", "precision", "recall", "f1"]),
        html_table(facts, ["figure", "value"]),
    ]


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
        parts += grounding_section(name, m)
        answers = pd.read_csv(m["predictions"]).head(shown)
        keep = [
            c
            for c in ("id", "label", "probability", "text_label", "agree", "named_regions", "explanation")
            if c in answers
        ]
        parts += [
            f"<h2>{html.escape(name)}: answers</h2>",
            html_table(answers[keep].to_dict(orient="records"), keep),
        ]
    parts.append("</body></html>")
    return atomic_write_text(Path(folder) / "report.html", "\n".join(parts))
