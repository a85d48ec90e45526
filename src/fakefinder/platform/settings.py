"""What a platform instance is configured with: its data folder, bind address, token, roots, slots,
limits."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fakefinder.core.errors import FakefinderError


class SettingsError(FakefinderError, ValueError):
    """A platform setting that cannot work (e.g. no token on a public address)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(
        default=Path("fakefinder-data"), description="The job store, datasets, job folders."
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    token: str | None = Field(
        default=None, description="API token; required when bound to a non-loopback host."
    )
    dataset_roots: list[Path] = Field(
        default_factory=list, description="Where datasets may be read (default: <data_dir>/datasets)."
    )
    output_roots: list[Path] = Field(
        default_factory=list, description="Where exports may be written (default: <data_dir>/exports)."
    )
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(
        default=None, description="The Ray cluster's job API, e.g. http://127.0.0.1:8265."
    )
    devices: list[str] | None = Field(default=None, description="Default: every CUDA device, else cpu.")
    jobs_per_device: int = Field(default=1, ge=1)
    warm_workers: bool = Field(
        default=True,
        description="Fork local workers from a process that has imported the ML libraries already (a job "
        "starts seconds sooner); off: each worker is a fresh `python -m fakefinder.platform.worker`.",
    )
    mlflow_uri: str | None = Field(
        default=None,
        description="Where jobs that name the mlflow tracker are logged (a team server); default a local "
        "store, <data_dir>/mlflow.db.",
    )
    webhooks: dict[str, str] = Field(
        default_factory=dict,
        description="Webhooks a finished job notifies, by name (a job picks among these names, never a URL).",
    )
    webhook_secret: str | None = Field(
        default=None, description="The HMAC-SHA256 key webhook bodies are signed with (needed with webhooks)."
    )
    public_url: str | None = Field(
        default=None, description="The server's address as users reach it: the link in a webhook's body."
    )
    webhook_attempts: int = Field(default=5, ge=1, le=20, description="Tries per delivery.")
    webhook_backoff_s: float = Field(
        default=2.0, ge=0, description="The wait before the 2nd try; it doubles after each failed try."
    )
    max_jobs_per_user: int | None = Field(
        default=None, ge=1, description="Queued and running jobs one user may have at once (None: no limit)."
    )
    stop_timeout_s: float = Field(
        default=120.0, gt=0, description="A graceful stop is forced after this long."
    )
    poll_interval_s: float = Field(default=0.5, gt=0)
    upload_max_bytes: int = Field(default=2 << 30, ge=1)
    upload_max_files: int = Field(default=100_000, ge=1)
    upload_max_ratio: float = Field(default=200.0, gt=1)

    def model_post_init(self, __context) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        if not self.dataset_roots:
            self.dataset_roots = [self.data_dir / "datasets"]
        if not self.output_roots:
            self.output_roots = [self.data_dir / "exports"]
        self.dataset_roots = [Path(p).resolve() for p in self.dataset_roots]
        if self.mlflow_uri is None:
            from fakefinder.engine.tracking import local_mlflow_uri

            self.mlflow_uri = local_mlflow_uri(self.data_dir)
        self.output_roots = [Path(p).resolve() for p in self.output_roots]
        if self.token is None:
            self.token = os.environ.get("FAKEFINDER_TOKEN") or None
        if not is_loopback(self.host) and not self.token and not self._store_has_tokens():
            raise SettingsError(
                f"serving on {self.host} (not loopback) needs an API token: pass --token, set "
                "FAKEFINDER_TOKEN, or add named tokens with `fakefinder serve token add`; every request "
                "then sends 'Authorization: Bearer <token>'"
            )
        if self.webhook_secret is None:
            self.webhook_secret = os.environ.get("FAKEFINDER_WEBHOOK_SECRET") or None
        for name, url in self.webhooks.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name):
                raise SettingsError(f"--webhook {name}=...: a name of letters, digits, '_', '.' or '-'")
            if not re.match(r"https?://[^/\s]+", url):
                raise SettingsError(f"--webhook {name}={url}: an http:// or https:// URL")
        if self.webhooks and not self.webhook_secret:
            raise SettingsError(
                "webhooks need a signing key: pass --webhook-secret or set FAKEFINDER_WEBHOOK_SECRET "
                "(receivers check the X-Fakefinder-Signature header with it)"
            )
        if self.executor == "ray" and not self.ray_address:
            raise SettingsError(
                "--executor ray needs --ray-address (the cluster's job API, e.g. http://127.0.0.1:8265)"
            )

    def _store_has_tokens(self) -> bool:
        from fakefinder.platform.store import JobStore

        return self.database.is_file() and JobStore(self.database).has_tokens()

    @property
    def datasets_dir(self) -> Path:
        return self.dataset_roots[0]

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def exports_dir(self) -> Path:
        return self.output_roots[0]

    @property
    def database(self) -> Path:
        return self.data_dir / "platform.sqlite"

    def make_dirs(self) -> None:
        for folder in (
            self.data_dir,
            self.jobs_dir,
            self.data_dir / "uploads",
            *self.dataset_roots,
            *self.output_roots,
        ):
            folder.mkdir(parents=True, exist_ok=True)
