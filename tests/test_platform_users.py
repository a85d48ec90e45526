"""Users of a shared server: named tokens with roles (admin, member, viewer), who may change what, the
per-user job limit, and the limits every request meets at the door. In-process (no job runs: the
queue's manager is not started, so started jobs stay queued)."""

from __future__ import annotations

import hashlib
import io
import sqlite3
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import TINY_JOB
from fakefinder.platform.app import create_app
from fakefinder.platform.samples import write_demo_datasets
from fakefinder.platform.settings import ServeSettings
from fakefinder.platform.store import ROLES, JobStore

LOCAL = "http://127.0.0.1:8000"
ROOT_TOKEN = "root-s3cret"  # --token: an admin
TINY = {**TINY_JOB, "evaluate": False}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server with --token and three named tokens, at most 2 queued or running jobs per user."""
    data = tmp_path_factory.mktemp("users")
    write_demo_datasets(data / "datasets")
    store = JobStore(data / "platform.sqlite")
    tokens = {
        name: store.add_token(name, role)
        for name, role in (("alice", "member"), ("bob", "member"), ("vera", "viewer"), ("ada", "admin"))
    }
    tokens["root"] = ROOT_TOKEN
    settings = ServeSettings(data_dir=data, devices=["cpu"], token=ROOT_TOKEN, max_jobs_per_user=2)
    app = create_app(settings, start_manager=False)
    with TestClient(app, base_url=LOCAL) as client:
        yield {"client": client, "app": app, "tokens": tokens, "data": data, "store": app.state.store}


def as_(server, who: str) -> dict:
    return {"Authorization": f"Bearer {server['tokens'][who]}"}


def start(server, who: str, **extra):
    return server["client"].post("/api/training/start", json={**TINY, **extra}, headers=as_(server, who))


def test_each_role_is_told_who_it_is(server):
    for who, role in (("alice", "member"), ("vera", "viewer"), ("ada", "admin"), ("root", "admin")):
        me = server["client"].get("/api/me", headers=as_(server, who)).json()
        assert me == {"name": "admin" if who == "root" else who, "role": role}


def test_a_member_changes_only_their_own_jobs_and_a_viewer_only_reads(server):
    client = server["client"]
    response = start(server, "alice", name="alice's")
    assert response.status_code == 200, response.text
    job = response.json()["task_id"]
    assert client.get(f"/api/training/{job}", headers=as_(server, "vera")).json()["owner"] == "alice"
    listed = client.get("/api/training", headers=as_(server, "bob")).json()["jobs"]
    assert job in [j["task_id"] for j in listed]  # members see every job

    for path in (f"/api/training/{job}/stop", f"/api/training/{job}/resume"):
        refused = client.post(path, headers=as_(server, "bob"))
        assert refused.status_code == 403 and refused.json()["field"] == "authorization", refused.text
        assert "belongs to alice" in refused.json()["detail"]
    assert client.delete(f"/api/training/{job}", headers=as_(server, "bob")).status_code == 403
    assert client.get(f"/api/training/{job}", headers=as_(server, "bob")).json()["state"] == "queued"

    refused = start(server, "vera")
    assert refused.status_code == 403 and "vera is a viewer" in refused.json()["detail"]
    assert client.post(f"/api/training/{job}/stop", headers=as_(server, "vera")).status_code == 403
    preview = client.post("/api/config/preview", json=TINY, headers=as_(server, "vera"))
    assert preview.status_code == 200  # reading what a request would run changes nothing

    assert (
        client.post(f"/api/training/{job}/stop", headers=as_(server, "alice")).json()["state"] == "cancelled"
    )
    assert client.delete(f"/api/training/{job}", headers=as_(server, "ada")).status_code == 200  # an admin


def test_jobs_from_before_owners_belong_to_the_admins(server):
    store = server["store"]
    old = store.create("train", "deepfake_detector", "old", {"config": {}}, server["data"] / "jobs")
    assert old["owner"] is None
    refused = server["client"].post(f"/api/training/{old['id']}/stop", headers=as_(server, "alice"))
    assert refused.status_code == 403 and "belongs to the admins" in refused.json()["detail"]
    stopped = server["client"].post(f"/api/training/{old['id']}/stop", headers=as_(server, "root"))
    assert stopped.json()["state"] == "cancelled"


def test_a_store_written_before_owners_opens_with_its_jobs_the_admins(tmp_path):
    path = tmp_path / "platform.sqlite"
    with sqlite3.connect(path) as conn:  # the jobs table as it was, one job in it
        conn.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, number INTEGER NOT NULL, name TEXT, type TEXT NOT NULL, "
            "kind TEXT, state TEXT NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, "
            "finished_at REAL, progress TEXT NOT NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}', "
            "result TEXT, error TEXT, device TEXT, executor TEXT, ref TEXT, output_offset INTEGER NOT NULL "
            "DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, stop_requested REAL, resume INTEGER NOT NULL "
            "DEFAULT 0, exit_code INTEGER, folder TEXT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO jobs (id, number, type, state, spec, created_at, folder) "
            "VALUES ('j1', 1, 'train', 'succeeded', '{}', 0, '/x')"
        )
    assert JobStore(path).get("j1")["owner"] is None


def test_missing_wrong_and_revoked_tokens_are_refused(server):
    client = server["client"]
    assert client.get("/api/training").status_code == 401
    assert client.get("/api/training", headers={"Authorization": "Bearer nope"}).status_code == 401
    made = client.post("/api/tokens", json={"name": "temp", "role": "viewer"}, headers=as_(server, "ada"))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["name"] == "temp"
    assert client.delete("/api/tokens/temp", headers=as_(server, "ada")).json() == {"revoked": "temp"}
    revoked = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert revoked.status_code == 401 and revoked.json()["field"] == "authorization"


def test_only_admins_manage_tokens_and_only_hashes_are_stored(server):
    client = server["client"]
    for who in ("alice", "vera"):
        assert client.get("/api/tokens", headers=as_(server, who)).status_code == 403
        assert client.post("/api/tokens", json={"name": "x"}, headers=as_(server, who)).status_code == 403
    listed = client.get("/api/tokens", headers=as_(server, "ada")).json()["tokens"]
    assert {t["name"]: t["role"] for t in listed}.items() >= {
        "alice": "member",
        "vera": "viewer",
        "ada": "admin",
    }.items()
    assert all("token" not in t and "hash" not in t for t in listed)
    twice = client.post("/api/tokens", json={"name": "alice"}, headers=as_(server, "ada"))
    assert twice.status_code == 409 and twice.json()["field"] == "name"
    bad = client.post("/api/tokens", json={"name": "a b", "role": "member"}, headers=as_(server, "ada"))
    assert bad.status_code == 422 and bad.json()["field"] == "name"
    bad = client.post("/api/tokens", json={"name": "carl", "role": "owner"}, headers=as_(server, "ada"))
    assert bad.status_code == 422 and bad.json()["field"] == "role"

    raw = (server["data"] / "platform.sqlite").read_bytes()
    raw += b"".join(p.read_bytes() for p in server["data"].glob("platform.sqlite-*"))  # WAL
    for name in ("alice", "bob", "vera", "ada"):
        token = server["tokens"][name]
        assert token.encode() not in raw
        assert hashlib.sha256(token.encode()).hexdigest().encode() in raw


def test_every_route_refuses_a_missing_token_and_a_role_below_its_own(server):
    """Each API route (from the OpenAPI schema) without a token: 401; with a role below the one it
    needs: 403; with the role it needs, past the role check (a 404 for the made-up ids here)."""
    client = server["client"]

    def needed(method: str, template: str) -> str:
        if template.startswith("/api/tokens"):
            return "admin"
        return "viewer" if method == "GET" or template.endswith("/preview") else "member"

    checked = 0
    for template, operations in server["app"].openapi()["paths"].items():
        path = template.replace("{path}", "x").replace("{task_id}", "none").replace("{name}", "none")
        for method in (m.upper() for m in operations):
            kwargs = {"json": {}} if method in ("POST", "PUT") else {}
            assert client.request(method, path, **kwargs).status_code == 401, (method, path)
            for who in ("vera", "alice", "ada"):
                role = {"vera": "viewer", "alice": "member", "ada": "admin"}[who]
                answer = client.request(method, path, headers=as_(server, who), **kwargs)
                allowed = ROLES.index(role) >= ROLES.index(needed(method, template))
                assert (answer.status_code == 403) != allowed, (who, method, path, answer.text)
                if not allowed:
                    assert f"{who} is a {role}" in answer.json()["detail"]
            checked += 1
    assert checked >= 30


def test_the_per_user_limit_counts_queued_and_running_jobs(server):
    client, store = server["client"], server["store"]
    jobs_before = len(store.list())
    ids = [start(server, "bob", name=f"bob {i}").json()["task_id"] for i in range(2)]
    refused = start(server, "bob", name="one too many")
    assert refused.status_code == 429 and refused.json()["field"] == "owner", refused.text
    assert "at most 2 per user" in refused.json()["detail"]
    assert len(store.list()) == jobs_before + 2  # nothing queued for the refused one

    image = next((server["data"] / "datasets" / "faces").rglob("*.jpg")).read_bytes()
    folders = set((server["data"] / "jobs").iterdir()) if (server["data"] / "jobs").exists() else set()
    refused = client.post(
        "/api/predict",
        data={"model_task_id": ids[0]},
        files={"file": ("a.jpg", image, "image/jpeg")},
        headers=as_(server, "bob"),
    )
    assert refused.status_code == 429 and refused.json()["field"] == "owner"
    assert set((server["data"] / "jobs").iterdir()) == folders

    assert start(server, "alice", name="alice has room").status_code == 200  # the limit is per user
    client.post(f"/api/training/{ids[0]}/stop", headers=as_(server, "bob"))
    again = start(server, "bob", name="room again")
    assert again.status_code == 200, again.text
    refused = client.post(f"/api/training/{ids[0]}/resume", headers=as_(server, "bob"))
    assert refused.status_code == 429  # a resumed job counts too
    for task_id in (ids[1], again.json()["task_id"]):
        client.post(f"/api/training/{task_id}/stop", headers=as_(server, "bob"))


def _zip_of(source: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in source.rglob("*"):
            if path.is_file():
                archive.write(path, f"set/{path.relative_to(source)}")
    return buffer.getvalue()


def test_members_delete_only_the_datasets_they_uploaded(server):
    client = server["client"]
    body = _zip_of(server["data"] / "datasets" / "classes")
    made = client.post(
        "/api/datasets",
        data={"name": "alices"},
        files={"file": ("c.zip", body)},
        headers=as_(server, "alice"),
    )
    assert made.status_code == 201, made.text
    assert made.json()["owner"] == "alice"
    owners = {
        d["name"]: d["owner"]
        for d in client.get("/api/datasets", headers=as_(server, "vera")).json()["datasets"]
    }
    assert owners["alices"] == "alice" and owners["classes"] is None  # the demo data: the admins'
    assert client.delete("/api/datasets/alices", headers=as_(server, "bob")).status_code == 403
    assert client.delete("/api/datasets/classes", headers=as_(server, "alice")).status_code == 403
    refused = client.post(
        "/api/datasets", data={"name": "v"}, files={"file": ("c.zip", body)}, headers=as_(server, "vera")
    )
    assert refused.status_code == 403
    assert client.delete("/api/datasets/alices", headers=as_(server, "alice")).status_code == 200


@pytest.mark.parametrize(
    ("body", "field", "status"),
    [
        ({**TINY, "base_model": "x" * 10_000_000}, "body", 413),  # the whole body over 1 MiB
        ({**TINY, "base_model": "x" * 5000}, "base_model", 422),
        ({**TINY, "name": "n" * 5000}, "name", 422),
        ({**TINY, "augment.jpeg_quality": list(range(2000))}, "augment.jpeg_quality", 422),
        ({"config": {"train": {"output_dir": "o" * 5000}}}, "config.train.output_dir", 422),
    ],
    ids=["10MB", "model", "name", "list", "nested"],
)
def test_oversized_fields_are_refused_at_the_door_with_nothing_queued(server, body, field, status):
    store = server["store"]
    before = len(store.list())
    refused = server["client"].post("/api/training/start", json=body, headers=as_(server, "alice"))
    assert refused.status_code == status and refused.json()["field"] == field, refused.text[:300]
    assert len(store.list()) == before


def test_oversized_form_fields_are_refused(server):
    image = next((server["data"] / "datasets" / "faces").rglob("*.jpg")).read_bytes()
    refused = server["client"].post(
        "/api/predict",
        data={"model_task_id": "x" * 500},
        files={"file": ("a.jpg", image, "image/jpeg")},
        headers=as_(server, "alice"),
    )
    assert refused.status_code == 422 and refused.json()["field"] == "model_task_id"


def test_the_cli_adds_lists_and_revokes_tokens(tmp_path):
    from fakefinder.cli import app

    runner = CliRunner()
    added = runner.invoke(
        app, ["serve", "token", "add", "dora", "--role", "viewer", "--data-dir", str(tmp_path)]
    )
    assert added.exit_code == 0, added.output
    token = added.stdout.strip().splitlines()[0]
    assert token.startswith("ff_") and len(token) > 40
    store = JobStore(tmp_path / "platform.sqlite")
    assert store.token_owner(token) == {"name": "dora", "role": "viewer"}
    listed = runner.invoke(app, ["serve", "token", "list", "--data-dir", str(tmp_path)])
    assert "dora" in listed.stdout and "viewer" in listed.stdout and token not in listed.stdout
    assert (
        runner.invoke(app, ["serve", "token", "revoke", "dora", "--data-dir", str(tmp_path)]).exit_code == 0
    )
    assert store.token_owner(token) is None
    again = runner.invoke(app, ["serve", "token", "revoke", "dora", "--data-dir", str(tmp_path)])
    assert again.exit_code != 0 and "no active token" in again.output
    bad = runner.invoke(app, ["serve", "token", "add", "eve", "--role", "root", "--data-dir", str(tmp_path)])
    assert bad.exit_code != 0 and "role" in bad.output


def test_a_public_address_is_served_with_named_tokens_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKEFINDER_TOKEN", raising=False)
    with pytest.raises(ValueError, match="serve token add"):
        ServeSettings(data_dir=tmp_path, host="0.0.0.0")
    JobStore(tmp_path / "platform.sqlite").add_token("ops", "admin")
    assert ServeSettings(data_dir=tmp_path, host="0.0.0.0").token is None


PLATFORM_PAGE = Path(__file__).resolve().parents[1] / "docs" / "platform.md"


def test_the_platform_guides_user_requests_run_on_a_live_server(tmp_path):
    """The guide's `users` block, run as shown (bash and curl) in a folder whose `fakefinder-data` a live
    `fakefinder serve` uses; only the port differs from the guide's localhost:8000."""
    import re
    import subprocess
    import sys

    from conftest import start_server, stop_server

    (block,) = re.findall(r'```bash title="users"\n(.*?)```', PLATFORM_PAGE.read_text(), flags=re.S)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    server = start_server(tmp_path / "fakefinder-data")
    try:
        port = server.url.rsplit(":", 1)[1]
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.replace("localhost:8000", f"127.0.0.1:{port}")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stop_server(server)
    assert done.returncode == 0, (done.stdout, done.stderr)
    out = done.stdout
    assert '{"name":"ada","role":"admin"}' in out  # /api/me with the token the CLI made
    assert re.search(r'"name":"alice","role":"member","token":"ff_[\w-]{40,}"', out)  # made by the API
    listed = out.split('{"revoked":"alice"}')[1]  # the CLI's list, after the revoke: ada alone
    assert re.search(r"ada\s+admin\s+created", listed) and "alice" not in listed
