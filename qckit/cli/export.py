"""``qckit export``: merge a LoRA adapter into its base model and write safetensors or GGUF."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from qckit import report
from qckit.cli.common import quiet_third_party
from qckit.export import DEFAULT_OUTTYPE, EXPORT_FORMATS, OUTTYPES


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    quiet_third_party()
    from qckit.export import export_model

    out = export_model(
        args.model,
        args.output,
        adapter_dir=args.adapter,
        format=args.format,
        outtype=args.outtype,
        trust_remote_code=args.trust_remote_code,
    )
    outtype = args.outtype or DEFAULT_OUTTYPE[args.format]
    what = "merged model" if args.adapter else "model"
    console.print(
        Text.assemble(f"{what} written to ", report.literal(out, "bold"), f" ({args.format}, {outtype})")
    )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    all_outtypes = sorted({t for types in OUTTYPES.values() for t in types})
    p = sub.add_parser(
        "export",
        help="merge a LoRA adapter into its base model; write safetensors or GGUF (llama.cpp, Ollama)",
    )
    p.add_argument("--model", required=True, help="the base model the adapter was trained on")
    p.add_argument(
        "--adapter", help="the trained LoRA adapter directory (leave out to convert the base model)"
    )
    p.add_argument("--output", required=True, help="a directory (safetensors) or a .gguf file path (gguf)")
    p.add_argument("--format", choices=EXPORT_FORMATS, default="safetensors")
    p.add_argument(
        "--outtype",
        choices=all_outtypes,
        help=", ".join(
            f"{fmt}: {'/'.join(OUTTYPES[fmt])} (default {DEFAULT_OUTTYPE[fmt]})" for fmt in EXPORT_FORMATS
        ),
    )
    p.add_argument("--trust_remote_code", action="store_true")
    p.set_defaults(func=cmd_export)
