"""The deepfake detector's evaluation report: PNG plots (ROC, PR, confusion matrix, score
histograms by class, metric vs perturbation) and one self-contained HTML page that embeds them."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np

from fakefinder.core.files import atomic_write_text
from fakefinder.core.plots import new_figure, save_png
from fakefinder.engine.report import PAGE_HEAD, embedded_png, html_table


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_plots(folder: Path, curves: dict, metrics: dict) -> dict[str, list[Path]]:
    """PNG plots per (model, set): ROC + PR, confusion matrix, score histograms by class; plus
    metric vs perturbation when perturbations ran."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    folder = Path(folder)
    out: dict[str, list[Path]] = {}
    for (name, set_name), (frames, videos, threshold, levels) in curves.items():
        key = f"{name} on {set_name}"
        stem = _slug(f"{name}__{set_name}")
        paths = []
        fig, axes = new_figure(1, 2, figsize=(10, 4))
        for level, table in (("frame", frames), ("video", videos)):
            labels = (table.label == "fake").astype(int).to_numpy()
            if labels.min() == labels.max():
                continue
            fpr, tpr, _ = roc_curve(labels, table.score)
            axes[0].plot(fpr, tpr, label=f"{level} (AUC {levels[level]['auc']:.3f})")
            precision, recall, _ = precision_recall_curve(labels, table.score)
            axes[1].plot(recall, precision, label=f"{level} (AP {levels[level]['ap']:.3f})")
        axes[0].plot([0, 1], [0, 1], ":", color="grey")
        axes[0].set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
        axes[1].set(title="precision-recall (fake)", xlabel="recall", ylabel="precision")
        for axis in axes:
            axis.legend(loc="lower right")
        paths.append(save_png(fig, folder / f"{stem}__roc_pr.png"))

        fig, axes = new_figure(1, 2, figsize=(8, 3.6))
        for axis, level in zip(axes, ("frame", "video")):
            matrix = np.array(levels[level]["confusion"])
            axis.imshow(matrix, cmap="Blues")
            for (i, j), count in np.ndenumerate(matrix):
                axis.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    color="white" if count > matrix.max() / 2 else "black",
                )
            axis.set(
                xticks=[0, 1],
                yticks=[0, 1],
                xticklabels=["real", "fake"],
                yticklabels=["real", "fake"],
                xlabel="predicted",
                ylabel="true",
                title=f"{level} (threshold {threshold:.3f})",
            )
        paths.append(save_png(fig, folder / f"{stem}__confusion.png"))

        fig, axis = new_figure(figsize=(6, 3.6))
        bins = np.linspace(0, 1, 41)
        for label, colour in (("real", "tab:blue"), ("fake", "tab:red")):
            axis.hist(frames[frames.label == label].score, bins=bins, alpha=0.6, color=colour, label=label)
        axis.axvline(threshold, color="black", linestyle="--", label="threshold")
        axis.set(title="frame scores by class", xlabel="P(fake)", ylabel="frames")
        axis.legend()
        paths.append(save_png(fig, folder / f"{stem}__scores.png"))

        if "perturbations" in levels:
            names = list(levels["perturbations"])
            fig, axis = new_figure(figsize=(7, 3.6))
            for metric in ("auc", "macro_f1", "accuracy"):
                axis.plot(
                    names, [levels["perturbations"][n]["video"][metric] for n in names], "o-", label=metric
                )
            axis.set(title="video-level metrics under perturbation", ylim=(0, 1.02))
            axis.tick_params(axis="x", rotation=30)
            axis.legend()
            paths.append(save_png(fig, folder / f"{stem}__perturbations.png"))
        out[key] = paths
    return out


def write_report(path: Path, metrics: dict, plots: dict[str, list[Path]], config) -> Path:
    parts = [
        PAGE_HEAD,
        "<h1>fakefinder evaluation</h1>",
        f"<p>Video scores: <b>{html.escape(metrics['aggregation'])}</b> of frame scores per video_id (top-k "
        f"= {metrics['top_k']}). Thresholds were fitted on validation data, never on the data below.</p>",
        "<h2>Summary</h2>",
        html_table(
            metrics["tables"]["summary"],
            ["model", "set", "level", "n", "auc", "macro_f1", "accuracy", "eer", "ap"],
        ),
    ]
    for name, entry in metrics["models"].items():
        parts.append(
            f"<h2>{html.escape(name)}</h2><p>{html.escape(entry['path'])} — threshold "
            f"{entry['threshold']:.4f} ({html.escape(entry['threshold_source'])})</p>"
        )
        for set_name, levels in entry["sets"].items():
            parts.append(f"<h3>{html.escape(set_name)}</h3>")
            for level in ("frame", "video"):
                m = levels[level]
                classes = [{"class": c, **v} for c, v in m["per_class"].items()]
                parts.append(f"<h4>{level} level</h4>")
                parts.append(html_table(classes, ["class", "precision", "recall", "f1", "support"]))
                for group in ("per_method", "per_dataset"):
                    if group in m:
                        rows = [{"name": k, **v} for k, v in m[group].items()]
                        parts.append(f"<p>{group.replace('_', ' ')}</p>")
                        parts.append(
                            html_table(rows, ["name", "n", "auc", "macro_f1", "accuracy", "eer", "ap"])
                        )
            if "perturbations" in levels:
                rows = [
                    {
                        "perturbation": k,
                        **{
                            f"{lvl} {m}": v[lvl][m]
                            for lvl in ("frame", "video")
                            for m in ("auc", "macro_f1", "accuracy")
                        },
                    }
                    for k, v in levels["perturbations"].items()
                ]
                parts.append("<h4>robustness</h4>")
                parts.append(html_table(rows, list(rows[0])))
            for image in plots.get(f"{name} on {set_name}", []):
                parts.append(embedded_png(image))
            if levels.get("heatmaps"):
                parts += heatmap_section(levels["heatmaps"], Path(path).parent)
    parts.append("</body></html>")
    return atomic_write_text(Path(path), "\n".join(parts))


HEATMAP_NOTE = (
    "A heatmap shows where the model looked when it scored a crop, not proof of where the face was "
    "changed. The figures below check it on fakes whose true change is known: <b>pointing game</b> "
    "(is the map's peak inside the changed region), <b>pixel AUC</b> (does the map rank changed pixels "
    "above unchanged ones), <b>IoU</b> (overlap of the map above its validation threshold with the "
    "change) and <b>deletion drop</b> (how far the fake probability falls when the map's top k % of "
    "pixels are removed), each beside a centred face prior and a random map scored the same way."
)


def heatmap_section(evidence: dict, folder: Path) -> list[str]:
    """Where the model looked: its figures against the two baselines, by mask area, and the gallery."""
    parts = ["<h4>where the model looked</h4>", f"<p>{HEATMAP_NOTE}</p>"]
    if evidence.get("experimental"):
        parts.append(
            "<p><b>Experimental:</b> on validation these heatmaps did not beat the face prior (or were not "
            "checked), so they are not offered as evidence of where the face was changed.</p>"
        )
    overall = evidence.get("overall", {})
    if overall.get("n"):
        fractions = evidence.get("fractions", [])
        columns = ["map", "pointing", "pixel_auc", f"iou_{evidence['iou_threshold']:g}"]
        columns += [f"drop_{k:g}" for k in fractions]
        rows = []
        for area, part in [("all", overall), *evidence.get("by_area", {}).items()]:
            for map_name in ("map", "face_prior", "random"):
                if part.get("n"):
                    rows.append({"map": f"{map_name} ({area}, n={part['n']})", **part[map_name]})
        parts.append(html_table(rows, columns))
        ratios = overall.get("ratios", {})
        if ratios:
            parts.append(html_table([ratios], list(ratios)))
        parts.append(
            f"<p>Removal: {html.escape(evidence.get('removal', ''))}. IoU threshold "
            f"{evidence['iou_threshold']:g} ({html.escape(evidence.get('iou_threshold_source', ''))}).</p>"
        )
    else:
        parts.append("<p>No fake here has a true mask (its own aligned source crop or a dataset mask).</p>")
    left_out = evidence.get("left_out") or {}
    if left_out:
        parts.append(
            f"<p>Fakes left out: {html.escape(', '.join(f'{k}: {v}' for k, v in left_out.items()))}</p>"
        )
    parts += gallery_html(evidence.get("gallery", []), folder)
    return parts


def gallery_html(entries: list[dict], folder: Path) -> list[str]:
    """The gallery: per group, each crop's overlay with its score and regions."""
    parts = []
    for group in dict.fromkeys(e["group"] for e in entries):
        cells = []
        for e in (e for e in entries if e["group"] == group):
            overlay = folder / e["overlay"]
            if not overlay.is_file():
                continue
            caption = f"{e['label']} · P(fake) {e['score']:.3f}<br>{html.escape(e.get('regions') or '')}"
            cells.append(
                f"<figure style='display:inline-block;margin:4px'>{embedded_png(overlay, 160)}"
                f"<figcaption style='font-size:80%'>{caption}</figcaption></figure>"
            )
        if cells:
            parts.append(f"<p><b>{html.escape(group.replace('_', ' '))}</b></p><div>{''.join(cells)}</div>")
    return parts


def print_tables(metrics: dict, console) -> None:
    """Confusion matrix, per-class precision/recall/F1 and macro-F1, as competitions report them."""
    from rich.table import Table

    from fakefinder.engine.report import fmt

    for name, entry in metrics["models"].items():
        for set_name, levels in entry["sets"].items():
            for level in ("frame", "video"):
                m = levels[level]
                (tn, fp), (fn, tp) = m["confusion"]
                table = Table(
                    title=f"{name} | {set_name} | {level} level | threshold {entry['threshold']:.3f}"
                )
                for column in ("", "pred real", "pred fake", "precision", "recall", "F1", "support"):
                    table.add_column(column, justify="right")
                for cls, row in (("real", (tn, fp)), ("fake", (fn, tp))):
                    c = m["per_class"][cls]
                    table.add_row(
                        f"true {cls}",
                        str(row[0]),
                        str(row[1]),
                        f"{c['precision']:.4f}",
                        f"{c['recall']:.4f}",
                        f"{c['f1']:.4f}",
                        str(c["support"]),
                    )
                console.print(table)
                console.print(
                    f"  macro-F1 {m['macro_f1']:.4f} | AUC {fmt(m['auc'])} | accuracy {m['accuracy']:.4f} | "
                    f"EER {fmt(m['eer'])} | AP {fmt(m['ap'])} | n {m['n']}"
                )
    rows = metrics["tables"]["summary"]
    if len(rows) > 2:
        table = Table(title="comparison")
        for column in ("model", "set", "level", "AUC", "macro-F1", "accuracy"):
            table.add_column(column)
        for r in rows:
            table.add_row(
                r["model"], r["set"], r["level"], fmt(r["auc"]), fmt(r["macro_f1"]), fmt(r["accuracy"])
            )
        console.print(table)
