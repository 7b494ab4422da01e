"""The rich rendering of pipeline progress and reports (the CLI's :class:`~qckit.progress.Observer`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from qckit import report


class RichObserver:
    """Renders pipeline progress and reports on a rich console."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
                disable=not self.console.is_terminal,
            )
            self.progress.start()
        self.tasks[task] = self.progress.add_task(task, total=total, info="")

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        if self.progress is None or task not in self.tasks:
            return
        info = "  ".join(f"{k}={report._n(v)}" for k, v in fields.items())
        self.progress.update(self.tasks[task], advance=amount, info=info)

    def finish(self, task: str) -> None:
        if self.progress is None or task not in self.tasks:
            return
        self.progress.stop_task(self.tasks.pop(task))
        if not self.tasks:
            self.progress.stop()
            self.progress = None

    def report(self, kind: str, data: Any) -> None:
        if kind == "inspection":
            self.console.print(report.inspection_report(data))
        elif kind == "summary":
            self.console.print(report.train_summary_report(data))
        elif kind in ("eval_before", "eval", "eval_after") and isinstance(data, dict):
            self.console.print(report.eval_lines(kind.replace("_", " "), data))
        elif isinstance(data, dict):
            self.console.print(report.key_values(kind, data))
        else:
            self.console.print(report.message_line(kind, "bold", data), soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(report.message_line("warning", "yellow", message), soft_wrap=True)
