"""Exceptions raised by qckit, and the exit status of each.

Library code raises these; only the CLI turns them into one-line messages and exit codes.
Every error renders as a single line that names what is wrong and where. The exit status is the
class's ``exit_code``, and what it means its ``exit_meaning``; :func:`exit_statuses` is the one table of
them (``qckit --help`` prints it; a test keeps README's "Exit statuses" table in step).
"""

from __future__ import annotations

#: exit status after Ctrl-C (SIGINT): 128 + 2, the shell convention
INTERRUPTED_EXIT_CODE = 130
#: exit status after SIGTERM: 128 + 15
TERMINATED_EXIT_CODE = 143


class QckitError(Exception):
    """Base class of every error qckit raises on purpose.

    Errors cross process boundaries (prepare workers), so each one pickles with its constructor arguments.
    """

    exit_code = 1
    exit_meaning = "any other qckit error, and unexpected errors (still one line)"
    _args: tuple[tuple, dict] | None = None

    def __reduce__(self):  # type: ignore[override]
        if self._args is None:
            return super().__reduce__()
        args, kwargs = self._args
        return (_rebuild, (type(self), args, kwargs))


def _rebuild(cls: type, args: tuple, kwargs: dict) -> QckitError:
    return cls(*args, **kwargs)


def _picklable(exc: BaseException) -> BaseException:
    """The exception itself if it pickles, else a RuntimeError carrying its text (third-party exceptions vary)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class RecipeError(QckitError):
    """A recipe (or a flag translated into one) is invalid. Names the file and the key path."""

    exit_code = 2
    exit_meaning = "invalid recipe, flag or --set override (key path named); argparse usage errors"

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.source, self.key, self.detail = source, key, message
        self._args = (message,), {"source": source, "key": key}
        where = ":".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class InputError(QckitError):
    """An input file cannot be used at all (missing, a directory, empty, unsupported)."""

    exit_code = 3
    exit_meaning = (
        "an unusable path: a missing, unreadable or empty input, model, tokenizer or adapter, a hub id "
        "the Hub cannot serve, or an output that cannot be written (the path named)"
    )

    def __init__(self, path: object, message: str, line: int | None = None):
        self.path, self.line, self.detail = str(path), line, message
        self._args = (str(path), message, line), {}
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {message}")


class RecordError(QckitError):
    """One record (line) of an input is unusable. Readers raise it; the pipeline counts it and goes on.

    ``kind`` is a short stable key used in stats (``invalid_json``, ``missing_text`` …).
    """

    def __init__(self, kind: str, message: str):
        self.kind = kind
        self._args = (kind, message), {}
        super().__init__(message)


class PluginError(QckitError):
    """A plugin could not be loaded or registered something invalid."""

    exit_code = 4
    exit_meaning = "a plugin failed to load or registered something invalid (qckit plugins lists failures)"


class ComponentError(QckitError):
    """A component raised while working. Names the component, its plugin and distribution, and the input position."""

    exit_code = 5
    exit_meaning = "a component failed while working (component, plugin, distribution and file:line named)"

    def __init__(self, kind: str, name: str, owner: str, where: str | None, cause: BaseException):
        self.kind, self.name, self.owner, self.where, self.cause = kind, name, owner, where, cause
        self._args = (kind, name, owner, where, _picklable(cause)), {}
        at = f" on {where}" if where else ""
        super().__init__(f'{kind} "{name}" ({owner}) failed{at}: {type(cause).__name__}: {cause}')


class HardwareError(QckitError):
    """A requested combination cannot run on this machine. Raised before any model is loaded."""

    exit_code = 6
    exit_meaning = "this machine cannot run what was asked; raised before anything is loaded"


class TrainingError(QckitError):
    """Training went wrong while it ran (a non-finite loss or gradient norm; in fp16, too many steps in a
    row skipped by the loss scaler). Names the optimizer step; the checkpoints written before it are kept."""

    exit_code = 7
    exit_meaning = (
        "training diverged: a non-finite loss or gradient norm, in fp16 train.max_skipped_steps in a row (the "
        "step named; earlier checkpoints kept)"
    )


#: the error classes, in exit-status order
ERROR_CLASSES: tuple[type[QckitError], ...] = (
    QckitError,
    RecipeError,
    InputError,
    PluginError,
    ComponentError,
    HardwareError,
    TrainingError,
)


def exit_statuses() -> list[tuple[int, str, str]]:
    """``(status, what it means, raised as)`` for every exit status of the CLI, in order."""
    return [
        (0, "success", ""),
        *((cls.exit_code, cls.exit_meaning, cls.__name__) for cls in ERROR_CLASSES),
        (INTERRUPTED_EXIT_CODE, "interrupted (Ctrl-C); no partial output is left", "KeyboardInterrupt"),
        (TERMINATED_EXIT_CODE, "terminated (SIGTERM); no partial output is left", "SIGTERM"),
    ]
