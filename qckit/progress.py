"""How long-running library code reports progress without printing.

Pipelines take an optional :class:`Observer`. The CLI passes one that renders with rich; library users
pass their own or nothing (:class:`NullObserver`). Observers must be cheap: the pipeline calls
``advance`` once per batch, never once per document.

Two kinds of task go through the same calls:

* a **counted task** (``"prepare"``, ``"train"``, an evaluation's requests) has a ``total`` and is
  advanced; ``advance(task, 0, **fields)`` reports new numbers with no progress (the train stage does it
  once per logging step: an observer writing a log prints one line for each such call);
* a **phase** (``"loading model"``, ``"checking document isolation"``) has no total and is never advanced:
  :func:`phase` starts and finishes it around a block, so a user sees what a long silent step is doing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol


class Observer(Protocol):
    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        """A task begins (``"prepare"``, ``"tokenize"``, ``"train"``, ``"evaluate"`` …); ``total`` may be unknown."""

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        """Progress on ``task``; ``fields`` carry live numbers to show (``loss=2.1``, ``tokens_per_s=…``).

        ``amount=0`` with ``fields`` is a report of new numbers (a logging step), not progress."""

    def finish(self, task: str) -> None:
        """The task ended (successfully or not)."""

    def report(self, kind: str, data: Any) -> None:
        """A finished piece of information worth showing now (``"inspection"``, ``"eval_before"`` …)."""

    def warn(self, message: str) -> None:
        """A recoverable problem the user should see (also recorded in the stats/summary)."""


@contextlib.contextmanager
def phase(observer: Observer, name: str) -> Iterator[None]:
    """Show ``name`` (``"loading model"``) as a phase of ``observer`` while the block runs."""
    observer.start(name)
    try:
        yield
    finally:
        observer.finish(name)


def eta_seconds(elapsed: float, done: float, total: float | None) -> float | None:
    """Seconds left for ``total`` units at the rate measured so far (``done`` units in ``elapsed`` s).

    ``None`` until a unit is done or without a total. The rate is the mean over the whole task, not a
    recent window: a window shorter than one step (rich's default is 30 s) leaves slow steps with no ETA.
    """
    if total is None or done <= 0 or elapsed <= 0:
        return None
    return max(total - done, 0) * elapsed / done


class NullObserver:
    """Ignores everything. The default for library use."""

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        pass

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def report(self, kind: str, data: Any) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


class RecordingObserver(NullObserver):
    """Keeps every call in ``events`` (for tests and for embedding pipelines that want the raw stream)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        self.events.append(("start", task, total))

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        self.events.append(("advance", task, (amount, fields)))

    def finish(self, task: str) -> None:
        self.events.append(("finish", task, None))

    def report(self, kind: str, data: Any) -> None:
        self.events.append(("report", kind, data))

    def warn(self, message: str) -> None:
        self.events.append(("warn", "", message))
