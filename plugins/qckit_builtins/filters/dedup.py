"""Deduplication: exact (normalized text hash) and near-duplicate (MinHash LSH).

Both are stateful filters: ``fingerprint(doc)`` is pure and runs in worker processes;
``drop_reasons(fingerprints)`` runs in the main process, in corpus order, and keeps the first copy.
"""

from __future__ import annotations

import functools
import hashlib
import operator
import re
import unicodedata
import zlib
from collections.abc import Sequence
from itertools import compress
from typing import Any, ClassVar

import numpy as np

from qckit.components import Document
from qckit_builtins import accelerated
from qckit_builtins._batch import bmp_mapped, cached, code_units, single_codes, texts_with

_text = operator.attrgetter("text")
_digest = operator.methodcaller("digest")
_blake2b_64 = functools.partial(hashlib.blake2b, digest_size=8)

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


_RISKY = 0xFFFF  # in _key_table: a character the table cannot handle


@functools.cache
def _key_table() -> np.ndarray:
    """uint16 per BMP code unit: what :func:`dedup_keys` maps it to (see :func:`_build_key_table`)."""
    from qckit_builtins.normalizers import text

    return cached("dedup-keys", _build_key_table, __file__, text.__file__)


def _build_key_table() -> np.ndarray:
    """uint16 over the BMP: each character's contribution to :func:`dedup_key_bytes`, decoded (0x20 for a
    word break), or _RISKY where that depends on its neighbours or is not one character: a character that
    NFKC may change or merge with another, one that case-folds to several characters, a surrogate."""
    from qckit_builtins.normalizers.text import _unstable_codepoints

    codes = single_codes(bmp_mapped(str.casefold), _RISKY)  # U+0001 … U+FFFF; _RISKY: several characters
    word_break = np.zeros(0x10000, dtype=bool)  # what dedup_key_bytes turns into a space
    word_break[:0x80] = [not chr(cp).isalnum() for cp in range(0x80)]
    word_break[0x80:0xC0] = True
    word_break[0x2000:0x2040] = True
    table = np.zeros(0x10000, dtype=np.uint16)
    table[1:] = np.where(word_break[codes], 0x20, codes)
    table[list(_unstable_codepoints("NFKC"))] = _RISKY  # surrogates included
    table[[0xA0, 0x202F]] = 0x20  # replaced by a space before NFKC
    table[0xFFFF] = _RISKY
    table[0] = 0  # separates the texts
    return table


def dedup_keys(texts: Sequence[str]) -> list[bytes]:
    """``[dedup_key_bytes(t) for t in texts]``, one numpy table look-up for all texts at once (the texts
    holding a character it cannot handle, rare, go one by one); with the C accelerator, one pass per text."""
    scan = accelerated.textscan
    if scan is not None:
        keys = scan.dedup_keys(list(texts), _key_table(), _RISKY)
        for k in [k for k, key in enumerate(keys) if key is None]:
            keys[k] = dedup_key_bytes(texts[k])
        return keys
    joined = code_units(texts)
    if joined is None:
        return list(map(dedup_key_bytes, texts))
    units, starts = joined
    key = np.take(_key_table(), units)
    slow = texts_with(np.flatnonzero(key == _RISKY), starts) if _RISKY in key else []
    # Collapse the word breaks: drop a space followed by a space or a text end, then one preceded by a
    # text end or at the very start.
    space = key == 0x20
    drop = np.zeros(len(key), dtype=bool)
    drop[:-1] = space[:-1] & (space[1:] | (key[1:] == 0))
    key = key[~drop]
    space = key == 0x20
    drop = np.empty(len(key), dtype=bool)
    drop[0] = space[0]
    drop[1:] = space[1:] & (key[:-1] == 0)
    keys = key[~drop].tobytes().decode("utf-16-le").encode("utf-8").split(b"\x00")
    del keys[-1]  # after the last text's end
    for k in slow:
        keys[k] = dedup_key_bytes(texts[k])
    return keys


def dedup_key(text: str) -> str:
    """The text that exact dedup compares: NFKC, case-folded, punctuation removed, whitespace collapsed.

    "Bonjour  le monde!" and "bonjour le monde" give the same key, so do "C'est" and "C’est"
    (punctuation becomes a word break). Punctuation means ASCII punctuation and symbols, Latin-1
    punctuation (« » ¿ ¡ °) and the General Punctuation block (’ “ ” – — …); letters, digits, emoji and
    other symbols stay.
    """
    return dedup_key_bytes(text).decode("utf-8", "surrogatepass")


class HashIndex:
    """A set of 64-bit hashes that costs ~8 bytes per hash.

    New hashes go into a Python set (fast, ~70 bytes each); once it holds ``merge_threshold`` of them
    they are merged into a sorted ``numpy.uint64`` array, which batches of hashes are looked up in
    with ``numpy.searchsorted``.
    """

    __slots__ = ("merge_threshold", "recent", "sorted")

    def __init__(self, merge_threshold: int) -> None:
        self.merge_threshold = merge_threshold
        self.recent: set[int] = set()
        self.sorted = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.sorted) + len(self.recent)

    def in_sorted(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash (uint64 array, any shape), whether the sorted part holds it."""
        if not len(self.sorted):
            return np.zeros(hashes.shape, dtype=bool)
        # Looking the hashes up in sorted order walks the big array in one direction, so consecutive
        # binary searches share cached pages: about three times faster once the array outgrows the cache.
        flat = hashes.ravel()
        order = np.argsort(flat)
        queries = flat[order]
        idx = np.searchsorted(self.sorted, queries)
        np.minimum(idx, len(self.sorted) - 1, out=idx)
        found = np.empty(len(flat), dtype=bool)
        found[order] = self.sorted[idx] == queries
        return found.reshape(hashes.shape)

    def merge_if_full(self) -> None:
        if len(self.recent) < self.merge_threshold:
            return
        new = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
        new.sort()
        n = len(self.sorted)
        merged = self.sorted if self.sorted.flags.owndata else self.sorted.copy()
        # Grown in place (a large block is remapped, not copied): the index never exists twice at once,
        # which keeps the peak near 8 bytes per hash. Nothing else refers to this array.
        merged.resize(n + len(new), refcheck=False)
        merged[n:] = new
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
        self.sorted = merged
        self.recent = set()


class ExactDedup:
    """Drops exact duplicates, keeping the first copy in corpus order (recipe: ``use = "exact_dedup"``).

    Each document is reduced to a 64-bit BLAKE2b hash of its text; with ``normalize_key = true``
    (default) the text is first NFKC-normalized, case-folded, stripped of punctuation and its whitespace
    collapsed (:func:`dedup_key`), so copies differing only in those respects collapse. With 64-bit
    hashes, two different documents collide with probability ~n²/2⁶⁵ (about 1 in 1.5 million for five
    million documents). Reason: ``duplicate``.

    Memory stays near 8 bytes per unique document: the most recent hashes live in a Python set of at
    most ``merge_threshold`` entries (~70 bytes each, so ~18 MB by default), which is then merged into
    a sorted ``numpy.uint64`` array (:class:`HashIndex`). Pickling carries the hashes seen so far.
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
        self._index = HashIndex(self.merge_threshold)

    @property
    def n_unique(self) -> int:
        """Number of distinct documents seen."""
        return len(self._index)

    def fingerprint(self, doc: Document) -> int:
        text = doc.text
        key = dedup_key_bytes(text) if self.normalize_key else text.encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")

    def fingerprint_batch(self, docs: Sequence[Document]) -> list[int]:
        """``[self.fingerprint(d) for d in docs]``: keys for all documents at once, hashes without a
        Python-level loop."""
        texts = list(map(_text, docs))
        if self.normalize_key:
            keys = dedup_keys(texts)
        else:
            keys = "\x00".join(texts).encode("utf-8", "surrogatepass").split(b"\x00")
            if len(keys) != len(texts):
                keys = [t.encode("utf-8", "surrogatepass") for t in texts]
        scan = accelerated.textscan
        digests = (
            scan.blake2b_64(keys) if scan is not None else b"".join(map(_digest, map(_blake2b_64, keys)))
        )
        return np.frombuffer(digests, dtype="<u8").tolist()

    def drop_reasons(self, fingerprints: Sequence[Any]) -> list[str | None]:
        n = len(fingerprints)
        if n == 0:
            return []
        index = self._index
        hashes = np.fromiter(fingerprints, dtype=np.uint64, count=n)
        recent = index.recent
        seen = np.fromiter(map(recent.__contains__, fingerprints), dtype=bool, count=n)
        if len(index.sorted):
            seen |= index.in_sorted(hashes)
        # New: not seen in an earlier batch, and the first copy within this one.
        new = np.zeros(n, dtype=bool)
        new[np.unique(hashes, return_index=True)[1]] = True
        new &= ~seen
        recent.update(compress(fingerprints, new.tolist()))
        reasons: list[str | None] = [None] * n
        for k in np.flatnonzero(~new).tolist():
            reasons[k] = "duplicate"
        index.merge_if_full()
        return reasons


_WORD = re.compile(r"\w+")


@functools.cache
def _scheme() -> dict[str, str]:
    """datasketch >= 2.0 asks which permutation scheme hash values come from; older versions have one."""
    import inspect

    from datasketch import MinHash

    return {"scheme": "affine32"} if "scheme" in inspect.signature(MinHash.__init__).parameters else {}


@functools.cache
def _bands_and_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's choice of LSH bands and rows per band for this threshold (fewest errors, equal weights)."""
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return lsh.b, lsh.r


class MinHashDedup:
    """Drops near-duplicates with MinHash LSH, keeping the first copy (recipe: ``use = "minhash_dedup"``).

    A document is the set of its word ``ngram``-grams (lower-cased words; a document shorter than
    ``ngram`` words is one shingle of all its words). Its MinHash signature (datasketch, ``num_perm``
    permutations from ``seed``) is cut into LSH bands, with datasketch's choice of bands and rows for
    ``threshold`` (9 bands of 13 rows for 0.8 and 128 permutations): two documents that agree on a whole
    band are near-duplicates, which happens with high probability above the threshold Jaccard
    similarity and rarely below it. Example: a 40-word text and the same text with one word changed
    in the middle share 31 of 41 distinct 5-word shingles (Jaccard 0.76), so they are caught at
    ``threshold = 0.7`` but mostly not at 0.8; one word changed at the end leaves Jaccard 0.95.

    The worker computes the signature and reduces each band to a 64-bit hash, so the fingerprint is
    one ``uint64`` per band; the main process keeps the band hashes of kept documents in a
    :class:`HashIndex` (~8 bytes per band: ~72 bytes per kept document at the defaults, against a few
    kilobytes in datasketch's ``MinHashLSH``), and decides in 1 to 10 µs per document (more as the
    index outgrows the CPU cache). Its decisions are those of a ``MinHashLSH`` with the same settings,
    up to 64-bit hash collisions. A document without words is never a near-duplicate. Reason:
    ``near_duplicate``.
    """

    name: ClassVar[str] = "minhash_dedup"
    stateful: ClassVar[bool] = True

    def __init__(
        self,
        ngram: int = 5,
        threshold: float = 0.8,
        num_perm: int = 128,
        seed: int = 1,
        merge_threshold: int = 262_144,
    ) -> None:
        if ngram < 1:
            raise ValueError(f"ngram must be at least 1, not {ngram}")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), not {threshold}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, not {num_perm}")
        if merge_threshold < 1:
            raise ValueError(f"merge_threshold must be at least 1, not {merge_threshold}")
        self.ngram = int(ngram)
        self.threshold = float(threshold)
        self.num_perm = int(num_perm)
        self.seed = int(seed)
        self.merge_threshold = int(merge_threshold)
        self.bands, self.rows = _bands_and_rows(self.threshold, self.num_perm)
        rng = np.random.default_rng(self.seed)
        # Random odd multipliers, one per (band, row): a band's hash is sum(value * multiplier) mod 2**64,
        # and different multipliers per band keep equal values in different bands apart. Two different
        # bands collide with probability at most 2**-32 (typically 2**-63: the multipliers are odd).
        shape = (self.bands, self.rows)
        self._multipliers = rng.integers(
            0, 2**64 - 1, size=shape, dtype=np.uint64, endpoint=True
        ) | np.uint64(1)
        self._sketch: Any = None  # a reusable datasketch.MinHash, made in each process on first use
        self.reset()

    def reset(self) -> None:
        """Forget every document seen."""
        self._index = HashIndex(self.merge_threshold)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sketch"] = None
        return state

    def shingles(self, text: str) -> list[bytes]:
        words = _WORD.findall(text.lower())
        n = self.ngram
        if len(words) <= n:
            return [" ".join(words).encode()] if words else []
        return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]

    def signature(self, text: str) -> np.ndarray | None:
        """The MinHash signature of ``text`` (``num_perm`` hash values), or None without words.

        Shingles are hashed with CRC-32 (datasketch mixes each input hash before permuting it), which
        is several times faster than datasketch's default SHA-1 and as good for this purpose.
        """
        shingles = self.shingles(text)
        if not shingles:
            return None
        sketch = self._sketch
        if sketch is None:
            from datasketch import MinHash

            sketch = self._sketch = MinHash(
                num_perm=self.num_perm, seed=self.seed, hashfunc=zlib.crc32, **_scheme()
            )
        sketch.clear()
        sketch.update_batch(set(shingles))
        return sketch.hashvalues.copy()

    def fingerprint(self, doc: Document) -> np.ndarray | None:
        """One 64-bit hash per LSH band (``bands`` uint64), or None for a document without words."""
        sig = self.signature(doc.text)
        if sig is None:
            return None
        values = sig[: self.bands * self.rows].astype(np.uint64).reshape(self.bands, self.rows)
        return (values * self._multipliers).sum(axis=1, dtype=np.uint64)

    def drop_reasons(self, fingerprints: Sequence[Any]) -> list[str | None]:
        reasons: list[str | None] = [None] * len(fingerprints)
        positions = [i for i, fp in enumerate(fingerprints) if fp is not None]
        if not positions:
            return reasons
        index = self._index
        keys = np.stack([fingerprints[i] for i in positions])
        seen_before = index.in_sorted(keys).any(axis=1).tolist()
        recent = index.recent
        for i, old, bands in zip(positions, seen_before, keys.tolist(), strict=True):
            if old or not recent.isdisjoint(bands):
                reasons[i] = "near_duplicate"
            else:
                recent.update(bands)
        index.merge_if_full()
        return reasons
