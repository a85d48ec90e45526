"""The image classifier's evaluation report: one self-contained HTML page per run with the summary,
the per-class table and the N x N confusion matrix of each model on each set."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from fakefinder.core.files import atomic_write_text
from fakefinder.core.plots import new_figure, save_png
from fakefinder.engine.report import PAGE_HEAD, embedded_png, html_table


def confusion_plot(matrix: list[list[int]], classes: list[str], title: str, path: Path) -> Path:
    matrix = np.asarray(matrix)
    side = max(4.0, 0.45 * len(classes) + 2)
    fig, axis = new_figure(figsize=(side, side))
    axis.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        axis.text(
            j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black"
        )
    ticks = list(range(len(classes)))
    axis.set(
        xticks=ticks,
        yticks=ticks,
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    axis.tick_params(axis="x", rotation=45)
    return save_png(fig, path)


def summary_rows(metrics: dict) -> list[dict]:
    return [
        {
            "model": name,
            "set": set_name,
            "n": m["n"],
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "top5_accuracy": m.get("top5_accuracy"),
            "log_loss": m["log_loss"],
        }
        for name, entry in metrics["models"].items()
        for set_name, m in entry["sets"].items()
    ]


def write_classifier_report(folder: Path, metrics: dict) -> Path:
    folder = Path(folder)
    parts = [
        PAGE_HEAD,
        "<h1>fakefinder evaluation: image classifier</h1>",
        "<h2>Summary</h2>",
        html_table(
            summary_rows(metrics), ["model", "set", "n", "accuracy", "macro_f1", "top5_accuracy", "log_loss"]
        ),
    ]
    for name, entry in metrics["models"].items():
        parts.append(f"<h2>{html.escape(name)}</h2><p>{html.escape(entry['path'])}</p>")
        for set_name, m in entry["sets"].items():
            parts.append(f"<h3>{html.escape(set_name)}</h3>")
            rows = [{"class": c, **v} for c, v in m["per_class"].items()]
            parts.append(html_table(rows, ["class", "precision", "recall", "f1", "support"]))
            stem = f"{name}__{set_name}".replace("/", "_")
            plot = confusion_plot(
                m["confusion"],
                m["classes"],
                f"{name} on {set_name}",
                folder / "plots" / f"{stem}__confusion.png",
            )
            parts.append(embedded_png(plot))
    parts.append("</body></html>")
    return atomic_write_text(folder / "report.html", "\n".join(parts))


def print_tables(metrics: dict, console) -> None:
    """Per model and set: precision/recall/F1 per class, accuracy, top-5 and macro-F1."""
    from rich.table import Table

    for name, entry in metrics["models"].items():
        for set_name, m in entry["sets"].items():
            table = Table(title=f"{name} | {set_name} | {m['n']} images")
            for column in ("class", "precision", "recall", "F1", "support"):
                table.add_column(column, justify="right")
            for cls, c in m["per_class"].items():
                table.add_row(
                    cls, f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}", str(c["support"])
                )
            console.print(table)
            top5 = f" | top-5 {m['top5_accuracy']:.4f}" if "top5_accuracy" in m else ""
            console.print(f"  accuracy {m['accuracy']:.4f} | macro-F1 {m['macro_f1']:.4f}{top5}")
