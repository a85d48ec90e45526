"""Progress events: how long work (prepare, train, evaluate, predict) reports, instead of printing.

An `Event` is plain data (JSON-able with `to_dict`): a stage starting or ending, a step of a
total (with an ETA), metrics, a warning, a log line, or a final result. API functions take an
`events` argument: a callable that receives each `Event` (the CLI renders them with rich, the
platform stores and streams them), or None, which sends them to the `fakefinder` logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

EVENT_TYPES = ("stage", "progress", "end", "metrics", "warning", "log", "result")
log = logging.getLogger("fakefinder")


@dataclass(frozen=True)
class Event:
    type: str  # one of EVENT_TYPES
    stage: str  # what it is about: "prepare", "train", "epoch 3/10", "evaluate", ... (metrics: train, val)
    message: str = ""
    step: int | None = None
    total: int | None = None
    eta_s: float | None = None
    data: dict[str, Any] = field(default_factory=dict)  # metrics, a result, the fields of a progress step
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Sink = Callable[[Event], None]


def log_sink(event: Event) -> None:
    """The default: stages and steps at DEBUG, warnings at WARNING, everything else at INFO."""
    if event.type == "warning":
        log.warning("%s", event.message)
    elif event.type in ("stage", "progress", "end"):
        log.debug("%s %s %s/%s", event.stage, event.type, event.step, event.total)
    elif event.message:
        log.info("%s", event.message)


class Stage:
    """A running stage: `advance()` reports each step with its ETA."""

    def __init__(self, events: Events, name: str, total: int | None) -> None:
        self.events, self.name, self.total = events, name, total
        self.step = 0
        self.started = time.perf_counter()
        self._first = 0  # steps already done when the stage started (a resumed epoch)

    def start_at(self, step: int) -> Stage:
        self.step = self._first = step
        return self

    def advance(self, n: int = 1, message: str = "", **data) -> None:
        self.step += n
        done = self.step - self._first
        eta = None
        if self.total and done > 0:
            eta = (time.perf_counter() - self.started) / done * max(0, self.total - self.step)
        self.events.emit(
            "progress", self.name, message, step=self.step, total=self.total, eta_s=eta, data=data
        )


class Events:
    """The reporting side of an API call: wraps a sink (None: the logger)."""

    def __init__(self, sink: Sink | None = None) -> None:
        self.sink = sink or log_sink

    def emit(self, type: str, stage: str, message: str = "", **fields) -> None:
        self.sink(Event(type, stage, message, **fields))

    def log(self, message: str, stage: str = "") -> None:
        self.emit("log", stage, message)

    def warning(self, message: str, stage: str = "") -> None:
        self.emit("warning", stage, message)

    def metrics(
        self,
        stage: str,
        values: dict,
        message: str = "",
        *,
        step: int | None = None,
        total: int | None = None,
        epoch: float | None = None,
        epochs: float | None = None,
    ) -> None:
        """Named metrics of one moment of a run, one shape for every kind: `stage` is `train` (rows
        logged while training) or `val` (held-out figures); `step` of `total` optimizer steps and the
        `epoch` (of `epochs`) they were taken at, also kept in the data (so stored rows say when)."""
        when = {k: v for k, v in (("step", step), ("epoch", epoch), ("epochs", epochs)) if v is not None}
        self.emit("metrics", stage, message, step=step, total=total, data={**when, **values})

    def result(self, stage: str, data: dict, message: str = "") -> None:
        self.emit("result", stage, message, data=dict(data))

    def stage(self, name: str, total: int | None = None, message: str = "", step: int = 0) -> Stage:
        self.emit("stage", name, message, step=step, total=total)
        return Stage(self, name, total).start_at(step)

    def end(self, stage: Stage, message: str = "") -> None:
        self.emit("end", stage.name, message, step=stage.step, total=stage.total)


def as_events(events: Events | Sink | None) -> Events:
    """What an API function's `events` argument may be: an `Events`, a plain callable, or None."""
    return events if isinstance(events, Events) else Events(events)


SILENT = Events(lambda event: None)  # for processes that must not report (DDP ranks other than 0)
