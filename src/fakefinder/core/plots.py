"""Figures for reports, drawn without pyplot: no process-wide backend switch, no figure registry."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from fakefinder.core.files import atomic_write_bytes


def new_figure(*args, **kwargs):
    """A matplotlib figure and its axes (`subplots` arguments, plus `figsize`)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(*args, **kwargs)


def save_png(fig, path: Path, dpi: int = 90) -> Path:
    buffer = BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())
