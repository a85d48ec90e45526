"""Sweeps on the platform and from the CLI, on the test-only toy kind (a line fitted by gradient descent:
its loss curve is fixed by the learning rate): trials are ordinary jobs counted toward the per-user limit,
a trial whose curve lags is pruned and stops early, the best trial's model and evaluation become the
sweep's, and bad sweeps are refused naming the key."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import cli, toy_zip, wait_for_job

EPOCHS = 6
SWEEP = {
    "metric": "loss",
    "direction": "minimize",
    "stage": "train",
    "space": {"toy.train.lr": {"low": 0.001, "high": 0.2, "log": True}},
    "trials": 6,
    "concurrency": 2,
    # the first four trials' rates, in order: two fast ones, then one whose loss lags far behind (pruned)
    "enqueue": [
        {"toy.train.lr": 0.2},
        {"toy.train.lr": 0.1},
        {"toy.train.lr": 0.001},
        {"toy.train.lr": 0.05},
    ],
    "startup_trials": 2,
    "warmup_steps": 1,
    "seed": 3,
}


@pytest.fixture(scope="module")
def platform(toy):
    from fastapi.testclient import TestClient

    from fakefinder.platform.app import create_app
    from fakefinder.platform.settings import ServeSettings

    settings = ServeSettings(
        data_dir=toy["root"] / "sweeps",
        devices=["cpu"],
        jobs_per_device=2,
        poll_interval_s=0.2,
        stop_timeout_s=60,
        max_jobs_per_user=2,
    )
    settings.make_dirs()
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        uploaded = client.post(
            "/api/datasets",
            data={"name": "numbers"},
            files={"file": ("numbers.zip", toy_zip(toy), "application/zip")},
        )
        assert uploaded.status_code == 201, uploaded.text
        yield client, settings


def _start(client, **sweep):
    return client.post(
        "/api/sweeps",
        json={
            "model_type": "toy_regressor",
            "dataset_path": "numbers",
            "epochs": EPOCHS,
            "step_seconds": 0.3,
            "sweep": {**SWEEP, **sweep},
        },
    )


def test_a_sweep_prunes_a_lagging_trial_and_keeps_the_best_model(platform):
    client, settings = platform
    started = _start(client)
    assert started.status_code == 200, started.text
    sweep_id = started.json()["task_id"]

    # two trials at once: a third job of the same user waits for one (the per-user limit counts trials)
    wait_for_job(client, sweep_id, states={"running"}, check=lambda j: j["progress"].get("step") is not None)
    shown = client.get(f"/api/sweeps/{sweep_id}").json()
    assert [t["params"]["toy.train.lr"] for t in shown["trials"]] == [0.2, 0.1]
    refused = client.post(
        "/api/training/start", json={"model_type": "toy_regressor", "dataset_path": "numbers", "epochs": 1}
    )
    assert refused.status_code == 429 and refused.json()["field"] == "owner", refused.text

    ended = wait_for_job(client, sweep_id, timeout=240)
    shown = client.get(f"/api/sweeps/{sweep_id}").json()
    assert ended["state"] == "succeeded", (ended["error"], shown["trials"])
    trials = shown["trials"]
    assert len(trials) == 6 and [t["number"] for t in trials] == list(range(6))
    assert all(t["task_id"] and t["name"].endswith(f"trial-{t['number']}") for t in trials)
    assert [t["params"]["toy.train.lr"] for t in trials[:4]] == [0.2, 0.1, 0.001, 0.05]
    assert all(0.001 <= t["params"]["toy.train.lr"] <= 0.2 for t in trials)

    # the lagging trial (lr 0.001: its loss after one epoch is 2.4 where the others' is below 0.1) was
    # pruned and stopped through the normal stop path, well before its last epoch, without a model
    lagging = trials[2]
    assert lagging["state"] == "pruned" and lagging["job_state"] == "cancelled", lagging
    history = client.get(f"/api/training/{lagging['task_id']}/metrics").json()["history"]
    assert history and max(row["epoch"] for row in history) < EPOCHS
    assert not client.get(f"/api/training/{lagging['task_id']}").json()["files"]["artifact"]

    # each complete trial's value is its last reported loss; the best is the smallest of them
    complete = [t for t in trials if t["state"] == "complete"]
    assert {0, 1} <= {t["number"] for t in complete}
    for trial in complete:
        rows = client.get(f"/api/training/{trial['task_id']}/metrics").json()["history"]
        assert trial["value"] == pytest.approx(rows[-1]["loss"]) and rows[-1]["epoch"] == EPOCHS
    best = min(complete, key=lambda t: t["value"])
    result = ended["result"]
    assert result["best"]["number"] == best["number"] and result["best"]["job_id"] == best["task_id"]
    assert ended["metrics"]["loss"] == pytest.approx(best["value"])
    assert ended["metrics"]["trials_pruned"] >= 1 and ended["metrics"]["trials_complete"] == len(complete)

    _took_the_best_trial(client, sweep_id, ended, best)
    logs = "\n".join(line["text"] for line in client.get(f"/api/training/{sweep_id}/logs").json()["lines"])
    assert "trial 2: pruned at step" in logs and "sweep succeeded" in logs

    # deleting the sweep takes its trials, their folders and its study with it
    assert client.delete(f"/api/training/{sweep_id}").status_code == 200
    left = [j for j in client.get("/api/training").json()["jobs"] if j["parent"] == sweep_id]
    assert left == [] and not Path(settings.jobs_dir / best["task_id"]).exists()
    assert sweep_id not in optuna.get_all_study_names(f"sqlite:///{settings.data_dir / 'optuna.sqlite'}")


def _took_the_best_trial(client, sweep_id: str, ended: dict, best: dict) -> None:
    """The sweep's artifact is the best trial's model, file for file, and its report and metrics.json
    are those of that model's one evaluation (the only job of the sweep that read the test split)."""
    best_job = client.get(f"/api/training/{best['task_id']}").json()
    assert best_job["files"]["artifact"] and ended["files"]["artifact"] and ended["files"]["report"]
    model = Path(best_job["result"]["artifact"])
    with zipfile.ZipFile(io.BytesIO(client.get(f"/api/training/{sweep_id}/artifact").content)) as zipped:
        assert sorted(zipped.namelist()) == sorted(
            p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()
        )
        assert zipped.read("model.json") == (model / "model.json").read_bytes()
    jobs = client.get("/api/training").json()["jobs"]
    children = [j for j in jobs if j["parent"] == sweep_id]
    evaluations = [j for j in children if j["type"] == "evaluate"]
    assert len(children) == 7 and len(evaluations) == 1 and evaluations[0]["state"] == "succeeded"
    metrics = json.loads(client.get(f"/api/training/{sweep_id}/files/evaluate/metrics.json").content)
    evaluated = json.loads(
        client.get(f"/api/training/{evaluations[0]['task_id']}/files/evaluate/metrics.json").content
    )
    assert metrics == evaluated and metrics["models"]["run"]["mse"] < 1e-3
    files = {f["path"] for f in client.get(f"/api/training/{sweep_id}/files").json()["files"]}
    assert {"sweep.json", "trials.csv", "model/model.json", "evaluate/report.html"} <= files


def test_a_stopped_sweep_stops_its_trials_and_resumes(platform):
    client, _ = platform
    started = _start(client, trials=2, enqueue=[{"toy.train.lr": 0.1}], pruner="none")
    assert started.status_code == 200, started.text
    sweep_id = started.json()["task_id"]
    wait_for_job(
        client,
        sweep_id,
        states={"running"},
        check=lambda j: any(t["step"] for t in client.get(f"/api/sweeps/{sweep_id}").json()["trials"]),
    )
    stopped = client.post(f"/api/training/{sweep_id}/stop")
    assert stopped.status_code == 200 and stopped.json()["stop_requested"]
    ended = wait_for_job(client, sweep_id)
    trials = client.get(f"/api/sweeps/{sweep_id}").json()["trials"]
    assert ended["state"] == "cancelled" and ended["resumable"]
    assert trials and all(t["state"] == "stopped" and t["job_state"] == "cancelled" for t in trials)

    resumed = client.post(f"/api/training/{sweep_id}/resume")
    assert resumed.status_code == 200, resumed.text
    ended = wait_for_job(client, sweep_id, timeout=180)
    trials = client.get(f"/api/sweeps/{sweep_id}").json()["trials"]
    assert ended["state"] == "succeeded", (ended["error"], trials)
    assert len(trials) == 2 and all(t["state"] == "complete" for t in trials)
    first = client.get(f"/api/training/{trials[0]['task_id']}").json()
    assert first["attempts"] == 2 and first["result"]["epochs"] == EPOCHS  # continued, not restarted


@pytest.mark.parametrize(
    ("sweep", "field", "words"),
    [
        (
            {"space": {"toy.train.nope": {"low": 1, "high": 2}}},
            "sweep.space.toy.train.nope",
            "not a config key",
        ),
        ({"space": {"toy.train.lr": {"low": 0.5, "high": 0.1}}}, "sweep.space.toy.train.lr", "below high"),
        (
            {"space": {"toy.train.lr": {"low": -1.0, "high": 0.1}}},
            "sweep.space.toy.train.lr",
            "greater than 0",
        ),
        ({"space": {"toy.train.lr": {"choices": []}}}, "sweep.space.toy.train.lr.choices", "at least 1"),
        ({"direction": "up"}, "sweep.direction", "minimize"),
        ({"trials": 0}, "sweep.trials", "greater than or equal to 1"),
        ({"enqueue": [{"toy.train.lr": 5.0}]}, "sweep.enqueue.0.toy.train.lr", "outside its range"),
        ({"enqueue": [{"toy.width": 5}]}, "sweep.enqueue.0.toy.width", "not a key of space"),
        ({"colour": "red"}, "sweep.colour", "not a sweep setting"),
    ],
)
def test_a_bad_sweep_is_refused_naming_the_key_with_nothing_queued(platform, sweep, field, words):
    client, _ = platform
    before = len(client.get("/api/training").json()["jobs"])
    refused = _start(client, **{"enqueue": [], **sweep})
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == field and words in refused.json()["detail"], refused.json()
    assert len(client.get("/api/training").json()["jobs"]) == before


def test_the_cli_runs_the_same_sweep_from_a_yaml_file(toy, tmp_path, monkeypatch):
    sweep = {**SWEEP, "trials": 2, "enqueue": [{"toy.train.lr": 0.2}], "pruner": "none"}
    config = {"task": "toy_regressor", "toy": {"data": "data", "train": {"epochs": 3}}, "sweep": sweep}
    (tmp_path / "data").symlink_to(toy["data"])
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # relative paths in the config are taken from here
    done = cli("sweep", "-c", "sweep.yaml", "-o", "out", "sweep.concurrency=2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "trial 0: toy.train.lr=0.2 as job" in done.stdout and "sweep succeeded" in done.stdout
    swept = json.loads(next((tmp_path / "out" / "jobs").glob("*/sweep.json")).read_text())
    assert [r["state"] for r in swept["rows"]] == ["complete", "complete"]
    assert swept["best"]["value"] == min(r["value"] for r in swept["rows"])
    assert (Path(swept["artifact"]) / "model.json").is_file() and Path(swept["metrics_file"]).is_file()
    assert (tmp_path / "out" / "optuna.sqlite").is_file()
    again = cli("sweep", "-c", "sweep.yaml", "-o", "out")  # a sweep's folder is never written over
    assert again.returncode == 2 and "--resume" in again.stdout + again.stderr, again.stderr
