"""``qckit init``: write a commented starting recipe for the files given and the hardware in sight."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

from rich.console import Console
from rich.text import Text

from qckit import report
from qckit.errors import InputError


def _name_from(path: str) -> str:
    stem = Path(path).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-").lower() or "my-cpt"


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    from qckit.hardware import detect_environment
    from qckit.recipe import build_recipe
    from qckit.recipe_init import human_size, inspect_input, plan_training, starter_recipe

    name = args.name or _name_from(args.files[0])
    output = Path(args.output or f"{name}.toml")
    if output.exists() and not args.force:
        raise InputError(output, "already exists: choose another --output, or --force to replace it")
    inputs = [inspect_input(path) for path in args.files]
    plan = plan_training(detect_environment(), args.model)
    text = starter_recipe(name, inputs, plan, run_dir=args.run_dir or f"runs/{name}")
    build_recipe(tomllib.loads(text), source=str(output))  # what qckit writes must be a valid recipe
    from qckit._fs import atomic_write_text

    atomic_write_text(output, text)
    console.print(Text.assemble("wrote ", report.literal(output, "bold")))
    for f in inputs:
        field = f", text field {f.text_field!r}" if f.text_field else ""
        console.print(
            report.literal(
                f"  {f.path}: {f.format}{' (gzip)' if f.compressed else ''}, "
                f"{human_size(f.size)}, ~{f.documents_estimate:,} documents{field}"
            )
        )
    for reason in plan.reasons:
        console.print(report.literal(f"  {reason}"))
    console.print(
        Text.assemble(
            "next: ",
            report.literal(f"qckit run {output} --check", "bold"),
            " then ",
            report.literal(f"qckit run {output}", "bold"),
        )
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="write a commented starting recipe for your corpus files and this machine",
        description="Look at the corpus files (.txt: one document per line; .jsonl: one object per line; "
        ".gz either) and the GPUs in sight, and write a commented recipe to start from.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="corpus files (.txt, .jsonl, optionally .gz)")
    p.add_argument("--name", help="the run's name (default: the first file's name)")
    p.add_argument("--output", "-o", help="the recipe to write (default: NAME.toml)")
    p.add_argument("--model", help="the model to train (default: chosen for this machine)")
    p.add_argument("--run-dir", "--run_dir", dest="run_dir", help="where the run writes (default: runs/NAME)")
    p.add_argument("--force", action="store_true", help="replace an existing recipe file")
    p.set_defaults(func=cmd_init)
