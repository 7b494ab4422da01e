"""Quebec French dialect markers: a tagger that counts them, and an optional density threshold."""

from __future__ import annotations

import functools
import hashlib
import operator
import re
import unicodedata
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from qckit.components import Document
from qckit_builtins import accelerated
from qckit_builtins._batch import bmp_flags, bmp_mapped, cached, code_units, single_codes, texts_with

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

    def scan_matcher(self, scan: ModuleType) -> Any:
        """The C matcher of ``accelerated.markerscan`` for this list (built on first use): its
        ``find_all(texts)`` is :meth:`find` for every text, its ``tag_all(docs, keys, min_density)``
        :meth:`QuebecMarkers.drop_reason`'s tagging for every document (see ``_speedups/markerscan.c``)."""
        try:
            return self._scan_matcher
        except AttributeError:
            self._scan_matcher = _build_scan_matcher(self, scan)
            return self._scan_matcher


def _build_scan_matcher(markers: MarkerList, scan: ModuleType) -> Any:
    """``scan.matcher(...)`` for ``markers``: label ids in sorted entry order, so that sorted ids give
    sorted entries."""
    phrases = [option for options in markers.phrases.values() for option in options]
    vocabulary = sorted(set(markers.words).union(*(words for words, _ in phrases)))
    entries = set(markers.words.values()) | set(markers.stems.values())
    entries.update(label for _, label in phrases if label is not None)
    labels = tuple(sorted(entries))
    label_id = {label: i for i, label in enumerate(labels)}
    code = {word: i for i, word in enumerate(vocabulary)}
    stems = markers.stem_tuple

    def alone(word: str) -> int:  # what find counts for the word outside a phrase
        label = markers.words.get(word)
        if label is None and stems and word.startswith(stems):
            label = markers.stems[next(s for s in stems if word.startswith(s))]
        return -1 if label is None else label_id[label]

    fold, first, second = _fold_tables()
    return scan.matcher(
        vocabulary,
        list(map(alone, vocabulary)),
        [(stem, label_id[markers.stems[stem]]) for stem in stems],
        [
            (tuple(map(code.__getitem__, words)), -1 if label is None else label_id[label])
            for words, label in phrases
        ],
        labels,
        fold.tobytes(),
        first.tobytes(),
        second.tobytes(),
    )


# -- whole-batch matching ------------------------------------------------------------------------------
#
# fold_words works character by character: case folding, œ/æ, NFKD, dropping U+0300–U+036F and replacing
# what is left outside ASCII by "?" are all per character (NFKD also reorders combining marks, but those
# all end up dropped or as "?", so their order does not matter). So the folded text of a whole batch is
# one numpy table look-up per UTF-16 code unit, giving ASCII where the words are the runs of [a-z0-9].
# Each word gets a code: the words and stems that entries use have their own, every other word is "."
# (words up to 16 letters are compared exactly as two uint64 in a numpy hash table, longer ones in
# Python). Away from phrases, MarkerList.find counts exactly the words whose code is a marker alone.
# Around the few places where a phrase may occur (two of its words in a row), one regular expression
# over the codes does what find does word by word: at each word the phrases that start there (longest
# first), then the word alone; a match consumes its words (see _BatchMatcher._phrases).

# Folded characters: 0 ends a text, 0x20 is whitespace, 0x21 another separator, [0-9a-z] (>= 0x30) letters.
_FOLD_SEPARATOR = 0x21
_FOLD_DELETE = 0x22  # the character folds to nothing (a combining accent): the letters around it join
_FOLD_TWO = 0x23  # the character folds to two characters (œ → oe): see _fold_tables' first and second
_FOLD_OTHER = 0x24  # anything else (three or more characters, surrogates): that text goes the slow way
_DOT = ord(".")  # the code of a word that no entry uses
_CODE_BASE = 0x100  # the codes of the words and stems that entries use are _CODE_BASE, _CODE_BASE + 1 …
_CODES_LIMIT = 1 << 16  # entries a cache of the matcher holds per process before it starts over
_KEY_BYTES = 16  # words up to this long are looked up in numpy
_LOW_BYTES = np.array([(1 << (8 * i)) - 1 for i in range(9)], dtype=np.uint64)  # masks of the first i bytes


@functools.cache
def _fold_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fold, first, second): see :func:`_build_fold_tables`."""
    fold, first, second = cached("marker-fold", lambda: np.stack(_build_fold_tables()), __file__)
    return fold, first, second


def _build_fold_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fold, first, second): uint8 tables over the BMP for the whole-batch matcher.

    ``fold`` is the folded character: a letter or digit of [a-z0-9], 0x20 for whitespace
    (``str.isspace()``, which separates the words that ``qc_words`` counts), 0 for U+0000 (the text
    separator) or one of the _FOLD_* codes; ``first`` and ``second`` spell the _FOLD_TWO characters.
    """

    def fold(text: str) -> str:  # fold_words' steps before the tokens, for every character at once
        text = text.casefold().replace("œ", "oe").replace("æ", "ae")
        return (
            _COMBINING.sub("", unicodedata.normalize("NFKD", text)).encode("ascii", "replace").decode("ascii")
        )

    parts = bmp_mapped(fold)  # U+0001 … U+FFFF
    codes = single_codes(parts, 0)
    is_token = np.zeros(0x80, dtype=bool)  # the parts are ASCII
    is_token[[ord(c) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]] = True
    fold = np.full(0x10000, _FOLD_SEPARATOR, dtype=np.uint8)
    first = np.zeros(0x10000, dtype=np.uint8)
    second = np.zeros(0x10000, dtype=np.uint8)
    fold[1:][is_token[codes]] = codes[is_token[codes]]
    letter = re.compile("[a-z0-9]")
    for i in np.flatnonzero(codes == 0).tolist():  # empty, or several characters
        part = parts[i]
        if not part:
            fold[i + 1] = _FOLD_DELETE
        elif letter.search(part):
            shape = re.sub("[^a-z0-9]+", " ", part)
            if len(shape) == 1:
                fold[i + 1] = ord(shape)
            elif len(shape) == 2:
                fold[i + 1], first[i + 1], second[i + 1] = _FOLD_TWO, ord(shape[0]), ord(shape[1])
            else:
                fold[i + 1] = _FOLD_OTHER
    fold[0xD800:0xE000] = _FOLD_OTHER
    fold[bmp_flags(str.isspace)] = 0x20  # whitespace always folds to a separator
    fold[0] = 0
    return fold, first, second


def _word_key(word: str) -> tuple[int, int]:
    """A word of at most _KEY_BYTES ASCII characters as the two little-endian uint64 numpy compares."""
    data = word.encode("ascii").ljust(_KEY_BYTES, b"\x00")
    return int.from_bytes(data[:8], "little"), int.from_bytes(data[8:], "little")


class _KeyTable:
    """An exact hash table from word keys (pairs of uint64, the second 0 for keys of 8 bytes or fewer) to
    uint16 values, looked up an array at a time.

    The two multipliers are chosen (deterministically) so that no two keys share a slot, so a look-up is
    one slot computation and one comparison per word. Empty slots hold the key 0, which no word has.
    """

    def __init__(self, entries: dict[tuple[int, int], int]) -> None:
        k0 = np.array([k[0] for k in entries], dtype=np.uint64)
        k1 = np.array([k[1] for k in entries], dtype=np.uint64)
        rng = np.random.default_rng(20240531)
        bits = max(6, (4 * len(entries)).bit_length())
        while True:
            for _ in range(32):
                self.a, self.b = rng.integers(0, 2**63, size=2, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
                self.shift = np.uint64(64 - bits)
                slots = self.slots(k0, k1)
                if len(np.unique(slots)) == len(slots):
                    break
            else:
                bits += 1
                continue
            break
        self.k0 = np.zeros(1 << bits, dtype=np.uint64)
        self.k1 = np.zeros(1 << bits, dtype=np.uint64)
        self.values = np.full(1 << bits, _DOT, dtype=np.uint16)
        self.k0[slots], self.k1[slots], self.values[slots] = k0, k1, list(entries.values())

    def slots(self, k0: np.ndarray, k1: np.ndarray | None) -> np.ndarray:
        mixed = k0 * self.a
        if k1 is not None:
            mixed ^= k1 * self.b
        return (mixed >> self.shift).astype(np.intp)

    def lookup(self, k0: np.ndarray, k1: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(values, found) for each key (``k1`` None: all 0); the value is _DOT where not found."""
        slots = self.slots(k0, k1)
        found = np.take(self.k0, slots) == k0
        found &= np.take(self.k1, slots) == k1 if k1 is not None else np.take(self.k1, slots) == 0
        values = np.take(self.values, slots)
        values[~found] = _DOT
        return values, found


class _Codes(dict):
    """Word (ASCII bytes) → its code, for the words numpy leaves to Python (long or stem-like); bounded."""

    def __init__(
        self, word_codes: dict[str, int], stems: tuple[str, ...], stem_codes: dict[str, int]
    ) -> None:
        super().__init__()
        self.word_codes = word_codes
        self.stems = stems
        self.stem_codes = stem_codes

    def __missing__(self, word: bytes) -> int:
        if len(self) >= _CODES_LIMIT:
            self.clear()
        text = word.decode("ascii")
        code = self.word_codes.get(text)
        if code is None:
            code = _DOT
            if self.stems and text.startswith(self.stems):
                code = self.stem_codes[next(s for s in self.stems if text.startswith(s))]
        self[word] = code
        return code


class _Entries(dict):
    """Label ids of a document's markers → the distinct entries, sorted (as a tuple); filled on demand and
    kept from batch to batch (most documents repeat a sequence seen before); bounded."""

    def __init__(self, labels: dict[str, str]) -> None:
        super().__init__()
        self.labels = labels

    def __missing__(self, ids: str) -> tuple[str, ...]:
        if len(self) >= _CODES_LIMIT:
            self.clear()
        entries = self[ids] = tuple(map(self.labels.__getitem__, sorted(set(ids))))
        return entries


class _BatchMatcher:
    """MarkerList.find over a whole batch (see the comment above)."""

    def __init__(
        self,
        markers: MarkerList,
        word_codes: dict[str, int],
        stem_codes: dict[str, int],
        single: dict[int, str],
        phrases: list[tuple[str, str | None]],
    ) -> None:
        stems = markers.stem_tuple
        self.codes = _Codes(word_codes, stems, stem_codes)
        self.words = _KeyTable({_word_key(w): c for w, c in word_codes.items() if len(w) <= _KEY_BYTES})
        self.stem_key_len = min(min(map(len, stems), default=8), 8)
        self.stem_key_mask = np.uint64((1 << (8 * self.stem_key_len)) - 1)
        self.stem_keys = (
            _KeyTable({(_word_key(s[: self.stem_key_len])[0], 0): 1 for s in stems}) if stems else None
        )
        self.reach = max((len(codes) for codes, _ in phrases), default=0)  # the longest phrase, in words
        self.n_codes = _CODE_BASE + len(word_codes) + len(stem_codes)
        entries = sorted({label for _, label in phrases if label is not None} | set(single.values()))
        label_id = {label: chr(_CODE_BASE + i) for i, label in enumerate(entries)}
        self.labels = {i: label for label, i in label_id.items()}  # label id → entry; ids sort like entries
        self.entries = _Entries(self.labels)
        # code → label id of the word alone (0: none; 1 marks the end of a text). A word with a one-word
        # shield is never counted alone.
        self.single_ids = np.zeros(self.n_codes, dtype=np.uint16)
        self.single_ids[0] = 1
        shielded = {codes for codes, label in phrases if len(codes) == 1}
        for code, label in single.items():
            if chr(code) not in shielded:
                self.single_ids[code] = ord(label_id[label])
        # matched codes → label id ("" for a shield); the first phrase that matches wins over the word
        self.match_ids: dict[str, str] = {}
        self.groups: dict[str, list[str]] = {}  # first code → what may follow it in a match, in order
        for codes, label in phrases:
            self.match_ids.setdefault(codes, "" if label is None else label_id[label])
            rests = self.groups.setdefault(codes[0], [])
            if codes[1:] not in rests:
                rests.append(codes[1:])
        for code, label in single.items():
            self.match_ids.setdefault(chr(code), label_id[label])
            rests = self.groups.setdefault(chr(code), [])
            if "" not in rests:
                rests.append("")
        self.match_ids["\x00"] = "\x01"  # between runs of windows
        self.phrases = [codes for codes, _ in phrases if len(codes) > 1]
        self._pairs: np.ndarray | None = None  # chosen on the first batch
        self._pattern: re.Pattern[str] | None = None

    @classmethod
    def build(cls, markers: MarkerList) -> _BatchMatcher | None:
        vocabulary = set(markers.words)
        for options in markers.phrases.values():
            for phrase, _ in options:
                vocabulary.update(phrase)
        stems = markers.stem_tuple
        if _CODE_BASE + len(vocabulary) + len(stems) >= 0xD800:
            return None
        word_codes = {word: _CODE_BASE + i for i, word in enumerate(sorted(vocabulary))}
        stem_codes = {stem: _CODE_BASE + len(word_codes) + i for i, stem in enumerate(stems)}

        def stem_label(word: str) -> str | None:
            if stems and word.startswith(stems):
                return markers.stems[next(s for s in stems if word.startswith(s))]
            return None

        single: dict[int, str] = {}  # code → entry, when the word alone is a marker
        for word, code in word_codes.items():
            label = markers.words.get(word) or stem_label(word)
            if label is not None:
                single[code] = label
        for stem, code in stem_codes.items():
            single[code] = markers.stems[stem]
        phrases = [
            ("".join(chr(word_codes[w]) for w in phrase), label)
            for options in markers.phrases.values()
            for phrase, label in options
        ]
        if _CODE_BASE + len(single) + len(phrases) >= 0xD800:
            return None
        return cls(markers, word_codes, stem_codes, single, phrases)

    def find_all(self, texts: Sequence[str]) -> tuple[list[float], list[str], list[int]] | None:
        """For each text: ``float(len(text.split()))`` and the label ids of its markers (in no particular
        order); plus the indices of the texts that must go through :meth:`MarkerList.find` instead.
        None: do them all so."""
        joined = code_units(texts)
        if joined is None:
            return None
        units, starts = joined
        fold_table, first, second = _fold_tables()
        folded = np.take(fold_table, units)
        space = folded <= 0x20
        word_start = np.empty(len(units), dtype=bool)
        word_start[0] = not space[0]
        np.less(space[1:], space[:-1], out=word_start[1:])
        n_words = np.add.reduceat(word_start.view(np.uint8), starts, dtype=np.float64).tolist()

        data = folded.tobytes()
        slow: list[int] = []
        if b"\x24" in data:
            slow = texts_with(np.flatnonzero(folded == _FOLD_OTHER), starts)
        if b"\x23" in data:
            where = np.flatnonzero(folded == _FOLD_TWO)
            chars = units[where]
            folded[where] = first[chars]
            folded = np.insert(folded, where + 1, second[chars])
        if b"\x22" in data:
            folded = folded[folded != _FOLD_DELETE]
        codes, ends = self._codes(folded)
        labels = np.take(self.single_ids, codes)
        extra = self._phrases(codes, labels, ends) if self.phrases else []
        ids = labels[labels != 0].tobytes().decode("utf-16-le").split("\x01")
        del ids[-1]  # after the last text's end
        for k, more in extra:
            ids[k] += more
        return n_words, ids, slow

    def _codes(self, folded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The code of every word, with a 0 after each text's words, and the index of each of those 0s."""
        is_letter = folded >= 0x30  # [0-9a-z]; separators, text ends (0) and the _FOLD_* codes are below
        edges = np.flatnonzero(np.diff(is_letter, prepend=False, append=False))
        word_starts, word_ends = edges[0::2], edges[1::2]
        lengths = word_ends - word_starts
        # Each word's first 16 bytes as two little-endian uint64, from three aligned words and shifts.
        padded = np.zeros((len(folded) + 31) // 8 * 8, dtype=np.uint8)
        padded[: len(folded)] = folded
        aligned = padded.view("<u8")
        index = word_starts >> 3
        shift = ((word_starts & 7) << 3).astype(np.uint64)
        back = np.uint64(64) - shift  # a shift by 64 gives 0 in numpy
        a0, a1, a2 = np.take(aligned, index), np.take(aligned, index + 1), np.take(aligned, index + 2)
        k0 = (a0 >> shift) | (a1 << back)
        k0 &= np.take(_LOW_BYTES, np.minimum(lengths, 8))
        k1 = (a1 >> shift) | (a2 << back)
        k1 &= np.take(_LOW_BYTES, np.clip(lengths - 8, 0, 8))
        codes, known = self.words.lookup(k0, k1)
        python = lengths > _KEY_BYTES
        if self.stem_keys is not None:
            _, stem_like = self.stem_keys.lookup(k0 & self.stem_key_mask, None)
            python |= stem_like & ~known & (lengths >= self.stem_key_len)
        if python.any():
            lookup = self.codes.__getitem__
            for i in np.flatnonzero(python).tolist():
                codes[i] = lookup(folded[word_starts[i] : word_ends[i]].tobytes())
        text_ends = np.searchsorted(word_starts, np.flatnonzero(folded == 0))
        codes = np.insert(codes, text_ends, 0)
        return codes, text_ends + np.arange(len(text_ends))

    def _phrases(self, codes: np.ndarray, labels: np.ndarray, ends: np.ndarray) -> list[tuple[int, str]]:
        """Where a phrase may occur, match with the regular expression instead of word by word.

        A phrase occurrence holds every pair of words in a row of the phrase; for each phrase one pair
        is watched. Around each watched pair found, a window from ``reach - 2`` words before it to
        ``reach`` words after holds every occurrence it can belong to; no phrase starts elsewhere, so
        outside the windows every word counts alone, and the expression scans each run of windows from
        its start exactly as find would. Zeroes ``labels`` inside the windows and returns (text, label
        ids) to add.
        """
        compact = codes.astype(np.int32) - (_CODE_BASE - 1)
        np.maximum(compact, 0, out=compact)
        base = self.n_codes - _CODE_BASE + 1
        pairs = compact[:-1] * base + compact[1:]
        if self._pairs is None:
            self._choose(pairs, base, codes)
        assert self._pairs is not None and self._pattern is not None
        hits = np.flatnonzero(np.take(self._pairs, pairs))
        if not len(hits):
            return []
        change = np.zeros(len(codes) + 1, dtype=np.int32)
        np.add.at(change, np.maximum(hits - (self.reach - 2), 0), 1)
        np.add.at(change, np.minimum(hits + self.reach, len(codes)), -1)
        inside = np.cumsum(change[:-1]) > 0
        inside &= codes != 0  # a phrase never runs over the end of a text
        edges = np.flatnonzero(np.diff(inside, prepend=False, append=False))
        run_starts, run_ends = edges[0::2], edges[1::2]
        runs = np.insert(codes[inside], np.cumsum(run_ends - run_starts), 0).tobytes().decode("utf-16-le")
        found = "".join(map(self.match_ids.__getitem__, self._pattern.findall(runs))).split("\x01")
        labels[inside] = 0
        return list(zip(np.searchsorted(ends, run_starts).tolist(), found, strict=False))

    def _choose(self, pairs: np.ndarray, base: int, codes: np.ndarray) -> None:
        """For each phrase, watch the pair of words in a row that is rarest in this (first) batch; order
        the regular expression's alternatives by how often their first word occurs. Neither changes what
        matches (every occurrence of a phrase holds all its pairs; the alternatives start with different
        codes), only how fast."""
        counts = np.bincount(pairs, minlength=base * base)
        table = np.zeros(base * base, dtype=bool)
        for phrase in self.phrases:
            numbers = [ord(code) - _CODE_BASE + 1 for code in phrase]
            keys = [a * base + b for a, b in zip(numbers, numbers[1:], strict=False)]
            table[min(keys, key=lambda key: counts[key])] = True
        frequency = np.bincount(codes, minlength=self.n_codes)
        options = []
        for first, rests in self.groups.items():
            body = "|".join(map(re.escape, rests))
            options.append(
                (-frequency[ord(first)], re.escape(first) + (f"(?:{body})" if rests != [""] else ""))
            )
        options.sort()
        self._pattern = re.compile("|".join([alternative for _, alternative in options] + ["\x00"]))
        self._pairs = table  # last: another thread may be looking at _pairs


@functools.cache
def builtin_markers() -> MarkerList:
    """The built-in marker list, ``qckit_builtins/data/quebec_markers.txt`` (parsed once per process): the
    ``quebec_markers`` tagger's default, and the French evidence of ``dialect_langid``."""
    data = resources.files("qckit_builtins").joinpath("data/quebec_markers.txt")
    return MarkerList(data.read_text(encoding="utf-8"), "qckit_builtins/data/quebec_markers.txt")


def _read_markers(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"markers_file: cannot read {path}: {exc.strerror}") from None


@functools.cache
def _file_markers(text: str, path: str) -> MarkerList:
    """The list of a ``markers_file``'s text (built once per process and contents)."""
    return MarkerList(text, path)


#: the metrics the tagger sets (occurrences, words, 1 or 0) and its meta key (the entries found)
MARKERS, WORDS, WITH_MARKERS = "qc_markers", "qc_words", "qc_docs_with_markers"
#: what ``Matcher.tag_all`` sets: the three metrics in this order, then the meta key
_TAG_KEYS = (MARKERS, WORDS, WITH_MARKERS, MARKERS)


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
        # Read now, in the main process: the workers get these contents (the file may change while they
        # run), and a bad file is reported right away.
        self.markers_file = None if markers_file is None else str(Path(markers_file).resolve())
        self._markers_text = None if self.markers_file is None else _read_markers(self.markers_file)
        if self.markers_file is not None:
            self.markers  # noqa: B018 - parsed now, so that a bad entry fails before any work

    @property
    def markers(self) -> MarkerList:
        if self.markers_file is None or self._markers_text is None:
            return builtin_markers()
        return _file_markers(self._markers_text, self.markers_file)

    def resume_key(self) -> str:
        """The SHA-256 of the ``markers_file`` read (empty for the built-in list, part of the code)."""
        if self._markers_text is None:
            return ""
        return hashlib.sha256(self._markers_text.encode("utf-8")).hexdigest()

    def drop_reason(self, doc: Document) -> str | None:
        count, n_words, found = self.markers.find(doc.text)
        doc.metrics[MARKERS] = float(count)
        doc.metrics[WORDS] = float(n_words)
        doc.metrics[WITH_MARKERS] = 1.0 if count else 0.0
        doc.meta[MARKERS] = found
        if self.min_density > 0 and (not n_words or 1000.0 * count / n_words < self.min_density):
            return "below_dialect_density"
        return None

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[self.drop_reason(d) for d in docs]``, with the same metrics and meta, matched batch-wide
        (in C with ``accelerated.markerscan``, else with numpy)."""
        markers = self.markers
        scan = accelerated.markerscan
        if scan is not None:
            docs = docs if isinstance(docs, list) else list(docs)
            below, slow = markers.scan_matcher(scan).tag_all(docs, _TAG_KEYS, self.min_density)
            reasons: list[str | None] = [None] * len(docs)
            for k in below:
                reasons[k] = "below_dialect_density"
        else:
            matcher = markers.batch_matcher()
            found = None if matcher is None else matcher.find_all(list(map(_text, docs)))
            if found is None:
                return list(map(self.drop_reason, docs))
            n_words, ids, slow = found
            counts = list(map(float, map(len, ids)))
            entries = list(map(list, map(matcher.entries.__getitem__, ids)))  # a new list per document
            with_markers = list(map(float, map(bool, counts)))
            for doc, words, count, flag, found_entries in zip(
                docs, n_words, counts, with_markers, entries, strict=True
            ):
                metrics = doc.metrics
                metrics[MARKERS] = count
                metrics[WORDS] = words
                metrics[WITH_MARKERS] = flag
                doc.meta[MARKERS] = found_entries
            min_density = self.min_density
            if min_density > 0:
                reasons = [
                    "below_dialect_density" if not words or 1000.0 * count / words < min_density else None
                    for words, count in zip(n_words, counts, strict=True)
                ]
            else:
                reasons = [None] * len(docs)
        for k in slow:
            reasons[k] = self.drop_reason(docs[k])
        return reasons

    def summary(self, sums: dict[str, float]) -> dict[str, float]:
        """Corpus-level figures from the summed metrics of the kept documents."""
        words = sums.get(WORDS, 0.0)
        markers = sums.get(MARKERS, 0.0)
        return {
            "qc_density_per_1k_words": 1000.0 * markers / words if words else 0.0,
            WITH_MARKERS: sums.get(WITH_MARKERS, 0.0),
        }
