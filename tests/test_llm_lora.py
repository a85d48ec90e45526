"""LLM LoRA / QLoRA: instruction data read and checked (file and line), responses-only labels,
training from the presets on a tiny random base, resume after a kill, the adapter exported for
peft, merged into a standalone model with the same logits, predict and evaluate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from conftest import kill_when
from fakefinder.config import ConfigError, load_config
from fakefinder.engine.tiny import build_char_tokenizer
from fakefinder.synthetic import make_instruction_set
from fakefinder.tasks.llm_lora.data import DataError, TokenizedSet, read_jsonl, set_template, split_off

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs"


@pytest.fixture(scope="module")
def llm_data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("llm")
    make_instruction_set(root / "data", {"train": 32, "val": 8, "test": 8})
    return {"root": root, "data": root / "data", "tokenizer": build_char_tokenizer(root / "tokenizer")}


def overrides(llm_data, output: Path, **train) -> list[str]:
    """A preset turned into a seconds-long run: the tiny random base, the generated data."""
    steps = {
        "max_steps": 4,
        "save_steps": 2,
        "eval_steps": 2,
        "logging_steps": 1,
        "batch_size": 4,
        "accumulate": 1,
        "lr": 0.01,
        "trackers": "[]",
        **train,
    }
    return [
        "llm.model.base=random:tiny",
        f"llm.model.tokenizer={llm_data['tokenizer']}",
        f"llm.data.train_file={llm_data['data'] / 'train.jsonl'}",
        f"llm.data.val_file={llm_data['data'] / 'val.jsonl'}",
        f"llm.data.test_file={llm_data['data'] / 'test.jsonl'}",
        "llm.data.max_length=160",
        "llm.lora.compute_dtype=fp32",
        "llm.eval.samples=2",
        "llm.eval.max_new_tokens=6",
        f"llm.train.output_dir={output}",
        f"evaluate.output_dir={output.parent / (output.name + '-eval')}",
        *[f"llm.train.{k}={v}" for k, v in steps.items()],
    ]


def tokenizer_of(llm_data):
    from fakefinder.engine.language import load_tokenizer

    return load_tokenizer(str(llm_data["tokenizer"]))


# ---------------------------------------------------------------------------------------------
# data


@pytest.mark.parametrize(
    "line, words",
    [
        ('{"instruction": "Add 1 and 2", "response": "3"', "not valid JSON"),
        ('{"instruction": "Add 1 and 2"}', "no 'response'"),
        ('{"conversations": [{"role": "user", "content": "hi"}]}', "no response"),
        ('["instruction", "response"]', "must be a JSON object"),
        ('{"conversations": [{"role": "wizard", "content": "hi"}]}', "not one of system, user, assistant"),
        ('{"instruction": "Add", "response": 3}', "'response' must be text"),
    ],
)
def test_a_bad_line_is_named_with_its_file_and_line(tmp_path, line, words):
    path = tmp_path / "data.jsonl"
    good = '{"instruction": "Say yes", "response": "yes"}'
    path.write_text("\n".join([good, "", line, good]) + "\n")
    with pytest.raises(DataError, match=rf"{path}:3: .*{words}"):
        read_jsonl(path)
    examples, report = read_jsonl(path, skip_invalid=True)  # or skipped, and listed
    assert [e.line for e in examples] == [1, 4]
    assert [s["line"] for s in report.skipped] == [3] and words in report.skipped[0]["reason"]


def test_an_empty_response_is_skipped_and_listed(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(
        '{"instruction": "Say yes", "response": "yes"}\n{"instruction": "Say nothing", "response": "  "}\n'
        '{"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}\n'
    )
    examples, report = read_jsonl(path)
    assert [e.where for e in examples] == [f"{path}:1"]
    assert [(s["line"], s["reason"]) for s in report.skipped] == [
        (2, "the response is empty"),
        (3, "every assistant turn is empty"),
    ]
    path.write_text('{"instruction": "Say nothing", "response": ""}\n')
    with pytest.raises(DataError, match=rf"{path}: no usable example .*line 1: the response is empty"):
        read_jsonl(path)


def test_overlong_examples_are_cut_or_dropped_and_listed(tmp_path, llm_data):
    tokenizer = tokenizer_of(llm_data)
    set_template(tokenizer, "chatml")
    path = tmp_path / "long.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"instruction": "Say yes", "response": "yes"},
                {"instruction": "Spell it", "response": "x" * 200},  # the response is cut
                {"instruction": "y" * 200, "response": "no"},  # the prompt alone fills max_length: dropped
            ]
        )
        + "\n"
    )
    examples, _ = read_jsonl(path)
    encoded = TokenizedSet(examples, tokenizer, max_length=64)
    assert encoded.truncated == [f"{path}:2"] and encoded.dropped == [f"{path}:3"]
    assert len(encoded) == 2 and all(len(item["input_ids"]) <= 64 for item in encoded.items)
    assert len(encoded.items[1]["input_ids"]) == 64
    report = encoded.report(64)
    assert (report["truncated"], report["dropped_too_long"], report["truncated_at"]) == (1, 1, [f"{path}:2"])


@pytest.mark.parametrize("template", ["chatml", "alpaca"])
def test_only_responses_are_labelled(tmp_path, llm_data, template):
    tokenizer = tokenizer_of(llm_data)
    assert set_template(tokenizer, template) == template
    path = tmp_path / "chat.jsonl"
    path.write_text(
        json.dumps(
            {
                "conversations": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "2+2?"},
                    {"role": "assistant", "content": "4"},
                    {"role": "user", "content": "and 3+3?"},
                    {"role": "assistant", "content": "6"},
                ]
            }
        )
        + "\n"
    )
    examples, _ = read_jsonl(path)
    item = TokenizedSet(examples, tokenizer, 512).items[0]
    labelled = [t for t, label in zip(item["input_ids"], item["labels"]) if label != -100]
    assert [label for label in item["labels"] if label != -100] == labelled
    text = tokenizer.decode(labelled)
    end = "<|im_end|>" if template == "chatml" else tokenizer.eos_token
    assert text == f"4{end}6{end}"  # both answers and their end-of-turn markers, nothing of the prompts


def test_the_smollm2_chat_template_labels_the_answer_only(tmp_path):
    from fakefinder.engine.language import load_tokenizer, resolve_source

    source, gguf = resolve_source("package:smollm2-135m-instruct")
    tokenizer = load_tokenizer(source, gguf)
    assert set_template(tokenizer, "auto") == "tokenizer"  # its own chat template
    path = tmp_path / "one.jsonl"
    path.write_text(
        '{"instruction": "Write the word in capital letters.", "input": "lemon", "response": "LEMON"}\n'
    )
    examples, _ = read_jsonl(path)
    item = TokenizedSet(examples, tokenizer, 512).items[0]
    answer = tokenizer.decode([t for t, label in zip(item["input_ids"], item["labels"]) if label != -100])
    assert answer == "LEMON<|im_end|>"


def test_an_assistant_first_conversation_and_a_refusing_template_are_named(tmp_path, llm_data):
    path = tmp_path / "odd.jsonl"
    path.write_text(
        json.dumps(
            {
                "conversations": [
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "yes"},
                ]
            }
        )
        + "\n"
    )
    with pytest.raises(
        DataError, match=rf"{path}:1: conversations\[0\]: an assistant turn with no user turn"
    ):
        read_jsonl(path)
    tokenizer = tokenizer_of(llm_data)
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
        "supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    assert set_template(tokenizer, "auto") == "tokenizer"
    path.write_text(json.dumps({"instruction": "Say yes", "response": "yes", "system": "Be brief."}) + "\n")
    examples, _ = read_jsonl(path)
    with pytest.raises(DataError, match=rf"{path}:1: the chat template refuses .*System role not supported"):
        TokenizedSet(examples, tokenizer, 64)


def test_chatml_needs_its_tokens(llm_data):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from fakefinder.engine.language import load_tokenizer

    core = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "</s>": 1, "a": 2}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    plain = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="</s>")
    with pytest.raises(DataError, match="template=chatml: the tokenizer has no <\\|im_start\\|>"):
        set_template(plain, "chatml")
    assert set_template(plain, "auto") == "alpaca"
    assert set_template(load_tokenizer(str(llm_data["tokenizer"])), "auto") == "chatml"


def test_generation_prompts_are_the_training_prompts(tmp_path, llm_data):
    """The ids a prompt is answered from are the ids of the same turns in a training example, BOS included."""
    from fakefinder.tasks.llm_lora.data import encode, prompt_ids

    tokenizer = tokenizer_of(llm_data)
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]
    for template, bos in (("chatml", False), ("alpaca", True)):
        set_template(tokenizer, template)
        tokenizer.add_bos_token = bos
        prompt = prompt_ids(tokenizer, messages[:1])
        example = encode(tokenizer, messages, 512)
        assert example.input_ids[: len(prompt)] == prompt and (prompt[0] == tokenizer.bos_token_id) == bos
        assert all(label == -100 for label in example.labels[: len(prompt)])
        assert example.labels[len(prompt)] == example.input_ids[len(prompt)]  # the answer starts right after


def test_prompt_files_are_read_as_training_reads_data(tmp_path):
    from fakefinder.tasks.llm_lora.data import read_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text(
        '{"id": "a", "instruction": "Add", "input": "1 and 2"}\n\n'
        '{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}\n'
    )
    assert read_prompts(path, "Be brief.") == [
        ("a", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add\n\n1 and 2"}]),
        ("prompts:3", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]),
    ]
    path.write_text('{"instruction": "Add"}\n{"conversations": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(DataError, match=rf"{path}:2: conversations\[0\].role: 'robot' is not one of"):
        read_prompts(path)
    path.write_bytes(b'{"instruction": "ok"}\n{"instruction": "\xff"}\n')
    with pytest.raises(DataError, match=rf"{path}:2: not UTF-8"):
        read_prompts(path)


def test_the_held_out_split_is_carved_with_the_seed(llm_data):
    examples, _ = read_jsonl(llm_data["data"] / "train.jsonl")
    train, held = split_off(examples, 0.25, seed=3)
    again, held_again = split_off(examples, 0.25, seed=3)
    _, other = split_off(examples, 0.25, seed=4)
    assert len(held) == 8 and len(train) == 24 and {e.line for e in held}.isdisjoint(e.line for e in train)
    assert [e.line for e in held] == [e.line for e in held_again] != [e.line for e in other]


# ---------------------------------------------------------------------------------------------
# training, export, merge


def _logits(model, tokenizer, text: str = "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n") -> torch.Tensor:
    batch = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.float()


def _dicts(value):
    """Every mapping inside a JSON value."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _dicts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def _check_lora_run(result, run: Path) -> None:
    """A 4-step run's result, its evaluation samples and what its artifact holds."""
    assert result.steps == 4 and result.stopped == "completed"
    assert {"eval_loss", "eval_perplexity"} <= set(result.details["eval"]) and result.details["eval"][
        "eval_tokens"
    ] > 0
    logged = [h for h in result.history if "loss" in h]
    assert len(logged) == 4 and all("learning_rate" in h for h in logged)
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [
        2,
        2,
        4,
        4,
    ]  # 2 prompts at each evaluation (the last one is the final)
    assert all(set(s) >= {"prompt", "response", "expected", "where"} for s in samples)
    artifact = result.artifact
    assert sorted(p.name for p in artifact.iterdir()) == ["adapter", "config.yaml", "model.json", "tokenizer"]


def _check_saved_configs_and_adapter(run: Path, artifact: Path) -> None:
    """The saved configs hold the kind's sections and nothing else (an allowlist); the adapter trained."""
    import yaml

    from fakefinder.tasks.llm_lora.config import LlmConfig

    allowed = {"task", "evaluate", "predict", "llm"}
    for saved in (run / "config.yaml", artifact / "config.yaml"):
        assert set(yaml.safe_load(saved.read_text())) == allowed, saved
    meta = json.loads((artifact / "model.json").read_text())
    assert set(meta["architecture"]["llm"]) == set(LlmConfig.model_fields)
    assert not any(isinstance(v, dict) and "task" in v and set(v) - allowed for v in _dicts(meta))
    trained = _adapter(artifact / "adapter")
    assert all(k.endswith(("lora_A.weight", "lora_B.weight")) for k in trained)
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in trained.items())


def _check_export(artifact: Path, tmp_path: Path, meta: dict, tokenizer, adapted: torch.Tensor) -> None:
    """Export: a folder peft loads onto the base by itself, with the tokenizer beside it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from fakefinder.tasks import get_task

    exported = get_task("llm_lora").export(artifact, tmp_path / "exported").path
    assert (exported / "adapter_config.json").is_file() and (exported / "tokenizer_config.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(meta["base"]["source"])
    peft_model = PeftModel.from_pretrained(base, exported).eval()
    torch.testing.assert_close(_logits(peft_model, tokenizer), adapted)


def _check_merge(artifact: Path, tmp_path: Path, tokenizer, adapted: torch.Tensor) -> None:
    """Merge: a standalone model (transformers alone loads it) with the adapted model's logits."""
    from transformers import AutoModelForCausalLM

    from fakefinder.tasks import get_task
    from fakefinder.tasks.llm_lora.model import load

    merged = get_task("llm_lora").merge(artifact, tmp_path / "merged")
    standalone = AutoModelForCausalLM.from_pretrained(merged / "merged_model").eval()
    assert not any("lora" in name for name, _ in standalone.named_parameters())
    torch.testing.assert_close(_logits(standalone, tokenizer), adapted, atol=1e-5, rtol=1e-4)
    again, _, merged_meta, _ = load(merged)
    assert merged_meta["merged"]
    torch.testing.assert_close(_logits(again, tokenizer), adapted, atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="merged already"):
        get_task("llm_lora").merge(merged, tmp_path / "merged-again")


def _check_predict(config, artifact: Path, tmp_path: Path, model, tokenizer) -> None:
    """Predict: answers to JSONL and text prompts."""
    import pandas as pd

    import fakefinder
    from fakefinder.tasks.llm_lora.train import generate

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"id": "q1", "instruction": "What is 2 + 3?"}\n{"instruction": "Is 7 odd or even?"}\n'
    )
    (tmp_path / "more.txt").write_text("Write the word in capital letters: tiger\n")
    config.predict.inputs = [prompts, tmp_path / "more.txt"]
    config.predict.models = [artifact]
    config.predict.output = tmp_path / "answers.csv"
    config.llm.eval.max_new_tokens = 6
    predicted = fakefinder.predict(config)
    assert list(predicted.table.id) == ["q1", "prompts:2", "more:1"]
    written = pd.read_csv(tmp_path / "answers.csv", keep_default_na=False)
    assert list(written.columns) == ["id", "response"] and list(written.id) == ["q1", "prompts:2", "more:1"]
    expected = generate(model, tokenizer, [[{"role": "user", "content": "What is 2 + 3?"}]], 6, "cpu")
    assert written.response[0] == predicted.table.response[0] == expected[0]


def _check_evaluate(config, llm_data, model, tokenizer) -> None:
    """Evaluate: the test split; metrics.json holds what the call returned, the report shows it."""
    from transformers import DataCollatorForSeq2Seq

    import fakefinder

    outcome = fakefinder.evaluate(config)
    metrics = json.loads(outcome.metrics_file.read_text())
    (entry,) = metrics["models"].values()
    assert metrics["set"] == "test" and entry["n"] == 8 and entry["answered"] == 8
    assert 0 <= entry["exact_match"] <= 1 and entry["set"] == "test"
    # the loss per response token, as the model's own loss computes it over the whole set in one batch
    test_examples, _ = read_jsonl(llm_data["data"] / "test.jsonl")
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)(
        TokenizedSet(test_examples, tokenizer, 160).items
    )
    with torch.no_grad():
        own = model(**batch).loss.item()
    assert entry["eval_loss"] == pytest.approx(own, rel=1e-4)
    assert entry["eval_perplexity"] == pytest.approx(float(torch.tensor(own).exp()), rel=1e-4)
    assert f"{entry['eval_loss']:.4f}" in outcome.report_file.read_text()
    assert len(outcome.files["answers"].read_text().splitlines()) == 8


def test_lora_from_its_preset_trains_evaluates_predicts_exports_and_merges(llm_data, tmp_path):
    import fakefinder
    from fakefinder.tasks.llm_lora.model import load

    config = load_config(PRESETS / "llm-lora-7b.yaml", overrides(llm_data, tmp_path / "run"))
    assert config.llm.train.grad_checkpointing  # the preset's, exercised here
    result = fakefinder.train(config)
    _check_lora_run(result, tmp_path / "run")
    artifact = result.artifact
    _check_saved_configs_and_adapter(tmp_path / "run", artifact)

    model, tokenizer, meta, kind = load(artifact)
    assert kind == "llm_lora" and meta["template"] == "chatml" and not meta["quantized"]
    adapted = _logits(model, tokenizer)
    _check_export(artifact, tmp_path, meta, tokenizer, adapted)
    _check_merge(artifact, tmp_path, tokenizer, adapted)
    _check_predict(config, artifact, tmp_path, model, tokenizer)
    _check_evaluate(config, llm_data, model, tokenizer)


def test_qlora_from_its_preset_trains_a_4bit_base_and_merges(llm_data, tmp_path):
    import bitsandbytes  # noqa: F401  (installed by the set-up)
    from transformers import AutoModelForCausalLM

    import fakefinder
    from fakefinder.tasks import get_task
    from fakefinder.tasks.llm_lora.model import load

    config = load_config(PRESETS / "llm-qlora-13b.yaml", overrides(llm_data, tmp_path / "run"))
    assert config.task == "llm_qlora" and config.llm.lora.use_4bit and config.llm.lora.double_quant
    result = fakefinder.train(config)
    assert result.steps == 4 and result.details["info"]["quantized"]
    model, tokenizer, meta, kind = load(result.artifact)
    assert kind == "llm_qlora" and meta["quantized"]
    assert "Linear4bit" in {type(m).__name__ for m in model.modules()}
    trained = _adapter(result.artifact / "adapter")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in trained.items())
    # merged into the dequantised 4-bit base: the model that was trained, standalone
    merged = get_task("llm_qlora").merge(result.artifact, tmp_path / "merged")
    standalone = AutoModelForCausalLM.from_pretrained(merged / "merged_model").eval()
    assert "Linear4bit" not in {type(m).__name__ for m in standalone.modules()}
    # the 4-bit kernel and a dense matmul of its dequantised weights round apart (more on AVX512-BF16 CPUs)
    torch.testing.assert_close(
        _logits(standalone, tokenizer), _logits(model, tokenizer), atol=5e-4, rtol=1e-3
    )
    from peft import PeftModel

    unquantised = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(meta["base"]["source"]), result.artifact / "adapter"
    ).eval()
    assert not torch.allclose(
        _logits(unquantised, tokenizer), _logits(model, tokenizer), atol=1e-5
    )  # 4 bits matter


def _fakefinder(*args: str) -> list[str]:
    return [sys.executable, "-m", "fakefinder", *args]


def test_resume_after_a_kill_matches_the_uninterrupted_run(llm_data, tmp_path):
    import fakefinder
    from fakefinder.core.runlock import RunFolderError

    steps = {"max_steps": 24, "save_steps": 3, "eval_steps": 100}
    args = [
        "train",
        "-c",
        str(PRESETS / "llm-lora-7b.yaml"),
        *overrides(llm_data, tmp_path / "killed", **steps),
        "llm.lora.dropout=0.1",
    ]
    kill_when(
        _fakefinder(*args),
        lambda: any((tmp_path / "killed").glob("checkpoint-*/trainer_state.json")),
        cwd=tmp_path,
    )
    assert not (tmp_path / "killed" / "model").exists(), "the kill should land mid-run"
    with pytest.raises(RunFolderError, match="--resume"):
        fakefinder.train(load_config(PRESETS / "llm-lora-7b.yaml", args[3:]))
    saved = max(
        int(p.parent.name.split("-")[1])
        for p in (tmp_path / "killed").glob("checkpoint-*/trainer_state.json")
    )
    seen = []
    resumed = fakefinder.train(
        load_config(PRESETS / "llm-lora-7b.yaml", args[3:]), resume=True, events=seen.append
    )
    assert resumed.steps == 24 and resumed.artifact
    assert any(
        e.type == "log" and f"resuming from {tmp_path / 'killed' / f'checkpoint-{saved}'}" in e.message
        for e in seen
    )
    progress = [e.step for e in seen if e.type == "progress" and e.stage == "llm train"]
    assert progress[0] == saved + 1 and progress[-1] == 24  # it went on from the checkpoint, not from step 0

    straight = load_config(
        PRESETS / "llm-lora-7b.yaml",
        [*overrides(llm_data, tmp_path / "straight", **steps), "llm.lora.dropout=0.1"],
    )
    fakefinder.train(straight)
    a, b = (
        _adapter(tmp_path / "killed" / "model" / "adapter"),
        _adapter(tmp_path / "straight" / "model" / "adapter"),
    )
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_config_errors_name_the_key(llm_data, tmp_path):
    import fakefinder

    with pytest.raises(ConfigError, match="llm.data.train_file is required"):
        fakefinder.train(load_config(None, ["task=llm_lora", f"llm.train.output_dir={tmp_path / 'a'}"]))
    bad = load_config(
        PRESETS / "llm-lora-7b.yaml",
        [*overrides(llm_data, tmp_path / "b"), "llm.lora.target_modules=[no_such_proj]"],
    )
    with pytest.raises(ConfigError, match=r"llm.lora.target_modules=\['no_such_proj'\]"):
        fakefinder.train(bad)
    with pytest.raises(ConfigError, match="llm.lora.target_modules"):
        load_config(None, ["task=llm_lora", "llm.lora.target_modules=[]"])
