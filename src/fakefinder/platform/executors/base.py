"""The interface every executor implements: start a worker command, say whether it runs and how
it ended, hand back its output, stop it gracefully or by force."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ExecStatus:
    running: bool
    returncode: int | None = None  # None while running, or when unknown
    reason: str = ""  # why it ended, when it did not end by itself


class Executor:
    name = "base"

    def submit(
        self,
        job_id: str,
        command: list[str],
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        resources: dict,
        imports: tuple[str, ...] = (),
    ) -> str:
        """Start `command`; returns the reference the job store keeps to find it again. `imports`:
        libraries the worker will import, for an executor that starts workers warm."""
        raise NotImplementedError

    def poll(self, ref: str) -> ExecStatus:
        raise NotImplementedError

    def read_output(self, ref: str, offset: int) -> tuple[str, int]:
        """The output after `offset` and the new offset."""
        raise NotImplementedError

    def stop(self, ref: str) -> None:
        """Ask the worker to save and stop (SIGTERM)."""
        raise NotImplementedError

    def kill(self, ref: str) -> None:
        raise NotImplementedError

    def resources(self) -> dict:
        """What the executor's machines offer jobs: {"gpus": how many GPUs in all}."""
        return {"gpus": 0}

    def close(self) -> None:
        pass


def describe_exit(returncode: int | None) -> str:
    """A worker's end in words: a signal by name (SIGKILL usually means the kernel's OOM killer)."""
    if returncode is None:
        return "the worker's end is unknown"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = (
            " (killed from outside, e.g. by the out-of-memory killer or kill -9)" if name == "SIGKILL" else ""
        )
        return f"the worker was killed by {name}{hint}"
    return f"the worker exited with code {returncode}"
