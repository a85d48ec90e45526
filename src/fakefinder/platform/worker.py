"""A job's worker process: `python -m fakefinder.platform.worker <job folder>/job.json`. It runs the
same API call the CLI would (train, prepare, evaluate, predict, merge) and reports on stdout: human
log lines, and each event as one `::fakefinder-event:: {json}` line that the manager reads back.
The marker carries a token the manager gives this attempt (`FAKEFINDER_EVENT_TOKEN`), so no text
that user data puts in the log (a file name in an error message) can pass for an event.
Exit code 0: done; 3: stopped on request with a checkpoint saved; anything else: failed."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import sys
import time
import traceback
from pathlib import Path
from typing import Any

STOPPED = 3


def event_mark(token: str) -> str:
    return f"::fakefinder-event:{token}:: "


class StdoutEvents:
    """The event sink: a marker line per event (progress at most twice a second per stage) and a
    readable line for what a person would want in the log."""

    def __init__(self, stream=None, token: str | None = None) -> None:
        self.stream = stream or sys.stdout
        self.mark = event_mark(token or os.environ.get("FAKEFINDER_EVENT_TOKEN") or secrets.token_hex(16))
        self._last_progress: dict[str, float] = {}

    def __call__(self, event) -> None:
        payload = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        if payload["type"] == "progress":
            now = time.monotonic()
            last = self._last_progress.get(payload["stage"], 0.0)
            if now - last < 0.5 and payload.get("step") != payload.get("total"):
                return
            self._last_progress[payload["stage"]] = now
        if payload["type"] == "result" and payload["stage"] != "job":
            payload = {**payload, "data": {k: v for k, v in payload["data"].items() if k != "history"}}
        self.emit(payload)
        text = _readable(payload)
        if text:
            self.stream.write(text + "\n")
        self.stream.flush()

    def emit(self, payload: dict) -> None:
        self.stream.write(self.mark + json.dumps(_without_nan(payload), default=_plain) + "\n")
        self.stream.flush()


def _without_nan(value: Any) -> Any:
    """NaN and infinities as null: what JSON (and a browser) can read."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _without_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nan(v) for v in value]
    return value


def _plain(value: Any):
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def _readable(payload: dict) -> str:
    kind, stage, message = payload["type"], payload.get("stage") or "", payload.get("message") or ""
    if kind in ("log", "result") and message:
        return message
    if kind == "warning":
        return f"warning: {message}"
    if kind == "stage":
        total = f" ({payload['total']} steps)" if payload.get("total") else ""
        return f"== {stage}{total}" + (f": {message}" if message else "")
    if kind == "metrics":
        shown = ", ".join(
            f"{k} {_short(v)}"
            for k, v in payload.get("data", {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        return f"{stage}: {shown}" if shown else ""
    return ""


def _short(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------
def run(spec: dict, events: StdoutEvents) -> int:
    from fakefinder.config import config_from_dict

    folder = Path(spec["folder"])
    kind = spec["type"]
    if kind == "merge":
        from fakefinder.tasks import get_task

        output = get_task(spec["kind"]).merge(Path(spec["artifact"]), Path(spec["output"]))
        events.emit(_job_result({"output_path": str(output)}))
        events.stream.write(f"merged into {output}\n")
        return 0
    config = config_from_dict(spec["config"], f"job {spec['task_id']}")
    for note in config.notes:  # a job stored by an earlier version, with keys renamed since
        events(_warning(note))
    if kind == "train":
        return _train(config, spec, events, folder)
    if kind == "prepare":
        return _prepare(config, spec, events)
    if kind == "evaluate":
        return _evaluate(config, events, folder)
    if kind == "predict":
        return _predict(config, events, folder)
    raise ValueError(f"unknown job type {kind!r}")


def _job_result(data: dict) -> dict:
    return {"type": "result", "stage": "job", "message": "", "data": data, "time": time.time()}


def _train(config, spec: dict, events: StdoutEvents, folder: Path) -> int:
    from fakefinder import api

    result = api.train(config, resume=bool(spec.get("resume")), events=events)
    if int(os.environ.get("RANK", "0")) != 0:  # other torchrun ranks: rank 0 reports and evaluates
        return STOPPED if result.interrupted else 0
    summary: dict[str, Any] = {k: v for k, v in result.to_dict().items() if v is not None and k != "details"}
    summary["artifact"] = str(result.artifact) if result.artifact and result.artifact.exists() else None
    summary["global_step"] = result.steps
    threshold = result.details.get("threshold")
    if isinstance(threshold, (int, float)) and not (isinstance(threshold, float) and math.isnan(threshold)):
        summary["threshold"] = threshold
    if result.interrupted:
        events.emit(_job_result(summary))
        return STOPPED
    if spec.get("evaluate", True) and summary["artifact"]:
        summary.update(_evaluation(config, events, folder, [result.artifact]))
    events.emit(_job_result(summary))
    return 0


def _evaluation(config, events: StdoutEvents, folder: Path, models: list[Path]) -> dict:
    """Evaluate after training; a failure is reported, it does not fail the finished training."""
    from fakefinder.tasks import task_for_models

    try:
        task, _ = task_for_models(models)
        outcome = task.evaluate(config, models, events=events)
    except Exception as exc:  # noqa: BLE001 - training succeeded; say why there is no report
        events(_warning(f"evaluation after training failed: {exc}"))
        return {"report": None, "evaluation_error": str(exc)}
    return {"report": _report(outcome), "evaluation": outcome.to_dict()}


def _warning(message: str) -> dict:
    return {"type": "warning", "stage": "job", "message": message, "data": {}, "time": time.time()}


def _report(outcome) -> str | None:
    return str(outcome.report_file) if outcome.report_file is not None else None


def _summary(outcome: Any) -> Any:
    """What an evaluation returned, as JSON (figures only, not tables)."""
    if isinstance(outcome, dict):
        return {
            str(k): _summary(v)
            for k, v in outcome.items()
            if not hasattr(v, "to_dict") or isinstance(v, dict)
        }
    if isinstance(outcome, (list, tuple)):
        return [_summary(v) for v in outcome[:50]]
    if isinstance(outcome, float) and math.isnan(outcome):
        return None
    if isinstance(outcome, (str, int, float, bool)) or outcome is None:
        return outcome
    if hasattr(outcome, "item"):
        return outcome.item()
    if hasattr(outcome, "__dict__"):
        return {k: _summary(v) for k, v in vars(outcome).items() if not k.startswith("_")}
    return str(outcome)


def _prepare(config, spec: dict, events: StdoutEvents) -> int:
    shards = int(spec.get("shards") or 1)
    if shards > 1:
        from fakefinder.platform.ray_prepare import prepare_on_ray

        result = prepare_on_ray(config, shards, events=events)
    else:
        from fakefinder import api

        result = api.prepare(config, events=events)
    events.emit(_job_result({"dataset": str(config.prepare.output_dir), "summary": _summary(result)}))
    return 0


def _evaluate(config, events: StdoutEvents, folder: Path) -> int:
    from fakefinder import api

    outcome = api.evaluate(config, events=events)
    events.emit(_job_result({"report": _report(outcome), "evaluation": outcome.to_dict()}))
    return 0


def _predict(config, events: StdoutEvents, folder: Path) -> int:
    from fakefinder import api

    result = api.predict(config, events=events)
    table = result.table
    rows = []
    for record in table.to_dict(orient="records"):
        rows.append(
            {
                k: (
                    None
                    if isinstance(v, float) and math.isnan(v)
                    else _plain(v)
                    if not isinstance(v, (str, int, float, bool))
                    else v
                )
                for k, v in record.items()
            }
        )
    summary: dict[str, Any] = {"predictions": rows, "output": str(config.predict.output)}
    if config.predict.heatmaps:
        summary["heatmaps"] = _drawn_heatmaps(result.details_path, Path(config.predict.output).parent, folder)
        summary["heatmap_check"] = _heatmap_check(config)
    events.emit(_job_result(summary))
    return 0


def _drawn_heatmaps(details: Path | None, beside: Path, folder: Path) -> list[dict]:
    """The heatmaps a predict run drew, from its details file (its `heatmap` column: a path relative
    to the submission's folder `beside`): each with its overlay as paths inside the job's folder, the
    crop's file, frame, score or label, the facial regions the map falls on, and the model's
    explanation of that crop where it writes one."""
    if details is None or not Path(details).is_file():
        return []
    if Path(details).suffix.lower() == ".json":
        faces = json.loads(Path(details).read_text()).get("faces") or []
    else:
        import pandas as pd

        faces = pd.read_csv(details, keep_default_na=False).to_dict(orient="records")
    root = Path(os.path.realpath(folder))
    drawn = []
    for face in faces:
        name = face.get("heatmap")
        if not isinstance(name, str) or not name.endswith(".png"):
            continue
        heatmap = Path(os.path.realpath(beside / name))
        overlay = heatmap.with_name(heatmap.name[: -len(".png")] + "_overlay.jpg")
        if not (heatmap.is_file() and overlay.is_file() and heatmap.is_relative_to(root)):
            continue
        frame = face.get("frame_index")  # a video's frame: its map is named <id>_f<frame>
        video = isinstance(frame, (int, float)) and heatmap.stem.endswith(f"_f{int(frame)}")
        drawn.append(
            {
                "id": face.get("id"),
                "frame_index": int(frame) if video else None,
                "score": face.get("score"),
                "label": face.get("label"),
                "heatmap": heatmap.relative_to(root).as_posix(),
                "overlay": overlay.relative_to(root).as_posix(),
                "regions": face.get("regions") or "",
                "regions_from": face.get("regions_from") or "",
                "explanation": face.get("explanation") or "",  # a model that explains its answer
            }
        )
    return _without_nan(drawn)


def _heatmap_check(config) -> dict:
    """Whether the models' heatmaps are experimental: not checked on validation, or checked and not
    better than a face prior there (an ensemble: if any member's are)."""
    from fakefinder.tasks import get_task

    kind = get_task(config.task)
    records = [kind.heatmap_check(Path(model)) for model in config.predict.models]
    checked = bool(records) and all(isinstance(r, dict) for r in records)
    beats = checked and all(r.get("beats_prior") is True for r in records)
    methods = sorted({str(r["method"]) for r in records if isinstance(r, dict) and r.get("method")})
    return {"checked": checked, "experimental": not beats, "method": ", ".join(methods) or None}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.reconfigure(line_buffering=True)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("fakefinder").setLevel(logging.WARNING)  # its events come through the sink
    events = StdoutEvents() if int(os.environ.get("RANK", "0")) == 0 else StdoutEvents(open(os.devnull, "w"))
    try:
        spec = json.loads(Path(argv[0]).read_text())
        return run(spec, events)
    except KeyboardInterrupt:
        events.emit(
            {
                "type": "error",
                "stage": "job",
                "message": "stopped at once (second stop request)",
                "data": {},
                "time": time.time(),
            }
        )
        return STOPPED
    except Exception as exc:  # noqa: BLE001 - the job fails with the reason; the traceback goes to its log
        from fakefinder.core.errors import FakefinderError

        traceback.print_exc(file=sys.stdout)
        message = (
            str(exc)
            if isinstance(exc, (FakefinderError, FileNotFoundError))
            else f"{type(exc).__name__}: {exc}"
        )
        events.emit({"type": "error", "stage": "job", "message": message, "data": {}, "time": time.time()})
        return 1


if __name__ == "__main__":
    sys.exit(main())
