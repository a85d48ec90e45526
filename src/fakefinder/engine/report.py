"""What every kind's report is made of: figures formatted for tables, an HTML table, the page head,
PNG images embedded in the page (so it reads offline as one file), a model's short name."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np


def fmt(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c)))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


PAGE_HEAD = (
    "<!doctype html><html><head><meta charset='utf-8'><title>fakefinder evaluation</title><style>"
    "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
    "img{max-width:100%;margin:0.5em 0}h2{border-bottom:1px solid #ddd}</style></head><body>"
)


def embedded_png(path: Path, width: int | None = None) -> str:
    """An <img> holding the image itself (PNG or JPEG), so the report reads offline as one file."""
    encoded = base64.b64encode(Path(path).read_bytes()).decode()
    mime = "image/jpeg" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "image/png"
    size = f" width='{int(width)}'" if width else ""
    return f"<img alt='{html.escape(Path(path).stem)}'{size} src='data:{mime};base64,{encoded}'>"


def model_name(path: Path) -> str:
    """A short name for tables: `run/model` for an artifact folder, `run/best` for an older file."""
    path = Path(path)
    if path.name == "model.json":
        path = path.parent
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def scalar_table(metrics: dict, console) -> None:
    """Kinds with their own figures (language models, object detectors, text-to-image LoRAs): one row
    per model of its top-level numbers."""
    from rich.table import Table

    models = metrics.get("models", {})
    columns = [
        k
        for k in dict.fromkeys(
            k
            for e in models.values()
            for k, v in e.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        )
    ]
    if not columns:
        return
    table = Table(title=f"{metrics.get('kind', 'evaluation')} | {metrics.get('set', '')}")
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, entry in models.items():
        table.add_row(
            name,
            *[
                fmt(entry.get(c)) if isinstance(entry.get(c), float) else str(entry.get(c, "-"))
                for c in columns
            ],
        )
    console.print(table)
