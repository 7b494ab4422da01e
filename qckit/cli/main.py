"""The ``qckit`` command line: parser, dispatch and the one place errors become exit statuses.

Each command lives in its own module of :mod:`qckit.cli` with an ``add_parser(subparsers)`` function;
the CLI is the only part of qckit that prints, renders with rich, and exits.

Commands::

    qckit init FILE [FILE …] [--name N] [--model M]     (a commented starting recipe)
    qckit run RECIPE [--set key.path=value …] [--check] [--stage prepare|train] [--resume]
    qckit prepare --input F [F …] --output DIR [--merge] [--val-split X] [--min-length N] [--max-length N] [--seed N]
    qckit train --train-file F [--val-file F] [--model M] … (the seed's train.py flags)
    qckit evaluate --model M [--adapter DIR] (--val-file F | --pairs F | --choice F | --recipe R) [--json]
    qckit select RUN_DIR [--strengths λ …] [--checkpoints all|final] [--plot out.png] [--json]
    qckit compare RUN_DIR [RUN_DIR …] [--plot out.png] [--json]
    qckit generate MODEL [PROMPT …] [--file F] [--base] [--sample] [--max-new-tokens N] [--json]
    qckit export [RUN_DIR] [--model M] [--adapter DIR] --output DIR|FILE.gguf [--outtype T] [--onto M] [--strength λ]
    qckit plugins [KIND NAME]

Every seed-compatible command is translated into a recipe dict and validated like a recipe file, so
flags and recipes share one code path. Flags have one canonical name each; the seed's spellings
(``--train_file``, ``--model_name``) stay aliases (:mod:`qckit.cli.flags`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence

from rich.console import Console

from qckit import __version__
from qckit.cli import compare, evaluate, export, generate, init, plugins, prepare, run, select, train
from qckit.cli.common import new_console
from qckit.cli.flags import Parser, TopHelpFormatter, canonical_flags, exit_status_epilog
from qckit.errors import INTERRUPTED_EXIT_CODE, TERMINATED_EXIT_CODE, QckitError
from qckit.report import message_line

#: the commands, in ``qckit --help`` order; each module has ``add_parser(subparsers)``
COMMANDS = (init, run, prepare, train, evaluate, generate, select, compare, export, plugins)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that every clean-up runs the same way."""


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Terminated` (exit status 143, nothing partial left)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="qckit",
        description="Continued pretraining on dialect corpora.",
        epilog=exit_status_epilog(),
        formatter_class=TopHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qckit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    canonical_flags(parser)  # one name per flag, the seed's spellings kept as aliases
    return parser


def main(
    argv: Sequence[str] | None = None, console: Console | None = None, stderr: Console | None = None
) -> int:
    """Run the CLI; returns the exit status (``sys.exit`` happens only in ``__main__``).

    Reports go to ``console`` (stdout by default) and errors to ``stderr`` (stderr by default; a
    ``console`` passed in without ``stderr`` receives both, for tests and embedding).
    """
    if console is None:
        # A qckit command renders its own progress; third-party tqdm bars (GGUF dequantization …) read this
        # variable when tqdm is imported, which has not happened yet here.
        os.environ.setdefault("TQDM_DISABLE", "1")
    err = stderr or console or new_console(stderr=True)
    console = console or new_console()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own usage error
        return int(exc.code or 0)
    try:
        with warnings.catch_warnings(), _sigterm_as_interrupt():
            # a third-party warning is one literal line too, not a multi-line source excerpt
            warnings.showwarning = lambda message, category, *_, **__: err.print(
                message_line("warning", "yellow", f"{category.__name__}: {message}"), soft_wrap=True
            )
            return args.func(args, console)
    except QckitError as exc:
        err.print(message_line("error", "bold red", exc), highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        err.print(message_line(what, "bold red", "no partial output was written"), soft_wrap=True)
        return TERMINATED_EXIT_CODE if isinstance(exc, Terminated) else INTERRUPTED_EXIT_CODE
    except Exception as exc:  # a bug, or a fault qckit does not know yet: still one line, never a traceback
        if os.environ.get("QCKIT_TRACEBACK"):
            raise
        err.print(message_line("error", "bold red", unexpected_message(exc)), highlight=False, soft_wrap=True)
        return QckitError.exit_code


def unexpected_message(exc: BaseException) -> str:
    """One line for an exception qckit did not raise on purpose."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    if isinstance(exc, MemoryError):
        return "out of memory; lower batch sizes or the amount of data held at once"
    detail = " ".join(str(exc).split())[:300] or "(no message)"
    return f"unexpected {type(exc).__name__}: {detail} (set QCKIT_TRACEBACK=1 to see where it happened)"
