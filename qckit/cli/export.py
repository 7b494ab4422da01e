"""``qckit export``: merge a LoRA adapter into its base model."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.text import Text

from qckit import report
from qckit.cli.common import quiet_third_party


def cmd_export(args: argparse.Namespace, console: Console) -> int:
    quiet_third_party()
    from qckit.models import merge_and_export

    out = merge_and_export(args.model, args.adapter, args.output, trust_remote_code=args.trust_remote_code)
    console.print(Text.assemble("merged model written to ", report.literal(out, "bold"), " (safetensors)"))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="merge a LoRA adapter into its base model (safetensors)")
    p.add_argument("--model", required=True, help="the base model the adapter was trained on")
    p.add_argument("--adapter", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--trust_remote_code", action="store_true")
    p.set_defaults(func=cmd_export)
