"""Webhooks: a finished job's signed notice reaches the receivers the admin configured, a failing
receiver is retried with backoff while the queue and the other webhooks go on, and a job can only pick
among the configured names (an unlisted URL is refused with nothing queued). Real worker processes."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient

from conftest import TINY_JOB, wait_for_job
from fakefinder.platform.app import create_app
from fakefinder.platform.notify import SIGNATURE
from fakefinder.platform.samples import write_demo_datasets
from fakefinder.platform.settings import ServeSettings

SECRET = "whsec-test"
LOCAL = "http://127.0.0.1:8000"
TINY = {**TINY_JOB, "evaluate": False, "epochs": 1}


class Receiver:
    """A local HTTP receiver: /ok answers 200, /flaky 500 twice then 200, /stuck hangs until `release`
    is set (at most 60 s), then answers 500."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    earlier = sum(c["path"] == self.path for c in receiver.calls)
                    receiver.calls.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path == "/stuck":
                    receiver.release.wait(60)
                status = 200 if self.path == "/ok" or (self.path == "/flaky" and earlier >= 2) else 500
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def to(self, path: str) -> list[dict]:
        with self.lock:
            return [c for c in self.calls if c["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    receiver = Receiver()
    data = tmp_path_factory.mktemp("notify")
    write_demo_datasets(data / "datasets")
    settings = ServeSettings(
        data_dir=data,
        devices=["cpu"],
        poll_interval_s=0.2,
        webhooks={name: f"{receiver.url}/{name}" for name in ("ok", "flaky", "stuck")},
        webhook_secret=SECRET,
        public_url="https://fakefinder.example.org/",
        webhook_attempts=3,
        webhook_backoff_s=0.2,
    )
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        yield client, receiver
    receiver.close()


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def test_a_job_may_name_only_configured_webhooks(setup):
    client, _ = setup
    before = len(client.get("/api/training").json()["jobs"])
    for notify in (["http://169.254.169.254/latest/meta-data"], ["ok", "elsewhere"], "ok"):
        refused = client.post("/api/training/start", json={**TINY, "notify": notify})
        assert refused.status_code == 422 and refused.json()["field"] == "notify", refused.text
    assert "never a URL" in refused.json()["detail"] or "list of webhook names" in refused.json()["detail"]
    assert len(client.get("/api/training").json()["jobs"]) == before


def test_a_failing_receiver_is_retried_while_the_queue_and_other_webhooks_go_on(setup):
    client, receiver = setup
    first = client.post("/api/training/start", json={**TINY, "name": "to stuck", "notify": ["stuck"]}).json()
    wait_for_job(client, first["task_id"], timeout=120)
    wait_until(lambda: receiver.to("/stuck"), 10, "the first try at /stuck")  # it hangs there
    second = client.post("/api/training/start", json={**TINY, "name": "to flaky", "notify": ["flaky", "ok"]})
    job = wait_for_job(client, second.json()["task_id"], timeout=120)  # the queue went on
    assert job["state"] == "succeeded", job["error"]
    wait_until(lambda: len(receiver.to("/flaky")) == 3, 30, "the third try at /flaky")  # retried
    ok = wait_until(lambda: receiver.to("/ok"), 10, "the delivery to /ok")
    assert not receiver.release.is_set() and len(receiver.to("/stuck")) == 1  # still hanging meanwhile
    receiver.release.set()

    tries = receiver.to("/flaky")
    for call in (*tries, *ok):
        expected = "sha256=" + hmac.new(SECRET.encode(), call["body"], hashlib.sha256).hexdigest()
        assert hmac.compare_digest(call["headers"][SIGNATURE], expected)
    assert len({c["headers"]["X-Fakefinder-Delivery"] for c in tries}) == 1  # one delivery, three tries
    body = json.loads(tries[-1]["body"])
    assert body["event"] == "job.succeeded" and body["job"]["task_id"] == job["task_id"]
    assert body["job"]["kind"] == "deepfake_detector" and body["job"]["owner"] == "local"
    assert body["metrics"]["val_loss"] == pytest.approx(job["metrics"]["val_loss"])
    assert body["url"] == f"https://fakefinder.example.org/#/jobs/{job['task_id']}"
    notes = client.get(f"/api/training/{job['task_id']}/logs?tail=50").json()["lines"]
    assert any("webhook flaky: job.succeeded delivered (HTTP 200, try 3)" in n["text"] for n in notes)

    wait_until(lambda: len(receiver.to("/stuck")) == 3, 60, "three tries at /stuck")
    logs = wait_until(
        lambda: [
            line["text"]
            for line in client.get(f"/api/training/{first['task_id']}/logs?tail=50").json()["lines"]
            if "webhook stuck" in line["text"]
        ],
        15,
        "the job's note of the failed delivery",
    )
    assert "job.succeeded not delivered after 3 attempts" in logs[-1]


def test_a_tampered_body_fails_the_signature_check():
    body = b'{"event": "job.succeeded"}'
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    from fakefinder.platform.notify import sign

    assert sign(SECRET, body) == good and sign(SECRET, body + b" ") != good and sign("other", body) != good


def test_webhooks_need_a_secret_and_http_urls(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKEFINDER_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValueError, match="signing key"):
        ServeSettings(data_dir=tmp_path, webhooks={"team": "https://hooks.example.org/x"})
    with pytest.raises(ValueError, match="http:// or https://"):
        ServeSettings(data_dir=tmp_path, webhooks={"team": "file:///etc/passwd"}, webhook_secret="s")
