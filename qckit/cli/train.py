"""``qckit train``: the seed's ``train.py`` flags (see :mod:`qckit.cli.train_flags`), as a recipe."""

from __future__ import annotations

import argparse

from rich.console import Console

from qckit.cli.common import add_set_flag, run_recipe
from qckit.cli.train_flags import add_train_flags, train_flags_to_recipe


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from qckit.recipe import build_recipe

    recipe = build_recipe(train_flags_to_recipe(args), source="qckit train", overrides=args.set or [])
    run_recipe(recipe, console, {"train"})
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="continue pretraining (flags of the seed's train.py)")
    add_train_flags(p)
    add_set_flag(p)
    p.set_defaults(func=cmd_train)
