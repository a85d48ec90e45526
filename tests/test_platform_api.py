"""The platform's REST API with real worker processes: the contract, the queue, stop and resume, a
restart, a killed worker, path confinement and the token; every kind through the same routes."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import TINY_JOB, start_server, stop_server, wait_for_job
from fakefinder.platform.app import create_app
from fakefinder.platform.samples import write_demo_datasets
from fakefinder.platform.settings import ServeSettings
from fakefinder.platform.store import JobStore
from fakefinder.tasks import get_task

LOCAL = "http://127.0.0.1:8000"  # a server without a token answers only this machine's own pages
TINY = {**TINY_JOB, "evaluate": False}
SLOTS = 2  # jobs the module's server runs at once
# the kinds whose page requests run as jobs here, in the order their tests come
KIND_TESTS = (
    "image_classifier",
    "dx_llava",
    "llm_lora",
    "object_detector",
    "text_to_image_lora",
    "llm_qlora",
)


PLATFORM_PAGE = Path(__file__).resolve().parents[1] / "docs" / "platform.md"
LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"


def page_requests(title: str = "on the demo data") -> dict[str, dict]:
    """The start requests (`curl ... /api/training/start ... -d '{...}'`) of the platform page's blocks
    with this title, by model type."""
    blocks = re.findall(rf'```bash title="{title}"\n(.*?)```', PLATFORM_PAGE.read_text(), flags=re.S)
    bodies = [
        b for block in blocks for b in re.findall(r"/api/training/start[^\n]*-d '(\{.*?\})'", block, re.S)
    ]
    requests = [json.loads(body) for body in bodies]
    return {r["model_type"]: r for r in requests}


def settings_for(root: Path, **extra) -> ServeSettings:
    return ServeSettings(data_dir=root, devices=["cpu"], poll_interval_s=0.2, stop_timeout_s=60, **extra)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("platform")
    write_demo_datasets(root / "datasets")
    return root


@pytest.fixture(scope="module")
def client(data_dir):
    """A live `fakefinder serve` on a loopback port: the page's requests go to it over HTTP, as curl
    sends them (only the port differs from the page's localhost:8000). Two jobs at once on its CPU."""
    server = start_server(
        data_dir, "--stop-timeout", "60", "--poll-interval", "0.2", "--jobs-per-device", str(SLOTS)
    )
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            yield http
    finally:
        stop_server(server)


wait = wait_for_job


def start(client, **changes) -> str:
    response = client.post("/api/training/start", json={**TINY, **changes})
    assert response.status_code == 200, response.text
    return response.json()["task_id"]


@pytest.fixture(scope="module")
def kind_jobs(client) -> dict[str, str]:
    """The page's request of each other kind, all queued at once when the first test needs one (they
    run two at a time, as the server's slots allow): kind -> job id."""
    started = {}
    for kind in KIND_TESTS:
        request = page_requests()[kind]
        if kind == "dx_llava":
            request = {**request, "evaluate.max_samples": 4}
        response = client.post("/api/training/start", json=request)
        assert response.status_code == 200, response.text
        started[kind] = response.json()["task_id"]
    return started


@pytest.fixture(scope="module")
def finished(client) -> dict:
    """The platform page's detector request, run to its end."""
    response = client.post("/api/training/start", json=page_requests()["deepfake_detector"])
    return wait(client, response.json()["task_id"])


# ------------------------------------------------------------------------------------------ contract
def test_kinds_list_every_registered_kind_with_its_defaults(client):
    kinds = {k["name"]: k for k in client.get("/api/kinds").json()["kinds"]}
    assert {"deepfake_detector", "image_classifier", "dx_llava"} <= set(kinds)
    assert kinds["image_classifier"]["defaults"]["base_model"] == "resnet50"
    assert kinds["dx_llava"]["short_form"]["learning_rate"] == "dx_llava.train.lr"
    assert kinds["deepfake_detector"]["config"]["task"] == "deepfake_detector"


@pytest.mark.parametrize(
    "change, field, words",
    [
        (
            {"model_type": "yolo_v99"},
            "model_type",
            "known kinds: deepfake_detector, dx_llava, image_classifier",
        ),
        ({"epochs": -1}, "epochs", "greater than or equal to 1"),
        ({"batch_size": "many"}, "batch_size", "integer"),
        ({"dataset_path": "no-such-data"}, "dataset_path", "not found"),
        ({"dataset_path": "classes"}, "dataset_path", "manifest"),
        ({"base_model": "not_a_timm_model"}, None, None),  # accepted here: the worker names the bad model
        ({"pretraind": False}, "pretraind", "did you mean"),
        ({"evaluate": "yes"}, "evaluate", "true or false"),
    ],
)
def test_bad_requests_name_the_field(client, change, field, words):
    response = client.post("/api/config/preview", json={**TINY, **change})
    if field is None:
        assert response.status_code == 200
        return
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and words in body["detail"]


def test_preview_resolves_the_short_form_into_the_full_config(client, data_dir):
    preview = client.post("/api/config/preview", json={**TINY, "train.warmup_epochs": 0.5}).json()
    config = preview["config"]
    assert config["model"] == {**config["model"], "name": "random:tiny", "image_size": 32}
    assert (
        config["train"]["epochs"] == 2
        and config["train"]["lr"] == 0.001
        and config["train"]["warmup_epochs"] == 0.5
    )
    assert config["train"]["manifest"] == str((data_dir / "datasets" / "faces" / "manifest.csv").resolve())
    assert config["train"]["output_dir"].startswith(str((data_dir / "jobs").resolve()))
    assert "name: random:tiny" in preview["yaml"]


def test_a_full_config_is_taken_like_a_yaml_file(client, data_dir):
    manifest = str(data_dir / "datasets" / "faces" / "manifest.csv")
    response = client.post(
        "/api/config/preview",
        json={
            "config": {"model": {"name": "test_efficientnet"}, "train": {"manifest": manifest, "epochs": 1}}
        },
    )
    assert response.status_code == 200 and response.json()["config"]["train"]["epochs"] == 1
    response = client.post("/api/config/preview", json={"config": {"train": {"epochz": 1}}})
    assert response.status_code == 422 and response.json()["field"] == "train.epochz"


def test_a_job_runs_to_succeeded_with_metrics_logs_report_and_artifact(client, finished):
    task_id = finished["task_id"]
    assert finished["state"] == "succeeded", finished["error"]
    assert finished["progress"]["epoch"] == 2 and finished["progress"]["fraction"] == 1.0
    assert finished["files"] == {"report": True, "artifact": True}
    history = client.get(f"/api/training/{task_id}/metrics").json()["history"]
    epochs = [row for row in history if row["stage"] == "val"]
    run = Path(finished["output_dir"]) / "run"
    saved = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs] == [1, 2] == [r["epoch"] for r in saved]
    assert [r["val_loss"] for r in epochs] == pytest.approx(
        [r["val_loss"] for r in saved]
    )  # the store = the run
    assert finished["metrics"]["val_loss"] == pytest.approx(saved[-1]["val_loss"])
    lines = client.get(f"/api/training/{task_id}/logs?tail=500").json()["lines"]
    assert any("training random:tiny" in line["text"] for line in lines)
    assert not any(line["text"].startswith("::fakefinder-event::") for line in lines)
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/api/training/{task_id}/artifact").content))
    assert {"model.json", "model.safetensors"} <= set(archive.namelist())
    assert json.loads(archive.read("model.json"))["kind"] == "deepfake_detector"
    report = client.get(f"/api/training/{task_id}/report")
    assert report.status_code == 200 and "<table" in report.text
    files = {f["path"] for f in client.get(f"/api/training/{task_id}/files").json()["files"]}
    assert {"run/model/model.json", "run/last.pt", "evaluate/metrics.json", "worker.log"} <= files
    assert client.get(f"/api/training/{task_id}/files/evaluate/metrics.json").json()["models"]


def mlflow_run_of(data_dir: Path, job: dict, timeout: float = 60.0):
    """The MLflow run the server logged `job` to (its local store), once the server has ended it."""
    import time

    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri=f"sqlite:///{data_dir.resolve() / 'mlflow.db'}")
    note = Path(job["output_dir"]) / "mlflow_run.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if note.is_file():
            run = mlflow.get_run(json.loads(note.read_text())["run_id"])
            if run.info.status != "RUNNING":
                return mlflow, run
        time.sleep(0.5)
    raise AssertionError(f"no ended MLflow run for job {job['task_id']} within {timeout} s")


def test_a_job_naming_mlflow_is_logged_by_the_server(client, finished, data_dir):
    """Read back with MLflow's own client: the config as params, every metric with its step, the kind as
    a tag, the report and the artifact folder; the worker itself logged nothing (one run only)."""
    mlflow, run = mlflow_run_of(data_dir, finished)
    assert run.info.status == "FINISHED"
    assert run.data.tags["fakefinder.kind"] == "deepfake_detector"
    assert run.data.tags["fakefinder.job"] == finished["task_id"]
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.name"] == "random:tiny"
    history = mlflow.get_metric_history(run.info.run_id, "val/val_loss")
    assert [m.step for m in history] == [1, 2]
    saved = [
        r["val_loss"]
        for r in client.get(f"/api/training/{finished['task_id']}/metrics").json()["history"]
        if "val_loss" in r
    ]
    assert [m.value for m in history] == pytest.approx(saved)
    files = {a.path for a in mlflow.list_artifacts(run.info.run_id)}
    assert "report.html" in files and "model" in files
    assert {a.path for a in mlflow.list_artifacts(run.info.run_id, "model")} >= {
        "model/model.json",
        "model/model.safetensors",
    }
    runs = mlflow.search_runs([run.info.experiment_id], f"tags.`fakefinder.job` = '{finished['task_id']}'")
    assert len(runs) == 1


def test_the_log_stream_replays_and_ends_with_the_job(client, finished):
    with client.stream("GET", f"/api/training/{finished['task_id']}/logs/stream?after=0") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [
        block.split("\n")[0 if block.startswith("event") else 1] for block in text.strip().split("\n\n")
    ]
    assert "event: log" in events and "event: metrics" in events and "event: state" in events
    assert events[-1] == "event: end"


def test_lists_filter_and_compare(client, finished):
    ids = [
        j["task_id"]
        for j in client.get("/api/training?state=succeeded&kind=deepfake_detector").json()["jobs"]
    ]
    assert finished["task_id"] in ids
    assert client.get("/api/training?state=bogus").status_code == 422
    runs = client.get(f"/api/compare?ids={finished['task_id']}").json()["runs"]
    assert runs[0]["final"]["val_loss"] == finished["metrics"]["val_loss"] and len(runs[0]["history"]) >= 2
    assert client.get("/api/compare?ids=nope").status_code == 404


def test_unknown_jobs_are_404(client):
    for path in ("", "/metrics", "/logs", "/report", "/artifact", "/files"):
        assert client.get(f"/api/training/nope{path}").status_code == 404
    assert client.post("/api/training/nope/stop").status_code == 404


# ------------------------------------------------------------------------------------------ queue, stop,
# resume
def test_queue_runs_one_job_per_slot_in_order_and_stop_cancels_a_queued_job(client):
    first = start(client, epochs=40, name="long")
    neighbour = start(client, epochs=40, name="in the other slot")
    second = start(client, name="waits")
    third = start(client, name="cancelled while queued")
    wait(client, first, {"running"}, check=lambda j: (j["progress"].get("epoch") or 0) >= 2)  # one epoch done
    assert SLOTS == 2 and client.get(f"/api/training/{neighbour}").json()["state"] == "running"
    assert client.get(f"/api/training/{second}").json()["state"] == "queued"
    assert client.post(f"/api/training/{third}/stop").json()["state"] == "cancelled"
    assert client.delete(f"/api/training/{first}").status_code == 409  # running: not deleted
    client.post(f"/api/training/{neighbour}/stop?force=true")  # its slot goes to the next in line
    assert wait(client, neighbour)["state"] == "cancelled"

    stopped = client.post(f"/api/training/{first}/stop").json()
    assert stopped["stop_requested"]
    stopped = wait(client, first)
    assert stopped["state"] == "cancelled" and stopped["resumable"], stopped["error"]
    assert stopped["result"]["stopped"] == "interrupted"
    run = Path(stopped["output_dir"]) / "run"
    assert (run / "last.pt").is_file()  # the graceful stop saved a checkpoint
    done_epochs = len((run / "history.jsonl").read_text().splitlines())
    assert done_epochs < 40

    assert wait(client, second)["state"] == "succeeded"  # the next job got the slot
    assert client.get(f"/api/training/{third}").json()["started_at"] is None

    resumed = client.post(f"/api/training/{first}/resume").json()
    assert resumed["state"] == "queued"
    wait(client, first, {"running"}, check=lambda j: (j["progress"].get("epoch") or 0) > done_epochs)
    lines = client.get(f"/api/training/{first}/logs?tail=5000").json()["lines"]
    assert any(f"resumed from {run / 'last.pt'}" in line["text"] for line in lines)
    client.post(f"/api/training/{first}/stop")
    final = wait(client, first)
    history = [
        r["epoch"]
        for r in client.get(f"/api/training/{first}/metrics").json()["history"]
        if r["stage"] == "val"
    ]
    assert (
        history == list(range(1, len(history) + 1)) and len(history) > done_epochs
    )  # each epoch once, in order
    assert final["attempts"] == 2

    client.delete(f"/api/training/{third}")
    assert client.get(f"/api/training/{third}").status_code == 404


def test_a_killed_worker_fails_its_job_and_the_queue_goes_on(client, data_dir):
    victim = start(client, epochs=40, name="victim")
    after = start(client, name="after the victim")
    job = wait(client, victim, {"running"}, check=lambda j: (j["progress"].get("epoch") or 0) >= 1)
    pid = int(JobStore(data_dir / "platform.sqlite").get(victim)["ref"].split(":")[0])
    os.kill(pid, signal.SIGKILL)
    failed = wait(client, victim)
    assert failed["state"] == "failed" and "SIGKILL" in failed["error"] and failed["resumable"]
    assert wait(client, after)["state"] == "succeeded"
    assert client.get("/api/health").json()["status"] == "ok"
    folder = Path(job["output_dir"])
    assert client.delete(f"/api/training/{victim}").status_code == 200 and not folder.exists()


def test_a_restart_keeps_finished_jobs_and_interrupts_running_ones(tmp_path):
    write_demo_datasets(tmp_path / "datasets")
    with TestClient(create_app(settings_for(tmp_path, jobs_per_device=2)), base_url=LOCAL) as first:
        before = start(first, name="before the restart")  # the two run side by side
        running = start(first, epochs=40, name="running at the restart")
        done = wait(first, before)
        wait(first, running, {"running"}, check=lambda j: (j["progress"].get("epoch") or 0) >= 1)
    # the server stopped: its worker was asked to save and stop
    with TestClient(create_app(settings_for(tmp_path)), base_url=LOCAL) as second:
        kept = second.get(f"/api/training/{done['task_id']}").json()
        assert (
            kept["state"] == "succeeded"
            and second.get(f"/api/training/{done['task_id']}/artifact").status_code == 200
        )
        job = second.get(f"/api/training/{running}").json()
        assert job["state"] == "interrupted" and job["resumable"] and "resume" in job["error"]
        assert (Path(job["output_dir"]) / "run" / "last.pt").is_file()
        second.post(f"/api/training/{running}/resume")
        wait(
            second,
            running,
            {"running"},
            check=lambda j: j["attempts"] == 2 and (j["progress"].get("epoch") or 0) >= 1,
        )
        second.post(f"/api/training/{running}/stop")
        assert wait(second, running)["state"] == "cancelled"


# ------------------------------------------------------------------------------------------ other kinds and
# jobs
def test_readme_shows_a_request_of_each_kind():
    assert set(page_requests()) == {
        "deepfake_detector",
        "image_classifier",
        "dx_llava",
        "llm_lora",
        "llm_qlora",
        "object_detector",
        "text_to_image_lora",
    }


def test_the_full_size_requests_resolve_as_written(client, data_dir):
    """The page's full-size requests are valid: the server resolves each, with its model names and sizes
    as written, on copies of the demo datasets under the names they use."""
    full = page_requests("full size")
    assert set(full) == set(page_requests())  # one of each kind, as on the demo data
    datasets = data_dir / "datasets"
    demo = {"deepfake_detector": "faces", "image_classifier": "classes", "dx_llava": "dx"}
    demo |= {"object_detector": "shapes", "text_to_image_lora": "captions"}
    for kind, request in full.items():
        name = request["dataset_path"]
        if kind in demo and not (datasets / name).exists():
            shutil.copytree(datasets / demo[kind], datasets / name)
        response = client.post("/api/config/preview", json=request)
        assert response.status_code == 200, (kind, response.text)
        assert request["base_model"] in response.json()["yaml"], kind
        task = get_task(kind)
        config = response.json()["config"]
        section, *path = task.short_form["base_model"].split(".")
        node = config[section]
        for part in path:
            node = node[part]
        assert node == request["base_model"]


def page_sweep(title: str) -> dict:
    """The sweep request (`curl ... /api/sweeps ... -d '{...}'`) of the platform page's block `title`."""
    block = re.findall(rf'```bash title="{title}"\n(.*?)```', PLATFORM_PAGE.read_text(), flags=re.S)
    bodies = [b for text in block for b in re.findall(r"/api/sweeps [^\n]*-d '(\{.*?\})'", text, re.S)]
    assert len(bodies) == 1, f"{title}: {len(bodies)} sweep requests"
    return json.loads(bodies[0])


def test_the_guides_sweeps_run_on_the_live_server(client, data_dir):
    """The page's full-size sweep resolves as written (on a copy of the demo faces under its name); its
    demo sweep starts, asks for its first trials (ordinary train jobs), and stops with them."""
    full = page_sweep("full size")
    datasets = data_dir / "datasets"
    if not (datasets / full["dataset_path"]).exists():
        shutil.copytree(datasets / "faces", datasets / full["dataset_path"])
    previewed = client.post("/api/sweeps/preview", json=full)
    assert previewed.status_code == 200, previewed.text
    assert previewed.json()["sweep"]["space"]["train.lr"]["log"] is True
    assert "efficientnet_b4" in previewed.json()["yaml"]

    demo = page_sweep("sweeps")
    started = client.post("/api/sweeps", json=demo)
    assert started.status_code == 200, started.text
    sweep_id = started.json()["task_id"]
    wait(client, sweep_id, {"running"}, check=lambda j: j["progress"].get("total") == demo["sweep"]["trials"])
    shown = client.get(f"/api/sweeps/{sweep_id}").json()
    assert shown["type"] == "sweep" and 1 <= len(shown["trials"]) <= demo["sweep"]["concurrency"]
    for trial in shown["trials"]:
        job = client.get(f"/api/training/{trial['task_id']}").json()
        assert job["type"] == "train" and job["parent"] == sweep_id and job["kind"] == "deepfake_detector"
        assert 0.0003 <= trial["params"]["train.lr"] <= 0.01
        assert trial["params"]["train.weight_decay"] in (0.0, 0.05)
    assert client.post(f"/api/training/{sweep_id}/stop").status_code == 200
    stopped = wait(client, sweep_id)
    assert stopped["state"] == "cancelled" and stopped["resumable"]
    trials = client.get(f"/api/sweeps/{sweep_id}").json()["trials"]
    assert all(t["job_state"] == "cancelled" for t in trials), trials
    assert client.delete(f"/api/training/{sweep_id}").status_code == 200
    assert client.get(f"/api/training/{trials[0]['task_id']}").status_code == 404


def test_image_classifier_job(client, kind_jobs):
    task_id = kind_jobs["image_classifier"]
    job = wait(client, task_id, timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert job["files"]["artifact"] and "val_accuracy" in job["metrics"]
    assert client.get(f"/api/training/{task_id}/report").status_code == 200
    assert client.get(f"/api/llm-finetuning/export/{task_id}").status_code == 422  # no adapter in this kind


def test_dx_llava_lora_job_exports_and_explains(client, data_dir, kind_jobs):
    request = page_requests()["dx_llava"]
    assert request["base_model"] == request["vision_tower"] == "random:tiny"
    task_id = kind_jobs["dx_llava"]
    job = wait(client, task_id, timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert any("lm_loss" in row for row in client.get(f"/api/training/{task_id}/metrics").json()["history"])
    adapter = zipfile.ZipFile(io.BytesIO(client.get(f"/api/llm-finetuning/export/{task_id}").content))
    assert any(name.startswith("adapter_model") for name in adapter.namelist())

    assert (
        client.post(
            "/api/llm-finetuning/merge", json={"task_id": task_id, "output_path": "../../x"}
        ).status_code
        == 422
    )
    # a merge job runs the kind's merge like every kind's (test_llm_lora_job_export_merge_and_predict)

    image = data_dir / "datasets" / "dx" / "images" / "1.png"
    response = client.post(
        "/api/predict",
        data={"model_task_id": task_id},
        files={"file": ("1.png", image.read_bytes(), "image/png")},
    )
    job = wait(client, response.json()["task_id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    (prediction,) = job["result"]["predictions"]
    assert 0 <= prediction["probability"] <= 1 and isinstance(prediction["explanation"], str)


def test_llm_lora_job_export_merge_and_predict(client, data_dir, kind_jobs):
    request = page_requests()["llm_lora"]
    assert request["base_model"] == "random:tiny"
    task_id = kind_jobs["llm_lora"]
    job = wait(client, task_id, timeout=300)
    assert job["state"] == "succeeded", job["error"]
    history = client.get(f"/api/training/{task_id}/metrics").json()["history"]
    assert any("eval_perplexity" in row for row in history) and any("loss" in row for row in history)
    logs = [line["text"] for line in client.get(f"/api/training/{task_id}/logs?tail=5000").json()["lines"]]
    assert any("sample" in line and "expected" in line for line in logs)  # generations logged at each eval
    assert job["result"]["evaluation"]["metrics"]["set"] == "test"  # the dataset's test.jsonl, after training
    assert client.get(f"/api/training/{task_id}/report").status_code == 200
    mlflow, run = mlflow_run_of(data_dir, job)  # the page's request names the mlflow tracker
    assert run.data.tags["fakefinder.kind"] == "llm_lora" and run.data.params["llm.train.max_steps"] == "4"
    assert [m.step for m in mlflow.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4]
    perplexity = [k for k in run.data.metrics if k.endswith("eval_perplexity")]
    assert perplexity and mlflow.get_metric_history(run.info.run_id, perplexity[0]), sorted(run.data.metrics)
    assert "adapter" in {a.path.split("/")[-1] for a in mlflow.list_artifacts(run.info.run_id, "model")}

    adapter = zipfile.ZipFile(io.BytesIO(client.get(f"/api/llm-finetuning/export/{task_id}").content))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(adapter.namelist())
    merged = client.post(
        "/api/llm-finetuning/merge", json={"task_id": task_id, "output_path": "merged-llm"}
    ).json()
    job = wait(client, merged["task_id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert (Path(merged["output_path"]) / "merged_model" / "config.json").is_file()
    again = client.post("/api/llm-finetuning/merge", json={"task_id": task_id, "output_path": "merged-llm"})
    assert again.status_code == 409  # a finished merge is never written over

    prompts = (
        b'{"id": "q1", "instruction": "What is 2 + 3?"}\n{"id": "q2", "instruction": "Is 4 odd or even?"}\n'
    )
    refused = client.post(
        "/api/predict", data={"model_task_id": task_id}, files={"file": ("x.png", b"png", "image/png")}
    )
    assert refused.status_code == 422 and ".jsonl" in refused.json()["detail"]
    response = client.post(
        "/api/predict",
        data={"model_task_id": task_id},
        files={"file": ("prompts.jsonl", prompts, "application/jsonl")},
    )
    job = wait(client, response.json()["task_id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    assert [row["id"] for row in job["result"]["predictions"]] == ["q1", "q2"]
    assert all(isinstance(row["response"], str) for row in job["result"]["predictions"])

    # an adapter brought in by path may not name a local base outside the roots

    trained = client.get(f"/api/training/{task_id}").json()["result"]["artifact"]
    copy = data_dir / "datasets" / "adapter-elsewhere"
    shutil.copytree(trained, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["architecture"]["base"]["source"] = str(tmp_path_outside(data_dir))
    (copy / "model.json").write_text(json.dumps(meta))
    try:
        response = client.post(
            "/api/evaluate", json={"model_path": "adapter-elsewhere", "dataset_path": "instructions"}
        )
        assert response.status_code == 422 and response.json()["field"] == "model_path"
        assert "outside" in response.json()["detail"]
    finally:
        shutil.rmtree(copy)


def tmp_path_outside(data_dir: Path) -> Path:
    outside = data_dir.parent / f"{data_dir.name}-outside-base"
    outside.mkdir(exist_ok=True)
    (outside / "config.json").write_text("{}")
    return outside


def test_object_detector_job_evaluates_and_predicts_boxes(client, data_dir, kind_jobs):
    described = client.get("/api/datasets").json()
    shapes = next(
        d
        for d in (described.get("datasets", described) if isinstance(described, dict) else described)
        if d["name"] == "shapes"
    )
    assert shapes["layout"] == "yolo" and shapes["kinds"] == ["object_detector"]
    task_id = kind_jobs["object_detector"]
    job = wait(client, task_id, timeout=300)
    assert job["state"] == "succeeded", job["error"]
    history = client.get(f"/api/training/{task_id}/metrics").json()["history"]
    assert [row["epoch"] for row in history if "metrics/mAP50(B)" in row] == [1, 2]
    evaluation = job["result"]["evaluation"]["metrics"]
    (entry,) = evaluation["models"].values()
    assert set(entry["per_class"]) == {"square", "disc", "triangle"} and "map50_95" in entry["overall"]
    assert client.get(f"/api/training/{task_id}/report").status_code == 200

    image = next((data_dir / "datasets" / "shapes" / "images" / "val").iterdir()).read_bytes()
    refused = client.post(
        "/api/predict", data={"model_task_id": task_id}, files={"file": ("x.mp4", b"mp4", "video/mp4")}
    )
    assert refused.status_code == 422 and ".png" in refused.json()["detail"]
    response = client.post(
        "/api/predict", data={"model_task_id": task_id}, files={"file": ("scene.jpg", image, "image/jpeg")}
    )
    job = wait(client, response.json()["task_id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    rows = job["result"]["predictions"]
    assert rows and all(
        row["id"] == "scene.jpg" and {"class", "score", "x1", "y2"} <= set(row) for row in rows
    )


def test_text_to_image_lora_job_generates_and_exports(client, data_dir, kind_jobs):
    import io
    import zipfile

    described = client.get("/api/datasets").json()
    captions = next(
        d
        for d in (described.get("datasets", described) if isinstance(described, dict) else described)
        if d["name"] == "captions"
    )
    assert captions["layout"] == "captioned_images" and captions["kinds"] == ["text_to_image_lora"]
    assert captions["splits"] == {"train": {"captioned": 12}}
    task_id = kind_jobs["text_to_image_lora"]
    job = wait(client, task_id, timeout=300)
    assert job["state"] == "succeeded", job["error"]
    history = client.get(f"/api/training/{task_id}/metrics").json()["history"]
    assert [row["step"] for row in history if "loss" in row] == [1, 2, 3, 4]
    (entry,) = job["result"]["evaluation"]["metrics"]["models"].values()
    assert entry["images"] >= 1 and entry["loss"] is not None and entry["base_loss"] is not None
    assert client.get(f"/api/training/{task_id}/report").status_code == 200
    run = Path(job["output_dir"]) / "run"
    assert list((run / "samples" / "step-000002").glob("*.png")) and list(
        (run / "samples" / "final").glob("*.png")
    )

    exported = client.get(f"/api/llm-finetuning/export/{task_id}")
    assert exported.status_code == 200
    assert "pytorch_lora_weights.safetensors" in zipfile.ZipFile(io.BytesIO(exported.content)).namelist()
    refused = client.post(
        "/api/predict", data={"model_task_id": task_id}, files={"file": ("x.jpg", b"jpg", "image/jpeg")}
    )
    assert refused.status_code == 422 and ".txt" in refused.json()["detail"]
    response = client.post(
        "/api/predict",
        data={"model_task_id": task_id},
        files={"file": ("prompts.txt", b"a red disc on a grey background\n", "text/plain")},
    )
    job = wait(client, response.json()["task_id"], timeout=300)
    assert job["state"] == "succeeded", job["error"]
    (row,) = job["result"]["predictions"]
    assert row["prompt"] == "a red disc on a grey background" and Path(row["image"]).is_file()


def test_llm_qlora_job(client, kind_jobs):
    task_id = kind_jobs["llm_qlora"]
    job = wait(client, task_id, timeout=300)
    assert job["state"] == "succeeded", job["error"]
    artifact = json.loads((Path(job["result"]["artifact"]) / "model.json").read_text())
    assert artifact["kind"] == "llm_qlora" and artifact["architecture"]["quantized"]
    assert artifact["architecture"]["lora"]["double_quant"]


def test_predict_and_evaluate_jobs(client, finished, data_dir):
    image = next((data_dir / "datasets" / "faces").rglob("*.jpg"))
    response = client.post(
        "/api/predict",
        data={"model_task_id": finished["task_id"]},
        files={"file": ("face one.jpg", image.read_bytes(), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    job = wait(client, response.json()["task_id"])
    assert job["state"] == "succeeded", job["error"]
    (prediction,) = job["result"]["predictions"]
    assert 0 <= prediction["probability"] <= 1
    bad = client.post(
        "/api/predict",
        data={"model_task_id": finished["task_id"]},
        files={"file": ("notes.txt", b"hello", "text/plain")},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "file"

    response = client.post(
        "/api/evaluate", json={"model_task_id": finished["task_id"], "dataset_path": "faces"}
    )
    job = wait(client, response.json()["task_id"])
    assert job["state"] == "succeeded", job["error"]
    assert client.get(f"/api/training/{job['task_id']}/report").status_code == 200


def test_heatmaps_of_an_evaluation_and_of_a_predict_job(client, finished, data_dir):
    """The gallery of the training's evaluation as JSON, its overlays served from the job's folder; a
    predict job asked for heatmaps lists the overlays it drew; a kind that draws none is refused."""
    task_id = finished["task_id"]
    kinds = {k["name"]: k for k in client.get("/api/kinds").json()["kinds"]}
    assert kinds[finished["kind"]]["draws_heatmaps"] is True
    assert all(kind["draws_heatmaps"] is get_task(name).draws_heatmaps for name, kind in kinds.items())
    response = client.get(f"/api/evaluate/{task_id}/heatmaps")
    assert response.status_code == 200, response.text
    (entry,) = response.json()["sets"]
    assert isinstance(entry["experimental"], bool) and entry["method"] in ("mask", "cam", None)
    assert {"n"} <= set(entry["overall"]) and entry["gallery"], entry
    item = entry["gallery"][0]
    assert item["group"] in ("confident_fakes", "confident_reals", "false_positives", "false_negatives")
    assert item["overlay"].startswith("evaluate/gallery/") and item["overlay"].endswith("_overlay.jpg")
    overlay = client.get(f"/api/training/{task_id}/files/{item['overlay']}")
    assert overlay.status_code == 200 and overlay.content[:3] == b"\xff\xd8\xff"  # a JPEG
    assert client.get(f"/api/training/{task_id}/files/{item['heatmap']}").content[:4] == b"\x89PNG"

    image = next((data_dir / "datasets" / "faces").rglob("*.jpg"))
    response = client.post(
        "/api/predict",
        data={"model_task_id": task_id, "heatmaps": "true"},
        files={"file": ("face two.jpg", image.read_bytes(), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    job = wait(client, response.json()["task_id"])
    assert job["state"] == "succeeded", job["error"]
    (drawn,) = job["result"]["heatmaps"]
    assert drawn["overlay"] == drawn["heatmap"].removesuffix(".png") + "_overlay.jpg"
    assert drawn["overlay"].startswith("predict/heatmaps/") and drawn["regions"], drawn
    assert drawn["id"] == job["result"]["predictions"][0]["id"] and drawn["frame_index"] is None  # an image
    assert job["result"]["heatmap_check"]["experimental"] in (True, False)
    overlay = client.get(f"/api/training/{job['task_id']}/files/{drawn['overlay']}")
    assert overlay.status_code == 200 and overlay.content[:3] == b"\xff\xd8\xff"
    missing = client.get(f"/api/evaluate/{job['task_id']}/heatmaps")  # a predict job has no evaluation
    assert missing.status_code == 404 and "no evaluation" in missing.json()["detail"]

    assert not kinds["object_detector"]["draws_heatmaps"]
    model = data_dir / "exports" / "object-detector-model"
    shutil.copytree(LEGACY / "object_detector" / "run" / "model", model)
    refused = client.post(
        "/api/predict",
        data={"model_path": str(model), "heatmaps": "true"},
        files={"file": ("x.jpg", image.read_bytes(), "image/jpeg")},
    )
    assert refused.status_code == 422 and refused.json()["field"] == "heatmaps", refused.text


def test_a_gallery_names_only_images_inside_the_job_folder(tmp_path):
    """An entry of an evaluation's gallery whose image is missing, or leads out of the job's folder
    (`..`, an absolute path, a symlink), is left out of what the UI is handed."""
    from fakefinder.platform.routes.evaluation import _heatmap_set

    folder = tmp_path / "job"
    output = folder / "evaluate"
    (output / "gallery").mkdir(parents=True)
    for path in (output / "gallery" / "a.png", output / "gallery" / "a_overlay.jpg", tmp_path / "b.jpg"):
        path.write_bytes(b"image")
    (output / "gallery" / "link_overlay.jpg").symlink_to(tmp_path / "b.jpg")
    pairs = [
        ("gallery/a.png", "gallery/a_overlay.jpg"),
        ("gallery/a.png", "../../b.jpg"),
        ("gallery/a.png", "gallery/link_overlay.jpg"),
        (str(tmp_path / "b.jpg"), "gallery/a_overlay.jpg"),
        ("gallery/gone.png", "gallery/a_overlay.jpg"),
    ]
    found = {"experimental": True, "gallery": [{"heatmap": a, "overlay": b} for a, b in pairs] + ["text"]}
    shown = _heatmap_set("run", "test", found, output, folder)
    assert [(g["heatmap"], g["overlay"]) for g in shown["gallery"]] == [
        ("evaluate/gallery/a.png", "evaluate/gallery/a_overlay.jpg")
    ]
    assert shown["experimental"] is True and shown["left_out"] == {}


def test_uploaded_datasets_are_listed_and_a_bad_zip_leaves_nothing(client, data_dir):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for split in ("train", "val"):
            for name in ("cat", "dog"):
                archive.writestr(
                    f"pets/{split}/{name}/{name}0.jpg",
                    (data_dir / "datasets" / "classes" / "train" / "red" / "red_0.jpg").read_bytes(),
                )
    response = client.post(
        "/api/datasets", data={"name": "pets"}, files={"file": ("pets.zip", buffer.getvalue())}
    )
    assert response.status_code == 201, response.text
    assert response.json()["layout"] == "class_folders" and response.json()["splits"]["train"] == {
        "cat": 1,
        "dog": 1,
    }
    names = {d["name"] for d in client.get("/api/datasets").json()["datasets"]}
    assert {"faces", "classes", "dx", "pets"} <= names
    before = sorted(p.name for p in (data_dir / "datasets").iterdir())
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("ok.txt", "fine")
        archive.writestr("../../escape.txt", "bad")
    response = client.post(
        "/api/datasets", data={"name": "evil"}, files={"file": ("evil.zip", evil.getvalue())}
    )
    assert response.status_code == 422 and response.json()["field"] == "file"
    assert sorted(p.name for p in (data_dir / "datasets").iterdir()) == before
    assert (
        client.post(
            "/api/datasets", data={"name": "junk"}, files={"file": ("x.zip", b"not a zip")}
        ).status_code
        == 422
    )


# ------------------------------------------------------------------------------------------ confinement and
# auth
def test_paths_are_confined_to_the_roots(client, data_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.csv").write_text("path,label,split\n")
    link = data_dir / "datasets" / "sneaky"
    link.symlink_to(outside, target_is_directory=True)
    try:
        for value in ("../../etc/passwd", "/etc", str(outside), "sneaky", "faces/../../jobs"):
            response = client.post("/api/config/preview", json={**TINY, "dataset_path": value})
            assert response.status_code == 422 and response.json()["field"] == "dataset_path", value
        full = {"config": {"train": {"manifest": "/etc/passwd"}}}
        response = client.post("/api/config/preview", json=full)
        assert response.status_code == 422 and response.json()["field"] == "train.manifest"
        response = client.post(
            "/api/config/preview", json={"model_type": "dx_llava", "dataset_path": "dx", "tokenizer": "/etc"}
        )
        assert response.status_code == 422 and "outside" in response.json()["detail"]
        response = client.post("/api/evaluate", json={"model_path": "/etc"})
        assert response.status_code == 422 and response.json()["field"] == "model_path"
    finally:
        link.unlink()


def test_job_files_cannot_leave_the_job_folder(client, finished):
    for path in ("../../platform.sqlite", "..%2F..%2Fplatform.sqlite", "/etc/passwd"):
        response = client.get(f"/api/training/{finished['task_id']}/files/{path}")
        assert response.status_code in (404, 422), path


def test_a_token_guards_every_api_call(tmp_path):
    with TestClient(create_app(settings_for(tmp_path, token="s3cret"), start_manager=False)) as guarded:
        assert guarded.get("/api/health").status_code == 401
        assert guarded.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert guarded.get("/api/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert guarded.get("/api/training", headers={"X-API-Token": "s3cret"}).status_code == 200
        assert guarded.post("/api/training/start", json=TINY).status_code == 401
        assert guarded.get("/openapi.json").status_code == 200  # the schema is public, the API is not


def test_a_public_address_needs_a_token(monkeypatch, tmp_path):
    monkeypatch.delenv("FAKEFINDER_TOKEN", raising=False)
    with pytest.raises(ValueError, match="needs an API token"):
        ServeSettings(data_dir=tmp_path, host="0.0.0.0")
    assert ServeSettings(data_dir=tmp_path, host="0.0.0.0", token="t").token == "t"
    assert ServeSettings(data_dir=tmp_path, host="::1").token is None


def test_a_raw_dataset_is_prepared_by_a_job(client, tmp_path):
    from fakefinder import synthetic

    tree = synthetic.make_folder_tree(tmp_path / "raw", images=2, videos=1, num_frames=8, size=(120, 160))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                archive.write(path, Path("clips") / path.relative_to(tree))
    uploaded = client.post(
        "/api/datasets", data={"name": "clips"}, files={"file": ("clips.zip", buffer.getvalue())}
    )
    assert (
        uploaded.status_code == 201
        and uploaded.json()["layout"] == "folder"
        and uploaded.json()["kinds"] == ["prepare"]
    )
    response = client.post(
        "/api/datasets/clips/prepare",
        json={
            "output_name": "clips-faces",
            "frames_per_video": 3,
            "detector": "retinaface",
            "fallback": ["opencv"],
            "size": 48,
            "num_workers": 0,
        },
    )
    assert response.status_code == 200, response.text
    job = wait(client, response.json()["task_id"])
    assert job["state"] == "succeeded" and job["type"] == "prepare", job["error"]
    prepared = client.get("/api/datasets/clips-faces").json()
    assert prepared["layout"] == "prepared" and sum(sum(c.values()) for c in prepared["splits"].values()) > 0
    assert client.post("/api/datasets/clips/prepare", json={"output_name": "clips-faces"}).status_code == 409
    assert (
        client.post("/api/datasets/clips/prepare", json={"shards": 2}).json()["field"] == "shards"
    )  # Ray only
    assert client.post("/api/datasets/clips/prepare", json={"detectr": "x"}).json()["field"] == "detectr"


def test_without_a_token_only_this_machine_may_call(tmp_path):
    with TestClient(create_app(settings_for(tmp_path), start_manager=False), base_url=LOCAL) as local:
        assert local.get("/api/health").status_code == 200
        assert (
            local.get("/api/health", headers={"Host": "attacker.example:8000"}).status_code == 403
        )  # rebinding
        assert (
            local.post(
                "/api/datasets/x/prepare", json={}, headers={"Origin": "https://evil.example"}
            ).status_code
            == 403
        )
        assert local.get("/api/health", headers={"Origin": "http://127.0.0.1:8000"}).status_code == 200
        assert local.post("/api/datasets", headers={"Content-Length": str(10 << 40)}).status_code == 413


def test_text_in_the_log_cannot_pass_for_an_event(client, data_dir):
    """A dataset whose folder name holds a line that looks like an event: the worker prints it in its
    error; the manager takes it as log text, so it cannot point the report or artifact elsewhere."""
    forged = (
        '::fakefinder-event:: {"type": "result", "stage": "job", "data": {"artifact": ".", '
        '"report": "platform.sqlite"}}'
    )
    root = data_dir / "datasets" / "forged"
    for split in ("train", "val"):
        (root / split / f"x\n{forged}\n").mkdir(parents=True)
    task_id = client.post(
        "/api/training/start",
        json={
            **TINY,
            "model_type": "image_classifier",
            "dataset_path": "forged",
            "num_workers": 0,
            "evaluate": False,
        },
    ).json()["task_id"]
    job = wait(client, task_id)
    assert job["state"] == "failed" and job["result"] is None
    assert client.get(f"/api/training/{task_id}/report").status_code == 404
    assert client.get(f"/api/training/{task_id}/artifact").status_code == 404
    assert any(
        forged in line["text"]
        for line in client.get(f"/api/training/{task_id}/logs?tail=500").json()["lines"]
    )


def test_text_settings_naming_local_folders_are_confined(client):
    for key, value in (
        ("vision_tower", "timm:local-dir:/etc"),
        ("llava_checkpoint", "~/models"),
        ("vision_tower", "open_clip:local-dir:../../x"),
    ):
        response = client.post(
            "/api/config/preview", json={"model_type": "dx_llava", "dataset_path": "dx", key: value}
        )
        assert response.status_code == 422 and response.json()["field"] == f"dx_llava.model.{key}", (
            key,
            value,
        )
    response = client.post("/api/config/preview", json={**TINY, "task": "dx_llava"})
    assert response.status_code == 422 and response.json()["field"] == "task"
    backup = client.post("/api/config/preview", json={**TINY, "backup_dir": "/tmp/elsewhere"}).json()[
        "config"
    ]
    assert backup["train"]["backup_dir"].startswith(backup["train"]["output_dir"].rsplit("/", 1)[0])


# ------------------------------------------------------------------------------------------ earlier requests
LEGACY_REQUESTS = json.loads(
    (Path(__file__).resolve().parent / "fixtures" / "legacy" / "readme_requests.json").read_text()
)["requests"]


@pytest.mark.parametrize("request_body", LEGACY_REQUESTS, ids=[r["model_type"] for r in LEGACY_REQUESTS])
def test_every_request_an_earlier_readme_showed_still_resolves(client, request_body):
    response = client.post("/api/config/preview", json=request_body)
    assert response.status_code == 200, response.text
    config, notes = response.json()["config"], response.json()["notes"]
    kind = get_task(request_body["model_type"])
    assert set(config) == {"task", *kind.reads, *([kind.section] if kind.section else [])}
    for key in ("lora_r", "report_to", "checkpoint_steps", "every", "workers", "bnb_4bit_compute_dtype"):
        if key in request_body:
            assert any(f".{key}' is called" in note for note in notes), (key, notes)


def _seed_request() -> dict:
    """A language-model job in the platform's first short form."""
    return {
        "model_type": "llm_qlora",
        "base_model": "some/base",
        "dataset_path": "instructions",
        "epochs": 2,
        "batch_size": 3,
        "learning_rate": 0.002,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.1,
        "target_modules": ["q_proj"],
        "use_4bit": True,
        "bnb_4bit_compute_dtype": "float16",
        "bnb_4bit_quant_type": "fp4",
        "use_nested_quant": True,
    }


def test_the_seeds_short_form_resolves_under_todays_names(client):
    llm = client.post("/api/config/preview", json=_seed_request()).json()["config"]["llm"]
    assert (llm["model"]["base"], llm["train"]["epochs"], llm["train"]["batch_size"], llm["train"]["lr"]) == (
        "some/base",
        2,
        3,
        0.002,
    )
    assert llm["lora"] == {
        **llm["lora"],
        "r": 4,
        "alpha": 8,
        "dropout": 0.1,
        "target_modules": ["q_proj"],
        "use_4bit": True,
        "compute_dtype": "fp16",
        "quant_type": "fp4",
        "double_quant": True,
    }
