"""Quebec French dialect markers: a tagger that counts them, and an optional density threshold."""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np

from qckit import hookimpl
from qckit.components import Document
from qckit_builtins._batch import bmp_chars, bmp_flags, code_units, per_text_sum, texts_with

_TOKEN = re.compile(r"[a-z0-9]+")
_COMBINING = re.compile("[\u0300-\u036f]")
_text = operator.attrgetter("text")


def fold_words(text: str) -> list[str]:
    """The words of ``text`` for matching: accent- and case-insensitive; apostrophes and hyphens split."""
    text = text.casefold()
    if not text.isascii():
        if "œ" in text or "æ" in text:
            text = text.replace("œ", "oe").replace("æ", "ae")
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
        text = text.encode("ascii", "replace").decode("ascii")
    return _TOKEN.findall(text)


class MarkerList:
    """A parsed marker file (format in ``data/quebec_markers.txt``): words, stems, phrases and shields."""

    def __init__(self, text: str, source: str = "<markers>") -> None:
        self.words: dict[str, str] = {}
        self.stems: dict[str, str] = {}
        # first word → [(words, entry or None for a shield)], longest phrase first
        self.phrases: dict[str, list[tuple[tuple[str, ...], str | None]]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            shield = entry.startswith("-")
            label = entry[1:].strip() if shield else entry
            stem = label.endswith("*")
            words = tuple(fold_words(label[:-1] if stem else label))
            if not words or (stem and (shield or len(words) != 1)):
                raise ValueError(f"{source}:{number}: cannot use marker entry {entry!r}")
            if stem:
                self.stems.setdefault(words[0], label[:-1])
            elif len(words) == 1 and not shield:
                self.words.setdefault(words[0], label)
            else:
                self.phrases.setdefault(words[0], []).append((words, None if shield else label))
        for options in self.phrases.values():
            options.sort(key=lambda option: -len(option[0]))
        self.first_words = frozenset(self.words) | frozenset(self.phrases)
        self.stem_tuple = tuple(sorted(self.stems, key=len, reverse=True))
        # The first letters shared by every stem's words: a C-level set test rules most documents out.
        self._key_len = min(map(len, self.stems), default=0)
        self._stem_keys = frozenset(stem[: self._key_len] for stem in self.stems)

    def __len__(self) -> int:
        return (
            len(self.words)
            + len(self.stems)
            + sum(1 for options in self.phrases.values() for _, label in options if label is not None)
        )

    def find(self, text: str) -> tuple[int, int, list[str]]:
        """Return (markers, words, distinct marker entries found) for ``text``."""
        n_words = len(text.split())
        tokens = fold_words(text)
        if not tokens:
            return 0, n_words, []
        stems = self.stem_tuple
        if self.first_words.isdisjoint(tokens) and (
            not stems
            or self._stem_keys.isdisjoint(map(operator.itemgetter(slice(None, self._key_len)), tokens))
        ):
            return 0, n_words, []
        count, found = 0, set()
        words, phrases, n = self.words, self.phrases, len(tokens)
        i = 0
        while i < n:
            token = tokens[i]
            options = phrases.get(token)
            if options:
                matched = False
                for phrase, label in options:
                    size = len(phrase)
                    if tuple(tokens[i : i + size]) == phrase:
                        if label is not None:
                            count += 1
                            found.add(label)
                        i += size
                        matched = True
                        break
                if matched:
                    continue
            label = words.get(token)
            if label is None and stems and token.startswith(stems):
                label = next(self.stems[s] for s in stems if token.startswith(s))
            if label is not None:
                count += 1
                found.add(label)
            i += 1
        return count, n_words, sorted(found)

    def batch_matcher(self) -> _BatchMatcher | None:
        """The matcher that :meth:`QuebecMarkers.drop_reason_batch` uses (built on first use), or None when
        there are too many entries for it."""
        try:
            return self._batch_matcher
        except AttributeError:
            self._batch_matcher = _BatchMatcher.build(self)
            return self._batch_matcher


# -- whole-batch matching ------------------------------------------------------------------------------
#
# fold_words works character by character: case folding, œ/æ, NFKD, dropping U+0300–U+036F and replacing
# what is left outside ASCII by "?" are all per character (NFKD also reorders combining marks, but those
# all end up dropped or as "?", so the order does not matter). So the folded text of a whole batch is
# one table look-up per UTF-16 code unit (numpy), giving ASCII bytes where the words are runs of [a-z0-9].
# Each word then becomes one code character ("." for the words that no entry uses), and one regular
# expression over the codes does what MarkerList.find does word by word: at each word, the phrases that
# start there (longest first), then the word itself, then the stems; a match consumes its words.

_FOLD_DELETE = 1  # the character folds to nothing (a combining accent): the letters around it join
_FOLD_TWO = 2  # the character folds to two characters (œ → oe): see _fold_tables' first and second
_FOLD_OTHER = 3  # anything else (three or more characters, surrogates): that text goes the slow way
_CODES_LIMIT = 1 << 18  # words remembered per process before the code cache starts over
_CODE_BASE = 0x100


@functools.cache
def _fold_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fold, first, second, space): uint8 tables over the BMP for the whole-batch matcher.

    ``fold`` is the folded character: a letter or digit of [a-z0-9], a space for anything that separates
    words, 0 for U+0000 (the text separator) or one of the _FOLD_* codes. ``space`` is ``str.isspace()``
    (true for U+0000 too), which counts whitespace-separated words.
    """
    chars = bmp_chars()
    folded = "\x00".join(chars[1:]).casefold().replace("œ", "oe").replace("æ", "ae")
    folded = _COMBINING.sub("", unicodedata.normalize("NFKD", folded))
    parts = folded.encode("ascii", "replace").decode("ascii").split("\x00")
    assert len(parts) == 0xFFFF
    token_chars = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
    fold = np.full(0x10000, 0x20, dtype=np.uint8)
    first = np.zeros(0x10000, dtype=np.uint8)
    second = np.zeros(0x10000, dtype=np.uint8)
    fold[0] = 0
    for cp, part in enumerate(parts, 1):
        if len(part) == 1:
            if part in token_chars:
                fold[cp] = ord(part)
            continue
        if not part:
            fold[cp] = _FOLD_DELETE
            continue
        shape = re.sub(" +", " ", "".join(c if c in token_chars else " " for c in part))
        if shape == " ":
            continue
        if len(shape) == 1:
            fold[cp] = ord(shape)
        elif len(shape) == 2:
            fold[cp], first[cp], second[cp] = _FOLD_TWO, ord(shape[0]), ord(shape[1])
        else:
            fold[cp] = _FOLD_OTHER
    fold[0xD800:0xE000] = _FOLD_OTHER
    space = bmp_flags(str.isspace)
    space[0] = True
    return fold, first, second, space


class _Codes(dict):
    """Word (ASCII bytes) → its code character; filled on demand, bounded."""

    def __init__(self, word_codes: dict[str, str], stems: tuple[str, ...], stem_codes: dict[str, str]) -> None:
        super().__init__({b"\x00": "\x00"})
        self.word_codes = word_codes
        self.stems = stems
        self.stem_codes = stem_codes

    def __missing__(self, word: bytes) -> str:
        if len(self) >= _CODES_LIMIT:
            self.clear()
            self[b"\x00"] = "\x00"
        text = word.decode("ascii")
        code = self.word_codes.get(text)
        if code is None:
            code = "."
            if self.stems and text.startswith(self.stems):
                code = self.stem_codes[next(s for s in self.stems if text.startswith(s))]
        self[word] = code
        return code


class _BatchMatcher:
    """MarkerList.find over a whole batch (see the comment above)."""

    def __init__(self, codes: _Codes, groups: dict[str, list[str]], match_ids: dict[str, str],
                 labels: dict[str, str]) -> None:
        self.codes = codes
        self.groups = groups  # first code → what may follow it in a match, in order ("" for the word alone)
        self.match_ids = match_ids  # matched codes → label id ("" for a shield, "\x00" between texts)
        self.labels = labels  # label id → entry; ids sort like the entries
        self._pattern: re.Pattern[str] | None = None

    def pattern(self, sample: str) -> re.Pattern[str]:
        """The regular expression over codes. Its alternatives start with different codes, so their order
        does not change what matches; the codes most frequent in ``sample`` (the first batch) go first,
        because ``re`` tries alternatives one by one."""
        if self._pattern is None:
            # Every alternative starts with a literal, so that ``re`` skips the other positions fast.
            options = []
            for first, rests in self.groups.items():
                body = "|".join(map(re.escape, rests))
                options.append((-sample.count(first), re.escape(first) + (f"(?:{body})" if rests != [""] else "")))
            options.sort()
            self._pattern = re.compile("|".join([alternative for _, alternative in options] + ["\x00"]))
        return self._pattern

    @classmethod
    def build(cls, markers: MarkerList) -> _BatchMatcher | None:
        vocabulary = set(markers.words)
        for options in markers.phrases.values():
            for phrase, _ in options:
                vocabulary.update(phrase)
        stems = markers.stem_tuple
        if _CODE_BASE + len(vocabulary) + len(stems) >= 0xD800:
            return None
        word_codes = {word: chr(_CODE_BASE + i) for i, word in enumerate(sorted(vocabulary))}
        stem_codes = {stem: chr(_CODE_BASE + len(word_codes) + i) for i, stem in enumerate(stems)}

        def stem_label(word: str) -> str | None:
            if stems and word.startswith(stems):
                return markers.stems[next(s for s in stems if word.startswith(s))]
            return None

        single: dict[str, str] = {}  # code → entry when the word alone is a marker
        for word, code in word_codes.items():
            label = markers.words.get(word) or stem_label(word)
            if label is not None:
                single[code] = label
        for stem, code in stem_codes.items():
            single[code] = markers.stems[stem]
        phrases = [
            ("".join(word_codes[w] for w in phrase), label)
            for options in markers.phrases.values()
            for phrase, label in options
        ]
        entries = sorted({label for _, label in phrases if label is not None} | set(single.values()))
        if _CODE_BASE + len(entries) >= 0xD800:
            return None
        label_id = {label: chr(_CODE_BASE + i) for i, label in enumerate(entries)}
        match_ids: dict[str, str] = {}
        for codes, label in phrases:  # the first phrase that matches wins, and beats the word alone
            match_ids.setdefault(codes, "" if label is None else label_id[label])
        for code, label in single.items():
            match_ids.setdefault(code, label_id[label])
        match_ids["\x00"] = "\x00"
        groups: dict[str, list[str]] = {}
        for codes, _ in phrases:
            rests = groups.setdefault(codes[0], [])
            if codes[1:] not in rests:
                rests.append(codes[1:])
        for code in single:
            rests = groups.setdefault(code, [])
            if "" not in rests:
                rests.append("")
        labels = {i: label for label, i in label_id.items()}
        return cls(_Codes(word_codes, stems, stem_codes), groups, match_ids, labels)

    def find_all(self, texts: Sequence[str]) -> tuple[list[int], list[str], list[int]] | None:
        """For each text: words (``len(text.split())``) and the label ids of its markers in order; plus the
        indices of the texts that must go through :meth:`MarkerList.find` instead. None: do them all so."""
        joined = code_units(texts)
        if joined is None:
            return None
        units, starts = joined
        fold_table, first, second, space_table = _fold_tables()
        space = np.take(space_table, units)
        word_start = np.empty(len(units), dtype=bool)
        word_start[0] = not space[0]
        np.less(space[1:], space[:-1], out=word_start[1:])
        n_words = per_text_sum(word_start, starts)

        folded = np.take(fold_table, units)
        data = folded.tobytes()
        slow: list[int] = []
        if b"\x03" in data:
            slow = texts_with(np.flatnonzero(folded == _FOLD_OTHER), starts)
        if b"\x02" in data:
            where = np.flatnonzero(folded == _FOLD_TWO)
            chars = units[where]
            folded[where] = first[chars]
            data = np.insert(folded, where + 1, second[chars]).tobytes()
        if b"\x01" in data:
            data = data.translate(None, b"\x01")
        words = data.replace(b"\x00", b" \x00 ").split()
        codes = "".join(map(self.codes.__getitem__, words))
        ids = "".join(map(self.match_ids.__getitem__, self.pattern(codes).findall(codes))).split("\x00")
        del ids[-1]  # after the last text's separator
        return n_words, ids, slow


@functools.cache
def _builtin_markers() -> MarkerList:
    data = resources.files("qckit_builtins").joinpath("data/quebec_markers.txt")
    return MarkerList(data.read_text(encoding="utf-8"), "qckit_builtins/data/quebec_markers.txt")


@functools.cache
def _file_markers(path: str) -> MarkerList:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"markers_file: cannot read {path}: {exc.strerror}") from None
    return MarkerList(text, path)


class QuebecMarkers:
    """Counts Quebec French dialect markers in each document (recipe: ``use = "quebec_markers"``).

    The built-in list (``qckit_builtins/data/quebec_markers.txt``, about 200 entries: "pis", "icitte",
    "pantoute", "char", "chum", "magasiner", "dépanneur", "tsé", "c'est plate", sacres …) matches whole
    words, case- and accent-insensitively, with ' and ’ alike; standard idioms such as "tant pis" are
    shielded. ``markers_file`` replaces it with your own list in the same format (another dialect, say;
    a relative path is taken from the current directory).

    Sets ``doc.metrics["qc_markers"]`` (occurrences), ``doc.metrics["qc_words"]`` (whitespace-separated
    words), ``doc.metrics["qc_docs_with_markers"]`` (1 or 0) and ``doc.meta["qc_markers"]`` (the distinct
    entries found, sorted). With ``min_density`` above 0 (markers per 1000 words) documents below it are
    dropped with reason ``below_dialect_density``; the default 0 only tags.
    """

    name: ClassVar[str] = "quebec_markers"
    stateful: ClassVar[bool] = False

    def __init__(self, min_density: float = 0.0, markers_file: str | None = None) -> None:
        if float(min_density) < 0:
            raise ValueError(f"min_density must be at least 0, not {min_density}")
        self.min_density = float(min_density)
        # Resolved now, so that worker processes read the same file; a bad file is reported right away.
        self.markers_file = None if markers_file is None else str(Path(markers_file).resolve())
        if self.markers_file is not None:
            _file_markers(self.markers_file)

    @property
    def markers(self) -> MarkerList:
        return _builtin_markers() if self.markers_file is None else _file_markers(self.markers_file)

    def drop_reason(self, doc: Document) -> str | None:
        count, n_words, found = self.markers.find(doc.text)
        doc.metrics["qc_markers"] = float(count)
        doc.metrics["qc_words"] = float(n_words)
        doc.metrics["qc_docs_with_markers"] = 1.0 if count else 0.0
        doc.meta["qc_markers"] = found
        if self.min_density > 0 and (not n_words or 1000.0 * count / n_words < self.min_density):
            return "below_dialect_density"
        return None

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[self.drop_reason(d) for d in docs]``, with the same metrics and meta, matched batch-wide."""
        markers = self.markers
        matcher = markers.batch_matcher()
        found = None if matcher is None else matcher.find_all(list(map(_text, docs)))
        if found is None:
            return list(map(self.drop_reason, docs))
        n_words, ids, slow = found
        labels = matcher.labels
        min_density = self.min_density
        reasons: list[str | None] = []
        for doc, words, marks in zip(docs, n_words, ids, strict=True):
            metrics = doc.metrics
            if marks:
                count = len(marks)
                metrics["qc_markers"] = float(count)
                metrics["qc_words"] = float(words)
                metrics["qc_docs_with_markers"] = 1.0
                doc.meta["qc_markers"] = [labels[i] for i in sorted(set(marks))]
            else:
                count = 0
                metrics["qc_markers"] = 0.0
                metrics["qc_words"] = float(words)
                metrics["qc_docs_with_markers"] = 0.0
                doc.meta["qc_markers"] = []
            if min_density > 0 and (not words or 1000.0 * count / words < min_density):
                reasons.append("below_dialect_density")
            else:
                reasons.append(None)
        for k in slow:
            reasons[k] = self.drop_reason(docs[k])
        return reasons

    def summary(self, sums: dict[str, float]) -> dict[str, float]:
        """Corpus-level figures from the summed metrics of the kept documents."""
        words = sums.get("qc_words", 0.0)
        markers = sums.get("qc_markers", 0.0)
        return {
            "qc_density_per_1k_words": 1000.0 * markers / words if words else 0.0,
            "qc_docs_with_markers": sums.get("qc_docs_with_markers", 0.0),
        }


@hookimpl
def register_filters(register):
    register(QuebecMarkers)
