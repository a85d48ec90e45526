"""The mlflow tracker from the CLI's side (the platform's is in test_platform_api): a real local MLflow
store, read back with MLflow's own client; a resumed run continues its MLflow run."""

from __future__ import annotations

import json

from mlflow import MlflowClient

import fakefinder
from conftest import make_crops, train_config
from fakefinder.engine.tracking import flat_params, metric_step, metric_values


def test_metric_events_become_plottable_values_at_their_step():
    data = {"epoch": 2, "loss": 0.5, "ok": True, "nan": float("nan"), "name": "x", "step": 7}
    assert metric_values(data) == {"loss": 0.5}
    assert metric_step(data) == 7 and metric_step({"epoch": 3}) == 3 and metric_step({}, None) is None
    assert flat_params({"train": {"lr": 0.1, "trackers": ["mlflow"], "none": None}}) == {
        "train.lr": "0.1",
        "train.trackers": '["mlflow"]',
        "train.none": "null",
    }


def test_a_cli_run_logs_to_mlflow_and_its_resume_continues_the_run(tmp_path):
    manifest = make_crops(tmp_path / "crops", groups=8, size=32)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    output = tmp_path / "run"
    settings = {"trackers": ["mlflow"], "tracker_uri": uri, "tracker_project": "detectors"}
    first = fakefinder.train(train_config(manifest, output, epochs=1, **settings))
    assert first.stopped == "completed"
    note = json.loads((output / "mlflow_run.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(note["run_id"])
    assert note["uri"] == uri and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "detectors"
    assert run.data.tags["fakefinder.kind"] == "deepfake_detector"
    assert run.data.params["train.epochs"] == "1" and run.data.params["model.name"] == "test_efficientnet"
    (first_val,) = client.get_metric_history(run.info.run_id, "val/val_loss")
    assert first_val.step == first.steps  # logged at the optimizer step the epoch ended on
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} >= {"model/model.json"}

    more = fakefinder.train(train_config(manifest, output, epochs=2, **settings), resume=True)
    assert more.stopped == "completed"
    assert json.loads((output / "mlflow_run.json").read_text())["run_id"] == note["run_id"]  # the same run
    history = client.get_metric_history(note["run_id"], "val/val_loss")
    assert [m.step for m in history] == [first.steps, more.steps] and history[0].value == first_val.value
    assert len(client.search_runs([run.info.experiment_id])) == 1
