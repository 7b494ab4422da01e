"""How batches are scheduled: in this process, or on a pool of worker processes, results in corpus order.

Batches are cut by the driver and results are consumed in the order the batches were made, so the
output does not depend on the number of workers. At most ``2 × workers`` batches are in flight, which
bounds memory whatever the input size.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from qckit.components import Document
from qckit.prepare.work import Batch, BatchResult, Stage, process

# Worker processes hold their stage in this module-level slot; it is set once per worker process by
# the pool initializer and never touched in the driver process.
_WORKER_STAGE: Stage | None = None


def _init_worker(stage: Stage) -> None:
    global _WORKER_STAGE
    _WORKER_STAGE = stage


def _work(batch: Batch) -> BatchResult:
    assert _WORKER_STAGE is not None
    return process(_WORKER_STAGE, batch)


def _warm_up(stage: Stage) -> None:
    """Components build lookup tables and load models lazily; build them once in the driver so that
    every forked worker inherits them instead of building its own."""
    warm = [Document("Bonjour, c'est une phrase pour préchauffer les composants.", "<warm-up>", 1)]
    with contextlib.suppress(Exception):  # a component that fails will fail again, with its position
        process(stage, Batch(0, 0, "<warm-up>", None, 1, warm, 64))


def local_results(stage: Stage, batches: Iterator[Batch], workers: int) -> Iterator[BatchResult]:
    """Process ``batches`` on ``workers`` processes (in this one when ``workers`` is 1); yield the
    results in the order of ``batches``."""
    if workers == 1:
        for batch in batches:
            yield process(stage, batch)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "fork":
        _warm_up(stage)
    ctx = multiprocessing.get_context(method)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(stage,)) as pool:
        pending: deque[Future] = deque()
        try:
            for batch in batches:
                pending.append(pool.submit(_work, batch))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
