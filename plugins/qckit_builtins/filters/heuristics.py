"""The seed's four quality filters: length, word count, vocabulary diversity, alphabetic ratio.

Each is a stateless filter (``drop_reason(doc) -> reason | None``) with exactly the seed's semantics
and defaults; a recipe changes the thresholds. The reason keys are stable and short.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Sequence
from itertools import repeat
from typing import ClassVar

import numpy as np

from qckit.components import Document
from qckit_builtins import accelerated
from qckit_builtins._batch import (
    bmp_flags,
    bmp_mapped,
    cached,
    code_units,
    per_text_sum,
    single_codes,
    texts_with_surrogates,
)

_text = operator.attrgetter("text")


def _check_ratio(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, not {value}")
    return value


class LengthFilter:
    """Drops documents shorter than ``min_length`` or longer than ``max_length`` characters
    (recipe: ``use = "length"``; the seed's ``--min_length 10 --max_length 10000``).

    Both bounds are inclusive: a document of exactly ``min_length`` or ``max_length`` characters stays.
    Reasons: ``too_short``, ``too_long``.
    """

    name: ClassVar[str] = "length"
    stateful: ClassVar[bool] = False

    def __init__(self, min_length: int = 10, max_length: int = 10000) -> None:
        if min_length < 1:
            raise ValueError(f"min_length must be at least 1, not {min_length}")
        if max_length <= min_length:
            raise ValueError(f"max_length ({max_length}) must be greater than min_length ({min_length})")
        self.min_length = int(min_length)
        self.max_length = int(max_length)

    def drop_reason(self, doc: Document) -> str | None:
        n = len(doc.text)
        if n < self.min_length:
            return "too_short"
        if n > self.max_length:
            return "too_long"
        return None

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[self.drop_reason(d) for d in docs]``."""
        lengths = list(map(len, map(_text, docs)))
        low, high = self.min_length, self.max_length
        if not lengths or (min(lengths) >= low and max(lengths) <= high):
            return [None] * len(lengths)
        return [None if low <= n <= high else "too_short" if n < low else "too_long" for n in lengths]


class MinWordsFilter:
    """Drops documents with fewer than ``min_words`` whitespace-separated words (recipe: ``use = "min_words"``;
    the seed required 3). Reason: ``too_few_words``."""

    name: ClassVar[str] = "min_words"
    stateful: ClassVar[bool] = False

    def __init__(self, min_words: int = 3) -> None:
        if min_words < 1:
            raise ValueError(f"min_words must be at least 1, not {min_words}")
        self.min_words = int(min_words)

    def drop_reason(self, doc: Document) -> str | None:
        # Splitting at most min_words - 1 times stops after the first few words.
        if len(doc.text.split(None, self.min_words - 1)) < self.min_words:
            return "too_few_words"
        return None

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[self.drop_reason(d) for d in docs]``."""
        k = self.min_words
        scan = accelerated.textscan
        if scan is not None:
            counts = scan.word_counts(list(map(_text, docs)))
        else:
            counts = map(len, map(str.split, map(_text, docs), repeat(None), repeat(k - 1)))
        return [None if n >= k else "too_few_words" for n in counts]


class UniqueWordsFilter:
    """Drops repetitive documents: distinct words / words below ``min_ratio`` (recipe: ``use = "unique_words"``).

    Words are split on whitespace and compared case-insensitively, as in the seed ("vocabulary diversity
    < 30 %"). A ratio exactly equal to ``min_ratio`` stays. A document without words is left to the other
    filters. Reason: ``repetitive``.
    """

    name: ClassVar[str] = "unique_words"
    stateful: ClassVar[bool] = False

    def __init__(self, min_ratio: float = 0.3) -> None:
        self.min_ratio = _check_ratio("min_ratio", min_ratio)

    def drop_reason(self, doc: Document) -> str | None:
        words = doc.text.lower().split()
        if words and len(set(words)) / len(words) < self.min_ratio:
            return "repetitive"
        return None

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[self.drop_reason(d) for d in docs]``.

        For all documents at once, numpy gives each word a hash that equal words (compared lower-cased)
        always share, and counts the distinct hashes of each document in a table of 4 slots per word: a
        lower bound on its distinct words (collisions only merge). Where that bound already reaches the
        ratio the document stays; the others (repetitive ones, and a few near the threshold) are checked
        exactly.
        """
        texts = list(map(_text, docs))
        scan = accelerated.textscan
        if scan is not None:
            verdicts = scan.repetitive(texts, _lower_table(), self.min_ratio)
            return [
                self.drop_reason(doc) if verdict is None else "repetitive" if verdict else None
                for doc, verdict in zip(docs, verdicts, strict=True)
            ]
        joined = code_units(texts)
        if joined is None:
            return list(map(self.drop_reason, docs))
        units, starts = joined
        values = np.take(_word_hash_table(), units)
        # Where words start and end: every other change of "in a word" (the units end with a "\0").
        first = np.flatnonzero(np.diff(values != 0, prepend=False))[0::2]  # each word's first unit
        if not len(first):
            return [None] * len(texts)
        n_words = np.diff(np.searchsorted(first, starts), append=len(first))
        # A word's sum (mod 2**32) from its first unit to the next word's: whitespace and "\0" add 0.
        hashes = np.add.reduceat(values, first, dtype=np.uint32)
        slots = np.left_shift(1, np.ceil(np.log2(np.maximum(4 * n_words, 1))).astype(np.int64))
        offsets = np.cumsum(slots) - slots
        owner = np.repeat(np.arange(len(texts)), n_words)
        used = np.zeros(int(slots.sum()), dtype=bool)
        used[offsets[owner] + (hashes & (slots[owner] - 1).astype(np.uint32))] = True
        distinct = np.add.reduceat(used.view(np.uint8), offsets, dtype=np.int64)
        with np.errstate(divide="ignore", invalid="ignore"):
            surely_kept = (n_words == 0) | (distinct / n_words >= self.min_ratio)
        reasons: list[str | None] = [None] * len(texts)
        for k in np.flatnonzero(~surely_kept).tolist():
            reasons[k] = self.drop_reason(docs[k])
        return reasons


#: the code points below which :func:`_lower_table` is a table; none from there on has a case
LOWER_TABLE_SIZE = 0x20000


@functools.cache
def _lower_table() -> bytes:
    """See :func:`_build_lower_table`: as bytes, for ``_textscan.repetitive``."""
    return cached("lower-case", _build_lower_table, __file__).astype("<u4").tobytes()


def _build_lower_table() -> np.ndarray:
    """uint32 per code point below :data:`LOWER_TABLE_SIZE`: its ``str.lower()`` when that is one character
    that is whitespace exactly when the character is, else 0xFFFFFFFF (several characters, or "Σ",
    whose lower case depends on its neighbours), for ``_textscan.repetitive``."""
    chars = "\x00".join(map(chr, range(1, LOWER_TABLE_SIZE)))
    lowered = chars.lower().split("\x00")
    codes = single_codes(lowered, 0)
    table = np.empty(LOWER_TABLE_SIZE, dtype=np.uint32)
    table[0] = 0
    table[1:] = codes
    table[1:][codes == 0] = 0xFFFFFFFF  # several characters (none lowers to U+0000)
    table[ord("Σ")] = 0xFFFFFFFF
    space = np.zeros(LOWER_TABLE_SIZE, dtype=bool)  # no character beyond the BMP is whitespace
    space[:0x10000] = bmp_flags(str.isspace)
    simple = table != 0xFFFFFFFF
    changed_space = simple.copy()
    changed_space[simple] = space[table[simple]] != space[simple]
    table[changed_space] = 0xFFFFFFFF
    return table


@functools.cache
def _word_hash_table() -> np.ndarray:
    """uint32 per BMP code unit: 0 for whitespace (and U+0000), else the sum of random values of the
    characters of its ``str.lower()``, so that a word's sum depends only on the lower-cased word. Final and
    medial sigma share a value (lower() picks one by context), and so do all surrogates."""
    rng = np.random.default_rng(0x9E3779B9)
    random = rng.integers(1, 2**32, size=0x10000, dtype=np.uint32, endpoint=False)
    random[ord("ς")] = random[ord("σ")]
    random[0xD800:0xE000] = random[0xD800]
    lowered = bmp_mapped(str.lower)  # U+0001 … U+FFFF ("Σ" alone lowers to "σ", its value anyway)
    codes = single_codes(lowered, 0xFFFF)
    table = np.zeros(0x10000, dtype=np.uint32)
    table[1:] = random[codes]
    for i in np.flatnonzero(codes == 0xFFFF).tolist():  # those that lower to several characters
        table[i + 1] = random[[ord(c) for c in lowered[i]]].sum()
    table[0xD800:0xE000] = random[0xD800]
    table[bmp_flags(str.isspace)] = 0
    table[0] = 0
    if not table[~bmp_flags(str.isspace)][1:].all():  # a non-space whose value is 0 would split words
        raise AssertionError("word hash table: zero value")
    return table


def _class_of(codepoints: list[int]) -> str:
    """A regex character class of the given sorted BMP code points, written as escaped ranges."""
    parts, start, prev = [], None, None
    for cp in codepoints:
        if start is None:
            start = prev = cp
        elif cp == prev + 1:
            prev = cp
        else:
            parts.append((start, prev))
            start = prev = cp
    if start is not None:
        parts.append((start, prev))
    return "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in parts)


@functools.cache
def bmp_class(predicate_name: str) -> str:
    """Body of a regex character class listing every BMP character for which a predicate holds.

    ``re``'s own classes are slow here (``\\w`` looks up four Unicode properties per character) or do not
    fit (``\\w`` also matches digits, ``_`` and numerals such as ``½``). An explicit list is compiled by
    ``re`` into a lookup table instead. Built once per process (~15 ms). Predicates: ``"not_alpha_space"``
    (neither ``str.isalpha`` nor ``str.isspace``) and ``"not_alnum"`` (not ``str.isalnum``).
    """
    if predicate_name == "not_alpha_space":
        codepoints = [cp for cp in range(0x10000) if not (chr(cp).isalpha() or chr(cp).isspace())]
    elif predicate_name == "not_alnum":
        codepoints = [cp for cp in range(0x10000) if not chr(cp).isalnum()]
    else:
        raise ValueError(f"unknown predicate {predicate_name!r}")
    return _class_of(codepoints)


@functools.cache
def non_alpha_space_pattern() -> re.Pattern[str]:
    """A pattern matching one character that is neither ``str.isalpha()`` nor ``str.isspace()``.

    Characters beyond U+FFFF all match; :func:`count_non_alpha_space` corrects for astral letters.
    """
    return re.compile("[" + bmp_class("not_alpha_space") + "\\U00010000-\\U0010ffff]")


def count_non_alpha_space(text: str) -> int:
    """How many characters of ``text`` are neither alphabetic nor whitespace (exactly as ``str`` says)."""
    bad = non_alpha_space_pattern().findall(text)
    if bad and max(bad) > "\uffff":
        return sum(1 for c in bad if not (c > "\uffff" and c.isalpha()))
    return len(bad)


class AlphaRatioFilter:
    """Drops documents where letters and whitespace are less than ``min_ratio`` of the characters
    (recipe: ``use = "alpha_ratio"``; the seed required 70 %).

    "Letter" and "whitespace" mean ``str.isalpha()`` and ``str.isspace()``, as in the seed: accented
    letters count, digits, punctuation and symbols do not, no-break spaces count as whitespace. A ratio
    exactly equal to ``min_ratio`` stays. Reason: ``low_alpha_ratio``.
    """

    name: ClassVar[str] = "alpha_ratio"
    stateful: ClassVar[bool] = False

    def __init__(self, min_ratio: float = 0.7) -> None:
        self.min_ratio = _check_ratio("min_ratio", min_ratio)

    def drop_reason(self, doc: Document) -> str | None:
        text = doc.text
        if not text:
            return None
        if (len(text) - count_non_alpha_space(text)) / len(text) < self.min_ratio:
            return "low_alpha_ratio"
        return None

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[self.drop_reason(d) for d in docs]``: one table look-up over the code units of all texts."""
        texts = list(map(_text, docs))
        scan = accelerated.textscan
        if scan is not None:
            bad = scan.non_alpha_space(texts)
        else:
            joined = code_units(texts)
            if joined is None:
                return list(map(self.drop_reason, docs))
            units, starts = joined
            bad = per_text_sum(np.take(_non_alpha_space_table(), units), starts)
            for k in texts_with_surrogates(units, starts):  # astral letters: let str decide
                bad[k] = count_non_alpha_space(texts[k])
        ratio = self.min_ratio
        return [
            None if not n or (n - b) / n >= ratio else "low_alpha_ratio"
            for n, b in zip(map(len, texts), bad, strict=True)
        ]


@functools.cache
def _non_alpha_space_table() -> np.ndarray:
    """1 for each BMP code point that is neither ``str.isalpha()`` nor ``str.isspace()``, else 0 (0 for U+0000,
    the separator of :func:`~qckit_builtins._batch.code_units`)."""
    table = (~(bmp_flags(str.isalpha) | bmp_flags(str.isspace))).view(np.uint8)
    table[0] = 0
    return table
