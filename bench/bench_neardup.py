"""Near-duplicate detection on one-line documents: recall, false positives, speed, memory, prepare cost.

    python bench/bench_neardup.py                      # recall/precision/speed/memory (~1 min)
    python bench/bench_neardup.py --prepare-mb 10      # … and the main recipe's prepare time with it

Sentences of 10, 20, 40 and 80 words are drawn from the word frequencies of
``data/sample/quebec_sample.txt`` (function words as frequent as in real text, at least one elided word
such as ``c'est`` per sentence), and each gets one variant of every kind: accents stripped, apostrophes
changed (' ’ → ʼ), one word replaced, dropped or added, two words replaced, an emoji appended. A pair is
caught when a fresh filter fed the original then the variant marks the variant (computed for all pairs
at once from the fingerprints, with the filter's own rule). Printed: recall per kind × length for the
tuned detector (``minhash_dedup`` with ``shingling = "short"``) and the former one (``shingling =
"words"``, threshold 0.8, the main recipe's setting before), the mean exact Jaccard of the compared
feature sets, false positives on 10,000 unrelated pairs per length and among all pairs of 20,000
sentences decided in one stream; fingerprints per second (a worker's share) and decisions per second
(the driver's), and the index's bytes per kept document and tracemalloc's peak while deciding.

``--prepare-mb N`` also runs the prepare stage of ``recipes/quebec_cpt.toml`` on a generated corpus of
N MB (``bench/make_corpus.py``), alternating without near-dedup, with the former setting and with the
tuned one, ``--repeat`` rounds, and prints the median wall-time ratios (the on-by-default rule: ≤ 1.3×).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
import unicodedata
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from qckit.components import Document  # noqa: E402
from qckit_builtins.filters.dedup import MinHashDedup, near_key_bytes, short_features  # noqa: E402

LENGTHS = (10, 20, 40, 80)
KINDS = ("accents", "apostrophe", "replace_1", "drop_1", "add_1", "replace_2", "emoji")
ONE_WORD = ("replace_1", "drop_1", "add_1")
EMOJI = ("😂", "🎉", "❤️", "👍", "🥶")
TUNED = {"shingling": "short"}
FORMER = {"threshold": 0.8}


def vocabulary() -> tuple[list[str], list[int], list[str]]:
    """The sample's words with their counts, and its elided words (``c'est``, ``j'ai`` …)."""
    lines = []
    for raw in (ROOT / "data" / "sample" / "quebec_sample.txt").read_bytes().splitlines():
        try:  # the sample holds a few deliberately broken lines: the clean ones suffice
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    text = "\n".join(line for line in lines if line.isprintable())
    counts = collections.Counter(
        w.strip('.,!?;:«»"()…').lower() for w in text.split() if any(c.isalpha() for c in w)
    )
    counts.pop("", None)
    words = sorted(counts)
    elided = [w for w in words if re.fullmatch(r"\w+['’]\w+", w)]
    return words, [counts[w] for w in words], elided


class Sentences:
    """Realistic sentences: words drawn by their frequency in the sample, one elided word, capitals and
    punctuation."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.words, self.weights, self.elided = vocabulary()

    def words_of(self, n: int) -> list[str]:
        words = self.rng.choices(self.words, self.weights, k=n)
        words[self.rng.randrange(n)] = self.rng.choice(self.elided)
        return words

    def text(self, words: list[str]) -> str:
        out = []
        for i, w in enumerate(words):
            out.append(w.capitalize() if i == 0 else w)
            if 0 < i < len(words) - 1 and self.rng.random() < 0.08:
                out[-1] += ","
        return " ".join(out) + self.rng.choice([".", ".", ".", "!", "?"])

    def variant(self, words: list[str], kind: str) -> str:
        rng = self.rng
        w = list(words)
        if kind == "accents":
            text = unicodedata.normalize("NFD", self.text(w))
            return "".join(c for c in text if not unicodedata.combining(c))
        if kind == "apostrophe":
            return re.sub("['’]", "ʼ", self.text(w))
        if kind == "emoji":
            return self.text(w) + " " + rng.choice(EMOJI)
        if kind in ("replace_1", "replace_2"):
            for i in rng.sample(range(len(w)), 1 if kind == "replace_1" else 2):
                w[i] = rng.choice([x for x in self.words if x != w[i]][:500])
        elif kind == "drop_1":
            del w[rng.randrange(len(w))]
        elif kind == "add_1":
            w.insert(rng.randrange(len(w) + 1), rng.choices(self.words, self.weights)[0])
        return self.text(w)


def pair_decisions(flt: MinHashDedup, first: list[str], second: list[str]) -> np.ndarray:
    """For each pair, whether a fresh ``flt`` fed ``first[i]`` then ``second[i]`` finds the second a
    near-duplicate: a band in common, and (when the filter verifies) enough equal b-bit values."""
    a = flt.fingerprint_batch([Document(t) for t in first])
    b = flt.fingerprint_batch([Document(t) for t in second])
    out = np.zeros(len(first), dtype=bool)
    width = 8 * flt.bands
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x is None or y is None:
            continue
        if not flt._clustered:
            out[i] = bool(np.any(x == y))
            continue
        xs, ys = np.frombuffer(x, np.uint8), np.frombuffer(y, np.uint8)
        band = np.any(xs[:width].view("<u8") == ys[:width].view("<u8"))
        out[i] = bool(band) and np.count_nonzero(xs[width:] == ys[width:]) >= flt._clusters.min_matches
    return out


def jaccard(flt: MinHashDedup, x: str, y: str) -> float:
    fx = set(short_features([near_key_bytes(x)], flt.short_words, flt.ngram)[0].tolist())
    fy = set(short_features([near_key_bytes(y)], flt.short_words, flt.ngram)[0].tolist())
    return len(fx & fy) / len(fx | fy) if fx | fy else 1.0


def recall_table(n_pairs: int, seed: int) -> None:
    tuned, former = MinHashDedup(**TUNED), MinHashDedup(**FORMER)
    print(
        f"tuned: shingling=short, threshold {tuned.threshold}, {tuned.num_perm} permutations, "
        f"{tuned.bands} bands x {tuned.rows} rows, verified (>= {tuned._clusters.min_matches} equal b-bit values)"
    )
    print(f"former: shingling=words, ngram 5, threshold 0.8, {former.bands} bands x {former.rows} rows")
    print(f"recall on {n_pairs} pairs per cell, tuned % (former %) [mean Jaccard of the tuned features]")
    print(f"{'kind':<12}" + "".join(f"{n:>24}" for n in LENGTHS))
    gen = Sentences(seed)
    worst_one_word = 1.0
    for kind in KINDS:
        cells = []
        for n in LENGTHS:
            originals = [gen.words_of(n) for _ in range(n_pairs)]
            first = [gen.text(w) for w in originals]
            second = [gen.variant(w, kind) for w in originals]
            r_t = pair_decisions(tuned, first, second).mean()
            r_f = pair_decisions(former, first, second).mean()
            jac = statistics.mean(jaccard(tuned, x, y) for x, y in zip(first, second, strict=True))
            if kind in ONE_WORD:
                worst_one_word = min(worst_one_word, r_t)
            cells.append(f"{100 * r_t:5.1f} ({100 * r_f:5.1f}) [{jac:.2f}]")
        print(f"{kind:<12}" + "".join(f"{c:>24}" for c in cells))
    print(f"lowest recall of a one-word edit (replace/drop/add) at 10-80 words: {100 * worst_one_word:.1f} %")


def false_positives(n_pairs: int, seed: int) -> None:
    tuned, former = MinHashDedup(**TUNED), MinHashDedup(**FORMER)
    gen = Sentences(seed + 1)
    for n in LENGTHS:
        first = [gen.text(gen.words_of(n)) for _ in range(n_pairs)]
        second = [gen.text(gen.words_of(n)) for _ in range(n_pairs)]
        fp_t = int(pair_decisions(tuned, first, second).sum())
        fp_f = int(pair_decisions(former, first, second).sum())
        # every pair of the 2 x n_pairs sentences, in one stream: a near-duplicate found is a false positive
        stream = MinHashDedup(**TUNED)
        fps = stream.fingerprint_batch([Document(t) for t in first + second])
        found = sum(r is not None for r in stream.drop_reasons(fps))
        jac = statistics.mean(jaccard(tuned, x, y) for x, y in zip(first[:2000], second[:2000], strict=True))
        print(
            f"{n:2d} words: false positives on {n_pairs:,} unrelated pairs: tuned {fp_t}, former {fp_f}; "
            f"among all {2 * n_pairs:,} sentences in one stream: {found} (mean Jaccard {jac:.3f})"
        )


def speed_and_memory(n_docs: int, seed: int) -> None:
    gen = Sentences(seed + 2)
    sizes: list[tuple[float, float]] = []  # the tuned index's bytes per kept document, its band table's load
    for n in LENGTHS:
        texts = [gen.text(gen.words_of(n)) for _ in range(n_docs)]
        docs = [Document(t) for t in texts]
        rates = []
        for settings in (TUNED, FORMER):
            flt = MinHashDedup(**settings)
            start = time.perf_counter()
            fps = []
            for lo in range(0, len(docs), 1000):  # batches like the pipeline's
                fps.extend(flt.fingerprint_batch(docs[lo : lo + 1000]))
            fp_s = time.perf_counter() - start
            start = time.perf_counter()
            for lo in range(0, len(fps), 1000):
                flt.drop_reasons(fps[lo : lo + 1000])
            decide_s = time.perf_counter() - start
            flt.reset()
            tracemalloc.start()  # a second pass: tracing slows allocations down
            for lo in range(0, len(fps), 1000):
                flt.drop_reasons(fps[lo : lo + 1000])
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            rates.append((n_docs / fp_s, n_docs / decide_s, peak))
            if settings is TUNED:
                index = flt._clusters
                held = sum(
                    a.nbytes for a in (index.index.keys, index.index.docs, index.sketches, index.serials)
                )
                sizes.append((held / len(index), len(index.index) / len(index.index.keys)))
        (tf, td, tp), (ff, fd, fpk) = rates
        print(
            f"{n:2d} words: fingerprints/s tuned {tf:9,.0f} former {ff:9,.0f} ({tf / ff:.1f}x); "
            f"decisions/s tuned {td:9,.0f} former {fd:9,.0f}; "
            f"peak while deciding {n_docs:,}: tuned {tp / 1e6:.1f} MB, former {fpk / 1e6:.1f} MB"
        )
    flt = MinHashDedup(**TUNED)
    print(
        f"tuned index: {min(b for b, _ in sizes):.0f}-{max(b for b, _ in sizes):.0f} bytes per kept document "
        f"({flt.bands} bands in a hash table {min(u for _, u in sizes):.0%}-{max(u for _, u in sizes):.0%} full "
        f"at 12 bytes a slot, {flt.num_perm} b-bit values and a serial in arrays that double as they grow); former: "
        f"{8 * MinHashDedup(**FORMER).bands} bytes"
    )


def prepare_ratio(size_mb: float, repeat: int, workers: int) -> None:
    from bench_prepare import run_measured
    from make_corpus import make_corpus

    work = Path(tempfile.mkdtemp(prefix="qckit-neardup-"))
    corpus = work / f"corpus_{int(size_mb)}mb.txt"
    make_corpus(corpus, size_mb, seed=0)
    recipe = (ROOT / "recipes" / "quebec_cpt.toml").read_text(encoding="utf-8")
    recipe = recipe[: recipe.index("[train]")]
    recipe = re.sub(r"(?m)^inputs = .*$", f"inputs = [{str(corpus)!r}]", recipe)
    recipe = re.sub(r"(?m)^workers = \d+", f"workers = {workers}", recipe)
    block = re.search(r'\[\[prepare\.filters\]\]\nuse = "minhash_dedup".*\n(?:[a-z_]+ = .*\n)*', recipe)
    assert block, "the main recipe has no minhash_dedup filter"
    variants = {
        "without near-dedup": "",
        "former (words, 0.8)": '[[prepare.filters]]\nuse = "minhash_dedup"\nthreshold = 0.8\n',
        "tuned (short)": '[[prepare.filters]]\nuse = "minhash_dedup"\nshingling = "short"\n',
    }
    commands = {}
    for name, filters in variants.items():
        text = recipe.replace(block.group(0), filters)
        out = work / re.sub(r"\W+", "_", name)
        text = re.sub(r"(?m)^output = .*$", f"output = {str(out)!r}", text)
        path = out.with_suffix(".toml")
        path.write_text(text, encoding="utf-8")
        commands[name] = [sys.executable, "-m", "qckit", "run", str(path), "--stage", "prepare"]
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(repeat):
        line = []
        for name, cmd in commands.items():
            wall, cpu, rss = run_measured(cmd)
            walls[name].append(wall)
            cpus[name].append(cpu)
            line.append(f"{name} {wall:.2f} s (cpu {cpu:.1f} s, {rss:.0f} MB)")
        print(f"round {round_ + 1}: " + "; ".join(line))
    base = "without near-dedup"
    for name in list(variants)[1:]:
        wall = statistics.median(w / b for w, b in zip(walls[name], walls[base], strict=True))
        cpu = statistics.median(c / b for c, b in zip(cpus[name], cpus[base], strict=True))
        print(
            f"main recipe prepare, {name}: {wall:.2f}x the wall time without, {cpu:.2f}x the CPU time "
            f"(medians of the rounds' ratios; {statistics.median(walls[name]):.2f} s against "
            f"{statistics.median(walls[base]):.2f} s)"
        )
    for name in variants:
        out = work / re.sub(r"\W+", "_", name)
        kept = sum(len((out / f).read_bytes().splitlines()) for f in ("train.txt", "val.txt"))
        print(f"  kept {name}: {kept:,} documents")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=500, help="variant pairs per kind and length")
    ap.add_argument("--unrelated", type=int, default=10_000, help="unrelated pairs per length")
    ap.add_argument("--speed-docs", type=int, default=20_000, help="documents per length for the speed lines")
    ap.add_argument(
        "--prepare-mb", type=float, help="also time the main recipe's prepare on a corpus this big"
    )
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    recall_table(args.pairs, args.seed)
    false_positives(args.unrelated, args.seed)
    speed_and_memory(args.speed_docs, args.seed)
    if args.prepare_mb:
        prepare_ratio(args.prepare_mb, args.repeat, args.workers)


if __name__ == "__main__":
    main()
