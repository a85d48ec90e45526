"""Files an earlier fakefinder wrote (tests/fixtures/legacy: artifacts, run configs, a resume state, a
platform job store, all with the config keys of that version) still load and give the outputs that
version gave on the same inputs; the deepfake detector's first training losses are unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fakefinder
from fakefinder.config import load_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "legacy"
WHERE = Path("/tmp/fakefinder-legacy-81187fa")  # where they were written: their files name this folder


@pytest.fixture(scope="module")
def legacy():
    shutil.rmtree(WHERE, ignore_errors=True)
    shutil.copytree(FIXTURES, WHERE, symlinks=True)
    yield WHERE
    shutil.rmtree(WHERE, ignore_errors=True)


def _predict(folder: Path, model: str, inputs: Path, *more: str) -> pd.DataFrame:
    output = folder / "now" / "predicted.csv"
    config = load_config(
        folder / "run" / "config.yaml",
        [
            f"predict.models=[{folder / 'run' / model}]",
            f"predict.inputs=[{inputs}]",
            f"predict.output={output}",
            "predict.device=cpu",
            *more,
        ],
    )
    fakefinder.predict(config)
    return pd.read_csv(output, keep_default_na=False)


def _same_table(now: pd.DataFrame, then: pd.DataFrame, atol: float = 1e-5) -> None:
    assert list(now.columns) == list(then.columns) and len(now) == len(then)
    for column in then.columns:
        if then[column].dtype.kind == "f":
            np.testing.assert_allclose(
                now[column].to_numpy(float), then[column].to_numpy(float), atol=atol, err_msg=column
            )
        else:
            assert now[column].astype(str).tolist() == then[column].astype(str).tolist(), column


@pytest.mark.parametrize(
    "kind, model, more",
    [
        (
            "deepfake_detector",
            "model",
            ["predict.faces={detect: false}", "predict.num_workers=0", "predict.backend=torch"],
        ),
        ("image_classifier", "model", ["predict.num_workers=0", "predict.backend=torch"]),
    ],
)
def test_detector_and_classifier_artifacts_predict_as_before(legacy, kind, model, more):
    folder = legacy / kind
    _same_table(
        _predict(folder, model, folder / "inputs", *more), pd.read_csv(folder / "expected.csv"), atol=1e-6
    )


@pytest.mark.parametrize("kind", ["llm_lora", "llm_qlora"])
def test_language_model_adapters_answer_and_score_as_before(legacy, kind, caplog):
    import torch

    from fakefinder.tasks import get_task, read_model

    folder = legacy / kind
    with caplog.at_level("WARNING", logger="fakefinder.config"):
        _same_table(
            _predict(folder, "model", folder / "prompts.jsonl"),
            pd.read_csv(folder / "expected.csv", keep_default_na=False),
        )
    # the adapter's saved settings use the keys of that version: each is read under, and named by, its new key
    notes = [
        r.getMessage() for r in caplog.records if "model.json (written by an earlier version)" in r.message
    ]
    assert any("'llm.lora.lora_r' is called 'llm.lora.r' now" in n for n in notes), notes
    expected = json.loads((folder / "expected.json").read_text())
    predictor = get_task(kind).load([read_model(folder / "run" / "model")], "cpu")
    ids = predictor.tokenizer(expected["text"], return_tensors="pt").input_ids
    with torch.no_grad():
        logits = predictor.model(input_ids=ids).logits.float()[0, -1]
    np.testing.assert_allclose(logits.numpy(), np.array(expected["logits_last"]), atol=1e-5)


def test_dx_llava_answers_with_the_same_probability_and_explanation(legacy):
    folder = legacy / "dx_llava"
    details = folder / "now" / "details.json"
    table = _predict(
        folder,
        "final",
        folder / "inputs",
        "predict.faces={detect: false}",
        "predict.num_workers=0",
        f"predict.details={details}",
    )
    _same_table(table, pd.read_csv(folder / "expected.csv"))
    now = {f["id"]: f for f in json.loads(details.read_text())["files"]}
    then = {f["id"]: f for f in json.loads((folder / "expected-details.json").read_text())["files"]}
    assert {k: v["explanation"] for k, v in now.items()} == {k: v["explanation"] for k, v in then.items()}


def test_object_detector_finds_the_same_boxes(legacy):
    folder = legacy / "object_detector"
    now = _predict(folder, "model", folder / "inputs", "detector.predict.conf=0.001")
    then = pd.read_csv(folder / "expected.csv")
    _same_table(now, then, atol=1e-3)


def test_text_to_image_lora_generates_the_same_image(legacy):
    from PIL import Image

    folder = legacy / "text_to_image_lora"
    now = _predict(folder, "model", folder / "prompts.txt")
    then = pd.read_csv(folder / "expected.csv")
    assert (
        now[["id", "prompt", "seed"]].astype(str).values.tolist()
        == then[["id", "prompt", "seed"]].astype(str).values.tolist()
    )
    drawn = np.asarray(Image.open(now.image[0]), dtype=np.int16)
    recorded = np.asarray(Image.open(folder / "images" / Path(then.image[0]).name), dtype=np.int16)
    assert np.abs(drawn - recorded).max() <= 1


def test_a_detector_resume_state_continues(legacy):
    from fakefinder import synthetic

    folder = legacy / "deepfake_detector"
    synthetic.make_prepared_crops(folder / "data", 12, 48, ("a",))  # the data it trained on, made again
    before = [json.loads(line) for line in (folder / "run" / "history.jsonl").read_text().splitlines()]
    config = load_config(folder / "run" / "config.yaml", ["train.epochs=2"])
    result = fakefinder.train(config, resume=True)
    rows = [json.loads(line) for line in (folder / "run" / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[0] == before[0]
    assert result.stopped == "completed"


def test_the_detectors_first_losses_are_unchanged(tmp_path):
    import torch

    from conftest import train_config
    from fakefinder import synthetic

    recorded = json.loads((FIXTURES / "losses" / "losses.json").read_text())
    manifest = synthetic.make_prepared_crops(tmp_path / "data", 40, 48, ("a",))
    events = []
    threads = torch.get_num_threads()
    torch.set_num_threads(recorded["torch_threads"])  # as recorded: sums run in the same order
    try:
        fakefinder.train(
            train_config(manifest, tmp_path / "run", epochs=1, batch_size=2, seed=7), events=events.append
        )
    finally:
        torch.set_num_threads(threads)
    losses = [e.data["loss"] for e in events if e.type == "progress" and "loss" in e.data][:20]
    np.testing.assert_allclose(losses, recorded["running_mean_loss"], rtol=0, atol=1e-6)


def test_a_job_store_of_the_earlier_platform_lists_and_resumes(legacy):
    from fastapi.testclient import TestClient

    from conftest import wait_for_job
    from fakefinder.platform.app import create_app
    from fakefinder.platform.settings import ServeSettings

    settings = ServeSettings(
        data_dir=legacy / "platform", devices=["cpu"], poll_interval_s=0.2, stop_timeout_s=60
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        jobs = {j["name"]: j for j in client.get("/api/training").json()["jobs"]}
        assert {n: (j["kind"], j["state"]) for n, j in jobs.items()} == {
            "legacy-detector": ("deepfake_detector", "succeeded"),
            "legacy-llm": ("llm_lora", "cancelled"),
        }
        done = jobs["legacy-detector"]
        assert client.get(f"/api/training/{done['task_id']}/artifact").status_code == 200
        assert client.get(f"/api/training/{done['task_id']}/report").status_code == 200
        stopped = jobs["legacy-llm"]
        assert stopped["resumable"]
        assert client.post(f"/api/training/{stopped['task_id']}/resume").json()["state"] == "queued"
        job = wait_for_job(client, stopped["task_id"], timeout=240)
        assert job["state"] == "succeeded", job["error"]
        logs = "\n".join(
            line["text"]
            for line in client.get(f"/api/training/{stopped['task_id']}/logs?tail=400").json()["lines"]
        )
        assert "resuming from" in logs and "checkpoint-" in logs
        run = Path(job["output_dir"]) / "run"
        assert (run / "model" / "adapter" / "adapter_model.safetensors").is_file()
