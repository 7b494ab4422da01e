"""French quality preset derived from FineWeb-2's ``fra_Latn`` filtering thresholds.

FineWeb-2 (huggingface/fineweb-2, ``configs/fra_Latn.yml`` and ``fineweb-2-pipeline.py``) filters each
language with datatrove's Gopher repetition, FineWeb quality and Gopher quality filters, using
per-language thresholds. :class:`FrenchQualityFilter` bundles those checks into one component whose
parameters default to the ``fra_Latn`` values; see its docstring for where each number comes from.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from typing import ClassVar

from qckit.components import Document


def _unify_apostrophes(text: str) -> str:
    """’ (and the rarer ʼ ‘) → ' (str.replace: much faster than str.translate on non-ASCII text)."""
    for apostrophe in "’ʼ‘":
        if apostrophe in text:
            text = text.replace(apostrophe, "'")
    return text


# Elided forms keep their apostrophe ("l'", "qu'", "c'"); other tokens are runs of word characters.
_STOP_TOKEN = re.compile(r"[^\W\d_]+'|\w+")
_HAS_LETTER = re.compile(r"[^\W\d_]")
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»“”‘’„…–—•·¡¿"
_TERMINAL = (".", "!", "?", "…", "»", "”", '"', "'", "’")
_ELLIPSIS = ("...", "…")

# FineWeb-2 fra_Latn values (configs/fra_Latn.yml).
_TOP_NGRAMS = {"2": 0.161, "3": 0.149, "4": 0.134}
_DUP_NGRAMS = {"5": 0.15, "6": 0.141, "7": 0.131, "8": 0.121, "9": 0.111, "10": 0.1}


def read_word_list(text: str) -> list[str]:
    """Entries of a word-list file: one per line, ``#`` starts a comment, blank lines are skipped."""
    words = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            words.append(entry)
    return words


@functools.cache
def french_stop_words() -> tuple[str, ...]:
    """The built-in list, ``qckit_builtins/data/french_stopwords.txt``."""
    data = resources.files("qckit_builtins").joinpath("data/french_stopwords.txt")
    return tuple(read_word_list(data.read_text(encoding="utf-8")))


def stop_word_set(words: Iterable[str]) -> frozenset[str]:
    """``words`` as :func:`count_stop_words` matches them (lower case, ' for ’)."""
    return frozenset(_unify_apostrophes(w.strip().lower()) for w in words if w.strip())


def count_stop_words(text: str, stop: frozenset[str]) -> int:
    """Occurrences in ``text`` of the words of ``stop`` (a :func:`stop_word_set`): case-insensitive, ' and
    ’ alike, elided forms with their apostrophe ("c’est" counts ``c'`` and ``est``)."""
    return sum(1 for token in _STOP_TOKEN.findall(_unify_apostrophes(text.lower())) if token in stop)


def _ngram_thresholds(name: str, value: dict[str, float]) -> tuple[tuple[int, float], ...]:
    out = []
    for n, frac in dict(value).items():
        try:
            n_int = int(n)
        except (TypeError, ValueError):
            raise ValueError(f"{name} keys must be n-gram sizes (integers), not {n!r}") from None
        if n_int < 1:
            raise ValueError(f"{name} n-gram sizes must be at least 1, not {n_int}")
        if float(frac) < 0:
            raise ValueError(f"{name}[{n}] must be at least 0, not {frac}")
        out.append((n_int, float(frac)))
    return tuple(sorted(out))


def _top_ngram_chars(words: list[str], n: int) -> int:
    """Characters covered by the most frequent n-gram (its length times its count), as Gopher counts them."""
    grams = Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1))
    gram, count = grams.most_common(1)[0]
    return len(gram) * count


def _dup_ngram_chars(words: list[str], n: int) -> int:
    """Characters in n-grams seen before, skipping over each repeat (Gopher's ``find_all_duplicate``)."""
    seen: set[str] = set()
    repeated, i, last = 0, 0, len(words) - n + 1
    while i < last:
        gram = " ".join(words[i : i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated


class FrenchQualityFilter:
    """Quality heuristics for French, with FineWeb-2's ``fra_Latn`` thresholds (recipe: ``use = "french_quality"``).

    Checks, their reason keys and where each default comes from (FW2 = FineWeb-2 ``configs/fra_Latn.yml``
    and its pipeline; Gopher = datatrove's ``GopherQualityFilter``/``GopherRepetitionFilter`` defaults,
    which FineWeb-2 kept; FW = datatrove's ``FineWebQualityFilter``):

    * ``few_stop_words``: fewer than ``min_stop_words`` (2, FW2) stop-word occurrences. The list
      (``stop_words``, default ``data/french_stopwords.txt``) starts with FW2's 18 words and adds frequent
      function words without English look-alikes. Elided forms count with either apostrophe: ``l'`` and
      ``l’``, ``qu'``, ``j'``, ``c'`` ("c’est" counts ``c'`` and ``est``). *Adapted:* FW2 documents are
      web pages of 50+ words; a document here is often one line, so one with fewer than
      ``short_doc_words`` (10) words needs only one stop word.
    * ``mean_word_length``: mean word length outside ``[min_avg_word_length, max_avg_word_length]``
      (2 and 11, FW2). Words are whitespace-separated tokens stripped of surrounding punctuation; tokens
      made only of punctuation are not words.
    * ``symbol_ratio``: ``#`` or ellipses (``...``, ``…``) per word above ``max_symbol_word_ratio`` (0.1,
      Gopher). *Adapted:* the word count is taken as at least ``short_doc_words`` so that one "…" in a
      five-word line is not 20 %.
    * ``no_alpha_words``: the share of words containing a letter is below ``min_alpha_words_ratio``
      (0.812, FW2's ``max_non_alpha_words_ratio``, which despite its name is this minimum). A document
      without any word is dropped with this reason too.
    * Line checks, only for documents with at least ``line_checks_min_lines`` (2) non-empty lines —
      *adapted*: most documents here are single lines, for which FineWeb's line ratios degenerate to 0
      or 1 (a one-line document without final punctuation would always be dropped):
      ``bullet_lines`` (more than ``max_bullet_lines_ratio`` = 0.9 of lines start with "•", Gopher),
      ``ellipsis_lines`` (more than ``max_ellipsis_lines_ratio`` = 0.3 end with an ellipsis, Gopher),
      ``line_punct`` (at most ``min_line_punct_ratio`` = 0.1 end with terminal punctuation, FW2's
      ``line_punct_thr``; terminal marks are ``. ! ? … » ” " ' ’``, so French closing guillemets count),
      ``dup_lines`` (more than ``max_dup_line_frac`` = 0.264 of lines are repeats, FW2),
      ``dup_line_chars`` (repeated lines hold ``max_dup_line_chars_ratio`` = 0.1 or more of the
      characters, FW2's ``char_duplicates_ratio``), ``list_like`` (newlines per word above
      ``max_newline_ratio`` = 0.185, FW2's ``new_line_ratio``).
    * Repetition checks (Gopher's, with FW2's thresholds), only for documents of at least
      ``repetition_min_words`` (50) words — *adapted*: FW2 never kept a document under 50 words (Gopher's
      ``min_doc_words``), and in a one-line document any single word pair is already more than 16 % of
      the characters; the seed's ``unique_words`` filter covers short repetitive lines.
      ``top_ngram``: the most frequent word n-gram covers more than the given share of the characters
      (``top_ngrams`` = {2: 0.161, 3: 0.149, 4: 0.134}); ``dup_ngrams``: repeated word n-grams cover
      more than the given share (``dup_ngrams`` = {5: 0.15, 6: 0.141, 7: 0.131, 8: 0.121, 9: 0.111,
      10: 0.1}). Recipe tables use the n-gram size as key: ``top_ngrams = {2 = 0.161, 3 = 0.149}``.

    Not included: FW2's language-score threshold (0.824 for GlotLID; use the ``langid`` filter) and
    Gopher's 50-word minimum (use ``min_words``). Switch a check off with 0 for a minimum, a large value
    for a maximum, or an empty table for the n-gram checks.
    """

    name: ClassVar[str] = "french_quality"
    stateful: ClassVar[bool] = False

    def __init__(
        self,
        min_stop_words: int = 2,
        stop_words: list[str] | None = None,
        short_doc_words: int = 10,
        min_avg_word_length: float = 2.0,
        max_avg_word_length: float = 11.0,
        max_symbol_word_ratio: float = 0.1,
        min_alpha_words_ratio: float = 0.812,
        line_checks_min_lines: int = 2,
        max_bullet_lines_ratio: float = 0.9,
        max_ellipsis_lines_ratio: float = 0.3,
        min_line_punct_ratio: float = 0.1,
        max_dup_line_frac: float = 0.264,
        max_dup_line_chars_ratio: float = 0.1,
        max_newline_ratio: float = 0.185,
        repetition_min_words: int = 50,
        top_ngrams: dict[str, float] = _TOP_NGRAMS,  # noqa: B006 (copied, never mutated)
        dup_ngrams: dict[str, float] = _DUP_NGRAMS,  # noqa: B006 (copied, never mutated)
    ) -> None:
        for key, value in (
            ("min_stop_words", min_stop_words),
            ("short_doc_words", short_doc_words),
            ("line_checks_min_lines", line_checks_min_lines),
            ("repetition_min_words", repetition_min_words),
        ):
            if value < 0:
                raise ValueError(f"{key} must be at least 0, not {value}")
        if min_avg_word_length < 0 or max_avg_word_length < min_avg_word_length:
            raise ValueError(
                f"need 0 <= min_avg_word_length <= max_avg_word_length, got {min_avg_word_length} and {max_avg_word_length}"
            )
        for key, value in (
            ("min_alpha_words_ratio", min_alpha_words_ratio),
            ("min_line_punct_ratio", min_line_punct_ratio),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be between 0 and 1, not {value}")
        for key, value in (
            ("max_symbol_word_ratio", max_symbol_word_ratio),
            ("max_bullet_lines_ratio", max_bullet_lines_ratio),
            ("max_ellipsis_lines_ratio", max_ellipsis_lines_ratio),
            ("max_dup_line_frac", max_dup_line_frac),
            ("max_dup_line_chars_ratio", max_dup_line_chars_ratio),
            ("max_newline_ratio", max_newline_ratio),
        ):
            if value < 0:
                raise ValueError(f"{key} must be at least 0, not {value}")
        words = french_stop_words() if stop_words is None else stop_words
        self.stop_words = stop_word_set(words)
        self.min_stop_words = int(min_stop_words)
        self.short_doc_words = int(short_doc_words)
        self.min_avg_word_length = float(min_avg_word_length)
        self.max_avg_word_length = float(max_avg_word_length)
        self.max_symbol_word_ratio = float(max_symbol_word_ratio)
        self.min_alpha_words_ratio = float(min_alpha_words_ratio)
        self.line_checks_min_lines = int(line_checks_min_lines)
        self.max_bullet_lines_ratio = float(max_bullet_lines_ratio)
        self.max_ellipsis_lines_ratio = float(max_ellipsis_lines_ratio)
        self.min_line_punct_ratio = float(min_line_punct_ratio)
        self.max_dup_line_frac = float(max_dup_line_frac)
        self.max_dup_line_chars_ratio = float(max_dup_line_chars_ratio)
        self.max_newline_ratio = float(max_newline_ratio)
        self.repetition_min_words = int(repetition_min_words)
        self.top_ngrams = _ngram_thresholds("top_ngrams", top_ngrams)
        self.dup_ngrams = _ngram_thresholds("dup_ngrams", dup_ngrams)

    def count_stop_words(self, text: str) -> int:
        """Occurrences of stop words in ``text`` (case-insensitive, ' and ’ alike)."""
        return count_stop_words(text, self.stop_words)

    def drop_reason(self, doc: Document) -> str | None:
        text = doc.text
        words = [w for w in (token.strip(_PUNCT) for token in text.split()) if w]
        n_words = len(words)
        if n_words == 0:
            return "no_alpha_words"

        required = self.min_stop_words if n_words >= self.short_doc_words else min(self.min_stop_words, 1)
        if required and self.count_stop_words(text) < required:
            return "few_stop_words"

        alpha_words = sum(1 for w in words if _HAS_LETTER.search(w))
        if alpha_words / n_words < self.min_alpha_words_ratio:
            return "no_alpha_words"

        mean_length = sum(map(len, words)) / n_words
        if not self.min_avg_word_length <= mean_length <= self.max_avg_word_length:
            return "mean_word_length"

        per_words = max(n_words, self.short_doc_words)
        if (
            text.count("#") / per_words > self.max_symbol_word_ratio
            or (text.count("...") + text.count("…")) / per_words > self.max_symbol_word_ratio
        ):
            return "symbol_ratio"

        if "\n" in text:
            reason = self._line_reason(text, n_words)
            if reason:
                return reason

        if n_words >= self.repetition_min_words and (self.top_ngrams or self.dup_ngrams):
            return self._ngram_reason(text, text.split())
        return None

    def _line_reason(self, text: str, n_words: int) -> str | None:
        lines = [line.strip() for line in text.split("\n")]
        lines = [line for line in lines if line]
        n_lines = len(lines)
        if n_lines < max(self.line_checks_min_lines, 1):
            return None
        if sum(1 for line in lines if line.startswith("•")) / n_lines > self.max_bullet_lines_ratio:
            return "bullet_lines"
        if sum(1 for line in lines if line.endswith(_ELLIPSIS)) / n_lines > self.max_ellipsis_lines_ratio:
            return "ellipsis_lines"
        if sum(1 for line in lines if line.endswith(_TERMINAL)) / n_lines <= self.min_line_punct_ratio:
            return "line_punct"
        seen: set[str] = set()
        dup_lines = dup_chars = 0
        for line in lines:
            if line in seen:
                dup_lines += 1
                dup_chars += len(line)
            else:
                seen.add(line)
        if dup_lines / n_lines > self.max_dup_line_frac:
            return "dup_lines"
        if dup_chars / max(len(text) - text.count("\n"), 1) >= self.max_dup_line_chars_ratio:
            return "dup_line_chars"
        if text.count("\n") / n_words > self.max_newline_ratio:
            return "list_like"
        return None

    def _ngram_reason(self, text: str, words: list[str]) -> str | None:
        n_chars = len(text)
        for n, frac in self.top_ngrams:
            if len(words) >= n and _top_ngram_chars(words, n) / n_chars > frac:
                return "top_ngram"
        for n, frac in self.dup_ngrams:
            if len(words) >= n and _dup_ngram_chars(words, n) / n_chars > frac:
                return "dup_ngrams"
        return None
