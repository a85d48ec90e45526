"""Training DX-LLaVA with the transformers Trainer: LM + weighted binary loss (each part logged),
evaluation every N steps (eval loss, perplexity, head accuracy/AUC), checkpoints that hold only
what trains, exact resume, DeepSpeed ZeRO-2/3 from the shipped JSON files, torchrun for many GPUs.
"""

from __future__ import annotations

import math
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from fakefinder.config import Config, ConfigError
from fakefinder.core.events import as_events
from fakefinder.core.results import TrainSummary
from fakefinder.engine.hf import latest_checkpoint, report_through_events, train_summary, training_arguments
from fakefinder.engine.language import parameter_counts
from fakefinder.engine.run import Run
from fakefinder.tasks.dx_llava.data import (
    Collator,
    Conversation,
    ConversationDataset,
    LengthGroupedSampler,
    read_samples,
)
from fakefinder.tasks.dx_llava.model import (
    build_model,
    gathered_for_saving,
    load_trained_weights,
    save_artifact,
    save_model,
)

KIND = "dx_llava"
LOSS_PARTS = ("lm_loss", "binary_loss")


def deepspeed_config(value: str | None) -> str | None:
    """`zero2` / `zero3` -> the JSON shipped with fakefinder; anything else must be a file."""
    if value is None:
        return None
    if value in {"zero2", "zero3"}:
        return str(resources.files("fakefinder.tasks.dx_llava") / "deepspeed" / f"{value}.json")
    if not Path(value).is_file():
        raise ConfigError(f"dx_llava.train.deepspeed={value!r}: not zero2, zero3 or an existing JSON file")
    return value


def binary_scores(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _trainer_class():
    from fakefinder.engine.hf import trainer_base

    class DxLlavaTrainer(trainer_base()):
        """Trainer with the two-part loss logged, a DX-LLaVA evaluation, and save/resume of the
        trained parts only (adapter or LM, projector, head)."""

        dx: dict

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs)
            parts = self.dx.setdefault("parts", {k: [] for k in LOSS_PARTS})
            for key in LOSS_PARTS:
                value = outputs[key].detach().float()
                if not torch.isfinite(value):
                    events = self.dx.get("events") or as_events(None)
                    events.warning(
                        f"step {self.state.global_step}: {key} is {value.item()} (reported, not hidden)",
                        "train",
                    )
                parts[key].append(value.item())
            loss = outputs["loss"]
            return (loss, outputs) if return_outputs else loss

        def log(self, logs, start_time=None):
            parts = self.dx.get("parts")
            if "loss" in logs and parts and parts["lm_loss"]:
                for key in LOSS_PARTS:
                    logs[key] = float(np.mean(parts[key]))
                    parts[key].clear()
            super().log(logs, start_time)

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset or self.train_dataset
            if self.dx["group_by_length"] and self.args.world_size == 1:
                return LengthGroupedSampler(
                    dataset.lengths,
                    self.args.train_batch_size * self.args.gradient_accumulation_steps,
                    self.args.seed,
                )
            return super()._get_train_sampler(train_dataset)

        def create_optimizer(self, model=None):
            """AdamW with separate learning rates for the LM/adapter, the projector and the head."""
            if self.optimizer is not None:
                return self.optimizer
            train = self.dx["cfg"].train
            model = self.model
            groups: dict[str, list] = {"lm": [], "projector": [], "head": [], "vision": []}
            for name, param in model.named_parameters():
                if not param.requires_grad:
                    continue
                key = name.split(".", 1)[0]
                groups[
                    "projector"
                    if key == "projector"
                    else "head"
                    if key == "head"
                    else "vision"
                    if key == "vision_tower"
                    else "lm"
                ].append(param)
            rates = {
                "lm": train.lr,
                "vision": train.lr,
                "projector": train.projector_lr or train.lr,
                "head": train.head_lr or train.lr,
            }
            params = [
                {"params": p, "lr": rates[k], "weight_decay": train.weight_decay}
                for k, p in groups.items()
                if p
            ]
            if not params:
                raise ConfigError("dx_llava: nothing to train (every parameter is frozen)")
            self.optimizer = torch.optim.AdamW(params, betas=(0.9, 0.999), eps=1e-8)
            return self.optimizer

        def held_out(self, dataset, prefix: str) -> dict:
            return evaluate_losses(
                self.model,
                dataset,
                self.data_collator,
                self.args.eval_batch_size,
                self.args.device,
                prefix=prefix,
            )

        def save_model(self, output_dir=None, _internal_call=False):
            # every rank comes here (also for checkpoints): ZeRO-3 weights are gathered, rank 0 writes
            with gathered_for_saving(self.model, self.dx["cfg"]):
                self._save(output_dir)

        def save_trained(self, folder: Path) -> None:
            save_model(
                self.model, self.dx["tokenizer"], self.dx["cfg"], self.dx["info"], folder, self.dx["config"]
            )

        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            load_trained_weights(model or self.model, Path(resume_from_checkpoint))

    return DxLlavaTrainer


@torch.no_grad()
def evaluate_losses(model, dataset, collator, batch_size: int, device, prefix: str = "eval") -> dict:
    """Mean LM loss (and its perplexity), binary loss, total loss, head accuracy and AUC."""
    from fakefinder.engine.metrics import binary_metrics

    was_training = model.training
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
    sums = {"loss": 0.0, "lm_loss": 0.0, "binary_loss": 0.0}
    batches, logits, labels = 0, [], []
    for batch in loader:
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = model(**batch)
        for key in sums:
            sums[key] += float(out[key])
        batches += 1
        logits.append(out["binary_logits"].float().cpu().numpy())
        labels.append(batch["binary_labels"].cpu().numpy())
    model.train(was_training)
    metrics = {f"{prefix}_{k}": v / max(1, batches) for k, v in sums.items()}
    metrics[f"{prefix}_perplexity"] = float(math.exp(min(50.0, metrics[f"{prefix}_lm_loss"])))
    scores = binary_scores(np.concatenate(logits)) if logits else np.zeros(0)
    truth = np.concatenate(labels) if labels else np.zeros(0)
    known = truth >= 0
    if known.any():
        m = binary_metrics(truth[known].astype(int), scores[known], 0.5)
        metrics[f"{prefix}_binary_accuracy"] = m["accuracy"]
        if len(set(truth[known].tolist())) == 2:
            metrics[f"{prefix}_binary_auc"] = m["auc"]
    return metrics


RUN_FILES = ("checkpoint-*", "final")  # what shows that an output folder holds a run


def train(config: Config, resume: bool | str = False, overwrite: bool = False, events=None) -> TrainSummary:
    """Train DX-LLaVA as configured inside the run block (`engine.run`: rank 0 holds the folder's
    lock, a finished run is refused unless resumed or `overwrite`, seeds, signals, device, precision,
    trackers); torchrun / deepspeed launch it on several processes."""
    from fakefinder.tasks.registry import get_task

    with Run(get_task(config.task), config, RUN_FILES, "a DX-LLaVA run", resume, overwrite, events) as run:
        return _train(config, run)


def _read_data(cfg, events) -> tuple[list, dict, list, dict | None]:
    """The training and evaluation samples with their reports; ambiguous answers named in a warning."""
    if cfg.data.train_json is None:
        raise ConfigError(
            "dx_llava.data.train_json is required (make one with `fakefinder dx-llava make-data`)"
        )
    train_samples, train_report = read_samples(
        cfg.data.train_json, cfg.data.image_folder, cfg.data.ambiguous_labels
    )
    eval_samples, eval_report = [], None
    if cfg.data.eval_json is not None:
        eval_samples, eval_report = read_samples(
            cfg.data.eval_json, cfg.data.image_folder, cfg.data.ambiguous_labels, cfg.data.eval_max_samples
        )
    for report in (train_report, eval_report):
        if report and report["ambiguous"]:
            events.warning(
                f"{report['file']}: {len(report['ambiguous'])} sample(s) with an ambiguous answer are left "
                f"out of the binary loss: {report['ambiguous'][:8]}",
                "train",
            )
    return train_samples, train_report, eval_samples, eval_report


def _measured(cfg, model, info: dict, train_samples: list, eval_samples: list, events) -> tuple[list, list]:
    """`dx_llava.model.measured_prompt`: the samples with what was measured on each image in their
    question; the threshold is fitted on the whole eval file, not just its capped sample."""
    from fakefinder.tasks.dx_llava.measured import measure_samples

    fit_on = eval_samples
    if cfg.data.eval_json is not None and cfg.data.eval_max_samples is not None:
        fit_on, _ = read_samples(cfg.data.eval_json, cfg.data.image_folder, cfg.data.ambiguous_labels)
    return measure_samples(
        model, info, cfg.data.image_aspect_ratio, train_samples, eval_samples, fit_on, events
    )


def _train(config: Config, run: Run) -> TrainSummary:
    cfg = config.dx_llava
    events, output = run.events, run.folder
    train_samples, train_report, eval_samples, eval_report = _read_data(cfg, events)
    if cfg.train.stage == "projector" and cfg.train.binary_loss_weight:
        events.log(
            "stage 1 trains the projector with the language loss only (binary loss weight ignored)", "train"
        )
    from fakefinder.engine import distributed

    # under torchrun: join the group now, so rank 0 alone writes shared files (the materialised
    # base LM) while the others wait; the Trainer then reuses this group
    device = run.device
    dist_info, _ = distributed.setup(str(device))
    precision = run.precision  # a bad precision for the device fails before anything is written
    output.mkdir(parents=True, exist_ok=True)
    if not dist_info.is_main:
        distributed.barrier(dist_info)
    torch.manual_seed(cfg.train.seed)
    model, tokenizer, info = build_model(cfg, output)
    if dist_info.is_main:
        run.start()  # only now: a config or model that fails to load never costs the old run
        distributed.barrier(dist_info)
    if cfg.train.stage == "projector":
        model.binary_loss_weight = 0.0
    conversation = Conversation(
        tokenizer, model.num_image_tokens, cfg.model.template, cfg.model.system_prompt, cfg.data.max_length
    )
    info["template"] = conversation.template
    if cfg.model.measured_prompt:  # the measured line joins each question before it is tokenised
        train_samples, eval_samples = _measured(cfg, model, info, train_samples, eval_samples, events)

    def dataset(samples):
        size, mean, std = info["image_size"], info["mean"], info["std"]
        return ConversationDataset(samples, conversation, size, mean, std, cfg.data.image_aspect_ratio)

    train_set, eval_set = dataset(train_samples), dataset(eval_samples) if eval_samples else None
    counts = parameter_counts(model)
    events.log(
        f"DX-LLaVA: {counts['trainable']:,} trainable of {counts['total']:,} parameters ({cfg.train.mode}, "
        f"stage {cfg.train.stage}, {precision} on {device.type}); {model.num_image_tokens} image tokens; "
        f"projector from {info['projector_from']}",
        "train",
    )
    args = training_arguments(
        cfg.train,
        run,
        eval_set is not None,
        remove_unused_columns=False,
        tf32=cfg.train.tf32 if device.type == "cuda" else None,
        deepspeed=deepspeed_config(cfg.train.deepspeed),
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=Collator(tokenizer.pad_token_id),
    )
    report_through_events(trainer, run, "dx-llava train")
    trainer.dx = {
        "cfg": cfg,
        "tokenizer": tokenizer,
        "info": info,
        "config": config,
        "events": events,
        "group_by_length": cfg.data.group_by_length,
    }
    checkpoint = run.checkpoint(latest_checkpoint)
    if checkpoint and cfg.train.deepspeed:  # DeepSpeed unpickles its files: read each safely first
        from fakefinder.engine.deepspeed_zero import vet

        for folder in sorted(Path(checkpoint).glob("global_step*")):
            vet(folder)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    final = output / "final"
    if run.stop.is_set():
        distributed.teardown(dist_info)
        events.log(
            f"stopped at step {result.global_step}: saved checkpoint-{result.global_step} "
            "(resume with --resume)",
            "train",
        )
        return train_summary(
            KIND,
            output,
            None,
            "interrupted",
            result,
            seconds,
            trainer,
            {
                "train_loss": result.training_loss,
                "parameters": counts,
                "eval": {},
                "data": {"train": train_report, "eval": eval_report},
                "info": info,
            },
        )
    with gathered_for_saving(model, cfg):
        if trainer.args.should_save:  # staged beside `final` and swapped in whole
            save_artifact(model, tokenizer, cfg, info, final, config)
    metrics = trainer.evaluate() if eval_set is not None else {}
    distributed.teardown(dist_info)  # a barrier first: gloo can abort when a rank leaves early
    return train_summary(
        KIND,
        output,
        final if trainer.args.should_save else None,
        "completed",
        result,
        seconds,
        trainer,
        {
            "train_loss": result.training_loss,
            "parameters": counts,
            "eval": metrics,
            "data": {"train": train_report, "eval": eval_report},
            "info": info,
        },
    )
