"""`prepare` fanned out over a Ray cluster: one Ray task per shard, then one merge; run inside a Ray
job's driver (the process a Ray job starts). The output folder must be on storage all nodes share."""

from __future__ import annotations

import os
from typing import Any

from fakefinder.core.errors import FakefinderError
from fakefinder.core.events import as_events


class RayPrepareError(FakefinderError):
    """A shard of a Ray prepare failed, or no Ray cluster could be reached."""


def _prepare_shard(config_tree: dict[str, Any], index: int, shards: int) -> dict[str, Any]:
    """One shard in a Ray task: the config comes as plain data and the task returns its counts."""
    from fakefinder.config import config_from_dict
    from fakefinder.faces.prepare import prepare

    config = config_from_dict(config_tree, f"prepare shard {index}/{shards}")
    warnings: list[str] = []

    def collect(event) -> None:
        if event.type == "warning":
            warnings.append(event.message)

    result = prepare(config, shard=(index, shards), progress=False, events=collect)
    return {
        "shard": index,
        "processed": result.processed,
        "skipped": result.skipped,
        "summary": result.summary,
        "warnings": warnings,
    }


def _connect(address: str | None) -> bool:
    """Join the cluster (the driver of a Ray job finds it in RAY_ADDRESS); True when this call did."""
    import ray

    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or "auto"
    try:
        ray.init(address=target)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayPrepareError(f"cannot connect to the Ray cluster at {target!r}: {exc}") from exc
    return True


def _failure_text(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the task's own exception
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(exc).__name__}: {exc}".strip()


def prepare_on_ray(
    config,
    shards: int,
    events=None,
    *,
    address: str | None = None,
    num_cpus: float | None = None,
    num_gpus: float = 0,
):
    """Run `prepare(config, shard=(i, shards))` for every i as parallel Ray tasks, wait for all, then
    merge (`prepare(config, merge_only=True)`) and return the merged `PrepareResult`.

    Each task asks Ray for `num_cpus` (default: `prepare.num_workers`, at least 1) and `num_gpus`.
    Progress goes to `events`: a `prepare` stage with one step per finished shard, each shard's
    counts as a log line and its warnings (once each), then the merge's result. When a shard fails,
    the others still finish (their records stay: a rerun redoes only what is missing) and a
    `RayPrepareError` names every failed shard with its message.
    """
    import ray

    from fakefinder.faces.prepare import prepare

    events = as_events(events)
    if shards < 1:
        raise RayPrepareError(f"shards must be at least 1, got {shards}")
    cpus = num_cpus if num_cpus is not None else max(1, config.prepare.num_workers)
    connected_here = _connect(address)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=num_gpus, max_retries=0)(_prepare_shard)
        tree = config.model_dump(mode="json")
        pending = {task.remote(tree, index, shards): index for index in range(shards)}
        events.log(f"prepare: {shards} shards submitted to Ray ({cpus} CPU, {num_gpus} GPU each)", "prepare")
        stage = events.stage("prepare", total=shards)
        failures: dict[int, str] = {}
        seen_warnings: set[str] = set()
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task error, a crashed worker, a lost node ...
                        failures[index] = _failure_text(exc)
                        events.warning(f"prepare shard {index}/{shards} failed: {failures[index]}", "prepare")
                        stage.advance(message=f"shard {index}/{shards} failed")
                        continue
                    for warning in outcome["warnings"]:
                        if warning not in seen_warnings:
                            seen_warnings.add(warning)
                            events.warning(warning, "prepare")
                    summary = outcome["summary"]
                    events.log(
                        f"prepare shard {index}/{shards}: {outcome['processed']} processed, "
                        f"{outcome['skipped']} already done, {summary['items_failed']} failed, "
                        f"{summary['crops']} crops",
                        "prepare",
                    )
                    stage.advance(message=f"shard {index}/{shards} done")
        finally:
            events.end(stage)
        if failures:
            lines = "; ".join(f"shard {index}/{shards}: {text}" for index, text in sorted(failures.items()))
            raise RayPrepareError(
                f"{len(failures)} of {shards} prepare shards failed ({lines}); finished "
                "shards are kept, a rerun redoes only the rest"
            )
        return prepare(config, merge_only=True, events=events)
    finally:
        if connected_here:
            ray.shutdown()
