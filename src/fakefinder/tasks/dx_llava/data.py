"""DX-LLaVA data: LLaVA conversation JSON -> checked samples with a binary label -> token ids with
answer-only labels and image positions -> padded batches; plus `make_data` (manifest -> JSON).

A sample is `{"id", "image", "conversations": [{"from": "human"|"gpt", "value": ...}, ...]}` with
`<image>` in the first human turn, images relative to an image folder, and an optional
`binary_label` (0 real, 1 fake). Without it the label is read from the answers: `### Answer: x`
first, then the words real/genuine/authentic vs fake/manipulated/deepfake; an answer naming neither
or both is ambiguous and reported.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from fakefinder.config import ConfigError
from fakefinder.core.files import atomic_write_text

IMAGE = "<image>"
REAL_WORDS = ("real", "genuine", "authentic", "pristine", "unaltered", "unmanipulated")
FAKE_WORDS = ("fake", "manipulated", "deepfake", "forged", "synthetic", "face-swapped", "faceswap", "altered")
ANSWER = re.compile(r"###\s*answer\s*:\s*([a-z\-]+)", re.IGNORECASE)
ROLES = {"human": "human", "user": "human", "gpt": "gpt", "assistant": "gpt"}
MAX_LISTED = 8


class DataError(ConfigError):
    """A data file or sample that cannot be used; the message names the file and the sample id."""


@dataclass
class Sample:
    id: str
    image: Path
    turns: list[tuple[str, str]]  # (human, gpt) pairs
    binary_label: int  # 0 real, 1 fake, -1 unknown (left out of the binary loss)
    label_source: str  # field | answer | ambiguous
    evidence: dict | None = None  # what make-data measured on the image (true mask, cues), if kept


def _word_label(text: str) -> int | None:
    words = set(re.findall(r"[a-z][a-z\-]*", text.lower()))
    negated_real = bool(re.search(r"\bnot\s+(real|genuine|authentic)\b", text.lower()))
    real = any(w in words for w in REAL_WORDS) and not negated_real
    fake = any(w in words for w in FAKE_WORDS) or negated_real
    if real != fake:
        return 1 if fake else 0
    return None


def derive_label(answers: list[str]) -> int | None:
    """0/1 from the answer texts, or None when they name neither class or both."""
    for text in reversed(answers):
        match = ANSWER.search(text)
        if match:
            return _word_label(match.group(1))
    return _word_label(" ".join(answers))


def _label_field(value, sample_id: str, source: Path) -> int:
    if value in (0, 1) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.lower() in {"0", "1", "real", "fake"}:
        return {"0": 0, "1": 1, "real": 0, "fake": 1}[value.lower()]
    raise DataError(
        f"{source}: sample {sample_id!r}: binary_label must be 0 (real) or 1 (fake), got {value!r}"
    )


def _parse_one(item, index: int, source: Path, image_folder: Path) -> Sample:
    if not isinstance(item, dict):
        raise DataError(f"{source}: entry {index} is not an object")
    sample_id = str(item.get("id", f"#{index}"))
    where = f"{source}: sample {sample_id!r}"
    image = item.get("image")
    if not isinstance(image, str) or not image:
        raise DataError(f"{where}: no 'image' path")
    path = (image_folder / image) if not Path(image).is_absolute() else Path(image)
    if not path.is_file():
        raise DataError(f"{where}: image {image} not found (looked for {path})")
    conversations = item.get("conversations")
    if not isinstance(conversations, list) or len(conversations) < 2:
        raise DataError(f"{where}: 'conversations' must be a list of at least one human and one gpt turn")
    roles, texts = [], []
    for turn_index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise DataError(f"{where}: turn {turn_index} needs 'from' and a text 'value'")
        role = ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise DataError(f"{where}: turn {turn_index} is from {turn.get('from')!r}; use human or gpt")
        roles.append(role)
        texts.append(turn["value"])
    if roles[0] != "human" or any(a == b for a, b in zip(roles, roles[1:])) or roles[-1] != "gpt":
        raise DataError(f"{where}: turns must alternate human, gpt, ... and end with gpt (got {roles})")
    if IMAGE not in texts[0]:
        raise DataError(f"{where}: the first human turn has no {IMAGE} token")
    if sum(t.count(IMAGE) for t in texts) != 1:
        raise DataError(f"{where}: exactly one {IMAGE} token is supported (in the first human turn)")
    turns = list(zip(texts[0::2], texts[1::2]))
    answers = texts[1::2]
    evidence = item.get("evidence")
    if evidence is not None and not isinstance(evidence, dict):
        raise DataError(f"{where}: 'evidence' must be an object (as make-data writes it)")
    if "binary_label" in item and item["binary_label"] is not None:
        label = _label_field(item["binary_label"], sample_id, source)
        return Sample(sample_id, path, turns, label, "field", evidence)
    label = derive_label(answers)
    if label is None:
        return Sample(sample_id, path, turns, -1, "ambiguous", evidence)
    return Sample(sample_id, path, turns, label, "answer", evidence)


def read_samples(
    json_path: str | Path,
    image_folder: str | Path | None = None,
    ambiguous: str = "skip",
    max_samples: int | None = None,
) -> tuple[list[Sample], dict]:
    """Every sample of a LLaVA JSON file, checked; problems are collected and reported together
    (the message names each sample id). Returns (samples, report)."""
    source = Path(json_path)
    if not source.is_file():
        raise DataError(f"{source}: the LLaVA JSON file does not exist")
    try:
        items = json.loads(source.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{source}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{source}: not UTF-8 text ({exc})") from exc
    if not isinstance(items, list):
        raise DataError(f"{source}: expected a list of samples at the top level")
    folder = Path(image_folder) if image_folder is not None else source.parent
    samples, problems = [], []
    for index, item in enumerate(items[:max_samples] if max_samples else items):
        try:
            samples.append(_parse_one(item, index, source, folder))
        except DataError as exc:
            problems.append(str(exc).replace(f"{source}: ", "", 1))
    if problems:
        listed = "; ".join(problems[:MAX_LISTED]) + (
            f"; ... {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        )
        raise DataError(f"{source}: {len(problems)} bad sample(s): {listed}")
    unclear = [s.id for s in samples if s.label_source == "ambiguous"]
    if unclear and ambiguous == "error":
        raise DataError(
            f"{source}: {len(unclear)} sample(s) whose answer names neither or both classes: "
            f"{unclear[:MAX_LISTED]} (add binary_label, or set dx_llava.data.ambiguous_labels=skip)"
        )
    seen = {}
    for s in samples:
        if s.id in seen:
            raise DataError(f"{source}: sample id {s.id!r} appears twice")
        seen[s.id] = True
    report = {
        "file": str(source),
        "samples": len(samples),
        "ambiguous": unclear,
        "real": sum(s.binary_label == 0 for s in samples),
        "fake": sum(s.binary_label == 1 for s in samples),
        "labels_from_answer": sum(s.label_source == "answer" for s in samples),
    }
    return samples, report


# ---------------------------------------------------------------------------------------------
# conversation templates and tokenisation

VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
CHATML_SYSTEM = "You are a helpful assistant that inspects faces for signs of manipulation."


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    image_mask: list[bool]
    prompt_end: int  # index of the last prompt token before the first answer token


def template_name(tokenizer, wanted: str) -> str:
    if wanted != "auto":
        return wanted
    vocab = tokenizer.get_vocab()
    return "chatml" if "<|im_start|>" in vocab else "vicuna_v1"


class Conversation:
    """Turns text segments into ids; only answer segments (and their end marker) are labelled."""

    def __init__(
        self,
        tokenizer,
        num_image_tokens: int,
        template: str = "auto",
        system: str | None = None,
        max_length: int = 2048,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_image_tokens = num_image_tokens
        self.template = template_name(tokenizer, template)
        self.system = system or (CHATML_SYSTEM if self.template == "chatml" else VICUNA_SYSTEM)
        self.max_length = max_length
        self.placeholder = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _segments(self, turns: list[tuple[str, str | None]]) -> list[tuple[str, bool]]:
        """(text, is_answer) pieces; a None answer ends the list at the assistant's cue (generation)."""
        out: list[tuple[str, bool]] = []
        if self.template == "chatml":
            out.append((f"<|im_start|>system\n{self.system}<|im_end|>\n", False))
            for human, gpt in turns:
                out.append((f"<|im_start|>user\n{human}<|im_end|>\n<|im_start|>assistant\n", False))
                if gpt is None:
                    break
                out += [(f"{gpt}<|im_end|>", True), ("\n", False)]
        else:
            eos = self.tokenizer.eos_token or "</s>"
            out.append((f"{self.system} ", False))
            for human, gpt in turns:
                out.append((f"USER: {human} ASSISTANT:", False))
                if gpt is None:
                    break
                out += [(f" {gpt}{eos}", True)]
        return out

    def encode(self, turns: list[tuple[str, str | None]], sample_id: str = "?") -> Encoded:
        ids: list[int] = []
        labels: list[int] = []
        image: list[bool] = []
        bos = self.tokenizer.bos_token_id
        if self.template == "vicuna_v1" and bos is not None:
            ids, labels, image = [bos], [-100], [False]
        for text, is_answer in self._segments(turns):
            pieces = text.split(IMAGE)
            for index, piece in enumerate(pieces):
                if index:
                    ids += [self.placeholder] * self.num_image_tokens
                    labels += [-100] * self.num_image_tokens
                    image += [True] * self.num_image_tokens
                piece_ids = self._ids(piece)
                ids += piece_ids
                labels += piece_ids if is_answer else [-100] * len(piece_ids)
                image += [False] * len(piece_ids)
        if len(ids) > self.max_length:
            if sum(image[self.max_length :]):
                raise DataError(
                    f"sample {sample_id!r}: longer than max_length={self.max_length} before its image ends"
                )
            ids, labels, image = ids[: self.max_length], labels[: self.max_length], image[: self.max_length]
        answer_at = next((i for i, label in enumerate(labels) if label != -100), len(ids))
        return Encoded(ids, labels, image, max(0, answer_at - 1))

    def encode_prompt(self, question: str) -> Encoded:
        """The prompt for one question, ending at the assistant's cue (for generation)."""
        return self.encode([(question, None)])


# ---------------------------------------------------------------------------------------------
# images


def load_image(path, size: int, mean, std, aspect: str = "pad") -> torch.Tensor:
    """RGB image (a path or an HxWx3 uint8 array) -> (3, size, size) normalised tensor; `pad` first
    pads to a square with the mean colour."""
    if isinstance(path, np.ndarray):
        img = Image.fromarray(path).convert("RGB")
    else:
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{path}: cannot read the image ({exc})") from exc
    if aspect == "pad" and img.width != img.height:
        side = max(img.width, img.height)
        fill = tuple(int(round(255 * m)) for m in mean)
        square = Image.new("RGB", (side, side), fill)
        square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
        img = square
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    array = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class ConversationDataset(Dataset):
    """Samples tokenised up front (their lengths drive length-grouped batching); images load lazily."""

    def __init__(
        self,
        samples: list[Sample],
        conversation: Conversation,
        image_size: int,
        mean,
        std,
        aspect: str = "pad",
    ) -> None:
        self.samples = samples
        self.encoded = [conversation.encode(s.turns, s.id) for s in samples]
        self.image_size, self.mean, self.std, self.aspect = image_size, tuple(mean), tuple(std), aspect
        self.lengths = [len(e.input_ids) for e in self.encoded]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample, enc = self.samples[index], self.encoded[index]
        return {
            "input_ids": torch.tensor(enc.input_ids),
            "labels": torch.tensor(enc.labels),
            "image_mask": torch.tensor(enc.image_mask),
            "prompt_end": enc.prompt_end,
            "pixel_values": load_image(sample.image, self.image_size, self.mean, self.std, self.aspect),
            "binary_labels": float(sample.binary_label),
        }


@dataclass
class Collator:
    pad_token_id: int
    padding_side: str = "right"

    def __call__(self, batch: list[dict]) -> dict:
        longest = max(len(b["input_ids"]) for b in batch)
        n = len(batch)
        ids = torch.full((n, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, longest), -100, dtype=torch.long)
        image = torch.zeros((n, longest), dtype=torch.bool)
        attention = torch.zeros((n, longest), dtype=torch.long)
        prompt_end = torch.zeros(n, dtype=torch.long)
        for i, b in enumerate(batch):
            length = len(b["input_ids"])
            start = longest - length if self.padding_side == "left" else 0
            ids[i, start : start + length] = b["input_ids"]
            if "labels" in b:
                labels[i, start : start + length] = b["labels"]
            image[i, start : start + length] = b["image_mask"]
            attention[i, start : start + length] = 1
            prompt_end[i] = start + b["prompt_end"]
        out = {
            "input_ids": ids,
            "attention_mask": attention,
            "image_mask": image,
            "prompt_end": prompt_end,
            "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
        }
        if "labels" in batch[0]:
            out["labels"] = labels
        if "binary_labels" in batch[0]:
            out["binary_labels"] = torch.tensor([b["binary_labels"] for b in batch], dtype=torch.float32)
        return out


class LengthGroupedSampler(Sampler):
    """Random order, but each run of `batch_size * 50` samples sorted by length so a batch holds
    similar lengths (less padding); the longest batch comes first (an early out-of-memory)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int = 0) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        chunk = self.batch_size * 50
        groups = [
            sorted(order[i : i + chunk], key=lambda j: -self.lengths[j]) for i in range(0, len(order), chunk)
        ]
        batches = [g[i : i + self.batch_size] for g in groups for i in range(0, len(g), self.batch_size)]
        if batches:
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        return iter([i for b in batches for i in b])


# ---------------------------------------------------------------------------------------------
# manifest -> LLaVA JSON

QUESTIONS = [
    "<image>\nIs this face real or fake?",
    "<image>\nHas this face been manipulated? Explain what you see.",
    "<image>\nLook at this face carefully. Is it an authentic photo or a deepfake?",
    "<image>\nDoes this image show a genuine face or a digitally altered one?",
    "<image>\nInspect the face for signs of forgery and give your verdict.",
    "<image>\nWould you say this face comes from a real video or from a face-swap method?",
]


def _crop_side(root: Path, rows) -> int:
    from PIL import Image

    with Image.open(root / rows.path.iloc[0]) as first:
        return max(first.size)


def split_evidence(rows, root: Path, masks: Path, ids: list[str]) -> list[dict]:
    """The measured evidence (`fakefinder.faces.cues`) of each row of one split, in row order: for a
    fake its true mask (`fakefinder.faces.truth`: its source difference, or the dataset's own mask)
    when it has a usable one, written to `masks/<id>.png`; `origin` says where the truth came from or
    why there is none."""
    from PIL import Image

    from fakefinder.core.files import atomic_write
    from fakefinder.faces.cues import measure
    from fakefinder.faces.truth import manifest_truths, source_partners
    from fakefinder.media.images import load_rgb

    frame = rows.reset_index(drop=True)
    size = _crop_side(root, frame)
    truths = manifest_truths(frame, root, size)
    partners = source_partners(frame)
    out = []
    for i, row in enumerate(frame.itertuples(index=False)):
        truth = truths.get(i)
        image = (
            truth.image if truth is not None and truth.image is not None else load_rgb(root / row.path, size)
        )
        if row.label != "fake":
            out.append({"origin": "real", **measure(image).as_dict()})
            continue
        if truth is None or truth.mask is None:
            reason = truth.origin if truth is not None else "no source crop and no dataset mask"
            out.append({"origin": reason, **measure(image).as_dict(), "face_changed": None})
            continue
        mask_file = masks / f"{ids[i]}.png"
        gray = truth.mask.astype(np.uint8) * 255
        atomic_write(mask_file, lambda h, g=gray: Image.fromarray(g).save(h, format="PNG"))
        out.append(
            {
                "origin": truth.origin,
                **measure(image, truth.mask).as_dict(),
                "mask": f"{masks.name}/{mask_file.name}",
                "source": frame.path.iloc[partners[i]] if partners[i] >= 0 else None,
            }
        )
    return out


def make_data(
    manifest_path: str | Path,
    output_dir: str | Path,
    splits: list[str] | None = None,
    seed: int = 0,
    max_per_split: int | None = None,
) -> dict[str, Path]:
    """One LLaVA JSON per split of a prepared manifest, each answer written from the evidence of its
    image (`fakefinder.tasks.dx_llava.grounding.answer_text`) and the evidence kept beside it
    (`evidence`: what `evaluate` scores the explanations against; true masks in `masks/`). Images
    stay where they are: `image` is relative to the manifest's root, the `image_folder` to train with.
    The question of each sample is drawn (seeded) from a few phrasings; the answer never is."""
    from fakefinder.faces.manifest import read_manifest
    from fakefinder.tasks.dx_llava.grounding import answer_text

    manifest = read_manifest(Path(manifest_path))
    root = Path(manifest.attrs["root"])
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    written = {}
    wanted = splits or sorted(manifest.split.unique())
    for split in wanted:
        rows = manifest[manifest.split == split]
        if rows.empty:
            raise DataError(
                f"{manifest_path}: split {split!r} has no rows (splits: {sorted(manifest.split.unique())})"
            )
        rng = random.Random(f"{seed}:{split}")
        if max_per_split and len(rows) > max_per_split:
            rows = rows.sample(n=max_per_split, random_state=seed).sort_index()
        ids = [Path(p).with_suffix("").as_posix().replace("/", "__") for p in rows.path]
        evidence = split_evidence(rows, root, output / "masks", ids)
        items = []
        for sample_id, row, found in zip(ids, rows.itertuples(index=False), evidence):
            label = 1 if row.label == "fake" else 0
            method = getattr(row, "method", None)
            if method and method not in {"fake", "unknown", "real"}:
                found["method"] = method
            items.append(
                {
                    "id": sample_id,
                    "image": row.path,
                    "binary_label": label,
                    "conversations": [
                        {"from": "human", "value": rng.choice(QUESTIONS)},
                        {"from": "gpt", "value": answer_text(label, found)},
                    ],
                    "evidence": found,
                }
            )
        path = output / f"{split}.json"
        atomic_write_text(path, json.dumps(items, indent=1))
        written[split] = path
    (output / "image_folder.txt").write_text(str(root) + "\n")
    return written


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
    images = (
        path / "images"
        if (path / "images").is_dir()
        else Path(pointer.read_text().strip())
        if pointer.is_file()
        else path
    )
    settings["dx_llava.data.image_folder"] = str(images)
    return settings


def describe(path: Path) -> dict | None:
    """A folder with train.json (+ val/eval.json, test.json) of LLaVA conversations: samples per split
    and answer (real, fake, or ambiguous), images looked up where training would."""
    from fakefinder.core.describe import READ_ERRORS, described, split_counts

    if not (path / "train.json").is_file():
        return None
    try:
        settings = dataset_settings(path)
    except READ_ERRORS as exc:
        return described("llava_json", notes=[str(exc)], usable=False)
    images = Path(settings["dx_llava.data.image_folder"])
    notes = []
    if not images.resolve().is_relative_to(path.resolve()):
        notes.append(f"images are looked up outside the dataset folder, in {images} (image_folder.txt)")
    pairs, usable = [], True
    for key in ("train_json", "eval_json", "test_json"):
        json_path = settings.get(f"dx_llava.data.{key}")
        if json_path is None:
            continue
        try:
            samples, report = read_samples(json_path, images, ambiguous="skip")
        except READ_ERRORS as exc:
            notes.append(str(exc))
            usable = False
            continue
        pairs += [
            (Path(json_path).stem, {0: "real", 1: "fake"}.get(s.binary_label, "ambiguous")) for s in samples
        ]
        if report["ambiguous"]:
            notes.append(
                f"{len(report['ambiguous'])} sample(s) of {Path(json_path).name} have no clear "
                "real/fake answer (left out of the binary loss)"
            )
    if "dx_llava.data.eval_json" not in settings:
        notes.append("no val.json or eval.json: training runs without evaluation")
    return described("llava_json", split_counts(pairs), notes, usable)
