"""LoRA / QLoRA fine-tuning with the transformers Trainer: the instruction data read and checked,
responses-only labels, evaluation every N steps (eval loss, perplexity, a few generations),
checkpoints of the adapter alone, exact resume (also after a kill), the artifact at the end."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

from fakefinder.config import Config, ConfigError
from fakefinder.core.results import TrainSummary
from fakefinder.engine.hf import latest_checkpoint, report_through_events, train_summary, training_arguments
from fakefinder.engine.language import parameter_counts
from fakefinder.engine.run import Run
from fakefinder.engine.tiny import is_random
from fakefinder.tasks.llm_lora.config import LlmConfig
from fakefinder.tasks.llm_lora.data import TokenizedSet, prompt_ids, read_jsonl, split_off
from fakefinder.tasks.llm_lora.model import build, save_artifact

RUN_FILES = ("checkpoint-*", "model")  # what shows that an output folder holds a run


def read_splits(cfg: LlmConfig, events) -> tuple[list, list, dict]:
    """(train examples, held-out examples, what reading them found), skipped lines warned with
    file and line."""
    data = cfg.data
    if data.train_file is None:
        raise ConfigError(
            "llm.data.train_file is required: a JSONL file of {instruction, response} or {conversations} "
            "lines"
        )
    train, report = read_jsonl(data.train_file, data.skip_invalid, data.system_prompt)
    reports = {"train": report.to_dict()}
    if data.val_file is not None:
        held, val_report = read_jsonl(data.val_file, data.skip_invalid, data.system_prompt)
        reports["val"] = val_report.to_dict()
    else:
        train, held = split_off(train, data.val_ratio, data.seed)
        reports["val"] = {
            "carved_from": str(data.train_file),
            "ratio": data.val_ratio,
            "seed": data.seed,
            "examples": len(held),
        }
    for name, found in reports.items():
        skipped = found.get("skipped") or []
        if skipped:
            shown = "; ".join(f"line {s['line']}: {s['reason']}" for s in skipped[:10])
            events.warning(
                f"{found['file']}: {len(skipped)} line(s) skipped "
                f"({shown}{'; ...' if len(skipped) > 10 else ''})",
                "train",
            )
    return train, held, reports


def tokenized(examples, tokenizer, cfg: LlmConfig, name: str, events) -> TokenizedSet:
    """Encoded examples; cut and dropped ones are counted and warned with file and line."""
    encoded = TokenizedSet(examples, tokenizer, cfg.data.max_length)
    if encoded.truncated:
        events.warning(
            f"{name}: {len(encoded.truncated)} example(s) longer than max_length {cfg.data.max_length} "
            f"tokens were cut at the end: "
            f"{', '.join(encoded.truncated[:10])}{' ...' if len(encoded.truncated) > 10 else ''}",
            "train",
        )
    if encoded.dropped:
        events.warning(
            f"{name}: {len(encoded.dropped)} example(s) skipped: the prompt alone fills max_length "
            f"{cfg.data.max_length}, no response token is left: "
            f"{', '.join(encoded.dropped[:10])}{' ...' if len(encoded.dropped) > 10 else ''}",
            "train",
        )
    return encoded


@torch.no_grad()
def evaluate_losses(
    model, dataset: TokenizedSet, collator, batch_size: int, device, prefix: str = "eval"
) -> dict:
    """Mean loss per response token over the set and its perplexity."""
    from torch.utils.data import DataLoader

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), labels, ignore_index=-100, reduction="sum"
        )
        total += float(losses)
        count += int((labels != -100).sum())
    model.train(was_training)
    loss = total / max(1, count)
    return {
        f"{prefix}_loss": loss,
        f"{prefix}_perplexity": float(math.exp(min(50.0, loss))),
        f"{prefix}_tokens": count,
    }


@torch.no_grad()
def generate(
    model, tokenizer, messages_list: list[list[dict]], max_new_tokens: int, device, batch_size: int = 8
) -> list[str]:
    """Greedy answers to each conversation's last user turn (the prompt as training wrote it, left-padded)."""
    was_training = model.training
    model.eval()
    cache = model.config.use_cache
    model.config.use_cache = True
    answers = []
    try:
        for start in range(0, len(messages_list), batch_size):
            prompts = [
                prompt_ids(tokenizer, _prompt_turns(m)) for m in messages_list[start : start + batch_size]
            ]
            longest = max(len(p) for p in prompts)
            ids = torch.tensor(
                [[tokenizer.pad_token_id] * (longest - len(p)) + p for p in prompts], device=device
            )
            mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=device)
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stop_tokens(model, tokenizer),
                pad_token_id=tokenizer.pad_token_id,
            )
            answers += [tokenizer.decode(row[longest:], skip_special_tokens=True).strip() for row in out]
    finally:
        model.config.use_cache = cache
        model.train(was_training)
    return answers


def stop_tokens(model, tokenizer) -> list[int] | None:
    """Where an answer ends: the model's own end tokens, the tokenizer's, and ChatML's end of turn."""
    found = model.generation_config.eos_token_id if model.generation_config is not None else None
    found = set(found if isinstance(found, (list, tuple)) else [found])
    found.add(tokenizer.eos_token_id)
    if "<|im_end|>" in tokenizer.get_vocab():
        found.add(tokenizer.convert_tokens_to_ids("<|im_end|>"))
    found.discard(None)
    return sorted(found) or None


def _prompt_turns(messages: list[dict]) -> list[dict]:
    """The turns before the last answer (a prompt list passes through)."""
    return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages


def _checkpoint_step(folder: str) -> int:
    state = Path(folder) / "trainer_state.json"
    if not state.is_file():
        raise ConfigError(f"resume: {folder} is not a complete checkpoint folder (no trainer_state.json)")
    return int(json.loads(state.read_text()).get("global_step", 0))


def _final_evaluation(trainer, eval_set, step: int) -> dict:
    """The held-out figures of the finished adapter: the evaluation of the last step when the
    schedule ran one there, else one now."""
    if eval_set is None:
        return {}
    done = [row for row in trainer.state.log_history if "eval_loss" in row and row.get("step") == step]
    return {k: v for k, v in done[-1].items() if k.startswith("eval_")} if done else trainer.evaluate()


def _tokens_per_second(steps: int, t, train_set: TokenizedSet, seconds: float) -> float | None:
    """Training throughput of this run: the tokens of the examples its steps saw (mean example
    length), per second of `trainer.train`."""
    if not seconds or not len(train_set):
        return None
    examples = (
        min(steps * t.batch_size * t.accumulate, math.ceil(len(train_set) * t.epochs))
        if not t.max_steps
        else steps * t.batch_size * t.accumulate
    )
    return examples * train_set.tokens / len(train_set) / seconds


def _trainer_class():
    from fakefinder.engine.hf import trainer_base

    class LoraTrainer(trainer_base()):
        """Its evaluation: token-weighted loss and perplexity, a few sample generations logged; its
        checkpoints: the adapter in safetensors."""

        llm: dict

        def held_out(self, dataset, prefix: str) -> dict:
            metrics = evaluate_losses(
                self.model,
                dataset,
                self.data_collator,
                self.args.eval_batch_size,
                self.args.device,
                prefix=prefix,
            )
            log_samples(self.model, self.llm, self.state.global_step, self.args.device)
            return metrics

    return LoraTrainer


def log_samples(model, llm: dict, step: int, device) -> list[dict]:
    """A few held-out prompts answered, logged and appended to `samples.jsonl` in the run folder."""
    cfg: LlmConfig = llm["cfg"]
    examples = llm["samples"]
    if not examples:
        return []
    answers = generate(
        model, llm["tokenizer"], [e.messages for e in examples], cfg.eval.max_new_tokens, device
    )
    rows = []
    for example, answer in zip(examples, answers):
        prompt = _prompt_turns(example.messages)[-1]["content"]
        rows.append(
            {
                "step": step,
                "where": example.where,
                "prompt": prompt,
                "response": answer,
                "expected": example.messages[-1]["content"],
            }
        )
        llm["events"].log(
            f"step {step} sample ({example.where}): {_short(prompt)!r} -> {_short(answer)!r} (expected "
            f"{_short(example.messages[-1]['content'])!r})",
            "train",
        )
    with open(Path(cfg.train.output_dir) / "samples.jsonl", "a", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return rows


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def train(config: Config, resume: bool | str = False, overwrite: bool = False, events=None) -> TrainSummary:
    """Fine-tune as configured inside the run block (`engine.run`: the folder's lock, a finished run
    refused unless resumed or `overwrite`, seeds, signals, device and precision, trackers)."""
    from fakefinder.tasks.registry import get_task

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            "llm_lora / llm_qlora train in one process (one GPU, or the CPU); launch without torchrun"
        )
    with Run(get_task(config.task), config, RUN_FILES, "a fine-tuning run", resume, overwrite, events) as run:
        return _train(config, run)


def _train(config: Config, run: Run) -> TrainSummary:
    from transformers import DataCollatorForSeq2Seq

    cfg: LlmConfig = config.llm
    events, output = run.events, run.folder
    train_examples, held_examples, reports = read_splits(cfg, events)
    device = run.device.type
    precision = run.precision  # a bad precision for the device fails before anything is written
    torch.manual_seed(cfg.train.seed)
    model, tokenizer, info = build(cfg, output)
    run.start()  # only now: a config or model that fails to load never costs the old run
    if run.overwrite:
        (output / "samples.jsonl").unlink(missing_ok=True)
    train_set = tokenized(train_examples, tokenizer, cfg, "train", events)
    eval_set = tokenized(held_examples, tokenizer, cfg, "val", events) if held_examples else None
    if not len(train_set):
        raise ConfigError(f"{cfg.data.train_file}: no example is left to train on (see the warnings above)")
    if eval_set is not None and not len(eval_set):
        eval_set = None
    reports["tokens"] = {
        "train": train_set.report(cfg.data.max_length),
        **({"val": eval_set.report(cfg.data.max_length)} if eval_set is not None else {}),
    }
    counts = parameter_counts(model)
    events.log(
        f"{'QLoRA' if cfg.lora.use_4bit else 'LoRA'} on "
        f"{'a tiny random base' if is_random(cfg.model.base) else cfg.model.base} ({precision} on {device}): "
        f"{counts['trainable']:,} trainable of {counts['total']:,} parameters; {len(train_set)} training "
        f"examples ({train_set.tokens:,} tokens, {len(train_set.truncated)} cut at {cfg.data.max_length}), "
        f"{len(eval_set) if eval_set is not None else 0} held out; turn format {info['template']}",
        "train",
    )
    t = cfg.train
    args = training_arguments(
        t,
        run,
        eval_set is not None,
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
    )
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator,
        processing_class=tokenizer,
    )
    report_through_events(trainer, run, "llm train")
    samples = eval_set.examples[: cfg.eval.samples] if eval_set is not None else []
    trainer.llm = {"cfg": cfg, "tokenizer": tokenizer, "events": events, "samples": samples}
    checkpoint = run.checkpoint(latest_checkpoint)
    first_step = _checkpoint_step(checkpoint) if checkpoint else 0
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    details = {
        "train_loss": result.training_loss,
        "parameters": counts,
        "data": reports,
        "info": info,
        "tokens_per_second": _tokens_per_second(result.global_step - first_step, t, train_set, seconds),
    }

    def summary(artifact, stopped: str, evaluated: dict) -> TrainSummary:
        return train_summary(
            config.task, output, artifact, stopped, result, seconds, trainer, {**details, "eval": evaluated}
        )

    if run.stop.is_set():
        events.log(
            f"stopped at step {result.global_step}: saved checkpoint-{result.global_step} "
            "(resume with --resume)",
            "train",
        )
        return summary(None, "interrupted", {})
    metrics = _final_evaluation(trainer, eval_set, result.global_step)
    model_dir = save_artifact(
        model,
        tokenizer,
        cfg,
        info,
        output / "model",
        config.task,
        config,
        {"steps": result.global_step, "train_loss": result.training_loss, "eval": metrics, "data": reports},
    )
    trained = summary(Path(model_dir), "completed", metrics)
    events.result(
        "train",
        trained.to_dict(),
        f"trained {result.global_step} steps in {seconds:.0f} s; eval loss "
        f"{metrics.get('eval_loss', float('nan')):.4f}, perplexity "
        f"{metrics.get('eval_perplexity', float('nan')):.2f}; model: {model_dir}",
    )
    return trained
