"""The ``ray`` executor: the prepare work as Ray tasks on a local or remote cluster (``qckit[ray]``)."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

# Ray's failures that are not the task's own (the worker process, its node or its memory went away):
# these are retried by Ray up to max_retries times, then reported with the item's name.
_SYSTEM_FAILURES = (
    "WorkerCrashedError",
    "NodeDiedError",
    "OutOfMemoryError",
    "LocalRayletDiedError",
    "ObjectLostError",
    "OwnerDiedError",
    "TaskCancelledError",
)


def _call(fn: Callable[[Any, Any], Any], shared: Any, item: Any) -> Any:
    return fn(shared, item)


class RayExecutor:
    """Runs the work as Ray tasks, shard by shard: each input file, or byte range of ``shard_bytes`` of
    a big one, is read and processed by a task on whichever node has a free CPU; the task writes its
    results and a completion record into the run's work directory (under the output directory, which
    every node must see, like the inputs). The output is byte-identical to the ``local`` executor's.

    ``address``: empty to use the Ray instance this process already joined (``ray.init``) or else to
    start a local one on this machine's cores (``[prepare] workers`` of them when set) and shut it down
    at the end; ``"auto"`` for the cluster this machine is part of (``ray start``, ``RAY_ADDRESS``);
    ``"ray://host:10001"`` for Ray Client. ``num_cpus_per_task``: CPUs Ray reserves per task.
    ``max_retries``: how often a task is retried when its worker process or node dies; an error raised
    by a component is not retried (it would fail again) and is reported at once with its position. At
    most ``2 ×`` the number of parallel tasks are in flight.
    """

    name: ClassVar[str] = "ray"
    reads_inputs: ClassVar[bool] = True

    def __init__(
        self,
        address: str = "",
        num_cpus_per_task: float = 1.0,
        shard_bytes: int = 64 << 20,
        max_retries: int = 3,
    ) -> None:
        if importlib.util.find_spec("ray") is None:
            raise ValueError("needs Ray: pip install 'qckit[ray]'")
        if not num_cpus_per_task > 0:
            raise ValueError("num_cpus_per_task must be more than 0")
        if shard_bytes < 1024:
            raise ValueError("shard_bytes must be at least 1024")
        if max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        self.address = address
        self.num_cpus_per_task = float(num_cpus_per_task)
        self.shard_bytes = int(shard_bytes)
        self.max_retries = int(max_retries)
        self._owned = False
        self._parallel = 1

    def start(self, workers: int) -> int:
        import ray

        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, **options)
            self._owned = True
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self._parallel = workers or max(1, int(cpus // self.num_cpus_per_task))
        return self._parallel

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], shared: Any) -> Iterator[Any]:
        import ray

        shared_ref = ray.put(shared)
        task = ray.remote(_call).options(
            num_cpus=self.num_cpus_per_task, max_retries=self.max_retries, retry_exceptions=False
        )
        pending: deque[tuple[Any, Any]] = deque()
        try:
            for item in items:
                pending.append((item, task.remote(fn, shared_ref, item)))
                if len(pending) >= 2 * self._parallel:
                    yield self._get(*pending.popleft())
            while pending:
                yield self._get(*pending.popleft())
        finally:
            for _, ref in pending:
                ray.cancel(ref, force=True)

    def _get(self, item: Any, ref: Any) -> Any:
        import ray

        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # fn raised: its own exception, unchanged
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise RuntimeError(f"{item} failed: {_first_line(exc)}") from None
        except ray.exceptions.RayError as exc:
            if type(exc).__name__ in _SYSTEM_FAILURES:
                tries = self.max_retries + 1
                raise RuntimeError(
                    f"{item} failed {tries} time{'s' if tries > 1 else ''}: {type(exc).__name__}: {_first_line(exc)}"
                ) from None
            raise RuntimeError(f"{item} failed: {type(exc).__name__}: {_first_line(exc)}") from None

    def stop(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
