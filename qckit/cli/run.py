"""``qckit run RECIPE``: validate a TOML recipe and run its stages."""

from __future__ import annotations

import argparse

from rich.console import Console

from qckit import report
from qckit.cli.common import add_set_flag, run_recipe
from qckit.kinds import STAGES


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from qckit.recipe import load_recipe

    recipe = load_recipe(args.recipe, overrides=args.set or [])
    if args.check:
        if recipe.prepare is not None and args.stage in (None, "prepare"):
            from qckit.prepare.pipeline import checked_inputs

            checked_inputs(recipe.prepare)  # an input that the run would refuse is refused now
        console.print(report.plan_report(recipe))
        return 0
    stages = {args.stage} if args.stage else set(STAGES)
    run_recipe(recipe, console, stages)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the stages of a TOML recipe")
    p.add_argument("recipe")
    add_set_flag(p)
    p.add_argument("--check", action="store_true", help="validate the recipe and print the resolved plan")
    p.add_argument("--stage", choices=STAGES, help="run only this stage")
    p.set_defaults(func=cmd_run)
