"""Property-based fuzz of every REST endpoint of `fakefinder serve`, generated from the app's own
OpenAPI schema (schemathesis, in-process ASGI, no job manager), plus targeted fuzz of request fields."""

from __future__ import annotations

import atexit
import collections
import json
import shutil
import tempfile
import time
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import TINY_JOB
from fakefinder.platform.app import create_app
from fakefinder.platform.samples import write_demo_datasets
from fakefinder.platform.settings import ServeSettings

TINY = dict(TINY_JOB)
LOCAL = "http://127.0.0.1:8000"  # a server without a token answers only requests addressed to this machine
CALL_TIMEOUT_S = (
    5.0  # an event stream of a job that never finishes is cut here (schemathesis keeps what came)
)
FUZZ = hypothesis.settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
TARGETED = hypothesis.settings(FUZZ, max_examples=100)  # one cheap request per example

# The schema is read at import (schemathesis parametrizes at collection), so the app is built here on
# a throwaway data folder; the `seeded` fixture fills it before the first test runs.
DATA_DIR = Path(tempfile.mkdtemp(prefix="fakefinder-fuzz-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)
# an admin token: what the fuzz sends may add named tokens (POST /api/tokens), which closes a server that
# had none; every call carries this one
ADMIN = {"Authorization": "Bearer fuzz-admin-token"}
APP = create_app(
    ServeSettings(data_dir=DATA_DIR, devices=["cpu"], poll_interval_s=0.2, token="fuzz-admin-token"),
    start_manager=False,
)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Host": "127.0.0.1:8000"})

# Real names the generated requests use now and then, filled by the `seeded` fixture. Deletes get
# their own sacrificial jobs and datasets, so the rest keep finding the others.
KNOWN: dict[str, list[str]] = {
    "jobs": [],
    "finished_jobs": [],
    "deletable_jobs": [],
    "job_files": [],
    "datasets": [],
    "deletable_datasets": [],
}


def _pool(operation, parameter: str) -> list[str]:
    deleting = operation.method.upper() == "DELETE"
    if parameter == "task_id":
        if deleting:
            return KNOWN["deletable_jobs"]
        # a stream of a queued job would run until the call's timeout: streams get finished jobs only
        return KNOWN["finished_jobs"] if operation.path.endswith("/stream") else KNOWN["jobs"]
    if parameter == "name":
        return KNOWN["deletable_datasets"] if deleting else KNOWN["datasets"]
    if parameter == "path":
        return KNOWN["job_files"]
    return []


@SCHEMA.hook
def flatmap_path_parameters(context, path_parameters):
    """Keep each generated path parameter, or put a real job id / dataset name / job file in its place."""
    strategy = st.just(path_parameters)
    if not isinstance(path_parameters, dict):
        return strategy
    for parameter in ("task_id", "name", "path"):
        pool = _pool(context.operation, parameter)
        if parameter in path_parameters and pool:
            strategy = strategy.flatmap(
                lambda params, p=parameter, pool=pool: st.one_of(
                    st.just(params), st.sampled_from(pool).map(lambda value: {**params, p: value})
                )
            )
    return strategy


@SCHEMA.hook
def flatmap_body(context, body):
    """A body naming a job (merge, evaluate, predict's form) names a real one now and then."""
    if not isinstance(body, dict) or not KNOWN["jobs"]:
        return st.just(body)
    keys = [key for key in ("task_id", "model_task_id") if key in body]
    if not keys:
        return st.just(body)
    return st.one_of(
        st.just(body), st.sampled_from(KNOWN["jobs"]).map(lambda value: {**body, keys[0]: value})
    )


def _fake_finished_job(store, name: str, epochs: int = 3) -> str:
    """A succeeded train job as the manager leaves one (state, logs, metrics, files, report), without
    running a worker: what the id-taking endpoints read."""
    job = store.create(
        "train",
        "deepfake_detector",
        name,
        {"config": {"task": "deepfake_detector"}},
        APP.state.settings.jobs_dir,
    )
    folder = Path(job["folder"])
    (folder / "run").mkdir(parents=True)
    (folder / "evaluate").mkdir()
    rows = [
        {"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "val_auc": 0.5 + e / 10}
        for e in range(1, epochs + 1)
    ]
    (folder / "run" / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "worker.log").write_text("training test_efficientnet\n")
    report = folder / "evaluate" / "report.html"
    report.write_text("<html><table><tr><td>auc</td></tr></table></html>")
    now = time.time()
    lines = [(now, f"epoch {e}/{epochs}") for e in range(1, epochs + 1)]
    store.add_output(
        job["id"],
        lines,
        [(now, "epoch", row) for row in rows],
        0,
        metrics=rows[-1],
        progress={"stage": "train", "epoch": epochs, "epochs": epochs, "fraction": 1.0},
    )
    store.update(
        job["id"],
        state="succeeded",
        started_at=now - 5,
        finished_at=now,
        attempts=1,
        result={"report": str(report), "stopped": "completed"},
    )
    return job["id"]


@pytest.fixture(scope="module", autouse=True)
def seeded():
    """Demo datasets, two scratch datasets to delete, finished jobs (some to delete), a queued and a
    cancelled job (the manager is not started: nothing runs)."""
    datasets = DATA_DIR / "datasets"
    write_demo_datasets(datasets)
    for scratch in ("scratch-a", "scratch-b"):
        shutil.copytree(datasets / "classes", datasets / scratch)
    store = APP.state.store
    with TestClient(APP, base_url=LOCAL, headers=ADMIN) as client:
        queued = client.post("/api/training/start", json={**TINY, "name": "queued"}).json()["task_id"]
        cancelled = client.post("/api/training/start", json={**TINY, "name": "cancelled"}).json()["task_id"]
        assert client.post(f"/api/training/{cancelled}/stop").json()["state"] == "cancelled"
    finished = [_fake_finished_job(store, f"finished-{i}") for i in range(2)]
    KNOWN.update(
        jobs=[*finished, queued, cancelled],
        finished_jobs=finished,
        deletable_jobs=[_fake_finished_job(store, f"to-delete-{i}") for i in range(3)] + [queued],
        job_files=["worker.log", "run/history.jsonl", "evaluate/report.html"],
        datasets=["faces", "classes", "dx"],
        deletable_datasets=["scratch-a", "scratch-b"],
    )
    yield KNOWN
    shutil.rmtree(DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="module")
def client(seeded):
    with TestClient(APP, base_url=LOCAL, raise_server_exceptions=False, headers=ADMIN) as client:
        yield client


# ------------------------------------------------------------------------------------------ custom checks
def errors_carry_detail_and_field(ctx, response, case) -> None:
    """The design's error shape: every 4xx is `{"detail": "...", "field": ...}` with a readable
    detail and a field that is null or names a request field (also the framework's own 400 / 405)."""
    if not 400 <= response.status_code < 500:
        return None
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"detail", "field"}, f"error body {body!r}"
    assert isinstance(body["detail"], str) and body["detail"] and not body["detail"].startswith(":"), (
        f"error detail {body['detail']!r} (status {response.status_code})"
    )
    field = body["field"]
    assert field is None or (isinstance(field, str) and field and not field.isdigit()), (
        f"error field {field!r} for {body['detail']!r} (status {response.status_code})"
    )
    return None


CALLS: collections.Counter = collections.Counter()  # (test, operation, status) of every fuzzed request


def _call(case, test: str):
    response = case.call(base_url=LOCAL, timeout=CALL_TIMEOUT_S, headers=ADMIN)
    CALLS[test, case.operation.label, response.status_code] += 1
    return response


# ------------------------------------------------------------------------------------------ the schema fuzz
@SCHEMA.parametrize()
@FUZZ
def test_no_request_gets_a_server_error(case):
    case.validate_response(_call(case, "server_error"), checks=[not_a_server_error])


# The contract: what the schema declares (status codes, media types, bodies) is what comes back, and
# errors have the documented shape. Positive-data acceptance is not checked: the bodies are declared
# as free-form objects (`dict[str, Any]`), so the schema cannot tell a valid request from `{}`. The
# Allow header of a 405 is the router's (Starlette names only the methods of the first route it matched).
@SCHEMA.parametrize()
@FUZZ
def test_responses_keep_the_documented_contract(case):
    case.validate_response(
        _call(case, "contract"),
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
            errors_carry_detail_and_field,
        ],
    )


# ------------------------------------------------------------------------------------------ targeted fuzz
LONG_PART = "a" * 300  # one path component over NAME_MAX (255)
DEEP_PATH = "/".join(["abcdefgh"] * 600)  # a path over PATH_MAX (4096)
REFUSED, ANSWERED = (
    (422,),
    (200, 422),
)  # a path setting is refused; a name that may be a path is not crashed on


@pytest.mark.parametrize("value", [LONG_PART, DEEP_PATH], ids=["long-name", "deep-path"])
@pytest.mark.parametrize(
    "make, expected",
    [
        pytest.param(
            lambda v: ("post", "/api/config/preview", {"json": {**TINY, "dataset_path": v}}),
            REFUSED,
            id="dataset_path",
        ),
        pytest.param(
            lambda v: ("post", "/api/config/preview", {"json": {**TINY, "base_model": v}}),
            ANSWERED,
            id="base_model",
        ),
        pytest.param(
            lambda v: ("post", "/api/config/preview", {"json": {"config": {"train": {"manifest": v}}}}),
            REFUSED,
            id="config.train.manifest",
        ),
        pytest.param(
            lambda v: ("post", "/api/evaluate", {"json": {"model_path": v}}),
            REFUSED,
            id="evaluate.model_path",
        ),
        pytest.param(
            lambda v: ("get", f"/api/training/{KNOWN['finished_jobs'][0]}/files/{v}", {}),
            (404, 422),
            id="job-file",
        ),
        pytest.param(lambda v: ("get", f"/api/datasets/{v}", {}), (404, 422), id="dataset-name"),
    ],
)
def test_overlong_paths_are_answered_not_crashed_on(client, make, expected, value):
    method, url, kwargs = make(value)
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code in expected, (
        f"{method.upper()} {url[:80]}...: {response.status_code} {response.text[:200]}"
    )


@pytest.mark.parametrize("after", [2**62, 2**63 - 1, 2**63, 10**30])
def test_log_cursors_of_any_size_get_an_answer(client, after):
    """SQLite integers stop at 2**63 - 1: a bigger cursor is refused or finds nothing, and a stream still
    ends."""
    task_id = KNOWN["finished_jobs"][0]
    logs = client.get(f"/api/training/{task_id}/logs", params={"after": after})
    assert logs.status_code in (200, 422), logs.text[:300]
    stream = client.get(f"/api/training/{task_id}/logs/stream", params={"after": after, "max_seconds": 5})
    assert stream.status_code in (200, 422), stream.text[:300]
    if stream.status_code == 200:  # a finished job: its state, then the end
        assert stream.text.rstrip().split("\n\n")[-1].startswith("event: end"), stream.text[-300:]


def test_non_finite_numbers_are_refused(client):
    """Python's JSON parser takes `Infinity` and `NaN`; a setting must not silently become one."""
    for number in ("Infinity", "-Infinity", "NaN"):
        body = json.dumps({**TINY, "learning_rate": 0.5})[:-1] + f', "train.weight_decay": {number}}}'
        response = client.post(
            "/api/config/preview", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, (
            f"train.weight_decay={number}: {response.status_code} {response.text[:200]}"
        )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["faces", "dx/tokenizer", "../x", "/etc", "", "a" * 260, "\x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
START_KEYS = st.sampled_from(
    [
        *TINY,
        "name",
        "evaluate",
        "num_gpus",
        "config",
        "train.lr",
        "train.epochs",
        "model.name",
        "data.datasets",
        "evaluate.models",
        "predict.inputs",
        "tokenizer",
        "dx_llava.train.lr",
        "not_a_key",
        "train.",
        ".",
        "",
    ]
)


@TARGETED
@example(
    key="evaluate.models", value=[None], model_type="deepfake_detector"
)  # a Path setting given a non-path
@given(
    key=START_KEYS,
    value=JSON_VALUES,
    model_type=st.sampled_from(["deepfake_detector", "image_classifier", "dx_llava"]),
)
def test_a_start_request_with_one_field_changed_gets_a_clear_answer(client, key, value, model_type):
    body = {**TINY, "model_type": model_type, key: value}
    response = client.post("/api/config/preview", json=body)
    assert response.status_code in (200, 422), (
        f"{key}={value!r}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code == 422:
        error = response.json()
        assert isinstance(error["detail"], str) and error["detail"] and "field" in error, error


@TARGETED
@given(
    extra=st.dictionaries(
        st.sampled_from(
            [
                "layout",
                "output_name",
                "shards",
                "name",
                "frames_per_video",
                "faces.size",
                "data.datasets",
                "prepare.num_workers",
                "detector",
                "prepare.output_dir",
                "bogus",
                "data.",
            ]
        ),
        JSON_VALUES,
        max_size=3,
    )
)
def test_a_prepare_request_gets_a_clear_answer(client, extra):
    # `output_name` is set unless fuzzed, and no job runs, so a 200 leaves only a queued prepare job
    body = {"layout": "folder", "output_name": "fuzz-out", **extra}
    response = client.post("/api/datasets/classes/prepare", json=body)
    assert response.status_code in (200, 404, 409, 422), (
        f"{body!r}: {response.status_code} {response.text[:300]}"
    )
    if response.status_code != 200:
        assert isinstance(response.json()["detail"], str), response.text


# Operations that answer 200 only for a real job or dataset: the hooks above must have reached them.
REACHED_WITH_REAL_NAMES = (
    "GET /api/training/{task_id}",
    "GET /api/training/{task_id}/metrics",
    "GET /api/training/{task_id}/logs",
    "GET /api/training/{task_id}/logs/stream",
    "GET /api/training/{task_id}/files",
    "GET /api/training/{task_id}/files/{path}",
    "GET /api/training/{task_id}/report",
    "DELETE /api/training/{task_id}",
    "GET /api/datasets/{name}",
    "DELETE /api/datasets/{name}",
)


def test_the_schema_fuzz_reached_real_jobs_and_datasets():
    """Runs after the schema fuzz (file order); prints what it sent. Nothing to check when it was
    deselected."""
    if not CALLS:
        return
    per_operation = collections.defaultdict(collections.Counter)
    for (test, label, status), count in CALLS.items():
        per_operation[label][status] += count
    print(f"\n{sum(CALLS.values())} fuzzed requests over {len(per_operation)} operations")
    for label in sorted(per_operation):
        print(f"  {label:45s} {dict(sorted(per_operation[label].items()))}")
    ran = {label for (_, label, _) in CALLS}
    missing = [
        label
        for label in REACHED_WITH_REAL_NAMES
        if label in ran and not any(200 <= status < 300 for status in per_operation[label])
    ]
    assert not missing, f"never answered 2xx (no real id reached them): {missing}"
