"""Fitting the line by gradient descent, one pass per epoch, inside the run block: state.json after
each epoch (what --resume continues from), the artifact at the end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from fakefinder.config import Config
from fakefinder.core.artifact import write_artifact
from fakefinder.core.files import atomic_write_text
from fakefinder.core.results import TrainSummary
from fakefinder.engine.run import Run
from fakefinder.tasks.registry import get_task
from toy_regressor.data import read

MARKERS = ("state.json", "model")


def train(config: Config, resume=False, events=None, overwrite: bool = False) -> TrainSummary:
    with Run(get_task(config.task), config, MARKERS, "a toy run", resume, overwrite, events) as run:
        t, out = config.toy.train, run.folder
        xs, ys = read(
            Path(config.toy.data or ".") / "toy_train.csv"
        )  # bad data fails before anything is written
        run.start()
        found = run.checkpoint(
            lambda folder: folder / "state.json" if (folder / "state.json").is_file() else None
        )
        state = json.loads(found.read_text()) if found else {"epoch": 0, "a": 0.0, "b": 0.0, "history": []}
        started = time.perf_counter()
        stage = run.events.stage("train", total=t.epochs, step=state["epoch"])
        while state["epoch"] < t.epochs and not run.stop.is_set():
            for x, y in zip(xs, ys):
                error = state["a"] * x + state["b"] - y
                state["a"] -= t.lr * error * x
                state["b"] -= t.lr * error
            state["epoch"] += 1
            loss = sum((state["a"] * x + state["b"] - y) ** 2 for x, y in zip(xs, ys)) / len(xs)
            state["history"].append({"epoch": state["epoch"], "loss": loss})
            run.events.metrics(
                "train", {"loss": loss}, step=state["epoch"], total=t.epochs, epoch=state["epoch"]
            )
            stage.advance()
            atomic_write_text(out / "state.json", json.dumps(state))
            time.sleep(t.step_seconds)
        run.events.end(stage)
        seconds = time.perf_counter() - started
        if state["epoch"] < t.epochs:
            return TrainSummary(
                config.task,
                out,
                None,
                "interrupted",
                epochs=state["epoch"],
                steps=state["epoch"],
                seconds=seconds,
                history=state["history"],
            )
        weights = {"a": torch.tensor([state["a"]]), "b": torch.tensor([state["b"]])}
        artifact = write_artifact(
            out / "model",
            config.task,
            {"form": "linear"},
            [],
            {},
            weights,
            training={"epochs": state["epoch"]},
        )
        return TrainSummary(
            config.task,
            out,
            artifact.path,
            "completed",
            "loss",
            state["history"][-1]["loss"],
            state["epoch"],
            state["epoch"],
            state["epoch"],
            seconds,
            state["history"],
        )
