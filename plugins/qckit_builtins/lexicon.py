"""Word frequencies of the candidate languages: a naive-Bayes vote among them from a short text's words.

py3langid scores character n-grams, which a three-word text cannot supply in number: "On verra bien."
holds a dozen, and Spanish explains them better than French. Its words are evidence the n-grams do not
weigh: "verra" is a French word and no word of the other candidates. :class:`Lexicon` holds, for the
candidates, the frequency of each word in wordfreq's ``small`` lists (its words seen at least once per
million tokens in subtitles, Wikipedia, news, web and social text), folded as
:func:`~qckit_builtins.filters.dialect.fold_words` folds a document (accents and case dropped, elisions
split: wordfreq splits them too for French), and :meth:`Lexicon.vote` gives each candidate the
probability of the text's words as a unigram model, normalized over the candidates (a uniform prior).
A Quebec spelling is looked up as the standard words it stands for (``data/quebec_spellings.txt``:
"ben" as "bien", "chu" as "je suis"): the lists are mostly of standard written French, where "ben" is
rarer than in Dutch or Catalan and "pantoute" is missing.

A word missing from a language's list gets ``UNKNOWN`` (1e-7, a tenth of the least frequency a small
list holds); a word missing from every list says nothing and is left out. The vote also gives the
text's words missing from the French list (:attr:`Vote.not_french`): the vote only compares the
candidates, so a Swedish "Vi ses imorgon." whose two short words are French ones ("vi", "ses") wins it
for French; a caller that requires every word to be French keeps the languages outside the candidates
out.

Cost (``bench/bench_langid.py``'s last line): the table is built once per cache from wordfreq's lists
(``wordfreq`` is imported then only: 1.1 s)
and memory-mapped from qckit's table cache (:mod:`qckit.table_cache`), so the workers share its pages
and import nothing: for the nine default candidates, 206,000 folded words of at most ``MAX_BYTES`` bytes
(5.0 MB) and their float32 log-frequencies (7.4 MB): no private memory, ~10 MB of file-backed pages
in each process's RSS once it has voted, shared by all. A vote looks its words up by binary search
(``np.searchsorted``), a batch of texts at once: 5.5 µs per very short text. ``dialect_langid`` reads the
table only when a document reaches its word step.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from qckit.table_cache import cached_table
from qckit_builtins.filters import dialect
from qckit_builtins.filters.dialect import fold_words

#: the frequency given to a word missing from a language's list (a tenth of the small lists' least)
UNKNOWN = 1e-7
#: the longest folded word kept (bytes, ASCII after folding); a longer word of a text is unknown
MAX_BYTES = 24
_FRENCH = "fr"
_LIST = "small"


@dataclass(frozen=True)
class Vote:
    """What a text's words say (after the Quebec spellings are replaced)."""

    #: each candidate's probability, by code
    probabilities: dict[str, float]
    #: how many words the text has
    n_words: int
    #: its words missing from the French list, in order
    not_french: tuple[str, ...]


@functools.cache
def quebec_spellings() -> dict[str, tuple[str, ...]]:
    """``data/quebec_spellings.txt``: a Quebec word (folded) → the standard words it stands for (folded)."""
    source = "qckit_builtins/data/quebec_spellings.txt"
    text = resources.files("qckit_builtins").joinpath("data/quebec_spellings.txt").read_text(encoding="utf-8")
    spellings = {}
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        quebec, _, standard = entry.partition("=")
        key, words = fold_words(quebec), tuple(fold_words(standard))
        if len(key) != 1 or not words:
            raise ValueError(f"{source}:{number}: cannot use {entry!r} (one word = standard words)")
        spellings[key[0]] = words
    return spellings


def standard_words(text: str) -> list[str]:
    """The folded words of ``text`` (:func:`fold_words`), a Quebec spelling replaced by its standard words."""
    spellings = quebec_spellings()
    words: list[str] = []
    for word in fold_words(text):
        words.extend(spellings.get(word, (word,)))
    return words


def _arrays(codes: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The sorted folded words of the candidates' lists and their log-frequencies (words × candidates)."""
    import wordfreq

    missing = [code for code in codes if code not in wordfreq.available_languages(_LIST)]
    if missing:
        raise ValueError(f"wordfreq has no word list for {', '.join(missing)}")
    by_word: dict[str, list[float]] = {}
    for column, code in enumerate(codes):
        for word, frequency in wordfreq.get_frequency_dict(code, _LIST).items():
            folded = fold_words(word)
            if len(folded) != 1 or len(folded[0]) > MAX_BYTES:  # "aujourd'hui", a non-Latin script
                continue
            row = by_word.setdefault(folded[0], [0.0] * len(codes))
            row[column] += frequency  # "été" and "ete" are one folded word
    words = sorted(by_word)
    floor = math.log(UNKNOWN)
    logp = np.array(
        [[math.log(f) if f else floor for f in by_word[word]] for word in words], dtype=np.float32
    ).reshape(len(words), len(codes))
    return {"words": np.array(words, dtype=f"S{MAX_BYTES}"), "logp": logp}


def _sources(codes: tuple[str, ...]) -> list[str]:
    """What the table depends on: this module, the folding (``dialect.py``) and wordfreq's lists of
    ``codes``, found without importing wordfreq (a worker that reads the table never imports it)."""
    spec = importlib.util.find_spec("wordfreq")
    if spec is None or spec.origin is None:
        raise ValueError("dialect_langid's word evidence needs wordfreq (pip install wordfreq)")
    data = Path(spec.origin).parent / "data"
    return [__file__, dialect.__file__, *(str(data / f"{_LIST}_{code}.msgpack.gz") for code in codes)]


class Lexicon:
    """The word frequencies of ``codes`` (see the module's docstring); :func:`lexicon` shares one per
    candidate set and process."""

    def __init__(self, codes: tuple[str, ...]) -> None:
        self.codes = codes
        build = functools.cache(lambda: _arrays(codes))
        name = "wordfreq-" + "-".join(codes)
        sources = _sources(codes)
        # plain arrays over the mapped pages (np.memmap's indexing costs a Python call per access)
        self.words = cached_table(f"{name}-words", lambda: build()["words"], sources, mmap=True).view(
            np.ndarray
        )
        self.logp = cached_table(f"{name}-logp", lambda: build()["logp"], sources, mmap=True).view(np.ndarray)
        self._french = codes.index(_FRENCH) if _FRENCH in codes else None

    def vote(self, text: str) -> Vote:
        """The candidates' probabilities from the words of ``text`` (uniform when none is known)."""
        return self.votes([text])[0]

    def votes(self, texts: Sequence[str]) -> list[Vote]:
        """``[vote(text) for text in texts]``, the words of all looked up at once (the same numbers: a
        text's sum runs over its own words, in order, whatever the batch)."""
        per_text = [standard_words(text) for text in texts]
        words = [word for text_words in per_text for word in text_words]
        keys = np.array([w.encode() if len(w) <= MAX_BYTES else b"" for w in words], dtype=f"S{MAX_BYTES}")
        rows = np.minimum(np.searchsorted(self.words, keys), len(self.words) - 1)
        known = (self.words[rows] == keys) & (keys != b"")
        logp = np.where(known[:, None], self.logp[rows], np.float32(0.0))  # an unknown word: no evidence
        french = np.zeros(len(words), dtype=bool)
        if self._french is not None:
            french = known & (logp[:, self._french] > np.float32(math.log(UNKNOWN)))
        lengths = np.array([len(text_words) for text_words in per_text], dtype=np.intp)
        starts = np.cumsum(lengths) - lengths
        scores = np.zeros((len(texts), len(self.codes)))
        filled = lengths > 0  # reduceat gives an empty segment its next row: those stay zeros (uniform)
        if filled.any():
            scores[filled] = np.add.reduceat(logp.astype(np.float64), starts[filled], axis=0)
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        not_french: list[list[str]] = [[] for _ in texts]
        text_of = np.repeat(np.arange(len(texts)), lengths)  # each word's text
        for position, k in zip(np.flatnonzero(~french).tolist(), text_of[~french].tolist(), strict=True):
            not_french[k].append(words[position])
        return [
            Vote(dict(zip(self.codes, row, strict=True)), n, tuple(missing))
            for row, n, missing in zip(probs.tolist(), lengths.tolist(), not_french, strict=True)
        ]


@functools.cache
def lexicon(codes: tuple[str, ...]) -> Lexicon:
    """The :class:`Lexicon` of ``codes``, built on first use in each process (read from the table cache)."""
    return Lexicon(codes)
