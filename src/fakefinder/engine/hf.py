"""What the kinds built on the transformers `Trainer` share (llm_lora / llm_qlora and dx_llava): the
`TrainingArguments` from a run section, one `Trainer` base with checkpoints that hold no pickle and
an evaluation of the kind's own, progress and logged rows as the run's events (the run's trackers
take them; the Trainer reports to none), a graceful stop when the run block says so, the latest
complete checkpoint of a run folder."""

from __future__ import annotations

from pathlib import Path

from fakefinder.core.results import TrainSummary


def training_arguments(settings, run, evaluates: bool, **extra):
    """TrainingArguments for a run section (`settings`) inside the run block `run`: the device and
    precision it resolved, steps or epochs, batch and accumulation, schedule, intervals, seed."""
    from transformers import TrainingArguments

    t = settings
    device = run.device.type
    return TrainingArguments(
        output_dir=str(run.folder),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.accumulate,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,
        max_grad_norm=t.grad_clip,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,
        eval_strategy="steps" if evaluates else "no",
        eval_steps=t.eval_steps,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        data_seed=t.seed,
        dataloader_num_workers=t.num_workers,
        report_to="none",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        bf16=run.precision == "bf16",
        fp16=run.precision == "fp16",
        **extra,
    )


def trainer_base():
    """The `Trainer` every Trainer-based kind subclasses: `held_out(dataset, prefix)` is its
    evaluation (the figures it logs and returns); `save_trained(folder)` writes what trains into a
    checkpoint (default: the model's own safetensors), beside the arguments as JSON (never a pickle;
    optimizer, scheduler and RNG states are tensor files the Trainer reads back weights-only)."""
    from transformers import Trainer

    class KindTrainer(Trainer):
        def held_out(self, dataset, prefix: str) -> dict:
            raise NotImplementedError

        def save_trained(self, folder: Path) -> None:
            self.model.save_pretrained(folder, safe_serialization=True)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            dataset = eval_dataset or self.eval_dataset
            if dataset is None:
                return {}
            metrics = self.held_out(dataset, metric_key_prefix)
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def _save(self, output_dir=None, state_dict=None):
            if not self.args.should_save:
                return
            output = Path(output_dir or self.args.output_dir)
            output.mkdir(parents=True, exist_ok=True)
            self.save_trained(output)
            (output / "training_args.json").write_text(self.args.to_json_string())

    return KindTrainer


def report_through_events(trainer, run, stage: str) -> None:
    """The trainer reports through the run's events (see `events_callback`) instead of printing its rows."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(events_callback(run, stage))


def events_callback(run, stage: str):
    """Training progress (a step of the total, with its ETA) and each logged row as metric events
    (`val` for an evaluation's rows, `train` for the others); when the run's `stop` is set, a
    checkpoint is saved at the end of the step and training stops."""
    from transformers import TrainerCallback

    events = run.events

    class EventsCallback(TrainerCallback):
        running = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.running = events.stage(stage, total=state.max_steps, step=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.running is not None:
                self.running.advance(state.global_step - self.running.step)
            if run.should_stop():
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            evaluated = any(key.startswith("eval_") for key in logs)
            logs.pop("epoch", None)
            events.metrics(
                "val" if evaluated else "train",
                logs,
                step=state.global_step,
                total=state.max_steps,
                epoch=round(state.epoch, 4) if state.epoch is not None else None,
                epochs=args.num_train_epochs if args.max_steps <= 0 else None,
            )

        def on_train_end(self, args, state, control, **kwargs):
            if self.running is not None:
                events.end(self.running)

    return EventsCallback()


def train_summary(
    kind: str,
    output: Path,
    artifact: Path | None,
    stopped: str,
    result,
    seconds: float,
    trainer,
    details: dict,
) -> TrainSummary:
    """The `TrainSummary` of a `Trainer` run: selected by eval loss where `details["eval"]` has one,
    epochs and steps from the trainer's state, its logged rows as the history."""
    evaluated = details.get("eval") or {}
    return TrainSummary(
        kind,
        output,
        artifact,
        stopped,
        "eval_loss" if "eval_loss" in evaluated else None,
        evaluated.get("eval_loss"),
        None,
        trainer.state.epoch,
        result.global_step,
        seconds,
        trainer.state.log_history,
        details,
    )


def latest_checkpoint(output: Path) -> Path | None:
    """The complete `checkpoint-<step>` folder of `output` with the highest step (None: there is
    none). The Trainer writes `trainer_state.json` last: a folder without it was cut off by a kill."""
    found = [
        p
        for p in Path(output).glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None
