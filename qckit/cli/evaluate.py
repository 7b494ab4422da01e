"""``qckit evaluate``: any model (and adapter) on a text file, a minimal-pair file, a choice task, or a
recipe's eval sets.

Each file flag is the eval-set table of its kind (``--val_file`` → ``bpb``, ``--pairs`` →
``minimal_pairs``, ``--choice`` → ``choice``), validated like a recipe's ``[[train.eval]]`` table;
``--recipe`` takes the recipe's sets (its validation file and ``[[train.eval]]``) with its evaluation
settings. Plain output is one line per set; ``--json`` prints the numbers. ``--export-lm-eval DIR``
also writes each set as an lm-evaluation-harness task (:mod:`qckit.evaluate.lm_eval_tasks`).

``--max_length`` defaults to the model's context length (lm-eval's rule,
:func:`~qckit.evaluate.loglik.context_length`) for a file, and to the train run's evaluation window
for ``--recipe`` (``train.eval_max_length``, else the chunker's ``max_length``), so a recipe's numbers
are those its training run logs.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

from rich.console import Console

from qckit import report
from qckit.cli.common import add_set_flag, new_console, quiet_third_party
from qckit.cli.observer import RichObserver
from qckit.errors import RecipeError

#: file flag → (eval-set kind, the flags that are that kind's settings: flag → parameter)
FILE_FLAGS: dict[str, tuple[str, dict[str, str]]] = {
    "val_file": (
        "bpb",
        {
            "protocol": "protocol",
            "stride": "stride",
            "prefix_token": "prefix_token",
            "split_special_tokens": "split_special_tokens",
        },
    ),
    "pairs": (
        "minimal_pairs",
        {"metric": "metric", "prefix_token": "prefix_token", "split_special_tokens": "split_special_tokens"},
    ),
    "choice": (
        "choice",
        {
            "metric": "metric",
            "template": "template",
            "choices": "choices",
            "answer_field": "answer_field",
            "chat": "chat",
            "format": "format",
            "prefix_token": "prefix_token",
            "split_special_tokens": "split_special_tokens",
        },
    ),
}
SOURCE = "<command line>"


def _set_name(path: str) -> str:
    """A set name from a file name: its stem with characters a set name cannot have replaced by ``_``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).name.split(".")[0]) or "set"
    return stem if stem[0].isalnum() else f"set{stem}"


def _file_sets(args: argparse.Namespace, host: Any) -> list[Any]:
    from qckit.evaluate.sets import EvalSet
    from qckit.recipe import build_component

    flag = next(f for f in FILE_FLAGS if getattr(args, f))
    kind, settings = FILE_FLAGS[flag]
    path = getattr(args, flag)
    table: dict[str, Any] = {"kind": kind, "name": _set_name(path), "path": path}
    for option, parameter in settings.items():
        value = getattr(args, option)
        if option == "prefix_token" and isinstance(value, str) and value.isdigit():
            value = int(value)  # a token id
        if value is not None and value is not False:
            table[parameter] = value
    for option in {o for _, s in FILE_FLAGS.values() for o in s} - set(settings):
        if getattr(args, option) not in (None, False):
            raise RecipeError(f"--{option} does not apply to --{flag}", source=SOURCE, key=f"--{option}")
    try:
        spec = build_component(host, "evaluator", table, f"--{flag}", SOURCE)
    except RecipeError as exc:
        # "--pairs.metric" → "--metric": the flag that set the parameter
        key = exc.key or ""
        parameter = key.split(".", 1)[1] if "." in key else ""
        setter = next((o for o, p in settings.items() if p == parameter), None)
        raise RecipeError(exc.detail, source=SOURCE, key=f"--{setter}" if setter else f"--{flag}") from None
    return [EvalSet(spec.entry, spec.instance)]


def cmd_evaluate(args: argparse.Namespace, console: Console) -> int:
    from qckit.host import PluginHost

    quiet_third_party()
    recipe = None
    if args.recipe:
        from qckit.recipe import load_recipe

        recipe = load_recipe(args.recipe, overrides=args.set or [])
        if recipe.train is None:
            raise RecipeError("the recipe has no [train] table, so no eval sets", source=args.recipe)
        host = recipe.host
    else:
        if args.set:
            raise RecipeError("--set applies to --recipe only", source=SOURCE, key="--set")
        host = PluginHost.from_entry_points()
    model_spec = args.model or (recipe.train.settings.model if recipe and recipe.train else None)
    if not model_spec:
        raise RecipeError("no model: give --model", source=SOURCE, key="--model")
    max_length, batch_size = args.max_length, args.batch_size
    if max_length < 0 or max_length == 1:
        raise RecipeError("must be 0 (the default) or at least 2", source=SOURCE, key="--max_length")
    if batch_size < 0:
        raise RecipeError("must be 0 (the default) or at least 1", source=SOURCE, key="--batch_size")
    if recipe is not None and recipe.train is not None:
        from qckit.evaluate.sets import plan_sets

        sets = plan_sets(recipe.train, host)
        if not sets:
            raise RecipeError(
                "the recipe has no eval sets (no val_file, no [[train.eval]])", source=args.recipe
            )
        settings = recipe.train.settings
        window = getattr(recipe.train.chunker.instance, "max_length", 0)
        max_length = max_length or settings.eval_max_length or window
        batch_size = batch_size or settings.eval_batch_size or settings.batch_size
    else:
        sets = _file_sets(args, host)
    batch_size = batch_size or 4  # max_length 0: the model's context length

    from qckit.evaluate.loglik import EvalContext
    from qckit.evaluate.sets import EvalSuite
    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model, tokenizer_source

    source = resolve_model(model_spec)
    # a run that grew the vocabulary (train.add_tokens) saved its own tokenizer beside the adapter
    tokenizer = load_tokenizer(
        tokenizer_source(source, args.adapter), trust_remote_code=args.trust_remote_code
    )
    observer = RichObserver(new_console(stderr=True))  # progress on stderr: stdout holds the results alone
    context = EvalContext(tokenizer, max_length=max_length, batch_size=batch_size, observer=observer)
    suite = EvalSuite(sets, context)  # reads every file before the model is loaded
    plan = None
    if args.export_lm_eval:
        from qckit.evaluate import lm_eval_tasks

        # refused before the model loads: the sets and their rows decide
        plan = lm_eval_tasks.plan_export(sets, suite.data, tokenizer, source=args.recipe or SOURCE)
    model = load_model(source, trust_remote_code=args.trust_remote_code)
    if args.adapter:
        model = load_adapter(model, args.adapter)
    if plan is not None:
        lm_eval_tasks.write_export(
            plan,
            args.export_lm_eval,
            tokenizer=tokenizer,
            max_length=context.scorer(model).max_length,
            model=lm_eval_tasks.model_name(model_spec, args.adapter),
        )
    measurement = suite.measure(model, 0)
    if plan is not None:
        lm_eval_tasks.write_results(args.export_lm_eval, measurement, plan)
    for numbers in measurement.values():
        numbers.pop("step", None)
    if args.json:
        data: dict[str, Any] = (
            {"model": model_spec, "adapter": args.adapter, "sets": measurement}
            if recipe is not None
            else {"name": sets[0].name, "path": sets[0].settings.path, **measurement[sets[0].name]}
        )
        console.print_json(json.dumps(_finite(data), ensure_ascii=False))
    else:
        for eval_set, (name, numbers) in zip(sets, measurement.items(), strict=True):
            # one file: named by its file name, printed as written; a recipe's sets by their names
            label = name if recipe is not None else Path(eval_set.settings.path).name
            console.print(report.eval_line("", numbers, label, seconds=False))
    if plan is not None:
        note = (
            f"lm-eval tasks of {len(plan.tasks)} set(s) written to {args.export_lm_eval} (see its README.md)"
        )
        (Console(stderr=True) if args.json else console).print(report.literal(note))  # stdout: the JSON only
    return 0


def _finite(value: Any) -> Any:
    """JSON has no infinity or NaN: such numbers become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="bits per byte, minimal-pair or choice-task accuracy of a model, or a recipe's eval sets",
        description="Score a model on one file (--val_file, --pairs, --choice) or on a recipe's eval sets "
        "(--recipe). Plain output is one line per set; --json prints the numbers.",
    )
    p.add_argument("--model", help="hub id, local directory, .gguf file or pkg:<package>/<file>")
    p.add_argument("--adapter", help="a LoRA adapter directory to apply")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--val_file", help="held-out text, one document per line: bits per byte")
    what.add_argument("--pairs", help="minimal pairs (.jsonl, BLiMP or QFrBLiMP rows): accuracy")
    what.add_argument("--choice", help="a multiple-choice task (.jsonl): accuracy and macro-F1")
    what.add_argument("--recipe", help="every eval set of a recipe (its val_file and [[train.eval]])")
    add_set_flag(p)
    p.add_argument(
        "--protocol", choices=["document", "stream"], help="--val_file: scoring protocol (document)"
    )
    p.add_argument("--stride", type=int, help="--val_file with --protocol stream: window overlap in tokens")
    p.add_argument("--prefix_token", help="the token (or id) before a scored text (default: BOS, else EOS)")
    p.add_argument("--metric", help="--pairs/--choice: the headline metric (accuracy, accuracy_norm …)")
    p.add_argument("--template", help="--choice: prompt template over the row's fields, e.g. '{sentence}'")
    p.add_argument("--choices", nargs="+", help="--choice: the same choices for every row, e.g. non oui")
    p.add_argument("--answer_field", help="--choice: the row field holding the answer (answer)")
    p.add_argument("--chat", action="store_true", help="--choice: wrap prompts in the chat template")
    p.add_argument(
        "--format",
        help="--choice: a COLE task's released rows (qfrcola, qfrcore, qfrcort): template, choices, answer_field",
    )
    p.add_argument(
        "--split_special_tokens",
        action="store_true",
        help="encode the text of special tokens (</s>) as plain text, not as the token (lm-eval's way)",
    )
    p.add_argument(
        "--max_length", type=int, default=0, help="longest model input in tokens (the model's context length)"
    )
    p.add_argument(
        "--batch_size",
        type=int,
        default=0,
        help="batch_size x min(max_length, 1024) tokens per forward pass (4)",
    )
    p.add_argument("--trust_remote_code", action="store_true")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    p.add_argument(
        "--export-lm-eval",
        dest="export_lm_eval",
        metavar="DIR",
        help="also write each set as an lm-evaluation-harness task (YAML + its rows) into DIR",
    )
    p.set_defaults(func=cmd_evaluate)
