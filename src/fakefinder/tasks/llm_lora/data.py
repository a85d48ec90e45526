"""Instruction data for LLM fine-tuning: JSONL lines -> checked conversations (file and line kept)
-> token ids whose labels cover the responses only, cut at `max_length` (counted and listed); the
held-out split, given or carved with a seed; the turn formats (the tokenizer's chat template, or a
built-in ChatML / Alpaca one)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from fakefinder.core.errors import FakefinderError

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}

# Built-in turn formats for tokenizers without a chat template (base models). Each assistant turn
# ends with the tokenizer's end-of-sequence token, so generation learns where to stop.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}\n\n"
    "{% else %}### Response:\n{{ message['content'] }}{{ eos_token }}\n\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}### Response:\n{% endif %}"
)


class DataError(FakefinderError, ValueError):
    """Instruction data that cannot be used as it is (its file and line are named)."""


@dataclass
class Example:
    messages: list[dict]  # {"role", "content"}; the last turn is the assistant's
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class ReadReport:
    file: str
    lines: int = 0
    examples: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"line", "reason"}

    def to_dict(self) -> dict:
        return {"file": self.file, "lines": self.lines, "examples": self.examples, "skipped": self.skipped}


def read_jsonl(path: str | Path, skip_invalid: bool = False, system_prompt: str | None = None) -> tuple[list[Example], ReadReport]:
    """Every usable example of a JSONL file. A malformed line or one without a response stops with
    its file and line (listed and skipped with `skip_invalid`); an empty response is always
    skipped and listed; blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: the JSONL file does not exist")
    report = ReadReport(str(path))
    examples: list[Example] = []
    with open(path, encoding="utf-8", errors="strict") as handle:
        try:
            lines = list(handle)
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        report.lines += 1
        try:
            messages = _messages(text, system_prompt)
        except _EmptyResponse as exc:
            report.skipped.append({"line": number, "reason": str(exc)})
            continue
        except DataError as exc:
            if not skip_invalid:
                raise DataError(f"{path}:{number}: {exc}") from None
            report.skipped.append({"line": number, "reason": str(exc)})
            continue
        examples.append(Example(messages, str(path), number))
    report.examples = len(examples)
    if not examples:
        raise DataError(f"{path}: no usable example ({report.lines} line(s), {len(report.skipped)} skipped"
                        + (f", e.g. line {report.skipped[0]['line']}: {report.skipped[0]['reason']}" if report.skipped else "")
                        + ")")
    return examples, report


class _EmptyResponse(DataError):
    pass


def _messages(text: str, system_prompt: str | None) -> list[dict]:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"a line must be a JSON object, not {type(record).__name__}")
    if "conversations" in record:
        messages = _conversation(record["conversations"])
    elif "instruction" in record:
        messages = _instruction(record)
    else:
        raise DataError(f"no 'instruction' and no 'conversations' (keys: {sorted(record)[:8]})")
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _text(record: dict, key: str, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise DataError(f"no '{key}'")
        return None
    if not isinstance(value, str):
        raise DataError(f"'{key}' must be text, not {type(value).__name__}")
    return value


def _instruction(record: dict) -> list[dict]:
    instruction = _text(record, "instruction")
    if not instruction.strip():
        raise DataError("'instruction' is empty")
    if "response" not in record and "output" not in record:
        raise DataError("no 'response'")
    response = _text(record, "response" if "response" in record else "output")
    extra = _text(record, "input", required=False)
    prompt = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    messages = []
    system = _text(record, "system", required=False)
    if system:
        messages.append({"role": "system", "content": system})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    if not response.strip():
        raise _EmptyResponse("the response is empty")
    return messages


def _conversation(turns) -> list[dict]:
    if not isinstance(turns, list) or not turns:
        raise DataError("'conversations' must be a non-empty list of {role, content}")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DataError(f"conversations[{i}] must be an object with role and content")
        role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        if role not in ROLES:
            raise DataError(f"conversations[{i}].role: {role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"conversations[{i}].content must be text")
        messages.append({"role": role, "content": content})
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()  # a trailing question has no answer to learn from
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError("no response (no assistant turn in 'conversations')")
    if not any(m["content"].strip() for m in messages if m["role"] == "assistant"):
        raise _EmptyResponse("every assistant turn is empty")
    return messages


def split_off(examples: list[Example], ratio: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): `ratio` of the examples, drawn with `seed` (at least one when ratio > 0)."""
    if ratio <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    count = min(len(examples) - 1, max(1, round(len(examples) * ratio)))
    held = set(order[:count])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


# ---------------------------------------------------------------------------------------------
# turn formats and tokens


def set_template(tokenizer, template: str) -> str:
    """Give `tokenizer` the turn format `template` names (auto: its own chat template if it has one);
    returns the format used. The tokenizer saved with the model keeps it, so inference writes
    prompts as training did."""
    if template == "auto":
        if getattr(tokenizer, "chat_template", None):
            return "tokenizer"
        template = "chatml" if "<|im_start|>" in tokenizer.get_vocab() else "alpaca"
    tokenizer.chat_template = CHATML if template == "chatml" else ALPACA
    return template


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def response_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation as text, and the character spans of each assistant turn (its content
    and the end-of-turn marker that follows, not the blank after it), found by rendering each
    prefix of the conversation."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render(tokenizer, messages[:i], generation_prompt=True)) if i else 0
        end = len(render(tokenizer, messages[: i + 1]))
        if text[:end] != render(tokenizer, messages[: i + 1]):
            raise DataError("the chat template writes a turn differently once later turns follow; "
                            "choose llm.data.template chatml or alpaca")
        segment = text[start:end]
        spans.append((start, end - (len(segment) - len(segment.rstrip()))))  # up to the end-of-turn marker
    return text, spans


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]  # -100 outside the responses
    truncated: bool


def encode(tokenizer, messages: list[dict], max_length: int) -> Encoded | None:
    """Token ids with labels on the responses only, cut to `max_length` (None: no response token
    is left after cutting). Needs a fast tokenizer (character offsets)."""
    text, spans = response_spans(tokenizer, messages)
    tokens = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = tokens["input_ids"], tokens["offset_mapping"]
    bos = tokenizer.bos_token_id
    if bos is not None and getattr(tokenizer, "add_bos_token", False) and (not ids or ids[0] != bos):
        ids, offsets = [bos, *ids], [(0, 0), *offsets]
    labels = [token if any(a <= start < b for a, b in spans) and end > start else -100
              for token, (start, end) in zip(ids, offsets)]
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if all(label == -100 for label in labels):
        return None
    return Encoded(ids, labels, truncated)


class TokenizedSet:
    """Encoded examples (a torch-style dataset of dicts) and what cutting did: `truncated` and
    `dropped` name file:line."""

    def __init__(self, examples: list[Example], tokenizer, max_length: int) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise DataError(f"{type(tokenizer).__name__}: fine-tuning needs a fast tokenizer (character offsets)")
        self.items: list[dict] = []
        self.examples: list[Example] = []
        self.truncated: list[str] = []
        self.dropped: list[str] = []
        self.tokens = 0
        for example in examples:
            try:
                encoded = encode(tokenizer, example.messages, max_length)
            except DataError as exc:
                raise DataError(f"{example.where}: {exc}") from None
            if encoded is None:
                self.dropped.append(example.where)
                continue
            if encoded.truncated:
                self.truncated.append(example.where)
            self.items.append({"input_ids": encoded.input_ids, "attention_mask": [1] * len(encoded.input_ids),
                               "labels": encoded.labels})
            self.examples.append(example)
            self.tokens += len(encoded.input_ids)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]

    def report(self, max_length: int) -> dict:
        return {"examples": len(self.items), "tokens": self.tokens, "max_length": max_length,
                "truncated": len(self.truncated), "truncated_at": self.truncated[:50],
                "dropped_too_long": len(self.dropped), "dropped_at": self.dropped[:50]}
