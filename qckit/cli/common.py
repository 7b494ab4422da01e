"""Pieces every command shares: consoles, the ``--set`` flag, running a recipe's stages, quieting third parties."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console

from qckit import report
from qckit.cli.observer import RichObserver

#: the width of reports written to a file or a pipe (a Slurm log): wide enough that tables and one-line
#: reports are not wrapped, as a log viewer scrolls sideways; ``COLUMNS`` still decides when it is set
LOG_WIDTH = 160


def new_console(stderr: bool = False) -> Console:
    """A console on stdout or stderr: the terminal's width, or :data:`LOG_WIDTH` when not a terminal."""
    console = Console(stderr=stderr)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(stderr=stderr, width=LOG_WIDTH)
    return console


def add_set_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a recipe key (repeatable), e.g. prepare.filters.length.min_length=20",
    )


def quiet_third_party() -> None:
    """Silence third-party chatter that says nothing actionable to a qckit user (the CLI owns the process)."""
    import logging
    import warnings

    # bitsandbytes (imported by peft) looks for optional CPU kernels on the hub and logs when it cannot.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # mlflow's local store announces its table migrations (report_to = "mlflow")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated")
    warnings.filterwarnings(
        "ignore", message=r"Could not find a config file in .* will assume that the vocabulary"
    )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub when it is imported
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars replace transformers' tqdm bars


def run_recipe(recipe: Any, console: Console, stages: set[str]) -> None:
    observer = RichObserver(console)
    if recipe.prepare is not None and "prepare" in stages:
        from qckit.prepare import run_prepare

        result = run_prepare(recipe.prepare, observer)
        console.print(report.prepare_report(result.stats))
    if recipe.train is not None and "train" in stages:
        from qckit.evaluate.sets import plan_sets
        from qckit.train import run_train

        quiet_third_party()
        plan = recipe.train
        run_train(
            plan.settings,
            plan.chunker.instance,
            [a.instance for a in plan.adapters],
            observer=observer,
            recipe_text=recipe.to_toml(),
            eval_sets=plan_sets(plan, recipe.host),
        )
