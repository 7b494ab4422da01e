"""The language decision on sets written for it: the generic ``langid`` filter vs ``dialect_langid``.

    python bench/bench_langid.py                  # bench/data/langid/: tuning sets, then held-out sets
    python bench/bench_langid.py --repeat 20      # more rounds for the throughput ratio

Sets (``bench/data/langid/``, one sentence a line, ``#`` comments; written for this bench): Quebec
French of three kinds (``quebec_everyday``, ``quebec_short``: 3 to 5 words, ``quebec_codeswitch``:
English words and chiac-like anglicisms), standard French (``french``), very short everyday Quebec and
standard French (``french_short``: 3 to 5 words), ``english``, and other languages (``other``,
``other_short``: 3 to 5 words; ``code<TAB>sentence``). ``heldout/`` holds sets of the same kinds written
before the defaults they measure were chosen, reported separately (``french_short`` and
``other_short``: before the word evidence, the ``lexicon`` step).

Every sentence first goes through the seed's own filters (``length`` ≥ 10 characters, ``min_words`` 3,
``unique_words`` 0.3, ``alpha_ratio`` 0.7, qckit's defaults): only the sentences that pass them are
measured, and the excluded ones are counted. Printed: per set, the share kept by ``langid`` (py3langid,
all languages, ``min_confidence`` 0.5: the filter ``recipes/quebec_cpt.toml`` used before), by
``langid`` with ``candidates = ["fr", "en"]`` (the obvious fix, which lets other languages through) and
by ``dialect_langid`` without its word evidence (``lexicon = false``: the decisions before it) and
with it (the defaults); the confusion table of ``dialect_langid`` (true set × kept / dropped as
which language); the goals (≥ 98 % of each Quebec kind and of standard French kept, ≥ 95 % of English and
other languages dropped); the throughput of both filters, alternating rounds in this process, and the
ratio new/old, on the French sets (what a Quebec corpus mostly holds) and on every set (``dialect_langid``
through its batch method, one batch per set, as the prepare stage calls it; ``langid`` has none), and
the cost of the word evidence (``dialect_langid`` with / without it, in the same rounds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from qckit.components import Document
from qckit_builtins.filters.dialect_langid import DialectLangId
from qckit_builtins.filters.heuristics import (
    AlphaRatioFilter,
    LengthFilter,
    MinWordsFilter,
    UniqueWordsFilter,
)
from qckit_builtins.filters.langid import LangIdFilter

DATA = Path(__file__).resolve().parent / "data" / "langid"
QUEBEC = ("quebec_everyday", "quebec_short", "quebec_codeswitch")
FRENCH = (*QUEBEC, "french", "french_short")  # kept sets; the others are dropped sets
SETS = (*FRENCH, "english", "other", "other_short")
KEEP_GOAL, DROP_GOAL = 0.98, 0.95


def read_set(path: Path, name: str) -> list[tuple[str, str]]:
    """(true label, sentence) pairs: the set's name, or ``other:<code>`` for the other languages."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if name.startswith("other"):
            code, text = line.split("\t", 1)
            pairs.append((f"other:{code}", text))
        else:
            pairs.append((name, line))
    return pairs


def seed_filters():
    return [LengthFilter(), MinWordsFilter(), UniqueWordsFilter(), AlphaRatioFilter()]


def passes_seed(text: str, filters) -> bool:
    return all(f.drop_reason(Document(text)) is None for f in filters)


def decide(flt, text: str) -> str:
    """``kept`` or the language the filter dropped the text as."""
    doc = Document(text)
    reason = flt.drop_reason(doc)
    if reason is None:
        return "kept"
    return doc.meta.get("lang", "?") if reason != "low_confidence" else "fr?"


def measure(folder: Path, title: str, old, old_fr_en, new, no_lexicon) -> dict[str, list[str]]:
    """Print one folder's tables; return the measured sentences by set."""
    filters = seed_filters()
    rows: dict[str, list[tuple[str, str]]] = {}
    excluded: Counter[str] = Counter()
    for name in SETS:
        path = folder / f"{name}.txt"
        if not path.exists():
            continue
        for label, text in read_set(path, name):
            if passes_seed(text, filters):
                rows.setdefault(name, []).append((label, text))
            else:
                excluded[name] += 1
    print(f"\n== {title} ({folder.relative_to(DATA.parent.parent)}) ==")
    print(
        f"{'set':<20}{'measured':>9}{'excluded':>10}{'langid kept':>13}{'langid fr/en':>14}"
        f"{'no lexicon':>12}{'dialect_langid kept':>21}  goal"
    )
    confusion: dict[str, Counter[str]] = {}
    ok = True
    for name, pairs in rows.items():
        old_kept = sum(decide(old, text) == "kept" for _, text in pairs)
        fr_en_kept = sum(decide(old_fr_en, text) == "kept" for _, text in pairs)
        before_kept = sum(decide(no_lexicon, text) == "kept" for _, text in pairs)
        new_decisions = [decide(new, text) for _, text in pairs]
        for (label, _), decision in zip(pairs, new_decisions, strict=True):
            confusion.setdefault(label, Counter())[decision] += 1
        new_kept = new_decisions.count("kept")
        n = len(pairs)
        if name in FRENCH:
            met = new_kept / n >= KEEP_GOAL
            goal = f"keep ≥ {KEEP_GOAL:.0%}: {'met' if met else 'MISSED'}"
        else:
            met = (n - new_kept) / n >= DROP_GOAL
            goal = f"drop ≥ {DROP_GOAL:.0%}: {'met' if met else 'MISSED'}"
        ok &= met
        print(
            f"{name:<20}{n:>9}{excluded[name]:>10}{old_kept / n:>12.1%} {fr_en_kept / n:>13.1%}"
            f" {before_kept / n:>11.1%} {new_kept / n:>20.1%}  {goal}"
        )
    columns = ["kept", *sorted({d for c in confusion.values() for d in c} - {"kept"})]
    print("\nconfusion (dialect_langid): true set × kept / dropped as (fr? = French below the threshold)")
    print(f"{'':<22}" + "".join(f"{c:>6}" for c in columns))
    for label, counts in confusion.items():
        print(f"{label:<22}" + "".join(f"{counts.get(c, 0) or '.':>6}" for c in columns))
    misses = [
        (label, text, decide(new, text))
        for pairs in rows.values()
        for label, text in pairs
        if (decide(new, text) == "kept") != (label in FRENCH)
    ]
    if misses:
        print("\nmistakes:")
        for label, text, decision in misses:
            print(f"  {label}: {text!r} → {decision}")
    print(f"\nall goals {'met' if ok else 'NOT met'}")
    return {name: [text for _, text in pairs] for name, pairs in rows.items()}


def throughput(what: str, texts: list[str], old, new, no_lexicon, repeat: int) -> None:
    """Documents per second of each filter, alternating rounds; the median ratios. A filter with a batch
    method gets the whole set as one batch, as the prepare stage would call it."""
    filters = (("langid", old), ("dialect_langid", new), ("no lexicon", no_lexicon))
    for _, flt in filters:  # load the models (the word frequencies: a sentence only they keep)
        decide(flt, texts[0])
    decide(new, "On verra ben.")
    rates: dict[str, list[float]] = {key: [] for key, _ in filters}
    for _ in range(repeat):
        for key, flt in filters:
            docs = [Document(t) for t in texts]
            start = time.perf_counter()
            if hasattr(flt, "drop_reason_batch"):
                flt.drop_reason_batch(docs)
            else:
                for doc in docs:
                    flt.drop_reason(doc)
            rates[key].append(len(docs) / (time.perf_counter() - start))
    old_rate, new_rate = statistics.median(rates["langid"]), statistics.median(rates["dialect_langid"])
    print(
        f"throughput, {what} ({len(texts)} sentences), median of {repeat} alternating rounds: "
        f"langid {old_rate:,.0f} docs/s, dialect_langid {new_rate:,.0f} docs/s, "
        f"ratio new/old {new_rate / old_rate:.2f}; with/without the word evidence "
        f"{statistics.median(a / b for a, b in zip(rates['dialect_langid'], rates['no lexicon'], strict=True)):.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="throughput rounds (default 7)")
    args = parser.parse_args(argv)
    old, old_fr_en, new = LangIdFilter(), LangIdFilter(candidates=["fr", "en"]), DialectLangId()
    no_lexicon = DialectLangId(lexicon=False)
    sets = [measure(DATA, "tuning sets", old, old_fr_en, new, no_lexicon)]
    if (DATA / "heldout").is_dir():
        sets.append(
            measure(
                DATA / "heldout",
                "held-out sets (written before the defaults they measure were chosen)",
                old,
                old_fr_en,
                new,
                no_lexicon,
            )
        )
    french = [text for by_set in sets for name in FRENCH for text in by_set.get(name, [])]
    every = [text for by_set in sets for texts in by_set.values() for text in texts]
    print()
    # Clearly French documents cost no classification (the fast path); the model scores the others, and a
    # dropped one among all languages too (from the same features) to name its language.
    throughput("Quebec and standard French, all kept", french, old, new, no_lexicon, args.repeat)
    throughput("every set, half dropped", every, old, new, no_lexicon, args.repeat)
    word_table(
        [text for by_set in sets for name in ("french_short", "other_short") for text in by_set.get(name, [])]
    )
    return 0


def word_table(texts: list[str]) -> None:
    """The word evidence's costs: building its table (once per cache), its size, a vote per short text."""
    from qckit_builtins import lexicon
    from qckit_builtins.filters.dialect_langid import CANDIDATES

    start = time.perf_counter()
    arrays = lexicon._arrays(tuple(CANDIDATES))  # what a run with an empty cache builds, wordfreq included
    build = time.perf_counter() - start
    table = lexicon.lexicon(tuple(CANDIDATES))
    table.votes(texts)  # the pages read once
    rounds = []
    for _ in range(7):
        start = time.perf_counter()
        table.votes(texts)
        rounds.append((time.perf_counter() - start) / len(texts))
    print(
        f"word table: {len(arrays['words']):,} words, {arrays['words'].nbytes / 1e6:.1f} + "
        f"{arrays['logp'].nbytes / 1e6:.1f} MB, built in {build:.1f} s (once per cache); a vote "
        f"{statistics.median(rounds) * 1e6:.1f} µs per very short text (median of 7 batches of {len(texts)})"
    )


if __name__ == "__main__":
    sys.exit(main())
