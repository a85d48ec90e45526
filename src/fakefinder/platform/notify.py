"""Webhooks: when a job ends (succeeded, failed, cancelled, interrupted) the server POSTs a JSON body
(the job, its kind, final metrics and a link to its page) to the webhooks the admin configured, signed
with HMAC-SHA256, retried with backoff. A job picks among the configured webhooks by name (`notify`);
it can never name a URL of its own, so no member can make the server call an address of their choosing.
Each webhook has its own outbox thread: a slow or failing receiver delays only its own deliveries,
never the queue or the other webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid

from fakefinder.platform.outbox import Outbox
from fakefinder.platform.paths import RequestError
from fakefinder.platform.store import JobStore

log = logging.getLogger("fakefinder.platform")
NOTIFIED = ("succeeded", "failed", "cancelled", "interrupted")
SIGNATURE = "X-Fakefinder-Signature"  # sha256=<hex HMAC-SHA256 of the body with the server's secret>


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def check_notify(value, webhooks: dict[str, str]) -> list[str] | None:
    """A request's `notify`: names of configured webhooks (None: all of them)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RequestError("notify: a list of webhook names", "notify")
    for name in value:
        if name not in webhooks:
            known = ", ".join(sorted(webhooks)) or "none are configured"
            raise RequestError(
                f"notify: {name[:80]!r} is not one of this server's webhooks ({known}); a job picks "
                "among the webhooks the admin configured (serve --webhook NAME=URL), never a URL of its own",
                "notify",
            )
    return list(dict.fromkeys(value))


class Webhooks:
    """Store observer: queues one signed delivery per webhook a finished job notifies."""

    def __init__(self, settings, store: JobStore) -> None:
        self.settings, self.store = settings, store
        self.outboxes = {name: Outbox(f"fakefinder-webhook-{name}") for name in settings.webhooks}

    def job_state(self, job_id: str, state: str) -> None:
        if state not in NOTIFIED or not self.outboxes:
            return
        job = self.store.get(job_id)
        if job is None:
            return
        chosen = (job["spec"] or {}).get("notify")
        if chosen is None and job["type"] == "predict":
            return  # one file's answer, asked for interactively: only when named
        names = list(self.outboxes) if chosen is None else [n for n in chosen if n in self.outboxes]
        if not names:
            return
        body = json.dumps(self.payload(job, state), default=str).encode()
        for name in names:
            self.outboxes[name].put(lambda name=name: self._deliver(name, job_id, state, body))

    def job_metrics(self, job_id: str, rows: list) -> None:
        return None

    def payload(self, job: dict, state: str) -> dict:
        public = (self.settings.public_url or "").rstrip("/")
        return {
            "event": f"job.{state}",
            "job": {
                "task_id": job["id"],
                "name": job["name"],
                "type": job["type"],
                "kind": job["kind"],
                "owner": job.get("owner"),
                "state": state,
                "created_at": job["created_at"],
                "started_at": job["started_at"],
                "finished_at": job["finished_at"],
                "error": job["error"],
            },
            "metrics": job["metrics"] or {},
            "url": f"{public}/#/jobs/{job['id']}" if public else None,
            "sent_at": time.time(),
        }

    def _deliver(self, name: str, job_id: str, state: str, body: bytes) -> None:
        import requests

        url = self.settings.webhooks[name]
        delivery = uuid.uuid4().hex
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "fakefinder-webhooks",
            "X-Fakefinder-Event": f"job.{state}",
            "X-Fakefinder-Delivery": delivery,
            SIGNATURE: sign(self.settings.webhook_secret, body),
        }
        attempts = self.settings.webhook_attempts
        for attempt in range(1, attempts + 1):
            try:  # never follow a redirect: the configured URL is the only address called
                response = requests.post(url, data=body, headers=headers, timeout=10, allow_redirects=False)
                outcome = f"HTTP {response.status_code}"
                if 200 <= response.status_code < 300:
                    self._note(job_id, f"webhook {name}: job.{state} delivered ({outcome}, try {attempt})")
                    return
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            if attempt < attempts:
                time.sleep(self.settings.webhook_backoff_s * 2 ** (attempt - 1))
        self._note(job_id, f"webhook {name}: job.{state} not delivered after {attempts} attempts ({outcome})")

    def _note(self, job_id: str, text: str) -> None:
        log.info("job %s: %s", job_id, text)
        if self.store.get(job_id) is not None:  # (it may have been deleted meanwhile)
            self.store.add_log(job_id, text)

    def close(self, timeout: float = 5.0) -> None:
        for outbox in self.outboxes.values():
            outbox.close(timeout)
