"""One way to run a function over many files in worker processes.

Workers are spawned (never forked from a process that holds threads and models), get their own
process-wide settings (one share of the cores for torch, a fixed glibc mmap threshold so the heap
stays flat over thousands of files, denormals flushed) and hand freed memory back after each item.
A bounded number of items is in flight, so memory does not grow with the number of inputs. With
no workers (or one item) the function runs in the caller's process, whose settings stay its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any


def _start_worker(threads: int, initializer: Callable | None, initargs: tuple) -> None:
    import torch

    from fakefinder.core.memory import limit_heap_growth

    limit_heap_growth()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    if initializer is not None:
        initializer(*initargs)


def _call(fn: Callable, item: Any) -> Any:
    from fakefinder.core.memory import release_free_memory

    try:
        return fn(item)
    finally:
        release_free_memory()


def process_map(
    fn: Callable,
    items: Iterable,
    workers: int,
    initializer: Callable | None = None,
    initargs: tuple = (),
    ordered: bool = True,
    threads: int | None = None,
) -> Iterator:
    """`fn(item)` for each item: in input order (`ordered`), else as they finish. `fn` and
    `initializer` must be importable module-level functions (they run in spawned processes)."""
    items = list(items)
    if workers == 0 or len(items) <= 1:
        from fakefinder.core.process import flush_denormal

        if initializer is not None:
            initializer(*initargs)
        with flush_denormal():
            for item in items:
                yield _call(fn, item)
        return
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(threads, initializer, initargs),
    ) as pool:
        queue = iter(enumerate(items))
        running: dict[Future, int] = {}
        finished: dict[int, Any] = {}
        next_out = 0
        try:
            while True:
                while len(running) < 2 * workers:
                    entry = next(queue, None)
                    if entry is None:
                        break
                    running[pool.submit(_call, fn, entry[1])] = entry[0]
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    if not ordered:
                        yield future.result()
                        continue
                    finished[index] = future.result()
                while next_out in finished:
                    yield finished.pop(next_out)
                    next_out += 1
        except BaseException:
            for future in running:
                future.cancel()
            raise
