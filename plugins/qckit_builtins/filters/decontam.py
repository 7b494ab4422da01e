"""Decontamination: drop the training documents that share a long word sequence with an eval set.

What matches, as GPT-3 (Brown et al. 2020, section 4), lm-evaluation-harness's decontamination and
datatrove define it: both sides are normalized as exact dedup's key (:func:`.dedup.dedup_key`: NFKC,
case-folded, punctuation is a word break, so ``C'est`` and ``c’est`` are the same words; accents are
kept, as French tells ``a``/``à`` and ``ou``/``où`` apart by them) and split into words. Every
``ngram``-word sequence of an eval text (13 by default, GPT-3's; datatrove's default is 12) is hashed
into a set; a training document matches when one of its own ``ngram``-word sequences is in the set.

An eval text shorter than ``ngram`` words has no such sequence (most minimal pairs have 5 to 12 words):
it is matched whole, as GPT-3 does ("or that overlap with the whole example when it is shorter than
13-grams"): a document matches when it holds the text's words in a row. A text of fewer than
``min_words`` words ("il fait beau", a choice such as "oui") would match documents by chance: it is not
checked, and the report counts it.

Hashing, not comparing: each word of the eval texts gets a 64-bit value (BLAKE2b of its UTF-8); a word
sequence's hash is ``h = h·B + v`` over its words' values, modulo 2^64, computed for every position of
a batch at once with numpy. The index (:class:`EvalNgrams`) holds sorted ``numpy.uint64`` arrays (the
long texts' sequences; the short texts' first ``min_words`` words, their lengths and whole hashes), the
first eval set (in order) of each, and the eval words with their values; it is built once, when the
recipe is loaded, and travels to the workers with the filter. A word of a training document that no
eval text has cannot be part of a match: it breaks the sequences. So a document costs a dictionary
look-up per word, and a batch a few array passes and look-ups (a bit table rules out most sequences
before a binary search).
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat
from typing import Any, ClassVar

import numpy as np

from qckit.components import Document, EvalSource, IssueLog
from qckit.errors import InputError
from qckit_builtins.filters.dedup import dedup_keys

#: a document's drop reason (action ``drop``), metric key and meta value (``report``): this prefix and the
#: name of the first eval set it matches
MATCH_PREFIX = "contaminated:"
#: the meta key that names the matched eval set when the action is ``report``
META_KEY = "contaminated"
ACTIONS = ("drop", "report")
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it loses nothing modulo 2^64
_TEXTS_PER_CHUNK = 2000  # eval texts normalized and hashed together
_NO_HASH, _NO_OWNER = np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int32)
_text = operator.attrgetter("text")
_spaces = operator.methodcaller("count", b" ")  # of a dedup key: its words less one
# Texts are joined and split into words together: between two texts, b"\x00", which no key holds, is a
# word of value 0 that no sequence crosses.
_END = b"\x00"
_END_JOIN = b" " + _END + b" "
_blake2b_64 = functools.partial(hashlib.blake2b, digest_size=8)


def _power(m: int) -> np.uint64:
    return np.uint64(pow(int(_BASE), m, 1 << 64))


def _runs(values: np.ndarray) -> np.ndarray:
    """For each position, how many words from there on are known (non-zero values) in a row."""
    positions = np.arange(len(values), dtype=np.int64)
    stops = np.where(values == 0, positions, len(values))
    return np.minimum.accumulate(stops[::-1])[::-1] - positions


def _grams(values: np.ndarray, k: int) -> np.ndarray:
    """The hash of the ``k`` words from each position on, ``sum(values[i + j] * B**(k - 1 - j))`` modulo
    2^64 (``len(values) - k + 1`` of them): blocks of 1, 2, 4 … words, each made of two of the one
    before, then the blocks of ``k``'s binary digits joined, so a 13-word hash costs five array passes."""
    if len(values) < k:
        return values[:0]
    blocks = {1: values}
    m = 1
    while 2 * m <= k:
        half = blocks[m]
        blocks[2 * m] = half[:-m] * _power(m) + half[m:]
        m *= 2
    out: np.ndarray | None = None
    done = 0
    for m in sorted(blocks, reverse=True):
        if done + m > k:
            continue
        if out is None:
            out = blocks[m]
        else:
            size = len(values) - done - m + 1
            out = out[:size] * _power(m) + blocks[m][done : done + size]
        done += m
    assert out is not None
    return out


def _hashes_at(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """The hash of the ``sizes[i]`` words from ``starts[i]`` on (as :func:`_grams`), for a few positions."""
    out = np.zeros(len(starts), dtype=np.uint64)
    for j in range(int(sizes.max()) if len(sizes) else 0):
        more = j < sizes
        at = np.where(more, starts + j, 0)
        out = np.where(more, out * _BASE + values[at], out)
    return out


def _word_value(word: bytes) -> int:
    return int.from_bytes(_blake2b_64(word).digest(), "little") or 1  # 0 stands for an unknown word


def _first_per_key(keys: tuple[np.ndarray, ...], owners: np.ndarray) -> tuple[np.ndarray, ...]:
    """The distinct rows of ``keys`` (sorted by them), each with its smallest owner."""
    order = np.lexsort((owners, *reversed(keys)))
    keys = tuple(k[order] for k in keys)
    owners = owners[order]
    first = np.ones(len(owners), dtype=bool)
    if len(owners):
        first[1:] = np.any([k[1:] != k[:-1] for k in keys], axis=0)
    return (*(k[first] for k in keys), owners[first])


class EvalNgrams:
    """The index of the eval texts' word sequences (see the module docstring); picklable, compact.

    ``hashes``: the sorted hashes of the ``ngram``-word sequences of the long texts. A short text (fewer
    words than ``ngram``, ``min_words`` at least) is kept as the hash of its first ``min_words`` words
    (``heads``, sorted), its length and the hash of all its words: a document's ``min_words``-word
    sequences are looked up in ``heads``, and the few found are checked whole.
    """

    __slots__ = (
        "_bits",
        "_shift",
        "hashes",
        "head_full",
        "head_owners",
        "head_sizes",
        "heads",
        "min_words",
        "names",
        "ngram",
        "owners",
        "short",
        "texts",
        "vocab",
    )

    def __init__(self, sources: Sequence[tuple[str, Iterable[str]]], ngram: int, min_words: int) -> None:
        """Index the texts of each ``(set name, texts)``; a text of ``min_words`` to ``ngram - 1`` words
        is indexed whole, a shorter one only counted in ``short``."""
        self.names = [name for name, _ in sources]
        self.ngram, self.min_words = ngram, min_words
        self.vocab: dict[bytes, int] = {}
        self.texts = [0] * len(sources)  # texts indexed, per set
        self.short = [0] * len(sources)  # texts too short to check, per set
        # the columns of the entries, chunk by chunk: hashes, owners; heads, sizes, full hashes, owners
        long: list[list[np.ndarray]] = [[_NO_HASH], [_NO_OWNER]]
        short: list[list[np.ndarray]] = [[_NO_HASH], [_NO_OWNER], [_NO_HASH], [_NO_OWNER]]
        for index, (_, texts) in enumerate(sources):
            chunk: list[str] = []
            for text in texts:
                chunk.append(text)
                if len(chunk) == _TEXTS_PER_CHUNK:
                    self._add(chunk, index, long, short)
                    chunk = []
            if chunk:
                self._add(chunk, index, long, short)
        hashes, owners = map(np.concatenate, long)
        self.hashes, self.owners = _first_per_key((hashes,), owners)
        heads, sizes, full, owners = map(np.concatenate, short)
        self.heads, self.head_sizes, self.head_full, self.head_owners = _first_per_key(
            (heads, sizes, full), owners
        )
        self._bits: np.ndarray | None = None

    def _add(self, texts: list[str], index: int, long: list, short: list) -> None:
        """Index ``texts`` (of set ``index``): their new words into the vocabulary, the columns of their
        entries appended to ``long`` and ``short``."""
        keys = [key for key in dedup_keys(texts) if key]
        sizes = np.fromiter(map(_spaces, keys), dtype=np.int64, count=len(keys)) + 1
        checked = sizes >= self.min_words
        self.short[index] += len(texts) - int(checked.sum())
        keys = list(compress(keys, checked.tolist()))
        sizes = sizes[checked]
        self.texts[index] += len(keys)
        if not keys:
            return
        words = _END_JOIN.join(keys).split(b" ")
        vocab = self.vocab
        new = set(words).difference(vocab)
        new.discard(_END)
        vocab.update((word, _word_value(word)) for word in new)
        values = np.fromiter(map(vocab.get, words, repeat(0)), dtype=np.uint64, count=len(words))
        starts = np.zeros(len(keys), dtype=np.int64)
        np.cumsum(sizes[:-1] + 1, out=starts[1:])
        ngram = self.ngram
        grams = _grams(values, ngram)
        at = np.flatnonzero(_runs(values)[: len(grams)] >= ngram)
        for column, part in zip(long, (grams[at], np.full(len(at), index, np.int32)), strict=True):
            column.append(part)
        is_short = sizes < ngram
        at, size = starts[is_short], sizes[is_short]
        heads = _grams(values, self.min_words)[at]
        entries = (heads, size, _hashes_at(values, at, size), np.full(len(at), index, np.int32))
        for column, part in zip(short, entries, strict=True):
            column.append(part)

    def __getstate__(self) -> dict[str, Any]:
        # the bit table is rebuilt where it is used: it need not travel
        return {name: getattr(self, name) for name in self.__slots__ if not name.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        self._bits = None

    def _bit_table(self) -> np.ndarray:
        """A bit per value of a hash's top bits, set where some hash or head has them (about 32 bits per
        hash, at most 32 MiB): a look-up in it answers "not indexed" for ~97 % of the sequences that are
        not, much faster than a binary search."""
        if self._bits is None:
            both = np.concatenate([self.hashes, self.heads])
            width = int(np.clip(np.ceil(np.log2(max(len(both), 1) * 32)), 16, 28))
            self._shift = np.uint64(64 - width)
            bits = np.zeros(1 << (width - 3), dtype=np.uint8)
            top = both >> self._shift
            np.bitwise_or.at(bits, top >> np.uint64(3), np.left_shift(1, top & np.uint64(7)).astype(np.uint8))
            self._bits = bits
        return self._bits

    def _maybe(self, hashes: np.ndarray) -> np.ndarray:
        """Indices of ``hashes`` that the bit table does not rule out."""
        bits = self._bit_table()
        top = hashes >> self._shift
        return np.flatnonzero((bits[top >> np.uint64(3)] >> (top & np.uint64(7))) & np.uint64(1))

    def first_matches(self, texts: list[str]) -> np.ndarray:
        """For each text, the index of the first eval set it matches, or -1."""
        best = np.full(len(texts), len(self.names), dtype=np.int32)
        if not texts or not (len(self.hashes) or len(self.heads)):
            return np.full(len(texts), -1, dtype=np.int32)
        keys = dedup_keys(texts)
        words = _END_JOIN.join(keys).split(b" ")
        values = np.fromiter(map(self.vocab.get, words, repeat(0)), dtype=np.uint64, count=len(words))
        sizes = np.fromiter(map(_spaces, keys), dtype=np.int64, count=len(keys)) + 1  # b"" too is one
        doc_starts = np.zeros(len(keys), dtype=np.int64)
        np.cumsum(sizes[:-1] + 1, out=doc_starts[1:])
        runs = _runs(values)

        def found(at: np.ndarray, owners: np.ndarray) -> None:
            docs = np.searchsorted(doc_starts, at, side="right") - 1
            np.minimum.at(best, docs, owners)

        if len(self.hashes):
            grams = _grams(values, self.ngram)
            at = np.flatnonzero(runs[: len(grams)] >= self.ngram)
            hashes = grams[at]
            maybe = self._maybe(hashes)
            at, hashes = at[maybe], hashes[maybe]
            where = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
            hit = self.hashes[where] == hashes
            found(at[hit], self.owners[where[hit]])
        if len(self.heads):
            grams = _grams(values, self.min_words)
            at = np.flatnonzero(runs[: len(grams)] >= self.min_words)
            heads = grams[at]
            maybe = self._maybe(heads)
            at, heads = at[maybe], heads[maybe]
            lo = np.searchsorted(self.heads, heads, side="left")
            hi = np.searchsorted(self.heads, heads, side="right")
            many = hi - lo  # short texts with this head: usually 0 (a bit-table false alarm) or 1
            at = np.repeat(at, many)
            entry = np.repeat(lo - np.cumsum(many) + many, many) + np.arange(int(many.sum()))
            size = self.head_sizes[entry]
            fits = runs[at] >= size
            at, entry, size = at[fits], entry[fits], size[fits]
            hit = _hashes_at(values, at, size) == self.head_full[entry]
            found(at[hit], self.head_owners[entry[hit]])
        best[best == len(self.names)] = -1
        return best


def _builtin_kinds() -> dict[str, type]:
    from qckit_builtins.evaluators import BitsPerByte, MinimalPairs, MultipleChoice

    return {cls.name: cls for cls in (BitsPerByte, MinimalPairs, MultipleChoice)}


def _infer_kind(path: str) -> str:
    """The eval kind of a file named without one: minimal pairs or a choice task by the fields of its first
    row (a ``.jsonl`` file), else a text file of documents (bits per byte)."""
    from qckit.evaluate.pairs import SENTENCE_FIELDS
    from qckit.evaluate.rows import iter_rows, no_usable
    from qckit_builtins.evaluators import BitsPerByte, MinimalPairs, MultipleChoice

    if not path.endswith(".jsonl"):
        return BitsPerByte.name
    issues = IssueLog()
    for line, row in iter_rows(path, issues):
        if any(name in row for name in SENTENCE_FIELDS):
            return MinimalPairs.name
        if "prompt" in row or "choices" in row:
            return MultipleChoice.name
        raise InputError(
            path,
            f"cannot tell the eval kind from the fields {', '.join(sorted(row)) or '(none)'}: "
            f"write KIND:{path} (kinds: {', '.join(sorted(_builtin_kinds()))})",
            line,
        )
    raise no_usable(path, "rows", issues)


class Decontaminate:
    """Drops the training documents that share a word sequence with an eval set (recipe:
    ``use = "decontaminate"``; see the module docstring for what matches).

    It checks the recipe's ``[[train.eval]]`` sets (all of them but those named in ``exclude``) and the
    eval files in ``files``, each ``KIND:PATH`` or ``PATH`` (a ``.jsonl`` file is minimal pairs or a
    choice task by the fields of its first row, any other file one document per line, like ``bpb``),
    read with the kind's default settings; a file's set name is its path as written. ``ngram``: the
    sequence length (13, GPT-3's; datatrove's default is 12); an eval text shorter than that is matched
    whole, down to ``min_words`` words. ``action = "drop"`` drops a matching document with the reason
    ``contaminated:<set>`` (the first set it matches, in that order); ``"report"`` keeps it, sets
    ``doc.meta["contaminated"]`` to the set's name and counts it in the report's corpus measures.
    """

    name: ClassVar[str] = "decontaminate"
    stateful: ClassVar[bool] = False

    def __init__(
        self,
        files: list[str] = [],  # noqa: B006 (copied, never mutated)
        ngram: int = 13,
        min_words: int = 5,
        action: str = "drop",
        exclude: list[str] = [],  # noqa: B006 (copied, never mutated)
    ) -> None:
        if ngram < 2:
            raise ValueError(f"ngram must be at least 2, not {ngram}")
        if not 1 <= min_words <= ngram:
            raise ValueError(f"min_words must be between 1 and ngram ({ngram}), not {min_words}")
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        if any(not f.strip() for f in files):
            raise ValueError("files: a file name is empty")
        self.files = list(files)
        self.ngram = int(ngram)
        self.min_words = int(min_words)
        self.action = action
        self.exclude = list(exclude)
        self.index: EvalNgrams | None = None

    def use_eval_sets(self, sets: Sequence[EvalSource], kinds: Mapping[str, type]) -> None:
        """Read the eval sets (the recipe's, less ``exclude``, and ``files``) and build the index."""
        names = [s.name for s in sets]
        unknown = [name for name in self.exclude if name not in names]
        if unknown:
            listed = ", ".join(names) if names else "none"
            raise ValueError(f"exclude: no eval set named {unknown[0]!r} in the recipe (sets: {listed})")
        sources = [s for s in sets if s.name not in self.exclude]
        sources += [self._file_source(entry, kinds) for entry in self.files]
        if not sources:
            raise ValueError("nothing to check against: no files, and the recipe has no [[train.eval]] set")
        seen: set[str] = set()
        for source in sources:
            if source.name in seen:
                raise ValueError(f"two eval sets are named {source.name!r}")
            seen.add(source.name)
        self.index = EvalNgrams([(s.name, s.texts()) for s in sources], self.ngram, self.min_words)

    def _file_source(self, entry: str, kinds: Mapping[str, type]) -> EvalSource:
        kind, sep, path = entry.partition(":")
        if not sep or "/" in kind or not kind:
            kind, path = _infer_kind(entry), entry
        cls = kinds.get(kind)
        if cls is None:
            raise ValueError(
                f"files: unknown eval kind {kind!r} in {entry!r}; kinds: {', '.join(sorted(kinds))}"
            )
        try:
            evaluator = cls()
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"files: eval kind {kind!r} needs settings ({exc}); list {path} in [[train.eval]]"
            ) from None
        return EvalSource(entry if sep else path, path, evaluator, kind)

    def resume_key(self) -> str:
        """A digest of the index: the eval sets' names, texts and settings (their contents, not paths)."""
        index = self._built()
        digest = hashlib.sha256(
            repr((index.names, index.texts, index.short, self.ngram, self.min_words)).encode()
        )
        for array in (
            index.hashes,
            index.owners,
            index.heads,
            index.head_sizes,
            index.head_full,
            index.head_owners,
        ):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def _built(self) -> EvalNgrams:
        if self.index is None:  # made without a recipe: its files only, read by the built-in kinds
            self.use_eval_sets([], _builtin_kinds())
        assert self.index is not None
        return self.index

    def drop_reason(self, doc: Document) -> str | None:
        return self.drop_reason_batch([doc])[0]

    def drop_reason_batch(self, docs: Sequence[Document]) -> list[str | None]:
        """``[self.drop_reason(d) for d in docs]``: one pass over the batch's words."""
        index = self._built()
        matches = index.first_matches(list(map(_text, docs)))
        reasons: list[str | None] = [None] * len(docs)
        for k in np.flatnonzero(matches >= 0).tolist():
            name = index.names[matches[k]]
            if self.action == "drop":
                reasons[k] = MATCH_PREFIX + name
            else:
                docs[k].metrics[MATCH_PREFIX + name] = 1.0
                docs[k].meta[META_KEY] = name
        return reasons

    def summary(self, sums: dict[str, float]) -> dict[str, float]:
        """Per eval set: the texts checked, those too short to check, and (``report``) the kept documents
        that match it."""
        index = self._built()
        out: dict[str, float] = {}
        for name, texts, short in zip(index.names, index.texts, index.short, strict=True):
            out[f"{name}: texts checked"] = float(texts)
            if short:
                out[f"{name}: texts under {self.min_words} words, not checked"] = float(short)
            if self.action == "report":
                out[f"{name}: documents matching (kept)"] = sums.get(MATCH_PREFIX + name, 0.0)
        return out


__all__ = ["ACTIONS", "MATCH_PREFIX", "META_KEY", "Decontaminate", "EvalNgrams"]
