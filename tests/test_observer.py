"""The CLI's observer: plain timestamped lines when the output is a log, live rows with an ETA on a terminal."""

from __future__ import annotations

import re

from rich.console import Console

from qckit.cli.observer import RichObserver, _EtaColumn, clock_time
from qckit.progress import eta_seconds, phase


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plain_observer(interval: float = 30.0) -> tuple[RichObserver, Console, Clock]:
    console = Console(width=80, record=True, force_terminal=False)
    clock = Clock()
    return RichObserver(console, interval=interval, clock=clock), console, clock


def lines(console: Console) -> list[str]:
    return [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line) for line in console.export_text().splitlines()]


def test_eta_is_the_mean_rate_over_the_whole_task():
    assert eta_seconds(30.0, 3, 10) == 70.0
    assert eta_seconds(0.0, 0, 10) is None and eta_seconds(5.0, 2, None) is None
    assert eta_seconds(10.0, 12, 10) == 0.0
    assert clock_time(3725.4) == "1:02:05" and clock_time(None) == "-:--:--"


def test_a_log_gets_a_line_when_a_phase_starts_and_ends():
    observer, console, clock = plain_observer()
    assert not observer.live  # not a terminal
    with phase(observer, "loading model /models/x [q4]"):
        clock.now += 75
    assert lines(console) == [
        "loading model /models/x [q4] …",
        "loading model /models/x [q4] done in 0:01:15",
    ]


def test_every_logging_step_is_a_line_with_its_numbers_and_an_eta():
    observer, console, clock = plain_observer()
    observer.start("train", 10, "steps")
    for step in range(1, 5):
        clock.now += 3
        observer.advance("train", 1)
        if step % 2 == 0:
            observer.advance("train", 0, loss=2.5 - step / 10, lr=0.001, tokens_per_s=512.0)
    observer.finish("train")
    out = lines(console)
    assert out[0] == "train (10 steps) …"
    assert out[1].startswith("train  2/10 steps  loss=2.3  lr=1.000e-03  tokens_per_s=512")
    assert out[1].endswith("elapsed 0:00:06  ETA 0:00:24")  # 2 steps in 6 s: 8 left at 3 s each
    assert out[2].startswith("train  4/10 steps  loss=2.1") and out[2].endswith("ETA 0:00:18")
    assert out[3] == "train finished: 4/10 steps in 0:00:12"
    assert len(out) == 4  # plain steps within the interval print nothing


def test_progress_without_numbers_prints_at_most_once_per_interval():
    observer, console, clock = plain_observer(interval=10)
    observer.start("prepare", 4e6, "B")
    for _ in range(8):
        clock.now += 3
        observer.advance("prepare", 0.5e6, kept=7)
    out = lines(console)[1:]
    assert len(out) == 2  # at 12 s and 24 s
    assert out[0].startswith("prepare  2.0 MB/4.0 MB  kept=7  elapsed 0:00:12  ETA 0:00:12")


def test_the_eta_leaves_out_steps_resumed_from_a_checkpoint():
    observer, console, clock = plain_observer()
    observer.start("train", 20, "steps")
    observer.advance("train", 10, resumed=True)
    clock.now += 10
    observer.advance("train", 1)
    clock.now += 10
    observer.advance("train", 1)
    observer.advance("train", 0, loss=1.0)
    assert lines(console)[-1].endswith("12/20 steps  loss=1  elapsed 0:00:20  ETA 0:01:20")


def test_a_terminal_shows_the_loss_of_the_step_just_logged_and_an_eta_from_slow_steps():
    console = Console(width=120, record=True, force_terminal=True)
    clock = Clock()
    observer = RichObserver(console, clock=clock)
    assert observer.live
    observer.start("train", 10, "steps")
    task = observer.progress.tasks[0]
    clock.now += 120  # one slow step: rich's own 30 s speed window would show no ETA
    observer.advance("train", 1)
    observer.advance("train", 0, loss=2.25, lr=0.01)
    assert task.fields["info"] == "loss=2.25  lr=0.01"
    observer.advance("train", 1)  # a step without numbers keeps the last ones shown
    assert task.fields["info"] == "loss=2.25  lr=0.01"
    assert _EtaColumn().render(task).plain == "ETA 0:08:00"  # 2 steps in 120 s: 8 left at 60 s
    observer.finish("train")
    assert observer.progress is None


def test_a_terminal_shows_phases_as_rows_that_end():
    console = Console(width=120, record=True, force_terminal=True)
    observer = RichObserver(console, clock=Clock())
    observer.start("train", 4, "steps")
    with phase(observer, "evaluate quebec_pairs"):
        phase_task = observer.progress.tasks[1]
        assert phase_task.total is None
    assert phase_task.finished  # shown as done, not as a spinner that never stops
    observer.finish("train")
