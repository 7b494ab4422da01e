"""The CLI's :class:`~qckit.progress.Observer`: live rich progress on a terminal, plain lines in a log.

On a terminal, tasks and phases are rich progress rows (a spinner for phases) with an ETA from the mean
step time. When the output is not a terminal (``nohup``, Slurm, CI, ``| tee``), rich's live display would
show nothing until the end, so every event becomes one timestamped line instead: a phase when it starts
and ends, each logging step of training (:meth:`RichObserver.advance` with ``amount=0``), and a counted
task's progress at most every ``interval`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from qckit import report
from qckit.progress import eta_seconds

#: seconds between two plain progress lines of one counted task (logging steps always print)
PLAIN_INTERVAL_S = 30.0


def clock_time(seconds: float | None) -> str:
    """``H:MM:SS`` (``-:--:--`` when unknown)."""
    if seconds is None:
        return "-:--:--"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def amount(value: float, unit: str) -> str:
    """``value`` in ``unit`` for a person (bytes as MB)."""
    if unit == "B":
        return f"{value / 1e6:,.1f} MB" if value >= 1e5 else f"{value / 1e3:,.1f} kB"
    return f"{report._n(value)} {unit}".rstrip()


def live_fields(fields: dict[str, Any]) -> str:
    """``loss=2.31  lr=0.001  …``: the live numbers of an advance, in the order given."""
    return "  ".join(f"{k}={report._n(v)}" for k, v in fields.items() if k != "resumed")


class _CountColumn(ProgressColumn):
    """``done/total`` of a counted task; nothing for a phase."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        return Text(f"{report._n(task.completed)}/{report._n(task.total)}", style="progress.download")


class _EtaColumn(ProgressColumn):
    """The time left at the task's mean rate since it started (units resumed from a checkpoint excluded)."""

    def render(self, task: Task) -> Text:
        if task.total is None or task.finished:
            return Text("")
        base = task.fields.get("base", 0)
        eta = eta_seconds(task.elapsed or 0.0, task.completed - base, task.total - base)
        return Text(f"ETA {clock_time(eta)}", style="progress.remaining")


@dataclass
class _PlainTask:
    total: float | None
    unit: str
    started: float
    done: float = 0.0
    base: float = 0.0  # units resumed from an earlier run: not part of the measured rate
    last_line: float = 0.0
    fields: dict[str, Any] = field(default_factory=dict)

    def eta(self, now: float) -> float | None:
        total = None if self.total is None else self.total - self.base
        return eta_seconds(now - self.started, self.done - self.base, total)


class RichObserver:
    """Renders pipeline progress and reports on a rich console.

    ``live`` (default: whether the console is a terminal) picks rich progress rows or plain lines;
    ``clock`` and ``interval`` are for tests.
    """

    def __init__(
        self,
        console: Console,
        *,
        live: bool | None = None,
        interval: float = PLAIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.console = console
        self.live = console.is_terminal if live is None else live
        self.interval = interval
        self.clock = clock
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.plain: dict[str, _PlainTask] = {}

    # -- the Observer protocol --------------------------------------------------------------------

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        if not self.live:
            now = self.clock()
            self.plain[task] = _PlainTask(total, unit, started=now, last_line=now)
            size = f" ({amount(total, unit)})" if total is not None else ""
            self._line(f"{task}{size} …")
            return
        if self.progress is None:
            self.progress = Progress(
                SpinnerColumn(finished_text="✓"),
                TextColumn("{task.description}", markup=False, style="bold"),
                BarColumn(),
                _CountColumn(),
                TextColumn("{task.fields[info]}", markup=False),
                TimeElapsedColumn(),
                _EtaColumn(),
                console=self.console,
                transient=False,
                get_time=self.clock,
            )
            self.progress.start()
        self.tasks[task] = self.progress.add_task(task, total=total, info="", base=0)

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        if not self.live:
            self._advance_plain(task, amount, fields)
            return
        if self.progress is None or task not in self.tasks:
            return
        task_id = self.tasks[task]
        update: dict[str, Any] = {"advance": amount}
        if fields.get("resumed"):
            done = self.progress.tasks[task_id].completed if task_id in self.progress.task_ids else 0
            update["base"] = done + amount
        info = live_fields(fields)
        if info:  # a progress-only advance keeps the last numbers shown
            update["info"] = info
        self.progress.update(task_id, **update)

    def finish(self, task: str) -> None:
        if not self.live:
            state = self.plain.pop(task, None)
            if state is not None:
                took = clock_time(self.clock() - state.started)
                if state.total is None:
                    self._line(f"{task} done in {took}")
                else:
                    self._line(f"{task} finished: {self._count(state)} in {took}")
            return
        if self.progress is None or task not in self.tasks:
            return
        task_id = self.tasks.pop(task)
        if self.progress.tasks[self.progress.task_ids.index(task_id)].total is None:  # a phase: done
            self.progress.update(task_id, total=1, completed=1)
        self.progress.stop_task(task_id)
        if not self.tasks:
            self.progress.stop()
            self.progress = None

    def report(self, kind: str, data: Any) -> None:
        if kind == "inspection":
            self.console.print(report.inspection_report(data))
        elif kind == "summary":
            self.console.print(report.train_summary_report(data))
        elif kind == "samples":
            self.console.print(report.samples_report(data))
        elif kind == "selection":
            self.console.print(report.selection_report(data))
        elif kind in ("eval_before", "eval", "eval_after") and isinstance(data, dict):
            self.console.print(report.eval_lines(kind.replace("_", " "), data))
        elif isinstance(data, dict):
            self.console.print(report.key_values(kind, data))
        else:
            self.console.print(report.message_line(kind, "bold", data), soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(report.message_line("warning", "yellow", message), soft_wrap=True)

    # -- plain lines ------------------------------------------------------------------------------

    def _advance_plain(self, task: str, amount_: float, fields: dict[str, Any]) -> None:
        state = self.plain.get(task)
        if state is None:
            return
        now = self.clock()
        state.done += amount_
        if fields.get("resumed"):
            state.base = state.done
        if fields:
            state.fields = {k: v for k, v in fields.items() if k != "resumed"}
        # a report of numbers (amount 0: a logging step) always prints; plain progress every interval
        if (amount_ == 0 and state.fields) or now - state.last_line >= self.interval:
            state.last_line = now
            numbers = live_fields(state.fields) if amount_ == 0 or fields else ""
            parts = [
                task,
                self._count(state),
                numbers,
                f"elapsed {clock_time(now - state.started)}",
                f"ETA {clock_time(state.eta(now))}" if state.total is not None else "",
            ]
            self._line("  ".join(p for p in parts if p))

    def _count(self, state: _PlainTask) -> str:
        if state.total is None:
            return amount(state.done, state.unit)
        if state.unit == "B":
            return f"{amount(state.done, 'B')}/{amount(state.total, 'B')}"
        return f"{report._n(state.done)}/{amount(state.total, state.unit)}"

    def _line(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.console.print(Text(f"[{stamp}] {text}"), soft_wrap=True, highlight=False)
