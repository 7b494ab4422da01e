"""The ``qckit`` command line: the only place that prints, renders with rich, and exits.

Commands::

    qckit run RECIPE [--set key.path=value …] [--check] [--stage prepare|train]
    qckit prepare --input F [F …] --output DIR [--merge] [--val_split X] [--min_length N] [--max_length N] [--seed N]
    qckit train --train_file F [--val_file F] [--model_name M] … (the seed's train.py flags)
    qckit evaluate --model M [--adapter DIR] --val_file F
    qckit export --model M --adapter DIR --output DIR
    qckit plugins [KIND NAME]

Every seed-compatible command is translated into a recipe dict and validated like a recipe file, so
flags and recipes share one code path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
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

from qckit import __version__, report
from qckit.errors import QckitError, RecipeError


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
                TextColumn("{task.fields[info]}"),
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
        elif kind.startswith("eval") and isinstance(data, dict):
            self.console.print(report.eval_line(kind.replace("_", " "), data))
        elif isinstance(data, dict):
            self.console.print(report.key_values(kind, data))
        else:
            self.console.print(f"[bold]{kind}[/]: {data}")

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}")


# -- commands --------------------------------------------------------------------------------------


def _quiet_third_party() -> None:
    """Silence third-party chatter that says nothing actionable to a qckit user (the CLI owns the process)."""
    import logging
    import warnings

    # bitsandbytes (imported by peft) looks for optional CPU kernels on the hub and logs when it cannot.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*`is_gradient_checkpointing` is deprecated")
    warnings.filterwarnings(
        "ignore", message=r"Could not find a config file in .* will assume that the vocabulary"
    )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by huggingface_hub when it is imported
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars replace transformers' tqdm bars


def _run_recipe(recipe: Any, console: Console, stages: set[str]) -> None:
    observer = RichObserver(console)
    if recipe.prepare is not None and "prepare" in stages:
        from qckit.prepare import run_prepare

        result = run_prepare(recipe.prepare, observer)
        console.print(report.prepare_report(result.stats))
    if recipe.train is not None and "train" in stages:
        from qckit.train import run_train

        _quiet_third_party()
        plan = recipe.train
        run_train(
            plan.settings,
            plan.chunker.instance,
            [a.instance for a in plan.adapters],
            observer=observer,
            recipe_text=recipe.to_toml(),
        )


def cmd_run(args: argparse.Namespace, console: Console) -> int:
    from qckit.recipe import load_recipe

    recipe = load_recipe(args.recipe, overrides=args.set or [])
    if args.check:
        console.print(report.plan_report(recipe))
        return 0
    stages = {args.stage} if args.stage else {"prepare", "train"}
    _run_recipe(recipe, console, stages)
    return 0


def add_set_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a recipe key (repeatable), e.g. prepare.filters.length.min_length=20",
    )


def add_prepare_flags(p: argparse.ArgumentParser) -> None:
    """The seed's ``prepare_data.py`` flags, with its defaults, plus qckit's extras."""
    p.add_argument("--input", nargs="+", required=True, help="input file(s): .txt, .jsonl (and .gz)")
    p.add_argument("--output", default="./data", help="output directory (default ./data)")
    p.add_argument("--merge", action="store_true", help="merge all inputs into one train/val pair")
    p.add_argument("--val_split", type=float, default=0.1, help="validation ratio, 0.0-0.5 (default 0.1)")
    p.add_argument(
        "--min_length", type=int, default=10, help="minimum text length in characters (default 10)"
    )
    p.add_argument(
        "--max_length", type=int, default=10000, help="maximum text length in characters (default 10000)"
    )
    p.add_argument("--seed", type=int, default=42, help="random seed for the split (default 42)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: one per core)")
    p.add_argument(
        "--format",
        choices=["txt", "jsonl", "both"],
        default="txt",
        help="output format: txt (the seed's), jsonl with metadata, or both",
    )
    p.add_argument(
        "--minhash", action="store_true", help="also remove near-duplicates (MinHash, word 5-grams)"
    )
    p.add_argument(
        "--rejects",
        action="store_true",
        help="also write rejected.jsonl: every dropped document, filter and reason",
    )
    add_set_flag(p)


def prepare_flags_to_recipe(ns: argparse.Namespace) -> dict[str, Any]:
    """Translate the seed's flags into a recipe dict (validated afterwards like any recipe)."""
    if not 0.0 <= ns.val_split <= 0.5:
        raise RecipeError("--val_split must be between 0.0 and 0.5", source="qckit prepare")
    if ns.min_length < 1:
        raise RecipeError("--min_length must be at least 1", source="qckit prepare")
    if ns.max_length <= ns.min_length:
        raise RecipeError("--max_length must be greater than --min_length", source="qckit prepare")
    from qckit import defaults

    filters = [dict(f) for f in defaults.PREPARE_DEFAULTS["filters"]]
    filters[0].update(min_length=ns.min_length, max_length=ns.max_length)
    if ns.minhash:
        filters.append({"use": "minhash_dedup"})
    writers = {
        "txt": [{"use": "txt"}],
        "jsonl": [{"use": "jsonl"}],
        "both": [{"use": "txt"}, {"use": "jsonl"}],
    }
    return {
        "prepare": {
            "inputs": list(ns.input),
            "output": ns.output,
            "merge": ns.merge,
            "workers": ns.workers,
            "rejects": ns.rejects,
            "filters": filters,
            "splitter": {"use": "random", "val_split": ns.val_split, "seed": ns.seed},
            "writers": writers[ns.format],
        }
    }


def cmd_prepare(args: argparse.Namespace, console: Console) -> int:
    from qckit.recipe import build_recipe

    recipe = build_recipe(prepare_flags_to_recipe(args), source="qckit prepare", overrides=args.set or [])
    _run_recipe(recipe, console, {"prepare"})
    return 0


def cmd_train(args: argparse.Namespace, console: Console) -> int:
    from qckit.recipe import build_recipe
    from qckit.train_flags import train_flags_to_recipe

    recipe = build_recipe(train_flags_to_recipe(args), source="qckit train", overrides=args.set or [])
    _run_recipe(recipe, console, {"train"})
    return 0


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from qckit.evaluate import evaluate_lm

    _quiet_third_party()
    from qckit.models import load_model, load_tokenizer, resolve_model

    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source, trust_remote_code=args.trust_remote_code)
    model = load_model(source, trust_remote_code=args.trust_remote_code)
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
    observer = RichObserver(console)
    result = evaluate_lm(
        model,
        tokenizer,
        args.val_file,
        max_length=args.max_length,
        batch_size=args.batch_size,
        observer=observer,
    )
    data = result.as_dict()
    if args.json:
        console.print_json(json.dumps(data))
    else:
        console.print(report.eval_line(f"{args.model} on {args.val_file}", data))
    return 0


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    _quiet_third_party()
    from qckit.models import merge_and_export

    out = merge_and_export(args.model, args.adapter, args.output, trust_remote_code=args.trust_remote_code)
    console.print(f"merged model written to [bold]{out}[/] (safetensors)")
    return 0


def cmd_plugins(args: argparse.Namespace, console: Console) -> int:
    from qckit.host import PluginHost
    from qckit.kinds import BY_NAME

    host = PluginHost.from_entry_points()
    if args.kind:
        if args.kind not in BY_NAME:
            raise RecipeError(f"unknown component kind {args.kind!r}; kinds: {', '.join(BY_NAME)}")
        if not args.name:
            console.print("\n".join(f"{n}  ({host.get(args.kind, n).owner})" for n in host.names(args.kind)))
            return 0
        from qckit.errors import PluginError

        try:
            info = host.get(args.kind, args.name)
        except PluginError as exc:
            raise RecipeError(str(exc)) from None
        console.print(report.component_report(info))
        return 0
    console.print(report.plugins_report(host))
    return 1 if host.failed else 0


# -- entry point -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qckit", description="Continued pretraining on dialect corpora.")
    parser.add_argument("--version", action="version", version=f"qckit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run the stages of a TOML recipe")
    p.add_argument("recipe")
    add_set_flag(p)
    p.add_argument("--check", action="store_true", help="validate the recipe and print the resolved plan")
    p.add_argument("--stage", choices=["prepare", "train"], help="run only this stage")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("prepare", help="prepare a corpus (flags of the seed's prepare_data.py)")
    add_prepare_flags(p)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="continue pretraining (flags of the seed's train.py)")
    from qckit.train_flags import add_train_flags

    add_train_flags(p)
    add_set_flag(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="held-out perplexity and bits-per-byte of a model on a text file")
    p.add_argument(
        "--model", required=True, help="hub id, local directory, .gguf file or pkg:<package>/<file>"
    )
    p.add_argument("--adapter", help="a LoRA adapter directory to apply")
    p.add_argument("--val_file", required=True)
    p.add_argument("--max_length", type=int, default=1024)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--trust_remote_code", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="merge a LoRA adapter into its base model (safetensors)")
    p.add_argument("--model", required=True, help="the base model the adapter was trained on")
    p.add_argument("--adapter", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--trust_remote_code", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plugins", help="list loaded plugins and components, or show one component")
    from qckit.kinds import BY_NAME

    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(BY_NAME)}")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_plugins)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run the CLI; returns the exit status (``sys.exit`` happens only in ``__main__``).

    Reports go to ``console`` (stdout by default) and errors to stderr; a console passed in (tests,
    embedding) receives both.
    """
    if console is None:
        # A qckit command renders its own progress; third-party tqdm bars (GGUF dequantization …) read this
        # variable when tqdm is imported, which has not happened yet here.
        os.environ.setdefault("TQDM_DISABLE", "1")
    err = console or Console(stderr=True)
    console = console or Console()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse prints its own usage error
        return int(exc.code or 0)
    try:
        return args.func(args, console)
    except QckitError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("[bold red]interrupted[/]: no partial output was written")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
