"""The ``local`` executor: a pool of worker processes on this machine, results in item order."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, ClassVar

# A worker process holds the run's shared object (the components) in this module-level slot; it is
# set once per worker process by the pool initializer and never touched in the driver process.
_SHARED: Any = None


def _init_worker(shared: Any) -> None:
    global _SHARED
    _SHARED = shared


def _call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_SHARED, item)


class LocalExecutor:
    """Runs the work on this machine: ``[prepare] workers`` worker processes (0: one per core), forked
    where the platform allows it so that they inherit the components the driver already loaded; with
    one worker everything runs in the driver process. At most ``2 × workers`` items (batches of
    ``[prepare] batch_bytes``) are in flight, which bounds memory whatever the input size."""

    name: ClassVar[str] = "local"
    reads_inputs: ClassVar[bool] = False

    def __init__(self) -> None:
        self._workers = 1

    def start(self, workers: int) -> int:
        self._workers = workers or os.cpu_count() or 1
        return self._workers

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], shared: Any) -> Iterator[Any]:
        workers = self._workers
        if workers == 1:
            for item in items:
                yield fn(shared, item)
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(shared,)
        ) as pool:
            pending: deque[Future] = deque()
            try:
                for item in items:
                    pending.append(pool.submit(_call, fn, item))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()

    def stop(self) -> None:
        pass  # the pool lives and ends inside map
