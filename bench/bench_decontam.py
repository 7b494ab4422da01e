"""Decontamination cost: the ``decontaminate`` filter against an eval set of N sentences.

A generated corpus (``make_corpus.py``) and a generated minimal-pairs file of ``--sentences`` sentences
(two per pair, 5 to 24 words each, drawn one by one from the corpus's own words, as often as they occur
in it, so nearly every corpus word is an eval word: the filter's worst case, where unknown words rarely
break the sequences). Every
``--plant-every``-th corpus line gets an eval sentence appended, in capitals and with other
punctuation, and the run checks that exactly those lines are dropped.

Printed: the time to build the index; the filter alone in this process on batches of 256 KiB
(documents/s, MB/s); then ``qckit prepare`` (the default filters) without and with
``--decontaminate``, alternating for ``--repeat`` rounds, and the median wall-time ratio::

    python bench/bench_decontam.py --size-mb 20 --sentences 20000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

_WORD = re.compile(r"\w+(?:['’]\w+)?")


def make_eval(corpus: Path, out: Path, sentences: int, seed: int) -> list[str]:
    """A minimal-pairs file of ``sentences`` sentences made of the corpus's words; returns them."""
    rng = random.Random(seed)
    words = _WORD.findall(corpus.read_text(encoding="utf-8", errors="replace")[: 4 << 20])
    made = []
    with out.open("w", encoding="utf-8") as f:
        for _ in range(sentences // 2):
            good = rng.choices(words, k=rng.randint(5, 24))  # the corpus's words, as often as in it
            while good[0].lower() == good[1].lower():  # the pair would be two identical sentences, skipped
                good[1] = rng.choice(words)
            bad = [good[1], good[0], *good[2:]]
            pair = (" ".join(good).capitalize() + ".", " ".join(bad).capitalize() + ".")
            f.write(
                json.dumps({"sentence_good": pair[0], "sentence_bad": pair[1]}, ensure_ascii=False) + "\n"
            )
            made.extend(pair)
    return made


def plant(corpus: Path, out: Path, texts: list[str], every: int, seed: int) -> int:
    """``corpus`` with an eval text (upper-cased, its full stop made ``!!``) appended to every
    ``every``-th line; returns the number of lines changed."""
    rng = random.Random(seed)
    planted = 0
    with corpus.open("rb") as src, out.open("wb") as dst:
        for number, line in enumerate(src, start=1):
            if number % every == 0 and line.strip():
                text = rng.choice(texts).upper().replace(".", " !!")
                line = line.rstrip(b"\r\n") + b" " + text.encode("utf-8") + b"\n"
                planted += 1
            dst.write(line)
    return planted


def filter_alone(corpus: Path, pairs: Path) -> tuple[float, int, int, float, float, float]:
    """(index build seconds, documents, dropped, documents/s, MB/s, MB per CPU second) of the filter in
    this process."""
    from qckit.components import Document
    from qckit_builtins.filters.decontam import Decontaminate

    start = time.perf_counter()
    flt = Decontaminate(files=[str(pairs)])
    flt.drop_reason_batch([])  # builds the index
    build = time.perf_counter() - start
    batches, batch, size = [], [], 0
    with corpus.open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if text:
                batch.append(Document(text, str(corpus), number))
                size += len(line)
            if size >= 256 << 10:
                batches.append(batch)
                batch, size = [], 0
    batches.append(batch)
    nbytes = sum(len(d.text.encode("utf-8")) for b in batches for d in b)
    docs = sum(map(len, batches))
    start, cpu = time.perf_counter(), time.process_time()
    dropped = sum(r is not None for b in batches for r in flt.drop_reason_batch(b))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return build, docs, dropped, docs / seconds, nbytes / 1e6 / seconds, nbytes / 1e6 / cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=20)
    ap.add_argument("--sentences", type=int, default=20000, help="eval sentences (two per minimal pair)")
    ap.add_argument("--plant-every", type=int, default=1000, help="put an eval sentence into every Nth line")
    ap.add_argument("--workers", type=int, default=0, help="qckit workers (0 = one per core)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="rounds of (without, with); the median ratio is printed"
    )
    ap.add_argument("--keep", help="directory to keep the corpus and outputs in")
    args = ap.parse_args()

    from bench_prepare import qckit_prepare, run_measured
    from make_corpus import make_corpus

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qckit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    source = work / f"corpus_{int(args.size_mb)}mb.txt"
    if not source.exists():
        make_corpus(source, args.size_mb, seed=0)
    pairs = work / f"pairs_{args.sentences}.jsonl"
    texts = make_eval(source, pairs, args.sentences, seed=1)
    corpus = work / "corpus_planted.txt"
    planted = plant(source, corpus, texts, args.plant_every, seed=2)
    size_mb = corpus.stat().st_size / 1e6
    print(
        f"corpus: {size_mb:.1f} MB, {planted:,} lines with an eval sentence; eval set: {len(texts):,} sentences"
    )

    build, docs, dropped, docs_s, mb_s, mb_cpu_s = filter_alone(corpus, pairs)
    print(f"index built in {build:.2f} s")
    print(
        f"filter alone (1 process): {docs_s:,.0f} documents/s  {mb_s:.1f} MB/s  ({mb_cpu_s:.1f} MB per CPU "
        f"second; {docs:,} documents, {dropped:,} dropped)"
    )
    if dropped < planted:
        raise SystemExit(f"only {dropped:,} of the {planted:,} planted lines were dropped")

    base = qckit_prepare(corpus, work / "without", args.workers)
    with_ = [*qckit_prepare(corpus, work / "with", args.workers), "--decontaminate", str(pairs)]
    ratios, cpu_ratios = [], []
    for round_ in range(args.repeat):
        b_wall, b_cpu, _ = run_measured(base)
        d_wall, d_cpu, _ = run_measured(with_)
        ratios.append(d_wall / b_wall)
        cpu_ratios.append(d_cpu / b_cpu)
        print(
            f"round {round_ + 1}: prepare {b_wall:6.2f} s ({size_mb / b_wall:5.1f} MB/s, cpu {b_cpu:5.2f} s)  "
            f"with --decontaminate {d_wall:6.2f} s ({size_mb / d_wall:5.1f} MB/s, cpu {d_cpu:5.2f} s)  "
            f"ratio {d_wall / b_wall:.2f}x"
        )
    stats = json.loads((work / "with" / "prepare_stats.json").read_text())
    reasons = stats["filters"]["decontaminate"]["reasons"]
    print(f"prepare with --decontaminate dropped {sum(reasons.values()):,} ({planted:,} planted)")
    print(
        f"ratio with/without: wall time {statistics.median(ratios):.2f}x, CPU time "
        f"{statistics.median(cpu_ratios):.2f}x (medians of {len(ratios)})"
    )


if __name__ == "__main__":
    main()
