"""Sweeps: a search over a kind's config keys. Optuna picks each trial's settings and is told how each
ended (its study lives in `<data-dir>/optuna.sqlite`, beside the platform's database); each trial is an
ordinary train job of the sweep's owner (queued, run on local or Ray workers, stoppable, with its own
folder and artifact, counted toward the per-user limit). Pruning reads the metric rows the trials
report and stops a pruned trial the way a user's stop does. At the end the best trial's model, and
its one evaluation, become the sweep's."""

from __future__ import annotations

import copy
import csv
import io
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fakefinder.config import set_key
from fakefinder.core.errors import FakefinderError
from fakefinder.core.files import atomic_write_json, atomic_write_text
from fakefinder.platform import jobs
from fakefinder.platform.paths import Conflict, RequestError, job_output
from fakefinder.platform.store import ACTIVE, LimitReached
from fakefinder.tasks import get_task

log = logging.getLogger("fakefinder.platform")
Scalar = str | int | float | bool | None
STUDY_FILE = "optuna.sqlite"


class Param(BaseModel):
    """One key's range: `low`..`high` (whole numbers when both are; `log`: sampled on a log scale;
    `step`: a grid), or a list of `choices`."""

    model_config = ConfigDict(extra="forbid")
    low: int | float | None = Field(default=None, description="The smallest value (with high).")
    high: int | float | None = Field(default=None, description="The largest value (with low).")
    log: bool = Field(default=False, description="Sample on a log scale (low above 0).")
    step: int | float | None = Field(default=None, gt=0, description="Only values low + k * step.")
    choices: list[Scalar] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The values to choose from (instead of a range).",
    )

    @model_validator(mode="after")
    def _one_kind(self):
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("give either choices or a range (low, high), not both")
            if any(isinstance(c, str) and len(c) > 4096 for c in self.choices):
                raise ValueError("choices: a text of at most 4096 characters each")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (a range) or choices")
        if not all(math.isfinite(v) for v in (self.low, self.high)) or self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high}), both finite")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError("log: needs low above 0 and no step")
        return self

    @property
    def whole(self) -> bool:
        numbers = (self.low, self.high, *(() if self.step is None else (self.step,)))
        return all(isinstance(v, int) and not isinstance(v, bool) for v in numbers)

    def distribution(self):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        if self.whole:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def edges(self) -> list[Scalar]:
        """The values that bound what a trial may get (checked against the config at the start)."""
        return list(self.choices) if self.choices is not None else [self.low, self.high]

    def holds(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and self.low <= value <= self.high and (not self.whole or float(value).is_integer())


class SweepSpec(BaseModel):
    """A search: the config keys to vary and how (`space`), what to optimise (`metric`, `direction`),
    how many trials and how many at once, which settings to try first, when to prune."""

    model_config = ConfigDict(extra="forbid")
    metric: str = Field(
        min_length=1,
        max_length=200,
        description="The figure a trial is judged by: a key of the metric rows its runs report "
        "(e.g. val_auc, val_loss, loss).",
    )
    direction: Literal["minimize", "maximize"] = Field(description="Whether less or more of it is better.")
    stage: Literal["train", "val"] | None = Field(
        default=None, description="Read the metric from rows of this stage only (default: any)."
    )
    reduce: Literal["last", "best"] = Field(
        default="last", description="A finished trial's value: its last reported value, or its best."
    )
    space: dict[str, Param] = Field(
        min_length=1,
        max_length=50,
        description="Dotted config keys (train.lr, model.name, ...) and the range or choices of each.",
    )
    trials: int = Field(default=10, ge=1, le=1000, description="Trials in all.")
    concurrency: int = Field(default=1, ge=1, le=64, description="Trials queued or running at once.")
    enqueue: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=1000,
        description="Settings the first trials take, in order (e.g. today's best), each a mapping of "
        "space keys to values; keys left out are sampled.",
    )
    pruner: Literal["median", "none"] = Field(
        default="median",
        description="median: stop a trial whose value at a step is worse than the median of earlier "
        "trials at that step; none: every trial runs to its end.",
    )
    startup_trials: int = Field(
        default=2, ge=0, le=1000, description="Finished trials before the pruner stops any."
    )
    warmup_steps: int = Field(
        default=0,
        ge=0,
        description="Steps (as the metric rows count them) a trial runs before it may be pruned.",
    )
    seed: int | None = Field(
        default=None, description="The sampler's seed (the same seed, the same settings)."
    )

    @model_validator(mode="after")
    def _known_keys(self):
        for key in self.space:
            if not key or len(key) > 200 or key.startswith(".") or key.endswith("."):
                raise ValueError(f"space: {key!r} is not a dotted config key")
        for i, entry in enumerate(self.enqueue):
            for key, value in entry.items():
                if key not in self.space:
                    raise ValueError(f"enqueue.{i}.{key}: not a key of space")
                if not self.space[key].holds(value):
                    raise ValueError(f"enqueue.{i}.{key}: {value!r} lies outside its range or choices")
        return self


def parse_spec(raw: Any, field: str = "sweep") -> SweepSpec:
    """A sweep's settings checked; errors name the key (`sweep.space.train.lr.low`)."""
    if not isinstance(raw, dict):
        raise RequestError(f"{field}: a mapping of sweep settings (metric, direction, space, ...)", field)
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        lines, first = [], None
        for error in exc.errors():
            message = "not a sweep setting" if error["type"] == "extra_forbidden" else error["msg"]
            message = message.removeprefix("Value error, ")
            loc = [str(p) for p in error["loc"]]
            if not loc and ": " in message:  # a check of the whole sweep names its key first
                key, message = message.split(": ", 1)
                loc = [key]
            where = ".".join([field, *loc])
            first = first or where
            lines.append(f"{where}: {message}")
        raise RequestError("; ".join(lines), first) from None


def trial_config(tree: dict, params: dict, folder: Path, settings) -> Any:
    """A trial's config: the sweep's with its settings, every output in the trial's folder, its paths
    confined as a request's are."""
    tree = copy.deepcopy(tree)
    task = get_task(tree.get("task"))
    for key, value in params.items():
        try:
            set_key(tree, key, value)
        except FakefinderError as exc:
            raise RequestError(f"sweep.space.{key}: {exc}", f"sweep.space.{key}") from None
    try:
        config = jobs.validate(tree)
    except RequestError as exc:
        key = next((k for k in params if exc.field == k or str(exc.field).startswith(k + ".")), None)
        raise RequestError(str(exc), f"sweep.space.{key}" if key else exc.field) from None
    return jobs.job_config(config, task, settings, folder)


def check_space(spec: SweepSpec, tree: dict, settings, folder: Path) -> None:
    """Each key of the space is a setting of the sweep's kind, and its bounds (or each choice) make a
    valid config; refused naming `sweep.space.<key>`."""
    for key, param in spec.space.items():
        for value in param.edges():
            try:
                trial_config(tree, {key: value}, folder, settings)
            except RequestError as exc:
                message = str(exc)
                raise RequestError(
                    f"sweep.space.{key}: {value!r} does not make a valid config ({message})",
                    f"sweep.space.{key}",
                ) from None


def study_storage(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / STUDY_FILE}"


class Sweeps:
    """The sweeps of one job manager, moved on by its loop: trials told, pruned, resumed and started,
    the best one's model taken when all have ended."""

    def __init__(self, manager) -> None:  # the JobManager whose loop moves the sweeps on
        self.manager, self.store, self.settings = manager, manager.store, manager.settings
        self._storage = None
        self._studies: dict[str, Any] = {}

    # ------------------------------------------------------------------ Optuna
    def storage(self):
        if self._storage is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep's log says what happened
            self._storage = optuna.storages.RDBStorage(study_storage(self.settings.data_dir))
        return self._storage

    def study(self, sweep: dict, spec: SweepSpec):
        study = self._studies.get(sweep["id"])
        if study is None:
            import optuna

            pruner = (
                optuna.pruners.MedianPruner(
                    n_startup_trials=spec.startup_trials, n_warmup_steps=spec.warmup_steps
                )
                if spec.pruner == "median"
                else optuna.pruners.NopPruner()
            )
            study = optuna.create_study(
                storage=self.storage(),
                study_name=sweep["id"],
                direction=spec.direction,
                sampler=optuna.samplers.TPESampler(seed=spec.seed),
                pruner=pruner,
                load_if_exists=True,
            )
            if not study.trials:
                for params in spec.enqueue:
                    study.enqueue_trial(params)
            self._studies[sweep["id"]] = study
        return study

    def forget(self, sweep_id: str) -> None:
        """A deleted sweep's study goes with it."""
        import optuna

        self._studies.pop(sweep_id, None)
        try:
            optuna.delete_study(study_name=sweep_id, storage=self.storage())
        except KeyError:
            pass

    def _trial_id(self, study, number: int) -> int:
        storage = self.storage()
        return storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), number
        )

    # ------------------------------------------------------------------ the loop
    def tick(self) -> None:
        for sweep in self.store.in_state(*ACTIVE):
            if sweep["type"] != "sweep":
                continue
            try:
                self.advance(sweep)
            except Exception as exc:
                log.exception("sweep %s", sweep["id"])
                self._end(self.store.get(sweep["id"]) or sweep, "failed", f"the sweep failed: {exc}")

    def advance(self, sweep: dict) -> None:
        spec = SweepSpec.model_validate(sweep["spec"]["sweep"])
        if sweep["state"] == "queued":
            if not self.store.transition(
                sweep["id"],
                ("queued",),
                state="running",
                started_at=time.time(),
                attempts=sweep["attempts"] + 1,
            ):
                return
            sweep = self.store.get(sweep["id"])
            self.store.add_log(sweep["id"], f"sweep of {spec.trials} trial(s), {spec.concurrency} at once")
        study = self.study(sweep, spec)
        stopping = bool(sweep["stop_requested"])
        rows = self.store.trials(sweep["id"])
        for row in rows:
            if not row["told"]:
                self._follow(sweep, spec, study, row, stopping)
        rows = self.store.trials(sweep["id"])
        open_rows = [r for r in rows if not r["told"]]
        if stopping:
            if not any(self._active(r) for r in open_rows) and not self._evaluating(sweep):
                self._end(sweep, "cancelled", None)
            return
        waiting = None
        while len(open_rows) < spec.concurrency and len(rows) < spec.trials:
            try:
                self.store.check_limit(sweep["owner"], self.settings.max_jobs_per_user)
            except LimitReached as exc:
                waiting = f"waiting for the per-user limit: {exc}"
                break
            row = self._start_trial(sweep, spec, study)
            rows.append(row)
            if not row["told"]:
                open_rows.append(row)
        self._show(sweep, spec, rows, waiting)
        if len(rows) >= spec.trials and not open_rows:
            self._finish(sweep, spec, rows)

    def _active(self, row: dict) -> bool:
        job = self.store.get(row["job_id"]) if row["job_id"] else None
        return job is not None and job["state"] in ACTIVE

    def _evaluating(self, sweep: dict) -> bool:
        evaluation = (sweep["progress"] or {}).get("evaluation")
        job = self.store.get(evaluation) if evaluation else None
        return job is not None and job["state"] in ACTIVE

    def _start_trial(self, sweep: dict, spec: SweepSpec, study) -> dict:
        from optuna.trial import TrialState

        trial = study.ask({key: param.distribution() for key, param in spec.space.items()})
        params = dict(trial.params)
        job_id = self.store.new_id()
        folder = self.settings.jobs_dir / job_id
        try:
            config = trial_config(sweep["spec"]["config"], params, folder, self.settings)
            job = self.store.create(
                "train",
                config.task,
                f"{sweep['name']}-trial-{trial.number}",
                # trials tell no webhook (the sweep does, when it ends) and read no test data
                {
                    "config": config.model_dump(mode="json"),
                    "evaluate": False,
                    "trial": trial.number,
                    "notify": [],
                },
                self.settings.jobs_dir,
                job_id,
                owner=sweep["owner"],
                limit=self.settings.max_jobs_per_user,
                parent=sweep["id"],
            )
        except RequestError as exc:  # these settings make no valid run (or the limit came first)
            study.tell(trial.number, state=TrialState.FAIL)
            self.store.add_log(sweep["id"], f"trial {trial.number} ({_shown(params)}): not started: {exc}")
            self.store.add_trial(
                sweep["id"], trial.number, None, params, "failed", told=1, note=str(exc)[:2000]
            )
            return self.store.trials(sweep["id"])[-1]
        self.store.add_trial(sweep["id"], trial.number, job["id"], params, "running")
        self.store.add_log(sweep["id"], f"trial {trial.number}: {_shown(params)} as job {job['id']}")
        self.manager.wake()
        return next(r for r in self.store.trials(sweep["id"]) if r["number"] == trial.number)

    def _follow(self, sweep: dict, spec: SweepSpec, study, row: dict, stopping: bool) -> None:
        """A trial's new metric rows reported (and pruned when Optuna says so); its end told."""
        from optuna.trial import TrialState

        number = row["number"]
        job = self.store.get(row["job_id"]) if row["job_id"] else None
        if job is None:
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            self.store.update_trial(sweep["id"], number, state="failed", told=1, note="its job was deleted")
            return
        self._report(sweep, spec, study, row, job, stopping)
        row = next(r for r in self.store.trials(sweep["id"]) if r["number"] == number)
        if job["state"] in ACTIVE:
            return
        if row["state"] == "pruned":
            study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
            self.store.update_trial(sweep["id"], number, told=1)
            return
        if stopping and job["state"] in ("cancelled", "interrupted"):
            self.store.update_trial(sweep["id"], number, state="stopped")  # it goes on with the sweep
            return
        if job["state"] == "interrupted" or row["state"] == "stopped":
            try:
                self.manager.resume(job["id"])  # the sweep goes on: so does its trial
                self.store.update_trial(sweep["id"], number, state="running")
                self.store.add_log(sweep["id"], f"trial {number}: resumed")
                return
            except Conflict:
                pass
        if job["state"] == "succeeded":
            value = row[spec.reduce]
            if value is None:
                note = f"it reported no {spec.metric}" + (f" in {spec.stage} rows" if spec.stage else "")
                study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
                self.store.update_trial(sweep["id"], number, state="failed", told=1, note=note)
                self.store.add_log(sweep["id"], f"trial {number}: {note}")
                return
            study.tell(number, value, skip_if_finished=True)
            self.store.update_trial(sweep["id"], number, state="complete", value=value, told=1)
            self.store.add_log(sweep["id"], f"trial {number}: {spec.metric} {value:.6g}")
            return
        note = job["error"] or f"the trial's job was {job['state']}"
        study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        self.store.update_trial(sweep["id"], number, state=job["state"], told=1, note=note[:2000])
        self.store.add_log(sweep["id"], f"trial {number}: {job['state']}: {note[:300]}")

    def _report(self, sweep: dict, spec: SweepSpec, study, row: dict, job: dict, stopping: bool) -> None:
        rows = self.store.metrics(job["id"], after=row["seq"])
        if not rows:
            return
        fields: dict[str, Any] = {"seq": rows[-1]["seq"]}
        reported = []
        for data in rows:
            value = data.get(spec.metric)
            if spec.stage and data.get("stage") != spec.stage:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            step = _step(data)
            best = fields.get("best", row["best"])
            better = max if spec.direction == "maximize" else min
            fields.update(
                last=float(value), best=float(value) if best is None else better(best, float(value))
            )
            if step is not None and (row["step"] is None or step > row["step"]) and step not in reported:
                fields["step"] = step
                reported.append((step, float(value)))
        trial_id = self._trial_id(study, row["number"]) if reported else None
        for step, value in reported:
            self.storage().set_trial_intermediate_value(trial_id, step, value)
        if reported and job["state"] in ACTIVE and not stopping and row["state"] == "running":
            frozen = self.storage().get_trial(trial_id)
            if study.pruner.prune(study, frozen):
                step, value = reported[-1]
                fields["state"] = "pruned"
                fields["note"] = f"pruned at step {step} ({spec.metric} {value:.6g})"
                self.store.add_log(sweep["id"], f"trial {row['number']}: {fields['note']}")
                self.manager.stop(job["id"])
        self.store.update_trial(sweep["id"], row["number"], **fields)

    # ------------------------------------------------------------------ the end
    def stop_trials(self, sweep: dict) -> None:
        """A stop of the sweep: its queued trials are cancelled and its running ones saved and stopped."""
        for row in self.store.trials(sweep["id"]):
            job = self.store.get(row["job_id"]) if row["job_id"] and not row["told"] else None
            if job is not None and job["state"] in ACTIVE and not job["stop_requested"]:
                self.manager.stop(job["id"])
        evaluation = (sweep["progress"] or {}).get("evaluation")
        job = self.store.get(evaluation) if evaluation else None
        if job is not None and job["state"] in ACTIVE:
            self.manager.stop(job["id"])

    def _show(self, sweep: dict, spec: SweepSpec, rows: list[dict], waiting: str | None) -> None:
        told = sum(r["told"] for r in rows)
        running = sum(not r["told"] for r in rows)
        progress = {
            **{k: v for k, v in (sweep["progress"] or {}).items() if k == "evaluation"},
            "stage": waiting or f"trials: {told} of {spec.trials} ended, {running} under way",
            "step": told,
            "total": spec.trials,
            "fraction": told / spec.trials,
        }
        best = _best(spec, rows)
        metrics = {
            "trials_complete": sum(r["state"] == "complete" for r in rows),
            "trials_pruned": sum(r["state"] == "pruned" for r in rows),
            "trials_failed": sum(r["state"] == "failed" for r in rows),
        }
        if best is not None:
            metrics.update({spec.metric: best["value"], "best_trial": best["number"]})
        if progress != sweep["progress"] or metrics != sweep["metrics"]:
            self.store.update(sweep["id"], progress=progress, metrics=metrics)

    def _finish(self, sweep: dict, spec: SweepSpec, rows: list[dict]) -> None:
        best = _best(spec, rows)
        if best is None:
            self._end(sweep, "failed", f"no trial of {len(rows)} finished with a {spec.metric}")
            return
        trial = self.store.get(best["job_id"])
        artifact = _artifact(trial)
        if sweep["spec"].get("evaluate", True) and artifact is not None:
            evaluation = (sweep["progress"] or {}).get("evaluation")
            if evaluation is None:
                self._evaluate(sweep, trial, artifact, best)
                return
            job = self.store.get(evaluation)
            if job is not None and job["state"] in ACTIVE:
                return
        self._end(sweep, "succeeded", None)

    def _evaluate(self, sweep: dict, trial: dict, artifact: Path, best: dict) -> None:
        """The best trial's model, evaluated once (the only look at the test data the sweep takes)."""
        job_id = self.store.new_id()
        folder = self.settings.jobs_dir / job_id
        tree = copy.deepcopy(trial["spec"]["config"])
        tree["evaluate"] = {**tree.get("evaluate", {}), "models": [str(artifact)]}
        task = get_task(tree["task"])
        config = jobs.job_config(tree, task, self.settings, folder)
        job = self.store.create(
            "evaluate",
            task.name,
            f"{sweep['name']}-best",
            {"config": config.model_dump(mode="json"), "notify": []},
            self.settings.jobs_dir,
            job_id,
            owner=sweep["owner"],
            parent=sweep["id"],
        )
        self.store.update(sweep["id"], progress={**sweep["progress"], "evaluation": job["id"]})
        self.store.add_log(
            sweep["id"], f"best: trial {best['number']}; its model evaluated as job {job['id']}"
        )
        self.manager.wake()

    def _end(self, sweep: dict, state: str, error: str | None) -> None:
        """The sweep's result: the best trial's model copied in as its artifact, its evaluation's
        metrics.json and report beside it, sweep.json and trials.csv with every trial."""
        try:
            spec = SweepSpec.model_validate(sweep["spec"]["sweep"])
        except ValidationError:
            spec = None
        rows = self.store.trials(sweep["id"])
        folder = Path(sweep["folder"])
        folder.mkdir(parents=True, exist_ok=True)
        best = _best(spec, rows) if spec is not None else None
        result: dict[str, Any] = {"best": None, "trials": len(rows)}
        if best is not None:
            trial = self.store.get(best["job_id"])
            result["best"] = {k: best[k] for k in ("number", "job_id", "value", "params")}
            artifact = _artifact(trial)
            if artifact is not None:
                result["artifact"] = str(_copy(artifact, folder / "model"))
            evaluation = (sweep["progress"] or {}).get("evaluation")
            job = self.store.get(evaluation) if evaluation else None
            if job is not None and job["state"] == "succeeded":
                copied = _copy(Path(job["spec"]["config"]["evaluate"]["output_dir"]), folder / "evaluate")
                for name, key in (("metrics.json", "metrics_file"), ("report.html", "report")):
                    if (copied / name).is_file():
                        result[key] = str(copied / name)
            elif job is not None:
                result["evaluation_error"] = job["error"] or f"the evaluation was {job['state']}"
        atomic_write_json(folder / "sweep.json", {"spec": sweep["spec"]["sweep"], **result, "rows": rows})
        atomic_write_text(folder / "trials.csv", _trials_csv(rows))
        fields: dict[str, Any] = {"finished_at": time.time(), "result": result}
        if error:
            fields["error"] = error
        self.store.transition(sweep["id"], ACTIVE, state=state, **fields)
        self.store.add_log(sweep["id"], f"sweep {state}" + (f": {error}" if error else ""))
        self._studies.pop(sweep["id"], None)


def _step(data: dict) -> int | None:
    """Where a metric row is reported to the pruner: at its epoch when it names a whole one (trials
    with other batch sizes stay comparable), else at its step."""
    epoch, step = data.get("epoch"), data.get("step")
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) and float(epoch).is_integer():
        return int(epoch)
    return int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else None


def _best(spec: SweepSpec | None, rows: list[dict]) -> dict | None:
    done = [r for r in rows if r["state"] == "complete" and r["value"] is not None]
    if not done or spec is None:
        return None
    return (max if spec.direction == "maximize" else min)(done, key=lambda r: r["value"])


def _artifact(job: dict | None) -> Path | None:
    path = job_output(job, "artifact") if job is not None else None
    return path if path is not None and path.is_dir() else None


def _copy(source: Path, target: Path) -> Path:
    """A copy of a folder (hard links where the file system allows: a model is not stored twice)."""

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, copy_function=link, symlinks=False)
    return target


def _shown(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _trials_csv(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "job_id", "state", "value", *keys, "note"])
    for r in rows:
        writer.writerow(
            [r["number"], r["job_id"], r["state"], r["value"], *(r["params"].get(k) for k in keys), r["note"]]
        )
    return out.getvalue()


def public_trials(store, sweep: dict) -> list[dict]:
    """A sweep's trials as the API shows them: settings, state, value, the job that ran each."""
    shown = []
    for row in store.trials(sweep["id"]):
        job = store.get(row["job_id"]) if row["job_id"] else None
        shown.append(
            {
                "number": row["number"],
                "task_id": row["job_id"],
                "name": job["name"] if job else None,
                "job_state": job["state"] if job else None,
                "state": row["state"],
                "params": row["params"],
                "value": row["value"],
                "last": row["last"],
                "step": row["step"],
                "note": row["note"],
            }
        )
    return shown
