"""The contract every model kind keeps; a kind that lives only in the test tree (its package and one
`register` line) trained, evaluated and predicted through the CLI, the Python API and the platform;
the GPUs each kind's jobs ask for; no kind named in the platform, the CLI or the renderer."""

from __future__ import annotations

import inspect
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fakefinder
from fakefinder.config import Config, ConfigError, config_from_dict, set_key
from fakefinder.tasks import Kind, get_task, list_tasks, read_model, task_for_models

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src" / "fakefinder"
BUILT_IN = list_tasks()  # before the test-only kind joins


def _overrides(kind: Kind, method: str) -> bool:
    return getattr(type(kind), method) is not getattr(Kind, method)


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_kind_keeps_the_contract(name, tmp_path):
    kind = get_task(name)
    assert isinstance(kind, Kind) and kind.name == name and kind.description and kind.dataset_layout
    for method in ("train", "evaluate", "load", "dataset_settings", "describe_dataset"):
        assert _overrides(kind, method), f"{name} does not implement {method}"
    for method in ("train", "evaluate", "load", "export", "merge", "devices"):
        assert (
            list(inspect.signature(getattr(kind, method)).parameters)
            == list(inspect.signature(getattr(Kind, method)).parameters)[1:]
        ), f"{name}.{method} changed its signature"
    config = config_from_dict({"task": name})
    run = kind.run_settings(config)
    assert {"output_dir", "device", "seed"} <= set(type(run).model_fields), f"{name}: {kind.run_section}"
    assert kind.default_model(config).parent == Path(run.output_dir)
    if kind.section:
        assert isinstance(getattr(config, kind.section), kind.section_model)
    for short, dotted in kind.short_form.items():  # every short request key lands on a real config key
        tree = config.model_dump(mode="json")
        set_key(tree, dotted, tree_value(tree, dotted))
        config_from_dict(tree, f"{name}.short_form[{short}]")
    assert kind.describe_dataset(tmp_path) is None  # an empty folder is nobody's layout
    assert {kind.devices(config, {"gpus": n}) for n in (0, 2)} <= {0, 1, 2}
    assert kind.processes(config) == 1
    assert kind.predict_inputs is None or all(s.startswith(".") for s in kind.predict_inputs)
    assert isinstance(kind.draws_heatmaps, bool)  # the platform's predict form offers heatmaps by it
    if not kind.draws_heatmaps:  # only a kind whose models draw heatmaps has their check to report
        assert not _overrides(kind, "heatmap_check")
    if kind.adapter:  # a kind that trains an adapter merges and exports it
        assert _overrides(kind, "merge") and _overrides(kind, "export")
    for dotted in kind.platform_settings():
        tree = config.model_dump(mode="json")
        assert tree_value(tree, dotted) is not None, dotted


def tree_value(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------- GPUs


def _config(name: str, **settings) -> Config:
    kind = get_task(name)
    tree = {"task": name}
    for key, value in settings.items():
        set_key(tree, f"{kind.run_section}.{key}", value)
    return config_from_dict(tree)


@pytest.mark.parametrize("name", BUILT_IN)
def test_each_kinds_jobs_ask_for_the_gpus_their_device_names(name):
    from fakefinder.platform.manager import job_needs

    def needs(config, gpus, **spec):
        return job_needs({"type": "train", "config": config.model_dump(mode="json"), **spec}, {"gpus": gpus})

    for device in ("cuda", "cuda:1", "auto"):
        assert needs(_config(name, device=device), 4) == (1, 1), device  # one GPU where the cluster has them
    for device in ("cuda", "auto"):
        assert needs(_config(name, device=device), 0) == (0, 1), device  # none on a CPU-only cluster
    assert needs(_config(name, device="cpu"), 4) == (0, 1)
    assert needs(_config(name, device="cpu"), 4, num_gpus=2)[0] == 2  # the request's own count wins
    if get_task(name).multi_process:  # DDP / DeepSpeed: one GPU (and process) each
        assert needs(_config(name, device="auto", num_processes=2), 4) == (2, 2)
        assert needs(_config(name, device="cuda", num_processes=2), 1) == (2, 2)  # more than the cluster has
        assert needs(_config(name, device="auto", num_processes=2), 0) == (0, 2)  # gloo on the CPU
    else:
        with pytest.raises(ConfigError):
            _config(name, num_processes=2)


def test_the_platform_submits_a_jobs_gpus_to_its_executor(tmp_path):
    """A fake cluster (two GPUs) behind the manager: a detector left at `auto` asks for one GPU, a
    2-process DDP job for two and is launched under torchrun; a cluster without GPUs gets none."""
    from fakefinder.platform.executors.base import ExecStatus, Executor
    from fakefinder.platform.manager import JobManager
    from fakefinder.platform.settings import ServeSettings
    from fakefinder.platform.store import JobStore

    class FakeCluster(Executor):
        name = "ray"

        def __init__(self, gpus):
            self.gpus, self.submitted = gpus, []

        def resources(self):
            return {"gpus": self.gpus}

        def submit(self, job_id, command, env, cwd, log_path, resources, imports=()):
            assert "timm" in imports  # what a detector's worker imports: a warm start imports it first
            self.submitted.append((command, resources))
            return f"ref-{job_id}"

        def poll(self, ref):
            return ExecStatus(True)

        def read_output(self, ref, offset):
            return "", offset

    for gpus, expected in ((2, [1, 2]), (0, [0, 0])):
        settings = ServeSettings(data_dir=tmp_path / str(gpus), devices=["cpu"])
        settings.make_dirs()
        store = JobStore(settings.database)
        cluster = FakeCluster(gpus)
        manager = JobManager(settings, store, cluster)
        for processes in (1, 2):
            spec = {"config": _config("deepfake_detector", num_processes=processes).model_dump(mode="json")}
            store.create("train", "deepfake_detector", None, spec, settings.jobs_dir)
        manager.tick()
        assert [r["num_gpus"] for _, r in cluster.submitted] == expected
        ddp = cluster.submitted[1][0]
        assert "torch.distributed.run" in ddp and "--nproc_per_node=2" in ddp


# ---------------------------------------------------------------------------------------------- a test-only
# kind


def test_the_test_only_kind_keeps_the_contract_and_asks_for_its_gpus(toy, tmp_path):
    from fakefinder.platform.uploads import describe_dataset

    test_every_kind_keeps_the_contract("toy_regressor", tmp_path)
    test_each_kinds_jobs_ask_for_the_gpus_their_device_names("toy_regressor")
    (tmp_path / "notes.txt").write_text("nothing to train on")
    assert "a toy_train.csv of x, y numbers" in describe_dataset(tmp_path)["note"]  # what it expects, listed


def test_a_kind_gets_its_section_with_defaults_did_you_mean_and_dispatch(toy, tmp_path):
    config = config_from_dict({"task": "toy_regressor", "toy": {"width": 7}})
    assert config.toy.width == 7 and config.toy.train.epochs == 3  # the kind's own default
    with pytest.raises(ConfigError, match=r"toy\.widht.*did you mean 'toy\.width'"):
        config_from_dict({"task": "toy_regressor", "toy": {"widht": 1}})
    from fakefinder.core.artifact import write_artifact

    write_artifact(tmp_path / "m", "toy_regressor", {}, [], {})
    (tmp_path / "m" / "train.json").write_text("{}")  # a decoy: files never decide the kind
    kind, _ = task_for_models([tmp_path / "m"])
    assert kind is toy["kind"]


def test_the_test_only_kind_through_the_python_api(toy):
    root = toy["root"] / "api"
    config = config_from_dict(
        {
            "task": "toy_regressor",
            "toy": {"data": str(toy["data"]), "train": {"output_dir": str(root / "run"), "epochs": 40}},
            "evaluate": {"output_dir": str(root / "eval")},
            "predict": {"inputs": [str(toy["data"] / "toy_test.csv")], "output": str(root / "predicted.csv")},
        }
    )
    trained = fakefinder.train(config)
    assert (
        trained.stopped == "completed" and trained.artifact == root / "run" / "model" and trained.steps == 40
    )
    weights = read_model(trained.artifact).weights()
    assert abs(float(weights["a"]) - 2.0) < 0.05 and abs(float(weights["b"]) + 1.0) < 0.05
    evaluated = fakefinder.evaluate(config)
    assert evaluated.metrics["models"]["run"]["mse"] < 1e-3 and evaluated.report_file.is_file()
    predicted = fakefinder.predict(config)
    assert len(predicted.table) == 40 and predicted.submission_path.is_file()
    both = config.model_copy(deep=True)
    both.predict.models = [str(trained.artifact), str(trained.artifact)]
    with pytest.raises(ConfigError, match=r"toy_regressor model runs alone \(no ensemble of 2\)"):
        fakefinder.predict(both)


def test_the_test_only_kind_through_the_cli(toy):
    from typer.testing import CliRunner

    from fakefinder.cli import app

    root = toy["root"] / "cli"
    common = [
        f"toy.data={toy['data']}",
        f"toy.train.output_dir={root / 'run'}",
        f"evaluate.output_dir={root / 'eval'}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "fakefinder", "train", "task=toy_regressor", *common],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FAKEFINDER_KINDS": "toy_regressor:KIND"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "toy_regressor: completed after 3 step(s)" in done.stdout
    runner = CliRunner()
    evaluated = runner.invoke(app, ["evaluate", "task=toy_regressor", *common])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((root / "eval" / "metrics.json").read_text())["kind"] == "toy_regressor"
    predicted = runner.invoke(
        app,
        [
            "predict",
            str(toy["data"] / "toy_test.csv"),
            "-m",
            str(root / "run" / "model"),
            "-o",
            str(root / "y.csv"),
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    assert (root / "y.csv").read_text().startswith("id,y")
    refused = runner.invoke(app, ["export", str(root / "run" / "model"), "-o", str(root / "x")])
    assert refused.exit_code == 2 and "toy_regressor models have no export" in refused.output


def test_the_test_only_kind_through_the_platform(toy):
    from fastapi.testclient import TestClient

    from conftest import toy_zip, wait_for_job
    from fakefinder.platform.app import create_app
    from fakefinder.platform.settings import ServeSettings

    settings = ServeSettings(
        data_dir=toy["root"] / "platform", devices=["cpu"], poll_interval_s=0.2, stop_timeout_s=60
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        listed = {k["name"]: k for k in client.get("/api/kinds").json()["kinds"]}
        assert listed["toy_regressor"]["config"]["toy"]["train"]["epochs"] == 3
        uploaded = client.post(
            "/api/datasets",
            data={"name": "numbers"},
            files={"file": ("numbers.zip", toy_zip(toy), "application/zip")},
        )
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["layout"] == "toy_csv" and uploaded.json()["kinds"] == ["toy_regressor"]

        started = client.post(
            "/api/training/start",
            json={
                "model_type": "toy_regressor",
                "dataset_path": "numbers",
                "epochs": 20,
                "step_seconds": 0.2,
            },
        )
        assert started.status_code == 200, started.text
        task_id = started.json()["task_id"]
        wait_for_job(
            client, task_id, states={"running"}, check=lambda j: (j["metrics"] or {}).get("epoch", 0) >= 2
        )
        assert client.post(f"/api/training/{task_id}/stop").status_code == 200
        stopped = wait_for_job(client, task_id)
        assert stopped["state"] == "cancelled" and stopped["resumable"], stopped
        done_before = stopped["metrics"]["epoch"]
        assert client.post(f"/api/training/{task_id}/resume").json()["state"] == "queued"
        job = wait_for_job(client, task_id, timeout=120)
        assert job["state"] == "succeeded", job["error"]
        epochs = [
            row["epoch"]
            for row in client.get(f"/api/training/{task_id}/metrics").json()["history"]
            if "epoch" in row
        ]
        assert epochs == list(range(1, 21)) and done_before < 20  # resumed where it stopped, each epoch once
        assert job["result"]["evaluation"]["metrics"]["models"]["run"]["mse"] < 1e-2
        artifact = client.get(f"/api/training/{task_id}/artifact")
        assert (
            artifact.status_code == 200
            and "model.json" in zipfile.ZipFile(io.BytesIO(artifact.content)).namelist()
        )


# ---------------------------------------------------------------------------------------------- the doors


def test_no_kind_or_kind_section_is_named_in_the_platform_the_cli_or_the_renderer():
    names = set(BUILT_IN) | {get_task(k).section for k in BUILT_IN if get_task(k).section}
    quoted = re.compile(r"""(["'`])(%s)(\1|\.)""" % "|".join(sorted(map(re.escape, names))))
    files = [
        SRC / "cli.py",
        SRC / "render.py",
        *sorted((SRC / "platform").rglob("*.py")),
        *sorted((SRC / "platform" / "static").rglob("*.js")),
        *sorted((SRC / "platform" / "static").glob("*.html")),
    ]
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if quoted.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_dx_llava_commands_are_only_what_the_generic_ones_cannot_do():
    import typer

    from fakefinder.cli import app

    group = typer.main.get_command(app)
    assert {"train", "evaluate", "predict", "export", "merge", "convert"} <= set(group.commands)
    assert set(group.commands["dx-llava"].commands) == {"make-data", "convert"}
