"""``qckit run RECIPE``: validate a TOML recipe and run its stages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from qckit import report
from qckit.cli.common import add_set_flag, run_recipe
from qckit.errors import RecipeError
from qckit.kinds import STAGES

#: ``qckit run`` flags that are recipe keys of the train stage: flag → the ``--set`` it stands for
TRAIN_SWITCHES = {"resume": "train.resume=true", "overwrite_output_dir": "train.overwrite_output_dir=true"}


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from qckit.recipe import build_recipe, read_recipe_text, tomllib_loads

    data = tomllib_loads(read_recipe_text(Path(args.recipe)), args.recipe)
    switches = [override for flag, override in TRAIN_SWITCHES.items() if getattr(args, flag)]
    if switches and "train" not in data:
        flag = "--" + next(f for f in TRAIN_SWITCHES if getattr(args, f)).replace("_", "-")
        raise RecipeError(
            f"{flag} applies to the train stage, and this recipe has no [train]", source=args.recipe
        )
    recipe = build_recipe(data, source=args.recipe, overrides=[*(args.set or []), *switches])
    if args.check:
        check_recipe(recipe, args.stage)
        console.print(report.plan_report(recipe))
        return 0
    stages = {args.stage} if args.stage else set(STAGES)
    run_recipe(recipe, console, stages)
    return 0


def check_recipe(recipe: Any, stage: str | None) -> None:
    """What a run would refuse before starting, refused now (``--check``): the prepare inputs; the train
    stage's files (those the recipe's own prepare stage writes excepted), eval-set files and model (a hub
    id checked offline-aware, fast)."""
    if recipe.prepare is not None and stage in (None, "prepare"):
        from qckit.prepare.pipeline import checked_inputs

        checked_inputs(recipe.prepare)
    if recipe.train is not None and stage in (None, "train"):
        from qckit.evaluate.sets import plan_sets
        from qckit.train.run import checked_train_inputs

        produced = _prepare_outputs(recipe.prepare) if stage is None and recipe.prepare else set()
        checked_train_inputs(recipe.train.settings, plan_sets(recipe.train, recipe.host), produced)


def _prepare_outputs(plan: Any) -> set[Path]:
    """The absolute paths of the files the recipe's prepare stage writes (absent before the run)."""
    settings = plan.settings
    names = settings.output_names(len(settings.inputs), [w.instance.suffix for w in plan.writers])
    return {Path(settings.output, name).absolute() for name in names}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the stages of a TOML recipe")
    p.add_argument("recipe")
    add_set_flag(p)
    p.add_argument(
        "--check",
        action="store_true",
        help="validate the recipe, its input and eval files and its model, and print the resolved plan",
    )
    p.add_argument("--stage", choices=STAGES, help="run only this stage")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the train stage from its newest complete checkpoint (train.resume = true; "
        "--stage train skips a prepare stage already done)",
    )
    p.add_argument(
        "--overwrite-output-dir",
        action="store_true",
        help="delete an earlier run's checkpoints and outputs first (train.overwrite_output_dir = true)",
    )
    p.set_defaults(func=cmd_run)
