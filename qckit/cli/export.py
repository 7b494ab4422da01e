"""``qckit export``: a run's model (or a base model with a LoRA adapter) as safetensors or GGUF; with
``--onto``/``--strength``, the run's delta scaled or added to another model (:mod:`qckit.delta`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.text import Text

from qckit import report
from qckit.cli.common import quiet_third_party
from qckit.errors import RecipeError
from qckit.export import DEFAULT_OUTTYPE, EXPORT_FORMATS, OUTTYPES

SOURCE = "<command line>"


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    quiet_third_party()
    from qckit.export import RunModel, export_format, export_model, read_run

    fmt, outtype = export_format(args.output, args.format, args.outtype)
    if args.run:
        if args.adapter:
            raise RecipeError(
                "the run folder holds its adapter: drop --adapter", source=SOURCE, key="--adapter"
            )
        run: RunModel | None = read_run(args.run, base=args.model)
    elif args.model:
        run = (
            RunModel(Path(args.adapter), args.model, Path(args.adapter), "--model") if args.adapter else None
        )
    else:
        raise RecipeError("nothing to export: give the run folder (RUN_DIR) or --model", source=SOURCE)
    delta = args.onto is not None or args.strength != 1.0
    if delta:
        if run is None:
            flag = "--onto" if args.onto is not None else "--strength"
            raise RecipeError(
                f"{flag} applies a run's delta: give the run folder (RUN_DIR) or --adapter",
                source=SOURCE,
                key=flag,
            )
        from qckit.delta import carry_delta

        out = carry_delta(
            run,
            args.output,
            onto=args.onto,
            strength=args.strength,
            format=fmt,
            outtype=outtype,
            trust_remote_code=args.trust_remote_code,
        )
        onto = f" onto {args.onto}" if args.onto is not None else ""
        what = f"the run's delta × {args.strength:g}{onto}"
    else:
        out = export_model(
            run.model if run else args.model,
            args.output,
            adapter_dir=run.adapter_dir if run else None,
            format=fmt,
            outtype=outtype,
            trust_remote_code=args.trust_remote_code,
        )
        what = "merged model" if run and run.adapter_dir else "model"
    console.print(Text.assemble(f"{what} written to ", report.literal(out, "bold"), f" ({fmt}, {outtype})"))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    all_outtypes = sorted({t for types in OUTTYPES.values() for t in types})
    p = sub.add_parser(
        "export",
        help="a trained run (or a base + LoRA adapter) as safetensors or GGUF (llama.cpp, Ollama); "
        "--onto carries the run's delta to another model",
    )
    p.add_argument(
        "run",
        nargs="?",
        metavar="RUN_DIR",
        help="a run's output folder: it names its base model and holds the adapter (or the full model)",
    )
    p.add_argument(
        "--model",
        help="the base model the adapter was trained on (with RUN_DIR: where the run's base is now)",
    )
    p.add_argument(
        "--adapter", help="the trained LoRA adapter directory (leave out to convert the base model)"
    )
    p.add_argument(
        "--output", required=True, help="a directory (safetensors) or a .gguf file path (gguf, inferred)"
    )
    p.add_argument(
        "--format", choices=EXPORT_FORMATS, help="default: gguf for a .gguf output, else safetensors"
    )
    p.add_argument(
        "--outtype",
        choices=all_outtypes,
        help=", ".join(
            f"{fmt}: {'/'.join(OUTTYPES[fmt])} (default {DEFAULT_OUTTYPE[fmt]})" for fmt in EXPORT_FORMATS
        ),
    )
    p.add_argument(
        "--onto",
        metavar="MODEL",
        help="add the run's delta (trained − base) to MODEL, a sibling of the base (its instruct model)",
    )
    p.add_argument(
        "--strength",
        type=float,
        default=1.0,
        metavar="λ",
        help="scale of the delta, ≥ 0 (1: whole, 0: MODEL or the base unchanged, between: interpolation)",
    )
    p.add_argument("--trust_remote_code", action="store_true")
    p.set_defaults(func=cmd_export)
