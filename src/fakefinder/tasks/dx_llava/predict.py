"""DX-LLaVA answering: the head's probability, a generated explanation and the label parsed from it,
for face crops (`Explainer`) and for images and videos through the shared predict loop
(`ExplainerPredictor`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fakefinder.config import Config
from fakefinder.core.devices import pick_device
from fakefinder.engine.predict import FilePredictor
from fakefinder.tasks.dx_llava.data import Collator, Conversation, derive_label, load_image
from fakefinder.tasks.dx_llava.measured import Measurer, as_array, mask_maps, unpadded, with_note
from fakefinder.tasks.dx_llava.model import load_model

DEFAULT_QUESTION = "<image>\nIs this face real or fake? Explain what you see."
ANSWER_LINE = "### Answer"  # how make-data's answers end: `### Answer: real|fake`


@dataclass
class Explainer:
    """A loaded DX-LLaVA checkpoint ready to answer about images."""

    model: torch.nn.Module
    tokenizer: object
    conversation: Conversation
    meta: dict
    device: torch.device
    max_new_tokens: int
    measurer: Measurer | None = field(default=None, repr=False)  # with `model.measured_prompt`

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
        measurer = None
        if cfg.model.measured_prompt:
            measurer = Measurer(
                model,
                meta["image_size"],
                meta["mean"],
                meta["std"],
                cfg.data.image_aspect_ratio,
                meta.get("measured", {}).get("threshold"),
            )
        return cls(
            model,
            tokenizer,
            conversation,
            meta,
            torch.device(device),
            max_new_tokens or cfg.max_new_tokens,
            measurer,
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

    @property
    def answer_prefix(self) -> dict | None:
        return self.meta["config"].answer_prefix

    def questions(self, images: list, question: str = DEFAULT_QUESTION) -> list[str]:
        """What each image is asked: `question`, and the line measured on the image where the model
        was trained to read one (`dx_llava.model.measured_prompt`)."""
        if self.measurer is None:
            return [question] * len(images)
        return [with_note(question, note) for note in self.measurer.notes(images)]

    def _prompt_batch(self, questions: list[str], padding_side: str, starts: list[str] | None = None) -> dict:
        """Each question's prompt, followed by its answer's first words in `starts` (if any)."""
        items = []
        for question, start in zip(questions, starts or [""] * len(questions)):
            enc = self.conversation.encode_prompt(question)
            begun = self.tokenizer(start, add_special_tokens=False)["input_ids"] if start else []
            items.append(
                {
                    "input_ids": torch.tensor(enc.input_ids + begun),
                    "image_mask": torch.tensor(enc.image_mask + [False] * len(begun)),
                    "prompt_end": enc.prompt_end,
                    "pixel_values": torch.zeros(1),
                }
            )
        return Collator(self.tokenizer.pad_token_id, padding_side)(items)

    def verdict_logits(
        self,
        pixel_values: torch.Tensor,
        question: str | list[str] = DEFAULT_QUESTION,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The binary head's logit per image of a normalised batch (grad flows when enabled);
        `question`: one for all, or one per image; `features`: the tower's tokens, when computed."""
        questions = [question] * len(pixel_values) if isinstance(question, str) else question
        batch = self._prompt_batch(questions, "right")
        embeds, projected = self.model.embed(
            batch["input_ids"].to(self.device), batch["image_mask"].to(self.device), pixel_values, features
        )
        hidden = None
        if self.model.head_source == "last_prompt_token":
            out = self.model.language_model(
                inputs_embeds=embeds,
                attention_mask=batch["attention_mask"].to(self.device),
                output_hidden_states=True,
            )
            hidden = out.hidden_states[-1]
        return self.model.binary_logits(projected, hidden, batch["prompt_end"].to(self.device))

    @torch.no_grad()
    def head_probabilities(
        self,
        images: list,
        question: str = DEFAULT_QUESTION,
        batch_size: int = 8,
        questions: list[str] | None = None,
    ) -> np.ndarray:
        """The head's fake probability per image; a head that reads the prompt gets each image's own
        question (`questions`, else `questions()`)."""
        scores = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            asked: str | list[str] = question
            if self.model.head_source == "last_prompt_token":
                own = questions[start : start + batch_size] if questions else None
                asked = own or self.questions(chunk, question)
            pixel_values = self.pixels(chunk).to(self.device)
            scores.append(torch.sigmoid(self.verdict_logits(pixel_values, asked).float()).cpu().numpy())
        return np.concatenate(scores) if scores else np.zeros(0)

    @property
    def heatmap_method(self) -> str:
        """`mask` where the tower carries a detector's mask head, else `cam`."""
        return "mask" if getattr(self.model.vision_tower, "mask_head", None) is not None else "cam"

    def heatmaps(
        self, images: list, question: str = DEFAULT_QUESTION, batch_size: int = 8
    ) -> list[np.ndarray]:
        """Where the evidence is, per image (a path or an RGB array), as a float map in [0, 1] at the
        image's own size (a padded image's padding cut away): the mask head of the detector the tower
        came from, where it has one (blurred as its localiser check chose), else the class-activation
        map of the verdict head on the tower's grid of image tokens (captum's Grad-CAM, as for
        detectors; any tower, CNN or ViT, whose tokens form a square grid)."""
        import torch.nn.functional as F

        side = self.meta["image_size"]
        out = []
        for start in range(0, len(images), batch_size):
            chunk = [as_array(image) for image in images[start : start + batch_size]]
            pixel_values = self.pixels(chunk).to(self.device)
            if self.heatmap_method == "mask":
                out += mask_maps(self.model.vision_tower, pixel_values, chunk, self.aspect)
                continue
            raw = self._verdict_cam(pixel_values, question)
            up = F.interpolate(raw, size=(side, side), mode="bilinear", align_corners=False)
            out += [
                np.clip(unpadded(m.cpu().numpy(), image.shape[:2], self.aspect), 0, 1)
                for m, image in zip(up[:, 0], chunk)
            ]
        return out

    def _verdict_cam(self, pixel_values: torch.Tensor, question: str) -> torch.Tensor:
        """(B, 1, h, w) Grad-CAM of the verdict logit on the tower's token grid, each peaking at 1."""
        from captum.attr import LayerGradCam

        network = _VerdictNetwork(self, question)
        with torch.enable_grad():
            maps = LayerGradCam(network, network.grid).attribute(
                pixel_values.clone().requires_grad_(True), relu_attributions=True
            )
        maps = maps.detach().float().sum(dim=1, keepdim=True).clamp_min(0)
        return maps / maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    @torch.no_grad()
    def explain(
        self, images: list, question: str = DEFAULT_QUESTION, batch_size: int = 4, heatmaps: bool = False
    ) -> list[dict]:
        """Per image: head probability, generated text (after the words of the head's verdict where
        `dx_llava.answer_prefix` is set, its closing answer line then restating that verdict), the
        label parsed from the text (None when the text names neither class or both), whether text
        and head agree at 0.5, and the regions the text names as changed; with `heatmaps`, also the
        verdict's `heatmap` and the facial `regions` it falls on (`mouth:0.41;nose:0.22;...`)."""
        from fakefinder.tasks.dx_llava.grounding import named_regions

        results = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            questions = self.questions(chunk, question)
            starts = None
            if self.answer_prefix:  # verdict first: the head decides how the answer starts
                verdicts = self.head_probabilities(chunk, question, len(chunk), questions) >= 0.5
                starts = [self.answer_prefix["fake" if v else "real"] for v in verdicts]
            batch = self._prompt_batch(questions, "left", starts)
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
            for index, (row, probability) in enumerate(zip(tokens, probabilities)):
                text = self.tokenizer.decode(row, skip_special_tokens=True)
                text = ((starts[index] if starts else "") + text).strip()
                if starts:  # verdict first: the closing answer line restates the verdict it began with
                    verdict = "fake" if verdicts[index] else "real"
                    text = f"{text.split(ANSWER_LINE)[0].rstrip()}\n{ANSWER_LINE}: {verdict}"
                text_label = derive_label([text])
                head_label = int(probability >= 0.5)
                results.append(
                    {
                        "probability": float(probability),
                        "explanation": text,
                        "text_label": text_label,
                        "agree": None if text_label is None else text_label == head_label,
                        "named_regions": named_regions(text),
                    }
                )
                if self.measurer is not None:  # the line the model read before it answered
                    results[-1]["measured"] = questions[index].rpartition("\n")[2]
        if heatmaps and images:
            from fakefinder.engine.evidence import regions_of

            for result, image, heatmap in zip(results, images, self.heatmaps(images, question)):
                result["heatmap"] = heatmap
                result["regions"], result["regions_from"] = regions_of(as_array(image), heatmap)
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


class _TokenGrid(torch.nn.Module):
    """The vision tower with its tokens laid out as the square map they came from (B, C, h, w): the
    layer a class-activation map is drawn on."""

    def __init__(self, tower: torch.nn.Module) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.tower(pixel_values.to(next(self.tower.parameters()).dtype))
        side = round(tokens.shape[1] ** 0.5)
        if side * side != tokens.shape[1]:
            raise ValueError(f"the tower's {tokens.shape[1]} tokens form no square map to draw a heatmap on")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


class _VerdictNetwork(torch.nn.Module):
    """The binary verdict as a network of pixels alone (the prompt fixed), through `grid`."""

    def __init__(self, explainer: Explainer, question: str) -> None:
        super().__init__()
        self.explainer, self.question = explainer, question
        self.grid = _TokenGrid(explainer.model.vision_tower)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens = self.grid(pixel_values).flatten(2).transpose(1, 2)
        return self.explainer.verdict_logits(pixel_values, self.question, tokens)


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
        faces[int(np.argmax(scores))]["explanation"] = answer["explanation"]
        return {
            "probability": probability,
            "label": pc.label_names[int(probability >= threshold)],
            "explanation": answer["explanation"],
            "text_label": answer["text_label"],
            "agree": agree,
        }, faces

    def heatmaps(self, crops: list[np.ndarray], faces: list[dict], method: str = "auto") -> list[np.ndarray]:
        """The class-activation map of the verdict head on the tower (`Explainer.heatmaps`)."""
        from fakefinder.config import ConfigError

        drawn = self.explainer.heatmap_method
        if method not in ("auto", drawn):
            raise ConfigError(f"predict.heatmap_method={method}: this DX-LLaVA model draws {drawn} maps")
        return self.explainer.heatmaps(crops)

    def heatmap_caveat(self) -> str | None:
        spec = getattr(self.explainer.model.vision_tower, "mask_spec", None) or {}
        checked = spec.get("checked") or {}
        if checked.get("beats_prior"):
            return None
        what = "its tower's mask head" if spec else "the verdict head's class-activation map"
        return (
            f"{self.path}: its heatmaps ({what}) were not shown on validation to beat a plain face prior; "
            "`fakefinder evaluate` measures them against true masks"
        )

    def details(self) -> dict:
        return {"models": [str(self.path)]}

    def summary(self, frame: pd.DataFrame) -> str:
        agreed = [a for a in frame.agree.tolist() if a is not None and a == a]
        return f"DX-LLaVA: the text agrees with the head on {sum(agreed)}/{len(agreed)} file(s)"
