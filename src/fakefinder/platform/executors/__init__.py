"""Where job workers run, behind one interface: local processes (the default) or a Ray cluster's
job API. An executor starts the worker command, says whether it still runs and how it ended, and
hands back its output; the manager turns that output into the job's logs, metrics and state."""

from __future__ import annotations

from fakefinder.platform.executors.base import ExecStatus, Executor, describe_exit

__all__ = ["ExecStatus", "Executor", "describe_exit", "make_executor"]


def make_executor(settings) -> Executor:
    if settings.executor == "ray":
        from fakefinder.platform.executors.ray_jobs import RayJobsExecutor

        return RayJobsExecutor(settings.ray_address, stop_wait_s=settings.stop_timeout_s)
    from fakefinder.platform.executors.local import LocalExecutor

    return LocalExecutor(warm=settings.warm_workers)
