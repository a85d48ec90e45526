"""DX-LLaVA answering: the head's probability, a generated explanation and the label parsed from it,
for face crops (`Explainer`) and for images and videos through the shared predict loop
(`ExplainerPredictor`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fakefinder.config import Config
from fakefinder.core.devices import pick_device
from fakefinder.engine.predict import FilePredictor
from fakefinder.tasks.dx_llava.data import Collator, Conversation, derive_label, load_image
from fakefinder.tasks.dx_llava.model import load_model

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
        conversation = Conversation(
            tokenizer,
            model.num_image_tokens,
            meta.get("template", cfg.model.template),
            cfg.model.system_prompt,
            cfg.data.max_length,
        )
        return cls(
            model, tokenizer, conversation, meta, torch.device(device), max_new_tokens or cfg.max_new_tokens
        )

    @property
    def aspect(self) -> str:
        return self.meta["config"].data.image_aspect_ratio

    def pixels(self, images: list) -> torch.Tensor:
        """Paths or RGB arrays -> a normalised batch."""
        return torch.stack(
            [
                load_image(image, self.meta["image_size"], self.meta["mean"], self.meta["std"], self.aspect)
                for image in images
            ]
        )

    def _prompt_batch(self, n: int, question: str, padding_side: str) -> dict:
        enc = self.conversation.encode_prompt(question)
        item = {
            "input_ids": torch.tensor(enc.input_ids),
            "image_mask": torch.tensor(enc.image_mask),
            "prompt_end": enc.prompt_end,
            "pixel_values": torch.zeros(1),
        }
        return Collator(self.tokenizer.pad_token_id, padding_side)([item] * n)

    @torch.no_grad()
    def head_probabilities(
        self, images: list, question: str = DEFAULT_QUESTION, batch_size: int = 8
    ) -> np.ndarray:
        scores = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = self._prompt_batch(len(chunk), question, "right")
            pixel_values = self.pixels(chunk).to(self.device)
            embeds, projected = self.model.embed(
                batch["input_ids"].to(self.device), batch["image_mask"].to(self.device), pixel_values
            )
            hidden = None
            if self.model.head_source == "last_prompt_token":
                out = self.model.language_model(
                    inputs_embeds=embeds,
                    attention_mask=batch["attention_mask"].to(self.device),
                    output_hidden_states=True,
                )
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
                batch["input_ids"].to(self.device),
                batch["attention_mask"].to(self.device),
                batch["image_mask"].to(self.device),
                self.pixels(chunk).to(self.device),
                max_new_tokens=self.max_new_tokens,
                eos_token_id=self._stop_ids(),
                pad_token_id=self.tokenizer.pad_token_id,
                prompt_end=batch["prompt_end"].to(self.device),
            )
            probabilities = torch.sigmoid(logits.float()).cpu().numpy()
            for row, probability in zip(tokens, probabilities):
                text = self.tokenizer.decode(row, skip_special_tokens=True).strip()
                text_label = derive_label([text])
                head_label = int(probability >= 0.5)
                results.append(
                    {
                        "probability": float(probability),
                        "explanation": text,
                        "text_label": text_label,
                        "agree": None if text_label is None else text_label == head_label,
                    }
                )
        return results

    def _stop_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        end = (
            self.tokenizer.convert_tokens_to_ids("<|im_end|>")
            if "<|im_end|>" in self.tokenizer.get_vocab()
            else None
        )
        ids.add(end)
        return [i for i in ids if i is not None]


class ExplainerPredictor(FilePredictor):
    """`fakefinder predict` with a DX-LLaVA model: the head's probability per face aggregated per
    file, and one explanation per file (for its most suspicious face) with the label parsed from it
    and its agreement with the head. Writes the explanations beside the submission by default."""

    details_default = "_explanations.json"

    def __init__(self, artifact, device, config: Config) -> None:
        self.path = artifact.path
        self.kind = artifact.kind
        self.explainer = Explainer.load(
            artifact.path, str(pick_device(str(device))), config.dx_llava.max_new_tokens
        )
        self.preprocessing = artifact.preprocessing
        self.threshold = 0.5

    def predict_file(self, file_id: str, found, pc, threshold: float) -> tuple[dict, list[dict]]:
        from fakefinder.engine.aggregate import aggregate_scores

        if not found.crops:
            return {
                "probability": pc.no_face_score,
                "label": pc.label_names[int(pc.no_face_score >= threshold)],
                "explanation": "",
                "text_label": None,
                "agree": None,
            }, []
        pixels = [c.pixels for c in found.crops]
        scores = self.explainer.head_probabilities(pixels, batch_size=pc.batch_size)
        per_frame = pd.Series(scores).groupby([c.frame_index for c in found.crops]).max()
        probability = aggregate_scores(per_frame.to_numpy(), pc.aggregation, pc.top_k)
        answer = self.explainer.explain([pixels[int(np.argmax(scores))]])[0]
        agree = (
            None if answer["text_label"] is None else answer["text_label"] == int(probability >= threshold)
        )
        faces = [{"id": file_id, **c.row(), "score": float(s)} for c, s in zip(found.crops, scores)]
        return {
            "probability": probability,
            "label": pc.label_names[int(probability >= threshold)],
            "explanation": answer["explanation"],
            "text_label": answer["text_label"],
            "agree": agree,
        }, faces

    def details(self) -> dict:
        return {"models": [str(self.path)]}

    def summary(self, frame: pd.DataFrame) -> str:
        agreed = [a for a in frame.agree.tolist() if a is not None and a == a]
        return f"DX-LLaVA: the text agrees with the head on {sum(agreed)}/{len(agreed)} file(s)"
