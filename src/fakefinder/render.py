"""Events as a terminal shows them (rich): progress bars with ETA per stage, log lines and
warnings, one line per training epoch, and the summary tables of prepare, train and evaluate.
The CLI and the demo render the same events the platform stores."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fakefinder.core.events import Event
from fakefinder.engine.report import scalar_table

EPOCH_COLUMNS = [
    ("epoch", "epoch", "{}"),
    ("train loss", "train_loss", "{:.4f}"),
    ("val loss", "val_loss", "{:.4f}"),
    ("acc", "val_accuracy", "{:.3f}"),
    ("macro-F1", "val_macro_f1", "{:.3f}"),
    ("AUC", "val_auc", "{:.3f}"),
    ("thr", "threshold", "{:.3f}"),
    ("lr", "lr", "{:.1e}"),
    ("s", "epoch_seconds", "{:.0f}"),
    ("data wait", "data_wait_pct", "{:.0f}%"),
    ("CPU", "cpu_pct", "{:.0f}%"),
    ("RAM GB", "ram_gb", "{}"),
    ("GPU GB", "gpu_mem_gb", "{}"),
]


class RichRenderer:
    """A sink for `fakefinder.core.events`: `api.train(config, events=RichRenderer())`."""

    def __init__(self, console: Console | None = None, progress: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.show_progress = progress
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}

    # -- progress bars ------------------------------------------------------------------------
    def _bars(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
        return self._progress

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._tasks.clear()

    def __enter__(self) -> RichRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, event: Event) -> None:
        handler = getattr(self, f"_on_{event.type}", None)
        if handler is not None:
            handler(event)

    def _on_stage(self, event: Event) -> None:
        if self.show_progress and event.total:
            self._tasks[event.stage] = self._bars().add_task(
                event.stage, total=event.total, completed=event.step or 0, info=""
            )
        if event.message:
            self.console.print(event.message)

    def _on_progress(self, event: Event) -> None:
        task = self._tasks.get(event.stage)
        if task is not None:
            info = " ".join(_field(k, v) for k, v in event.data.items())
            self._progress.update(task, completed=event.step, info=info)

    def _on_end(self, event: Event) -> None:
        task = self._tasks.pop(event.stage, None)
        if task is not None:
            self._progress.remove_task(task)
        if not self._tasks:
            self.close()
        if event.message:
            self.console.print(event.message)

    def _on_log(self, event: Event) -> None:
        self.console.print(event.message)

    def _on_warning(self, event: Event) -> None:
        self.console.print(f"[yellow]warning:[/] {event.message}")

    def _on_metrics(self, event: Event) -> None:
        """Held-out figures as one line each (an epoch's row in the classification family's columns);
        rows logged while training show in the progress bar instead."""
        if event.message:
            self.console.print(event.message)
        elif event.stage == "val":
            self.console.print(epoch_line(event.data) if _cells(event.data)[1:] else metrics_line(event))

    def _on_result(self, event: Event) -> None:
        table = {"prepare": prepare_tables, "train": history_table, "evaluate": evaluation_tables}.get(
            event.stage
        )
        if table is not None:
            table(event.data, self.console)
        if event.message:
            self.console.print(event.message)


def _field(key: str, value) -> str:
    if isinstance(value, float):
        return f"{key} {value:.2e}" if key == "lr" else f"{key} {value:.4f}"
    return str(value) if key in ("status", "") else f"{key} {value}"


def _cells(row: dict) -> list[tuple[str, str]]:
    return [(title, f.format(row[key])) for title, key, f in EPOCH_COLUMNS if row.get(key) is not None]


def epoch_line(row: dict) -> str:
    """One line per epoch, so logs stay readable in any terminal width."""
    mark = " [bold green]best[/]" if row.get("is_best") else ""
    return " | ".join(f"{title} {value}" for title, value in _cells(row)) + mark


def metrics_line(event: Event) -> str:
    """A metric event's figures on one line: where in the run, then each named value."""
    data = event.data
    where = (
        [f"step {event.step}" + (f"/{event.total}" if event.total else "")] if event.step is not None else []
    )
    if data.get("epoch") is not None:
        where.append(f"epoch {data['epoch']:g}" + (f"/{data['epochs']:g}" if data.get("epochs") else ""))
    values = [
        _field(k, v)
        for k, v in data.items()
        if k not in ("step", "epoch", "epochs") and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return " | ".join(where + values)


def history_table(result: dict, console) -> None:
    """The whole training run, at its end."""
    history = result.get("history") or []
    if not history:
        return
    table = Table(title="training history")
    present = [c for c in EPOCH_COLUMNS[:9] if any(r.get(c[1]) is not None for r in history)]
    for title, _, _ in present:
        table.add_column(title, justify="right")
    for row in history:
        table.add_row(
            *[(f.format(row[key]) if row.get(key) is not None else "-") for _, key, f in present],
            style="bold green" if row.get("is_best") else None,
        )
    console.print(table)


def prepare_tables(summary: dict[str, Any], console) -> None:
    from rich.table import Table

    table = Table(title="prepare summary", show_header=True)
    table.add_column("split")
    table.add_column("real items", justify="right")
    table.add_column("real crops", justify="right")
    table.add_column("fake items", justify="right")
    table.add_column("fake crops", justify="right")
    for split, counts in summary["crops_by_split_label"].items():
        table.add_row(
            split,
            str(counts.get("real_videos", 0)),
            str(counts.get("real", 0)),
            str(counts.get("fake_videos", 0)),
            str(counts.get("fake", 0)),
        )
    console.print(table)
    for reason, count in summary["failures_by_reason"].items():
        console.print(f"  failed: {count} x {reason}")


def evaluation_tables(metrics: dict, console) -> None:
    """An evaluation's figures, as the kind that made them shows them."""
    from fakefinder.tasks import get_task, list_tasks

    kind = metrics.get("kind")
    if kind in list_tasks():
        get_task(kind).render_evaluation(metrics, console)
    else:
        scalar_table(metrics, console)
