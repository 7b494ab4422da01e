"""``qckit prepare``: the seed's ``prepare_data.py`` flags, translated into a recipe."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from qckit.cli.common import add_set_flag, run_recipe
from qckit.errors import RecipeError


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
        "--near_duplicates",
        choices=["tag", "drop", "off"],
        default="off",
        help="near-duplicates (short-text MinHash): tag = keep them, each cluster on one side of the split; "
        "drop = keep the first of each cluster; off = not looked for (default, as the seed)",
    )
    p.add_argument("--minhash", action="store_true", help="the same as --near_duplicates drop")
    p.add_argument(
        "--all_languages",
        action="store_true",
        help="keep every language, as the seed did (no dialect_langid filter)",
    )
    p.add_argument(
        "--decontaminate",
        nargs="+",
        metavar="FILE",
        help="drop the documents that share a 13-word sequence (or a whole shorter sentence) with these "
        "eval files: [KIND:]PATH, a .jsonl of minimal pairs or choice items, or a .txt of documents",
    )
    p.add_argument(
        "--rejects",
        action="store_true",
        help="also write rejected.jsonl: every dropped document, filter and reason",
    )
    p.add_argument(
        "--executor",
        default="local",
        metavar="NAME",
        help="where the work runs: local (this machine's cores, default) or ray (a Ray cluster); "
        "settings with --set prepare.executor.KEY=VALUE",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="rerun only the shards an interrupted run left unfinished (executors that read their own shards)",
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
    if ns.all_languages:
        filters = [f for f in filters if f["use"] != defaults.LANGUAGE_FILTER]
    near = "drop" if ns.minhash else ns.near_duplicates
    if near != "off":
        filters.append({**defaults.NEAR_DUPLICATES, "duplicates": near})
    if ns.decontaminate:
        filters.append({"use": "decontaminate", "files": list(ns.decontaminate)})
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
            "executor": {"use": ns.executor},
            "resume": ns.resume,
        }
    }


def cmd_prepare(args: argparse.Namespace, console: Console) -> int:
    from qckit.recipe import build_recipe

    recipe = build_recipe(prepare_flags_to_recipe(args), source="qckit prepare", overrides=args.set or [])
    run_recipe(recipe, console, {"prepare"})
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="prepare a corpus (flags of the seed's prepare_data.py)")
    add_prepare_flags(p)
    p.set_defaults(func=cmd_prepare)
