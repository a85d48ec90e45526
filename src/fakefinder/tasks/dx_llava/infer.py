"""DX-LLaVA inference: the head's probability, a generated explanation and the label parsed from
it, for face crops, LLaVA JSON test sets (evaluate) and images/videos (predict)."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fakefinder.config import Config, ConfigError
from fakefinder.tasks.dx_llava.data import Collator, Conversation, derive_label, load_image, read_samples
from fakefinder.tasks.dx_llava.model import load_model
from fakefinder.core.files import atomic_write, atomic_write_text
from fakefinder.engine.predict import FilePredictor

DEFAULT_QUESTION = "<image>\nIs this face real or fake? Explain what you see."


@dataclass
class Explainer:
    """A loaded DX-LLaVA checkpoint ready to answer about images."""

    model: torch.nn.Module
    tokenizer: object
    conversation: Conversation
    meta: dict
    device: torch.device
    max_new_tokens: int

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu", max_new_tokens: int | None = None) -> "Explainer":
        model, tokenizer, meta = load_model(path, device)
        cfg = meta["config"]
        conversation = Conversation(tokenizer, model.num_image_tokens, meta.get("template", cfg.model.template),
                                    cfg.model.system_prompt, cfg.data.max_length)
        return cls(model, tokenizer, conversation, meta, torch.device(device), max_new_tokens or cfg.max_new_tokens)

    @property
    def aspect(self) -> str:
        return self.meta["config"].data.image_aspect_ratio

    def pixels(self, images: list) -> torch.Tensor:
        """Paths or RGB arrays -> a normalised batch."""
        return torch.stack([load_image(image, self.meta["image_size"], self.meta["mean"], self.meta["std"], self.aspect)
                            for image in images])

    def _prompt_batch(self, n: int, question: str, padding_side: str) -> dict:
        enc = self.conversation.encode_prompt(question)
        item = {"input_ids": torch.tensor(enc.input_ids), "image_mask": torch.tensor(enc.image_mask),
                "prompt_end": enc.prompt_end, "pixel_values": torch.zeros(1)}
        return Collator(self.tokenizer.pad_token_id, padding_side)([item] * n)

    @torch.no_grad()
    def head_probabilities(self, images: list, question: str = DEFAULT_QUESTION, batch_size: int = 8) -> np.ndarray:
        scores = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = self._prompt_batch(len(chunk), question, "right")
            pixel_values = self.pixels(chunk).to(self.device)
            embeds, projected = self.model.embed(batch["input_ids"].to(self.device), batch["image_mask"].to(self.device),
                                                 pixel_values)
            hidden = None
            if self.model.head_source == "last_prompt_token":
                out = self.model.language_model(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(self.device),
                                                output_hidden_states=True)
                hidden = out.hidden_states[-1]
            logits = self.model.binary_logits(projected, hidden, batch["prompt_end"].to(self.device))
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)

    @torch.no_grad()
    def explain(self, images: list, question: str = DEFAULT_QUESTION, batch_size: int = 4) -> list[dict]:
        """Per image: head probability, generated text, the label parsed from the text (None when the
        text names neither class or both) and whether text and head agree at 0.5."""
        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = self._prompt_batch(len(chunk), question, "left")
            tokens, logits = self.model.generate(
                batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                batch["image_mask"].to(self.device), self.pixels(chunk).to(self.device),
                max_new_tokens=self.max_new_tokens, eos_token_id=self._stop_ids(),
                pad_token_id=self.tokenizer.pad_token_id, prompt_end=batch["prompt_end"].to(self.device),
            )
            probabilities = torch.sigmoid(logits.float()).cpu().numpy()
            for row, probability in zip(tokens, probabilities):
                text = self.tokenizer.decode(row, skip_special_tokens=True).strip()
                text_label = derive_label([text])
                head_label = int(probability >= 0.5)
                results.append({"probability": float(probability), "explanation": text, "text_label": text_label,
                                "agree": None if text_label is None else text_label == head_label})
        return results

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in self.tokenizer.get_vocab() else None
        ids.add(end)
        return [i for i in ids if i is not None]


def _pick_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def evaluate(checkpoint: str | Path, json_path: str | Path, image_folder: str | Path | None, output_dir: str | Path,
             max_samples: int | None = None, generate: bool = True, explain_max: int | None = None,
             device: str = "auto", batch_size: int = 8) -> dict:
    """Head (accuracy, macro-F1, AUC at 0.5) and text answer (accuracy, macro-F1 over parsed answers,
    unparsed count) on a LLaVA JSON set; writes metrics.json and predictions.csv."""
    from fakefinder.engine.metrics import binary_metrics

    explainer = Explainer.load(checkpoint, _pick_device(device))
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
    metrics = {"checkpoint": str(checkpoint), "data": str(json_path), "n": len(labelled),
               "head": {k: binary_metrics(truth, head, 0.5)[k] for k in ("accuracy", "macro_f1", "auc", "ap", "confusion")},
               "seconds": {"head": round(head_seconds, 2)}}
    rows = [{"id": s.id, "label": s.binary_label, "probability": float(p)} for s, p in zip(labelled, head)]
    if generate:
        subset = labelled if explain_max is None else labelled[:explain_max]
        started = time.perf_counter()
        explained = explainer.explain([s.image for s in subset], question, max(1, batch_size // 2))
        metrics["seconds"]["generate"] = round(time.perf_counter() - started, 2)
        parsed = [(s.binary_label, e["text_label"]) for s, e in zip(subset, explained) if e["text_label"] is not None]
        metrics["text"] = {"n": len(subset), "parsed": len(parsed), "unparsed": len(subset) - len(parsed)}
        if parsed:
            t, p = np.array(parsed).T
            from sklearn.metrics import f1_score

            metrics["text"]["accuracy"] = float((t == p).mean())
            metrics["text"]["accuracy_counting_unparsed_as_wrong"] = float((t == p).sum() / len(subset))
            metrics["text"]["macro_f1"] = float(f1_score(t, p, average="macro", labels=[0, 1], zero_division=0))
        agreements = [e["agree"] for e in explained if e["agree"] is not None]
        metrics["agreement"] = float(np.mean(agreements)) if agreements else None
        for row, e in zip(rows, explained):
            row.update(explanation=e["explanation"], text_label=e["text_label"], agree=e["agree"])
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2, default=float))
    frame = pd.DataFrame(rows)
    atomic_write(output / "predictions.csv", lambda h: frame.to_csv(h, index=False, quoting=csv.QUOTE_MINIMAL))
    metrics["predictions"] = str(output / "predictions.csv")
    return metrics


class ExplainerPredictor(FilePredictor):
    """`fakefinder predict` with a DX-LLaVA model: the head's probability per face aggregated per
    file, and one explanation per file (for its most suspicious face) with the label parsed from it
    and its agreement with the head. Writes the explanations beside the submission by default."""

    details_default = "_explanations.json"

    def __init__(self, artifact, device, config: Config) -> None:
        self.path = artifact.path
        self.explainer = Explainer.load(artifact.path, _pick_device(str(device)), config.dx_llava.max_new_tokens)
        self.preprocessing = artifact.preprocessing
        self.threshold = 0.5

    def predict_file(self, file_id: str, found, pc, threshold: float) -> tuple[dict, list[dict]]:
        from fakefinder.engine.aggregate import aggregate_scores

        if not found.crops:
            return {"probability": pc.no_face_score, "label": pc.label_names[int(pc.no_face_score >= threshold)],
                    "explanation": "", "text_label": None, "agree": None}, []
        pixels = [c.pixels for c in found.crops]
        scores = self.explainer.head_probabilities(pixels, batch_size=pc.batch_size)
        per_frame = pd.Series(scores).groupby([c.frame_index for c in found.crops]).max()
        probability = aggregate_scores(per_frame.to_numpy(), pc.aggregation, pc.top_k)
        answer = self.explainer.explain([pixels[int(np.argmax(scores))]])[0]
        agree = None if answer["text_label"] is None else answer["text_label"] == int(probability >= threshold)
        faces = [{"id": file_id, **c.row(), "score": float(s)} for c, s in zip(found.crops, scores)]
        return {"probability": probability, "label": pc.label_names[int(probability >= threshold)],
                "explanation": answer["explanation"], "text_label": answer["text_label"], "agree": agree}, faces

    def details(self) -> dict:
        return {"models": [str(self.path)]}

    def summary(self, frame: pd.DataFrame) -> str:
        agreed = [a for a in frame.agree.tolist() if a is not None and a == a]
        return f"DX-LLaVA: the text agrees with the head on {sum(agreed)}/{len(agreed)} file(s)"
