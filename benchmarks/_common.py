"""Helpers shared by the benchmark scripts: CPU contention from other processes, waiting for idle."""

from __future__ import annotations

import os
import resource
import time

_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have spent busy since boot (from /proc/stat)."""
    try:
        with open("/proc/stat") as handle:
            fields = handle.readline().split()
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal ...
    busy = sum(int(fields[i]) for i in (1, 2, 3, 6, 7))
    return busy / _TICK


def own_cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


class Contention:
    """`with Contention() as c: ...` then `c.other_cpu_s`: CPU seconds other processes used meanwhile.

    A benchmark on a shared machine is only trustworthy when this stays near zero.
    """

    def __enter__(self) -> Contention:
        self._machine, self._own = machine_busy_seconds(), own_cpu_seconds()
        self.other_cpu_s = 0.0
        return self

    def __exit__(self, *exc) -> None:
        machine = machine_busy_seconds() - self._machine
        own = own_cpu_seconds() - self._own
        # tick granularity and kernel threads make tiny negative/positive noise; clamp at 0
        self.other_cpu_s = max(0.0, machine - own)


def wait_idle(max_seconds: float, threshold_cores: float = 0.3, window: float = 2.0) -> float:
    """Block until the whole machine used < `threshold_cores` over one `window` (at most
    `max_seconds`); returns the seconds waited. 0 disables."""
    if max_seconds <= 0:
        return 0.0
    started = time.perf_counter()
    while time.perf_counter() - started < max_seconds:
        before = machine_busy_seconds()
        time.sleep(window)
        if (machine_busy_seconds() - before) / window < threshold_cores:
            break
    return time.perf_counter() - started


def run_quietly(fn, wait: float, retries: int, tolerance: float = 0.05):
    """Run `fn()` after waiting for idle; when other processes used more than `tolerance` of the
    machine's CPU capacity meanwhile, run it again (at most `retries` more times) and keep the
    least disturbed run. Returns (result, other_cpu_s, seconds_waited, attempts)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    best = None
    waited = 0.0
    attempts = 0
    for _ in range(retries + 1):
        waited += wait_idle(wait)
        attempts += 1
        started = time.perf_counter()
        with Contention() as contention:
            result = fn()
        wall = time.perf_counter() - started
        if best is None or contention.other_cpu_s < best[1]:
            best = (result, contention.other_cpu_s)
        if contention.other_cpu_s <= tolerance * cpus * wall:
            break
    return best[0], best[1], waited, attempts
