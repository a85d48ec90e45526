"""What the kinds built on the transformers `Trainer` share: progress and logged rows as events, a
graceful stop on SIGTERM / Ctrl-C (the step ends, a checkpoint is saved), the latest checkpoint of a
run folder."""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from fakefinder.config import ConfigError


def trainer_device(name: str) -> str:
    """`auto`: a CUDA GPU when there is one, else the CPU."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def precision_flags(wanted: str, device: str, key: str) -> dict:
    """TrainingArguments' bf16 / fp16 for a precision setting (`auto`: bf16 on a GPU that has it)."""
    import torch

    if wanted == "auto":
        wanted = "bf16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "fp32"
    if wanted == "fp16" and not device.startswith("cuda"):
        raise ConfigError(f"{key}=fp16 needs a CUDA GPU; use bf16 or fp32")
    return {"bf16": wanted == "bf16", "fp16": wanted == "fp16"}


def report_through_events(trainer, events, stop: threading.Event, stage: str, metrics_stage: str) -> None:
    """The trainer reports through `events` (see `events_callback`) instead of printing its rows."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(events_callback(events, stop, stage, metrics_stage))


def events_callback(events, stop: threading.Event, stage: str, metrics_stage: str):
    """Training progress (a step of the total, with its ETA) and each logged row as events; when
    `stop` is set, a checkpoint is saved at the end of the step and training stops."""
    from transformers import TrainerCallback

    class EventsCallback(TrainerCallback):
        running = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.running = events.stage(stage, total=state.max_steps, step=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.running is not None:
                self.running.advance(state.global_step - self.running.step)
            if stop.is_set():
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            events.metrics(metrics_stage, {"step": state.global_step, **(logs or {})})

        def on_train_end(self, args, state, control, **kwargs):
            if self.running is not None:
                events.end(self.running)

    return EventsCallback()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event, events):
    """SIGTERM / Ctrl-C (on the main thread) set `stop`: the step ends, a checkpoint is saved, the
    run returns; a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        events.log("stopping after this step and saving a checkpoint (Ctrl-C again to abort)", "train")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def latest_checkpoint(output: Path) -> str | None:
    """The complete `checkpoint-<step>` folder of `output` with the highest step (None: there is
    none). The Trainer writes `trainer_state.json` last: a folder without it was cut off by a kill."""
    found = [p for p in Path(output).glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None
