"""The ``local`` executor: a pool of worker processes on this machine, results in item order."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, ClassVar

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
#: allocations between two collections of the young generation in a worker process (Python's default: 700)
_GC_YOUNG = 50_000
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from <malloc.h>

# A worker process holds the run's shared object (the components) in this module-level slot; it is
# set once per worker process by the pool initializer and never touched in the driver process.
_SHARED: Any = None


def _init_worker(shared: Any, parent: int) -> None:
    global _SHARED
    _SHARED = shared
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the driver, which stops the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the driver's handler: the pool ends workers with it
    _die_with(parent)
    tune_worker_process()


def tune_worker_process(keep_freed_memory: bool = True, gc_young: int = _GC_YOUNG) -> None:
    """What a worker process does to its allocator and garbage collector before its first batch, once it
    holds the warmed-up components (``bench/profile_prepare.py`` does the same, to profile a worker).

    What the worker inherited (modules, components, lookup tables) lives as long as the worker: the
    garbage collector need not walk it again at each full collection. A batch allocates some hundred
    thousand objects (documents, their dicts) and no reference cycle: collecting the young generation
    every ``gc_young`` allocations instead of every 700 saves ~4 % of a worker's CPU
    (``bench/profile_prepare.py --gc-threshold 700`` against the default)."""
    if keep_freed_memory:
        _keep_freed_memory()
    gc.freeze()
    gc.set_threshold(gc_young, *gc.get_threshold()[1:])


def _keep_freed_memory() -> None:
    """Let glibc reuse freed memory instead of returning it to the system at once.

    A batch allocates and frees arrays of a few megabytes; by default glibc maps each one afresh and
    unmaps it on free (or trims the heap), so every batch pays its page faults again. Keeping up to 64 MB
    of freed memory per worker removes most of them (``bench/profile_prepare.py``: about 6 % of the CPU).
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 16 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)


def _die_with(parent: int) -> None:
    """End this worker as soon as the driver process is gone, even after a ``kill -9`` of the driver:
    Linux kills it at once (``PR_SET_PDEATHSIG``); elsewhere a thread checks every half second."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the driver died before the line above
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="qckit-parent-watch", daemon=True).start()


def _call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_SHARED, item)


class LocalExecutor:
    """Runs the work on this machine: ``[prepare] workers`` worker processes (0: one per core), forked
    where the platform allows it so that they inherit the components the driver already loaded; with
    one worker everything runs in the driver process. At most ``2 × workers`` items (batches of
    ``[prepare] batch_bytes``) are in flight, which bounds memory whatever the input size. Workers
    ignore Ctrl-C (the driver stops them) and end within a second when the driver dies."""

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
        pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(shared, os.getpid())
        )
        pending: deque[Future] = deque()
        finished = False
        try:
            for item in items:
                pending.append(pool.submit(_call, fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:
                # An error or an interruption: drop what has not started and do not wait here. Killing the
                # workers could cut a result in the middle of the shared result pipe and hang the pool;
                # a running batch ends on its own (a worker also ends when this process dies).
                pool.shutdown(wait=False, cancel_futures=True)

    def stop(self) -> None:
        pass  # the pool lives and ends inside map
