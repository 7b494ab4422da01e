"""How long-running library code reports progress without printing.

Pipelines take an optional :class:`Observer`. The CLI passes one that renders with rich; library users
pass their own or nothing (:class:`NullObserver`). Observers must be cheap: the pipeline calls
``advance`` once per batch, never once per document.
"""

from __future__ import annotations

from typing import Any, Protocol


class Observer(Protocol):
    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        """A task begins (``"prepare"``, ``"tokenize"``, ``"train"``, ``"evaluate"`` …); ``total`` may be unknown."""

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        """Progress on ``task``; ``fields`` carry live numbers to show (``loss=2.1``, ``tokens_per_s=…``)."""

    def finish(self, task: str) -> None:
        """The task ended (successfully or not)."""

    def report(self, kind: str, data: Any) -> None:
        """A finished piece of information worth showing now (``"inspection"``, ``"eval_before"`` …)."""

    def warn(self, message: str) -> None:
        """A recoverable problem the user should see (also recorded in the stats/summary)."""


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
