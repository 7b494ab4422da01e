"""Deduplication: exact (normalized text hash) and near-duplicate (MinHash LSH).

Both are stateful filters: ``fingerprint(doc)`` is pure and runs in worker processes;
``drop_reasons(fingerprints)`` runs in the main process, in corpus order, and keeps the first copy.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from qckit import hookimpl
from qckit.components import Document

_EMPTY = np.empty(0, dtype=np.uint64)


# ASCII bytes that are not letters or digits become spaces; so do the UTF-8 sequences of Latin-1
# punctuation and symbols (U+0080–U+00BF: « » ¡ ¿ ° …, lead byte \xc2) and of the General Punctuation
# block (U+2000–U+203F: ’ ‘ “ ” – — … and the special spaces, lead bytes \xe2\x80). Working on the
# UTF-8 bytes (bytes.translate, a bytes regex only when such a lead byte is present) is about twice as
# fast as a Unicode regex over the text.
_ASCII_PUNCT = bytes(b for b in range(128) if not chr(b).isalnum())
_ASCII_TO_SPACE = bytes.maketrans(_ASCII_PUNCT, b" " * len(_ASCII_PUNCT))
_UNICODE_PUNCT = re.compile(rb"\xc2[\x80-\xbf]|\xe2\x80[\x80-\xbf]")


def dedup_key_bytes(text: str) -> bytes:
    """UTF-8 of :func:`dedup_key`."""
    if "\u00a0" in text or "\u202f" in text:  # the usual non-NFKC characters of French text: skip NFKC
        text = text.replace("\u00a0", " ").replace("\u202f", " ")
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    data = text.casefold().encode("utf-8", "surrogatepass").translate(_ASCII_TO_SPACE)
    # (NFKC has already replaced the letters and digits of U+0080–U+00BF: ª º µ ² ½ …)
    if b"\xc2" in data or b"\xe2\x80" in data:
        data = _UNICODE_PUNCT.sub(b" ", data)
    return b" ".join(data.split())


def dedup_key(text: str) -> str:
    """The text that exact dedup compares: NFKC, case-folded, punctuation removed, whitespace collapsed.

    "Bonjour  le monde!" and "bonjour le monde" give the same key, so do "C'est" and "C’est"
    (punctuation becomes a word break). Punctuation means ASCII punctuation and symbols, Latin-1
    punctuation (« » ¿ ¡ °) and the General Punctuation block (’ “ ” – — …); letters, digits, emoji and
    other symbols stay.
    """
    return dedup_key_bytes(text).decode("utf-8", "surrogatepass")


class ExactDedup:
    """Drops exact duplicates, keeping the first copy in corpus order (recipe: ``use = "exact_dedup"``).

    Each document is reduced to a 64-bit BLAKE2b hash of its text; with ``normalize_key = true``
    (default) the text is first NFKC-normalized, case-folded, stripped of punctuation and its whitespace
    collapsed (:func:`dedup_key`), so copies differing only in those respects collapse. With 64-bit
    hashes, two different documents collide with probability ~n²/2⁶⁵ (about 1 in 1.5 million for five
    million documents). Reason: ``duplicate``.

    Memory stays near 8 bytes per unique document: hashes seen recently live in a Python set of at most
    ``merge_threshold`` entries (~70 bytes each), which is then merged into a sorted ``numpy.uint64``
    array searched with ``numpy.searchsorted``. Pickling carries the hashes seen so far.
    """

    name: ClassVar[str] = "exact_dedup"
    stateful: ClassVar[bool] = True

    def __init__(self, normalize_key: bool = True, merge_threshold: int = 262_144) -> None:
        if merge_threshold < 1:
            raise ValueError(f"merge_threshold must be at least 1, not {merge_threshold}")
        self.normalize_key = bool(normalize_key)
        self.merge_threshold = int(merge_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget every document seen."""
        self._sorted: np.ndarray = _EMPTY
        self._recent: set[int] = set()

    @property
    def n_unique(self) -> int:
        """Number of distinct documents seen."""
        return len(self._sorted) + len(self._recent)

    def fingerprint(self, doc: Document) -> int:
        text = doc.text
        key = dedup_key_bytes(text) if self.normalize_key else text.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(key, digest_size=8).digest()
        return int.from_bytes(digest, "little")

    def drop_reasons(self, fingerprints: Sequence[Any]) -> list[str | None]:
        n = len(fingerprints)
        if n == 0:
            return []
        seen_before = self._in_sorted(fingerprints)
        recent = self._recent
        reasons: list[str | None] = []
        for fp, old in zip(fingerprints, seen_before, strict=True):
            if old or fp in recent:
                reasons.append("duplicate")
            else:
                recent.add(fp)
                reasons.append(None)
        if len(recent) >= self.merge_threshold:
            self._merge()
        return reasons

    def _in_sorted(self, fingerprints: Sequence[Any]) -> list[bool]:
        if not len(self._sorted):
            return [False] * len(fingerprints)
        hashes = np.fromiter(fingerprints, dtype=np.uint64, count=len(fingerprints))
        idx = np.searchsorted(self._sorted, hashes)
        np.minimum(idx, len(self._sorted) - 1, out=idx)
        return (self._sorted[idx] == hashes).tolist()

    def _merge(self) -> None:
        new = np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))
        new.sort()
        merged = np.concatenate((self._sorted, new))
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
        self._sorted = merged
        self._recent = set()


_WORD = re.compile(r"\w+")


@functools.cache
def _scheme() -> dict[str, str]:
    """datasketch >= 2.0 asks which permutation scheme hash values come from; older versions have one."""
    import inspect

    from datasketch import MinHash

    return {"scheme": "affine32"} if "scheme" in inspect.signature(MinHash.__init__).parameters else {}


class MinHashDedup:
    """Drops near-duplicates with MinHash LSH (datasketch), keeping the first copy (recipe: ``use = "minhash_dedup"``).

    A document is the set of its word ``ngram``-grams (lower-cased words; a document shorter than
    ``ngram`` words is one shingle of all its words). Two documents whose estimated Jaccard similarity
    is above ``threshold`` are near-duplicates; ``num_perm`` hash permutations (128) with ``seed`` make
    the signature, computed in the workers (``num_perm`` × 4 bytes per document). The LSH index lives in
    the main process and costs a few hundred bytes per kept document, so this filter is off by default.
    A document without words is never a near-duplicate. Reason: ``near_duplicate``.
    """

    name: ClassVar[str] = "minhash_dedup"
    stateful: ClassVar[bool] = True

    def __init__(self, ngram: int = 5, threshold: float = 0.8, num_perm: int = 128, seed: int = 1) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be at least 1, not {ngram}")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), not {threshold}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, not {num_perm}")
        self.ngram = int(ngram)
        self.threshold = float(threshold)
        self.num_perm = int(num_perm)
        self.seed = int(seed)
        self._permutations: Any = None
        self.reset()

    def reset(self) -> None:
        """Forget every document seen."""
        from datasketch import MinHashLSH

        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm)
        self._count = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_permutations"] = None  # recomputed on first use
        return state

    def shingles(self, text: str) -> list[bytes]:
        words = _WORD.findall(text.lower())
        n = self.ngram
        if len(words) <= n:
            return [" ".join(words).encode()] if words else []
        return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]

    def fingerprint(self, doc: Document) -> np.ndarray | None:
        from datasketch import MinHash

        shingles = self.shingles(doc.text)
        if not shingles:
            return None
        if self._permutations is None:
            self._permutations = MinHash(num_perm=self.num_perm, seed=self.seed).permutations
        sketch = MinHash(num_perm=self.num_perm, seed=self.seed, permutations=self._permutations, **_scheme())
        sketch.update_batch(set(shingles))
        return sketch.hashvalues

    def drop_reasons(self, fingerprints: Sequence[Any]) -> list[str | None]:
        from datasketch import LeanMinHash

        reasons: list[str | None] = []
        for fp in fingerprints:
            if fp is None:
                reasons.append(None)
                continue
            sketch = LeanMinHash(seed=self.seed, hashvalues=fp, **_scheme())
            if self._lsh.query(sketch):
                reasons.append("near_duplicate")
            else:
                self._lsh.insert(self._count, sketch, check_duplication=False)
                self._count += 1
                reasons.append(None)
        return reasons


@hookimpl
def register_filters(register):
    register(ExactDedup)
    register(MinHashDedup)
