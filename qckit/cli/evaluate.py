"""``qckit evaluate``: held-out numbers of any model (and adapter) on a text file."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from qckit import report
from qckit.cli.common import quiet_third_party
from qckit.cli.observer import RichObserver


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from qckit.evaluate import evaluate_lm

    quiet_third_party()
    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model

    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source, trust_remote_code=args.trust_remote_code)
    model = load_model(source, trust_remote_code=args.trust_remote_code)
    if args.adapter:
        model = load_adapter(model, args.adapter)
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


def add_parser(sub: argparse._SubParsersAction) -> None:
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
