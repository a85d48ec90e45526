"""Instruction data for LLM fine-tuning: JSONL lines -> checked conversations (file and line kept)
-> token ids whose labels cover the responses only, cut at `max_length` (counted and listed); the
held-out split, given or carved with a seed; the turn formats (the tokenizer's chat template, or a
built-in ChatML / Alpaca one)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from fakefinder.config import ConfigError
from fakefinder.core.errors import FakefinderError

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}

# Built-in turn formats for tokenizers without a chat template (base models). Each assistant turn
# ends with a token generation stops at: <|im_end|> (ChatML, for tokenizers that have it) or the
# tokenizer's end-of-sequence token (Alpaca).
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% "
    "endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ALPACA = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}\n\n{% elif "
    "message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}\n\n{% else %}### Response:\n{{ "
    "message['content'] }}{{ eos_token }}\n\n{% endif %}{% endfor %}{% if add_generation_prompt %}### "
    "Response:\n{% endif %}"
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


def read_jsonl(
    path: str | Path, skip_invalid: bool = False, system_prompt: str | None = None
) -> tuple[list[Example], ReadReport]:
    """Every usable example of a JSONL file. A malformed line or one without a response stops with
    its file and line (listed and skipped with `skip_invalid`); an empty response is always
    skipped and listed; blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: the JSONL file does not exist")
    report = ReadReport(str(path))
    examples: list[Example] = []
    for number, text in jsonl_lines(path):
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
        raise DataError(
            f"{path}: no usable example ({report.lines} line(s), {len(report.skipped)} skipped"
            + (
                f", e.g. line {report.skipped[0]['line']}: {report.skipped[0]['reason']}"
                if report.skipped
                else ""
            )
            + ")"
        )
    return examples, report


def jsonl_lines(path: Path):
    """(line number, text) of each non-blank line; a line that is not UTF-8 is named."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{number}: not UTF-8 text ({exc.reason} at byte {exc.start} of the line)"
                ) from None
            if text.strip():
                yield number, text


class _EmptyResponse(DataError):
    pass


def _record(text: str) -> dict:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DataError(f"a line must be a JSON object, not {type(record).__name__}")
    return record


def _with_system(messages: list[dict], system_prompt: str | None) -> list[dict]:
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _messages(text: str, system_prompt: str | None) -> list[dict]:
    record = _record(text)
    if "conversations" in record:
        messages = _conversation(record["conversations"])
    elif "instruction" in record:
        messages = _instruction(record)
    else:
        raise DataError(f"no 'instruction' and no 'conversations' (keys: {sorted(record)[:8]})")
    return _with_system(messages, system_prompt)


def read_prompts(path: str | Path, system_prompt: str | None = None) -> list[tuple[str, list[dict]]]:
    """(id, turns to answer) per prompt, read as training reads its data: a JSONL line (`id`
    optional; `instruction` + `input`, or `conversations` whose trailing answer is left out) or a
    line of a text file. The system prompt training added is added too. Errors name file and line."""
    path = Path(path)
    prompts = []
    for number, text in jsonl_lines(path):
        default_id = f"{path.stem}:{number}"
        if path.suffix.lower() != ".jsonl":
            prompts.append(
                (default_id, _with_system([{"role": "user", "content": text.rstrip("\n")}], system_prompt))
            )
            continue
        try:
            record = _record(text)
            if "conversations" in record:
                turns = _turns(record["conversations"])
                while turns and turns[-1]["role"] == "assistant":
                    turns.pop()
                if not turns:
                    raise DataError("no prompt (only assistant turns)")
            elif "instruction" in record:
                turns = _instruction({**record, "response": "-"})[:-1]
            else:
                raise DataError(f"no 'instruction' and no 'conversations' (keys: {sorted(record)[:8]})")
        except DataError as exc:
            raise DataError(f"{path}:{number}: {exc}") from None
        prompts.append((str(record.get("id", default_id)), _with_system(turns, system_prompt)))
    return prompts


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


def _turns(turns) -> list[dict]:
    """Checked {role, content} turns (ShareGPT's from / value and human / gpt read too)."""
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
    return messages


def _conversation(turns) -> list[dict]:
    messages = _turns(turns)
    first = (
        next(i for i, m in enumerate(messages) if m["role"] != "system")
        if any(m["role"] != "system" for m in messages)
        else 0
    )
    if messages[first]["role"] == "assistant":
        raise DataError(f"conversations[{first}]: an assistant turn with no user turn before it")
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
    return [e for i, e in enumerate(examples) if i not in held], [
        e for i, e in enumerate(examples) if i in held
    ]


# ---------------------------------------------------------------------------------------------
# turn formats and tokens


def set_template(tokenizer, template: str) -> str:
    """Give `tokenizer` the turn format `template` names (auto: its own chat template if it has one);
    returns the format used. The tokenizer saved with the model keeps it, so inference writes
    prompts as training did."""
    vocabulary = tokenizer.get_vocab()
    chatml_tokens = "<|im_start|>" in vocabulary and "<|im_end|>" in vocabulary
    if template == "auto":
        if getattr(tokenizer, "chat_template", None):
            return "tokenizer"
        template = "chatml" if chatml_tokens else "alpaca"
    if template == "chatml" and not chatml_tokens:
        raise DataError(
            "llm.data.template=chatml: the tokenizer has no <|im_start|> / <|im_end|> tokens (an answer "
            "would never end); use alpaca or auto"
        )
    if template == "alpaca" and tokenizer.eos_token is None:
        raise DataError(
            "llm.data.template=alpaca: the tokenizer has no end-of-sequence token to end an answer"
        )
    tokenizer.chat_template = CHATML if template == "chatml" else ALPACA
    return template


def render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except TemplateError as exc:
        raise DataError(
            f"the chat template refuses this conversation ({exc}); reorder its turns, or choose "
            "llm.data.template chatml or alpaca"
        ) from None


def with_bos(tokenizer, ids: list[int]) -> list[int]:
    """`ids` with the beginning-of-sequence token first when the tokenizer adds one and the
    template did not write it: the same rule for training examples and for prompts to answer."""
    bos = tokenizer.bos_token_id
    if bos is not None and getattr(tokenizer, "add_bos_token", False) and (not ids or ids[0] != bos):
        return [bos, *ids]
    return list(ids)


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The token ids of a prompt to answer: its turns and the assistant header, as training wrote them."""
    text = render(tokenizer, messages, generation_prompt=True)
    return with_bos(tokenizer, tokenizer(text, add_special_tokens=False)["input_ids"])


def response_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation as text, and the character spans of each assistant turn (its content
    and the end-of-turn marker that follows, not the blank after it), found by rendering each
    prefix of the conversation."""
    text = render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], generation_prompt=True)
        start, end = len(prompt), len(render(tokenizer, messages[: i + 1]))
        if text[:start] != prompt or text[:end] != render(tokenizer, messages[: i + 1]):
            raise DataError(
                "the chat template writes a turn differently once later turns follow; choose "
                "llm.data.template chatml or alpaca"
            )
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
    ids, offsets = tokens["input_ids"], list(tokens["offset_mapping"])
    if len(with_bos(tokenizer, ids)) > len(ids):
        ids, offsets = with_bos(tokenizer, ids), [(0, 0), *offsets]
    labels = [
        token if any(a <= start < b for a, b in spans) and end > start else -100
        for token, (start, end) in zip(ids, offsets)
    ]
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
            raise DataError(
                f"{type(tokenizer).__name__}: fine-tuning needs a fast tokenizer (character offsets)"
            )
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
            self.items.append(
                {
                    "input_ids": encoded.input_ids,
                    "attention_mask": [1] * len(encoded.input_ids),
                    "labels": encoded.labels,
                }
            )
            self.examples.append(example)
            self.tokens += len(encoded.input_ids)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]

    def report(self, max_length: int) -> dict:
        return {
            "examples": len(self.items),
            "tokens": self.tokens,
            "max_length": max_length,
            "truncated": len(self.truncated),
            "truncated_at": self.truncated[:50],
            "dropped_too_long": len(self.dropped),
            "dropped_at": self.dropped[:50],
        }


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


def describe(path: Path) -> dict | None:
    """train.jsonl (+ val.jsonl, test.jsonl) of instruction or conversation lines: examples per split,
    lines that would be skipped named."""
    from fakefinder.core.describe import READ_ERRORS, described

    if not (path / "train.jsonl").is_file():
        return None
    splits, notes, usable = {}, [], True
    for split in ("train", "val", "test"):
        file = path / f"{split}.jsonl"
        if not file.is_file():
            continue
        try:
            examples, report = read_jsonl(file)
        except READ_ERRORS as exc:
            notes.append(str(exc))
            usable = False  # training reads every split the folder has
            continue
        splits[split] = {"examples": len(examples)}
        if report.skipped:
            notes.append(
                f"{file.name}: {len(report.skipped)} line(s) with an empty response are skipped (line "
                f"{', '.join(str(s['line']) for s in report.skipped[:5])})"
            )
    if "val" not in splits:
        notes.append("no val.jsonl: the held-out split is carved from train.jsonl (llm.data.val_ratio)")
    return described("instruction_jsonl", splits, notes, usable)
