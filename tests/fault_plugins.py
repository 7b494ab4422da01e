"""Fault-injecting components for the executor and fault tests (registered with ``PluginHost(extra=...)``).

They act on documents containing a trigger word and count what they did in marker files, so that a
retried or resumed run can behave differently from the first one without any change to the recipe.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path
from typing import ClassVar

from qckit import hookimpl
from qckit.components import Document


def _markers(directory: str) -> int:
    return len(os.listdir(directory)) if os.path.isdir(directory) else 0


def _mark(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    Path(directory, f"{os.getpid()}-{uuid.uuid4().hex}").touch()


class KillWorker:
    """SIGKILLs its own process on a document containing ``trigger``, the first ``times`` times."""

    name: ClassVar[str] = "faults.kill_worker"
    stateful: ClassVar[bool] = False

    def __init__(self, marker_dir: str = "", trigger: str = "KILL-ME", times: int = 1) -> None:
        self.marker_dir, self.trigger, self.times = marker_dir, trigger, times

    def drop_reason(self, doc: Document) -> str | None:
        if self.trigger in doc.text and _markers(self.marker_dir) < self.times:
            _mark(self.marker_dir)
            os.kill(os.getpid(), signal.SIGKILL)
        return None


class FailUnless:
    """Raises on a document containing ``trigger`` until a file ``unless`` exists."""

    name: ClassVar[str] = "faults.fail_unless"
    stateful: ClassVar[bool] = False

    def __init__(self, unless: str = "", trigger: str = "FAIL-ME") -> None:
        self.unless, self.trigger = unless, trigger

    def drop_reason(self, doc: Document) -> str | None:
        if self.trigger in doc.text and not os.path.exists(self.unless):
            raise RuntimeError("injected failure")
        return None


class Pause:
    """On a document containing ``trigger``: creates the file ``reached``, then sleeps ``seconds``
    (so that a test can act while a run is certainly in the middle of its work)."""

    name: ClassVar[str] = "faults.pause"
    stateful: ClassVar[bool] = False

    def __init__(self, reached: str = "", seconds: float = 60.0, trigger: str = "PAUSE-HERE") -> None:
        self.reached, self.seconds, self.trigger = reached, seconds, trigger

    def drop_reason(self, doc: Document) -> str | None:
        if self.trigger in doc.text:
            Path(self.reached).touch()
            time.sleep(self.seconds)
        return None


@hookimpl
def register_filters(register) -> None:
    register(KillWorker)
    register(FailUnless)
    register(Pause)
