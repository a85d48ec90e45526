"""The platform's store: one SQLite file holding every job (spec, state, progress, result, owner), its
log lines and its metric history, the API tokens (their SHA-256 hashes only) and who uploaded each
dataset. Safe from many threads (a connection each) and across restarts."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from fakefinder.platform.paths import RequestError

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
FINISHED = ("succeeded", "failed", "cancelled", "interrupted")
JOB_TYPES = ("train", "prepare", "evaluate", "predict", "merge", "sweep")
ROLES = ("viewer", "member", "admin")  # each may do what the ones before it may
ACTIVE = ("queued", "running")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, number INTEGER NOT NULL, name TEXT, type TEXT NOT NULL, kind TEXT,
    state TEXT NOT NULL, spec TEXT NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    progress TEXT NOT NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}', result TEXT, error TEXT,
    device TEXT, executor TEXT, ref TEXT, output_offset INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, stop_requested REAL, resume INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER, folder TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, number);
CREATE TABLE IF NOT EXISTS logs (job_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL, text TEXT
NOT NULL,
                                 PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS metrics (job_id TEXT NOT NULL, seq INTEGER NOT NULL, time REAL NOT NULL,
                                    stage TEXT, data TEXT NOT NULL, PRIMARY KEY (job_id, seq));
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
                                   created_at REAL NOT NULL, created_by TEXT, last_used_at REAL,
                                   revoked_at REAL);
CREATE TABLE IF NOT EXISTS datasets (name TEXT PRIMARY KEY, owner TEXT, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trials (sweep TEXT NOT NULL, number INTEGER NOT NULL, job_id TEXT,
                                   params TEXT NOT NULL, state TEXT NOT NULL, value REAL, last REAL,
                                   best REAL, step INTEGER, seq INTEGER NOT NULL DEFAULT 0,
                                   told INTEGER NOT NULL DEFAULT 0, note TEXT, PRIMARY KEY (sweep, number));
"""
# columns a store written by an earlier version lacks; `parent`: the sweep a trial belongs to
_ADDED_COLUMNS = {"jobs": {"owner": "TEXT", "parent": "TEXT"}}
_JSON_COLUMNS = ("spec", "progress", "metrics", "result")


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write = threading.Lock()  # one writer at a time inside this process
        # told of each job's new state and new metric rows (`job_state(id, state)`, `job_metrics(id, rows)`);
        # they must not block: the platform's trackers and notifications queue their work
        self.observers: list = []
        with self._conn() as conn:
            conn.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
                for column, kind in columns.items():
                    if column not in have:  # rows from before it: NULL (jobs: the admins')
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _run(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._write:
            return self._conn().execute(sql, args)

    # ------------------------------------------------------------------ jobs
    @staticmethod
    def new_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)

    def create(
        self,
        type: str,
        kind: str | None,
        name: str | None,
        spec: dict,
        folder_root: Path,
        job_id: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
        parent: str | None = None,
    ) -> dict:
        """A new queued job of `owner` (`parent`: the sweep it is a trial of); refused (LimitReached)
        when the owner already has `limit` jobs queued or running, checked in the same transaction."""
        job_id = job_id or self.new_id()
        with self._write:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if limit is not None:
                    _check_limit(conn, owner, limit)
                number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM jobs").fetchone()[0]
                conn.execute(
                    "INSERT INTO jobs (id, number, name, type, kind, state, spec, created_at, folder, owner, "
                    "parent) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        number,
                        name or f"{kind or type}-{number}",
                        type,
                        kind,
                        json.dumps(spec),
                        time.time(),
                        str(Path(folder_root) / job_id),
                        owner,
                        parent,
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return self.get(job_id)

    def get(self, job_id: str) -> dict | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, state: str | None = None, kind: str | None = None, type: str | None = None) -> list[dict]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        for column, value in (("state", state), ("kind", kind), ("type", type)):
            if value:
                sql += f" AND {column} = ?"
                args.append(value)
        return [_job(r) for r in self._conn().execute(sql + " ORDER BY number DESC", args)]

    def children(self, parent: str) -> list[dict]:
        """A sweep's trials (and its evaluation), in the order they were made."""
        rows = self._conn().execute("SELECT * FROM jobs WHERE parent = ? ORDER BY number", (parent,))
        return [_job(r) for r in rows]

    def in_state(self, *states: str) -> list[dict]:
        marks = ",".join("?" * len(states))
        rows = self._conn().execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY number", states)
        return [_job(r) for r in rows]

    def update(self, job_id: str, **fields: Any) -> None:
        if not fields:
            return
        values = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        cursor = self._run(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, job_id))
        if cursor.rowcount and "state" in fields:
            self._tell("job_state", job_id, fields["state"])

    def transition(self, job_id: str, from_states: tuple[str, ...], **fields: Any) -> bool:
        """Update only while the job is in one of `from_states` (atomically); whether it was."""
        values = [json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()]
        sets = ", ".join(f"{k} = ?" for k in fields)
        marks = ",".join("?" * len(from_states))
        cursor = self._run(
            f"UPDATE jobs SET {sets} WHERE id = ? AND state IN ({marks})", (*values, job_id, *from_states)
        )
        if cursor.rowcount == 1 and "state" in fields:
            self._tell("job_state", job_id, fields["state"])
        return cursor.rowcount == 1

    def _tell(self, what: str, *args) -> None:
        for observer in self.observers:
            try:
                getattr(observer, what)(*args)
            except Exception:  # an observer's trouble never fails the store's caller
                logging.getLogger("fakefinder.platform").exception("observer %s", what)

    def check_limit(self, owner: str | None, limit: int | None) -> None:
        """LimitReached when `owner` already has `limit` jobs queued or running."""
        if limit is not None:
            _check_limit(self._conn(), owner, limit)

    def delete(self, job_id: str) -> None:
        with self._write:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            for table, column in (
                ("logs", "job_id"),
                ("metrics", "job_id"),
                ("trials", "sweep"),
                ("jobs", "id"),
            ):
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (job_id,))
            conn.execute("COMMIT")

    # ------------------------------------------------------------------ logs and metrics
    def add_output(
        self,
        job_id: str,
        lines: list[tuple[float, str]],
        rows: list[tuple[float, str, dict]],
        offset: int,
        **fields: Any,
    ) -> None:
        """New log lines and metric rows of a job, its new output offset and state fields: one transaction."""
        with self._write:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                if lines:
                    first = conn.execute(
                        "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE job_id = ?", (job_id,)
                    ).fetchone()[0]
                    conn.executemany(
                        "INSERT INTO logs VALUES (?, ?, ?, ?)",
                        [(job_id, first + i + 1, t, text) for i, (t, text) in enumerate(lines)],
                    )
                if rows:
                    first = conn.execute(
                        "SELECT COALESCE(MAX(seq), 0) FROM metrics WHERE job_id = ?", (job_id,)
                    ).fetchone()[0]
                    conn.executemany(
                        "INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                        [
                            (job_id, first + i + 1, t, stage, json.dumps(data))
                            for i, (t, stage, data) in enumerate(rows)
                        ],
                    )
                fields["output_offset"] = offset
                values = [
                    json.dumps(v) if k in _JSON_COLUMNS and v is not None else v for k, v in fields.items()
                ]
                conn.execute(
                    f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?", (*values, job_id)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if rows:
            self._tell("job_metrics", job_id, rows)

    def add_log(self, job_id: str, text: str) -> None:
        """One line in a job's log from the server itself (not from its worker's output)."""
        with self._write:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM logs WHERE job_id = ?", (job_id,))
                conn.execute(
                    "INSERT INTO logs VALUES (?, ?, ?, ?)", (job_id, seq.fetchone()[0], time.time(), text)
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def logs(self, job_id: str, after: int = 0, tail: int | None = None) -> list[dict]:
        if tail is not None:
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, time, text FROM logs WHERE job_id = ? AND seq > ? ORDER BY seq DESC LIMIT ?",
                    (job_id, after, tail),
                )
                .fetchall()[::-1]
            )
        else:
            rows = (
                self._conn()
                .execute(
                    "SELECT seq, time, text FROM logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT 5000",
                    (job_id, after),
                )
                .fetchall()
            )
        return [dict(r) for r in rows]

    def last_log_seq(self, job_id: str) -> int:
        return (
            self._conn()
            .execute("SELECT COALESCE(MAX(seq), 0) FROM logs WHERE job_id = ?", (job_id,))
            .fetchone()[0]
        )

    def metrics(self, job_id: str, after: int = 0) -> list[dict]:
        rows = (
            self._conn()
            .execute(
                "SELECT seq, time, stage, data FROM metrics WHERE job_id = ? AND seq > ? ORDER BY seq",
                (job_id, after),
            )
            .fetchall()
        )
        return [
            {"seq": r["seq"], "time": r["time"], "stage": r["stage"], **json.loads(r["data"])} for r in rows
        ]

    # ------------------------------------------------------------------ sweep trials
    def add_trial(
        self, sweep: str, number: int, job_id: str | None, params: dict, state: str, **fields
    ) -> None:
        """A sweep's trial `number` (Optuna's) and the job that runs it."""
        columns = {
            "sweep": sweep,
            "number": number,
            "job_id": job_id,
            "params": json.dumps(params),
            "state": state,
        }
        columns.update(fields)
        marks = ", ".join("?" * len(columns))
        self._run(f"INSERT INTO trials ({', '.join(columns)}) VALUES ({marks})", tuple(columns.values()))

    def trials(self, sweep: str) -> list[dict]:
        rows = self._conn().execute("SELECT * FROM trials WHERE sweep = ? ORDER BY number", (sweep,))
        return [{**dict(r), "params": json.loads(r["params"]), "told": bool(r["told"])} for r in rows]

    def update_trial(self, sweep: str, number: int, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._run(
            f"UPDATE trials SET {sets} WHERE sweep = ? AND number = ?", (*fields.values(), sweep, number)
        )

    # ------------------------------------------------------------------ tokens and dataset owners
    def add_token(self, name: str, role: str, created_by: str | None = None) -> str:
        """A new random token for `name` with `role`; returned once, stored as its SHA-256 hash only."""
        if role not in ROLES:
            raise TokenError(f"role: {role!r} is not one of {', '.join(ROLES)}", "role")
        token = "ff_" + secrets.token_urlsafe(32)
        with self._write:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                taken = conn.execute(
                    "SELECT 1 FROM tokens WHERE name = ? AND revoked_at IS NULL", (name,)
                ).fetchone()
                if taken:
                    raise TokenError(f"name: a token named {name!r} exists (revoke it first)", "name", 409)
                conn.execute(
                    "INSERT INTO tokens (hash, name, role, created_at, created_by) VALUES (?, ?, ?, ?, ?)",
                    (token_hash(token), name, role, time.time(), created_by),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return token

    def tokens(self, include_revoked: bool = False) -> list[dict]:
        sql = "SELECT name, role, created_at, created_by, last_used_at, revoked_at FROM tokens"
        sql += "" if include_revoked else " WHERE revoked_at IS NULL"
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY created_at")]

    def revoke_token(self, name: str) -> bool:
        """Whether an active token of that name was revoked."""
        cursor = self._run(
            "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (time.time(), name)
        )
        return cursor.rowcount > 0

    def has_tokens(self) -> bool:
        return (
            self._conn().execute("SELECT 1 FROM tokens WHERE revoked_at IS NULL LIMIT 1").fetchone()
            is not None
        )

    def token_owner(self, token: str) -> dict | None:
        """{name, role} of an active token (its last use noted, at most once a minute), or None."""
        digest = token_hash(token)
        row = (
            self._conn()
            .execute(
                "SELECT name, role, last_used_at FROM tokens WHERE hash = ? AND revoked_at IS NULL", (digest,)
            )
            .fetchone()
        )
        if row is None:
            return None
        now = time.time()
        if row["last_used_at"] is None or now - row["last_used_at"] > 60:
            self._run("UPDATE tokens SET last_used_at = ? WHERE hash = ?", (now, digest))
        return {"name": row["name"], "role": row["role"]}

    def set_dataset_owner(self, name: str, owner: str | None) -> None:
        self._run(
            "INSERT OR REPLACE INTO datasets (name, owner, created_at) VALUES (?, ?, ?)",
            (name, owner, time.time()),
        )

    def dataset_owners(self) -> dict[str, str | None]:
        return {r["name"]: r["owner"] for r in self._conn().execute("SELECT name, owner FROM datasets")}

    def forget_dataset(self, name: str) -> None:
        self._run("DELETE FROM datasets WHERE name = ?", (name,))


class TokenError(RequestError):
    """A token that cannot be added as asked."""


class LimitReached(RequestError):
    """A user's queued and running jobs are at the server's per-user limit (429)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "owner", 429)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_limit(conn: sqlite3.Connection, owner: str | None, limit: int) -> None:
    """A sweep itself holds no device: its queued and running trials are what count."""
    marks = ",".join("?" * len(ACTIVE))
    counted = f"type != 'sweep' AND state IN ({marks})"
    if owner is None:
        count = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE owner IS NULL AND {counted}", ACTIVE)
    else:
        count = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND {counted}", (owner, *ACTIVE))
    active = count.fetchone()[0]
    if active >= limit:
        raise LimitReached(
            f"{owner or 'admin'} has {active} job(s) queued or running: at most {limit} per user on this "
            "server (--max-jobs-per-user); wait for one to finish or stop one"
        )


def _job(row: sqlite3.Row) -> dict:
    job = dict(row)
    for column in _JSON_COLUMNS:
        job[column] = (
            json.loads(job[column]) if job[column] else ({} if column in ("progress", "metrics") else None)
        )
    return job
