"""``qckit generate``: completions of prompts by a trained model, beside its base model's when asked."""

from __future__ import annotations

import argparse
import json

from rich.console import Console

from qckit import report
from qckit.cli.common import new_console, quiet_third_party
from qckit.cli.observer import RichObserver
from qckit.errors import QckitError
from qckit.progress import phase


def cmd_generate(args: argparse.Namespace, console: Console) -> int:
    quiet_third_party()
    from qckit.generate import GenerationSettings, complete, load_for_generation, read_prompts

    prompts = list(args.prompt or [])
    if args.file:
        prompts += read_prompts(args.file)
    if not prompts:
        raise QckitError("no prompt: give prompts as arguments or --file FILE (one prompt per line)")
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        chat=args.chat,
    )
    observer = RichObserver(new_console(stderr=True))  # progress on stderr: stdout holds the results alone
    columns: dict[str, list[str]] = {}
    sides = [True, False] if args.base else [False]
    for base in sides:
        with phase(observer, "loading the base model" if base else f"loading {args.model}"):
            loaded = load_for_generation(args.model, base=base, trust_remote_code=args.trust_remote_code)
        with phase(observer, f"generating {len(prompts)} completion(s) with {loaded.label}"):
            columns["base" if base else "trained"] = complete(
                loaded.model, loaded.tokenizer, prompts, settings
            )
        del loaded
    rows = [{"prompt": p, **{k: v[i] for k, v in columns.items()}} for i, p in enumerate(prompts)]
    if args.json:
        console.print_json(json.dumps(rows, ensure_ascii=False))
    else:
        console.print(report.completions_table(rows, list(columns)))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="complete prompts with a trained model (a run folder, a merged folder, a .gguf file …)",
        description="Complete prompts with MODEL: a run folder (its adapter on the base model it names), a "
        "merged or full model folder, a .gguf file, pkg:<package>/<file> or a hub id. Greedy by default.",
    )
    p.add_argument("model", metavar="MODEL", help="run folder, model folder, .gguf file, pkg: spec or hub id")
    p.add_argument("prompt", nargs="*", help="prompts to complete (or --file)")
    p.add_argument("--file", help='prompts, one per line (or a .jsonl file of {"prompt": …} rows)')
    p.add_argument(
        "--base", action="store_true", help="also complete with the run's base model, side by side"
    )
    p.add_argument("--max-new-tokens", "--max_new_tokens", type=int, default=64, dest="max_new_tokens")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="with --sample (1.0)")
    p.add_argument("--top-p", "--top_p", type=float, default=1.0, dest="top_p", help="with --sample (1.0)")
    p.add_argument("--top-k", "--top_k", type=int, default=50, dest="top_k", help="with --sample (50)")
    p.add_argument(
        "--repetition-penalty", "--repetition_penalty", type=float, default=1.0, dest="repetition_penalty"
    )
    p.add_argument("--seed", type=int, default=0, help="with --sample: the random seed (0)")
    p.add_argument("--chat", action="store_true", help="wrap prompts in the model's chat template")
    p.add_argument("--trust_remote_code", action="store_true")
    p.add_argument("--json", action="store_true", help="print the completions as JSON")
    p.set_defaults(func=cmd_generate)
